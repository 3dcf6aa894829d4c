//! dkms.conf scripts and MAKE lines evaluated as upstream does: the quoting patterns
//! of zfs-dkms's PRE_BUILD (`echo --host=\"${CROSS_COMPILE%-}\"` inside `$(...)`),
//! single-quoted variables expanded at read time, collapsed whitespace. The fixture's
//! scripts record their arguments; ours must receive exactly what Debian's dkms
//! 3.0.10 gives them on the same tree. (3.0.10 execs every script without `eval`
//! where 3.4.3 evals PRE_BUILD/POST_BUILD; after dkms's second expansion these
//! strings hold no shell syntax, so both give the same arguments. What only 3.4.3's
//! eval does is checked against the spec in `build_scripts_go_through_eval`.)

use crate::support::{run, Sandbox, ARCH, K53, K54, KERNELS};
use std::collections::BTreeMap;
use std::fs;

const SCRIPTS: [&str; 5] = [
    "post_add",
    "pre_build",
    "post_build",
    "pre_install",
    "post_install",
];

/// `add`, `build` and `install` of quoting/1.0 on K54 with `run`, then the argument
/// record of every script (and the records removed for the next run).
fn script_arguments(sb: &Sandbox, run: &dyn Fn(&[&str])) -> BTreeMap<&'static str, String> {
    run(&["add", "-m", "quoting", "-v", "1.0"]);
    run(&["build", "-m", "quoting", "-v", "1.0", "-k", K54]);
    run(&["install", "-m", "quoting", "-v", "1.0", "-k", K54]);
    let source = sb.source_tree();
    let mut records = BTreeMap::new();
    for kind in SCRIPTS {
        let file = source.join(format!("{kind}.argv"));
        let text = fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("the {kind} script left no {}: {e}", file.display()));
        fs::remove_file(&file).unwrap();
        records.insert(kind, text);
    }
    run(&["remove", "-m", "quoting", "-v", "1.0", "--all"]);
    records
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn scripts_receive_the_arguments_upstream_gives_them() {
    let sb = Sandbox::new();
    // The fixture's scripts record into the source tree, which a build confined to
    // its work directory cannot write (tests/it/unpriv.rs): root, as upstream.
    sb.build_as_root();
    sb.copy_fixture("quoting", "1.0");
    let mut upstream = script_arguments(&sb, &|args| {
        sb.upstream(args);
    });
    // 3.0.10 takes kernel_source_dir from /lib/modules (bound over our install tree
    // in its namespace) whatever --installtree says; we take it from the install tree.
    let install_tree = format!("{}/", sb.install_tree().display());
    for text in upstream.values_mut() {
        *text = text.replace("/lib/modules/", &install_tree);
    }
    let ours = script_arguments(&sb, &|args| {
        sb.ours(args);
    });
    assert_eq!(ours, upstream);
    // And what that is, spelled out: the zfs pattern gives empty-valued options.
    let pre_build = &ours["pre_build"];
    assert!(
        pre_build.ends_with("[--with-qat=]\n[--host=]\n"),
        "{pre_build}"
    );
    assert_eq!(ours["post_add"], "[post_add]\n[spaced]\n[words]\n");
    assert_eq!(
        ours["pre_install"],
        format!("[pre_install]\n[quoted]\n['{K54}']\n")
    );
    assert_eq!(ours["post_install"], "[post_install]\n[x86_64]\n");
}

/// Writes `T/etc/quoting.conf`, the override file dkms reads after the dkms.conf.
fn override_conf(sb: &Sandbox, text: &str) {
    fs::write(sb.etc_dir().join("quoting.conf"), text).unwrap();
}

#[test]
#[ignore = "tier b: needs root and kernel headers; scripts/test runs it"]
fn build_scripts_go_through_eval_and_statuses_follow_upstream() {
    // dkms 3.4.3 evals PRE_BUILD/POST_BUILD (`cd <dir>/ && <dir>/<script>`, cwd the
    // build dir) with module, module_version, kernelver and arch exported; a `\$`
    // in single quotes survives the read-time expansions and expands there. A
    // failing PRE_BUILD ends the build with its own status; POST_INSTALL's and
    // POST_REMOVE's statuses are ignored (spec §2.1, measured on 3.4.3).
    let sb = Sandbox::new();
    // The scripts record into the source tree: see the test above.
    sb.build_as_root();
    sb.copy_fixture("quoting", "1.0");
    override_conf(
        &sb,
        r#"PRE_BUILD='argv.sh ${source_tree} pre_build \$kernelver \$(printenv module) && ./argv.sh ${source_tree} chained'
POST_INSTALL='argv.sh ${source_tree} fail7'
POST_REMOVE='argv.sh ${source_tree} fail9'
"#,
    );
    sb.ours(&["add", "quoting/1.0"]);
    sb.ours(&["install", "quoting/1.0", "-k", K54]);
    let record = |kind: &str| fs::read_to_string(sb.source_tree().join(format!("{kind}.argv")));
    assert_eq!(
        record("pre_build").unwrap(),
        format!("[pre_build]\n[{K54}]\n[quoting]\n")
    );
    assert_eq!(record("chained").unwrap(), "[chained]\n");
    sb.ours(&["uninstall", "quoting/1.0", "-k", K54]);

    override_conf(&sb, "PRE_BUILD='argv.sh ${source_tree} fail4'\n");
    let out = sb.run_ours(&["build", "quoting/1.0", "-k", K54, "--force"]);
    assert_eq!(out.code, 4, "PRE_BUILD's status is the exit status\n{out}");
}

#[test]
#[ignore = "tier b: needs root and kernel headers; scripts/test runs it"]
fn post_build_finds_this_build_at_the_shared_build_path() {
    // zfs's POST_BUILD copies `<v>/build/module/Module.symvers` into `<v>/<k>/<a>/`:
    // during each kernel's build `<v>/build` is that build, and `<k>/<a>` exists.
    // After a success `<v>/build` is gone (as upstream's); after a failure
    // `<v>/build/make.log` is the failed build's log, and upstream still removes
    // the module.
    let sb = Sandbox::new();
    sb.copy_fixture("quoting", "1.0");
    override_conf(
        &sb,
        // PRE_BUILD='': the fixture's records its arguments in the source tree, which
        // the unprivileged build cannot write.
        "PRE_BUILD=''\nPOST_BUILD='copy-symvers.sh -t ${dkms_tree} -k ${kernelver} -a ${arch}'\n",
    );
    sb.ours(&["add", "quoting/1.0"]);
    let version_dir = sb.dkms_tree().join("quoting/1.0");
    sb.ours(&["build", "quoting/1.0", "-k", K53, "-k", K54]);
    for kernel in KERNELS {
        let copied = version_dir.join(kernel).join(ARCH).join("Module.symvers");
        assert!(
            copied.is_file(),
            "POST_BUILD copied no {}",
            copied.display()
        );
    }
    let cwd = fs::read_to_string(version_dir.join(K54).join(ARCH).join("post_build.cwd")).unwrap();
    assert_eq!(
        cwd.trim_end(),
        version_dir.join("build").display().to_string()
    );
    assert!(
        version_dir.join("build").symlink_metadata().is_err(),
        "<v>/build is left after a successful build"
    );

    override_conf(
        &sb,
        "PRE_BUILD=''\nPOST_BUILD=''\nMAKE[0]='make no-such-target'\n",
    );
    let out = sb.run_ours(&["build", "quoting/1.0", "-k", K54, "--force"]);
    assert_eq!(out.code, 10, "{out}");
    let log = fs::read_to_string(version_dir.join("build/make.log")).unwrap();
    assert!(log.contains("no-such-target"), "{log}");
    sb.upstream(&["remove", "-m", "quoting", "-v", "1.0", "--all"]);
}

#[test]
#[ignore = "tier b: needs root and kernel headers; scripts/test runs it"]
fn make_sees_the_callers_environment_without_its_compiler_flags() {
    // Upstream unsets CC CXX CFLAGS CXXFLAGS LDFLAGS and passes the rest on, so
    // `IGNORE_CC_MISMATCH=1 dkms install` reaches make; kernelver is exported.
    let sb = Sandbox::new();
    sb.copy_fixture("quoting", "1.0");
    // The fixture's scripts record into the source tree, which the unprivileged
    // build cannot write; this test is about make's environment.
    override_conf(&sb, "PRE_BUILD=''\nPOST_BUILD=''\n");
    sb.ours(&["add", "quoting/1.0"]);
    let mut install = sb.ours_command(&[], &["install", "quoting/1.0", "-k", K54]);
    install
        .env("IGNORE_CC_MISMATCH", "1")
        .env("CFLAGS", "-Ocaller");
    let out = run(install);
    assert_eq!(out.code, 0, "{out}");
    let log = sb
        .built_module_dir("quoting", "1.0", K54)
        .parent()
        .unwrap()
        .join("log/make.log");
    let log = fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    assert!(
        log.contains("caller env: IGNORE_CC_MISMATCH=1 CFLAGS="),
        "{log}"
    );
    assert!(!log.contains("CFLAGS=environment"), "{log}");
    assert!(log.contains(&format!("kernelver={K54}")), "{log}");
}

#[test]
#[ignore = "tier b: needs root and kernel headers; scripts/test runs it"]
fn install_scripts_output_is_shown_and_a_failing_pre_install_aborts_the_install() {
    // Upstream runs PRE_INSTALL and POST_INSTALL with the terminal as their output
    // (`Running the pre_install script:` then what they print); a failing
    // PRE_INSTALL dies with 101 before anything is installed.
    let sb = Sandbox::new();
    let (conf, text) = hello_with_say_scripts(
        &sb,
        "PRE_INSTALL=\"say.sh pre_install 3\"\nPOST_INSTALL=\"say.sh post_install 5\"\n",
    );
    sb.ours(&["add", "hello/1.0"]);
    let refused = sb.run_ours_as_dkms(&["install", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(refused.code, 101, "{refused}");
    assert!(
        refused
            .stdout
            .contains("Running the pre_install script:\nsaid pre_install\n"),
        "{refused}"
    );
    assert!(refused.stderr.contains("warned pre_install"), "{refused}");
    assert!(!sb.installed_module_dir(K53).exists(), "installed anyway");

    fs::write(
        &conf,
        format!(
            "{text}PRE_INSTALL=\"say.sh pre_install 0\"\nPOST_INSTALL=\"say.sh post_install 5\"\n"
        ),
    )
    .unwrap();
    let installed = sb.run_ours_as_dkms(&["install", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(
        installed.code, 0,
        "POST_INSTALL's status is ignored\n{installed}"
    );
    assert!(
        installed
            .stdout
            .contains("Running the post_install script:\nsaid post_install\n"),
        "{installed}"
    );
    assert!(sb.installed_module_dir(K53).exists(), "{installed}");
}

#[test]
#[ignore = "tier b: needs root and kernel headers; scripts/test runs it"]
fn post_remove_runs_after_each_uninstall_and_its_output_is_shown() {
    // Upstream runs POST_REMOVE in do_uninstall: on `dkms uninstall`, and on `remove`
    // once for each kernel the version was installed for (a build that is not
    // installed runs none). Its output reaches the terminal; its status is ignored.
    let sb = Sandbox::new();
    hello_with_say_scripts(&sb, "POST_REMOVE=\"say.sh post_remove 9\"\n");
    let said = "Running the post_remove script:\nsaid post_remove\n";
    sb.ours(&["add", "hello/1.0"]);
    for kernel in KERNELS {
        sb.ours(&["install", "hello/1.0", "-k", kernel]);
    }
    let uninstalled = sb.run_ours_as_dkms(&["uninstall", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(
        uninstalled.code, 0,
        "POST_REMOVE's status is ignored\n{uninstalled}"
    );
    assert_eq!(uninstalled.stdout.matches(said).count(), 1, "{uninstalled}");
    assert!(
        uninstalled.stderr.contains("warned post_remove"),
        "{uninstalled}"
    );
    assert!(!sb.installed_module_dir(K53).exists(), "{uninstalled}");

    // Built for both kernels, installed for K54 only: one run.
    let removed_one = sb.run_ours_as_dkms(&["remove", "-m", "hello", "-v", "1.0", "-k", K53]);
    assert_eq!(removed_one.code, 0, "{removed_one}");
    assert_eq!(removed_one.stdout.matches(said).count(), 0, "{removed_one}");
    sb.ours(&["install", "hello/1.0", "-k", K53]);
    let removed = sb.run_ours_as_dkms(&["remove", "-m", "hello", "-v", "1.0", "--all"]);
    assert_eq!(removed.code, 0, "{removed}");
    assert_eq!(
        removed.stdout.matches(said).count(),
        2,
        "once per kernel\n{removed}"
    );
    assert!(!sb.dkms_tree().join("hello/1.0").exists(), "{removed}");
}

/// The hello fixture with a `say.sh` (prints "said $1" on stdout and "warned $1" on
/// stderr, exits $2) and `directives` appended to its dkms.conf; returns the
/// dkms.conf's path and its text before the directives, for a test that rewrites it.
fn hello_with_say_scripts(sb: &Sandbox, directives: &str) -> (std::path::PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let source = sb.copy_fixture("hello", "1.0");
    let say = source.join("say.sh");
    fs::write(
        &say,
        "#!/bin/sh\necho \"said $1\"\necho \"warned $1\" >&2\nexit $2\n",
    )
    .unwrap();
    fs::set_permissions(&say, fs::Permissions::from_mode(0o755)).unwrap();
    let conf = source.join("dkms.conf");
    let text = fs::read_to_string(&conf).unwrap();
    fs::write(&conf, format!("{text}{directives}")).unwrap();
    (conf, text)
}
