//! Listings of the DKMS tree: module versions, builds, install links and what a
//! version keeps per kernel, read from the disk. Names come from `layout`.
//!
//! Architecture invariant: listings come back in the order upstream dkms prints them,
//! which is bash's glob order over the whole relative path in the C locale (so
//! `a-b/1` sorts before `a/1`), and nothing here spawns a process.

use super::layout::{self, is_install_link_name, KernelArch, KernelEntry, Target};
use crate::name::{self, Arch, KernelRelease, ModuleName};
use crate::paths::Paths;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Module file suffixes dkms recognises, uncompressed first.
pub const MODULE_SUFFIXES: [&str; 4] = [".ko", ".ko.zst", ".ko.xz", ".ko.gz"];

/// Whether a module version's source is usable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    /// `source` is a symlink to a directory.
    Added,
    /// `source` is a dangling symlink, or is missing while `<source_tree>/<m>-<v>`
    /// exists: dkms calls this broken and asks for manual intervention.
    Broken,
    /// Neither: not a module version (e.g. `original_module`), skipped like dkms does.
    Unknown,
}

/// A `<module>/<version>` directory of the DKMS tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleVersion {
    pub module: ModuleName,
    pub version: name::ModuleVersion,
    pub source: SourceState,
}

/// Lists `<module>/<version>` directories, optionally only one module or version, in
/// upstream's order; a name that is not a valid module name or version is skipped. Entries named `kernel-*-*` (the install links) are not versions.
pub fn module_versions(
    paths: &Paths,
    module: Option<&str>,
    version: Option<&str>,
) -> Vec<ModuleVersion> {
    let mut found = Vec::new();
    for m in child_names(&paths.dkms_tree, module) {
        // Dot names are ours (the build cache) and hidden from upstream's globs.
        if m.starts_with('.') {
            continue;
        }
        let Ok(module_name) = ModuleName::parse(&m) else {
            continue;
        };
        let module_dir = paths.dkms_tree.join(&m);
        for v in child_names(&module_dir, version) {
            if is_install_link_name(&v) || !module_dir.join(&v).is_dir() {
                continue;
            }
            let Ok(version_name) = name::ModuleVersion::parse(&v) else {
                continue;
            };
            let source = source_state(paths, &m, &v);
            found.push(ModuleVersion {
                module: module_name.clone(),
                version: version_name,
                source,
            });
        }
    }
    found.sort_by(|a, b| {
        glob_key(&[&a.module, &a.version]).cmp(&glob_key(&[&b.module, &b.version]))
    });
    found
}

/// The byte string bash's glob sorts by: the relative path joined with `/`.
fn glob_key(parts: &[&str]) -> Vec<u8> {
    parts.join("/").into_bytes()
}

/// Names in `dir` (not starting with `.`, as `*` skips them), or just `only` if given
/// and present. Non-UTF-8 names are skipped: they cannot be module names or versions.
///
/// `only` is a bash glob when it holds a glob character: dkms expands `-m`/`-v`
/// unquoted (with extglob on), so `-m 'nvidia*'` matches several modules.
fn child_names(dir: &Path, only: Option<&str>) -> Vec<String> {
    if let Some(name) = only.filter(|n| !n.contains(['*', '?', '[', '('])) {
        return if !name.is_empty() && dir.join(name).exists() {
            vec![name.to_string()]
        } else {
            Vec::new()
        };
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| !n.starts_with('.'))
        .filter(|n| only.is_none_or(|pattern| glob_matches(pattern, n)))
        .collect()
}

/// glibc's fnmatch with extglob patterns, as bash matches a pathname component.
fn glob_matches(pattern: &str, name: &str) -> bool {
    /// GNU's FNM_EXTMATCH: `+(a|b)` and friends, which dkms turns on.
    const FNM_EXTMATCH: libc::c_int = 1 << 5;
    let (Ok(pattern), Ok(name)) = (
        std::ffi::CString::new(pattern),
        std::ffi::CString::new(name),
    ) else {
        return false;
    };
    // SAFETY: both arguments are valid NUL-terminated strings for the whole call.
    unsafe {
        libc::fnmatch(
            pattern.as_ptr(),
            name.as_ptr(),
            libc::FNM_PERIOD | FNM_EXTMATCH,
        ) == 0
    }
}

fn source_state(paths: &Paths, module: &str, version: &str) -> SourceState {
    let link = paths.source_link(module, version);
    let is_link = link
        .symlink_metadata()
        .is_ok_and(|m| m.file_type().is_symlink());
    let is_dir = link.is_dir();
    if is_link && is_dir {
        SourceState::Added
    } else if (is_link && !is_dir) || (!is_link && paths.source_dir(module, version).is_dir()) {
        SourceState::Broken
    } else {
        SourceState::Unknown
    }
}

/// `<dkms_tree>/<m>/<v>/<k>/<a>`.
pub fn build_dir(paths: &Paths, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
    paths.build_dir(module, version, kernel, arch)
}

/// The `(kernel, arch)` pairs a version is built for (a `module/` directory exists),
/// in upstream's order. Without a kernel filter only directories that look like
/// kernel releases (digits then a dot) count, as dkms's `+([0-9]).*` glob does.
pub fn built_for(
    paths: &Paths,
    module: &str,
    version: &str,
    kernel: Option<&str>,
    arch: Option<&str>,
) -> Vec<KernelArch> {
    let version_dir = paths.version_dir(module, version);
    let mut found = Vec::new();
    for k in child_names(&version_dir, kernel) {
        if kernel.is_none() && !looks_like_release(&k) {
            continue;
        }
        let Ok(release) = KernelRelease::parse(&k) else {
            continue;
        };
        for a in child_names(&version_dir.join(&k), arch) {
            let Ok(arch) = Arch::parse(&a) else {
                continue;
            };
            if layout::modules_of(&version_dir.join(&k).join(&a)).is_dir() {
                found.push((release.clone(), arch));
            }
        }
    }
    found.sort_by_key(|(k, a)| glob_key(&[k, a]));
    found
}

/// dkms's `+([0-9]).*`: one or more digits, then a dot.
fn looks_like_release(name: &str) -> bool {
    let digits = name.bytes().take_while(u8::is_ascii_digit).count();
    digits > 0 && name.as_bytes().get(digits) == Some(&b'.')
}

/// `<dkms_tree>/<m>/kernel-<k>-<a>`: its presence, pointing at this version's build,
/// is what "installed" means.
pub fn install_link(paths: &Paths, module: &str, kernel: &str, arch: &str) -> PathBuf {
    paths.install_link(module, kernel, arch)
}

/// Whether `kernel`'s `modules.dep` may not know a module installed for it (or still
/// lists one removed): an install link switched, or a usual DKMS module directory
/// changed, after depmod last wrote it. A run killed between its installs or
/// uninstalls and depmod leaves this; the next run sees it and runs depmod. A kernel
/// without `modules.dep` (never depmodded) is not stale.
pub fn depmod_stale(paths: &Paths, kernel: &str, arch: &str) -> bool {
    let Ok(dep) = std::fs::metadata(paths.modules_dep(kernel)).and_then(|m| m.modified()) else {
        return false;
    };
    let Ok(modules) = std::fs::read_dir(&paths.dkms_tree) else {
        return false;
    };
    let newer = |path: &Path| {
        std::fs::symlink_metadata(path)
            .and_then(|m| m.modified())
            .is_ok_and(|changed| changed > dep)
    };
    // An uninstall leaves no link behind, but its module directories changed.
    let kernel_dir = paths.kernel_dir(kernel);
    if layout::DKMS_MODULE_DIRS
        .iter()
        .any(|dir| newer(&kernel_dir.join(dir)))
    {
        return true;
    }
    let link_name = layout::install_link_name(kernel, arch);
    modules
        .flatten()
        .any(|module| newer(&module.path().join(&link_name)))
}

/// Whether version `version` is the one installed for `kernel`/`arch`: the install
/// link is a symlink that resolves to its build directory (dkms's `readlink -f` test).
pub fn is_installed(paths: &Paths, module: &str, version: &str, kernel: &str, arch: &str) -> bool {
    let link = install_link(paths, module, kernel, arch);
    let Ok(target) = std::fs::read_link(&link) else {
        return false;
    };
    // The link dkms and we write, `<v>/<k>/<a>`, needs no path resolution.
    if target == layout::install_link_target(version, kernel, arch) {
        return build_dir(paths, module, version, kernel, arch).is_dir();
    }
    match (
        std::fs::canonicalize(&link),
        std::fs::canonicalize(build_dir(paths, module, version, kernel, arch)),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// `<dkms_tree>/<m>/original_module/<k>/<a>`: modules that installing replaced.
pub fn original_module_dir(paths: &Paths, module: &str, kernel: &str, arch: &str) -> PathBuf {
    paths.original_module_dir(module, kernel, arch)
}

/// The first of `<dir>/<name><suffix>` that exists, trying `.ko` and then the
/// kernel's compressed suffix, as dkms's `compressed_or_uncompressed` does.
pub fn module_file(dir: &Path, name: &str, compressed_suffix: Option<&str>) -> Option<PathBuf> {
    let plain = dir.join(format!("{name}.ko"));
    if plain.exists() {
        return Some(plain);
    }
    let compressed = dir.join(format!("{name}.ko{}", compressed_suffix?));
    compressed.exists().then_some(compressed)
}

/// The compression suffix dkms assumes for a kernel: `.zst` if any `*.ko.zst` exists
/// in its install directory, else `.xz`, else `.gz`, else none. Stops walking as
/// soon as the answer is certain.
pub fn kernel_module_compression(kernel_dir: &Path) -> Option<&'static str> {
    let mut seen_xz = false;
    let mut seen_gz = false;
    let mut stack = vec![kernel_dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(file_type) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.as_encoded_bytes();
            if file_type.is_dir() {
                stack.push(entry.path());
            } else if name.ends_with(b".ko.zst") {
                return Some(".zst");
            } else if name.ends_with(b".ko.xz") {
                seen_xz = true;
            } else if name.ends_with(b".ko.gz") {
                seen_gz = true;
            }
        }
    }
    if seen_xz {
        Some(".xz")
    } else if seen_gz {
        Some(".gz")
    } else {
        None
    }
}

impl Target {
    pub fn is_built(&self, paths: &Paths) -> bool {
        self.modules_dir(paths).is_dir()
    }

    pub fn is_installed(&self, paths: &Paths) -> bool {
        is_installed(paths, &self.module, &self.version, &self.kernel, &self.arch)
    }
}

/// The work directories and failure records of a module version, with the kernel
/// each one belongs to.
pub fn kernel_entries(
    paths: &Paths,
    module: &str,
    version: &str,
) -> Vec<(String, PathBuf, KernelEntry)> {
    let Ok(entries) = std::fs::read_dir(paths.version_dir(module, version)) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|entry| {
            let name = entry.file_name().into_string().ok()?;
            let (kernel, kind) = layout::parse_kernel_entry(&name)?;
            Some((kernel.to_string(), entry.path(), kind))
        })
        .collect()
}

/// The version of `module` installed for a kernel and arch, from its install link.
pub fn installed_version(
    paths: &Paths,
    module: &str,
    kernel: &str,
    arch: &str,
) -> Option<name::ModuleVersion> {
    let target = std::fs::read_link(install_link(paths, module, kernel, arch)).ok()?;
    let version =
        name::ModuleVersion::parse(target.components().next()?.as_os_str().to_str()?).ok()?;
    is_installed(paths, module, &version, kernel, arch).then_some(version)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_sort_like_bash_globs_over_the_whole_path() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths {
            dkms_tree: root.path().to_path_buf(),
            ..Paths::default()
        };
        for mv in [
            "a/1",
            "a-b/1",
            "a/10",
            "a/9",
            "A/1",
            "a/kernel-6.1-x86_64",
            "a/.hidden",
        ] {
            std::fs::create_dir_all(root.path().join(mv)).unwrap();
        }
        let listed: Vec<String> = module_versions(&paths, None, None)
            .into_iter()
            .map(|mv| format!("{}/{}", mv.module, mv.version))
            .collect();
        assert_eq!(listed, ["A/1", "a-b/1", "a/1", "a/10", "a/9"]);
    }

    #[test]
    fn module_and_version_filters_are_bash_globs() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths {
            dkms_tree: root.path().to_path_buf(),
            ..Paths::default()
        };
        for mv in ["hello/1.0", "hello/2.0", "hello-extra/1.0", "other/1.5"] {
            std::fs::create_dir_all(root.path().join(mv)).unwrap();
        }
        let listed = |m: Option<&str>, v: Option<&str>| -> Vec<String> {
            module_versions(&paths, m, v)
                .into_iter()
                .map(|mv| format!("{}/{}", mv.module, mv.version))
                .collect()
        };
        assert_eq!(
            listed(Some("hel*"), None),
            ["hello-extra/1.0", "hello/1.0", "hello/2.0"]
        );
        assert_eq!(
            listed(None, Some("1.*")),
            ["hello-extra/1.0", "hello/1.0", "other/1.5"]
        );
        assert_eq!(
            listed(Some("+(other|hello)"), Some("?.0")),
            ["hello/1.0", "hello/2.0"]
        );
        assert_eq!(listed(Some("hello"), None), ["hello/1.0", "hello/2.0"]);
    }

    #[test]
    fn kernel_directories_must_look_like_releases() {
        assert!(looks_like_release("6.1.0-54-amd64"));
        assert!(!looks_like_release("source"));
        assert!(!looks_like_release("6"));
        assert!(!looks_like_release("log"));
    }
}
