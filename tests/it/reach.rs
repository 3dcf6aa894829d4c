//! What the unprivileged build user must be able to reach (issue #15 with the real
//! zfs-dkms of #12): as root, dkms.conf files are evaluated by that user in its
//! jail, so a tree it cannot traverse must be named as such, never read as an empty
//! file ("PACKAGE_NAME: is missing"), nor as a different value (zfs's dkms.conf
//! tests `[ -e .../source ]` to choose the kernel tree configure reads).

use crate::support::{Sandbox, K53};
use std::fs;
use std::os::unix::fs::PermissionsExt;

#[test]
#[ignore = "tier b: needs root (the build user's jail); scripts/test runs it"]
fn a_dkms_conf_the_build_user_cannot_open_is_named_not_read_as_empty() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("hello", "1.0");
    // A line the bash-free path does not take: the conf is evaluated by bash, as the
    // build user.
    let conf = source.join("dkms.conf");
    let mut text = fs::read_to_string(&conf).unwrap();
    text.push_str("if true; then MAKE[0]=\"make -C ${kernel_source_dir} M=${dkms_tree}/hello/1.0/build\"; fi\n");
    fs::write(&conf, text).unwrap();
    // Root's private tree: trusted (root owns it), but closed to other users.
    fs::set_permissions(sb.source_tree(), fs::Permissions::from_mode(0o700)).unwrap();

    let out = sb.run_ours(&["add", "hello/1.0"]);
    assert_ne!(out.code, 0, "{out}");
    let text = format!("{}{}", out.stdout, out.stderr);
    assert!(
        text.contains(&conf.display().to_string())
            && text.contains("cannot be opened by the user that evaluates it (Permission denied)")
            && text.contains("build_as_root"),
        "the error names the file, why and what to do\n{out}"
    );
    assert!(!text.contains("PACKAGE_NAME: is missing"), "{out}");

    // Opened to other users, the same tree builds as the build user.
    fs::set_permissions(sb.source_tree(), fs::Permissions::from_mode(0o755)).unwrap();
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["build", "hello/1.0", "-k", K53]);
}
