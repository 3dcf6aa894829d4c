//! Installed kernels: the directories of the install tree, and what each one has.
//!
//! A kernel counts as installed when its directory holds a modules tree (`kernel/` or
//! `modules.order`); it can be built for when it has headers (`build/include`). Arch's
//! kernel packages also leave a `pkgbase` file naming the package (`linux`,
//! `linux-lts`), from which the headers package name follows.

pub mod config;

pub use config::{KernelConfig, KernelConfigs};

use crate::name::{Arch, KernelRelease};
use crate::paths::Paths;
use crate::version::ver_cmp;
use serde::Serialize;
use std::path::PathBuf;

/// One directory under the install tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Kernel {
    /// The release, as `uname -r` prints it (`6.1.0-54-amd64`, `6.12.4-arch1-1`).
    pub release: KernelRelease,
    pub dir: PathBuf,
    /// Headers present (`<kernel_source_dir>/include`): modules can be built.
    pub has_headers: bool,
    /// A modules tree present: the kernel itself is installed, not just leftovers.
    pub has_modules: bool,
    /// Arch's `pkgbase` file content, when present.
    pub pkgbase: Option<String>,
}

impl Kernel {
    /// Looks at `<install_tree>/<release>`; `None` when there is no such directory.
    pub fn probe(paths: &Paths, release: &str) -> Option<Kernel> {
        let release = KernelRelease::parse(release).ok()?;
        let dir = paths.kernel_dir(&release);
        if !dir.is_dir() {
            return None;
        }
        let has_headers = paths.kernel_source_dir(&release).join("include").is_dir();
        let has_modules = dir.join("kernel").is_dir() || dir.join("modules.order").is_file();
        let pkgbase = std::fs::read_to_string(dir.join("pkgbase"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        Some(Kernel {
            release,
            dir,
            has_headers,
            has_modules,
            pkgbase,
        })
    }

    /// The package that provides this kernel's headers, when the kernel says its pkgbase.
    pub fn headers_package(&self) -> Option<String> {
        self.pkgbase.as_ref().map(|p| format!("{p}-headers"))
    }
}

/// Every kernel directory under the install tree that has a modules tree or headers,
/// newest first by dkms's version order.
pub fn installed_kernels(paths: &Paths) -> Vec<Kernel> {
    let Ok(entries) = std::fs::read_dir(&paths.install_tree) else {
        return Vec::new();
    };
    let mut kernels: Vec<Kernel> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().into_string().ok())
        .filter_map(|release| Kernel::probe(paths, &release))
        .filter(|k| k.has_modules || k.has_headers)
        .collect();
    kernels.sort_by(|a, b| ver_cmp(&b.release, &a.release).then_with(|| b.release.cmp(&a.release)));
    kernels
}

/// A kernel named on the command line that has no directory in the install tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "kernel {kernel} is not installed: there is no {}; installed kernels: {}",
    .dir.display(),
    if .installed.is_empty() { "none".to_string() } else { .installed.join(", ") }
)]
pub struct NotInstalled {
    pub kernel: String,
    pub dir: PathBuf,
    /// The releases that are installed, newest first, to show what was meant.
    pub installed: Vec<String>,
}

/// The kernel `release` of the install tree; fails, naming the kernels that are
/// installed, when it has no directory there (a typo, or a kernel already removed).
pub fn require_installed(paths: &Paths, release: &str) -> Result<Kernel, NotInstalled> {
    Kernel::probe(paths, release).ok_or_else(|| NotInstalled {
        kernel: release.to_string(),
        dir: paths.kernel_dir(release),
        installed: installed_kernels(paths)
            .into_iter()
            .map(|k| k.release.to_string())
            .collect(),
    })
}

/// The running kernel's release, as `uname -r` prints it: upstream's default kernel
/// for every command but `status`. `None` without /proc or for a release that is no
/// plain name.
pub fn running_release() -> Option<KernelRelease> {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").ok()?;
    KernelRelease::parse(release.trim()).ok()
}

/// The machine architecture as `uname -m` prints it, which dkms uses as the default
/// arch. Taken from the compile target so that no process is spawned.
pub fn default_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86" => "i686",
        "powerpc64" if cfg!(target_endian = "little") => "ppc64le",
        "powerpc64" => "ppc64",
        other => other,
    }
}

/// [`default_arch`] as a name. It comes from the compile target, not from input, and
/// every Rust target arch is a plain name (a test holds it).
pub fn default_arch_name() -> Arch {
    Arch::parse(default_arch()).expect("the compile target's arch is a plain name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernels_need_a_modules_tree_or_headers() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths {
            install_tree: root.path().to_path_buf(),
            ..Paths::default()
        };
        std::fs::create_dir_all(root.path().join("6.1.0-53-amd64/kernel")).unwrap();
        std::fs::create_dir_all(root.path().join("6.1.0-54-amd64/build/include")).unwrap();
        std::fs::write(root.path().join("6.1.0-54-amd64/pkgbase"), "linux-lts\n").unwrap();
        std::fs::create_dir_all(root.path().join("6.0.0-old/updates/dkms")).unwrap();
        let kernels = installed_kernels(&paths);
        let names: Vec<&str> = kernels.iter().map(|k| k.release.as_str()).collect();
        assert_eq!(names, ["6.1.0-54-amd64", "6.1.0-53-amd64"]);
        assert!(kernels[0].has_headers && !kernels[0].has_modules);
        assert_eq!(
            kernels[0].headers_package().as_deref(),
            Some("linux-lts-headers")
        );
        assert!(!kernels[1].has_headers && kernels[1].has_modules);
    }
}
