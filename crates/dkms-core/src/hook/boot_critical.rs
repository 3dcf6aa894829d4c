//! Which DKMS modules the machine needs to boot, so that the pre-flight refuses a
//! kernel upgrade they cannot be built for instead of leaving an unbootable kernel.
//!
//! Named in the settings (`boot_critical = ["zfs", "nvidia"]`), or detected: the root
//! file system's type when a DKMS module provides it (`findmnt -no FSTYPE /`: zfs), and
//! mkinitcpio's `MODULES=()` in mkinitcpio.conf and its `mkinitcpio.conf.d/*.conf`
//! (those modules are put into every initramfs, so a missing one fails the image).
//! The current initramfs's own module list is not read: that would decompress the
//! whole image on every kernel upgrade, and what mkinitcpio adds beyond MODULES comes
//! from autodetection of the running hardware, which the root file system covers for
//! the case that matters. A name matches a DKMS module by its name or by the name of
//! one of the kernel modules it builds (`BUILT_MODULE_NAME`).

use crate::exec::Command;
use crate::host::Host;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// mkinitcpio's configuration file, unless the `mkinitcpio_conf` setting moves it.
pub const MKINITCPIO_CONF: &str = "/etc/mkinitcpio.conf";

/// Why a module name is boot-critical.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    /// The `boot_critical` setting names it.
    Setting,
    /// The root file system has this type.
    RootFilesystem,
    /// mkinitcpio's MODULES=() in this file lists it.
    Mkinitcpio(PathBuf),
}

impl std::fmt::Display for Why {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Why::Setting => write!(f, "the boot_critical setting names it"),
            Why::RootFilesystem => write!(f, "the root file system is of this type"),
            Why::Mkinitcpio(file) => write!(f, "MODULES=() in {} lists it", file.display()),
        }
    }
}

/// The boot-critical names, each with its first reason.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootCritical {
    names: BTreeMap<String, Why>,
}

impl BootCritical {
    /// Gathers the names from the settings, the root file system and mkinitcpio.
    pub fn detect(host: &Host) -> BootCritical {
        let mut critical = BootCritical::default();
        for name in host.settings.boot_critical.iter().flatten() {
            critical.add(name, Why::Setting);
        }
        if let Some(fstype) = root_fstype() {
            critical.add(&fstype, Why::RootFilesystem);
        }
        let conf = host
            .settings
            .mkinitcpio_conf
            .clone()
            .unwrap_or_else(|| MKINITCPIO_CONF.into());
        for file in mkinitcpio_files(&conf) {
            if let Ok(text) = std::fs::read_to_string(&file) {
                for name in mkinitcpio_modules(&text) {
                    critical.add(&name, Why::Mkinitcpio(file.clone()));
                }
            }
        }
        critical
    }

    /// Adds `name` (kernel module names treat `-` and `_` alike; `_` is kept).
    pub fn add(&mut self, name: &str, why: Why) {
        let name = name.replace('-', "_");
        if !name.is_empty() {
            self.names.entry(name).or_insert(why);
        }
    }

    /// Why a DKMS module named `module`, building kernel modules `built`, is
    /// boot-critical; `None` when it is not.
    pub fn why<'a>(
        &self,
        module: &'a str,
        built: impl IntoIterator<Item = &'a str>,
    ) -> Option<&Why> {
        std::iter::once(module)
            .chain(built)
            .find_map(|name| self.names.get(&name.replace('-', "_")))
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// The root file system's type, when findmnt can tell.
fn root_fstype() -> Option<String> {
    let out = Command::new("findmnt", "find the root file system's type")
        .args(["-no", "FSTYPE", "/"])
        .read()
        .ok()?;
    let fstype = String::from_utf8_lossy(&out).trim().to_string();
    (!fstype.is_empty()).then_some(fstype)
}

/// mkinitcpio.conf, then its drop-ins `mkinitcpio.conf.d/*.conf` in name order.
fn mkinitcpio_files(conf: &Path) -> Vec<PathBuf> {
    let mut dropins_dir = conf.as_os_str().to_owned();
    dropins_dir.push(".d");
    crate::paths::conf_with_dropins(conf, Path::new(&dropins_dir))
}

/// The names in a `MODULES=(...)` array of a mkinitcpio config, read without bash:
/// the array may span lines, `#` starts a comment, quotes are dropped and so is the
/// trailing `?` of an optional module. A later assignment replaces an earlier one, as
/// bash would; `MODULES+=(...)` adds to it.
fn mkinitcpio_modules(text: &str) -> Vec<String> {
    let mut modules = Vec::new();
    let uncommented: String = text
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .collect::<Vec<_>>()
        .join("\n");
    let mut rest: &str = &uncommented;
    while let Some(start) = rest.find("MODULES") {
        let before_ok = rest[..start]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_whitespace() || c == ';');
        let after = &rest[start + "MODULES".len()..];
        let (append, after) = match after.strip_prefix("+=(") {
            Some(a) => (true, Some(a)),
            None => (false, after.strip_prefix("=(")),
        };
        let Some(after) = after.filter(|_| before_ok) else {
            rest = &rest[start + 1..];
            continue;
        };
        let end = after.find(')').unwrap_or(after.len());
        if !append {
            modules.clear();
        }
        modules.extend(
            after[..end]
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '"' || c == '\''))
                .map(|w| w.trim_end_matches('?').to_string())
                .filter(|w| !w.is_empty()),
        );
        rest = &after[end..];
    }
    modules
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mkinitcpio_modules_are_read_as_bash_would() {
        let conf = "# MODULES=(commented)\nMODULES=(\"zfs\" nvidia? # the gpu\n  'vboxdrv')\nHOOKS=(base udev)\nMODULES+=(extra)\n";
        assert_eq!(
            mkinitcpio_modules(conf),
            ["zfs", "nvidia", "vboxdrv", "extra"]
        );
        assert_eq!(mkinitcpio_modules("MODULES=(a)\nMODULES=(b)\n"), ["b"]);
        assert!(mkinitcpio_modules("XMODULES=(a)\n").is_empty());
    }

    #[test]
    fn names_match_modules_and_built_modules_alike() {
        let mut critical = BootCritical::default();
        critical.add("nvidia-drm", Why::Setting);
        critical.add("zfs", Why::RootFilesystem);
        assert_eq!(
            critical.why("openzfs", ["zfs", "spl"]),
            Some(&Why::RootFilesystem)
        );
        assert_eq!(critical.why("nvidia_drm", []), Some(&Why::Setting));
        assert_eq!(critical.why("hello", ["hello"]), None);
    }

    #[test]
    fn mkinitcpio_drop_ins_are_read_after_the_main_file() {
        let dir = tempfile::tempdir().unwrap();
        let conf = dir.path().join("mkinitcpio.conf");
        std::fs::write(&conf, "MODULES=(a)\n").unwrap();
        std::fs::create_dir(dir.path().join("mkinitcpio.conf.d")).unwrap();
        std::fs::write(dir.path().join("mkinitcpio.conf.d/zz.conf"), "").unwrap();
        std::fs::write(dir.path().join("mkinitcpio.conf.d/aa.conf"), "").unwrap();
        let names: Vec<String> = mkinitcpio_files(&conf)
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, ["mkinitcpio.conf", "aa.conf", "zz.conf"]);
    }
}
