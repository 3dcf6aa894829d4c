//! The archive tests: tarballs made here and read back by GNU tar and by ldtarball,
//! and hostile archives refused with nothing left behind.

use super::*;
use crate::engine::{EngineError, Silent};
use crate::host::Host;
use crate::tests::{scratch_host, scratch_paths, write};
use crate::tree;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::Command;

const K: &str = "6.1.0-54-amd64";
const A: &str = "x86_64";
/// A source file whose path needs a GNU long-name member (over 100 bytes).
const DEEP: &str = "include/a-directory-with-a-rather-long-name/another-directory-with-a-long-name/and-a-file-with-a-long-name.h";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/hello-1.0")
}

/// What stands in for a built hello.ko: archiving moves module files as bytes and never
/// loads them, so these tests need no kernel headers (tier a).
fn hello_ko() -> &'static [u8] {
    b"\x7fELF not really hello.ko, but archived byte for byte"
}

fn host(root: &Path) -> Host {
    scratch_host(scratch_paths(root, ["dkms", "src", "inst", "etc", "tmp"]))
}

/// A tree where hello/1.0 is added (with a few awkward source files) and built for K.
fn built_tree(root: &Path) -> Host {
    let host = host(root);
    let src = host.paths.source_dir("hello", "1.0");
    for name in ["Makefile", "hello.c", "dkms.conf"] {
        write(&src.join(name), &fs::read(fixture().join(name)).unwrap());
    }
    write(&src.join(DEEP), b"/* deep */\n");
    write(&src.join("script.sh"), b"#!/bin/sh\n");
    fs::set_permissions(src.join("script.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("hello.c", src.join("link.c")).unwrap();
    let version_dir = host.paths.version_dir("hello", "1.0");
    fs::create_dir_all(&version_dir).unwrap();
    std::os::unix::fs::symlink(&src, version_dir.join("source")).unwrap();
    add_build(&host, K);
    host
}

fn add_build(host: &Host, kernel: &str) {
    let build = tree::build_dir(&host.paths, "hello", "1.0", kernel, A);
    write(&build.join("module/hello.ko"), hello_ko());
    write(&build.join("log/make.log"), b"make log\n");
}

fn kernels(list: &[&str]) -> Vec<crate::tree::KernelArch> {
    list.iter()
        .map(|k| {
            (
                crate::name::KernelRelease::parse(k).unwrap(),
                crate::name::Arch::parse(A).unwrap(),
            )
        })
        .collect()
}

/// What GNU tar lists, so the archives are checked by the tool upstream uses.
fn gnu_tar_list(archive: &Path) -> Vec<String> {
    let out = Command::new("tar")
        .arg("-tf")
        .arg(archive)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -tf {}: {out:?}",
        archive.display()
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(String::from)
        .collect()
}

/// Every path under `dir` with its kind and contents (or link target) and mode.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (String, Vec<u8>, u32)> {
    let mut found = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(at) = stack.pop() {
        for entry in fs::read_dir(&at).unwrap() {
            let path = entry.unwrap().path();
            let meta = fs::symlink_metadata(&path).unwrap();
            let rel = path.strip_prefix(dir).unwrap().to_path_buf();
            let mode = meta.mode() & 0o7777;
            if meta.is_symlink() {
                let target = fs::read_link(&path).unwrap();
                found.insert(
                    rel,
                    ("link".into(), target.as_os_str().as_bytes().to_vec(), 0),
                );
            } else if meta.is_dir() {
                found.insert(rel, ("dir".into(), Vec::new(), mode));
                stack.push(path);
            } else {
                found.insert(rel, ("file".into(), fs::read(&path).unwrap(), mode));
            }
        }
    }
    found
}

#[test]
fn full_tarball_has_upstreams_layout_and_default_place() {
    let a = tempfile::tempdir().unwrap();
    let host = built_tree(a.path());
    let made = make_tarball_with(
        &host,
        "hello",
        "1.0",
        &kernels(&[K]),
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        made,
        a.path().join(format!(
            "dkms/hello/1.0/tarball/hello-1.0-kernel{K}-{A}.dkms.tar.gz"
        ))
    );
    assert_eq!(fs::read(&made).unwrap()[..2], [0x1f, 0x8b], "gzip");
    assert_eq!(
        fs::metadata(&made).unwrap().mode() & 0o777,
        0o644,
        "a tempfile's 0600 must not leak"
    );
    let listed = gnu_tar_list(&made);
    let expected = [
        "dkms_main_tree/".to_string(),
        format!("dkms_main_tree/{K}/"),
        format!("dkms_main_tree/{K}/{A}/"),
        format!("dkms_main_tree/{K}/{A}/log/"),
        format!("dkms_main_tree/{K}/{A}/log/make.log"),
        format!("dkms_main_tree/{K}/{A}/module/"),
        format!("dkms_main_tree/{K}/{A}/module/hello.ko"),
        "dkms_source_tree/".into(),
        "dkms_source_tree/Makefile".into(),
        "dkms_source_tree/dkms.conf".into(),
        "dkms_source_tree/hello.c".into(),
        "dkms_source_tree/include/".into(),
        "dkms_source_tree/include/a-directory-with-a-rather-long-name/".into(),
        "dkms_source_tree/include/a-directory-with-a-rather-long-name/another-directory-with-a-long-name/".into(),
        format!("dkms_source_tree/{DEEP}"),
        "dkms_source_tree/link.c".into(),
        "dkms_source_tree/script.sh".into(),
    ];
    assert_eq!(listed, expected);
}

#[test]
fn full_tarball_round_trips_into_a_fresh_tree() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let host_a = built_tree(a.path());
    let made = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[K]),
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap();
    let host_b = host(b.path());
    let loaded = load_tarball_with(&host_b, &made, false, &Silent).unwrap();
    let src_b = b.path().join("src/hello-1.0");
    assert_eq!(
        loaded,
        Loaded {
            module: "hello".into(),
            version: "1.0".into(),
            source: LoadedSource::Copied(src_b.clone()),
            loaded: kernels(&[K]),
            skipped: Vec::new(),
        }
    );
    // The source, byte for byte, with modes and symlinks.
    assert_eq!(snapshot(&src_b), snapshot(&a.path().join("src/hello-1.0")));
    assert_eq!(
        fs::read_link(b.path().join("dkms/hello/1.0/source")).unwrap(),
        src_b.canonicalize().unwrap()
    );
    // The build.
    let build_a = tree::build_dir(&host_a.paths, "hello", "1.0", K, A);
    let build_b = tree::build_dir(&host_b.paths, "hello", "1.0", K, A);
    assert_eq!(snapshot(&build_b), snapshot(&build_a));
    assert_eq!(
        fs::read(build_b.join("module/hello.ko")).unwrap(),
        hello_ko()
    );
    assert_eq!(
        tree::built_for(&host_b.paths, "hello", "1.0", None, None),
        kernels(&[K])
    );
    // No temporary directory left behind.
    let leftovers: Vec<_> = fs::read_dir(b.path().join("dkms"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [OsString::from("hello")]);

    // Loading again is refused (upstream: exit 8), and --force reloads.
    let again = load_tarball(&host_b, &made, false).unwrap_err();
    assert!(
        matches!(again, EngineError::ArchiveAlreadyAdded { .. }),
        "{again}"
    );
    assert_eq!(again.exit_code(), 8);
    fs::write(build_b.join("module/hello.ko"), b"stale").unwrap();
    fs::write(src_b.join("hello.c"), b"stale").unwrap();
    assert_eq!(
        load_tarball(&host_b, &made, true).unwrap(),
        ("hello".to_string(), "1.0".to_string())
    );
    assert_eq!(
        fs::read(build_b.join("module/hello.ko")).unwrap(),
        hello_ko()
    );
    assert_eq!(snapshot(&src_b), snapshot(&a.path().join("src/hello-1.0")));
}

#[test]
fn source_is_copied_when_the_source_tree_is_on_another_file_system() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let shm = tempfile::tempdir_in("/dev/shm").expect("a directory on /dev/shm");
    let dev = |p: &Path| fs::metadata(p).unwrap().dev();
    assert_ne!(
        dev(b.path()),
        dev(shm.path()),
        "this test needs /dev/shm on its own file system"
    );
    let host_a = built_tree(a.path());
    let made = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[K]),
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap();
    let mut host_b = host(b.path());
    host_b.paths.source_tree = shm.path().to_path_buf();
    let loaded = load_tarball_with(&host_b, &made, false, &Silent).unwrap();
    let src_a = a.path().join("src/hello-1.0");
    let src_b = shm.path().join("hello-1.0");
    assert_eq!(loaded.source, LoadedSource::Copied(src_b.clone()));
    assert_eq!(snapshot(&src_b), snapshot(&src_a));
    let mtime = |p: &Path| fs::metadata(p).unwrap().mtime();
    assert_eq!(mtime(&src_b.join("hello.c")), mtime(&src_a.join("hello.c")));
    let leftovers: Vec<_> = fs::read_dir(shm.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(leftovers, [OsString::from("hello-1.0")]);
}

#[test]
fn source_only_and_binaries_only_tarballs() {
    let a = tempfile::tempdir().unwrap();
    let host_a = built_tree(a.path());
    let source_only = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[K]),
        TarballMode::SourceOnly,
        None,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        source_only.file_name().unwrap(),
        "hello-1.0-source-only.dkms.tar.gz"
    );
    let listed = gnu_tar_list(&source_only);
    assert!(listed.contains(&"dkms_main_tree/".to_string()));
    assert!(!listed.iter().any(|m| m.starts_with("dkms_main_tree/6")));
    assert!(listed.contains(&"dkms_source_tree/dkms.conf".to_string()));

    let binaries = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[K]),
        TarballMode::BinariesOnly,
        Some(&a.path().join("bin.tgz")),
        &Silent,
    )
    .unwrap();
    assert_eq!(binaries, a.path().join("bin.tgz"));
    let listed = gnu_tar_list(&binaries);
    assert!(!listed.iter().any(|m| m.starts_with("dkms_source_tree")));
    for member in [
        "dkms_binaries_only/PACKAGE_NAME",
        "dkms_binaries_only/PACKAGE_VERSION",
        "dkms_binaries_only/dkms.conf",
    ] {
        assert!(
            listed.contains(&member.to_string()),
            "{member} in {listed:?}"
        );
    }

    // Source only: added, nothing built.
    let b = tempfile::tempdir().unwrap();
    let host_b = host(b.path());
    let loaded = load_tarball_with(&host_b, &source_only, false, &Silent).unwrap();
    assert!(loaded.loaded.is_empty());
    assert!(b.path().join("dkms/hello/1.0/source/hello.c").is_file());

    // Binaries only, no source on the system: upstream's stub directory.
    let c = tempfile::tempdir().unwrap();
    let host_c = host(c.path());
    let loaded = load_tarball_with(&host_c, &binaries, false, &Silent).unwrap();
    let stub = c.path().join("dkms/hello/1.0/source");
    assert_eq!(loaded.source, LoadedSource::BinariesOnly(stub.clone()));
    assert!(!stub.is_symlink() && stub.join("dkms.conf").is_file());
    assert!(!c.path().join("src/hello-1.0").exists());
    assert_eq!(
        fs::read(tree::build_dir(&host_c.paths, "hello", "1.0", K, A).join("module/hello.ko"))
            .unwrap(),
        hello_ko()
    );
    let again = load_tarball(&host_c, &binaries, false).unwrap_err();
    assert_eq!(again.exit_code(), 8, "{again}");

    // Binaries only with the source present: registered like add.
    let d = tempfile::tempdir().unwrap();
    let host_d = host(d.path());
    let src_d = d.path().join("src/hello-1.0");
    for name in ["Makefile", "hello.c", "dkms.conf"] {
        write(&src_d.join(name), &fs::read(fixture().join(name)).unwrap());
    }
    let loaded = load_tarball_with(&host_d, &binaries, false, &Silent).unwrap();
    assert_eq!(loaded.source, LoadedSource::KeptExisting(src_d.clone()));
    assert_eq!(
        fs::read_link(d.path().join("dkms/hello/1.0/source")).unwrap(),
        src_d.canonicalize().unwrap()
    );
}

#[test]
fn archive_names_pick_place_and_compression() {
    let a = tempfile::tempdir().unwrap();
    let host_a = built_tree(a.path());
    let make = |archive: &Path| {
        make_tarball_with(
            &host_a,
            "hello",
            "1.0",
            &kernels(&[K]),
            TarballMode::Full,
            Some(archive),
            &Silent,
        )
    };
    // No directory part: upstream keeps the default directory.
    let plain = make(Path::new("plain.tar")).unwrap();
    assert_eq!(plain, a.path().join("dkms/hello/1.0/tarball/plain.tar"));
    assert_eq!(&fs::read(&plain).unwrap()[257..262], b"ustar");
    let xz = make(&a.path().join("out/x.tar.xz")).unwrap();
    assert_eq!(
        fs::read(&xz).unwrap()[..6],
        [0xfd, b'7', b'z', b'X', b'Z', 0]
    );
    let zst = make(&a.path().join("out/x.tar.zst")).unwrap();
    assert_eq!(fs::read(&zst).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    for archive in [&plain, &xz, &zst] {
        assert_eq!(gnu_tar_list(archive).len(), 17, "{}", archive.display());
        let b = tempfile::tempdir().unwrap();
        let loaded = load_tarball_with(&host(b.path()), archive, false, &Silent).unwrap();
        assert_eq!(loaded.loaded, kernels(&[K]), "{}", archive.display());
    }
    // Gzip data under a plain name is still read: the magic decides.
    let disguised = a.path().join("disguised.tar");
    fs::copy(make(Path::new("real.tar.gz")).unwrap(), &disguised).unwrap();
    let b = tempfile::tempdir().unwrap();
    load_tarball(&host(b.path()), &disguised, false).unwrap();

    let bz2 = make(&a.path().join("x.tar.bz2")).unwrap_err();
    assert!(matches!(
        bz2,
        EngineError::ArchiveCompression {
            format: "bzip2",
            ..
        }
    ));
    assert_eq!(bz2.exit_code(), 6);
}

#[test]
fn making_needs_an_added_and_built_version() {
    let a = tempfile::tempdir().unwrap();
    let host_a = built_tree(a.path());
    let other = "6.1.0-53-amd64";
    let err = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[K, other]),
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap_err();
    assert!(err.to_string().contains(other), "{err}");
    assert_eq!(err.exit_code(), 6);
    assert!(!a.path().join("dkms/hello/1.0/tarball").exists());
    // Source only needs no build.
    make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&[other]),
        TarballMode::SourceOnly,
        None,
        &Silent,
    )
    .unwrap();

    let err = make_tarball_with(
        &host_a,
        "hello",
        "2.0",
        &[],
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    let err = make_tarball_with(
        &host_a,
        "../x",
        "1.0",
        &[],
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");
    fs::rename(a.path().join("src/hello-1.0"), a.path().join("src/moved")).unwrap();
    let err = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &[],
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap_err();
    assert!(matches!(err, EngineError::Broken { .. }), "{err}");
    assert_eq!(err.exit_code(), 4);
}

#[test]
fn many_kernels_make_a_short_name() {
    let a = tempfile::tempdir().unwrap();
    let host_a = built_tree(a.path());
    let many: Vec<String> = (0..8).map(|i| format!("6.1.{i}-100-amd64")).collect();
    for kernel in &many {
        add_build(&host_a, kernel);
    }
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    let made = make_tarball_with(
        &host_a,
        "hello",
        "1.0",
        &kernels(&many),
        TarballMode::Full,
        None,
        &Silent,
    )
    .unwrap();
    assert_eq!(
        made.file_name().unwrap(),
        "hello-1.0-manykernels.dkms.tar.gz"
    );
    let b = tempfile::tempdir().unwrap();
    let loaded = load_tarball_with(&host(b.path()), &made, false, &Silent).unwrap();
    assert_eq!(loaded.loaded.len(), 8);
}

#[test]
fn plain_source_tarballs_and_bad_archives() {
    let root = tempfile::tempdir().unwrap();
    let host = host(&root.path().join("tree"));
    // A release tarball: hello-1.0/{dkms.conf,...}, found wherever dkms.conf is.
    let mut entries = vec![Member::dir("hello-1.0/")];
    for name in ["Makefile", "hello.c", "dkms.conf"] {
        let data = fs::read(fixture().join(name)).unwrap();
        entries.push(Member::file(&format!("hello-1.0/{name}"), &data));
    }
    let archive = root.path().join("hello-1.0.tar");
    fs::write(&archive, raw_tar(&entries)).unwrap();
    let loaded = load_tarball_with(&host, &archive, false, &Silent).unwrap();
    assert_eq!(
        loaded.source,
        LoadedSource::Copied(root.path().join("tree/src/hello-1.0"))
    );
    assert!(root
        .path()
        .join("tree/dkms/hello/1.0/source/dkms.conf")
        .is_file());
    let err = load_tarball(&host, &archive, false).unwrap_err();
    assert_eq!(err.exit_code(), 3, "{err}");

    let missing = load_tarball(&host, &root.path().join("nope.tar.gz"), false).unwrap_err();
    assert_eq!(missing.exit_code(), 2, "{missing}");
    let garbage = root.path().join("garbage.tar.gz");
    fs::write(&garbage, [0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8]).unwrap();
    let err = load_tarball(&host, &garbage, false).unwrap_err();
    assert!(matches!(err, EngineError::ArchiveCorrupt { .. }), "{err}");
    let no_conf = root.path().join("no-conf.tar");
    fs::write(&no_conf, raw_tar(&[Member::file("README", b"hi")])).unwrap();
    let err = load_tarball(&host, &no_conf, false).unwrap_err();
    assert!(
        matches!(err, EngineError::ArchiveNoDkmsConf { .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 3);
    let empty_layout = root.path().join("empty-layout.tar");
    fs::write(&empty_layout, raw_tar(&[Member::dir("./dkms_main_tree/")])).unwrap();
    let err = load_tarball(&host, &empty_layout, false).unwrap_err();
    assert!(
        matches!(err, EngineError::ArchiveNoValidConf { .. }),
        "{err}"
    );
    assert_eq!(err.exit_code(), 7);
}

/// One member of a hand-made archive; names and targets are written as given,
/// which the tar crate's own API would refuse for hostile ones.
struct Member {
    kind: tar::EntryType,
    name: Vec<u8>,
    link: Option<Vec<u8>>,
    data: Vec<u8>,
}

impl Member {
    fn dir(name: &str) -> Member {
        Member {
            kind: tar::EntryType::Directory,
            name: name.into(),
            link: None,
            data: Vec::new(),
        }
    }
    fn file(name: &str, data: &[u8]) -> Member {
        Member {
            kind: tar::EntryType::Regular,
            name: name.into(),
            link: None,
            data: data.into(),
        }
    }
    fn symlink(name: &str, target: &str) -> Member {
        Member {
            kind: tar::EntryType::Symlink,
            name: name.into(),
            link: Some(target.into()),
            data: Vec::new(),
        }
    }
    fn hard_link(name: &str, target: &str) -> Member {
        Member {
            kind: tar::EntryType::Link,
            ..Member::symlink(name, target)
        }
    }
    fn special(kind: tar::EntryType, name: &str) -> Member {
        Member {
            kind,
            ..Member::dir(name)
        }
    }
}

fn raw_tar(members: &[Member]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    for m in members {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(m.kind);
        header.set_mode(if m.kind.is_dir() { 0o755 } else { 0o644 });
        header.set_size(m.data.len() as u64);
        header.set_mtime(1_700_000_000);
        // Names and targets go into the header as given (all under 100 bytes):
        // tar::Builder's own API refuses the hostile ones.
        let old = header.as_old_mut();
        old.name[..m.name.len()].copy_from_slice(&m.name);
        let link = m.link.as_deref().unwrap_or_default();
        old.linkname[..link.len()].copy_from_slice(link);
        header.set_cksum();
        builder.append(&header, m.data.as_slice()).unwrap();
    }
    builder.into_inner().unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    encoder.write_all(data).unwrap();
    encoder.finish().unwrap()
}

/// A dkms layout whose members are fine but for `extra`.
fn layout_with(extra: Vec<Member>) -> Vec<Member> {
    let conf = fs::read(fixture().join("dkms.conf")).unwrap();
    let mut members = vec![
        Member::dir("./"),
        Member::dir("./dkms_main_tree/"),
        Member::dir("./dkms_source_tree/"),
        Member::file("./dkms_source_tree/dkms.conf", &conf),
    ];
    members.extend(extra);
    members
}

#[test]
fn hostile_members_are_refused_and_nothing_escapes() {
    let evil_abs = format!("/etc/dkms-hook-tarball-test-evil-{}", std::process::id());
    let cases: Vec<(&str, Vec<Member>, &str, &str)> = vec![
        (
            "parent",
            vec![Member::file("../evil", b"x")],
            "../evil",
            "'..'",
        ),
        (
            "parent inside",
            layout_with(vec![Member::file("./dkms_source_tree/../../evil", b"x")]),
            "./dkms_source_tree/../../evil",
            "'..'",
        ),
        (
            "absolute",
            vec![Member::file(&evil_abs, b"x")],
            &evil_abs,
            "absolute",
        ),
        (
            "symlink to /etc, then a file through it",
            layout_with(vec![
                Member::symlink("./dkms_source_tree/etc", "/etc"),
                Member::file("./dkms_source_tree/etc/dkms-hook-evil", b"x"),
            ]),
            "./dkms_source_tree/etc",
            "absolute path '/etc'",
        ),
        (
            "symlink climbing out",
            layout_with(vec![Member::symlink("./dkms_source_tree/x", "../../x")]),
            "./dkms_source_tree/x",
            "leads out of the archive",
        ),
        (
            "file written through an inside symlink",
            vec![
                Member::symlink("a", "."),
                Member::symlink("a/b", ".."),
                Member::file("a/b/evil", b"x"),
            ],
            "a/b",
            "lies under the symlink 'a'",
        ),
        (
            "links escaping together",
            vec![
                Member::symlink("b", "a/x/.."),
                Member::dir("a/"),
                Member::symlink("a/x", ".."),
            ],
            "b",
            "leads out of the archive",
        ),
        (
            "hard link to an absolute path",
            vec![Member::hard_link("h", "/etc/passwd")],
            "h",
            "absolute",
        ),
        (
            "hard link climbing out",
            vec![Member::hard_link("h", "../x")],
            "h",
            "'..'",
        ),
        (
            "hard link through a symlink",
            vec![Member::symlink("s", "."), Member::hard_link("h", "s/x")],
            "h",
            "not a file extracted before it",
        ),
        (
            "fifo",
            vec![Member::special(
                tar::EntryType::Fifo,
                "./dkms_source_tree/p",
            )],
            "./dkms_source_tree/p",
            "fifo",
        ),
        (
            "device",
            vec![Member::special(tar::EntryType::Char, "null")],
            "null",
            "device",
        ),
        (
            "symlink leaving the source it is loaded with",
            layout_with(vec![Member::symlink(
                "./dkms_source_tree/up",
                "../dkms_main_tree",
            )]),
            "./dkms_source_tree/up",
            "leads out of ./dkms_source_tree",
        ),
    ];
    for (what, members, member, reason) in cases {
        let root = tempfile::tempdir().unwrap();
        let host = host(&root.path().join("tree"));
        fs::create_dir_all(&host.paths.dkms_tree).unwrap();
        fs::create_dir_all(&host.paths.source_tree).unwrap();
        for (suffix, bytes) in [
            ("tar", raw_tar(&members)),
            ("tar.gz", gzip(&raw_tar(&members))),
        ] {
            let archive = root.path().join(format!("evil.{suffix}"));
            fs::write(&archive, &bytes).unwrap();
            let before = snapshot(root.path());
            let err = load_tarball(&host, &archive, false).unwrap_err();
            let EngineError::UnsafeMember {
                member: named,
                reason: why,
                ..
            } = &err
            else {
                panic!("{what}: expected an unsafe member, got: {err}");
            };
            assert_eq!(named, member, "{what}: {err}");
            assert!(why.contains(reason), "{what}: {err}");
            let message = err.to_string();
            assert!(
                message.contains(&archive.display().to_string()) && message.contains(member),
                "{what}: the message must name the archive and member: {message}"
            );
            assert_eq!(err.exit_code(), 7);
            assert_eq!(
                snapshot(root.path()),
                before,
                "{what}: something was left behind"
            );
            assert!(!Path::new(&evil_abs).exists(), "{what}");
        }
    }
}

#[test]
fn harmless_links_inside_the_source_are_kept() {
    let root = tempfile::tempdir().unwrap();
    let host = host(&root.path().join("tree"));
    let archive = root.path().join("ok.tar");
    fs::write(
        &archive,
        raw_tar(&layout_with(vec![
            Member::dir("./dkms_source_tree/sub/"),
            Member::file("./dkms_source_tree/sub/a.c", b"a"),
            Member::symlink("./dkms_source_tree/sub/up", "../dkms.conf"),
            Member::hard_link("./dkms_source_tree/b.c", "./dkms_source_tree/sub/a.c"),
            Member::file("./dkms_source_tree/sub/a.c", b"replaced"),
        ])),
    )
    .unwrap();
    load_tarball(&host, &archive, false).unwrap();
    let src = root.path().join("tree/src/hello-1.0");
    assert_eq!(
        fs::read_link(src.join("sub/up")).unwrap(),
        Path::new("../dkms.conf")
    );
    assert_eq!(fs::read(src.join("b.c")).unwrap(), b"a");
    assert_eq!(fs::read(src.join("sub/a.c")).unwrap(), b"replaced");
}
