//! dkms.conf: evaluated by bash exactly as dkms sources it, then read back into a typed
//! [`DkmsConf`] and validated with upstream's rules.
//!
//! A dkms.conf is a bash script (loops fill arrays, `if` picks flags per kernel), so
//! only bash can evaluate it faithfully. [`evaluate`] runs one bash child that sources
//! the file and its override files under `/etc/dkms` and prints every directive back
//! NUL-separated (or takes that dump from a batch that evaluated many files in one
//! bash, see [`Prepared`]); everything after that is pure Rust ([`parse_dump`], [`validate`]),
//! which is what the unit tests exercise. Functions defined by a dkms.conf are never
//! read back, and values are bytes until a directive is known to need text.

mod batch;
mod cache;
mod eval;
mod fast;
mod problem;
mod raw;
mod validate;

pub use batch::Prepared;
pub use eval::{evaluate_raw, evaluate_with_bash};
pub use problem::{Problem, ProblemList, UpstreamRule};
pub use raw::{parse_dump, RawConf};
pub use validate::validate;

use crate::exec::ExecError;
use crate::name::{ModuleName, ModuleVersion};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Every variable dkms reads back from a dkms.conf (eval.sh lists the same names).
pub const DIRECTIVES: [&str; 33] = [
    "PACKAGE_NAME",
    "PACKAGE_VERSION",
    "BUILT_MODULE_NAME",
    "BUILT_MODULE_LOCATION",
    "DEST_MODULE_NAME",
    "DEST_MODULE_LOCATION",
    "STRIP",
    "MAKE",
    "MAKE_MATCH",
    "PATCH",
    "PATCH_MATCH",
    "PRE_BUILD",
    "POST_BUILD",
    "POST_ADD",
    "PRE_INSTALL",
    "POST_INSTALL",
    "POST_REMOVE",
    "AUTOINSTALL",
    "BUILD_DEPENDS",
    "BUILD_DEPENDS_REBUILD",
    "NO_WEAK_MODULES",
    "BUILD_EXCLUSIVE_KERNEL",
    "BUILD_EXCLUSIVE_KERNEL_MIN",
    "BUILD_EXCLUSIVE_KERNEL_MAX",
    "BUILD_EXCLUSIVE_ARCH",
    "BUILD_EXCLUSIVE_CONFIG",
    "CLEAN",
    "REMAKE_INITRD",
    "MODULES_CONF",
    "MODULES_CONF_OBSOLETES",
    "MODULES_CONF_ALIAS_TYPE",
    "MODULES_CONF_OBSOLETE_ONLY",
    "OBSOLETE_BY",
];

/// How long a dkms.conf may take to evaluate before it is considered hung.
pub const EVAL_TIMEOUT: Duration = Duration::from_secs(10);

/// What dkms.conf sees as its variables: the kernel it is evaluated for and the trees.
#[derive(Debug, Clone)]
pub struct EvalContext {
    pub kernelver: String,
    pub arch: String,
    pub kernel_source_dir: PathBuf,
    /// The kernel config file (bash sees it; BUILD_EXCLUSIVE_CONFIG reads it parsed).
    pub kernel_config: PathBuf,
    /// Where the parsed config comes from, read only when a dkms.conf has
    /// BUILD_EXCLUSIVE_CONFIG and shared across evaluations.
    pub kernel_configs: std::sync::Arc<crate::kernel::KernelConfigs>,
    pub dkms_tree: PathBuf,
    pub source_tree: PathBuf,
    pub install_tree: PathBuf,
    /// The module name and version dkms knows the source by (from the tree or the
    /// command line); used to find the override files.
    pub module: String,
    pub module_version: String,
    /// Directory holding the override files (`/etc/dkms`).
    pub etc_dir: PathBuf,
    /// What os-release says DEST_MODULE_LOCATION must become (`/updates/dkms` on Arch
    /// and Debian), if anything.
    pub dest_location_override: Option<String>,
    /// How long evaluation may take before the dkms.conf is considered hung.
    pub timeout: Duration,
    /// The names in `etc_dir`, when the caller already listed it: saves a stat per
    /// candidate override file on every evaluation.
    pub etc_entries: Option<std::sync::Arc<std::collections::HashSet<std::ffi::OsString>>>,
    /// `--directive NAME=VALUE`: set after every file is sourced, as upstream does.
    pub directives: Vec<(String, String)>,
    /// The caller's environment, which bash evaluates the files in (zfs's
    /// `${CROSS_COMPILE}` and `${ICP_ROOT}` are read there).
    pub caller_env: crate::environment::CallerEnv,
    /// Where bash gets a fresh empty working directory (see [`Paths::temp_dir`](crate::Paths)).
    pub scratch_dir: PathBuf,
    /// When set, bash sources nothing this gate refuses (files a user other than root
    /// could change). The bash-free path only parses, so it needs no gate.
    pub trust: Option<crate::trust::Gate>,
    /// Results of the command's batch evaluation (see [`Prepared`]), asked before a
    /// bash is started for this file alone.
    pub prepared: Option<std::sync::Arc<Prepared>>,
    /// Who runs bash: as root, the unprivileged build user in a jail whose only
    /// writable place is the scratch directory (see `sandbox`).
    pub builder: crate::sandbox::Builder,
}

impl EvalContext {
    /// The files dkms sources, in order of increasing specificity: the dkms.conf, then
    /// the override files that exist under the etc dir.
    pub fn conf_files(&self, conf: &Path) -> Vec<PathBuf> {
        let (m, v, k, a) = (
            &self.module,
            &self.module_version,
            &self.kernelver,
            &self.arch,
        );
        let mut files = vec![conf.to_path_buf()];
        for name in [
            format!("{m}.conf"),
            format!("{m}-{v}.conf"),
            format!("{m}-{v}-{k}.conf"),
            format!("{m}-{v}-{k}-{a}.conf"),
            format!("{m}--{k}.conf"),
            format!("{m}--{k}-{a}.conf"),
        ] {
            let present = match &self.etc_entries {
                Some(entries) => entries.contains(std::ffi::OsStr::new(&name)),
                None => self.etc_dir.join(&name).exists(),
            };
            if present {
                files.push(self.etc_dir.join(name));
            }
        }
        files
    }
}

/// Why a dkms.conf could not be used. Every variant names the file; most name the
/// directive and say how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum ConfError {
    #[error("{file}: cannot read it: {source}")]
    Unreadable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: evaluating it with bash failed")]
    Eval {
        file: PathBuf,
        #[source]
        source: ExecError,
    },
    #[error("{file}: evaluating it took longer than {} seconds (a loop, or a command waiting for input?); a dkms.conf must only set variables", .timeout.as_secs())]
    Hung { file: PathBuf, timeout: Duration },
    /// As root, dkms.conf files are evaluated by the unprivileged build user, who
    /// must be able to open them (a tree under a 0700 directory is not reachable).
    #[error("{file}: cannot be opened by the user that evaluates it ({reason}); as root that is the unprivileged build user (`dkms-hook status` names it): make the file readable and every directory above it searchable by other users (chmod o+r, o+x), or set build_as_root = true in dkms-hook.toml")]
    UnreadableByBuilder { file: PathBuf, reason: String },
    #[error("{file}: the file exited the shell while being read; a dkms.conf must only set variables (remove the `exit`)")]
    Exited { file: PathBuf },
    /// Not a `#[source]`: plans and summaries keep only the message, and the reason
    /// is the whole point.
    #[error("{file}: not evaluated: {reason}")]
    Untrusted {
        file: PathBuf,
        reason: Box<crate::trust::TrustError>,
    },
    #[error("{file}: bash could not parse it: {message}")]
    Syntax { file: PathBuf, message: String },
    /// Every rule the file breaks, in upstream's order (never empty).
    #[error("{file}: {}", ProblemList(.problems))]
    Invalid {
        file: PathBuf,
        problems: Vec<Problem>,
    },
}

impl ConfError {
    fn directive(
        file: &Path,
        directive: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfError::Invalid {
            file: file.to_path_buf(),
            problems: vec![Problem::new(directive, problem, fix)],
        }
    }
}

/// One kernel module a package builds: where make leaves it and where it is installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ModuleSpec {
    pub built_name: String,
    /// Directory under the build dir, empty or ending in `/`.
    pub built_location: String,
    pub dest_name: String,
    /// Directory under `<install_tree>/<kernel>`, after the distribution override.
    pub dest_location: String,
    /// DEST_MODULE_LOCATION as dkms.conf wrote it; status also looks for the module
    /// there, as upstream does.
    pub declared_dest_location: String,
    pub strip: bool,
    /// Why BUILD_EXCLUSIVE_* excludes this module on the evaluated kernel, if it does.
    pub excluded: Option<String>,
}

/// A deprecated directive that was set: accepted, and reported as a warning.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Deprecation {
    pub directive: String,
    pub advice: String,
}

/// A dkms.conf evaluated for one kernel and architecture, validated.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DkmsConf {
    pub file: PathBuf,
    pub package_name: ModuleName,
    pub package_version: ModuleVersion,
    pub modules: Vec<ModuleSpec>,
    /// The MAKE command MAKE_MATCH selects for this kernel; `None` means the default
    /// `make -C <kernel_source_dir> M=<build dir>`.
    pub make_command: Option<String>,
    /// PATCH entries that apply to this kernel (after PATCH_MATCH), in order.
    pub patches: Vec<String>,
    pub pre_build: Option<String>,
    pub post_build: Option<String>,
    pub post_add: Option<String>,
    pub pre_install: Option<String>,
    pub post_install: Option<String>,
    pub post_remove: Option<String>,
    pub autoinstall: bool,
    pub build_depends: Vec<String>,
    pub build_depends_rebuild: bool,
    pub no_weak_modules: bool,
    /// Set when BUILD_EXCLUSIVE_* directives exist and exclude every module on this
    /// kernel: dkms then skips the build (exit 77) rather than failing it.
    pub excluded: Option<String>,
    pub deprecations: Vec<Deprecation>,
    /// What sourcing the files printed on stderr (command not found and the like).
    pub warnings: Vec<String>,
}

/// Evaluates `conf` (and the override files in `ctx.etc_dir`) for one kernel.
///
/// Fails when bash cannot run, the file is unreadable, hangs past [`EVAL_TIMEOUT`],
/// exits while being sourced, has a syntax error, or breaks one of upstream's rules.
pub fn evaluate(conf: &Path, ctx: &EvalContext) -> Result<DkmsConf, ConfError> {
    let raw = evaluate_raw(conf, ctx)?;
    // Read only when a BUILD_EXCLUSIVE_CONFIG asks: a kernel config is 10,000 lines.
    let config = raw
        .mentions("BUILD_EXCLUSIVE_CONFIG")
        .then(|| ctx.kernel_configs.get(&ctx.kernel_config));
    validate(&raw, ctx, config.as_deref().and_then(Option::as_ref))
}

#[cfg(test)]
mod tests;
