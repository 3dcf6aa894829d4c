//! End-to-end pre-flight: real pacman installing a new kernel from a local sync
//! repository (`repo-add`, `Server = file://...`), as users upgrade, in
//! tests/e2e/pacman-sandbox. The pre-flight hook builds for the incoming kernel from
//! the downloaded headers package before anything is extracted; a boot-critical
//! module that cannot be built aborts the transaction with nothing changed.

use crate::pacman::{lines, out, run_scenario};

const K1: &str = crate::support::K53;
const K2: &str = crate::support::K54;

#[test]
#[ignore = "tier b: needs root, pacman and the installed kernels' headers; scripts/test runs it"]
fn a_boot_critical_module_that_cannot_build_for_the_incoming_kernel_aborts_the_upgrade() {
    let (work, log) = run_scenario(&format!(
        r#"
K1={K1}; K2={K2}
# The installed system: a kernel, its headers, a working and a broken module.
rc=0; pac -U $(kernel_pkg $K1) $(headers_pkg $K1) \
    $(dkms_pkg hello 1.0 $FIXTURES/hello-1.0) $(dkms_pkg broken 1.0 $FIXTURES/broken-1.0) >$work/out/t1.log 2>&1 || rc=$?
echo "pacman exit $rc" >>$work/out/t1.log
# A sync repository with a new kernel and its headers.
mkdir -p $work/repo
cp $(kernel_pkg $K2 linux-two) $(headers_pkg $K2 linux-two) $work/repo/
repo-add -q $work/repo/testrepo.db.tar.gz $work/repo/*.pkg.tar.zst
printf '[testrepo]\nSigLevel = Never\nServer = file://%s\n' "$work/repo" >>/etc/pacman.conf
cp /etc/dkms-hook.toml $work/dkms-hook.toml.orig

# 2: broken is boot-critical: the transaction is aborted, nothing changed.
printf 'boot_critical = ["broken"]\n' >>/etc/dkms-hook.toml
snapshot before
pacman --dbpath $work/db -Q >$work/out/before.packages
rc=0; pac -Sy linux-two linux-two-headers >$work/out/t2.log 2>&1 || rc=$?
echo "pacman exit $rc" >>$work/out/t2.log
snapshot t2
pacman --dbpath $work/db -Q >$work/out/t2.packages
ls -A /usr/lib/modules >$work/out/t2.kernels

# 3: the kernel alone, its headers nowhere: boot-critical hello cannot be checked.
cp $work/dkms-hook.toml.orig /etc/dkms-hook.toml
printf 'boot_critical = ["hello"]\n' >>/etc/dkms-hook.toml
rm -f $work/cache/*
rc=0; pac -U $(kernel_pkg $K2 linux-three) >$work/out/t3.log 2>&1 || rc=$?
echo "pacman exit $rc" >>$work/out/t3.log
pacman --dbpath $work/db -Q >$work/out/t3.packages

# 4: not boot-critical: a warning, the transaction completes, status shows the failure.
cp $work/dkms-hook.toml.orig /etc/dkms-hook.toml
rc=0; pac -S linux-two linux-two-headers >$work/out/t4.log 2>&1 || rc=$?
echo "pacman exit $rc" >>$work/out/t4.log
snapshot t4
"#
    ));
    let t1 = out(&work, "t1.log");
    assert!(t1.contains("pacman exit 0"), "{t1}\n{log}");
    assert!(
        t1.contains(&format!("==> pre-flight: 0 module(s) built for {K1}")),
        "sources arriving with the kernel are left to the post-transaction hook:\n{t1}"
    );

    let t2 = out(&work, "t2.log");
    assert!(
        t2.contains("Checking that DKMS modules build for the incoming kernels..."),
        "{t2}"
    );
    assert!(!t2.contains("pacman exit 0"), "pacman must fail:\n{t2}");
    assert!(
        t2.contains(&format!(
            "==> ERROR: pre-flight: broken/1.0 for incoming kernel {K2} failed to build: see /tmp/dkms-hook-preflight-{K2}-"
        )) && t2.contains("[boot-critical: the boot_critical setting names it]"),
        "the message names module, kernel and make.log:\n{t2}"
    );
    assert!(
        t2.contains("DKMS_HOOK_ALLOW_BOOT_CRITICAL_FAILURE=1")
            && t2.contains("allow_boot_critical_failure = true"),
        "the message says how to go on anyway:\n{t2}"
    );
    assert!(
        t2.contains("failed to run transaction hooks") || t2.contains("failed to commit"),
        "pacman itself aborted:\n{t2}"
    );
    for what in ["status", "modules", "dkms-tree"] {
        assert_eq!(
            out(&work, &format!("before.{what}")),
            out(&work, &format!("t2.{what}")),
            "{what} changed although the transaction was aborted"
        );
    }
    assert_eq!(out(&work, "before.packages"), out(&work, "t2.packages"));
    // The one thing the aborted pre-flight kept: hello's build for the new kernel.
    let before = out(&work, "before.cache");
    let after = out(&work, "t2.cache");
    let added: Vec<&str> = lines(&after)
        .into_iter()
        .filter(|l| !before.contains(l))
        .collect();
    assert_eq!(added.len(), 1, "{before}\n---\n{after}");
    assert!(
        added[0].starts_with(&format!(".dkms-hook-cache/{K2}/")),
        "{after}"
    );
    assert_eq!(lines(&out(&work, "t2.kernels")), [K1]);
    // The failed build's log is kept for the user to read.
    let logged = t2
        .lines()
        .filter(|l| l.starts_with("==> ERROR: pre-flight:"))
        .find_map(|l| l.split("see ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("a make.log path");
    let logged = std::path::Path::new(logged);
    assert!(
        logged.ends_with("make.log") && logged.is_file(),
        "{}",
        logged.display()
    );
    let kept = logged
        .ancestors()
        .find(|a| a.parent() == Some(std::path::Path::new("/tmp")))
        .expect("the kept scratch dir");
    std::fs::remove_dir_all(kept).expect("remove the kept scratch dir");

    let t3 = out(&work, "t3.log");
    assert!(!t3.contains("pacman exit 0"), "{t3}");
    assert!(
        t3.contains(&format!("no package file with the headers of kernel {K2}"))
            && t3.contains("hello (boot-critical: the boot_critical setting names it)"),
        "{t3}"
    );
    assert!(!out(&work, "t3.packages").contains("linux-three"));

    let t4 = out(&work, "t4.log");
    assert!(t4.contains("pacman exit 0"), "{t4}");
    assert!(
        t4.contains(&format!(
            "==> WARNING: pre-flight: broken/1.0 for incoming kernel {K2} failed to build"
        )),
        "{t4}"
    );
    assert!(
        t4.contains(&format!("pre-flight for {K2}: headers from")),
        "{t4}"
    );
    // The post-transaction hook installed hello from what the pre-flight built.
    assert!(
        t4.contains(&format!(
            "hello/1.0 for {K2} (x86_64): from the build cache (not compiled)"
        )) && t4.contains("build cache: 1 of 1 installed module(s) taken from it, not compiled"),
        "{t4}"
    );
    let status = out(&work, "t4.status");
    assert!(
        status.contains(&format!("hello/1.0, {K2}, x86_64: installed")),
        "{status}"
    );
    assert!(lines(&out(&work, "t4.modules"))
        .contains(&format!("./{K2}/updates/dkms/hello.ko").as_str()));
}
