//! "Nothing changed" as a value: every entry under some directories (not following
//! symlinks) with its kind, mode, owner and contents or link target, so a test can
//! compare the trees before and after a command that must refuse.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// One entry of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32, uid: u32 },
    File { mode: u32, uid: u32, bytes: Vec<u8> },
    Symlink { target: PathBuf },
    Other { mode: u32 },
}

/// The entries under each root, keyed by full path.
#[derive(Clone, PartialEq, Eq)]
pub struct Snapshot(BTreeMap<PathBuf, Node>);

impl Snapshot {
    /// Everything under `roots` (each root included). The tree lock file is left out:
    /// any command that may write takes it, whatever it then does.
    pub fn of(roots: &[PathBuf]) -> Snapshot {
        let mut entries = BTreeMap::new();
        for root in roots {
            walk(root, &mut entries);
        }
        Snapshot(entries)
    }

    /// Fails the test with the entries that differ, when they do.
    pub fn assert_same(&self, after: &Snapshot, what: &str) {
        if let Some(diff) = self.diff(after) {
            panic!("{what} changed the trees:\n{diff}");
        }
    }

    /// The entries that differ, one per line, or `None` when nothing does.
    pub fn diff(&self, after: &Snapshot) -> Option<String> {
        if self == after {
            return None;
        }
        let mut diff = String::new();
        for (path, node) in &self.0 {
            match after.0.get(path) {
                None => diff.push_str(&format!("  removed  {}\n", path.display())),
                Some(n) if n != node => diff.push_str(&format!("  changed  {}\n", path.display())),
                Some(_) => {}
            }
        }
        for path in after.0.keys().filter(|p| !self.0.contains_key(*p)) {
            diff.push_str(&format!("  added    {}\n", path.display()));
        }
        Some(diff)
    }
}

impl fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

fn walk(path: &Path, entries: &mut BTreeMap<PathBuf, Node>) {
    if path
        .file_name()
        .is_some_and(|n| crate::support::INFRASTRUCTURE.iter().any(|name| n == *name))
    {
        return;
    }
    let Ok(meta) = fs::symlink_metadata(path) else {
        return;
    };
    let file_type = meta.file_type();
    let node = if file_type.is_symlink() {
        Node::Symlink {
            target: fs::read_link(path).unwrap_or_default(),
        }
    } else if file_type.is_dir() {
        Node::Dir {
            mode: meta.mode(),
            uid: meta.uid(),
        }
    } else if file_type.is_file() {
        Node::File {
            mode: meta.mode(),
            uid: meta.uid(),
            bytes: fs::read(path).unwrap_or_default(),
        }
    } else {
        Node::Other { mode: meta.mode() }
    };
    let is_dir = matches!(node, Node::Dir { .. });
    entries.insert(path.to_path_buf(), node);
    if is_dir {
        for entry in fs::read_dir(path).into_iter().flatten().flatten() {
            walk(&entry.path(), entries);
        }
    }
}
