//! The remarks 3.1.3+ append to built and installed lines, on trees built by upstream
//! dkms and then modified by hand. Checked against exact 3.4 strings; where dkms
//! 3.0.10 reports the same facts (in its older words) it is compared as well.

use crate::support::{
    assert_ours_status, assert_status_matches_upstream, line, mkdir, Sandbox, K53, K54,
};
use std::fs;

const ORIGINAL: &str = " (Original modules exist)";
const MISSING: &str = " (Built modules are missing in the kernel modules folder)";
const DIFFERS: &str = " (Differences between built and installed modules)";

/// `hello/1.0` installed on the 6.1.0-53 kernel, `hello-extra/1.0` added.
fn hello_installed() -> Sandbox {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello", "1.0", K53);
    let clean = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        clean,
        "hello-extra/1.0: added\n".to_string() + &line("hello/1.0", K53, "installed")
    );
    sb
}

fn installed_line(suffixes: &str) -> String {
    "hello-extra/1.0: added\n".to_string()
        + &line("hello/1.0", K53, &format!("installed{suffixes}"))
}

/// Rewrites the installed `hello.ko` as the same module plus one byte: the same
/// `version=`, so it is found as dkms's copy, but different bytes.
fn alter_installed_copy(sb: &Sandbox) {
    let installed = sb.installed_module_dir(K53).join("hello.ko");
    let mut bytes = fs::read(&installed).expect("reading the installed module");
    bytes.push(0);
    fs::write(&installed, bytes).expect("rewriting the installed module");
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_notes_original_modules_when_the_original_module_dir_exists() {
    let sb = hello_installed();
    mkdir(&sb.original_module_dir("hello", K53));

    assert_ours_status(&sb, &[], &installed_line(ORIGINAL), "");
    assert_ours_status(&sb, &["-k", K53], &installed_line(ORIGINAL), "");
    let upstream = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(upstream, installed_line(ORIGINAL));
    // The directory is per kernel: another kernel's build gets no remark.
    sb.build("hello", "1.0", K54);
    assert_ours_status(
        &sb,
        &["-m", "hello"],
        &(line("hello/1.0", K53, &format!("installed{ORIGINAL}"))
            + &line("hello/1.0", K54, "built")),
        "",
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_notes_missing_built_modules_when_the_built_ko_is_deleted() {
    // dkms 3.0.10 lists such a build as added (it required the files), so this is
    // checked against the 3.4 semantics only.
    let sb = hello_installed();
    let built = sb.built_module_dir("hello", "1.0", K53).join("hello.ko");
    fs::remove_file(&built).expect("removing the built module");

    assert_ours_status(&sb, &[], &installed_line(MISSING), "");
    assert_ours_status(
        &sb,
        &["-m", "hello/1.0", "-k", K53],
        &line("hello/1.0", K53, &format!("installed{MISSING}")),
        "",
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_notes_differences_when_the_installed_copy_has_other_bytes() {
    let sb = hello_installed();
    alter_installed_copy(&sb);

    assert_ours_status(&sb, &[], &installed_line(DIFFERS), "");
    let upstream = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(upstream, installed_line(DIFFERS));

    // An installed copy that is not a module of that version at all, or is gone,
    // differs too.
    let installed = sb.installed_module_dir(K53).join("hello.ko");
    fs::write(&installed, b"not a kernel module\n").expect("overwriting the installed module");
    assert_ours_status(&sb, &[], &installed_line(DIFFERS), "");
    assert_status_matches_upstream(&sb, &[], &[]);
    fs::remove_file(&installed).expect("removing the installed module");
    assert_ours_status(&sb, &[], &installed_line(DIFFERS), "");
    assert_status_matches_upstream(&sb, &[], &[]);
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_notes_original_modules_then_differences_when_both_hold() {
    let sb = hello_installed();
    mkdir(&sb.original_module_dir("hello", K53));
    alter_installed_copy(&sb);

    let both = format!("{ORIGINAL}{DIFFERS}");
    assert_ours_status(&sb, &[], &installed_line(&both), "");
    assert_ours_status(
        &sb,
        &["-k", K53, "-k", K54],
        &(installed_line(&both) + "hello-extra/1.0: added\nhello/1.0: added\n"),
        "",
    );
    let upstream = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(upstream, installed_line(&both));
}
