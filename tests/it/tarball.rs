//! `mktarball`/`ldtarball` tarballs crossing between upstream dkms 3.0.10 and our
//! library (`dkms_core::tarball`), both ways, checked with both sides' `status`.

use crate::support::{
    assert_ours_status, assert_status_matches_upstream, line, Sandbox, ARCH, K54,
};
use dkms_core::tarball::{self, LoadedSource, TarballMode};
use dkms_core::{Host, Paths, Settings};
use std::fs;
use std::path::PathBuf;

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
    let kernels = [(K54.to_string(), ARCH.to_string())];
    let full = tarball::make_tarball(
        &host_made,
        "hello",
        "1.0",
        &kernels,
        TarballMode::Full,
        None,
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
    let kernels = [(K54.to_string(), ARCH.to_string())];
    let make = |mode, name: &str| -> PathBuf {
        tarball::make_tarball(
            &host_made,
            "hello",
            "1.0",
            &kernels,
            mode,
            Some(&made.path(name)),
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
