//! Every absolute path the library touches comes from one [`Paths`] value, so tests
//! (and `--dkmstree`/`--sourcetree`/`--installtree`) relocate everything at once.
//! This file holds the roots; the names below them are `tree::layout`'s.

use std::path::{Path, PathBuf};

/// Where the DKMS state, module sources, installed kernels and configuration live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Paths {
    /// `/var/lib/dkms`: added sources, built modules, logs, install links.
    pub dkms_tree: PathBuf,
    /// `/usr/src`: module sources, `<module>-<version>/dkms.conf`.
    pub source_tree: PathBuf,
    /// `/usr/lib/modules`: one directory per installed kernel.
    pub install_tree: PathBuf,
    /// `/etc/dkms`: framework.conf, per-module override files, `no-autoinstall`.
    pub etc_dir: PathBuf,
    /// os-release files, first existing wins (decides DEST_MODULE_LOCATION).
    pub os_release: Vec<PathBuf>,
    /// `--kernelsourcedir`: headers to use instead of `<install_tree>/<k>/build`.
    pub kernel_source_dir: Option<PathBuf>,
    /// `--config`: the kernel config to read (signature hash, compression,
    /// BUILD_EXCLUSIVE_CONFIG) instead of the headers' own, for every kernel.
    pub kernel_config: Option<PathBuf>,
    /// `/usr/share/dkms/modules_to_force_install`: files of module names to install
    /// with `--force` (and `<module>_version-override` tokens), as upstream.
    pub force_install_dir: PathBuf,
    /// Scratch space (`/tmp`): a dkms.conf is evaluated in a fresh empty directory
    /// here, so what it writes to relative paths is thrown away.
    pub temp_dir: PathBuf,
}

impl Default for Paths {
    fn default() -> Self {
        Paths {
            dkms_tree: "/var/lib/dkms".into(),
            source_tree: "/usr/src".into(),
            install_tree: "/usr/lib/modules".into(),
            etc_dir: "/etc/dkms".into(),
            os_release: vec!["/etc/os-release".into(), "/usr/lib/os-release".into()],
            kernel_source_dir: None,
            kernel_config: None,
            temp_dir: "/tmp".into(),
            force_install_dir: "/usr/share/dkms/modules_to_force_install".into(),
        }
    }
}

impl Paths {
    /// The framework.conf files dkms reads, in order: the main file, then the drop-ins.
    pub fn framework_conf_files(&self) -> Vec<PathBuf> {
        conf_with_dropins(
            &self.etc_dir.join("framework.conf"),
            &self.etc_dir.join("framework.conf.d"),
        )
    }

    /// The same paths with every relative one taken from `cwd` (the caller's working
    /// directory, which the library does not read itself). Done once where the paths
    /// enter: children run elsewhere (bash evaluates a dkms.conf in a scratch
    /// directory, make in the build directory), so a relative `--dkmstree` or
    /// `--sourcetree` would point somewhere else for them.
    pub fn made_absolute(mut self, cwd: &Path) -> Paths {
        let absolute = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = cwd.join(&*p);
            }
        };
        absolute(&mut self.dkms_tree);
        absolute(&mut self.source_tree);
        absolute(&mut self.install_tree);
        absolute(&mut self.etc_dir);
        absolute(&mut self.temp_dir);
        absolute(&mut self.force_install_dir);
        self.os_release.iter_mut().for_each(absolute);
        if let Some(dir) = &mut self.kernel_source_dir {
            absolute(dir);
        }
        if let Some(file) = &mut self.kernel_config {
            absolute(file);
        }
        self
    }

    /// Path of `p` relative to `base` when it lies inside it, for messages.
    pub fn display_within(base: &Path, p: &Path) -> String {
        p.strip_prefix(base).unwrap_or(p).display().to_string()
    }
}

/// A configuration file followed by the `*.conf` drop-ins of `dropins_dir` in name
/// order, as bash's glob sorts them in the C locale (framework.conf, mkinitcpio.conf).
pub fn conf_with_dropins(main: &Path, dropins_dir: &Path) -> Vec<PathBuf> {
    let mut files = vec![main.to_path_buf()];
    if let Ok(entries) = std::fs::read_dir(dropins_dir) {
        let mut dropins: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "conf"))
            .collect();
        dropins.sort();
        files.extend(dropins);
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_are_made_absolute_against_the_callers_directory() {
        let paths = Paths {
            dkms_tree: "dkms".into(),
            source_tree: "./src".into(),
            kernel_source_dir: Some("../headers".into()),
            ..Paths::default()
        }
        .made_absolute(Path::new("/home/u"));
        assert_eq!(paths.dkms_tree, Path::new("/home/u/dkms"));
        assert_eq!(paths.source_tree, Path::new("/home/u/./src"));
        assert_eq!(
            paths.kernel_source_dir.as_deref(),
            Some(Path::new("/home/u/../headers"))
        );
        assert_eq!(paths.install_tree, Path::new("/usr/lib/modules"));
        assert_eq!(paths.etc_dir, Path::new("/etc/dkms"));
    }
}
