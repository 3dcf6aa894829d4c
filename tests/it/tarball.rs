//! `mktarball`/`ldtarball` tarballs crossing between upstream dkms 3.0.10 and our
//! library (`dkms_core::archive`), both ways, checked with both sides' `status`.

use crate::support::{
    assert_ours_status, assert_status_matches_upstream, line, mkdir, run, symlink, Sandbox, ARCH,
    K54,
};
use dkms_core::archive::{self as tarball, LoadedSource, TarballMode};
use dkms_core::{Host, Paths, Settings};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

fn host(sb: &Sandbox) -> Host {
    let paths = Paths {
        dkms_tree: sb.dkms_tree(),
        source_tree: sb.source_tree(),
        install_tree: sb.install_tree(),
        etc_dir: sb.etc_dir(),
        ..Paths::default()
    };
    Host::new(paths, Settings::default())
}

/// A sandbox where upstream added hello/1.0 and built it for K54.
fn upstream_built() -> Sandbox {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.build("hello", "1.0", K54);
    sb
}

fn built_ko(sb: &Sandbox) -> Vec<u8> {
    fs::read(sb.built_module_dir("hello", "1.0", K54).join("hello.ko")).unwrap()
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn upstream_mktarball_loads_with_ours() {
    let made = upstream_built();
    made.upstream(&["mktarball", "-m", "hello", "-v", "1.0", "-k", K54]);
    let archive = made.dkms_tree().join(format!(
        "hello/1.0/tarball/hello-1.0-kernel{K54}-{ARCH}.dkms.tar.gz"
    ));
    assert!(archive.is_file(), "upstream made no {}", archive.display());

    let sb = Sandbox::new();
    let loaded = tarball::load_tarball(&host(&sb), &archive, false).unwrap();
    assert_eq!(loaded, ("hello".to_string(), "1.0".to_string()));
    assert_eq!(built_ko(&sb), built_ko(&made));
    assert_ours_status(&sb, &[], &line("hello/1.0", K54, "built"), "");
    // And upstream sees the same in the tree we loaded.
    assert_eq!(
        assert_status_matches_upstream(&sb, &[], &[]),
        line("hello/1.0", K54, "built")
    );
    // Loading it again is refused as upstream refuses it.
    let again = tarball::load_tarball(&host(&sb), &archive, false).unwrap_err();
    assert_eq!(again.exit_code(), 8, "{again}");
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn upstream_binaries_only_tarball_loads_with_ours_as_upstream_would() {
    let made = upstream_built();
    let archive = made.path("bin.dkms.tar.gz");
    let archive_arg = format!("--archive={}", archive.display());
    made.upstream(&[
        "mktarball",
        "-m",
        "hello",
        "-v",
        "1.0",
        "-k",
        K54,
        "--binaries-only",
        &archive_arg,
    ]);

    let sb = Sandbox::new();
    let loaded =
        tarball::load_tarball_with(&host(&sb), &archive, false, &dkms_core::engine::Silent)
            .unwrap();
    let stub = sb.dkms_tree().join("hello/1.0/source");
    assert_eq!(loaded.source, LoadedSource::BinariesOnly(stub.clone()));
    assert!(stub.join("dkms.conf").is_file() && !stub.is_symlink());
    assert_eq!(built_ko(&sb), built_ko(&made));
    // Upstream 3.0.10 lists such a stub as built.
    let status = sb.upstream(&["status"]);
    assert_eq!(status.stdout, line("hello/1.0", K54, "built"), "{status}");
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn our_tarball_loads_with_upstream_ldtarball() {
    let made = upstream_built();
    let host_made = host(&made);
    let kernels = [(
        dkms_core::name::KernelRelease::parse(K54).unwrap(),
        dkms_core::name::Arch::parse(ARCH).unwrap(),
    )];
    let full = tarball::make_tarball_with(
        &host_made,
        "hello",
        "1.0",
        &kernels,
        TarballMode::Full,
        None,
        &dkms_core::engine::Silent,
    )
    .unwrap();
    assert_eq!(
        full,
        made.dkms_tree().join(format!(
            "hello/1.0/tarball/hello-1.0-kernel{K54}-{ARCH}.dkms.tar.gz"
        ))
    );

    let sb = Sandbox::new();
    let archive_arg = format!("--archive={}", full.display());
    sb.upstream(&["ldtarball", &archive_arg]);
    assert_eq!(built_ko(&sb), built_ko(&made));
    assert_eq!(
        fs::read_link(sb.dkms_tree().join("hello/1.0/source")).unwrap(),
        sb.source_tree().join("hello-1.0")
    );
    assert_eq!(
        assert_status_matches_upstream(&sb, &[], &[]),
        line("hello/1.0", K54, "built")
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn our_source_only_and_binaries_only_tarballs_load_with_upstream() {
    let made = upstream_built();
    let host_made = host(&made);
    let kernels = [(
        dkms_core::name::KernelRelease::parse(K54).unwrap(),
        dkms_core::name::Arch::parse(ARCH).unwrap(),
    )];
    let make = |mode, name: &str| -> PathBuf {
        tarball::make_tarball_with(
            &host_made,
            "hello",
            "1.0",
            &kernels,
            mode,
            Some(&made.path(name)),
            &dkms_core::engine::Silent,
        )
        .unwrap()
    };

    let source_only = make(TarballMode::SourceOnly, "src.tar.gz");
    let sb = Sandbox::new();
    sb.upstream(&["ldtarball", &format!("--archive={}", source_only.display())]);
    assert_eq!(
        assert_status_matches_upstream(&sb, &[], &[]),
        "hello/1.0: added\n"
    );

    let binaries_only = make(TarballMode::BinariesOnly, "bin.tar.gz");
    let sb = Sandbox::new();
    let out = sb.run_upstream(&[
        "ldtarball",
        &format!("--archive={}", binaries_only.display()),
    ]);
    // Upstream's load_tarball returns false for a binaries-only tarball without source
    // on the system (so that `add` is skipped), which becomes the exit status.
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stdout.contains("Copying dkms.conf to"), "{out}");
    assert_eq!(built_ko(&sb), built_ko(&made));
    let status = sb.upstream(&["status"]);
    assert_eq!(status.stdout, line("hello/1.0", K54, "built"), "{status}");
}

/// Regression: mktarball ran without the tree lock, writing its tarball under a temp
/// name in `<m>/<v>/tarball/` that a concurrent build's sweep deletes as another run's
/// leftover. Now it waits for the lock like every command that writes in the tree.
#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn mktarball_waits_for_the_tree_lock_so_a_concurrent_sweep_cannot_delete_its_tarball() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    let tarball_dir = sb.dkms_tree().join("hello/1.0/tarball");
    // Another run (a build about to sweep hello's directories) holds the lock.
    let held = dkms_core::lock::lock_tree(&sb.dkms_tree(), Duration::from_secs(5), || {})
        .expect("taking the tree lock");
    let mut child = sb
        .ours_command(&[], &["mktarball", "hello/1.0", "--source-only"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dkms-hook mktarball");
    let mut stderr = BufReader::new(child.stderr.take().expect("piped stderr"));
    let mut said = String::new();
    while !said.contains("waiting for another dkms-hook run") {
        let mut line = String::new();
        if stderr.read_line(&mut line).expect("reading stderr") == 0 {
            let status = child.wait().expect("waiting for mktarball");
            panic!("mktarball finished ({status}) while another run held the tree lock:\n{said}");
        }
        said.push_str(&line);
    }
    assert!(
        !tarball_dir.exists(),
        "mktarball wrote in the tree while another run held the lock"
    );
    drop(held);
    let status = child.wait().expect("waiting for mktarball");
    assert!(
        status.success(),
        "mktarball failed after the lock was released: {said}"
    );
    let made = tarball_dir.join("hello-1.0-source-only.dkms.tar.gz");
    assert!(made.is_file(), "no {}", made.display());
}

/// Regression: ldtarball replaced builds with its own rename and delete, without the
/// engine's confinement, so a `<m>/<v>` or `<m>/<v>/<k>` symlinked to a directory
/// outside the DKMS tree had that directory's contents deleted. Now the load is refused,
/// before anything is placed, naming the link.
#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn ldtarball_refuses_a_symlinked_version_or_kernel_dir_and_leaves_the_victim_alone() {
    for planted in ["hello/1.0", &format!("hello/1.0/{K54}")] {
        let sb = Sandbox::new();
        // A tarball in upstream's layout: the fixture's source and a build for K54.
        let stage = sb.path("stage");
        let build = stage.join(format!("dkms_main_tree/{K54}/{ARCH}"));
        mkdir(&build.join("module"));
        mkdir(&build.join("log"));
        fs::write(build.join("module/hello.ko"), "new module").unwrap();
        fs::write(build.join("log/make.log"), "make log").unwrap();
        fs::rename(
            sb.copy_fixture("hello", "1.0"),
            stage.join("dkms_source_tree"),
        )
        .unwrap();
        let archive = sb.path("hello.dkms.tar.gz");
        let mut tar = Command::new("tar");
        tar.arg("-czf").arg(&archive).arg("-C").arg(&stage).arg(".");
        assert_eq!(run(tar).code, 0);

        // The victim looks like what the planted link stands for.
        let victim = sb.path("victim");
        let victim_build = if planted == "hello/1.0" {
            victim.join(format!("{K54}/{ARCH}"))
        } else {
            victim.join(ARCH)
        };
        mkdir(&victim_build.join("module"));
        fs::write(victim_build.join("module/precious.ko"), "precious").unwrap();
        let link = sb.dkms_tree().join(planted);
        mkdir(link.parent().unwrap());
        symlink(&victim, &link);

        let archive_arg = format!("--archive={}", archive.display());
        let out = sb.run_ours(&["ldtarball", &archive_arg, "--force"]);
        assert_ne!(out.code, 0, "{planted}: {out}");
        let first = out.stderr.lines().next().unwrap_or_default();
        assert!(
            first.contains("refusing") && first.contains("symbolic link"),
            "{planted}: the real reason must come first: {out}"
        );
        assert!(out.stderr.contains(&victim.display().to_string()), "{out}");
        assert_eq!(
            fs::read(victim_build.join("module/precious.ko")).unwrap(),
            b"precious",
            "{planted}: the victim was changed"
        );
        let mut left = Vec::new();
        for entry in fs::read_dir(&victim_build).unwrap() {
            left.push(entry.unwrap().file_name());
        }
        assert_eq!(
            left,
            ["module"],
            "{planted}: something was written in the victim"
        );
        assert!(
            !sb.source_tree().join("hello-1.0").exists(),
            "{planted}: the source was placed before the refusal"
        );
    }
}
