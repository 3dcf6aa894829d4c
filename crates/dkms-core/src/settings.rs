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
pub const FRAMEWORK_VARIABLES: [&str; 15] = [
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
    "tmp_location",
    "symlink_modules",
    "try_sign_modules",
    "build_environment",
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
    /// framework.conf's `tmp_location`: scratch space (tarball work dirs); default the
    /// caller's `TMPDIR`, else `/tmp`. Like upstream, never exported as TMPDIR.
    pub tmp_location: Option<PathBuf>,
    /// framework.conf's `symlink_modules` (any non-empty value): install modules as
    /// absolute symlinks into the DKMS tree instead of copies.
    pub symlink_modules: Option<bool>,
    /// framework.conf's `try_sign_modules`: `true` always signs, `false` never, and
    /// anything else signs unless running in a chroot (upstream's default).
    pub try_sign_modules: Option<String>,
    /// framework.conf's `build_environment`: a bash file whose exported variables
    /// reach the build (PRE_BUILD, make, POST_BUILD).
    pub build_environment: Option<PathBuf>,
    /// DKMS modules (or kernel modules they build) the machine needs to boot: when one
    /// fails to build for an incoming kernel, the pre-flight hook aborts the pacman
    /// transaction. Added to the detected ones (root file system, mkinitcpio MODULES).
    pub boot_critical: Option<Vec<String>>,
    /// Let a kernel upgrade proceed although a boot-critical module failed to build
    /// for it (a warning instead of an abort); also `DKMS_HOOK_ALLOW_BOOT_CRITICAL_FAILURE=1`.
    pub allow_boot_critical_failure: Option<bool>,
    /// Build for incoming kernels before pacman installs them (default true).
    pub preflight: Option<bool>,
    /// pacman's package cache directories, searched for incoming headers packages;
    /// default: pacman's command line `--cachedir`, else CacheDir of pacman.conf,
    /// else /var/cache/pacman/pkg.
    pub pacman_cachedir: Option<Vec<PathBuf>>,
    /// mkinitcpio's configuration (default /etc/mkinitcpio.conf; its `.d` drop-ins too).
    pub mkinitcpio_conf: Option<PathBuf>,
    /// Keep builds and reuse them instead of compiling again (default true; the
    /// command line's `--no-cache` turns it off for one run).
    pub build_cache: Option<bool>,
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

/// A key of dkms-hook.toml that is not a setting: a typo or a setting of another
/// version. Warned about, never fatal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownKey {
    pub file: PathBuf,
    /// 1-based; 0 when the key cannot be found on a line of its own (a quoted key).
    pub line: usize,
    pub key: String,
}

impl std::fmt::Display for UnknownKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}: unknown setting '{}' ignored; the settings are the fields of `Settings` in crates/dkms-core/src/settings.rs",
            self.file.display(),
            self.line,
            self.key
        )
    }
}

/// The keys dkms-hook.toml may set: the fields of [`Settings`], read from its serde
/// form so that a new field needs no second list.
fn known_keys() -> std::collections::BTreeSet<String> {
    match serde_json::to_value(Settings::default()) {
        Ok(serde_json::Value::Object(fields)) => fields.keys().cloned().collect(),
        _ => std::collections::BTreeSet::new(),
    }
}

/// The line where top-level `key` is assigned (`key = ...`, `"key" = ...`, or the
/// header `[key]` of a table), for the warning.
fn line_of_key(text: &str, key: &str) -> usize {
    let quoted = format!("\"{key}\"");
    let table = format!("[{key}]");
    text.lines()
        .position(|line| {
            let line = line.trim_start();
            line.starts_with(&table)
                || [key, quoted.as_str()].iter().any(|k| {
                    line.strip_prefix(k)
                        .is_some_and(|rest| rest.trim_start().starts_with(['=', '.']))
                })
        })
        .map_or(0, |i| i + 1)
}

impl Settings {
    /// Reads dkms-hook.toml; a missing file means defaults.
    ///
    /// A key we do not know is not an error, as pacman treats an unrecognized
    /// directive in pacman.conf: it comes back as an [`UnknownKey`] for the caller to
    /// warn about and the rest of the file still applies, so one typo cannot disable
    /// every module build of a kernel upgrade. Fails when the file cannot be read or is
    /// not TOML, or when a known key has a value of the wrong type.
    pub fn from_toml_file(file: &Path) -> Result<(Settings, Vec<UnknownKey>), SettingsError> {
        let text = match std::fs::read_to_string(file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((Settings::default(), Vec::new()))
            }
            Err(source) => {
                return Err(SettingsError::Read {
                    file: file.to_path_buf(),
                    source,
                })
            }
        };
        let toml_error = |e: &dyn std::fmt::Display| SettingsError::Toml {
            file: file.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        };
        let mut table: toml::Table = text.parse().map_err(|e| toml_error(&e))?;
        let known = known_keys();
        let mut unknown: Vec<UnknownKey> = table
            .keys()
            .filter(|key| !known.contains(key.as_str()))
            .map(|key| UnknownKey {
                file: file.to_path_buf(),
                line: line_of_key(&text, key),
                key: key.clone(),
            })
            .collect();
        unknown.sort_by_key(|u| u.line);
        for u in &unknown {
            table.remove(&u.key);
        }
        let settings = table.try_into().map_err(|e| toml_error(&e))?;
        Ok((settings, unknown))
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
            tmp_location: self.tmp_location.or(lower.tmp_location),
            symlink_modules: self.symlink_modules.or(lower.symlink_modules),
            try_sign_modules: self.try_sign_modules.or(lower.try_sign_modules),
            build_environment: self.build_environment.or(lower.build_environment),
            boot_critical: self.boot_critical.or(lower.boot_critical),
            allow_boot_critical_failure: self
                .allow_boot_critical_failure
                .or(lower.allow_boot_critical_failure),
            preflight: self.preflight.or(lower.preflight),
            pacman_cachedir: self.pacman_cachedir.or(lower.pacman_cachedir),
            mkinitcpio_conf: self.mkinitcpio_conf.or(lower.mkinitcpio_conf),
            build_cache: self.build_cache.or(lower.build_cache),
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
        if let Some(t) = &self.tmp_location {
            paths.temp_dir = t.clone();
        }
    }
}

/// Reads the whitelisted variables from framework.conf and its drop-ins.
///
/// As upstream: the files are sourced in order, each in a subshell of one bash that
/// carries the recognised variables from file to file (a drop-in can use an earlier
/// file's `parallel_jobs`), while any other variable a file sets is gone for the
/// next. Most systems ship the files fully commented out, and then no shell is
/// started at all (status stays fork-free). Each value is attributed to the last
/// file that changed it, for the error message when it is bad.
pub fn read_framework_conf(files: &[PathBuf]) -> Result<Settings, SettingsError> {
    read_framework_conf_for(files, None)
}

/// [`read_framework_conf`] with `$kernelver` set to `kernelver` while the files are
/// sourced: upstream re-reads `post_transaction` and the signing variables with the
/// command's (first) kernel in scope, and run_test.sh's post_transaction names it.
pub fn read_framework_conf_for(
    files: &[PathBuf],
    kernelver: Option<&str>,
) -> Result<Settings, SettingsError> {
    let mut settings = Settings::default();
    let live: Vec<&PathBuf> = files
        .iter()
        .filter(|file| std::fs::read(file).is_ok_and(|text| assigns_anything(&text)))
        .collect();
    let Some(first) = live.first() else {
        return Ok(settings);
    };
    // Per file: `FILE\0<path>\0` then `NAME\0VALUE\0` for every recognised
    // variable the file set or changed.
    let script = format!(
        r#"vars="{vars}"; declare -A before
for f in "$@"; do
  eval "$( (source "$f" >/dev/null 2>&1 </dev/null; for v in $vars; do [[ -v $v ]] && printf '%s=%q\n' "$v" "${{!v}}"; done) )"
  printf 'FILE\0%s\0' "$f"
  for v in $vars; do
    if [[ -v $v && ( ! -v before[$v] || "${{before[$v]}}" != "${{!v}}" ) ]]; then
      printf '%s\0%s\0' "$v" "${{!v}}"; before[$v]=${{!v}}
    fi
  done
done
true"#,
        vars = FRAMEWORK_VARIABLES.join(" ")
    );
    let mut bash = Command::new("bash", "read /etc/dkms/framework.conf")
        .args(["--norc", "--noprofile", "-c", &script, "framework"])
        .args(live.iter().map(|f| f.as_os_str()));
    if let Some(kernelver) = kernelver {
        bash = bash.env("kernelver", kernelver);
    }
    let out = bash
        .timeout(Duration::from_secs(10))
        .read()
        .map_err(|source| SettingsError::Framework {
            file: (*first).clone(),
            source,
        })?;
    let mut file: PathBuf = (*first).clone();
    let mut fields = out.split(|&b| b == 0);
    while let (Some(name), Some(value)) = (fields.next(), fields.next()) {
        let name = String::from_utf8_lossy(name).into_owned();
        let value = String::from_utf8_lossy(value).into_owned();
        if name == "FILE" {
            file = PathBuf::from(value);
            continue;
        }
        set_framework_variable(&mut settings, &file, &name, value)?;
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
        "tmp_location" => settings.tmp_location = path(),
        // Upstream tests it with `[[ $x ]]`: any non-empty value is on.
        "symlink_modules" => settings.symlink_modules = Some(!value.is_empty()),
        "try_sign_modules" => settings.try_sign_modules = Some(value),
        "build_environment" => settings.build_environment = path(),
        // `0` (and empty) is upstream's "no limit" (`make -j`): jobs = 0.
        "parallel_jobs" if value.trim().is_empty() => settings.jobs = Some(0),
        "parallel_jobs" => {
            let jobs = value.trim().parse::<usize>().ok();
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
    fn a_later_drop_in_sees_earlier_recognised_values_but_not_helper_variables() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("framework.conf");
        let first = dir.path().join("10-a.conf");
        let second = dir.path().join("20-b.conf");
        std::fs::write(&main, "parallel_jobs=3\nhelper=/opt\n").unwrap();
        std::fs::write(&first, "parallel_jobs=$((parallel_jobs * 2))\n").unwrap();
        std::fs::write(
            &second,
            "tmp_location=\"${helper}/tmp\"\nverbose=1\ntry_sign_modules=false\n",
        )
        .unwrap();
        let settings = read_framework_conf(&[main, first, second]).unwrap();
        assert_eq!(settings.jobs, Some(6));
        assert_eq!(settings.tmp_location, Some(PathBuf::from("/tmp")));
        assert_eq!(settings.try_sign_modules.as_deref(), Some("false"));
    }

    #[test]
    fn post_transaction_sees_the_commands_kernel_as_kernelver() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("framework.conf");
        std::fs::write(
            &file,
            "post_transaction=\"echo Kernel version is $kernelver\"\n",
        )
        .unwrap();
        let settings = read_framework_conf_for(&[file], Some("6.1.0-test")).unwrap();
        assert_eq!(
            settings.post_transaction.as_deref(),
            Some("echo Kernel version is 6.1.0-test")
        );
    }

    #[test]
    fn parallel_jobs_zero_means_no_limit_as_upstream() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("framework.conf");
        std::fs::write(&file, "parallel_jobs=0\n").unwrap();
        let settings = read_framework_conf(&[file]).unwrap();
        assert_eq!(settings.jobs, Some(0));
    }

    #[test]
    fn bad_parallel_jobs_names_the_file_and_variable() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("framework.conf");
        std::fs::write(&main, "parallel_jobs=2\n").unwrap();
        let file = dir.path().join("50-bad.conf");
        std::fs::write(&file, "parallel_jobs=many\n").unwrap();
        let err = read_framework_conf(&[main, file.clone()])
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
        let (toml, _) = Settings::from_toml_file(&file).unwrap();
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
    fn an_unknown_toml_key_is_a_warning_naming_file_line_and_key_and_the_rest_applies() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dkms-hook.toml");
        std::fs::write(
            &file,
            "# jobs\nlog_level = \"debug\"\n  job = 7\n[extra]\nx = 1\n",
        )
        .unwrap();
        let (settings, unknown) = Settings::from_toml_file(&file).unwrap();
        assert_eq!(settings.log_level.as_deref(), Some("debug"));
        let lines: Vec<(usize, &str)> = unknown.iter().map(|u| (u.line, u.key.as_str())).collect();
        assert_eq!(lines, [(3, "job"), (4, "extra")]);
        let message = unknown[0].to_string();
        assert!(
            message.starts_with(&format!("{}:3: unknown setting 'job'", file.display())),
            "{message}"
        );
    }

    #[test]
    fn a_known_toml_key_of_the_wrong_type_is_still_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("dkms-hook.toml");
        std::fs::write(&file, "jobs = \"seven\"\n").unwrap();
        let err = Settings::from_toml_file(&file).unwrap_err().to_string();
        assert!(
            err.contains("dkms-hook.toml") && err.contains("jobs"),
            "{err}"
        );
    }
}
