//! Upstream's semantics around the build that real packages and users rely on: paths
//! given relative to the caller's directory, framework.conf, the build environment,
//! the override directory `/etc/dkms/<module>/` and the install checks (issue #12).

use crate::support::{run, Output, Sandbox, K53};
use std::process::Command;

/// Our binary run from the sandbox root `T` with every tree given relative to it.
fn ours_relative(sb: &Sandbox, args: &[&str]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dkms-hook"));
    cmd.current_dir(sb.path(""))
        .args(args)
        .args([
            "--dkmstree",
            "dkms",
            "--sourcetree",
            "./src",
            "--installtree",
            "inst",
        ])
        .args(["--etc-dir", "etc"])
        .env("DKMS_HOOK_CONFIG", sb.path("etc/dkms-hook.toml"))
        .env_remove("RUST_LOG");
    run(cmd)
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn relative_trees_still_evaluate_a_dkms_conf_that_needs_bash() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("hello", "1.0");
    // A command substitution: only bash can read this file, and bash runs in a
    // scratch directory, where a relative source tree does not exist.
    let conf = source.join("dkms.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("PACKAGE_NAME=\"hello\"", "PACKAGE_NAME=$(echo hello)"),
    )
    .unwrap();

    let added = ours_relative(&sb, &["add", "hello/1.0"]);
    assert_eq!(added.code, 0, "{added}");
    let status = ours_relative(&sb, &["status", "--compat"]);
    assert_eq!(status.code, 0, "{status}");
    assert_eq!(status.stdout, "hello/1.0: added\n", "{status}");
    assert!(!status.stderr.contains("missing"), "{status}");
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn parallel_jobs_zero_in_framework_conf_builds_with_a_bare_make_j() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    std::fs::write(sb.etc_dir().join("framework.conf"), "parallel_jobs=0\n").unwrap();
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["build", "hello/1.0", "-k", K53]);
    let log = sb
        .built_module_dir("hello", "1.0", K53)
        .parent()
        .unwrap()
        .join("log/make.log");
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        log.contains(&format!("make -j KERNELRELEASE={K53} ")),
        "{log}"
    );
}
