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

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn post_transaction_runs_after_install_and_uninstall_as_upstream_and_not_after_add() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    let dropins = sb.etc_dir().join("framework.conf.d");
    std::fs::create_dir_all(&dropins).unwrap();
    std::fs::write(
        dropins.join("pt.conf"),
        "post_transaction=\"echo This is a test message as post transaction. Kernel version is $kernelver\"\n",
    )
    .unwrap();
    let log = sb.dkms_tree().join("post_transaction.log");

    let added = sb.run_ours_as_dkms(&["add", "-m", "hello", "-v", "1.0"]);
    assert_eq!(added.code, 0, "{added}");
    assert!(!log.exists(), "post_transaction ran after add\n{added}");

    let installed = sb.run_ours_as_dkms(&["install", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(installed.code, 0, "{installed}");
    assert!(
        installed
            .stdout
            .ends_with("Executing post-transaction command... done.\n"),
        "{installed}"
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let expected = format!(
        "\nExecuting post-transaction command\n# command: echo This is a test message as post transaction. Kernel version is {K53}\nThis is a test message as post transaction. Kernel version is {K53}\n\n# exit code: 0\n# elapsed time: 00:00:0"
    );
    assert!(text.starts_with(&expected), "{text}");

    std::fs::remove_file(&log).unwrap();
    let uninstalled = sb.run_ours_as_dkms(&["uninstall", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(uninstalled.code, 0, "{uninstalled}");
    assert!(
        log.exists(),
        "post_transaction did not run after uninstall\n{uninstalled}"
    );

    // A failing post_transaction is reported and ignored.
    std::fs::write(dropins.join("pt.conf"), "post_transaction='exit 3'\n").unwrap();
    let failed = sb.run_ours(&["install", "hello/1.0", "-k", K53]);
    assert_eq!(failed.code, 0, "{failed}");
    assert!(
        failed
            .stderr
            .contains("post_transaction exited with status 3"),
        "{failed}"
    );
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn try_sign_modules_false_in_framework_conf_leaves_modules_unsigned() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    std::fs::write(
        sb.etc_dir().join("framework.conf"),
        "try_sign_modules=false\n",
    )
    .unwrap();
    sb.ours(&["add", "hello/1.0"]);
    let built = sb.run_ours_as_dkms(&["build", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(built.code, 0, "{built}");
    assert!(
        built
            .stdout
            .contains("Module signing is disabled by policy, modules won't be signed"),
        "{built}"
    );
    let module = sb.built_module_dir("hello", "1.0", K53);
    let ko = std::fs::read_dir(&module)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("hello.ko"))
        .expect("hello.ko built");
    let modinfo = run({
        let mut cmd = Command::new("modinfo");
        cmd.args(["-F", "signer"]).arg(&ko);
        cmd
    });
    assert_eq!(modinfo.stdout.trim(), "", "{} is signed", ko.display());
    assert!(
        !sb.dkms_tree().join("mok.key").exists(),
        "a key was generated"
    );
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn build_environment_exports_reach_the_build_scripts_and_unexported_ones_do_not() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let source = sb.copy_fixture("hello", "1.0");
    let script = source.join("show.sh");
    std::fs::write(
        &script,
        "#!/bin/sh\necho \"BENV=[$BENV_SEEN] UNEXPORTED=[$UNEXPORTED] CC=[$CC]\"\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    let conf = source.join("dkms.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("PRE_BUILD=\"show.sh\"\n");
    std::fs::write(&conf, text).unwrap();
    let benv = sb.path("benv.sh");
    std::fs::write(
        &benv,
        "export BENV_SEEN=\"for-$kernelver\"\nUNEXPORTED=yes\nexport CC=gcc\n",
    )
    .unwrap();
    std::fs::write(
        sb.etc_dir().join("framework.conf"),
        format!("build_environment={}\n", benv.display()),
    )
    .unwrap();
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["build", "hello/1.0", "-k", K53]);
    let log = sb
        .built_module_dir("hello", "1.0", K53)
        .parent()
        .unwrap()
        .join("log/make.log");
    let log = std::fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        log.contains(&format!("BENV=[for-{K53}] UNEXPORTED=[] CC=[gcc]")),
        "{log}"
    );
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn symlink_modules_installs_absolute_links_into_the_dkms_tree_and_uninstall_removes_only_them() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    std::fs::write(sb.etc_dir().join("framework.conf"), "symlink_modules=1\n").unwrap();
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["install", "hello/1.0", "-k", K53]);
    let dir = sb.installed_module_dir(K53);
    let installed = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("hello.ko"))
        .unwrap_or_else(|| panic!("nothing installed in {}", dir.display()));
    let target = std::fs::read_link(&installed)
        .unwrap_or_else(|e| panic!("{} is not a symlink: {e}", installed.display()));
    let built = sb.built_module_dir("hello", "1.0", K53);
    assert!(
        target.is_absolute() && target.starts_with(&built),
        "{}",
        target.display()
    );
    assert!(installed.is_file(), "the link resolves");

    sb.ours(&["uninstall", "hello/1.0", "-k", K53]);
    assert!(installed.symlink_metadata().is_err(), "the link stays");
    assert!(
        target.is_file(),
        "uninstall removed the built module behind the link"
    );
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn a_patch_in_etc_dkms_module_patches_replaces_the_sources_patch_of_that_name() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("patched", "1.0");
    let patch = std::fs::read_to_string(source.join("patches/fix-syntax-error.patch")).unwrap();
    let ours = patch.replace(
        "test fixture patched 1.0, patched\"",
        "test fixture patched 1.0, patched by the administrator\"",
    );
    assert_ne!(ours, patch);
    let overrides = sb.etc_dir().join("patched/patches");
    std::fs::create_dir_all(&overrides).unwrap();
    std::fs::write(overrides.join("fix-syntax-error.patch"), ours).unwrap();
    sb.ours(&["add", "patched/1.0"]);
    sb.ours(&["build", "patched/1.0", "-k", K53]);
    let module = sb.built_module_dir("patched", "1.0", K53);
    let ko = std::fs::read_dir(&module)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("patched.ko"))
        .expect("patched.ko built");
    let modinfo = run({
        let mut cmd = Command::new("modinfo");
        cmd.args(["-F", "description"]).arg(&ko);
        cmd
    });
    assert_eq!(
        modinfo.stdout.trim(),
        "dkms-hook test fixture patched 1.0, patched by the administrator",
        "{modinfo}"
    );
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn a_script_in_etc_dkms_module_replaces_the_sources_and_runs_from_there() {
    use std::os::unix::fs::PermissionsExt;
    let sb = Sandbox::new();
    let source = sb.copy_fixture("hello", "1.0");
    let write_script = |path: &std::path::Path, says: &str| {
        std::fs::write(path, format!("#!/bin/sh\necho \"{says} in $(pwd)\"\n")).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    write_script(&source.join("show.sh"), "the source's script");
    let overrides = sb.etc_dir().join("hello");
    std::fs::create_dir_all(&overrides).unwrap();
    write_script(&overrides.join("show.sh"), "the administrator's script");
    let conf = source.join("dkms.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str("PRE_BUILD=\"show.sh\"\n");
    std::fs::write(&conf, text).unwrap();
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["build", "hello/1.0", "-k", K53]);
    let log = sb
        .built_module_dir("hello", "1.0", K53)
        .parent()
        .unwrap()
        .join("log/make.log");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!(
            "the administrator's script in {}",
            overrides.display()
        )),
        "{log}"
    );
    assert!(!log.contains("the source's script"), "{log}");
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn depmod_gets_the_kernels_system_map_when_there_is_one() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    let tree = sb.rooted_install_tree();
    std::fs::write(tree.join(K53).join("modules.dep"), "").unwrap();
    let boot = sb.path("root/boot");
    std::fs::create_dir_all(&boot).unwrap();
    let map = boot.join(format!("System.map-{K53}"));
    std::fs::write(&map, "").unwrap();
    sb.ours(&["add", "hello/1.0"]);
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_dkms-hook"));
    cmd.args(["install", "hello/1.0", "-k", K53])
        .arg("--dkmstree")
        .arg(sb.dkms_tree())
        .arg("--sourcetree")
        .arg(sb.source_tree())
        .arg("--installtree")
        .arg(&tree)
        .arg("--etc-dir")
        .arg(sb.etc_dir())
        .env("DKMS_HOOK_CONFIG", sb.etc_dir().join("dkms-hook.toml"))
        .env("RUST_LOG", "debug");
    let out = run(cmd);
    assert_eq!(out.code, 0, "{out}");
    let depmod = out
        .stderr
        .lines()
        .find(|l| l.contains("running depmod"))
        .unwrap_or_else(|| panic!("depmod did not run\n{out}"));
    assert!(
        depmod.contains(&format!("-F {}", map.display())),
        "{depmod}"
    );
}

/// hello/1.0 built for K53, and `module` (a built hello.ko) planted in the kernel's
/// `kernel/drivers/misc/` as if the kernel shipped it.
fn hello_built_with_a_kernel_module(
    sb: &Sandbox,
    module: &str,
    version: &str,
) -> std::path::PathBuf {
    sb.copy_fixture(module, version);
    sb.ours(&["add", &format!("{module}/{version}")]);
    sb.ours(&["build", &format!("{module}/{version}"), "-k", K53]);
    let built = sb.built_module_dir(module, version, K53);
    let ko = std::fs::read_dir(&built)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("hello.ko"))
        .expect("hello.ko built");
    let planted = sb
        .install_tree()
        .join(K53)
        .join("kernel/drivers/misc")
        .join(ko.file_name().unwrap());
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::copy(&ko, &planted).unwrap();
    sb.ours(&["remove", &format!("{module}/{version}"), "--all"]);
    planted
}

#[test]
#[ignore = "tier b: needs root and the headers of two installed kernels; scripts/test runs it"]
fn install_refuses_to_replace_a_newer_module_of_the_kernel_with_exit_6_unless_forced() {
    let sb = Sandbox::new();
    let planted = hello_built_with_a_kernel_module(&sb, "hello", "2.0");
    let kernels_bytes = std::fs::read(&planted).unwrap();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);

    let refused = sb.run_ours_as_dkms(&["install", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(refused.code, 6, "{refused}");
    assert!(
        refused
            .stderr
            .contains("is not newer than what is already found in kernel")
            || refused
                .stdout
                .contains("is not newer than what is already found in kernel"),
        "{refused}"
    );
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        kernels_bytes,
        "the kernel's module changed"
    );
    assert!(
        !sb.installed_module_dir(K53).exists(),
        "something was installed"
    );

    let forced = sb.run_ours(&["install", "hello/1.0", "-k", K53, "--force"]);
    assert_eq!(forced.code, 0, "{forced}");
    assert!(!planted.exists(), "the kernel's module was not archived");
    let archived = sb.original_module_dir("hello", K53);
    assert!(archived.exists(), "{forced}");

    // Uninstall puts the kernel's own module back where it was.
    sb.ours(&["uninstall", "hello/1.0", "-k", K53]);
    assert_eq!(
        std::fs::read(&planted).unwrap(),
        kernels_bytes,
        "not restored"
    );
}
