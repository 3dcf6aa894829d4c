//! Trees read into memory, so that the state a fault left behind can be compared with
//! the state before the command and the state an uninterrupted run produces.
//!
//! Symlinks are recorded, never followed (the sandbox's `build` links point at the
//! real headers); the tree lock file is left out because every writer creates it.

use crate::support::{Sandbox, ARCH};
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The prefix of every temp name dkms-hook creates (`fsutil::TEMP_PREFIX`).
pub const TEMP_PREFIX: &str = ".dkms-hook-tmp";

/// One entry of a tree.
#[derive(Clone, PartialEq, Eq)]
pub enum Node {
    Dir,
    File(Vec<u8>),
    Link(PathBuf),
}

impl fmt::Debug for Node {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Node::Dir => f.write_str("dir"),
            Node::File(bytes) => write!(f, "file of {} bytes", bytes.len()),
            Node::Link(target) => write!(f, "link to {}", target.display()),
        }
    }
}

/// Relative path (with `/`) -> entry, for everything under a root.
pub type Tree = BTreeMap<String, Node>;

/// Reads every entry under `root` (nothing when it does not exist).
pub fn read_tree(root: &Path) -> Tree {
    fn walk(base: &Path, dir: &Path, out: &mut Tree) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries {
            let entry = entry.expect("reading a directory entry");
            let path = entry.path();
            let relative = path
                .strip_prefix(base)
                .expect("inside the base")
                .to_string_lossy()
                .into_owned();
            if crate::support::INFRASTRUCTURE.contains(&relative.as_str()) {
                continue;
            }
            let kind = entry.file_type().expect("file type");
            let node = if kind.is_symlink() {
                Node::Link(fs::read_link(&path).expect("reading a symlink"))
            } else if kind.is_dir() {
                walk(base, &path, out);
                Node::Dir
            } else {
                Node::File(
                    fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display())),
                )
            };
            out.insert(relative, node);
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// Whether any component of `relative` is one of our temp names.
pub fn is_temp(relative: &str) -> bool {
    relative
        .split('/')
        .any(|component| component.starts_with(TEMP_PREFIX))
}

/// Whether `relative` names a kernel module (`*.ko`, `*.ko.zst`, `*.ko.xz`, `*.ko.gz`).
pub fn is_module_file(relative: &str) -> bool {
    let name = relative.rsplit('/').next().unwrap_or(relative);
    [".ko", ".ko.zst", ".ko.xz", ".ko.gz"]
        .iter()
        .any(|suffix| name.ends_with(suffix))
}

/// Whether `relative` (in a DKMS tree) is a module of a finished build,
/// `<m>/<v>/<k>/<a>/module/<name>`, or an archived original,
/// `<m>/original_module/<k>/<a>/<name>`: the files that must never be partial. Work
/// directories (`<m>/<v>/build-<k>-<a>/`) are scratch space and not among them.
pub fn is_kept_module_file(relative: &str) -> bool {
    let parts: Vec<&str> = relative.split('/').collect();
    is_module_file(relative)
        && !is_temp(relative)
        && matches!(
            parts.as_slice(),
            [_, _, _, _, "module", _] | [_, "original_module", _, _, _]
        )
}

/// The temp names anywhere in `tree`.
pub fn temp_names(tree: &Tree) -> Vec<String> {
    tree.keys().filter(|p| is_temp(p)).cloned().collect()
}

/// The tree with the contents of logs and failure records blanked: they hold times,
/// process ids and compiler output, which no two runs share.
pub fn without_log_contents(tree: &Tree) -> Tree {
    tree.iter()
        .map(|(path, node)| {
            let name = path.rsplit('/').next().unwrap_or(path);
            let volatile =
                name == "make.log" || (name.starts_with("failed-") && name.ends_with(".json"));
            match node {
                Node::File(_) if volatile => (path.clone(), Node::File(Vec::new())),
                other => (path.clone(), other.clone()),
            }
        })
        .collect()
}

/// What differs between `expected` and `actual`, one line per path (empty when equal).
pub fn differences(expected: &Tree, actual: &Tree) -> Vec<String> {
    let mut out = Vec::new();
    for (path, node) in expected {
        match actual.get(path) {
            None => out.push(format!("missing {path} ({node:?})")),
            Some(other) if other != node => out.push(format!(
                "changed {path}: {node:?} expected, {other:?} found"
            )),
            Some(_) => {}
        }
    }
    for (path, node) in actual {
        if !expected.contains_key(path) {
            out.push(format!("extra {path} ({node:?})"));
        }
    }
    out
}

/// What the sandbox's two trees look like at one moment.
#[derive(Clone, PartialEq, Eq)]
pub struct State {
    pub dkms: Tree,
    pub inst: Tree,
}

impl State {
    pub fn read(sb: &Sandbox) -> State {
        State {
            dkms: read_tree(&sb.dkms_tree()),
            inst: read_tree(&sb.install_tree()),
        }
    }

    /// The contents of every complete module file: built, archived and installed.
    pub fn modules(&self) -> HashSet<Vec<u8>> {
        let built = self.dkms.iter().filter(|(p, _)| is_kept_module_file(p));
        let installed = self
            .inst
            .iter()
            .filter(|(p, _)| is_module_file(p) && !is_temp(p));
        built
            .chain(installed)
            .filter_map(|(_, node)| match node {
                Node::File(bytes) => Some(bytes.clone()),
                _ => None,
            })
            .collect()
    }

    pub fn link(&self, module: &str, kernel: &str) -> Option<PathBuf> {
        match self.dkms.get(&format!("{module}/kernel-{kernel}-{ARCH}")) {
            Some(Node::Link(target)) => Some(target.clone()),
            _ => None,
        }
    }

    /// What differs from `expected`, log contents aside, plus any temp name.
    pub fn differences_from(&self, expected: &State) -> Vec<String> {
        let mut out = Vec::new();
        for (name, ours, theirs) in [
            ("dkms", &self.dkms, &expected.dkms),
            ("inst", &self.inst, &expected.inst),
        ] {
            out.extend(
                differences(&without_log_contents(theirs), &without_log_contents(ours))
                    .into_iter()
                    .map(|d| format!("{name}: {d}")),
            );
            out.extend(
                temp_names(ours)
                    .into_iter()
                    .map(|t| format!("{name}: temp name left: {t}")),
            );
        }
        out
    }
}

/// Copies the sandbox's trees to `to` (`cp -a`, links kept as links).
pub fn save_trees(sb: &Sandbox, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for tree in [sb.dkms_tree(), sb.install_tree()] {
        cp_a(&tree, &to.join(tree.file_name().unwrap()));
    }
}

/// Puts the trees saved by [`save_trees`] back.
pub fn restore_trees(sb: &Sandbox, from: &Path) {
    for tree in [sb.dkms_tree(), sb.install_tree()] {
        if tree.exists() {
            fs::remove_dir_all(&tree).unwrap();
        }
        cp_a(&from.join(tree.file_name().unwrap()), &tree);
    }
}

fn cp_a(from: &Path, to: &Path) {
    let status = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        status.success(),
        "cp -a {} {}",
        from.display(),
        to.display()
    );
}
