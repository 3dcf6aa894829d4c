//! Settings: our `/etc/dkms-hook.toml`, and the variables users already set for dkms
//! in `/etc/dkms/framework.conf` and `framework.conf.d/*.conf`.
//!
//! Precedence, lowest first: built-in defaults, framework.conf (a bash file, read by
//! bash as dkms reads it, whitelisted variables only), dkms-hook.toml, command line.

use crate::exec::{Command, ExecError};
use crate::paths::Paths;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The variables of framework.conf that dkms honours and so do we.
pub const FRAMEWORK_VARIABLES: [&str; 11] = [
    "dkms_tree",
    "source_tree",
    "install_tree",
    "parallel_jobs",
    "sign_file",
    "mok_signing_key",
    "mok_certificate",
    "compress_gzip_opts",
    "compress_xz_opts",
    "compress_zstd_opts",
    "post_transaction",
];

/// Everything configurable, after merging the files. Paths live in [`Paths`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Parallel make jobs (the shared job budget); default: the number of CPUs.
    pub jobs: Option<usize>,
    /// The kernel's `sign-file`, if not found in the headers.
    pub sign_file: Option<PathBuf>,
    /// Module signing key and certificate; default `<dkms_tree>/mok.key` and `mok.pub`.
    pub signing_key: Option<PathBuf>,
    pub signing_certificate: Option<PathBuf>,
    /// `error`, `warn`, `info`, `debug` or `trace`.
    pub log_level: Option<String>,
    pub compress_gzip_opts: Option<String>,
    pub compress_xz_opts: Option<String>,
    pub compress_zstd_opts: Option<String>,
    /// A command run once after a transaction that changed modules.
    pub post_transaction: Option<String>,
    /// How to regenerate a kernel's initramfs after a headers-only transaction built
    /// modules for it (mkinitcpio's own hook does not run then); `{kernel}` and
    /// `{pkgbase}` are replaced. Default: `mkinitcpio -p {pkgbase}` when present.
    pub initramfs_command: Option<String>,
    /// pacman's database directory, read for package owners; default /var/lib/pacman.
    pub pacman_dbpath: Option<PathBuf>,
    /// Overrides of the trees, as framework.conf's variables of the same names.
    pub dkms_tree: Option<PathBuf>,
    pub source_tree: Option<PathBuf>,
    pub install_tree: Option<PathBuf>,
    /// Build and evaluate module sources and dkms.conf files that a user other than
    /// root owns or can write, when running as root (default: refuse them; see the
    /// `trust` module). For deliberate use, like `--allow-untrusted-sources`.
    pub allow_untrusted_sources: Option<bool>,
    /// Seconds a dkms.conf may take to evaluate before it counts as hung (default 10).
    pub dkms_conf_timeout: Option<u64>,
    /// The user that evaluates dkms.conf files and runs patches, scripts and make when
    /// dkms-hook runs as root (default: `dkms-hook`, from the package's sysusers.d
    /// file, else a transient unprivileged uid; see `sandbox`).
    pub build_user: Option<String>,
    /// Build as root, as upstream dkms does (default false): only for a module that
    /// cannot build confined; `dkms-hook status` warns while it is set.
    pub build_as_root: Option<bool>,
}

#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("{file}: cannot read it: {source}")]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {message}; see the settings reference in docs/ARCHITECTURE.md")]
    Toml { file: PathBuf, message: String },
    #[error("{file}: reading it with bash failed")]
    Framework {
        file: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("{file}: {variable}='{value}' is not a whole number of jobs; use e.g. {variable}=4")]
    BadJobs {
        file: PathBuf,
        variable: String,
        value: String,
    },
}

impl Settings {
    /// Reads dkms-hook.toml; a missing file means defaults.
    pub fn from_toml_file(file: &Path) -> Result<Settings, SettingsError> {
        match std::fs::read_to_string(file) {
            Ok(text) => toml::from_str(&text).map_err(|e| SettingsError::Toml {
                file: file.to_path_buf(),
                message: e.to_string().trim_end().replace('\n', " "),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Settings::default()),
            Err(source) => Err(SettingsError::Read {
                file: file.to_path_buf(),
                source,
            }),
        }
    }

    /// Fills every unset field from `lower` (lower precedence).
    pub fn or(self, lower: Settings) -> Settings {
        Settings {
            jobs: self.jobs.or(lower.jobs),
            sign_file: self.sign_file.or(lower.sign_file),
            signing_key: self.signing_key.or(lower.signing_key),
            signing_certificate: self.signing_certificate.or(lower.signing_certificate),
            log_level: self.log_level.or(lower.log_level),
            compress_gzip_opts: self.compress_gzip_opts.or(lower.compress_gzip_opts),
            compress_xz_opts: self.compress_xz_opts.or(lower.compress_xz_opts),
            compress_zstd_opts: self.compress_zstd_opts.or(lower.compress_zstd_opts),
            post_transaction: self.post_transaction.or(lower.post_transaction),
            initramfs_command: self.initramfs_command.or(lower.initramfs_command),
            pacman_dbpath: self.pacman_dbpath.or(lower.pacman_dbpath),
            dkms_tree: self.dkms_tree.or(lower.dkms_tree),
            source_tree: self.source_tree.or(lower.source_tree),
            install_tree: self.install_tree.or(lower.install_tree),
            allow_untrusted_sources: self
                .allow_untrusted_sources
                .or(lower.allow_untrusted_sources),
            dkms_conf_timeout: self.dkms_conf_timeout.or(lower.dkms_conf_timeout),
            build_user: self.build_user.or(lower.build_user),
            build_as_root: self.build_as_root.or(lower.build_as_root),
        }
    }

    /// Points `paths` at the trees these settings name.
    pub fn apply_trees(&self, paths: &mut Paths) {
        if let Some(t) = &self.dkms_tree {
            paths.dkms_tree = t.clone();
        }
        if let Some(t) = &self.source_tree {
            paths.source_tree = t.clone();
        }
        if let Some(t) = &self.install_tree {
            paths.install_tree = t.clone();
        }
    }
}

/// Reads the whitelisted variables from framework.conf and its drop-ins.
///
/// The files are bash, so bash reads them; but most systems ship them fully
/// commented out, and then no shell is started at all (status stays fork-free).
pub fn read_framework_conf(files: &[PathBuf]) -> Result<Settings, SettingsError> {
    let mut settings = Settings::default();
    for file in files {
        let Ok(text) = std::fs::read(file) else {
            continue;
        };
        if !assigns_anything(&text) {
            continue;
        }
        let script = format!(
            "source \"$1\" >/dev/null 2>&1; for v in {}; do [[ -v $v ]] && printf '%s\\0%s\\0' \"$v\" \"${{!v}}\"; done; true",
            FRAMEWORK_VARIABLES.join(" ")
        );
        let out = Command::new("bash", "read /etc/dkms/framework.conf")
            .args(["--norc", "--noprofile", "-c", &script, "framework"])
            .arg(file.as_os_str())
            .timeout(Duration::from_secs(10))
            .read()
            .map_err(|source| SettingsError::Framework {
                file: file.clone(),
                source,
            })?;
        let mut fields = out.split(|&b| b == 0);
        while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
            let name = String::from_utf8_lossy(name).into_owned();
            let value = String::from_utf8_lossy(value).into_owned();
            set_framework_variable(&mut settings, file, &name, value)?;
        }
    }
    Ok(settings)
}

/// Whether a bash file has any line that could set a variable (not a comment).
fn assigns_anything(text: &[u8]) -> bool {
    text.split(|&b| b == b'\n').any(|line| {
        let line = String::from_utf8_lossy(line);
        let line = line.trim_start();
        !line.is_empty() && !line.starts_with('#')
    })
}

fn set_framework_variable(
    settings: &mut Settings,
    file: &Path,
    name: &str,
    value: String,
) -> Result<(), SettingsError> {
    let path = || Some(PathBuf::from(&value));
    match name {
        "dkms_tree" => settings.dkms_tree = path(),
        "source_tree" => settings.source_tree = path(),
        "install_tree" => settings.install_tree = path(),
        "sign_file" => settings.sign_file = path(),
        "mok_signing_key" => settings.signing_key = path(),
        "mok_certificate" => settings.signing_certificate = path(),
        "compress_gzip_opts" => settings.compress_gzip_opts = Some(value),
        "compress_xz_opts" => settings.compress_xz_opts = Some(value),
        "compress_zstd_opts" => settings.compress_zstd_opts = Some(value),
        "post_transaction" => settings.post_transaction = Some(value),
        "parallel_jobs" => {
            let jobs = value.trim().parse::<usize>().ok().filter(|j| *j > 0);
            settings.jobs = Some(jobs.ok_or_else(|| SettingsError::BadJobs {
                file: file.to_path_buf(),
                variable: name.to_string(),
                value: value.clone(),
            })?);
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commented_out_framework_conf_starts_no_shell() {
        assert!(!assigns_anything(b"# dkms_tree=/x\n\n   # more\n"));
        assert!(assigns_anything(b"# c\nparallel_jobs=3\n"));
    }

    #[test]
    fn framework_conf_variables_are_read_by_bash() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("framework.conf");
        std::fs::write(
            &file,
            "j=5\nparallel_jobs=$j\ndkms_tree=\"/tmp/x y\"\nunrelated=1\n",
        )
        .unwrap();
        let settings = read_framework_conf(&[file]).unwrap();
        assert_eq!(settings.jobs, Some(5));
        assert_eq!(settings.dkms_tree, Some(PathBuf::from("/tmp/x y")));
    }

    #[test]
    fn bad_parallel_jobs_names_the_file_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("framework.conf");
        std::fs::write(&file, "parallel_jobs=many\n").unwrap();
        let err = read_framework_conf(std::slice::from_ref(&file))
            .unwrap_err()
            .to_string();
        assert!(err.contains(&file.display().to_string()), "{err}");
        assert!(err.contains("parallel_jobs='many'"), "{err}");
    }

    #[test]
    fn toml_settings_override_framework_conf() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dkms-hook.toml");
        std::fs::write(&file, "jobs = 7\nlog_level = \"debug\"\n").unwrap();
        let toml = Settings::from_toml_file(&file).unwrap();
        let framework = Settings {
            jobs: Some(2),
            compress_xz_opts: Some("-9".into()),
            ..Settings::default()
        };
        let merged = toml.or(framework);
        assert_eq!(merged.jobs, Some(7));
        assert_eq!(merged.compress_xz_opts.as_deref(), Some("-9"));
    }

    #[test]
    fn unknown_toml_keys_are_errors_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dkms-hook.toml");
        std::fs::write(&file, "job = 7\n").unwrap();
        let err = Settings::from_toml_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("dkms-hook.toml") && err.contains("job"),
            "{err}"
        );
    }
}
