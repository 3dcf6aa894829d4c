//! Command-line arguments: upstream dkms's commands and options, plus ours.
//!
//! Options are accepted before or after the command, as upstream accepts them
//! (`dkms status -m foo` and `dkms -m foo status`). The helpers at the end turn
//! `module/version`, `-k kernel/arch` and `-a` into the values the library takes.

use crate::refuse;
use anyhow::{bail, Result};
use clap::{Args, Parser, ValueEnum};
use dkms_core::exit::Exit;
use dkms_core::status::StatusQuery;
use std::path::PathBuf;

#[derive(Debug, Parser)]
#[command(
    name = "dkms-hook",
    version,
    about = "Dynamic Kernel Module Support for pacman: dependency-ordered, parallel, atomic rebuilds"
)]
pub struct Cli {
    /// What to do.
    #[arg(value_enum)]
    pub action: Action,
    /// `module/version` (or a module source directory, for add).
    pub targets: Vec<String>,
    #[command(flatten)]
    pub global: GlobalArgs,
    /// Print the same facts as JSON (status, plan, cleanup).
    #[arg(long)]
    pub json: bool,
    /// status: upstream dkms's exact lines (what `dkms status` prints) instead of the
    /// explained module x kernel view.
    #[arg(long)]
    pub compat: bool,
}

#[derive(Debug, Args, Clone, Default)]
pub struct GlobalArgs {
    /// Module name, or `name/version`.
    #[arg(short = 'm', long = "module", value_name = "MODULE[/VERSION]")]
    pub module: Option<String>,
    /// Module version.
    #[arg(short = 'v', value_name = "VERSION")]
    pub module_version: Option<String>,
    /// Kernel release, optionally `release/arch`; repeatable.
    #[arg(short = 'k', long = "kernelver", value_name = "KERNEL[/ARCH]")]
    pub kernels: Vec<String>,
    /// Architecture; one for all kernels, or one per `-k`.
    #[arg(short = 'a', long = "arch", value_name = "ARCH")]
    pub arches: Vec<String>,
    /// Every kernel the module is built for.
    #[arg(long = "all")]
    pub all: bool,
    /// Use this dkms.conf instead of the one in the module source.
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    pub conf: Option<PathBuf>,
    #[arg(long)]
    pub force: bool,
    /// Override a dkms.conf directive: `--directive NAME=VALUE` (repeatable).
    #[arg(long = "directive", value_name = "NAME=VALUE")]
    pub directives: Vec<String>,
    /// cleanup: remove what it lists (default: only list).
    #[arg(long = "yes")]
    pub yes: bool,
    /// Rebuild modules that failed before with the same source and headers.
    #[arg(long = "retry-failed")]
    pub retry_failed: bool,
    /// (dkms-hook) Compile even where the build cache holds the same build, and keep
    /// nothing in it (also `build_cache = false`).
    #[arg(long = "no-cache")]
    pub no_cache: bool,
    /// As root, also evaluate and build module sources and dkms.conf files that a
    /// user other than root owns or can write (refused by default: that user could
    /// run code as root through them).
    #[arg(long = "allow-untrusted-sources")]
    pub allow_untrusted_sources: bool,
    /// Do not run depmod after installing or removing.
    #[arg(long = "no-depmod")]
    pub no_depmod: bool,
    /// Parallel make jobs.
    #[arg(short = 'j', value_name = "N")]
    pub jobs: Option<usize>,
    /// Print only errors.
    #[arg(short = 'q', long = "quiet")]
    pub quiet: bool,
    #[arg(long)]
    pub verbose: bool,
    /// Log every command run and every decision (log level debug); upstream's
    /// `--debug` traces its bash instead.
    #[arg(long)]
    pub debug: bool,
    /// DKMS tree (default /var/lib/dkms).
    #[arg(long = "dkmstree", value_name = "DIR")]
    pub dkms_tree: Option<PathBuf>,
    /// Module sources (default /usr/src).
    #[arg(long = "sourcetree", value_name = "DIR")]
    pub source_tree: Option<PathBuf>,
    /// Kernel module directories (default /usr/lib/modules).
    #[arg(long = "installtree", value_name = "DIR")]
    pub install_tree: Option<PathBuf>,
    /// The kernel config to use (signature hash, compression, BUILD_EXCLUSIVE_CONFIG)
    /// instead of the headers' `include/config/auto.conf` or `.config`.
    #[arg(long = "config", value_name = "FILE")]
    pub kernel_config: Option<PathBuf>,
    /// Kernel headers to build against instead of <installtree>/<kernel>/build.
    #[arg(long = "kernelsourcedir", value_name = "DIR")]
    pub kernel_source_dir: Option<PathBuf>,
    /// Directory of framework.conf and per-module override files (default /etc/dkms).
    #[arg(long = "etc-dir", value_name = "DIR")]
    pub etc_dir: Option<PathBuf>,
    /// dkms-hook settings file (default /etc/dkms-hook.toml, or $DKMS_HOOK_CONFIG).
    #[arg(long = "settings", value_name = "FILE")]
    pub settings: Option<PathBuf>,
    /// mktarball/ldtarball: the tarball to write or read.
    #[arg(long = "archive", value_name = "FILE")]
    pub archive: Option<PathBuf>,
    /// mktarball: only the source.
    #[arg(long = "source-only", conflicts_with = "binaries_only")]
    pub source_only: bool,
    /// mktarball: only the built modules (no source).
    #[arg(long = "binaries-only")]
    pub binaries_only: bool,
    /// match: install what is installed for this kernel onto the -k kernel.
    #[arg(long = "templatekernel", value_name = "KERNEL")]
    pub template_kernel: Option<String>,
    /// Accepted for compatibility with upstream dkms; these change nothing here.
    #[arg(long = "no-initrd", hide = true)]
    pub no_initrd: bool,
    #[arg(long = "no-clean-kernel", hide = true)]
    pub no_clean_kernel: bool,
    #[arg(long = "no-prepare-kernel", hide = true)]
    pub no_prepare_kernel: bool,
    #[arg(long = "modprobe-on-install", hide = true)]
    pub modprobe_on_install: bool,
    #[arg(long = "force-version-override", hide = true)]
    pub force_version_override: bool,
    #[arg(long = "rpm_safe_upgrade", hide = true)]
    pub rpm_safe_upgrade: bool,
    #[arg(long = "symlink-modules", hide = true)]
    pub symlink_modules: bool,
    /// When to colour output.
    #[arg(long = "color", value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    #[default]
    Auto,
    Always,
    Never,
}

/// The commands. Upstream dkms has one flat set of options shared by every command,
/// accepted anywhere on the line; so does this parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Action {
    /// Register a module source (`m/v`, a directory with a dkms.conf, or the file).
    Add,
    /// Compile a module version for the kernels given with -k (default: running).
    Build,
    /// Build if needed, then install into the kernels' module directories.
    Install,
    /// Remove the installed modules, restoring any they replaced.
    Uninstall,
    /// Uninstall and delete the builds for the given kernels.
    Unbuild,
    /// Unbuild for -k kernels or --all; forget the version once nothing is left.
    Remove,
    /// Install the newest version of every AUTOINSTALL module, dependencies first.
    Autoinstall,
    /// Install onto -k the modules installed for --templatekernel.
    Match,
    /// Write a tarball of a module's source and builds (upstream's format).
    Mktarball,
    /// Load a tarball made by mktarball (ours or upstream's).
    Ldtarball,
    /// (kernel packages) Before kernel -k is installed: unbuild the AUTOINSTALL
    /// modules built for it.
    #[value(name = "kernel_preinst")]
    KernelPreinst,
    /// (kernel packages) After kernel -k is installed: autoinstall for it.
    #[value(name = "kernel_postinst")]
    KernelPostinst,
    /// (kernel packages) Before kernel -k is removed: unbuild every module built
    /// for it.
    #[value(name = "kernel_prerm")]
    KernelPrerm,
    /// Make sure the module signing key and certificate exist (mok_signing_key and
    /// mok_certificate of framework.conf, default /var/lib/dkms/mok.key and mok.pub),
    /// generating a new pair with openssl when either is missing. Enroll the
    /// certificate with `mokutil --import`.
    #[value(name = "generate_mok")]
    GenerateMok,
    /// (packaging) Print shell completions: `completions bash|zsh|fish`.
    #[value(hide = true)]
    Completions,
    /// (packaging) Print the man page (section 8).
    #[value(hide = true)]
    Manpage,
    /// Show what is added, built and installed, as upstream dkms prints it.
    Status,
    /// (dkms-hook) Run by the pacman hooks: reads the transaction's target paths on
    /// stdin. `dkms-hook hook install|upgrade|remove`.
    Hook,
    /// (dkms-hook) List what is left behind for kernels that are gone; `--yes`
    /// removes it.
    Cleanup,
    /// (dkms-hook) What autoinstall would build for the kernels, in order, and why
    /// anything is left out; default: every installed kernel.
    Plan,
}

/// Splits `module/version` as upstream does: exactly one slash.
pub fn split_module_version(value: &str) -> Option<(String, String)> {
    let (m, v) = value.split_once('/')?;
    (!v.contains('/')).then(|| (m.to_string(), v.to_string()))
}

pub fn status_query(global: &GlobalArgs, target: Option<&str>) -> Result<StatusQuery> {
    let mut module = global.module.clone();
    let mut version = global.module_version.clone();
    for given in [target.map(str::to_string), global.module.clone()]
        .into_iter()
        .flatten()
    {
        if let Some((m, v)) = split_module_version(&given) {
            module = Some(m);
            version = Some(v);
        } else if target.is_some() && module.is_none() {
            module = Some(given);
        }
    }
    let kernels = kernels_with_arches(global)?;
    let arch = if global.kernels.is_empty() {
        global.arches.first().cloned()
    } else {
        None
    };
    Ok(StatusQuery {
        module,
        version,
        kernels,
        arch,
    })
}

/// Pairs `-k` values with arches: `-k kernel/arch`, one `-a` for all, or one `-a`
/// per `-k` (upstream exits 1 on any other count).
pub fn kernels_with_arches(global: &GlobalArgs) -> Result<Vec<(String, Option<String>)>> {
    if !global.kernels.is_empty() && global.all {
        bail!(refuse(
            Exit::Usage,
            "You cannot specify a kernel version and also specify --all on the command line."
        ));
    }
    let mut pairs: Vec<(String, Option<String>)> = global
        .kernels
        .iter()
        .map(|k| match k.split_once('/') {
            Some((k, a)) => (k.to_string(), Some(a.to_string())),
            None => (k.clone(), None),
        })
        .collect();
    match global.arches.len() {
        0 => {}
        1 => {
            for pair in &mut pairs {
                pair.1.get_or_insert_with(|| global.arches[0].clone());
            }
        }
        n if n == pairs.len() => {
            for (pair, arch) in pairs.iter_mut().zip(&global.arches) {
                pair.1.get_or_insert_with(|| arch.clone());
            }
        }
        _ => bail!(refuse(
            Exit::Failure,
            "If more than one arch is specified on the command line, then there must be an equal number of kernel versions also specified (1:1 relationship)."
        )),
    }
    Ok(pairs)
}
