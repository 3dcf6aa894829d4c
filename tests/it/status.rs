//! `status` against upstream dkms: trees built by Debian's dkms 3.0.10 from real module
//! sources for both kernels, listed by upstream and by us, compared byte for byte.

use crate::support::{
    assert_ours_status, assert_status_matches_upstream, assert_statuses_match_upstream,
    broken_message, line, Sandbox, ARCH, K53, K54,
};

/// `<kernel>/x86_64` of the two discovered kernels (tests/it/support.rs).
const K53_X86: &str = concat!(env!("DKMS_HOOK_IT_OLDER_KERNEL"), "/x86_64");
const K54_X86: &str = concat!(env!("DKMS_HOOK_IT_NEWER_KERNEL"), "/x86_64");

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_matches_upstream_for_an_added_only_module() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(listed, "hello/1.0: added\n");
    // With a kernel or arch filter a module without a build for it is still added.
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-k", K53],
            &["-k", K54_X86],
            &["-a", ARCH],
            &["-m", "hello"],
            &["-m", "hello/1.0"],
            &["-v", "1.0"],
            &["-k", K53, "-k", K54],
        ],
        &[],
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_matches_upstream_for_a_module_built_but_not_installed() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.build("hello", "1.0", K53);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(listed, line("hello/1.0", K53, "built"));
    let other_kernel = assert_status_matches_upstream(&sb, &["-k", K54], &[]);
    assert_eq!(other_kernel, "hello/1.0: added\n");
    let other_arch = assert_status_matches_upstream(&sb, &["-a", "aarch64"], &[]);
    assert_eq!(other_arch, "hello/1.0: added\n");
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-k", K53],
            &["-k", K53_X86],
            &["-k", K53, "-a", ARCH],
            &["-a", ARCH],
            &["-k", K53, "-k", K54],
            &["-m", "hello", "-v", "1.0"],
        ],
        &[],
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_matches_upstream_for_a_module_installed_on_one_kernel_and_built_on_the_other() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.install("hello", "1.0", K53);
    sb.build("hello", "1.0", K54);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        listed,
        line("hello/1.0", K53, "installed") + &line("hello/1.0", K54, "built")
    );
    // Two -k print the whole listing once per kernel.
    let twice = assert_status_matches_upstream(&sb, &["-k", K54, "-k", K53], &[]);
    assert_eq!(
        twice,
        line("hello/1.0", K54, "built") + &line("hello/1.0", K53, "installed")
    );
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-k", K53],
            &["-k", K54],
            &["-k", K53_X86],
            &["-k", K54_X86],
            &["-k", K53, "-k", K54],
            &["-k", K53, "-k", K54, "-a", ARCH],
            &["-k", K53, "-k", K54, "-a", ARCH, "-a", ARCH],
            &["-k", K53_X86, "-k", K54_X86],
            &["-a", ARCH],
            &["-a", "aarch64"],
            &["-k", "6.1.0-99-amd64"],
            &["-m", "hello"],
            &["-m", "hello/1.0"],
            &["hello/1.0"],
            &["-m", "hello", "-v", "1.0", "-k", K54],
            &["-m", "nosuch"],
            &["-v", "9.9"],
            &["--all"],
        ],
        &[],
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_matches_upstream_for_modules_installed_on_two_kernels_in_bash_glob_order() {
    let sb = Sandbox::new();
    // `hello-extra/1.0` sorts before `hello/1.0`: bash sorts the whole expanded path
    // and `-` (0x2d) < `/` (0x2f), although `hello` < `hello-extra` as names.
    sb.add("hello", "1.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello-extra", "1.0", K53);
    sb.install("hello-extra", "1.0", K54);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        listed,
        line("hello-extra/1.0", K53, "installed")
            + &line("hello-extra/1.0", K54, "installed")
            + "hello/1.0: added\n"
    );
    // `-m hello` is the module `hello` only, not `hello-extra`.
    let hello = assert_status_matches_upstream(&sb, &["-m", "hello"], &[]);
    assert_eq!(hello, "hello/1.0: added\n");
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-m", "hello-extra"],
            &["-m", "hello-extra/1.0"],
            &["-v", "1.0"],
            &["-k", K53],
            &["-k", K54_X86],
            &["-k", K53, "-k", K54],
            &["-a", ARCH],
        ],
        &[],
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_matches_upstream_for_two_versions_of_a_module_with_one_installed() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello", "2.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello", "2.0", K54);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        listed,
        "hello-extra/1.0: added\nhello/1.0: added\n".to_string()
            + &line("hello/2.0", K54, "installed")
    );
    let v2 = assert_status_matches_upstream(&sb, &["-m", "hello/2.0"], &[]);
    assert_eq!(v2, line("hello/2.0", K54, "installed"));
    let v1 = assert_status_matches_upstream(&sb, &["-v", "1.0"], &[]);
    assert_eq!(v1, "hello-extra/1.0: added\nhello/1.0: added\n");
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-m", "hello"],
            &["-m", "hello/1.0"],
            &["-m", "hello", "-v", "2.0"],
            &["hello/2.0"],
            &["-v", "2.0"],
            &["-k", K53],
            &["-k", K54],
            &["-k", K54_X86],
            &["-k", K53, "-k", K54],
            &["-m", "hello", "-k", K54, "-k", K53, "-a", ARCH],
            &["-a", ARCH],
        ],
        &[],
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_reports_a_dangling_source_link_as_broken_where_upstream_3_0_10_said_added() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello", "2.0");
    sb.add("hello-extra", "1.0");
    sb.remove_source("hello", "1.0");

    let broken = ["hello/1.0"];
    let listed = assert_status_matches_upstream(&sb, &[], &broken);
    assert_eq!(
        listed,
        "hello-extra/1.0: added\nhello/1.0: broken\nhello/2.0: added\n"
    );
    // The exact 3.4 bytes, independently of the normalizer.
    assert_ours_status(
        &sb,
        &["-m", "hello"],
        "hello/1.0: broken\nhello/2.0: added\n",
        "\nError! hello/1.0: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!\n",
    );
    // Broken is reported whatever the kernel filter, once per -k.
    assert_statuses_match_upstream(
        &sb,
        &[
            &["-m", "hello/1.0"],
            &["-v", "1.0"],
            &["-k", K53],
            &["-k", K53, "-k", K54],
            &["-a", ARCH],
        ],
        &broken,
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_reports_an_installed_module_whose_source_is_gone_only_as_broken() {
    // dkms 3.0.10 aborts the listing here (its is_module_built dies on the missing
    // dkms.conf), so this is checked against the 3.4 semantics only.
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello", "1.0", K53);
    assert_status_matches_upstream(&sb, &[], &[]);
    sb.remove_source("hello", "1.0");

    let message = broken_message("hello/1.0");
    assert_ours_status(
        &sb,
        &[],
        "hello-extra/1.0: added\nhello/1.0: broken\n",
        &message,
    );
    assert_ours_status(
        &sb,
        &["-k", K53],
        "hello-extra/1.0: added\nhello/1.0: broken\n",
        &message,
    );
    assert_ours_status(
        &sb,
        &["-m", "hello", "-k", K53, "-k", K54],
        "hello/1.0: broken\nhello/1.0: broken\n",
        &(message.clone() + &message),
    );
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_reports_a_missing_source_link_as_broken_only_while_the_source_dir_exists() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello-extra", "1.0");
    let link = sb.dkms_tree().join("hello/1.0/source");
    std::fs::remove_file(&link).expect("removing the source link");

    // No link but T/src/hello-1.0 is there: broken (3.0.13+).
    assert_ours_status(
        &sb,
        &[],
        "hello-extra/1.0: added\nhello/1.0: broken\n",
        &broken_message("hello/1.0"),
    );
    // Neither the link nor the directory: not a module version at all, as upstream.
    sb.remove_source("hello", "1.0");
    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(listed, "hello-extra/1.0: added\n");
}

/// hello-extra/1.0 added, hello/1.0 installed on K53 and built on K54, hello/2.0 added.
fn hello_installed_and_built_with_extra_and_second_version() -> Sandbox {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello", "2.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello", "1.0", K53);
    sb.build("hello", "1.0", K54);
    sb
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_module_and_version_filters_are_bash_globs_like_upstream() {
    // Upstream expands `$dkms_tree/$module/$module_version` unquoted with extglob on,
    // so -m and -v are bash patterns matched per path component.
    let sb = hello_installed_and_built_with_extra_and_second_version();

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        listed,
        "hello-extra/1.0: added\n".to_string()
            + &line("hello/1.0", K53, "installed")
            + &line("hello/1.0", K54, "built")
            + "hello/2.0: added\n"
    );
    let hel = assert_status_matches_upstream(&sb, &["-m", "hel*"], &[]);
    assert_eq!(hel, listed);
    let v1 = assert_status_matches_upstream(&sb, &["-v", "1.*"], &[]);
    assert_eq!(
        v1,
        "hello-extra/1.0: added\n".to_string()
            + &line("hello/1.0", K53, "installed")
            + &line("hello/1.0", K54, "built")
    );
    let extglob = assert_status_matches_upstream(&sb, &["-m", "+(hello|nothing)"], &[]);
    assert_eq!(
        extglob,
        line("hello/1.0", K53, "installed")
            + &line("hello/1.0", K54, "built")
            + "hello/2.0: added\n"
    );
    let both = assert_status_matches_upstream(&sb, &["-m", "hello-*", "-v", "?.0"], &[]);
    assert_eq!(both, "hello-extra/1.0: added\n");
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_reports_installed_modules_even_when_the_dkms_tree_path_is_a_symlink() {
    let sb = hello_installed_and_built_with_extra_and_second_version();
    // T/dkms becomes a symlink to the real tree, so --dkmstree names a link.
    let tree = sb.dkms_tree();
    let real = tree.with_file_name("dkms-real");
    std::fs::rename(&tree, &real).expect("moving the DKMS tree");
    std::os::unix::fs::symlink(&real, &tree).expect("linking the DKMS tree");

    // Deliberate difference: upstream 3.x decides `installed` by comparing
    // `readlink -f $dkms_tree/$module/kernel-<k>-<arch>` (a canonical path, through
    // T/dkms-real) with the string "$dkms_tree/$module/$version/<k>/<arch>" (through
    // the T/dkms link), so the two never match and it lists hello/1.0 on K53 as
    // `built`. We compare where the paths lead and still say `installed`.
    assert_ours_status(
        &sb,
        &[],
        &("hello-extra/1.0: added\n".to_string()
            + &line("hello/1.0", K53, "installed")
            + &line("hello/1.0", K54, "built")
            + "hello/2.0: added\n"),
        "",
    );
    assert_ours_status(
        &sb,
        &["-m", "hello", "-v", "1.0", "-k", K53],
        &line("hello/1.0", K53, "installed"),
        "",
    );
}
