//! Deleting inside a tree without ever following a symlink out of it.
//!
//! `remove_dir_all` does not follow symlinks *inside* what it deletes, but the path
//! it is given is resolved like any path: if `<dkms_tree>/foo/1.0` is a symlink to
//! `/home`, removing `<dkms_tree>/foo/1.0/<k>/<a>` deletes `/home/<k>/<a>`. So every
//! deletion in the DKMS tree and the install tree names its tree root, and each
//! directory between the root and the thing deleted must be a real directory. The
//! root itself may be a symlink (`/lib/modules` on merged-/usr systems, a relocated
//! `--dkmstree`); the last component may be one too (then only the link is removed).
//!
//! What is left is a race with someone who can write inside the trees while we
//! delete; those trees belong to root, and the trust checks keep it that way for the
//! sources.

use super::{io_err, EngineError};
use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

/// Where walking from `root` to `path` stops.
enum Walk {
    /// Every directory above `path` (below `root`) is real.
    Real,
    /// One of them does not exist (or is not a directory): nothing to delete.
    Missing,
}

/// Checks the directories between `root` (exclusive) and `path` (exclusive).
fn walk(root: &Path, path: &Path) -> Result<Walk, EngineError> {
    let outside = || EngineError::OutsideTree {
        path: path.to_path_buf(),
        root: root.to_path_buf(),
    };
    let relative = path.strip_prefix(root).map_err(|_| outside())?;
    let parts: Vec<Component> = relative.components().collect();
    if parts.is_empty() || parts.iter().any(|c| !matches!(c, Component::Normal(_))) {
        return Err(outside());
    }
    let mut dir = root.to_path_buf();
    for part in &parts[..parts.len() - 1] {
        dir.push(part);
        match fs::symlink_metadata(&dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(Walk::Missing),
            Err(e) => return Err(io_err("cannot inspect", &dir)(e)),
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(EngineError::SymlinkOnPath {
                    path: path.to_path_buf(),
                    target: fs::read_link(&dir).unwrap_or_default(),
                    link: dir,
                })
            }
            Ok(meta) if !meta.is_dir() => return Ok(Walk::Missing),
            Ok(_) => {}
        }
    }
    Ok(Walk::Real)
}

/// Fails when deleting `path` would go through a symlink below `root`; succeeds (and
/// deletes nothing) otherwise. For callers that must know before they start.
pub fn check(root: &Path, path: &Path) -> Result<(), EngineError> {
    walk(root, path).map(|_| ())
}

/// Removes `path` (a file, a symlink, or a directory tree) inside `root`, refusing
/// when a directory on the way is a symlink. A missing path is not an error.
pub fn remove_within(root: &Path, path: &Path) -> Result<(), EngineError> {
    match walk(root, path)? {
        Walk::Missing => Ok(()),
        Walk::Real => super::fsutil::remove_tree(path),
    }
}

/// Whether every directory from `root` (exclusive) down to `dir` (inclusive) is a
/// real directory: only then may empty ones be removed on the way back up.
pub fn real_dirs(root: &Path, dir: &Path) -> bool {
    if dir == root {
        return true;
    }
    matches!(walk(root, dir), Ok(Walk::Real)) && fs::symlink_metadata(dir).is_ok_and(|m| m.is_dir())
}

/// [`check`] for each of `paths`, so a command can refuse before deleting any.
pub fn check_all(root: &Path, paths: &[PathBuf]) -> Result<(), EngineError> {
    for path in paths {
        check(root, path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deleting_never_goes_through_a_symlinked_directory() {
        let root = tempfile::tempdir().unwrap();
        let tree = root.path().join("tree");
        let victim = root.path().join("victim");
        fs::create_dir_all(tree.join("m/1.0/k/a")).unwrap();
        fs::create_dir_all(victim.join("k/a/module")).unwrap();
        fs::write(victim.join("k/a/module/x.ko"), "precious").unwrap();
        std::os::unix::fs::symlink(&victim, tree.join("m/2.0")).unwrap();

        let err = remove_within(&tree, &tree.join("m/2.0/k/a")).unwrap_err();
        assert!(
            matches!(&err, EngineError::SymlinkOnPath { link, .. } if *link == tree.join("m/2.0")),
            "{err}"
        );
        assert!(
            err.to_string().contains(&victim.display().to_string()),
            "{err}"
        );
        assert!(victim.join("k/a/module/x.ko").is_file());
        assert!(!real_dirs(&tree, &tree.join("m/2.0/k")));

        // The link itself may go, and real directories do.
        remove_within(&tree, &tree.join("m/2.0")).unwrap();
        assert!(victim.join("k/a/module/x.ko").is_file());
        remove_within(&tree, &tree.join("m/1.0/k/a")).unwrap();
        assert!(!tree.join("m/1.0/k/a").exists());
        assert!(real_dirs(&tree, &tree.join("m/1.0/k")));
        // Missing paths are fine; paths outside the root or with `..` are not.
        remove_within(&tree, &tree.join("m/9/k/a")).unwrap();
        assert!(remove_within(&tree, &victim).is_err());
        assert!(remove_within(&tree, &tree.join("m/../../victim")).is_err());
        assert!(victim.join("k/a/module/x.ko").is_file());
    }
}
