//! The fs layer's guarantees, on temp dirs (no root, no kernel headers): no escape
//! through `..` or symlinks, on both resolution paths; the exchange and its
//! fallback; what a sweep keeps and clears.

use super::root::Resolve;
use super::*;
use std::fs;
use std::path::{Path, PathBuf};

/// A tree with a victim directory beside it that nothing may touch.
struct Sandbox {
    _dir: tempfile::TempDir,
    tree: PathBuf,
    victim: PathBuf,
}

fn sandbox() -> Sandbox {
    let dir = tempfile::tempdir().unwrap();
    let tree = dir.path().join("tree");
    let victim = dir.path().join("victim");
    fs::create_dir_all(tree.join("m/1.0/k/a")).unwrap();
    fs::create_dir_all(victim.join("k/a/module")).unwrap();
    fs::write(victim.join("k/a/module/x.ko"), "precious").unwrap();
    fs::write(victim.join("x.ko"), "precious").unwrap();
    std::os::unix::fs::symlink(&victim, tree.join("m/2.0")).unwrap();
    Sandbox {
        _dir: dir,
        tree,
        victim,
    }
}

/// Both resolution paths: openat2 (where this kernel has it) and the walk.
fn roots(tree: &Path) -> [Root; 2] {
    let fast = Root::open(tree).unwrap();
    let mut walk = Root::open(tree).unwrap();
    walk.resolve = Resolve::Walk;
    [fast, walk]
}

fn victim_intact(s: &Sandbox) {
    assert_eq!(
        fs::read(s.victim.join("k/a/module/x.ko")).unwrap(),
        b"precious"
    );
    assert_eq!(fs::read(s.victim.join("x.ko")).unwrap(), b"precious");
}

#[test]
fn nothing_is_changed_through_an_intermediate_symlink() {
    let s = sandbox();
    for root in roots(&s.tree) {
        let through = s.tree.join("m/2.0/k/a");
        let err = root.remove(&through).unwrap_err();
        assert!(
            matches!(&err, FsError::SymlinkOnPath { link, path, .. }
                if *link == s.tree.join("m/2.0") && *path == through),
            "{err}"
        );
        assert!(
            err.to_string().contains(&s.victim.display().to_string()),
            "{err}"
        );
        assert!(root.check(&through).is_err());
        assert!(root.remove_in_place(&through).is_err());
        assert!(root
            .write(&s.tree.join("m/2.0/x.ko"), b"evil", 0o644)
            .is_err());
        assert!(root
            .write(&s.tree.join("m/2.0/new/x.ko"), b"evil", 0o644)
            .is_err());
        assert!(root
            .symlink(Path::new("/"), &s.tree.join("m/2.0/l"))
            .is_err());
        assert!(root.create_dir_all(&s.tree.join("m/2.0/k/b")).is_err());
        assert!(root
            .copy(&s.victim.join("x.ko"), &s.tree.join("m/2.0/y"))
            .is_err());
        assert!(!root.is_real_dir(&s.tree.join("m/2.0/k")));
        assert!(root.is_real_dir(&s.tree.join("m/1.0/k")));
        root.remove_empty_dirs(&s.tree.join("m/2.0/k/a"), &s.tree.join("m"));
        assert_eq!(root.sweep_dir(&s.tree.join("m/2.0")).unwrap(), 0);
        victim_intact(&s);
        assert!(s.victim.join("k/a").is_dir());
    }
}

#[test]
fn a_symlinked_directory_is_refused_even_when_it_points_inside_the_tree() {
    let s = sandbox();
    std::os::unix::fs::symlink(s.tree.join("m/1.0"), s.tree.join("m/3.0")).unwrap();
    for root in roots(&s.tree) {
        let err = root.remove(&s.tree.join("m/3.0/k/a")).unwrap_err();
        assert!(matches!(err, FsError::SymlinkOnPath { .. }), "{err}");
        assert!(s.tree.join("m/1.0/k/a").is_dir());
    }
}

#[test]
fn dot_dot_and_paths_outside_the_root_are_refused() {
    let s = sandbox();
    for root in roots(&s.tree) {
        for path in [
            s.tree.join("m/../../victim/x.ko"),
            s.tree.join("../victim/x.ko"),
            PathBuf::from("../victim/x.ko"),
            PathBuf::from("m/1.0/../../../victim"),
            s.victim.join("x.ko"),
            s.tree.clone(),
        ] {
            let err = root.remove(&path).unwrap_err();
            assert!(
                matches!(err, FsError::OutsideTree { .. }),
                "{path:?}: {err}"
            );
            assert!(root.write(&path, b"evil", 0o644).is_err(), "{path:?}");
            assert!(root.check(&path).is_err(), "{path:?}");
        }
        victim_intact(&s);
    }
}

#[test]
fn a_final_symlink_is_only_unlinked() {
    let s = sandbox();
    for root in roots(&s.tree) {
        std::os::unix::fs::symlink(&s.victim, s.tree.join("m/1.0/k/link")).unwrap();
        root.remove(&s.tree.join("m/1.0/k/link")).unwrap();
        assert!(s.tree.join("m/1.0/k/link").symlink_metadata().is_err());
        std::os::unix::fs::symlink(s.victim.join("x.ko"), s.tree.join("m/1.0/k/f")).unwrap();
        root.remove_in_place(&s.tree.join("m/1.0/k/f")).unwrap();
        // A write replaces the link, never writes through it.
        std::os::unix::fs::symlink(s.victim.join("x.ko"), s.tree.join("m/1.0/k/w")).unwrap();
        root.write(&s.tree.join("m/1.0/k/w"), b"ours", 0o644)
            .unwrap();
        assert_eq!(fs::read(s.tree.join("m/1.0/k/w")).unwrap(), b"ours");
        fs::remove_file(s.tree.join("m/1.0/k/w")).unwrap();
        victim_intact(&s);
    }
    // The link at m/2.0 itself may go, and real directories do; missing paths are fine.
    let root = Root::open(&s.tree).unwrap();
    root.remove(&s.tree.join("m/2.0")).unwrap();
    root.remove(&s.tree.join("m/1.0/k/a")).unwrap();
    assert!(!s.tree.join("m/1.0/k/a").exists());
    root.remove(&s.tree.join("m/9/k/a")).unwrap();
    victim_intact(&s);
    assert_eq!(
        fs::read_dir(s.tree.join("m")).unwrap().count(),
        1,
        "no temp name left"
    );
}

#[test]
fn removing_a_tree_never_follows_a_symlink_inside_it() {
    let s = sandbox();
    let root = Root::open(&s.tree).unwrap();
    std::os::unix::fs::symlink(&s.victim, s.tree.join("m/1.0/source")).unwrap();
    root.remove(&s.tree.join("m")).unwrap();
    assert_eq!(fs::read_dir(&s.tree).unwrap().count(), 0);
    victim_intact(&s);
}

#[test]
fn writes_are_atomic_with_their_mode_and_make_missing_directories() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(dir.path()).unwrap();
    root.write(Path::new("a/b/c.json"), b"one", 0o600).unwrap();
    root.write(&dir.path().join("a/b/c.json"), b"two", 0o644)
        .unwrap();
    let file = dir.path().join("a/b/c.json");
    assert_eq!(fs::read(&file).unwrap(), b"two");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&file).unwrap().permissions().mode() & 0o777,
        0o644
    );
    root.symlink(Path::new("../x"), &dir.path().join("a/l"))
        .unwrap();
    root.symlink(Path::new("../y"), &dir.path().join("a/l"))
        .unwrap();
    assert_eq!(
        fs::read_link(dir.path().join("a/l")).unwrap(),
        Path::new("../y")
    );
    root.rename(&file, &dir.path().join("a/moved")).unwrap();
    assert_eq!(fs::read(dir.path().join("a/moved")).unwrap(), b"two");
    let names: Vec<_> = fs::read_dir(dir.path().join("a"))
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(names.len(), 3, "b, l, moved: no temp name");
}

fn staged_build(dir: &Path, contents: &[u8]) -> (PathBuf, PathBuf) {
    let dest = dir.join("x86_64");
    fs::create_dir_all(dest.join("module")).unwrap();
    fs::write(dest.join("module/m.ko"), b"old").unwrap();
    let staged = staging_path(&dest);
    fs::create_dir_all(staged.join("module")).unwrap();
    fs::write(staged.join("module/m.ko"), contents).unwrap();
    (staged, dest)
}

#[test]
fn replacing_a_directory_exchanges_it_and_leaves_no_temp_name() {
    let dir = tempfile::tempdir().unwrap();
    let (staged, dest) = staged_build(dir.path(), b"new");
    Root::open(dir.path())
        .unwrap()
        .replace_dir(&staged, &dest)
        .unwrap();
    assert_eq!(fs::read(dest.join("module/m.ko")).unwrap(), b"new");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only x86_64 is left"
    );
    // Into an empty place, it is a plain rename.
    let fresh = dir.path().join("fresh");
    let staged = staging_path(&fresh);
    fs::create_dir(&staged).unwrap();
    Root::open(dir.path())
        .unwrap()
        .replace_dir(&staged, &fresh)
        .unwrap();
    assert!(fresh.is_dir() && !staged.exists());
}

#[test]
fn without_the_exchange_the_old_directory_is_moved_aside_and_removed() {
    let dir = tempfile::tempdir().unwrap();
    let (staged, dest) = staged_build(dir.path(), b"new");
    let mut root = Root::open(dir.path()).unwrap();
    root.exchange = false;
    root.replace_dir(&staged, &dest).unwrap();
    assert_eq!(fs::read(dest.join("module/m.ko")).unwrap(), b"new");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "only x86_64 is left"
    );
}

fn leftover(dir: &Path, pid: u32, kind: &str, real: &str) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}-{pid}-{kind}-{real}"))
}

/// A pid that is certainly not ours.
fn other_pid() -> u32 {
    std::process::id().wrapping_add(1)
}

#[test]
fn a_sweep_deletes_partial_things_and_puts_back_a_directory_moved_aside() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let partial = leftover(d, other_pid(), "new", "hello.ko");
    fs::write(&partial, b"half").unwrap();
    let staged = leftover(d, other_pid(), "new", "x86_64");
    fs::create_dir_all(staged.join("module")).unwrap();
    let aside = leftover(d, other_pid(), "old", "k1");
    fs::create_dir_all(aside.join("module")).unwrap();
    fs::write(aside.join("module/m.ko"), b"complete").unwrap();
    // Moved aside, but its replacement did arrive: the old one just goes.
    let superseded = leftover(d, other_pid(), "old", "k2");
    fs::create_dir_all(&superseded).unwrap();
    fs::create_dir_all(d.join("k2/module")).unwrap();
    // This process's own temp names are in use by another thread.
    let ours = d.join(format!("{TEMP_PREFIX}-{}-new-busy.ko", std::process::id()));
    fs::write(&ours, b"in progress").unwrap();
    // A symlink leftover is unlinked, never followed.
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("keep"), b"keep").unwrap();
    let link = leftover(d, other_pid(), "gone", "link");
    std::os::unix::fs::symlink(outside.path(), &link).unwrap();

    // The root itself can be swept (the source tree is); a second sweep finds nothing.
    let [fast, walk] = roots(d);
    assert_eq!(walk.sweep_dir(d).unwrap(), 5);
    assert_eq!(fast.sweep_dir(d).unwrap(), 0);
    let mut names: Vec<String> = fs::read_dir(d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let busy = ours.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names, [busy.as_str(), "k1", "k2"]);
    assert_eq!(fs::read(d.join("k1/module/m.ko")).unwrap(), b"complete");
    assert!(outside.path().join("keep").exists());
}

#[test]
fn a_module_sweep_reaches_every_level_but_not_work_dirs_or_symlinks() {
    let s = sandbox();
    let m = s.tree.join("m");
    for dir in [m.clone(), m.join("1.0"), m.join("1.0/k"), m.join("1.0/k/a")] {
        fs::write(leftover(&dir, other_pid(), "new", "f"), b"half").unwrap();
    }
    fs::create_dir_all(m.join("1.0/build-k-a")).unwrap();
    let in_work = leftover(&m.join("1.0/build-k-a"), other_pid(), "new", "f");
    fs::write(&in_work, b"make's").unwrap();
    let in_victim = leftover(&s.victim, other_pid(), "new", "f");
    fs::write(&in_victim, b"not ours").unwrap();
    let root = Root::open(&s.tree).unwrap();
    assert_eq!(root.sweep_module(&m).unwrap(), 4);
    assert!(in_work.exists() && in_victim.exists());
    victim_intact(&s);
    // An empty module directory goes (an interrupted remove leaves one).
    fs::create_dir(s.tree.join("empty")).unwrap();
    assert_eq!(root.sweep_module(&s.tree.join("empty")).unwrap(), 0);
    assert!(!s.tree.join("empty").exists());
}

#[test]
fn empty_directories_go_up_to_the_stop() {
    let dir = tempfile::tempdir().unwrap();
    let root = Root::open(dir.path()).unwrap();
    fs::create_dir_all(dir.path().join("m/1.0/k/a")).unwrap();
    fs::write(dir.path().join("m/keep"), b"").unwrap();
    // The deepest two are already gone: their parents are still tried.
    fs::remove_dir(dir.path().join("m/1.0/k/a")).unwrap();
    fs::remove_dir(dir.path().join("m/1.0/k")).unwrap();
    root.remove_empty_dirs(&dir.path().join("m/1.0/k/a"), dir.path());
    assert!(!dir.path().join("m/1.0").exists());
    assert!(dir.path().join("m/keep").exists());
    root.remove_empty_dirs(&dir.path().join("m"), &dir.path().join("m"));
    assert!(dir.path().join("m").exists());
}

/// Regression: ldtarball places a source directly under the source tree, so the
/// parent it makes first is the root itself, which `create_dir_all` refused as
/// "outside the tree".
#[test]
fn making_the_root_itself_is_a_no_op_and_outside_is_still_refused() {
    let s = sandbox();
    for root in roots(&s.tree) {
        root.create_dir_all(&s.tree).unwrap();
        root.create_dir_all(&s.tree.join("new/dir")).unwrap();
        assert!(s.tree.join("new/dir").is_dir());
        assert!(root.create_dir_all(&s.tree.join("..")).is_err());
        assert!(root.create_dir_all(&s.victim.join("made")).is_err());
        assert!(!s.victim.join("made").exists());
    }
}
