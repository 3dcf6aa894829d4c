//! The `dkms` face's upstream behaviour (issue 13): what upstream dkms 3.4.x does
//! and its run_test.sh checks, here on the sandbox's trees: a skip of what is done
//! exits 0, build/install add first, the kernel package hooks, the exit of an
//! uninstall of a version not added, errors as a blank line then `Error! ...`.
//! The `dkms-hook` face keeps its own rules (asserted in engine.rs and elsewhere).

use crate::support::{Sandbox, K54};

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn building_or_installing_what_is_done_is_a_skip_with_exit_0() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["build", "hello/1.0", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("Building module(s)... done.\n"),
        "{out}"
    );
    let again = sb.run_ours_as_dkms(&["build", "hello/1.0", "-k", K54]);
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(
        again.stdout,
        format!("Module hello/1.0 already built for kernel {K54} (x86_64), skip. You may override by specifying --force.\n"),
        "{again}"
    );
    sb.run_ours_as_dkms(&["install", "hello/1.0", "-k", K54]);
    let again = sb.run_ours_as_dkms(&["install", "hello/1.0", "-k", K54]);
    assert_eq!(again.code, 0, "{again}");
    assert_eq!(
        again.stdout,
        format!("Module hello/1.0 already installed on kernel {K54} (x86_64), skip. You may override by specifying --force.\n"),
        "{again}"
    );
    // The dkms-hook face keeps its refusal.
    let ours = sb.run_ours(&["install", "hello/1.0", "-k", K54]);
    assert_eq!(ours.code, 5, "{ours}");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn install_of_a_version_not_added_adds_builds_and_installs_it() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["install", "-m", "hello", "-v", "1.0", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    let link = sb.dkms_tree().join("hello/1.0/source");
    assert!(
        out.stdout
            .starts_with(&format!("Creating symlink {} -> ", link.display())),
        "{out}"
    );
    assert!(
        out.stdout.contains("\n\n"),
        "a blank line after the add\n{out}"
    );
    let file = sb.installed_module_dir(K54).join("hello.ko");
    assert!(
        out.stdout
            .contains(&format!("Installing {}", file.display())),
        "{out}"
    );
    assert!(sb
        .installed_module_dir(K54)
        .read_dir()
        .unwrap()
        .next()
        .is_some());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn kernel_prerm_unbuilds_every_module_built_for_the_kernel() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["kernel_prerm"]);
    assert_eq!(out.code, 4, "{out}");
    assert_eq!(
        out.stderr,
        "\nError! The action kernel_prerm requires exactly one kernel version parameter on the command line.\n"
    );
    sb.run_ours_as_dkms(&["install", "hello/1.0", "-k", K54]);
    let out = sb.run_ours_as_dkms(&["kernel_prerm", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stderr.lines().next(),
        Some(format!("dkms: removing module hello/1.0 for kernel {K54} (x86_64)").as_str()),
        "{out}"
    );
    assert!(
        out.stdout
            .starts_with(&format!("Module hello/1.0 for kernel {K54} (x86_64):\n")),
        "{out}"
    );
    assert!(
        !sb.dkms_tree().join("hello/1.0").join(K54).exists(),
        "{out}"
    );
    // Nothing built any more: nothing to say.
    let again = sb.run_ours_as_dkms(&["kernel_prerm", "-k", K54]);
    assert_eq!((again.code, again.stdout.as_str()), (0, ""), "{again}");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn uninstall_of_a_version_not_added_exits_3_with_upstreams_error() {
    let sb = Sandbox::new();
    let out = sb.run_ours_as_dkms(&["uninstall", "hello/1.0", "-k", K54]);
    assert_eq!(out.code, 3, "{out}");
    assert_eq!(
        out.stderr,
        "\nError! The module/version combo: hello/1.0 is not located in the DKMS tree.\n"
    );
    assert_eq!(out.stdout, "");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn remove_says_per_kernel_what_there_was_nothing_to_do_for() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["remove", "hello/1.0", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(
        out.stdout,
        format!(
            "Module hello/1.0 is not installed for kernel {K54} (x86_64). Skipping...\n\
             Module hello/1.0 is not built for kernel {K54} (x86_64). Skipping...\n\n\
             Deleting module hello/1.0 completely from the DKMS tree.\n"
        ),
        "{out}"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_refuses_all_and_remove_refuses_a_broken_version_as_upstream() {
    let sb = Sandbox::new();
    let out = sb.run_ours_as_dkms(&["autoinstall", "--all"]);
    assert_eq!(out.code, 5, "{out}");
    assert_eq!(
        out.stderr,
        "\nError! The action autoinstall does not support the --all parameter.\n"
    );
    sb.add("hello", "1.0");
    sb.remove_source("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["remove", "hello/1.0", "--all"]);
    assert_eq!(out.code, 4, "{out}");
    assert!(
        out.stderr.starts_with("\nError! hello/1.0 is broken!\n"),
        "{out}"
    );
    assert!(sb.dkms_tree().join("hello/1.0").exists());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_words_its_jobs_and_closing_line_as_upstream() {
    let sb = Sandbox::new();
    // Nothing in the tree: nothing to do, whatever the kernel.
    let out = sb.run_ours_as_dkms(&["autoinstall", "-k", "no-such-kernel"]);
    assert_eq!(
        (out.code, out.stdout.as_str(), out.stderr.as_str()),
        (0, "", ""),
        "{out}"
    );
    let out = sb.run_ours_as_dkms(&["kernel_postinst"]);
    assert_eq!(out.code, 4, "{out}");
    sb.add("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["autoinstall", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    let first = format!("Autoinstall of module hello/1.0 for kernel {K54} (x86_64)");
    assert!(out.stdout.lines().any(|l| l == first), "{out}");
    assert!(
        out.stdout.ends_with(&format!(
            "\n\nAutoinstall on {K54} succeeded for module(s) hello.\n"
        )),
        "{out}"
    );
    // Everything installed: upstream says nothing.
    let again = sb.run_ours_as_dkms(&["autoinstall", "-k", K54]);
    assert_eq!((again.code, again.stdout.as_str()), (0, ""), "{again}");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_dkms_conf_with_zero_modules_is_added_and_installed_with_upstreams_warning() {
    let sb = Sandbox::new();
    let dir = sb.source_tree().join("nomods-1.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dkms.conf"),
        "PACKAGE_NAME=nomods\nPACKAGE_VERSION=1.0\nAUTOINSTALL=yes\n",
    )
    .unwrap();
    // kbuild builds nothing, successfully.
    std::fs::write(dir.join("Makefile"), "obj-m :=\n").unwrap();
    let warning = "dkms.conf: Warning! Zero modules specified.\n";
    let add = sb.run_ours_as_dkms(&["add", "nomods/1.0"]);
    assert_eq!(add.code, 0, "{add}");
    assert_eq!(add.stderr, warning, "{add}");
    let install = sb.run_ours_as_dkms(&["install", "nomods/1.0", "-k", K54]);
    assert_eq!(install.code, 0, "{install}");
    // Once for the build's reading of dkms.conf, once for the install's (the sandbox's
    // relocated install tree adds a depmod warning of its own).
    assert_eq!(install.stderr.matches(warning).count(), 2, "{install}");
    let status = sb.run_ours_as_dkms(&["status", "nomods/1.0", "-k", K54]);
    assert_eq!(
        status.stdout,
        format!("nomods/1.0, {K54}, x86_64: installed\n"),
        "{status}"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_dkms_conf_breaking_several_rules_gets_every_one_of_upstreams_lines() {
    let sb = Sandbox::new();
    // Upstream's test/dkms_conf_test_invalid and the text its run_test.sh expects.
    let dir = sb.source_tree().join("dkms_conf_test-1.0");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dkms.conf"),
        "PACKAGE_NAME=\"dkms_conf_test\"\nPACKAGE_VERSION=\"1.0\"\n\
         DEST_MODULE_NAME[0]=\"bar.ko\"\nDEST_MODULE_LOCATION=\"/wrong/path\"\n\
         BUILT_MODULE_NAME[1]=\"bar.o\"\nDEST_MODULE_NAME[1]=\"foo\"\nAUTOINSTALL=\"maybe\"\n",
    )
    .unwrap();
    let out = sb.run_ours_as_dkms(&["add", "dkms_conf_test/1.0"]);
    assert_eq!(out.code, 8, "{out}");
    assert_eq!(
        out.stderr,
        format!(
            "dkms.conf: Error! No 'BUILT_MODULE_NAME' directive specified for record #0.\n\
             dkms.conf: Error! 'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #0.\n\
             dkms.conf: Error! Directive 'DEST_MODULE_LOCATION' does not begin with\n\
             '/kernel', '/updates', or '/extra' in record #0.\n\
             dkms.conf: Error! 'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #1.\n\
             dkms.conf: Error! No 'DEST_MODULE_LOCATION' directive specified for record #1.\n\
             dkms.conf: Error! Unsupported AUTOINSTALL value 'maybe'\n\
             \nError! Bad conf file.\nFile: {} does not represent a valid dkms.conf file.\n",
            dir.join("dkms.conf").display()
        ),
        "{out}"
    );
}
