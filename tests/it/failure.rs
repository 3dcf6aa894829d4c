//! Failure memory: a build that failed is not rebuilt while its source and the kernel
//! headers are unchanged, unless asked; the record lives in the DKMS tree.

use crate::support::{Sandbox, K54};

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_known_failure_is_not_rebuilt_until_its_source_changes_or_a_retry_is_asked() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("broken", "1.0");
    assert_eq!(sb.run_ours(&["add", "broken/1.0"]).code, 0);

    let first = sb.run_ours(&["autoinstall", "-k", K54]);
    assert_eq!(first.code, 11, "{first}");
    assert!(first.stderr.contains("failed to build: see"), "{first}");
    let record = sb
        .dkms_tree()
        .join(format!("broken/1.0/failed-{K54}-x86_64.json"));
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&record).expect("failure recorded")).unwrap();
    assert_eq!(json["exit_code"], 10);
    assert!(json["log"].as_str().unwrap().ends_with("make.log"));

    let second = sb.run_ours(&["autoinstall", "-k", K54]);
    assert_eq!(second.code, 11, "{second}");
    assert!(
        second.stderr.contains("not retried (pass --retry-failed)"),
        "{second}"
    );

    let retried = sb.run_ours(&["autoinstall", "-k", K54, "--retry-failed"]);
    assert!(retried.stderr.contains("failed to build: see"), "{retried}");

    // A fixed source builds, and the record goes away.
    std::fs::write(
        source.join("broken.c"),
        "#include <linux/module.h>\nMODULE_LICENSE(\"GPL\");\n",
    )
    .unwrap();
    let fixed = sb.run_ours(&["autoinstall", "-k", K54]);
    assert_eq!(fixed.code, 0, "{fixed}");
    assert!(!record.exists(), "a success clears the record");
}

#[test]
#[ignore = "tier c: needs root, the installed kernels' headers and Debian's dkms; scripts/test runs it"]
fn after_a_failed_build_its_log_is_at_the_shared_build_path_and_status_names_it() {
    use crate::support::{K53, UPSTREAM_VERSION};
    let sb = Sandbox::new();
    sb.copy_fixture("broken", "1.0");
    assert_eq!(sb.run_ours(&["add", "broken/1.0"]).code, 0);
    for kernel in [K53, K54] {
        let out = sb.run_ours(&["build", "broken/1.0", "-k", kernel]);
        assert_eq!(out.code, 10, "the build for {kernel} fails\n{out}");
    }
    // `<v>/build` is the latest failed build's directory, as upstream leaves it.
    let shared = sb.dkms_tree().join("broken/1.0/build");
    let shared_log = shared.join("make.log");
    let log = std::fs::read_to_string(&shared_log)
        .unwrap_or_else(|e| panic!("{} after a failed build: {e}", shared_log.display()));
    assert!(
        log.contains(&format!("for kernel {K54}")) && log.contains("broken.c"),
        "{} is the failed build's log for {K54}\n{log}",
        shared_log.display()
    );
    // Status names that path for the kernel whose log it is, and the other kernel's
    // kept log where it is.
    let status = sb.run_ours(&["status"]);
    assert!(
        status.stdout.contains(shared_log.to_str().unwrap()),
        "`dkms-hook status` names {}\n{status}",
        shared_log.display()
    );
    let other = sb
        .dkms_tree()
        .join(format!("broken/1.0/build-{K53}-x86_64/make.log"));
    assert!(
        status.stdout.contains(other.to_str().unwrap()),
        "`dkms-hook status` names {} for {K53}\n{status}",
        other.display()
    );
    // Upstream reads the tree we left: the module is added, built for no kernel.
    let upstream = sb.upstream(&["status"]);
    assert_eq!(
        upstream.stdout, "broken/1.0: added\n",
        "{UPSTREAM_VERSION} reads the tree\n{upstream}"
    );
}
