//! Upstream's module version sanity check before installing: the first file of the
//! same module name anywhere in the kernel's module tree (the kernel's own, another
//! package's) is compared with ours by modinfo `version` (dkms's `VER()` order) and
//! `srcversion`, so an install never silently replaces a newer module.
//!
//! `--force` skips the refusals; `--force-version-override`, or a
//! `<module>_version-override` token in the force-install list, skips the comparison.

use crate::modinfo;
use crate::version::ver_cmp;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};

/// Why one module of a version is not installed on a kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The kernel's tree has a newer version of it.
    Newer { found: PathBuf, version: String },
    /// The kernel's tree has the same version and srcversion.
    Same { found: PathBuf, version: String },
}

/// The tokens of every file in the force-install directory (upstream's
/// `/usr/share/dkms/modules_to_force_install`), split on whitespace.
pub fn force_list(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
    files.sort();
    files
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.split_whitespace()
                .map(str::to_string)
                .collect::<Vec<_>>()
        })
        .collect()
}

/// The first `<name>.ko[.<suffix>]` under `kernel_dir`, in a sorted walk, that is not
/// one of `ours` (files this module version or the one it replaces installed).
pub fn find_module(kernel_dir: &Path, name: &str, ours: &[PathBuf]) -> Option<PathBuf> {
    let mut dirs = vec![kernel_dir.to_path_buf()];
    let is_module = |file: &str| {
        crate::tree::MODULE_SUFFIXES
            .iter()
            .any(|s| file == format!("{name}{s}"))
    };
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let mut entries: Vec<_> = entries.filter_map(Result::ok).collect();
        entries.sort_by_key(|e| e.file_name());
        // Depth first in name order: push subdirectories in reverse.
        let mut subdirs = Vec::new();
        for entry in entries {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                // The kernel's `build`/`source` links are not modules.
                subdirs.push(path);
            } else if is_module(&entry.file_name().to_string_lossy()) && !ours.contains(&path) {
                return Some(path);
            }
        }
        dirs.extend(subdirs.into_iter().rev());
    }
    None
}

/// Upstream's `compare_module_version` as a decision: `None` installs. Unversioned
/// modules on both sides compare as the same version.
pub fn check(found: &Path, ours: &Path) -> Option<Refusal> {
    let info = |path: &Path| {
        (
            modinfo::field(path, "version").unwrap_or_default(),
            modinfo::field(path, "srcversion").unwrap_or_default(),
        )
    };
    let (their_version, their_src) = info(found);
    let (our_version, our_src) = info(ours);
    if their_version == our_version {
        let same_source = their_src == our_src;
        let identical = || std::fs::read(found).ok() == std::fs::read(ours).ok();
        let versioned = !our_version.is_empty() || !our_src.is_empty();
        return (same_source && (versioned || identical())).then(|| Refusal::Same {
            found: found.to_path_buf(),
            version: their_version,
        });
    }
    (ver_cmp(&their_version, &our_version) == Ordering::Greater).then(|| Refusal::Newer {
        found: found.to_path_buf(),
        version: their_version,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_force_list_is_every_token_of_every_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("zfs"), "zfs\nspl_version-override\n").unwrap();
        std::fs::write(dir.path().join("a"), "  nvidia ").unwrap();
        assert_eq!(
            force_list(dir.path()),
            ["nvidia", "zfs", "spl_version-override"]
        );
        assert!(force_list(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn the_first_same_named_module_anywhere_in_the_tree_is_found_but_not_our_own() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path();
        for rel in [
            "kernel/b/hello.ko.xz",
            "kernel/a/hello.ko",
            "updates/dkms/hello.ko",
            "kernel/a/other.ko",
        ] {
            let path = k.join(rel);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, "").unwrap();
        }
        assert_eq!(
            find_module(k, "hello", &[]),
            Some(k.join("kernel/a/hello.ko"))
        );
        let ours = [k.join("kernel/a/hello.ko"), k.join("kernel/b/hello.ko.xz")];
        assert_eq!(
            find_module(k, "hello", &ours),
            Some(k.join("updates/dkms/hello.ko"))
        );
        assert_eq!(find_module(k, "nothere", &[]), None);
    }
}
