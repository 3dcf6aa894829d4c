//! The engine (add, build, install, uninstall, unbuild, remove, autoinstall) through our
//! binary: real modules from `tests/fixtures/` built against the two real kernels'
//! headers, checked with kmod's `modinfo`, and compared with what Debian's dkms 3.0.10
//! does on the same tree (both directions) and on a tree of its own.

use crate::support::{
    assert_ours_status, assert_status_matches_upstream, headers, line, mkdir,
    normalize_upstream_3_0_10, real_system_snapshot, run, symlink, Output, Sandbox, ARCH, K53, K54,
    KERNELS,
};
use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The subject of the key dkms (and we) generate; `modinfo -F signer` prints it.
const SIGNER: &str = "DKMS module signing key";

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// `modinfo -F <field> <file>`, trimmed; fails the test when modinfo fails.
fn modinfo(field: &str, file: &Path) -> String {
    let mut cmd = Command::new("modinfo");
    cmd.args(["-F", field]).arg(file);
    let out = run(cmd);
    assert_eq!(out.code, 0, "modinfo -F {field} {}\n{out}", file.display());
    out.stdout.trim_end().to_string()
}

/// Fails unless `file` is a module for `kernel` (its vermagic starts with the release).
fn assert_module_for_kernel(file: &Path, kernel: &str) {
    let vermagic = modinfo("vermagic", file);
    assert!(
        vermagic.starts_with(&format!("{kernel} ")),
        "{} has vermagic {vermagic:?}, not one for {kernel}",
        file.display()
    );
}

/// Fails unless `file` is a module for `kernel` signed with the DKMS key.
fn assert_signed_module_for_kernel(file: &Path, kernel: &str) {
    assert_module_for_kernel(file, kernel);
    assert_eq!(
        modinfo("signer", file),
        SIGNER,
        "{} is not signed with the DKMS key",
        file.display()
    );
}

/// `<install_tree>/<kernel>/updates/dkms/<name>.ko`.
fn installed_ko(install_tree: &Path, kernel: &str, name: &str) -> PathBuf {
    install_tree
        .join(kernel)
        .join("updates/dkms")
        .join(format!("{name}.ko"))
}

/// `<dkms_tree>/<module>/kernel-<kernel>-x86_64`.
fn install_link(sb: &Sandbox, module: &str, kernel: &str) -> PathBuf {
    sb.dkms_tree()
        .join(module)
        .join(format!("kernel-{kernel}-{ARCH}"))
}

/// Every path under `dir` (files, symlinks and directories, relative, not following
/// symlinks), sorted.
fn tree_listing(dir: &Path) -> BTreeSet<String> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("reading a directory entry");
            let path = entry.path();
            let relative = path.strip_prefix(base).expect("inside the base");
            if crate::support::INFRASTRUCTURE
                .iter()
                .any(|name| relative == Path::new(name))
            {
                continue;
            }
            out.insert(relative.to_string_lossy().into_owned());
            if entry.file_type().expect("file type").is_dir() {
                walk(base, &path, out);
            }
        }
    }
    let mut out = BTreeSet::new();
    walk(dir, dir, &mut out);
    out
}

/// The module files (`*.ko`, `*.ko.*`) anywhere under `dir`.
fn module_files(dir: &Path) -> Vec<String> {
    tree_listing(dir)
        .into_iter()
        .filter(|p| p.ends_with(".ko") || p.contains(".ko."))
        .collect()
}

/// Everything under `dir` whose name starts with our temp prefix (a staged build, a
/// half-written file).
fn leftover_temp_files(dir: &Path) -> Vec<String> {
    tree_listing(dir)
        .into_iter()
        .filter(|p| {
            Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with(".dkms-hook-tmp"))
        })
        .collect()
}

/// Fails unless `out` exited with `code`.
fn assert_exit(out: &Output, code: i32, what: &str) {
    assert_eq!(out.code, code, "{what}: expected exit code {code}\n{out}");
}

/// `m/v, <kernel>, x86_64: <state>` for both kernels.
fn lines_for_both(module_version: &str, state: &str) -> String {
    KERNELS
        .iter()
        .map(|k| line(module_version, k, state))
        .collect()
}

/// Fails unless `module/version` is installed for `kernel` from our build: the
/// relative install link, each module in the build and in `updates/dkms` (the same
/// bytes), for the right kernel and signed.
fn assert_installed(sb: &Sandbox, module: &str, version: &str, kernel: &str, names: &[&str]) {
    assert_installed_in(sb, &sb.install_tree(), module, version, kernel, names);
}

fn assert_installed_in(
    sb: &Sandbox,
    install_tree: &Path,
    module: &str,
    version: &str,
    kernel: &str,
    names: &[&str],
) {
    let link = install_link(sb, module, kernel);
    assert_eq!(
        fs::read_link(&link).unwrap_or_else(|e| panic!("reading {}: {e}", link.display())),
        Path::new(version).join(kernel).join(ARCH),
        "{} must be the relative link <version>/<kernel>/<arch>",
        link.display()
    );
    for name in names {
        let built = sb
            .built_module_dir(module, version, kernel)
            .join(format!("{name}.ko"));
        let installed = installed_ko(install_tree, kernel, name);
        assert!(built.is_file(), "{} is missing", built.display());
        assert!(installed.is_file(), "{} is missing", installed.display());
        assert_eq!(
            fs::read(&built).unwrap(),
            fs::read(&installed).unwrap(),
            "{} differs from the build {}",
            installed.display(),
            built.display()
        );
        assert_signed_module_for_kernel(&installed, kernel);
    }
}

/// Fails unless the kernel's install directory holds no `updates/` at all (the files
/// went, and so did the directories they emptied) and the install link is gone.
fn assert_nothing_installed(sb: &Sandbox, install_tree: &Path, module: &str, kernel: &str) {
    let updates = install_tree.join(kernel).join("updates");
    assert!(
        !updates.exists(),
        "{} is still there: {:?}",
        updates.display(),
        tree_listing(&updates)
    );
    let link = install_link(sb, module, kernel);
    assert!(
        link.symlink_metadata().is_err(),
        "{} is still there",
        link.display()
    );
}

/// Copies the fixture, adds it with `add_args`, then builds and installs it for both
/// kernels through our binary, checking the tree and `status` after each step.
fn add_build_install(sb: &Sandbox, module: &str, names: &[&str], add_args: &[&str]) {
    let source = sb.copy_fixture(module, "1.0");
    let mv = format!("{module}/1.0");
    let mut add = vec!["add"];
    add.extend_from_slice(add_args);
    sb.ours(&add);
    assert_eq!(
        fs::read_link(sb.dkms_tree().join(module).join("1.0/source")).unwrap(),
        source,
        "add links the source"
    );
    assert_ours_status(sb, &[], &format!("{mv}: added\n"), "");

    sb.ours(&["build", &mv, "-k", K53, "-k", K54]);
    for kernel in KERNELS {
        for name in names {
            let built = sb
                .built_module_dir(module, "1.0", kernel)
                .join(format!("{name}.ko"));
            assert_signed_module_for_kernel(&built, kernel);
        }
        assert!(
            sb.dkms_tree()
                .join(module)
                .join("1.0")
                .join(kernel)
                .join(ARCH)
                .join("log/make.log")
                .is_file(),
            "the build keeps its make.log"
        );
    }
    for key in ["mok.key", "mok.pub"] {
        assert!(
            sb.dkms_tree().join(key).is_file(),
            "the signing key pair is generated at <dkmstree>/{key}"
        );
    }
    assert!(
        !sb.install_tree().join(K53).join("updates").exists(),
        "build installs nothing"
    );
    assert_ours_status(sb, &[], &lines_for_both(&mv, "built"), "");

    sb.ours(&["install", "-m", module, "-v", "1.0", "-k", K53, "-k", K54]);
    for kernel in KERNELS {
        assert_installed(sb, module, "1.0", kernel, names);
    }
    assert_ours_status(sb, &[], &lines_for_both(&mv, "installed"), "");
}

/// Uninstalls, unbuilds and removes `module/1.0` on both kernels through our binary,
/// checking the tree and `status` after each step.
fn uninstall_unbuild_remove(sb: &Sandbox, module: &str, names: &[&str]) {
    let mv = format!("{module}/1.0");
    sb.ours(&["uninstall", &mv, "-k", K53, "-k", K54]);
    for kernel in KERNELS {
        assert_nothing_installed(sb, &sb.install_tree(), module, kernel);
        for name in names {
            let built = sb
                .built_module_dir(module, "1.0", kernel)
                .join(format!("{name}.ko"));
            assert!(
                built.is_file(),
                "uninstall keeps the build {}",
                built.display()
            );
        }
    }
    assert_ours_status(sb, &[], &lines_for_both(&mv, "built"), "");

    sb.ours(&["unbuild", &mv, "-k", K53, "-k", K54]);
    let version_dir = sb.dkms_tree().join(module).join("1.0");
    assert_eq!(
        tree_listing(&version_dir),
        BTreeSet::from(["source".to_string()]),
        "unbuild leaves only the source link in {}",
        version_dir.display()
    );
    assert_ours_status(sb, &[], &format!("{mv}: added\n"), "");

    sb.ours(&["remove", &mv, "--all"]);
    assert!(
        !sb.dkms_tree().join(module).exists(),
        "remove takes {module} out of the DKMS tree"
    );
    assert!(
        sb.source_tree()
            .join(format!("{module}-1.0/dkms.conf"))
            .is_file(),
        "remove keeps the source in the source tree"
    );
    assert_ours_status(sb, &[], "", "");
    assert!(module_files(&sb.install_tree()).is_empty());
}

/// Writes `text` to `path`.
fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
}

// ---------------------------------------------------------------------------------
// 1. The lifecycle through our binary
// ---------------------------------------------------------------------------------

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn plain_module_is_added_built_installed_uninstalled_unbuilt_and_removed_on_two_kernels() {
    let sb = Sandbox::new();
    add_build_install(&sb, "hello", &["hello"], &["-m", "hello", "-v", "1.0"]);
    uninstall_unbuild_remove(&sb, "hello", &["hello"]);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn one_source_building_two_modules_one_in_a_subdirectory_goes_through_the_lifecycle() {
    let sb = Sandbox::new();
    let names = ["twomods_main", "twomods_sub"];
    // Added by the path of its source directory.
    let source = sb.source_tree().join("twomods-1.0");
    add_build_install(
        &sb,
        "twomods",
        &names,
        &[source.to_str().expect("UTF-8 path")],
    );
    for kernel in KERNELS {
        assert_eq!(
            modinfo(
                "description",
                &installed_ko(&sb.install_tree(), kernel, "twomods_sub")
            ),
            "dkms-hook test fixture twomods 1.0, module in sub/",
            "the module from BUILT_MODULE_LOCATION sub/ is installed"
        );
    }
    uninstall_unbuild_remove(&sb, "twomods", &names);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn patched_source_compiles_because_its_patch_is_applied_to_the_build_copy_only() {
    let sb = Sandbox::new();
    add_build_install(&sb, "patched", &["patched"], &["patched/1.0"]);
    for kernel in KERNELS {
        assert_eq!(
            modinfo(
                "description",
                &installed_ko(&sb.install_tree(), kernel, "patched")
            ),
            "dkms-hook test fixture patched 1.0, patched"
        );
    }
    let source = fs::read_to_string(sb.source_tree().join("patched-1.0/patched.c")).unwrap();
    assert!(
        source.contains("return 42 }"),
        "the source tree keeps the unpatched file:\n{source}"
    );
    uninstall_unbuild_remove(&sb, "patched", &["patched"]);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn make_flags_chosen_per_kernel_in_dkms_conf_reach_each_kernels_build() {
    let sb = Sandbox::new();
    add_build_install(&sb, "perkernel", &["perkernel"], &["-m", "perkernel/1.0"]);
    for (kernel, define) in [(K53, "FOR_53"), (K54, "FOR_OTHERS")] {
        assert_eq!(
            modinfo(
                "description",
                &installed_ko(&sb.install_tree(), kernel, "perkernel")
            ),
            format!("built with -D{define}"),
            "the MAKE[0] picked for {kernel}"
        );
    }
    uninstall_unbuild_remove(&sb, "perkernel", &["perkernel"]);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn build_exclusive_kernel_module_exits_77_on_the_excluded_kernel_and_installs_on_the_other() {
    let sb = Sandbox::new();
    sb.copy_fixture("exclusive", "1.0");
    sb.ours(&["add", "exclusive/1.0"]);

    for action in ["build", "install"] {
        let out = sb.run_ours(&[action, "exclusive/1.0", "-k", K53]);
        assert_exit(&out, 77, &format!("{action} on the excluded kernel"));
        assert!(
            out.stderr.contains("BUILD_EXCLUSIVE_KERNEL"),
            "the reason names the directive\n{out}"
        );
        assert!(!sb.dkms_tree().join("exclusive/1.0").join(K53).exists());
    }
    assert_ours_status(&sb, &[], "exclusive/1.0: added\n", "");

    sb.ours(&["install", "exclusive/1.0", "-k", K54]);
    assert_installed(&sb, "exclusive", "1.0", K54, &["exclusive"]);
    assert!(!sb.install_tree().join(K53).join("updates").exists());
    assert_ours_status(&sb, &[], &line("exclusive/1.0", K54, "installed"), "");

    sb.ours(&["uninstall", "exclusive/1.0", "-k", K54]);
    assert_nothing_installed(&sb, &sb.install_tree(), "exclusive", K54);
    sb.ours(&["unbuild", "exclusive/1.0", "-k", K54]);
    assert_ours_status(&sb, &[], "exclusive/1.0: added\n", "");
    sb.ours(&["remove", "exclusive/1.0", "--all"]);
    assert!(!sb.dkms_tree().join("exclusive").exists());
    assert!(sb.source_tree().join("exclusive-1.0/dkms.conf").is_file());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn module_that_does_not_compile_exits_10_names_its_make_log_and_harms_nothing_else() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["install", "hello/1.0", "-k", K53]);
    sb.copy_fixture("broken", "1.0");
    sb.ours(&["add", "broken/1.0"]);
    let before = tree_listing(&sb.install_tree());

    let out = sb.run_ours(&["build", "broken/1.0", "-k", K53, "-k", K54]);
    assert_exit(&out, 10, "build of a module with a compile error");
    // Every make.log the error names exists and holds the compiler's error; there is
    // one for each kernel.
    let logs: Vec<PathBuf> = out
        .stderr
        .split(|c: char| c.is_whitespace() || "()'\"`;,".contains(c))
        .filter(|word| word.ends_with("make.log"))
        .map(PathBuf::from)
        .collect();
    for kernel in KERNELS {
        let (log, text) = logs
            .iter()
            .map(|log| {
                let text = fs::read_to_string(log).unwrap_or_else(|e| {
                    panic!("the named log {} cannot be read: {e}\n{out}", log.display())
                });
                (log, text)
            })
            .find(|(log, text)| log.to_string_lossy().contains(kernel) || text.contains(kernel))
            .unwrap_or_else(|| panic!("stderr names no make.log for {kernel}\n{out}"));
        assert!(
            text.contains("dkms_hook_undeclared_identifier") && text.contains("error"),
            "{} does not hold the compiler error:\n{text}",
            log.display()
        );
    }
    for kernel in KERNELS {
        let build = sb.dkms_tree().join("broken/1.0").join(kernel).join(ARCH);
        assert!(
            !build.exists(),
            "a failed build leaves no {}: {:?}",
            build.display(),
            tree_listing(&build)
        );
    }
    assert_eq!(leftover_temp_files(&sb.dkms_tree()), Vec::<String>::new());
    assert_eq!(
        leftover_temp_files(&sb.install_tree()),
        Vec::<String>::new()
    );

    // Nothing else was touched: hello is still installed, from the same files.
    assert_eq!(tree_listing(&sb.install_tree()), before);
    assert_installed(&sb, "hello", "1.0", K53, &["hello"]);
    assert_ours_status(
        &sb,
        &[],
        &format!("broken/1.0: added\n{}", line("hello/1.0", K53, "installed")),
        "",
    );

    let out = sb.run_ours(&["install", "broken/1.0", "-k", K54]);
    assert_exit(&out, 10, "install of a module with a compile error");
    assert!(!sb.install_tree().join(K54).join("updates").exists());
    assert!(!install_link(&sb, "broken", K54).exists());

    // A forced rebuild of the installed hello that fails keeps its build and its
    // installed module as they were.
    let hello_c = sb.source_tree().join("hello-1.0/hello.c");
    let mut source = fs::read_to_string(&hello_c).unwrap();
    source.push_str("static int dkms_hook_syntax_error( {\n");
    write(&hello_c, &source);
    let built = sb.built_module_dir("hello", "1.0", K53).join("hello.ko");
    let (built_before, installed_before) = (
        fs::read(&built).unwrap(),
        fs::read(installed_ko(&sb.install_tree(), K53, "hello")).unwrap(),
    );
    let out = sb.run_ours(&["build", "hello/1.0", "-k", K53, "--force"]);
    assert_exit(&out, 10, "forced rebuild that does not compile");
    assert_eq!(fs::read(&built).unwrap(), built_before);
    assert_installed(&sb, "hello", "1.0", K53, &["hello"]);
    assert_eq!(
        fs::read(installed_ko(&sb.install_tree(), K53, "hello")).unwrap(),
        installed_before
    );
    assert_eq!(leftover_temp_files(&sb.dkms_tree()), Vec::<String>::new());
}

/// [`Sandbox::rooted_install_tree`] with a `modules.dep` for each kernel, made by
/// `depmod -b T/root` (so the kernels look booted-from and our depmod runs).
fn rooted_install_tree_with_modules_dep(sb: &Sandbox) -> PathBuf {
    let tree = sb.rooted_install_tree();
    for kernel in KERNELS {
        let mut cmd = Command::new("depmod");
        cmd.arg("-b").arg(sb.path("root")).args(["-a", kernel]);
        assert_exit(&run(cmd), 0, "depmod -b <sandbox root>");
        assert_eq!(modules_dep(&tree, kernel), "");
    }
    tree
}

/// `<tree>/<kernel>/modules.dep`.
fn modules_dep(tree: &Path, kernel: &str) -> String {
    let file = tree.join(kernel).join("modules.dep");
    fs::read_to_string(&file).unwrap_or_else(|e| panic!("reading {}: {e}", file.display()))
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn install_runs_depmod_on_the_relocated_install_tree_and_no_depmod_skips_it() {
    let sb = Sandbox::new();
    let tree = rooted_install_tree_with_modules_dep(&sb);
    let modules_dep = |kernel: &str| modules_dep(&tree, kernel);
    let real_before = real_system_snapshot();

    sb.copy_fixture("hello", "1.0");
    let ours = |args: &[&str]| {
        let out = sb.run_ours_with_install_tree(&tree, args);
        assert_exit(&out, 0, &format!("dkms-hook {args:?}"));
        out
    };
    ours(&["add", "hello/1.0"]);
    ours(&["install", "hello/1.0", "-k", K53]);
    assert_installed_in(&sb, &tree, "hello", "1.0", K53, &["hello"]);
    assert_eq!(modules_dep(K53), "updates/dkms/hello.ko:\n");

    ours(&["install", "hello/1.0", "-k", K54, "--no-depmod"]);
    assert_installed_in(&sb, &tree, "hello", "1.0", K54, &["hello"]);
    assert_eq!(modules_dep(K54), "", "--no-depmod leaves modules.dep alone");

    ours(&["uninstall", "hello/1.0", "-k", K53]);
    assert_nothing_installed(&sb, &tree, "hello", K53);
    assert_eq!(modules_dep(K53), "", "uninstall runs depmod too");

    assert_eq!(
        real_system_snapshot(),
        real_before,
        "depmod ran on the real /usr/lib/modules"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn remove_all_runs_depmod_for_every_kernel_it_uninstalled_from() {
    let sb = Sandbox::new();
    let tree = rooted_install_tree_with_modules_dep(&sb);
    sb.copy_fixture("hello", "1.0");
    let ours = |args: &[&str]| {
        let out = sb.run_ours_with_install_tree(&tree, args);
        assert_exit(&out, 0, &format!("dkms-hook {args:?}"));
    };
    ours(&["add", "hello/1.0"]);
    ours(&["install", "hello/1.0", "-k", K53, "-k", K54]);
    for kernel in KERNELS {
        assert_eq!(modules_dep(&tree, kernel), "updates/dkms/hello.ko:\n");
    }

    ours(&["remove", "hello/1.0", "--all"]);
    for kernel in KERNELS {
        assert_nothing_installed(&sb, &tree, "hello", kernel);
        assert_eq!(
            modules_dep(&tree, kernel),
            "",
            "modules.dep of {kernel} still lists the removed module"
        );
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn modules_are_compressed_with_zstd_for_a_kernel_configured_with_module_compress_zstd() {
    let sb = Sandbox::new();
    // A copy of K54's headers (its own directory is small; the large common part is
    // reached through its Makefile) whose configs ask for zstd-compressed modules.
    let zstd_headers = sb.path("headers-zstd");
    let mut cmd = Command::new("cp");
    cmd.arg("-a").arg(headers(K54)).arg(&zstd_headers);
    assert_exit(&run(cmd), 0, "copying the headers");
    for link in ["scripts", "tools"] {
        let target = fs::canonicalize(headers(K54).join(link)).unwrap();
        fs::remove_file(zstd_headers.join(link)).unwrap();
        symlink(&target, &zstd_headers.join(link));
    }
    let edit = |file: &str, from: &str, to: &str| {
        let path = zstd_headers.join(file);
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            text.lines().any(|l| l == from),
            "{} has no line {from:?}",
            path.display()
        );
        let edited: String = text
            .lines()
            .map(|l| if l == from { to } else { l })
            .flat_map(|l| [l, "\n"])
            .collect();
        write(&path, &edited);
    };
    edit(
        ".config",
        "CONFIG_MODULE_COMPRESS_NONE=y",
        "# CONFIG_MODULE_COMPRESS_NONE is not set",
    );
    edit(
        ".config",
        "# CONFIG_MODULE_COMPRESS_ZSTD is not set",
        "CONFIG_MODULE_COMPRESS_ZSTD=y",
    );
    edit(
        "include/config/auto.conf",
        "CONFIG_MODULE_COMPRESS_NONE=y",
        "CONFIG_MODULE_COMPRESS_ZSTD=y",
    );
    let build_link = sb.install_tree().join(K54).join("build");
    fs::remove_file(&build_link).unwrap();
    symlink(&zstd_headers, &build_link);

    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["install", "hello/1.0", "-k", K53, "-k", K54]);

    // K53 keeps plain modules, K54 gets .ko.zst only, in the build and installed.
    assert_installed(&sb, "hello", "1.0", K53, &["hello"]);
    let built = sb.built_module_dir("hello", "1.0", K54);
    let installed = sb.installed_module_dir(K54);
    for dir in [&built, &installed] {
        let names: Vec<String> = tree_listing(dir)
            .into_iter()
            .filter(|n| n.contains(".ko"))
            .collect();
        assert_eq!(names, ["hello.ko.zst"], "in {}", dir.display());
    }
    let zst = installed.join("hello.ko.zst");
    assert_eq!(
        fs::read(&zst).unwrap(),
        fs::read(built.join("hello.ko.zst")).unwrap()
    );
    assert_eq!(
        &fs::read(&zst).unwrap()[..4],
        b"\x28\xb5\x2f\xfd",
        "zstd magic"
    );
    assert_signed_module_for_kernel(&zst, K54);
    assert_ours_status(&sb, &[], &lines_for_both("hello/1.0", "installed"), "");

    sb.ours(&["uninstall", "hello/1.0", "-k", K54]);
    assert_nothing_installed(&sb, &sb.install_tree(), "hello", K54);
    assert_installed(&sb, "hello", "1.0", K53, &["hello"]);
}

// ---------------------------------------------------------------------------------
// 2. Interoperability with Debian's dkms on the same tree
// ---------------------------------------------------------------------------------

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn upstream_dkms_reports_and_removes_what_we_added_and_installed() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["install", "hello/1.0", "-k", K53, "-k", K54]);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(listed, lines_for_both("hello/1.0", "installed"));

    sb.upstream(&["remove", "-m", "hello", "-v", "1.0", "--all"]);
    assert_eq!(
        module_files(&sb.install_tree()),
        Vec::<String>::new(),
        "upstream's remove left modules in the install tree"
    );
    assert!(
        !sb.dkms_tree().join("hello").exists(),
        "upstream's remove left {:?}",
        tree_listing(&sb.dkms_tree().join("hello"))
    );
    assert_eq!(assert_status_matches_upstream(&sb, &[], &[]), "");
    assert!(sb.source_tree().join("hello-1.0/dkms.conf").is_file());
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn we_report_uninstall_and_remove_what_upstream_dkms_added_and_installed() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.install("hello", "1.0", K53);
    sb.install("hello", "1.0", K54);

    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(listed, lines_for_both("hello/1.0", "installed"));

    sb.ours(&["uninstall", "hello/1.0", "-k", K53]);
    assert!(!installed_ko(&sb.install_tree(), K53, "hello").exists());
    assert!(!install_link(&sb, "hello", K53).exists());
    assert_module_for_kernel(&installed_ko(&sb.install_tree(), K54, "hello"), K54);
    let listed = assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(
        listed,
        line("hello/1.0", K53, "built") + &line("hello/1.0", K54, "installed")
    );

    sb.ours(&["remove", "hello/1.0", "--all"]);
    assert_eq!(module_files(&sb.install_tree()), Vec::<String>::new());
    assert!(
        !sb.dkms_tree().join("hello").exists(),
        "our remove left {:?}",
        tree_listing(&sb.dkms_tree().join("hello"))
    );
    assert_eq!(assert_status_matches_upstream(&sb, &[], &[]), "");
    assert!(sb.source_tree().join("hello-1.0/dkms.conf").is_file());
}

// ---------------------------------------------------------------------------------
// 3. Differential: the same commands, upstream in one sandbox, ours in another
// ---------------------------------------------------------------------------------

/// The install tree's listing without what depmod writes: upstream runs depmod on
/// the kernel directory whatever `--installtree` says (in its namespace, the
/// sandbox's), we only where a `modules.dep` exists.
fn install_tree_without_depmod_files(sb: &Sandbox) -> BTreeSet<String> {
    tree_listing(&sb.install_tree())
        .into_iter()
        .filter(|p| {
            !Path::new(p)
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("modules."))
        })
        .collect()
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn the_same_commands_leave_the_same_install_tree_and_status_with_upstream_and_with_us() {
    let (theirs, ours) = (Sandbox::new(), Sandbox::new());
    for sb in [&theirs, &ours] {
        sb.copy_fixture("twomods", "1.0");
    }
    let steps: [&[&str]; 4] = [
        &["add", "-m", "twomods", "-v", "1.0"],
        &["install", "-m", "twomods", "-v", "1.0", "-k", K53],
        &["install", "-m", "twomods", "-v", "1.0", "-k", K54],
        &["uninstall", "-m", "twomods", "-v", "1.0", "-k", K53],
    ];
    for step in steps {
        theirs.upstream(step);
        ours.ours(step);
    }

    let expected = install_tree_without_depmod_files(&theirs);
    assert_eq!(install_tree_without_depmod_files(&ours), expected);
    assert!(expected.contains(&format!("{K54}/updates/dkms/twomods_sub.ko")));
    for sb in [&theirs, &ours] {
        for name in ["twomods_main", "twomods_sub"] {
            assert_module_for_kernel(&installed_ko(&sb.install_tree(), K54, name), K54);
        }
    }

    let upstream_status = theirs.upstream(&["status"]);
    let (normalized, _) = normalize_upstream_3_0_10(&upstream_status.stdout, &[]);
    assert_eq!(
        normalized,
        line("twomods/1.0", K53, "built") + &line("twomods/1.0", K54, "installed")
    );
    assert_ours_status(&ours, &[], &normalized, "");
}

// ---------------------------------------------------------------------------------
// 4. Exit codes
// ---------------------------------------------------------------------------------

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn adding_the_same_module_version_twice_exits_3() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    let out = sb.run_ours(&["add", "hello/1.0"]);
    assert_exit(&out, 3, "the second add");
    assert!(out.stderr.contains("hello/1.0"), "{out}");
    assert_ours_status(&sb, &[], "hello/1.0: added\n", "");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn building_for_a_kernel_without_headers_exits_21_and_names_the_headers() {
    let sb = Sandbox::new();
    let kernel = "6.1.0-99-amd64";
    mkdir(&sb.install_tree().join(kernel).join("kernel"));
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    for action in ["build", "install"] {
        let out = sb.run_ours(&[action, "hello/1.0", "-k", kernel]);
        assert_exit(&out, 21, &format!("{action} without headers"));
        let headers_dir = sb.install_tree().join(kernel).join("build");
        assert!(
            out.stderr.contains("headers") && out.stderr.contains(headers_dir.to_str().unwrap()),
            "stderr names the missing headers {}\n{out}",
            headers_dir.display()
        );
    }
    assert!(!sb.dkms_tree().join("hello/1.0").join(kernel).exists());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn installing_onto_a_kernel_directory_that_does_not_exist_exits_6() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    let kernel = "6.1.0-98-amd64";
    let out = sb.run_ours(&["install", "hello/1.0", "-k", kernel]);
    assert_exit(&out, 6, "install onto a missing kernel");
    assert!(
        out.stderr
            .contains(sb.install_tree().join(kernel).to_str().unwrap()),
        "{out}"
    );
    assert!(!sb.install_tree().join(kernel).exists());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn adding_a_directory_without_dkms_conf_exits_9() {
    let sb = Sandbox::new();
    let dir = sb.source_tree().join("noconf-1.0");
    mkdir(&dir);
    write(&dir.join("Makefile"), "obj-m := noconf.o\n");
    let out = sb.run_ours(&["add", dir.to_str().unwrap()]);
    assert_exit(&out, 9, "add of a directory without dkms.conf");
    assert!(out.stderr.contains("dkms.conf"), "{out}");
    assert_eq!(tree_listing(&sb.dkms_tree()), BTreeSet::new());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn built_module_name_ending_in_ko_exits_8_naming_the_file_and_the_directive() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("badname", "1.0");
    let out = sb.run_ours(&["add", "badname/1.0"]);
    assert_exit(&out, 8, "add with a bad dkms.conf");
    let conf = source.join("dkms.conf");
    assert!(
        out.stderr.contains(conf.to_str().unwrap()) && out.stderr.contains("BUILT_MODULE_NAME"),
        "stderr names {} and BUILT_MODULE_NAME\n{out}",
        conf.display()
    );
    assert!(!sb.dkms_tree().join("badname").exists(), "nothing is added");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn building_with_a_missing_build_depends_exits_13_and_force_builds_anyway() {
    let sb = Sandbox::new();
    sb.copy_fixture("needy", "1.0");
    sb.ours(&["add", "needy/1.0"]);
    let out = sb.run_ours(&["build", "needy/1.0", "-k", K53]);
    assert_exit(&out, 13, "build with BUILD_DEPENDS missing");
    assert!(out.stderr.contains("hello"), "names the dependency\n{out}");
    assert!(!sb.dkms_tree().join("needy/1.0").join(K53).exists());

    sb.ours(&["build", "needy/1.0", "-k", K53, "--force"]);
    assert_signed_module_for_kernel(
        &sb.built_module_dir("needy", "1.0", K53).join("needy.ko"),
        K53,
    );
    assert_ours_status(&sb, &[], &line("needy/1.0", K53, "built"), "");
}

// ---------------------------------------------------------------------------------
// 5. autoinstall
// ---------------------------------------------------------------------------------

/// (module, its built module names) of the autoinstall fixtures that build.
const AUTOINSTALL_GOOD: [(&str, &str); 3] = [
    ("aaa-dependent", "aaa_dependent"),
    ("hello", "hello"),
    ("zzz-base", "zzz_base"),
];

fn add_autoinstall_fixtures(sb: &Sandbox, extra: &[&str]) {
    for module in AUTOINSTALL_GOOD
        .iter()
        .map(|(m, _)| *m)
        .chain(extra.iter().copied())
    {
        sb.copy_fixture(module, "1.0");
        sb.ours(&["add", &format!("{module}/1.0")]);
    }
}

fn assert_autoinstall_good_installed(sb: &Sandbox) {
    for kernel in KERNELS {
        for (module, name) in AUTOINSTALL_GOOD {
            assert_installed(sb, module, "1.0", kernel, &[name]);
        }
        // aaa-dependent links against zzz-base's exported symbol, which modpost only
        // resolves when zzz-base was built first.
        assert_eq!(
            modinfo(
                "depends",
                &installed_ko(&sb.install_tree(), kernel, "aaa_dependent")
            ),
            "zzz_base"
        );
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_installs_every_module_on_both_kernels_building_dependencies_first() {
    let sb = Sandbox::new();
    add_autoinstall_fixtures(&sb, &[]);
    sb.ours(&["autoinstall", "-k", K53, "-k", K54]);
    assert_autoinstall_good_installed(&sb);
    let expected: String = AUTOINSTALL_GOOD
        .iter()
        .map(|(m, _)| lines_for_both(&format!("{m}/1.0"), "installed"))
        .collect();
    assert_ours_status(&sb, &[], &expected, "");

    // Everything is installed: a second run has nothing to do.
    let listing = tree_listing(&sb.dkms_tree());
    sb.ours(&["autoinstall", "-k", K53, "-k", K54]);
    assert_eq!(tree_listing(&sb.dkms_tree()), listing);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_with_a_failing_module_exits_11_installs_the_others_and_names_the_failure() {
    let sb = Sandbox::new();
    add_autoinstall_fixtures(&sb, &["broken"]);
    let out = sb.run_ours(&["autoinstall", "-k", K53, "-k", K54]);
    assert_exit(&out, 11, "autoinstall with a module that does not compile");
    assert!(out.stderr.contains("broken/1.0"), "{out}");
    for kernel in KERNELS {
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("broken/1.0") && l.contains(kernel)),
            "stderr names the failure on {kernel}\n{out}"
        );
        assert!(!sb.dkms_tree().join("broken/1.0").join(kernel).exists());
        assert!(!installed_ko(&sb.install_tree(), kernel, "broken").exists());
    }
    assert_autoinstall_good_installed(&sb);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_does_nothing_when_the_etc_dir_has_no_autoinstall() {
    let sb = Sandbox::new();
    add_autoinstall_fixtures(&sb, &[]);
    write(&sb.etc_dir().join("no-autoinstall"), "");
    let listing = tree_listing(&sb.dkms_tree());
    sb.ours(&["autoinstall", "-k", K53, "-k", K54]);
    assert_eq!(tree_listing(&sb.dkms_tree()), listing, "nothing was built");
    assert_eq!(module_files(&sb.install_tree()), Vec::<String>::new());
    let expected: String = AUTOINSTALL_GOOD
        .iter()
        .map(|(m, _)| format!("{m}/1.0: added\n"))
        .collect();
    assert_ours_status(&sb, &[], &expected, "");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_runs_depmod_when_an_earlier_run_installed_without_it() {
    // A run killed between its installs and depmod leaves modules.dep behind the
    // modules; `--no-depmod` leaves exactly that state.
    let sb = Sandbox::new();
    let tree = rooted_install_tree_with_modules_dep(&sb);
    sb.copy_fixture("hello", "1.0");
    let ours = |args: &[&str]| {
        let out = sb.run_ours_with_install_tree(&tree, args);
        assert_exit(&out, 0, &format!("dkms-hook {args:?}"));
        out
    };
    ours(&["add", "hello/1.0"]);
    ours(&["install", "hello/1.0", "-k", K54, "--no-depmod"]);
    assert_eq!(modules_dep(&tree, K54), "");

    // Nothing is left to build or install for K54, but its modules.dep is stale.
    let out = ours(&["autoinstall", "-k", K54]);
    assert!(out.stdout.contains("modules.dep of"), "{out}");
    assert_eq!(modules_dep(&tree, K54), "updates/dkms/hello.ko:\n");

    // Once current, it is left alone.
    let out = ours(&["autoinstall", "-k", K54]);
    assert!(!out.stdout.contains("modules.dep of"), "{out}");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn adding_a_directory_from_elsewhere_copies_it_in_whole_and_sweeps_what_a_killed_add_left() {
    let sb = Sandbox::new();
    // Where a killed `add` would leave its staged copy: a temp name of another pid.
    let leftover = sb.source_tree().join(".dkms-hook-tmp-12345-new-hello-1.0");
    fs::create_dir_all(&leftover).unwrap();
    fs::write(leftover.join("half.c"), "int half").unwrap();
    // The source lives outside the source tree, as a developer's checkout would.
    let elsewhere = sb.path("checkout");
    fs::create_dir_all(&elsewhere).unwrap();
    let copied = sb.copy_fixture("hello", "1.0");
    fs::rename(&copied, elsewhere.join("hello")).unwrap();

    let out = sb.ours(&["add", elsewhere.join("hello").to_str().unwrap()]);
    assert!(out.stdout.contains("Copying"), "{out}");
    let names: Vec<String> = fs::read_dir(sb.source_tree())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        ["hello-1.0"],
        "only the copy is left in the source tree"
    );
    assert_eq!(
        fs::read(sb.source_tree().join("hello-1.0/dkms.conf")).unwrap(),
        fs::read(elsewhere.join("hello/dkms.conf")).unwrap()
    );
    assert_eq!(
        sb.run_ours(&["status", "--compat"]).stdout,
        "hello/1.0: added\n"
    );
}

/// Regression: under the name `dkms` an installed file came out as a step holding a
/// sub-step (`==>   -> /usr/lib/modules/...`); it is upstream's `Installing <file>`.
/// (This asserted the old `  -> <file>` line before the `dkms` face took upstream's
/// wording.)
#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn an_installed_file_is_upstreams_installing_line_under_the_dkms_name() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    let out = sb.run_ours_as_dkms(&["install", "hello/1.0", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    // hello.ko, compressed as the kernel's config asks.
    let file = sb.installed_module_dir(K54).join("hello.ko");
    let line = format!("Installing {}", file.display());
    assert!(out.stdout.lines().any(|l| l.starts_with(&line)), "{out}");
    assert!(!out.stdout.contains("==>"), "{out}");
}
