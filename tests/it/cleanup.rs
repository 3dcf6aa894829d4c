//! `dkms-hook cleanup`: leftovers of a kernel removed without our hooks are listed
//! (nothing removed) and then removed with --yes, leaving the other kernel alone.

use crate::support::{Sandbox, K53, K54};

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn cleanup_lists_then_removes_what_a_removed_kernel_left_behind() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    assert_eq!(sb.run_ours(&["add", "hello/1.0"]).code, 0);
    let install = sb.run_ours(&["install", "hello/1.0", "-k", K53, "-k", K54]);
    assert_eq!(install.code, 0, "{install}");
    // The kernel package goes away without our hooks: its modules tree is gone, but the
    // DKMS module under updates/dkms and the DKMS tree entries stay.
    let k53 = sb.install_tree().join(K53);
    std::fs::remove_dir_all(k53.join("kernel")).unwrap();

    let dry = sb.run_ours(&["cleanup"]);
    assert_eq!(dry.code, 0, "{dry}");
    for expected in [
        format!("{}", k53.display()),
        format!("hello/1.0/{K53}/x86_64"),
        format!("hello/kernel-{K53}-x86_64"),
    ] {
        assert!(dry.stdout.contains(&expected), "missing {expected}:\n{dry}");
    }
    assert!(!dry.stdout.contains(K54), "{dry}");
    assert!(
        k53.join("updates/dkms/hello.ko").exists(),
        "a dry run removes nothing"
    );

    // status lists the same leftovers and names the command that removes them.
    let status = sb.ours(&["status"]);
    assert!(
        status
            .stdout
            .contains("Left behind by removed kernels (`dkms-hook cleanup --yes` removes it):"),
        "{status}"
    );
    assert!(
        status
            .stdout
            .contains(&format!("  {K53}: {}", k53.display())),
        "{status}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&sb.ours(&["status", "--json"]).stdout).unwrap();
    assert!(json["leftovers"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["kernel"] == K53));

    let wet = sb.run_ours(&["cleanup", "--yes"]);
    assert_eq!(wet.code, 0, "{wet}");
    assert!(!k53.exists());
    assert!(crate::support::headers(K53).join("Makefile").exists());
    assert_eq!(
        sb.run_ours(&["status", "--compat"]).stdout,
        format!("hello/1.0, {K54}, x86_64: installed\n")
    );
    assert!(sb
        .run_ours(&["cleanup"])
        .stdout
        .contains("Nothing left behind"));
}
