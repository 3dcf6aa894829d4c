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
