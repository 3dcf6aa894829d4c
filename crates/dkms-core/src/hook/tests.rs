//! The hook's policy on a relocated tree in a temp dir: no pacman, no root, no
//! kernel headers (nothing here builds a module).

use super::*;
use crate::engine::Options;
use crate::event::Recorder;
use crate::exit::Exit;
use crate::tests::{scratch_host, scratch_paths};
use crate::tree::Target;
use crate::Host;
use std::path::Path;

struct Tree {
    _root: tempfile::TempDir,
    host: Host,
}

fn tree() -> Tree {
    let root = tempfile::tempdir().unwrap();
    let paths = scratch_paths(
        root.path(),
        [
            "var/lib/dkms",
            "usr/src",
            "usr/lib/modules",
            "etc/dkms",
            "tmp",
        ],
    );
    let host = scratch_host(paths);
    Tree { _root: root, host }
}

fn source(host: &Host, dir: &str, name: &str, version: &str) {
    let dir = host.paths.source_tree.join(dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("dkms.conf"),
        format!("PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"{version}\"\nBUILT_MODULE_NAME[0]=\"{name}\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n"),
    )
    .unwrap();
}

fn options() -> Options {
    Options {
        jobs: 1,
        no_depmod: true,
        ..Options::default()
    }
}

fn exists(path: &Path) -> bool {
    path.symlink_metadata().is_ok()
}

#[test]
fn the_upgrade_hook_only_notes_the_replaced_version_and_the_install_hook_takes_the_note() {
    let t = tree();
    source(&t.host, "hello-1.0", "hello", "1.0");
    let events = Recorder::default();
    let report = pre_transaction(
        &t.host,
        PreTransaction::Upgrade,
        b"usr/src/hello-1.0/dkms.conf\n",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &events,
    )
    .unwrap();
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.sources.len(), 1);
    let note = super::note::path(&t.host.paths);
    assert_eq!(std::fs::read_to_string(&note).unwrap(), "hello/1.0\n");
    // Nothing was added, built or removed before the transaction.
    assert!(!exists(&t.host.paths.dkms_tree.join("hello")));

    // The post-transaction hook reads and removes the note; a version not in the
    // DKMS tree has nothing to retire.
    let report = post_transaction(
        &t.host,
        b"",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &events,
    );
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert!(!exists(&note));
    assert!(report.retired.is_empty() && report.unbuilt.is_empty());
}

#[test]
fn lines_that_are_not_paths_are_reported_but_do_not_fail_the_hook() {
    let t = tree();
    let events = Recorder::default();
    let input = b"\xff\n../x\nusr/lib/modules/6.9/kernel/a.ko\n".repeat(3);
    let report = post_transaction(
        &t.host,
        &input,
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &events,
    );
    assert_eq!(report.exit(), Exit::Success);
    assert_eq!(
        report.rejected.iter().map(|(n, _)| *n).collect::<Vec<_>>(),
        [1, 2, 4, 5, 7, 8]
    );
    let seen = events.0.lock().unwrap();
    let rejected = seen
        .iter()
        .filter(|e| e.starts_with("RejectedLine"))
        .count();
    assert_eq!(rejected, 5, "{seen:?}");
    assert!(seen
        .iter()
        .any(|e| e.starts_with("MoreRejectedLines { count: 1 }")));
}

#[test]
fn a_source_whose_dkms_conf_is_bad_is_a_problem_and_the_rest_still_counts() {
    let t = tree();
    let bad = t.host.paths.source_tree.join("bad-1.0");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("dkms.conf"), "PACKAGE_VERSION=1.0\n").unwrap();
    source(&t.host, "good-2.0", "good", "2.0");
    let report = pre_transaction(
        &t.host,
        PreTransaction::Upgrade,
        b"usr/src/bad-1.0/dkms.conf\nusr/src/good-2.0/dkms.conf\n",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(report.exit(), Exit::Failure);
    assert!(
        matches!(&report.problems[..], [Problem::NotIdentified { dir, .. }] if dir == &bad),
        "{:?}",
        report.problems
    );
    let note = std::fs::read_to_string(super::note::path(&t.host.paths)).unwrap();
    assert_eq!(note, "good/2.0\n");
}

#[test]
fn removing_a_kernel_takes_its_dkms_directory_and_leftovers_along_but_not_other_kernels() {
    let t = tree();
    let paths = &t.host.paths;
    let gone = paths.kernel_dir("6.1.0-gone");
    let stays = paths.kernel_dir("6.1.0-stays");
    for k in [&gone, &stays] {
        std::fs::create_dir_all(k.join("updates/dkms")).unwrap();
        std::fs::write(k.join("updates/dkms/stray.ko"), b"x").unwrap();
    }
    let report = pre_transaction(
        &t.host,
        PreTransaction::Remove,
        b"usr/lib/modules/6.1.0-gone/modules.order\n",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert_eq!(report.kernels_cleaned, ["6.1.0-gone"]);
    assert!(
        !exists(&gone.join("updates")),
        "updates/dkms and the empty updates go"
    );
    assert!(exists(&stays.join("updates/dkms/stray.ko")));
}

#[test]
fn a_symlinked_dkms_directory_of_a_removed_kernel_is_refused_not_followed() {
    let t = tree();
    let paths = &t.host.paths;
    let victim = paths.temp_dir.join("victim");
    std::fs::create_dir_all(&victim).unwrap();
    std::fs::write(victim.join("keep"), b"x").unwrap();
    let kernel = paths.kernel_dir("6.1.0-gone");
    std::fs::create_dir_all(&kernel).unwrap();
    std::os::unix::fs::symlink(&victim, kernel.join("updates")).unwrap();
    let events = Recorder::default();
    let report = pre_transaction(
        &t.host,
        PreTransaction::Remove,
        b"usr/lib/modules/6.1.0-gone/modules.order\n",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &events,
    )
    .unwrap();
    assert_eq!(report.exit(), Exit::Failure);
    assert_eq!(report.cleanup_errors.len(), 1, "{report:?}");
    assert!(exists(&victim.join("keep")));
    let seen = events.0.lock().unwrap();
    assert!(
        seen.iter().any(|e| e.starts_with("KernelCleanupFailed")),
        "{seen:?}"
    );
}

#[test]
fn a_headers_only_change_without_installs_regenerates_no_initramfs() {
    let t = tree();
    let k = t.host.paths.kernel_dir("6.1.0-test");
    std::fs::create_dir_all(k.join("build/include")).unwrap();
    let report = post_transaction(
        &t.host,
        b"usr/lib/modules/6.1.0-test/build/include/\n",
        &crate::name::KernelRelease::parse("6.1.0-test").unwrap(),
        &options(),
        &Recorder::default(),
    );
    assert_eq!(report.exit(), Exit::Success, "{report:?}");
    assert!(report.initramfs.is_empty());
}

/// A kernel with (empty) headers and hello 1.0 built and installed for it, whose
/// package is then upgraded to 2.0 with `make` given by `make_2_0`: the pre-transaction
/// hook notes 1.0, pacman swaps the sources, and the post-transaction hook runs.
/// Nothing needs real headers: MAKE is a shell command.
fn upgrade_hello(make_2_0: &str) -> (Tree, HookReport, Vec<String>) {
    let t = tree();
    let paths = &t.host.paths;
    let kernel = "6.1.0-test";
    let arch = crate::kernel::default_arch();
    std::fs::create_dir_all(paths.kernel_dir(kernel).join("build/include")).unwrap();
    source(&t.host, "hello-1.0", "hello", "1.0");
    let old = paths.version_dir("hello", "1.0");
    std::fs::create_dir_all(old.join(kernel).join(arch).join("module")).unwrap();
    std::fs::write(old.join(kernel).join(arch).join("module/hello.ko"), b"old").unwrap();
    std::os::unix::fs::symlink(paths.source_tree.join("hello-1.0"), old.join("source")).unwrap();
    let link = crate::tree::install_link(paths, "hello", kernel, arch);
    std::os::unix::fs::symlink(format!("1.0/{kernel}/{arch}"), &link).unwrap();
    assert!(crate::tree::is_installed(
        paths, "hello", "1.0", kernel, arch
    ));

    let input = b"usr/src/hello-1.0/dkms.conf\nusr/src/hello-2.0/dkms.conf\n";
    let pre = pre_transaction(
        &t.host,
        PreTransaction::Remove,
        input,
        &crate::name::KernelRelease::parse(kernel).unwrap(),
        &options(),
        &Recorder::default(),
    )
    .unwrap();
    assert_eq!(pre.exit(), Exit::Success, "{pre:?}");
    std::fs::remove_dir_all(paths.source_tree.join("hello-1.0")).unwrap();
    source(&t.host, "hello-2.0", "hello", "2.0");
    let conf = paths.source_tree.join("hello-2.0/dkms.conf");
    let mut text = std::fs::read_to_string(&conf).unwrap();
    text.push_str(&format!("MAKE[0]=\"{make_2_0}\"\n"));
    std::fs::write(&conf, text).unwrap();

    let events = Recorder::default();
    let report = post_transaction(
        &t.host,
        input,
        &crate::name::KernelRelease::parse(kernel).unwrap(),
        &options(),
        &events,
    );
    let seen = events.0.into_inner().unwrap();
    (t, report, seen)
}

#[test]
fn an_old_version_stays_installed_where_its_replacement_failed_to_build() {
    let (t, report, events) = upgrade_hello("false");
    let arch = crate::kernel::default_arch();
    assert_eq!(report.exit(), Exit::Failure);
    assert!(
        matches!(
            &report.problems[..],
            [Problem::Target { target, failure: crate::commands::Failure::Failed { log: Some(_), .. } }]
                if target.version == "2.0"
        ),
        "{:?}",
        report.problems
    );
    assert_eq!(
        report.added,
        [("hello".parse().unwrap(), "2.0".parse().unwrap())]
    );
    assert_eq!(
        report
            .kept
            .iter()
            .map(|t| t.to_string())
            .collect::<Vec<_>>(),
        [Target::parse("hello", "1.0", "6.1.0-test", arch)
            .unwrap()
            .to_string()]
    );
    assert!(report.retired.is_empty());
    assert!(crate::tree::is_installed(
        &t.host.paths,
        "hello",
        "1.0",
        "6.1.0-test",
        arch
    ));
    assert!(
        events.iter().any(|e| e.starts_with("KeptInstalled")),
        "{events:?}"
    );
}

#[test]
fn an_old_version_is_retired_only_once_its_replacement_is_installed() {
    let (t, report, events) = upgrade_hello("touch hello.ko");
    let arch = crate::kernel::default_arch();
    assert_eq!(report.exit(), Exit::Success, "{report:?}\n{events:#?}");
    assert_eq!(
        report
            .installed
            .iter()
            .map(|t| t.version.as_str())
            .collect::<Vec<_>>(),
        ["2.0"]
    );
    assert_eq!(report.retired, [("hello".to_string(), "1.0".to_string())]);
    assert!(report.kept.is_empty());
    let paths = &t.host.paths;
    assert!(crate::tree::is_installed(
        paths,
        "hello",
        "2.0",
        "6.1.0-test",
        arch
    ));
    assert!(!exists(&paths.version_dir("hello", "1.0")));
    assert!(paths
        .kernel_dir("6.1.0-test")
        .join("updates/dkms/hello.ko")
        .is_file());
    // The build's steps came in order: built and installed before anything retired.
    let position = |prefix: &str| events.iter().position(|e| e.starts_with(prefix));
    assert!(
        position("JobFinished") < position("Retiring"),
        "{events:#?}"
    );
}
