//! End-to-end: real pacman transactions with dkms-hook installed as a package and its
//! hooks firing, inside tests/e2e/pacman-sandbox (a mount namespace; nothing reaches
//! the real system). Packages are built from real Debian headers and real module
//! sources; every module is really compiled.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The two installed kernels (tests/it/support.rs finds them).
const K1: &str = crate::support::K53;
const K2: &str = crate::support::K54;

/// Runs `scenario` (bash, see tests/e2e/pacman-sandbox) and returns the work dir.
pub(crate) fn run_scenario(scenario: &str) -> (tempfile::TempDir, String) {
    let top = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let work = tempfile::tempdir().expect("temp dir");
    let file = work.path().join("scenario.sh");
    std::fs::write(&file, scenario).expect("write scenario");
    let output = Command::new(top.join("tests/e2e/pacman-sandbox"))
        .arg(work.path().join("w"))
        .arg(&file)
        .arg(env!("CARGO_BIN_EXE_dkms-hook"))
        .env("FIXTURES", top.join("tests/fixtures"))
        .output()
        .expect("run tests/e2e/pacman-sandbox");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "the pacman sandbox failed:\n{log}");
    (work, log)
}

pub(crate) fn out(work: &tempfile::TempDir, name: &str) -> String {
    let path: PathBuf = work.path().join("w/out").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

pub(crate) fn lines(text: &str) -> Vec<&str> {
    text.lines().filter(|l| !l.is_empty()).collect()
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn pacman_transactions_build_upgrade_and_remove_modules_for_every_kernel() {
    let (work, log) = run_scenario(&format!(
        r#"
K1={K1}; K2={K2}
# 1: a kernel, its headers and four module packages in one transaction; openzfs-mini
# needs spl-mini built first (and sorts before it); broken-1.0 does not compile.
pac -U $(kernel_pkg $K1) $(headers_pkg $K1) \
    $(dkms_pkg spl-mini 2.2.0 $FIXTURES/spl-mini-2.2.0) $(dkms_pkg openzfs-mini 2.2.0 $FIXTURES/openzfs-mini-2.2.0) \
    $(dkms_pkg hello 1.0 $FIXTURES/hello-1.0) $(dkms_pkg broken 1.0 $FIXTURES/broken-1.0) >$work/out/t1.log 2>&1
echo "pacman exit $?" >>$work/out/t1.log
snapshot t1
# 2: a second kernel and its headers in one transaction.
pac -U $(kernel_pkg $K2 linux-two) $(headers_pkg $K2 linux-two) >$work/out/t2.log 2>&1
snapshot t2
# 3: upgrade a module package 1.0 -> 2.0.
pac -U $(dkms_pkg hello 2.0 $FIXTURES/hello-2.0) >$work/out/t3.log 2>&1
snapshot t3
# 4: an upgrade that fails to build keeps the working module installed.
mkdir -p $work/hello-3.0 && cp $FIXTURES/hello-2.0/* $work/hello-3.0/
sed -i 's/PACKAGE_VERSION=.*/PACKAGE_VERSION="3.0"/' $work/hello-3.0/dkms.conf
echo 'this does not compile;' >>$work/hello-3.0/hello.c
pac -U $(dkms_pkg hello 3.0 $work/hello-3.0) >$work/out/t4.log 2>&1
echo "pacman exit $?" >>$work/out/t4.log
snapshot t4
# 5: remove a kernel: nothing of DKMS is left under its module directory.
pac -R linux-two-headers linux-two >$work/out/t5.log 2>&1
snapshot t5
ls -A /usr/lib/modules >$work/out/t5.kernels
# 6: remove a module package.
pac -R spl-mini-dkms openzfs-mini-dkms >$work/out/t6.log 2>&1
snapshot t6
"#
    ));

    // 1: the hooks parsed and ran; the failure is reported with its log, the others installed.
    let t1 = out(&work, "t1.log");
    assert!(
        t1.contains("Building and installing DKMS modules..."),
        "{t1}\n{log}"
    );
    assert!(
        t1.contains("pacman exit 0"),
        "the transaction must complete:\n{t1}"
    );
    assert!(
        t1.contains(&format!("==> ERROR: broken/1.0 failed to build for {K1}: see /var/lib/dkms/broken/1.0/build-{K1}-x86_64/make.log")),
        "{t1}"
    );
    let spl_done = t1
        .find(&format!("spl-mini/2.2.0 for {K1}: installed"))
        .expect("spl installed");
    let zfs_start = t1
        .find(&format!("building openzfs-mini/2.2.0 for {K1}"))
        .expect("openzfs built");
    assert!(
        spl_done < zfs_start,
        "openzfs-mini must start after spl-mini is installed:\n{t1}"
    );
    assert_eq!(
        lines(&out(&work, "t1.status")),
        [
            "broken/1.0: added".to_string(),
            format!("hello/1.0, {K1}, x86_64: installed"),
            format!("openzfs-mini/2.2.0, {K1}, x86_64: installed"),
            format!("spl-mini/2.2.0, {K1}, x86_64: installed"),
        ]
    );

    // 2: the new kernel gets every module.
    let t2 = out(&work, "t2.modules");
    for module in ["hello.ko", "openzfs_mini.ko", "spl_mini.ko"] {
        assert!(
            lines(&t2).contains(&format!("./{K2}/updates/dkms/{module}").as_str()),
            "{t2}"
        );
    }

    // 3: the upgrade replaced 1.0 by 2.0 on both kernels, and 1.0 is gone from the tree.
    let t3 = out(&work, "t3.status");
    assert!(
        t3.contains(&format!("hello/2.0, {K1}, x86_64: installed")),
        "{t3}"
    );
    assert!(
        t3.contains(&format!("hello/2.0, {K2}, x86_64: installed")),
        "{t3}"
    );
    assert!(!t3.contains("hello/1.0"), "{t3}");
    assert!(!out(&work, "t3.dkms-tree").contains("./hello/1.0/"));

    // 4: 3.0 failed; 2.0's module is still installed and linked on both kernels.
    let t4 = out(&work, "t4.log");
    assert!(t4.contains("pacman exit 0"), "{t4}");
    assert!(
        t4.contains(&format!("==> ERROR: hello/3.0 failed to build for {K1}")),
        "{t4}"
    );
    assert!(t4.contains("hello/2.0 stays installed"), "{t4}");
    let t4_modules = out(&work, "t4.modules");
    assert!(
        t4_modules.contains(&format!("./{K1}/updates/dkms/hello.ko")),
        "{t4_modules}"
    );
    assert!(
        t4_modules.contains(&format!("./{K2}/updates/dkms/hello.ko")),
        "{t4_modules}"
    );
    let t4_tree = out(&work, "t4.dkms-tree");
    assert!(
        t4_tree.contains(&format!("./hello/kernel-{K1}-x86_64")),
        "{t4_tree}"
    );

    // 5: the removed kernel's directory is gone entirely.
    assert_eq!(lines(&out(&work, "t5.kernels")), [K1]);
    assert!(!out(&work, "t5.dkms-tree").contains(K2));

    // 6: removed module packages leave nothing in either tree.
    let t6_tree = out(&work, "t6.dkms-tree");
    let t6_modules = out(&work, "t6.modules");
    for gone in ["spl", "openzfs"] {
        assert!(!t6_tree.contains(gone), "{t6_tree}");
        assert!(!t6_modules.contains(gone), "{t6_modules}");
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn headers_installed_after_their_kernel_get_modules_built_and_the_initramfs_regenerated_then() {
    let (work, _log) = run_scenario(&format!(
        r#"
K1={K1}; K2={K2}
printf 'initramfs_command = "echo {{kernel}} {{pkgbase}} >>%s"\n' $work/out/initramfs >>/etc/dkms-hook.toml
pac -U $(dkms_pkg hello 1.0 $FIXTURES/hello-1.0) >$work/out/t0.log 2>&1
pac -U $(kernel_pkg $K1 linux-lts) >$work/out/t1.log 2>&1
snapshot t1
pac -U $(headers_pkg $K1 linux-lts) >$work/out/t2.log 2>&1
snapshot t2
# A kernel with its headers: mkinitcpio's own hook builds that initramfs, not us.
pac -U $(kernel_pkg $K2) $(headers_pkg $K2) >$work/out/t3.log 2>&1
snapshot t3
"#
    ));
    // Only the headers-only transaction regenerates an initramfs, once, for its kernel.
    assert_eq!(out(&work, "initramfs"), format!("{K1} linux-lts\n"));
    assert!(
        out(&work, "t2.log").contains(&format!(
            "Regenerating the initramfs of {K1}: echo '{K1}' 'linux-lts'"
        )),
        "{}",
        out(&work, "t2.log")
    );
    assert!(out(&work, "t3.status").contains(&format!("hello/1.0, {K2}, x86_64: installed")));
    let t1 = out(&work, "t1.log");
    assert!(
        t1.contains(&format!(
            "kernel {K1} has no headers: install linux-lts-headers"
        )),
        "a kernel without headers must name the headers package:\n{t1}"
    );
    assert_eq!(lines(&out(&work, "t1.status")), ["hello/1.0: added"]);
    assert_eq!(
        lines(&out(&work, "t2.status")),
        [format!("hello/1.0, {K1}, x86_64: installed")]
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn status_names_the_package_of_every_source_and_kernel_and_flags_orphans() {
    let (work, _log) = run_scenario(&format!(
        r#"
K1={K1}; K2={K2}
pac -U $(kernel_pkg $K1) $(headers_pkg $K1) $(dkms_pkg hello 1.0 $FIXTURES/hello-1.0) >$work/out/t1.log 2>&1
# A second kernel whose headers package is not installed.
pac -U $(kernel_pkg $K2 linux-lts) >$work/out/t2.log 2>&1
# A source copied in by hand: no package owns it.
cp -a $FIXTURES/perkernel-1.0 /usr/src/perkernel-1.0
dkms add perkernel/1.0 >$work/out/add.log 2>&1
dkms-hook status | save status.txt
pacman --root / --dbpath $work/db -Ql dkms-hook | save self-files
dkms-hook status --json | save status.json
printf 'pacman_dbpath = "/nonexistent/pacman"\n' >$work/nodb.toml
DKMS_HOOK_CONFIG=$work/nodb.toml dkms-hook status | save nodb.txt
"#
    ));
    let text = out(&work, "status.txt");
    let expected = [
        "Packages:".to_string(),
        "  hello/1.0       hello-dkms 1.0-1".into(),
        "  perkernel/1.0   no package (orphan)[4]".into(),
        format!("  {K2}  linux-lts 6.1.0-1, headers linux-lts-headers not installed[5]"),
        format!("  {K1}  linux-test 6.1.0-1, headers linux-test-headers 6.1.0-1"),
    ]
    .join("\n");
    assert!(text.contains(&expected), "expected\n{expected}\nin\n{text}");
    assert!(
        text.contains("[4] perkernel/1.0: no package owns its source"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "[5] kernel {K2}: its headers package linux-lts-headers is not installed"
        )),
        "{text}"
    );
    // The cells of the kernel without headers name the package the database confirmed.
    assert!(
        text.contains(&format!(
            "[1] hello/1.0 on {K2}: no kernel headers: install linux-lts-headers"
        )),
        "{text}"
    );

    let json: serde_json::Value = serde_json::from_str(&out(&work, "status.json")).unwrap();
    let row = |m: &str| {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["module"] == m)
            .unwrap()
            .clone()
    };
    assert_eq!(row("hello")["package"]["name"], "hello-dkms");
    assert_eq!(row("hello")["package"]["version"], "1.0-1");
    assert_eq!(row("hello")["orphan"], false);
    assert_eq!(row("perkernel")["package"], serde_json::Value::Null);
    assert_eq!(row("perkernel")["orphan"], true);
    assert_eq!(json["packages"]["error"], serde_json::Value::Null);
    let kernels = json["packages"]["kernels"].as_array().unwrap();
    assert_eq!(kernels[0]["release"], K2);
    assert_eq!(kernels[0]["package"]["name"], "linux-lts");
    assert_eq!(kernels[0]["headers_missing"], true);
    assert_eq!(kernels[1]["headers"]["name"], "linux-test-headers");
    assert_eq!(kernels[1]["headers_missing"], false);

    // dkms-hook itself was installed as the PKGBUILD packages it.
    let files = out(&work, "self-files");
    for path in [
        "/usr/bin/dkms-hook",
        "/usr/bin/dkms",
        "/usr/share/libalpm/hooks/70-dkms-install.hook",
        "/usr/share/libalpm/hooks/70-dkms-upgrade.hook",
        "/usr/share/libalpm/hooks/71-dkms-remove.hook",
        "/usr/share/bash-completion/completions/dkms-hook",
        // One zsh file completes both names (`#compdef dkms dkms-hook`).
        "/usr/share/zsh/site-functions/_dkms",
        "/usr/share/bash-completion/completions/dkms",
        "/usr/share/libalpm/hooks/60-dkms-preflight.hook",
        "/usr/share/man/man8/dkms.8",
        "/usr/lib/sysusers.d/dkms-hook.conf",
        "/usr/lib/systemd/system/dkms.service",
        "/usr/lib/kernel/install.d/40-dkms.install",
        "/etc/dkms/framework.conf",
        "/usr/share/fish/vendor_completions.d/dkms-hook.fish",
        "/usr/share/man/man8/dkms-hook.8",
        "/usr/share/licenses/dkms-hook/LICENSE",
    ] {
        assert!(
            files.contains(&format!("dkms-hook {path}\n")),
            "{path} missing:\n{files}"
        );
    }

    // Without a readable database status still works and says so.
    let nodb = out(&work, "nodb.txt");
    assert!(
        nodb.contains("Packages: could not read the pacman database /nonexistent/pacman"),
        "{nodb}"
    );
    assert!(nodb.contains("hello/1.0"), "{nodb}");
    assert!(!nodb.contains("orphan"), "{nodb}");
}
