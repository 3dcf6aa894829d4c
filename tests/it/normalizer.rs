//! The 3.0.10 → 3.1.3+ normalizer itself (no dkms needed).

use crate::support::{broken_message, normalize_upstream_3_0_10};

#[test]
fn normalizer_rewords_3_0_10_remarks_and_keeps_only_the_first_per_module_remark() {
    let upstream = "a/1: added\n\
        a/2, 6.1.0-53-amd64, x86_64: installed (original_module exists) (WARNING! Diff between built and installed module!)\n\
        a/2, 6.1.0-54-amd64, x86_64: built (WARNING! Missing some built modules!) (WARNING! Missing some built modules!)\n\
        b/1, 6.1.0-54-amd64, x86_64: installed (WARNING! Diff between built and installed module!) (WARNING! Missing some built modules!)\n";
    let (stdout, stderr) = normalize_upstream_3_0_10(upstream, &[]);
    assert_eq!(
        stdout,
        "a/1: added\n\
         a/2, 6.1.0-53-amd64, x86_64: installed (Original modules exist) (Differences between built and installed modules)\n\
         a/2, 6.1.0-54-amd64, x86_64: built (Built modules are missing in the kernel modules folder)\n\
         b/1, 6.1.0-54-amd64, x86_64: installed (Differences between built and installed modules)\n"
    );
    assert_eq!(stderr, "");
}

#[test]
fn normalizer_turns_added_into_broken_for_dangling_sources_with_one_message_each() {
    let upstream = "a-b/1: added\na/1: added\na/2: added\na/1: added\n";
    let (stdout, stderr) = normalize_upstream_3_0_10(upstream, &["a/1"]);
    assert_eq!(
        stdout,
        "a-b/1: added\na/1: broken\na/2: added\na/1: broken\n"
    );
    assert_eq!(stderr, broken_message("a/1").repeat(2));
    assert_eq!(
        broken_message("a/1"),
        "\nError! a/1: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!\n"
    );
}
