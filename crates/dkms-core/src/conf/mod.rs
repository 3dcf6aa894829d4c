//! dkms.conf: evaluated by bash exactly as dkms sources it, then read back into a typed
//! [`DkmsConf`] and validated with upstream's rules.
//!
//! A dkms.conf is a bash script (loops fill arrays, `if` picks flags per kernel), so
//! only bash can evaluate it faithfully. [`evaluate`] runs one bash child that sources
//! the file and its override files under `/etc/dkms` and prints every directive back
//! NUL-separated; everything after that is pure Rust ([`parse_dump`], [`validate`]),
//! which is what the unit tests exercise. Functions defined by a dkms.conf are never
//! read back, and values are bytes until a directive is known to need text.

mod fast;
mod raw;

pub use raw::{parse_dump, RawConf};

use crate::exec::{Command, ExecError};
use crate::kernel::KernelConfig;
use crate::version::ver_cmp;
use serde::Serialize;
use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::time::Duration;

const EVAL_SCRIPT: &str = include_str!("eval.sh");

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
    /// Where bash gets a fresh empty working directory (see [`Paths::temp_dir`](crate::Paths)).
    pub scratch_dir: PathBuf,
    /// When set, bash sources nothing this gate refuses (files a user other than root
    /// could change). The bash-free path only parses, so it needs no gate.
    pub trust: Option<crate::trust::Gate>,
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
    #[error("{file}: {directive}: {problem}; {fix}")]
    Directive {
        file: PathBuf,
        directive: String,
        problem: String,
        fix: String,
    },
}

impl ConfError {
    fn directive(
        file: &Path,
        directive: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        ConfError::Directive {
            file: file.to_path_buf(),
            directive: directive.into(),
            problem: problem.into(),
            fix: fix.into(),
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
    pub package_name: String,
    pub package_version: String,
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

/// Evaluates the dkms.conf and its override files: without a shell when the file is
/// plain assignments (see `fast`), else through bash.
pub fn evaluate_raw(conf: &Path, ctx: &EvalContext) -> Result<RawConf, ConfError> {
    let text = std::fs::read(conf).map_err(|source| ConfError::Unreadable {
        file: conf.to_path_buf(),
        source,
    })?;
    let mut raw = match fast::evaluate(conf, &text, ctx) {
        Some(raw) => raw,
        None => evaluate_with_bash(conf, ctx)?,
    };
    apply_directives(&mut raw, ctx);
    Ok(raw)
}

/// `--directive NAME=VALUE` replaces the directive's scalar value (element 0) after
/// sourcing, re-matching it when it is one of the regex directives.
fn apply_directives(raw: &mut RawConf, ctx: &EvalContext) {
    for (name, value) in &ctx.directives {
        raw.values
            .entry(name.clone())
            .or_default()
            .insert(0, value.clone().into_bytes());
        let subject = match name.as_str() {
            "MAKE_MATCH" | "PATCH_MATCH" | "BUILD_EXCLUSIVE_KERNEL" => &ctx.kernelver,
            "BUILD_EXCLUSIVE_ARCH" => &ctx.arch,
            _ => continue,
        };
        raw.matches.remove(&(name.clone(), 0));
        if !value.is_empty() {
            if let Some(rc) = fast::ere_match(value.as_bytes(), subject) {
                raw.matches.insert((name.clone(), 0), rc);
            }
        }
    }
}

/// The general path: bash sources the files (see eval.sh).
///
/// Refuses (before starting bash) files the context's trust gate does not pass.
pub fn evaluate_with_bash(conf: &Path, ctx: &EvalContext) -> Result<RawConf, ConfError> {
    let files = ctx.conf_files(conf);
    if let Some(gate) = &ctx.trust {
        gate.check_conf_files(&files)
            .map_err(|reason| ConfError::Untrusted {
                file: conf.to_path_buf(),
                reason: Box::new(reason),
            })?;
    }
    let marker = marker();
    // A dkms.conf is a script: what it writes to relative paths lands in a directory
    // of its own that is removed afterwards, not in the source (upstream uses the
    // caller's working directory, `/` in a pacman hook). Without one, `/`.
    let scratch = tempfile::Builder::new()
        .prefix("dkms-hook-eval.")
        .tempdir_in(&ctx.scratch_dir)
        .ok();
    let cwd = scratch.as_ref().map_or(Path::new("/"), |d| d.path());
    let command = Command::new("bash", "evaluate dkms.conf files")
        .args(["--norc", "--noprofile", "-c", EVAL_SCRIPT, "dkms-eval"])
        .arg(&marker)
        .arg(&ctx.kernelver)
        .arg(&ctx.arch)
        .arg(ctx.kernel_source_dir.as_os_str())
        .arg(ctx.kernel_config.as_os_str())
        .arg(ctx.dkms_tree.as_os_str())
        .arg(ctx.source_tree.as_os_str())
        .arg(ctx.install_tree.as_os_str())
        .arg(&ctx.module)
        .arg(&ctx.module_version)
        .arg("--")
        .args(&files)
        .dir(cwd)
        .timeout(ctx.timeout);
    let output = command
        .output_with_stdin(&[])
        .map_err(|source| match source {
            ExecError::Timeout { timeout, .. } => ConfError::Hung {
                file: conf.to_path_buf(),
                timeout,
            },
            source => ConfError::Eval {
                file: conf.to_path_buf(),
                source,
            },
        })?;
    let mut raw = parse_dump(&output.stdout);
    raw.file = conf.to_path_buf();
    if let Some(file) = raw.exited.first() {
        return Err(ConfError::Exited { file: file.clone() });
    }
    for (file, text) in &raw.stderr {
        if let Some(message) = syntax_error(text) {
            return Err(ConfError::Syntax {
                file: file.clone(),
                message,
            });
        }
    }
    Ok(raw)
}

/// A marker that a dkms.conf will not print by accident.
fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\u{1}dkms-hook-{}-{nanos}\u{1}", std::process::id())
}

/// Picks bash's syntax error out of what sourcing printed, with its line number.
fn syntax_error(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.contains("syntax error") || l.contains("unexpected end of file"))?;
    // bash prints "<file>: line N: syntax error ..."; keep from "line N" on.
    let start = line.find("line ").unwrap_or(0);
    Some(line[start..].trim().to_string())
}

/// Turns the directives read back from bash into a [`DkmsConf`], applying upstream's
/// rules. Pure: everything it needs is in `raw`, `ctx` and the kernel config (`None`
/// when the headers have none, or when no BUILD_EXCLUSIVE_CONFIG needs it; upstream
/// then skips that check).
pub fn validate(
    raw: &RawConf,
    ctx: &EvalContext,
    kernel_config: Option<&KernelConfig>,
) -> Result<DkmsConf, ConfError> {
    let file = raw.file.as_path();
    let text = |name: &str| raw.text(name, 0, file);
    let package_name = text("PACKAGE_NAME")?.unwrap_or_default();
    if package_name.is_empty() {
        return Err(ConfError::directive(
            file,
            "PACKAGE_NAME",
            "is missing",
            "add PACKAGE_NAME=\"<module name>\"",
        ));
    }
    check_identifier(file, "PACKAGE_NAME", &package_name)?;
    let package_version = text("PACKAGE_VERSION")?.unwrap_or_default();
    if package_version.is_empty() {
        return Err(ConfError::directive(
            file,
            "PACKAGE_VERSION",
            "is missing",
            "add PACKAGE_VERSION=\"<version>\"",
        ));
    }
    check_identifier(file, "PACKAGE_VERSION", &package_version)?;

    let modules = module_specs(raw, ctx, &package_name)?;

    let autoinstall = yes_no(raw, "AUTOINSTALL")?;
    let build_depends_rebuild = yes_no(raw, "BUILD_DEPENDS_REBUILD")?;
    let no_weak_modules = yes_no(raw, "NO_WEAK_MODULES")?;

    let make_command = select_make(raw)?;
    let patches = select_patches(raw)?;
    for patch in &patches {
        check_relative(
            file,
            "PATCH",
            patch,
            "name a file in the source's patches/ directory",
        )?;
    }

    let mut build_depends = Vec::new();
    for (_, dep) in raw.elements("BUILD_DEPENDS") {
        let dep = raw.to_text("BUILD_DEPENDS", dep, file)?;
        for name in dep.split_whitespace() {
            if !build_depends.iter().any(|d: &String| d == name) {
                build_depends.push(name.to_string());
            }
        }
    }

    let deprecations = deprecations(raw);
    let (modules, excluded) = apply_build_exclusive(raw, ctx, kernel_config, modules)?;

    Ok(DkmsConf {
        file: file.to_path_buf(),
        package_name,
        package_version,
        modules,
        make_command,
        patches,
        pre_build: non_empty(text("PRE_BUILD")?),
        post_build: non_empty(text("POST_BUILD")?),
        post_add: non_empty(text("POST_ADD")?),
        pre_install: non_empty(text("PRE_INSTALL")?),
        post_install: non_empty(text("POST_INSTALL")?),
        post_remove: non_empty(text("POST_REMOVE")?),
        autoinstall,
        build_depends,
        build_depends_rebuild,
        no_weak_modules,
        excluded,
        deprecations,
        warnings: raw
            .stderr
            .iter()
            .map(|(f, t)| format!("{}: {}", f.display(), t.trim_end()))
            .collect(),
    })
}

fn non_empty(value: Option<String>) -> Option<String> {
    value.filter(|v| !v.is_empty())
}

/// Names and versions become path components and status fields: no separators,
/// whitespace or control characters.
fn check_identifier(file: &Path, directive: &str, value: &str) -> Result<(), ConfError> {
    // `<name>-<version>` names a directory: each must leave room in NAME_MAX (255).
    const MAX: usize = 127;
    if value.len() > MAX {
        let preview: String = value.chars().take(20).collect();
        return Err(ConfError::directive(
            file,
            directive,
            format!(
                "'{preview}...' is {} bytes long, more than {MAX}",
                value.len()
            ),
            "use a short name: <name>-<version> must fit in one directory name",
        ));
    }
    if value == "." || value == ".." || value.contains('/') {
        return Err(ConfError::directive(
            file,
            directive,
            format!("'{value}' is not a usable name (it would be a path)"),
            "use letters, digits, '.', '_', '+' or '-' only",
        ));
    }
    if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(ConfError::directive(
            file,
            directive,
            format!("{value:?} contains whitespace or control characters"),
            "use letters, digits, '.', '_', '+' or '-' only",
        ));
    }
    Ok(())
}

/// Relative paths that must stay inside their tree: no `..`, not absolute.
fn check_relative(file: &Path, directive: &str, value: &str, fix: &str) -> Result<(), ConfError> {
    if value.starts_with('/') || value.split('/').any(|part| part == "..") {
        return Err(ConfError::directive(
            file,
            directive,
            format!("'{value}' leaves its directory (absolute path or '..')"),
            fix,
        ));
    }
    Ok(())
}

/// The four module arrays must describe the same modules: no holes and no array
/// shorter than the others (count = highest index + 1, as upstream counts).
fn module_specs(
    raw: &RawConf,
    ctx: &EvalContext,
    package_name: &str,
) -> Result<Vec<ModuleSpec>, ConfError> {
    let file = raw.file.as_path();
    const ARRAYS: [&str; 4] = [
        "BUILT_MODULE_NAME",
        "BUILT_MODULE_LOCATION",
        "DEST_MODULE_NAME",
        "DEST_MODULE_LOCATION",
    ];
    let count = ARRAYS
        .iter()
        .filter_map(|name| raw.max_index(name))
        .max()
        .map_or(0, |max| max + 1);
    if count == 0 {
        return Err(ConfError::directive(
            file,
            "DEST_MODULE_LOCATION",
            "is missing, so no module is described",
            "add DEST_MODULE_LOCATION[0]=\"/updates/dkms\" (and BUILT_MODULE_NAME[0] if the module is not named like the package)",
        ));
    }
    // A hole in an optional array means "the default" for that module, as upstream
    // reads it; a hole in a required one is an error here rather than a confusing
    // "missing" later.
    for name in ["BUILT_MODULE_NAME", "DEST_MODULE_LOCATION"] {
        let Some(max) = raw.max_index(name) else {
            continue;
        };
        let present: Vec<usize> = raw.elements(name).map(|(i, _)| i).collect();
        if let Some(hole) = (0..count).find(|i| !present.contains(i)) {
            let problem = if hole > max {
                format!("has {} entries but {count} modules are described", max + 1)
            } else {
                format!("has no entry [{hole}] (the array is sparse)")
            };
            return Err(ConfError::directive(
                file,
                name,
                problem,
                format!(
                    "set {name}[0] to {name}[{}] without gaps, one per module",
                    count - 1
                ),
            ));
        }
    }

    let strip_default = strip_value(raw, 0)?.unwrap_or(true);
    let mut specs = Vec::with_capacity(count);
    for index in 0..count {
        let record = |name: &str| raw.text(name, index, file).map(Option::unwrap_or_default);
        let mut built_name = record("BUILT_MODULE_NAME")?;
        if built_name.is_empty() && count == 1 {
            built_name = package_name.to_string();
        }
        if built_name.is_empty() {
            return Err(ConfError::directive(
                file,
                format!("BUILT_MODULE_NAME[{index}]"),
                "is missing",
                "name every module when a package builds more than one",
            ));
        }
        let mut dest_name = record("DEST_MODULE_NAME")?;
        if dest_name.is_empty() {
            dest_name = built_name.clone();
        }
        for (directive, value) in [
            ("BUILT_MODULE_NAME", &built_name),
            ("DEST_MODULE_NAME", &dest_name),
        ] {
            if value.ends_with(".o") || value.ends_with(".ko") {
                return Err(ConfError::directive(
                    file,
                    format!("{directive}[{index}]"),
                    format!("'{value}' ends in '.o' or '.ko'"),
                    "give the module name without its suffix",
                ));
            }
            if value.contains('/')
                || value.chars().any(|c| c.is_whitespace() || c.is_control())
                || value == ".."
            {
                return Err(ConfError::directive(
                    file,
                    format!("{directive}[{index}]"),
                    format!("{value:?} is not a plain module file name"),
                    "use BUILT_MODULE_LOCATION / DEST_MODULE_LOCATION for directories",
                ));
            }
        }
        let mut built_location = record("BUILT_MODULE_LOCATION")?;
        check_relative(
            file,
            &format!("BUILT_MODULE_LOCATION[{index}]"),
            &built_location,
            "give a directory inside the module source",
        )?;
        if !built_location.is_empty() && !built_location.ends_with('/') {
            built_location.push('/');
        }
        let declared_dest = record("DEST_MODULE_LOCATION")?;
        if declared_dest.is_empty() {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                "is missing",
                "set it to /updates/dkms (or /kernel/..., /extra/...)",
            ));
        }
        if !["/kernel", "/updates", "/extra"]
            .iter()
            .any(|prefix| declared_dest.starts_with(prefix))
        {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                format!("'{declared_dest}' does not begin with /kernel, /updates or /extra"),
                "use /updates/dkms, or a directory under /kernel, /updates or /extra",
            ));
        }
        if declared_dest.split('/').any(|part| part == "..") {
            return Err(ConfError::directive(
                file,
                format!("DEST_MODULE_LOCATION[{index}]"),
                format!("'{declared_dest}' leaves its directory (it contains '..')"),
                "give a directory under /kernel, /updates or /extra without '..'",
            ));
        }
        let dest_location = ctx
            .dest_location_override
            .clone()
            .unwrap_or_else(|| declared_dest.clone());
        let strip = strip_value(raw, index)?.unwrap_or(strip_default);
        specs.push(ModuleSpec {
            built_name,
            built_location,
            dest_name,
            dest_location,
            declared_dest_location: declared_dest,
            strip,
            excluded: None,
        });
    }

    for (i, a) in specs.iter().enumerate() {
        for b in &specs[..i] {
            if a.built_location == b.built_location && a.built_name == b.built_name {
                return Err(ConfError::directive(
                    file,
                    format!("BUILT_MODULE_NAME[{i}]"),
                    format!("'{}{}' is listed twice", a.built_location, a.built_name),
                    "list each built module once",
                ));
            }
            if a.dest_location == b.dest_location && a.dest_name == b.dest_name {
                return Err(ConfError::directive(
                    file,
                    format!("DEST_MODULE_NAME[{i}]"),
                    format!(
                        "'{}/{}' would be installed twice",
                        a.dest_location, a.dest_name
                    ),
                    "give each module its own DEST_MODULE_NAME",
                ));
            }
        }
    }
    Ok(specs)
}

/// STRIP[i]: yes/no by first letter as upstream reads it; empty means "as STRIP[0]".
fn strip_value(raw: &RawConf, index: usize) -> Result<Option<bool>, ConfError> {
    let file = raw.file.as_path();
    let Some(value) = raw.text("STRIP", index, file)? else {
        return Ok(None);
    };
    match value.chars().next() {
        None => Ok(None),
        Some('y' | 'Y') => Ok(Some(true)),
        Some('n' | 'N') => Ok(Some(false)),
        Some(_) => Err(ConfError::directive(
            file,
            format!("STRIP[{index}]"),
            format!("'{value}' is neither yes nor no"),
            "write STRIP[{index}]=\"yes\" or \"no\"",
        )),
    }
}

fn yes_no(raw: &RawConf, name: &str) -> Result<bool, ConfError> {
    let file = raw.file.as_path();
    let value = raw.text(name, 0, file)?.unwrap_or_default();
    if value.is_empty() {
        Ok(false)
    } else if value.eq_ignore_ascii_case("yes") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("no") {
        Ok(false)
    } else {
        Err(ConfError::directive(
            file,
            name,
            format!("unsupported value '{value}'"),
            format!("write {name}=\"yes\" or {name}=\"no\""),
        ))
    }
}

fn regex_error(raw: &RawConf, name: &str, index: usize) -> ConfError {
    let pattern = raw
        .text(name, index, &raw.file)
        .ok()
        .flatten()
        .unwrap_or_default();
    ConfError::directive(
        &raw.file,
        format!("{name}[{index}]"),
        format!("'{pattern}' is not a valid extended regular expression"),
        "fix the pattern (it is matched with bash's =~)",
    )
}

/// Whether element `index` of a *_MATCH array matched; errors on an invalid regex.
fn matched(raw: &RawConf, name: &str, index: usize) -> Result<Option<bool>, ConfError> {
    match raw.matches.get(&(name.to_string(), index)) {
        None => Ok(None),
        Some(0) => Ok(Some(true)),
        Some(1) => Ok(Some(false)),
        Some(_) => Err(regex_error(raw, name, index)),
    }
}

/// MAKE[0] unless MAKE_MATCH[0] is set; then the last MAKE[i] whose MAKE_MATCH[i]
/// matches the kernel, as upstream chooses.
fn select_make(raw: &RawConf) -> Result<Option<String>, ConfError> {
    let file = raw.file.as_path();
    let mut command = None;
    if raw
        .text("MAKE_MATCH", 0, file)?
        .unwrap_or_default()
        .is_empty()
    {
        command = non_empty(raw.text("MAKE", 0, file)?);
    }
    let count = raw.max_index("MAKE").map_or(0, |m| m + 1);
    for index in 0..count {
        let make = raw.text("MAKE", index, file)?.unwrap_or_default();
        if make.is_empty() {
            continue;
        }
        if matched(raw, "MAKE_MATCH", index)? == Some(true) {
            command = Some(make);
        }
    }
    Ok(command)
}

/// PATCH[i] applies when PATCH_MATCH[i] is empty or matches the kernel.
fn select_patches(raw: &RawConf) -> Result<Vec<String>, ConfError> {
    let file = raw.file.as_path();
    let count = raw.max_index("PATCH").map_or(0, |m| m + 1);
    let mut patches = Vec::new();
    for index in 0..count {
        let patch = raw.text("PATCH", index, file)?.unwrap_or_default();
        if patch.is_empty() {
            continue;
        }
        if matched(raw, "PATCH_MATCH", index)? != Some(false) {
            patches.push(patch);
        }
    }
    Ok(patches)
}

fn deprecations(raw: &RawConf) -> Vec<Deprecation> {
    let mut found = Vec::new();
    let set = |name: &str| raw.elements(name).next().is_some();
    let clean = raw
        .text("CLEAN", 0, &raw.file)
        .ok()
        .flatten()
        .unwrap_or_default();
    if set("CLEAN") && !matches!(clean.as_str(), "true" | "/bin/true" | "/usr/bin/true") {
        found.push(Deprecation {
            directive: "CLEAN".into(),
            advice: "it is ignored; make's clean target is not run".into(),
        });
    }
    for name in [
        "REMAKE_INITRD",
        "MODULES_CONF",
        "MODULES_CONF_OBSOLETES",
        "MODULES_CONF_ALIAS_TYPE",
        "MODULES_CONF_OBSOLETE_ONLY",
    ] {
        if set(name) {
            found.push(Deprecation {
                directive: name.into(),
                advice: "it is ignored; remove it".into(),
            });
        }
    }
    if set("OBSOLETE_BY") {
        found.push(Deprecation {
            directive: "OBSOLETE_BY".into(),
            advice: "use BUILD_EXCLUSIVE_KERNEL_MAX instead".into(),
        });
    }
    found
}

/// Decides BUILD_EXCLUSIVE_* for the evaluated kernel: global directives exclude
/// every module, `[i]` forms only module i. When directives exist and no module is
/// left, the whole package is excluded.
fn apply_build_exclusive(
    raw: &RawConf,
    ctx: &EvalContext,
    kernel_config: Option<&KernelConfig>,
    mut modules: Vec<ModuleSpec>,
) -> Result<(Vec<ModuleSpec>, Option<String>), ConfError> {
    let file = raw.file.as_path();
    let obsolete_by = raw.text("OBSOLETE_BY", 0, file)?.unwrap_or_default();
    let per_module_max = (0..modules.len()).any(|i| {
        i > 0
            && !raw
                .text("BUILD_EXCLUSIVE_KERNEL_MAX", i, file)
                .ok()
                .flatten()
                .unwrap_or_default()
                .is_empty()
    });
    let global_max = raw
        .text("BUILD_EXCLUSIVE_KERNEL_MAX", 0, file)?
        .unwrap_or_default();
    let implied_max = (!obsolete_by.is_empty() && global_max.is_empty() && !per_module_max)
        .then_some(obsolete_by);

    let mut any_directive = implied_max.is_some();
    for (index, module) in modules.iter_mut().enumerate() {
        // Index 0 is both the global (scalar) form and module 0's own entry.
        let mut reason = None;
        for idx in if index == 0 { vec![0] } else { vec![0, index] } {
            let value = |name: &str| raw.text(name, idx, file).map(Option::unwrap_or_default);
            let kernel = value("BUILD_EXCLUSIVE_KERNEL")?;
            let min = value("BUILD_EXCLUSIVE_KERNEL_MIN")?;
            let max = match (idx, &implied_max) {
                (0, Some(obsolete)) => obsolete.clone(),
                _ => value("BUILD_EXCLUSIVE_KERNEL_MAX")?,
            };
            let arch = value("BUILD_EXCLUSIVE_ARCH")?;
            let configs = value("BUILD_EXCLUSIVE_CONFIG")?;
            if [&kernel, &min, &max, &arch, &configs]
                .iter()
                .any(|v| !v.is_empty())
            {
                any_directive = true;
            }
            if reason.is_some() {
                continue;
            }
            let suffix = if idx == 0 {
                String::new()
            } else {
                format!("[{idx}]")
            };
            if !kernel.is_empty() && matched(raw, "BUILD_EXCLUSIVE_KERNEL", idx)? == Some(false) {
                reason = Some(format!(
                    "kernel {} does not match BUILD_EXCLUSIVE_KERNEL{suffix}='{kernel}'",
                    ctx.kernelver
                ));
            } else if !min.is_empty() && ver_cmp(&ctx.kernelver, &min) == Ordering::Less {
                reason = Some(format!(
                    "kernel {} is older than BUILD_EXCLUSIVE_KERNEL_MIN{suffix}='{min}'",
                    ctx.kernelver
                ));
            } else if !max.is_empty() && ver_cmp(&ctx.kernelver, &max) == Ordering::Greater {
                reason = Some(format!(
                    "kernel {} is newer than BUILD_EXCLUSIVE_KERNEL_MAX{suffix}='{max}'",
                    ctx.kernelver
                ));
            } else if !arch.is_empty() && matched(raw, "BUILD_EXCLUSIVE_ARCH", idx)? == Some(false)
            {
                reason = Some(format!(
                    "architecture {} does not match BUILD_EXCLUSIVE_ARCH{suffix}='{arch}'",
                    ctx.arch
                ));
            } else if let Some(config_reason) = (!configs.is_empty())
                .then_some(kernel_config)
                .flatten()
                .and_then(|c| c.unmet(&configs))
            {
                reason = Some(format!("{config_reason} (BUILD_EXCLUSIVE_CONFIG{suffix})"));
            }
        }
        module.excluded = reason;
    }
    let excluded = if any_directive && modules.iter().all(|m| m.excluded.is_some()) {
        modules.first().and_then(|m| m.excluded.clone())
    } else {
        None
    };
    Ok((modules, excluded))
}

#[cfg(test)]
mod tests;
