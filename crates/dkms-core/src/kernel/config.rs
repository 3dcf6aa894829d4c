//! A kernel's build configuration (`include/config/auto.conf` or `.config` of its
//! headers), read and parsed once per kernel per command. Three things ask it
//! questions: BUILD_EXCLUSIVE_CONFIG (which options are enabled), module compression
//! (`CONFIG_MODULE_COMPRESS_*`) and signing (`CONFIG_MODULE_SIG_HASH`); each used to
//! read and scan the 10,000-line file on its own.

use crate::compress::Compression;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The `CONFIG_*=value` assignments of one kernel config; the last assignment of a name
/// wins, as it does when make includes the file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KernelConfig {
    values: HashMap<String, String>,
}

impl KernelConfig {
    /// Parses the text of a kernel config. Comments (`# CONFIG_X is not set`) and lines
    /// without `=` are not assignments.
    pub fn parse(text: &[u8]) -> KernelConfig {
        let text = String::from_utf8_lossy(text);
        let values = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .filter_map(|line| {
                let (name, value) = line.split_once('=')?;
                Some((name.to_string(), value.to_string()))
            })
            .collect();
        KernelConfig { values }
    }

    /// Reads and parses `path`; `None` when it cannot be read (callers treat an absent
    /// config as upstream does: no BUILD_EXCLUSIVE_CONFIG check, no compression, no
    /// signing).
    pub fn read(path: &Path) -> Option<KernelConfig> {
        match std::fs::read(path) {
            Ok(bytes) => Some(KernelConfig::parse(&bytes)),
            Err(e) => {
                log::debug!("cannot read {}: {e}", path.display());
                None
            }
        }
    }

    /// The raw value assigned to `name`, if any.
    pub fn value(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    /// `name=y` or `name=m`: what BUILD_EXCLUSIVE_CONFIG calls enabled.
    pub fn enabled(&self, name: &str) -> bool {
        self.value(name)
            .is_some_and(|v| v.starts_with('y') || v.starts_with('m'))
    }

    /// The first requirement of a space-separated list (`CONFIG_X !CONFIG_Y`) the
    /// kernel does not meet, worded as a reason.
    pub fn unmet(&self, requirements: &str) -> Option<String> {
        requirements
            .split_whitespace()
            .find_map(|req| match req.strip_prefix('!') {
                Some(name) if self.enabled(name) => Some(format!("the kernel has {name} enabled")),
                Some(_) => None,
                None if !self.enabled(req) => Some(format!("the kernel lacks {req}")),
                None => None,
            })
    }

    /// How the kernel wants modules compressed: `CONFIG_MODULE_COMPRESS_{ZSTD,XZ,GZIP}=y`.
    /// Should a config set several, zstd wins over xz over gzip, as in dkms's suffix
    /// detection; none set means uncompressed (which loads on every kernel).
    pub fn module_compression(&self) -> Compression {
        let set = |name: &str| self.value(name) == Some("y");
        if set("CONFIG_MODULE_COMPRESS_ZSTD") {
            Compression::Zstd
        } else if set("CONFIG_MODULE_COMPRESS_XZ") {
            Compression::Xz
        } else if set("CONFIG_MODULE_COMPRESS_GZIP") {
            Compression::Gzip
        } else {
            Compression::None
        }
    }

    /// The hash the kernel checks module signatures with: `CONFIG_MODULE_SIG_HASH`,
    /// quotes removed as dkms's `sed` does. `None` when absent or empty: such a kernel
    /// was built without module signing, so there is nothing to sign for.
    pub fn signature_hash(&self) -> Option<String> {
        let value = self
            .value("CONFIG_MODULE_SIG_HASH")?
            .trim()
            .replace('"', "");
        (!value.is_empty()).then_some(value)
    }
}

/// Each kernel config read at most once per command, shared by the threads of a run.
#[derive(Debug, Default)]
pub struct KernelConfigs {
    read: Mutex<HashMap<PathBuf, Arc<Option<KernelConfig>>>>,
}

impl KernelConfigs {
    /// The parsed config at `path` (`None` inside when it cannot be read).
    pub fn get(&self, path: &Path) -> Arc<Option<KernelConfig>> {
        let mut read = self
            .read
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        read.entry(path.to_path_buf())
            .or_insert_with(|| Arc::new(KernelConfig::read(path)))
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn module_compression_follows_the_y_options() {
        let check = |text: &str, expected| {
            assert_eq!(
                KernelConfig::parse(text.as_bytes()).module_compression(),
                expected,
                "{text:?}"
            );
        };
        check("CONFIG_MODULE_COMPRESS_ZSTD=y\n", Compression::Zstd);
        check("CONFIG_X=y\nCONFIG_MODULE_COMPRESS_XZ=y\n", Compression::Xz);
        check("CONFIG_MODULE_COMPRESS_GZIP=y\n", Compression::Gzip);
        check(
            "CONFIG_MODULE_COMPRESS_NONE=y\n# CONFIG_MODULE_COMPRESS_ZSTD is not set\n",
            Compression::None,
        );
        check("CONFIG_MODULE_COMPRESS_ZSTD_LEVEL=19\n", Compression::None);
        check("CONFIG_MODULE_COMPRESS_XZ=m\n", Compression::None);
        check(
            "CONFIG_MODULE_COMPRESS_GZIP=y\nCONFIG_MODULE_COMPRESS_ZSTD=y\n",
            Compression::Zstd,
        );
    }

    #[test]
    fn signature_hash_is_the_last_assignment_without_quotes() {
        let check = |text: &str, expected: Option<&str>| {
            assert_eq!(
                KernelConfig::parse(text.as_bytes())
                    .signature_hash()
                    .as_deref(),
                expected,
                "{text:?}"
            );
        };
        check(
            "CONFIG_MODULE_SIG=y\nCONFIG_MODULE_SIG_HASH=\"sha512\"\nCONFIG_X=y\n",
            Some("sha512"),
        );
        check("CONFIG_MODULE_SIG_HASH=sha384\n", Some("sha384"));
        check(
            "CONFIG_MODULE_SIG_HASH=sha1\nCONFIG_MODULE_SIG_HASH=sha256\n",
            Some("sha256"),
        );
        check(
            "# CONFIG_MODULE_SIG is not set\nCONFIG_MODULE_SIG_ALL=y\n",
            None,
        );
        check("CONFIG_MODULE_SIG_HASH=\"\"\n", None);
        check("# CONFIG_MODULE_SIG_HASH=\"sha1\"\n", None);
    }

    #[test]
    fn unmet_names_the_first_requirement_the_kernel_misses() {
        let config = KernelConfig::parse(b"CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=n\n");
        assert_eq!(config.unmet("CONFIG_A CONFIG_B !CONFIG_C"), None);
        assert_eq!(
            config.unmet("CONFIG_A CONFIG_C"),
            Some("the kernel lacks CONFIG_C".into())
        );
        assert_eq!(
            config.unmet("!CONFIG_B"),
            Some("the kernel has CONFIG_B enabled".into())
        );
    }

    #[test]
    fn an_unreadable_config_is_none_and_read_once() {
        let dir = tempfile::tempdir().unwrap();
        let configs = KernelConfigs::default();
        assert!(configs.get(&dir.path().join("absent")).is_none());
        let path = dir.path().join(".config");
        std::fs::write(&path, "CONFIG_MODULE_SIG_HASH=sha512\n").unwrap();
        let first = configs.get(&path);
        std::fs::write(&path, "CONFIG_MODULE_SIG_HASH=sha1\n").unwrap();
        let second = configs.get(&path);
        assert!(Arc::ptr_eq(&first, &second));
        assert_eq!(
            second
                .as_ref()
                .as_ref()
                .unwrap()
                .signature_hash()
                .as_deref(),
            Some("sha512")
        );
    }
}
