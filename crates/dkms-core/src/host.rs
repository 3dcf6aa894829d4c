//! The machine dkms-hook acts on: its paths, its distribution's install location and
//! its settings, gathered once per command and passed down by shared reference.

use crate::conf::{self, ConfError, DkmsConf, EvalContext};
use crate::fs::{FsError, Root};
use crate::kernel::{KernelConfig, KernelConfigs};
use crate::paths::Paths;
use crate::settings::Settings;
use crate::trust::Gate;
use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

/// Everything the library needs to know about the system, read once.
#[derive(Debug)]
pub struct Host {
    pub paths: Paths,
    pub settings: Settings,
    /// Where os-release says modules go (`/updates/dkms` on Arch and Debian).
    pub dest_location_override: Option<String>,
    /// The etc dir's file names, listed on first use: one directory read instead of
    /// six stats per dkms.conf evaluation. Commands are short-lived, so no staleness.
    etc_entries: OnceLock<Arc<HashSet<OsString>>>,
    /// `--directive NAME=VALUE` pairs, applied to every dkms.conf evaluation.
    pub directives: Vec<(String, String)>,
    /// The environment the binary was started with, passed on to dkms.conf
    /// evaluation, the scripts and make as upstream does (empty unless set).
    pub caller_env: crate::environment::CallerEnv,
    /// Each kernel's config path (auto.conf or .config), looked up once per kernel.
    kernel_config_paths: Mutex<HashMap<String, PathBuf>>,
    /// Each kernel's parsed config, read at most once per command.
    kernel_configs: Arc<KernelConfigs>,
    /// Who may have written the dkms.conf files and sources we run: `Some` refuses
    /// anything a user other than root could change (see `trust`). `Host::new` sets it
    /// unless the settings allow untrusted sources; the binary drops it when it does
    /// not run as root (a user gains nothing) or `--allow-untrusted-sources` is given.
    pub trust: Option<Gate>,
    /// The build cache's directory (`<dkms_tree>/.dkms-hook-cache`, see `cache`);
    /// `None` turns it off (`--no-cache`, `build_cache = false`). The pre-flight's
    /// scratch host keeps the real one, so what it builds is found afterwards.
    pub build_cache: Option<PathBuf>,
    /// Who runs the build steps (dkms.conf evaluation, patches, scripts, make):
    /// `Caller` unless the binary, running as root, chose the build user (see
    /// `sandbox::Builder::for_root`).
    pub builder: crate::sandbox::Builder,
    /// The trees' root handles, opened on first use (once per command): every change
    /// in a tree goes through one (see `fs`).
    dkms_root: OnceLock<Root>,
    install_root: OnceLock<Root>,
    source_root: OnceLock<Root>,
    /// dkms.conf dumps evaluated ahead in one bash by [`Host::prepare_confs`].
    prepared: Arc<conf::Prepared>,
}

impl Host {
    /// Reads os-release once; settings and paths come already merged by the caller.
    pub fn new(paths: Paths, settings: Settings) -> Host {
        let dest_location_override = crate::distro::dest_location_override(&paths.os_release);
        let trust = (!settings.allow_untrusted_sources.unwrap_or(false))
            .then(|| Gate::new(&paths.source_tree, &paths.etc_dir, &paths.dkms_tree));
        let build_cache = (settings.build_cache != Some(false))
            .then(|| crate::tree::layout::build_cache_dir(&paths.dkms_tree));
        Host {
            build_cache,
            caller_env: Default::default(),
            paths,
            settings,
            dest_location_override,
            etc_entries: OnceLock::new(),
            directives: Vec::new(),
            kernel_config_paths: Mutex::new(HashMap::new()),
            kernel_configs: Arc::default(),
            trust,
            builder: crate::sandbox::Builder::Caller,
            dkms_root: OnceLock::new(),
            install_root: OnceLock::new(),
            source_root: OnceLock::new(),
            prepared: Arc::default(),
        }
    }

    /// The DKMS tree's root handle (`/var/lib/dkms`, made when missing). Fails when
    /// it cannot be opened.
    pub fn dkms_root(&self) -> Result<&Root, FsError> {
        cached(&self.dkms_root, || {
            Root::open_or_create(&self.paths.dkms_tree)
        })
    }

    /// The install tree's root handle (`/usr/lib/modules`, never made). Fails when it
    /// cannot be opened.
    pub fn install_root(&self) -> Result<&Root, FsError> {
        cached(&self.install_root, || Root::open(&self.paths.install_tree))
    }

    /// The source tree's root handle (`/usr/src`, made when missing): `add` copies
    /// sources there.
    pub fn source_root(&self) -> Result<&Root, FsError> {
        cached(&self.source_root, || {
            Root::open_or_create(&self.paths.source_tree)
        })
    }

    /// Refuses a module source a user other than root could change (when the host
    /// has a trust gate): its tree, the directories above it, and the DKMS tree
    /// directories holding `<m>/<v>/source`. `source` is the link or the directory.
    pub fn check_source(&self, source: &std::path::Path) -> Result<(), crate::trust::TrustError> {
        let Some(gate) = &self.trust else {
            return Ok(());
        };
        if let Some(parent) = source
            .parent()
            .filter(|p| p.starts_with(&self.paths.dkms_tree))
        {
            gate.check_tree_dirs(parent)?;
        }
        gate.check_source(source)
    }

    /// [`Host::check_source`] for an added module version (its `source` link).
    pub fn check_added_source(
        &self,
        module: &str,
        version: &str,
    ) -> Result<(), crate::trust::TrustError> {
        self.check_source(&self.paths.source_link(module, version))
    }

    /// The administrator's override of `file` (a script's first word, or
    /// `patches/<name>`) in `/etc/dkms/<module>/`, when there is one, checked by the
    /// trust gate like the other files under /etc/dkms that we run. Upstream copies
    /// the override patches over the source's and runs an override script from there.
    pub fn module_override(
        &self,
        module: &str,
        file: &str,
    ) -> Result<Option<PathBuf>, crate::trust::TrustError> {
        let path = self.paths.module_override_dir(module).join(file);
        if file.is_empty() || !path.is_file() {
            return Ok(None);
        }
        if let Some(gate) = &self.trust {
            gate.check_conf_files(std::slice::from_ref(&path))?;
        }
        Ok(Some(path))
    }

    fn etc_entries(&self) -> Arc<HashSet<OsString>> {
        self.etc_entries
            .get_or_init(|| {
                let names = std::fs::read_dir(&self.paths.etc_dir)
                    .map(|entries| entries.filter_map(|e| Some(e.ok()?.file_name())).collect())
                    .unwrap_or_default();
                Arc::new(names)
            })
            .clone()
    }

    /// The config file of `kernel`'s headers (see [`Paths::kernel_config`]).
    fn kernel_config_path(&self, kernel: &str) -> PathBuf {
        let mut configs = self
            .kernel_config_paths
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        configs
            .entry(kernel.to_string())
            .or_insert_with(|| self.paths.kernel_config(kernel))
            .clone()
    }

    /// `kernel`'s parsed config (`None` inside when its headers have none), read once
    /// per command however many builds and evaluations ask.
    pub fn kernel_config(&self, kernel: &str) -> Arc<Option<KernelConfig>> {
        self.kernel_configs.get(&self.kernel_config_path(kernel))
    }

    /// The variables a dkms.conf of `module`/`version` sees when evaluated for a kernel.
    pub fn eval_context(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> EvalContext {
        EvalContext {
            kernelver: kernel.to_string(),
            arch: arch.to_string(),
            kernel_source_dir: self.paths.kernel_source_dir(kernel),
            kernel_config: self.kernel_config_path(kernel),
            kernel_configs: self.kernel_configs.clone(),
            dkms_tree: self.paths.dkms_tree.clone(),
            source_tree: self.paths.source_tree.clone(),
            install_tree: self.paths.install_tree.clone(),
            module: module.to_string(),
            module_version: version.to_string(),
            etc_dir: self.paths.etc_dir.clone(),
            dest_location_override: self.dest_location_override.clone(),
            timeout: self
                .settings
                .dkms_conf_timeout
                .map_or(conf::EVAL_TIMEOUT, std::time::Duration::from_secs),
            etc_entries: Some(self.etc_entries()),
            directives: self.directives.clone(),
            caller_env: self.caller_env.clone(),
            scratch_dir: self.paths.temp_dir.clone(),
            trust: self.trust.clone(),
            prepared: Some(self.prepared.clone()),
            builder: self.builder.clone(),
        }
    }

    /// pacman's database directory: the `pacman_dbpath` setting, or pacman's default.
    pub fn pacman_dbpath(&self) -> std::path::PathBuf {
        self.settings
            .pacman_dbpath
            .clone()
            .unwrap_or_else(|| crate::pkgdb::DEFAULT_DBPATH.into())
    }

    /// Evaluates ahead, in one bash process, the dkms.conf files of these builds
    /// (module, version, kernel, arch) that need bash, so that the
    /// [`Host::read_conf`] calls that follow start none, using and filling the conf
    /// cache in the DKMS tree (see `conf::cache`: for status notes only, so only
    /// status calls this). What it could not evaluate is evaluated alone later, with
    /// the same result and error as without it.
    pub fn prepare_confs(&self, builds: &[(&str, &str, &str, &str)]) {
        if builds.is_empty() {
            // Nothing to read, and no reason to make the DKMS tree for the cache.
            return;
        }
        let requests: Vec<_> = builds
            .iter()
            .map(|&(module, version, kernel, arch)| {
                (
                    self.conf_path(module, version),
                    self.eval_context(module, version, kernel, arch),
                )
            })
            .collect();
        self.prepared.evaluate(&requests, self.dkms_root().ok());
    }

    fn conf_path(&self, module: &str, version: &str) -> PathBuf {
        self.paths
            .version_dir(module, version)
            .join("source/dkms.conf")
    }

    /// Evaluates the dkms.conf of an added module version for one kernel.
    pub fn read_conf(
        &self,
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> Result<DkmsConf, ConfError> {
        let file = self.conf_path(module, version);
        conf::evaluate(&file, &self.eval_context(module, version, kernel, arch))
    }
}

/// The handle in `cell`, opened by `open` the first time. Two threads racing both
/// open one; the second is dropped.
fn cached(
    cell: &OnceLock<Root>,
    open: impl FnOnce() -> Result<Root, FsError>,
) -> Result<&Root, FsError> {
    if let Some(root) = cell.get() {
        return Ok(root);
    }
    let root = open()?;
    Ok(cell.get_or_init(|| root))
}
