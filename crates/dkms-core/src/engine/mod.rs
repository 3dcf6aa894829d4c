//! The engine: add, build, install, uninstall, unbuild, remove, as upstream dkms does
//! them, on the same tree, but atomically: a build is staged next to its final place
//! and renamed in, an installed file is written to a temp name and renamed over, and
//! a failed build never touches what is installed.
//!
//! build, install, uninstall (and so unbuild) and remove first sweep what an
//! interrupted run left in the directories they are about to touch (see `fs`), so
//! the next run after a kill converges on the state an uninterrupted run leaves. That sweep assumes no other process is writing:
//! callers hold the tree lock (`lock.rs`), as the binary does.
//!
//! The library never prints: what happens goes out as typed [`Event`]s through the
//! [`Progress`] trait the binary implements, and every failure is an [`EngineError`] that knows upstream's exit code.

mod add;
mod build;
mod install;
mod output;
mod remove;
mod run;
mod script;
mod shared_build;
pub mod version_check;

pub use add::{add, AddSource};
pub use build::build;
pub(crate) use build::copy_tree;
pub use install::{depmod, install, uninstall};
pub use remove::{remove, unbuild};
pub use run::{run_plan, JobResult, Outcome, RunReport};

/// Removes a file or a directory tree inside the DKMS tree or the install tree
/// (whichever holds `path`), never following a symlink out of it: not inside what
/// is removed, and not on the way there (see `fs::Root`). In place, not through a
/// temp name: its callers (cleanup, the remove hook) delete leftovers outside the
/// directories the engine sweeps, and find a half-deleted one again. Fails for a
/// path in neither tree.
pub fn remove_path(host: &crate::Host, path: &std::path::Path) -> Result<(), EngineError> {
    let root = if path.starts_with(&host.paths.dkms_tree) {
        host.dkms_root()?
    } else {
        host.install_root()?
    };
    Ok(root.remove_in_place(path)?)
}

use crate::conf::ConfError;
use crate::exec::ExecError;
use crate::exit::Exit;
use crate::tree::Target;
use std::path::PathBuf;

pub mod event;
pub use event::{Event, Progress, Silent};

/// Choices that apply to a whole command.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--force`: build despite missing BUILD_DEPENDS, install despite a failed
    /// PRE_INSTALL, rebuild what is already built.
    pub force: bool,
    /// `--no-depmod`.
    pub no_depmod: bool,
    /// `--force-version-override`: install without comparing with the same-named
    /// module already in the kernel's tree.
    pub force_version_override: bool,
    /// `-j`: make jobs for one build; 0 is `parallel_jobs=0`, no limit (a bare `-j`).
    pub jobs: usize,
    /// `-c FILE`: a dkms.conf to use instead of the module's own.
    pub conf_override: Option<PathBuf>,
    /// A GNU make jobserver shared by every build of the command: make takes its
    /// parallel job slots from it instead of getting `-jN`, so concurrent builds
    /// together stay within `jobs`.
    pub jobserver: Option<jobserver::Client>,
    /// Build again what failed before with the same source and kernel headers (the
    /// scheduler otherwise reports the remembered failure without rebuilding).
    pub retry_failed: bool,
    /// Run depmod also for a kernel whose tree has no `modules.dep` yet (upstream
    /// always runs it; the `dkms-hook` face leaves such trees, which are headers
    /// without a kernel, alone).
    pub depmod_always: bool,
    /// Show the engine's steps of scheduled jobs too (the `dkms` face prints them
    /// as upstream's autoinstall does; otherwise only warnings and one line per job).
    pub job_steps: bool,
}

/// Why a command failed, with the exit code upstream dkms uses for it.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("DKMS tree already contains: {module}/{version}; you cannot add the same module/version more than once")]
    AlreadyAdded { module: String, version: String },
    #[error("could not find module source directory {}", .dir.display())]
    SourceMissing { dir: PathBuf },
    #[error("{} must contain a dkms.conf file", .dir.display())]
    NoDkmsConf { dir: PathBuf },
    #[error("bad dkms.conf")]
    Conf(#[from] ConfError),
    #[error("{module}/{version} for kernel {kernel}: the build left {} {problem}; refusing to use it (the build ran as an unprivileged user and root takes only regular files inside its work directory)", .file.display())]
    UnsafeBuildOutput {
        module: String,
        version: String,
        kernel: String,
        file: PathBuf,
        problem: String,
    },
    #[error("cannot run builds as the build user")]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error("the module/version {module}/{version} is not in the DKMS tree: add it first (dkms add {module}/{version})")]
    NotAdded { module: String, version: String },
    #[error("{module}/{version} is broken: its source directory or the symbolic link to it is missing; reinstall the package that provides it, or remove it with `dkms remove {module}/{version} --all`")]
    Broken { module: String, version: String },
    #[error("the headers for kernel {kernel} are not at {}: install the headers package for {kernel}, or give --kernelsourcedir", .dir.display())]
    NoHeaders { kernel: String, dir: PathBuf },
    #[error("{target} is skipped: {reason}")]
    Excluded { target: Box<Target>, reason: String },
    #[error("{target} needs BUILD_DEPENDS installed first: {}; install them or pass --force", .missing.join(", "))]
    MissingDependencies {
        target: Box<Target>,
        missing: Vec<String>,
    },
    #[error("{target}: patch '{patch}' {problem}")]
    Patch {
        target: Box<Target>,
        patch: String,
        problem: String,
        exit: Exit,
    },
    #[error("{target}: `{command}` failed ({status}); see {}", .log.display())]
    BuildFailed {
        target: Box<Target>,
        command: String,
        status: String,
        log: PathBuf,
    },
    #[error("{target}: make failed and the file system holding {} is full; free some space there and run again", .dir.display())]
    BuildNoSpace { target: Box<Target>, dir: PathBuf },
    #[error("{target}: the {script} script failed ({status}); see {}", .log.display())]
    ScriptFailed {
        target: Box<Target>,
        script: &'static str,
        status: String,
        /// The script's exit status, which dkms exits with for PRE_BUILD/POST_BUILD.
        code: i32,
        log: PathBuf,
    },
    #[error("{target}: make did not produce {}; check BUILT_MODULE_NAME/BUILT_MODULE_LOCATION in dkms.conf, or see {}", .missing.join(", "), .log.display())]
    ModulesMissing {
        target: Box<Target>,
        missing: Vec<String>,
        log: PathBuf,
    },
    #[error("{0}; modules are built and installed only for installed kernels")]
    NoKernel(crate::kernel::NotInstalled),
    /// A build for a kernel that is not installed: upstream's "no headers" (exit 21).
    #[error("{0}; modules are built only for installed kernels (or pass --kernelsourcedir)")]
    NoKernelToBuild(crate::kernel::NotInstalled),
    #[error("{target}: the pre_install script failed ({status}); pass --force to install anyway")]
    PreInstallFailed { target: Box<Target>, status: String },
    #[error("{target}: no module was installed (each was refused: the kernel already has it, as new or newer); pass --force to install anyway")]
    NothingInstalled { target: Box<Target> },
    #[error("{target} is not built")]
    NotBuilt { target: Box<Target> },
    #[error("{target} failed before with this same source and kernel headers; not retried (pass --retry-failed); see {}", .log.display())]
    KnownFailure {
        target: Box<Target>,
        exit_code: u8,
        log: PathBuf,
    },
    #[error("{target} is already installed")]
    AlreadyInstalled { target: Box<Target> },
    #[error("{target} is already built; run `dkms unbuild` first, or pass --force to rebuild")]
    AlreadyBuilt { target: Box<Target> },
    /// A file operation failed or was refused (a full disk, a symlink on the path,
    /// a path outside the tree): the fs layer's error, in its words. Engine code
    /// that does its own I/O makes one with [`io_err`].
    #[error(transparent)]
    Fs(#[from] crate::fs::FsError),
    #[error(transparent)]
    Exec(#[from] ExecError),
    /// A module source a user other than root could change, refused as root.
    #[error(transparent)]
    Untrusted(Box<crate::trust::TrustError>),
    // mktarball and ldtarball (`archive`).
    #[error("no modules built for {kernel} ({arch}): {module}/{version} must be built for every kernel it is archived for (dkms build {module}/{version} -k {kernel})")]
    NotBuiltForArchive {
        module: String,
        version: String,
        kernel: String,
        arch: String,
    },
    #[error("cannot write a tarball in {}: {source}; check its permissions or give another --archive", .dir.display())]
    ArchiveDirNotWritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to make tarball {}: {source}", .archive.display())]
    ArchiveWrite {
        archive: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot make {}: {format} compression is not supported; name it .tar.gz, .tar.xz, .tar.zst or .tar", .archive.display())]
    ArchiveCompression {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("{} does not exist", .archive.display())]
    ArchiveMissing { archive: PathBuf },
    #[error("{}: rpm packages are not DKMS tarballs; install it with rpm, then run `dkms autoinstall`", .archive.display())]
    ArchiveIsRpm { archive: PathBuf },
    #[error("{}: {format}-compressed tarballs are not supported; recompress it with gzip, xz or zstd", .archive.display())]
    ArchiveFormat {
        archive: PathBuf,
        format: &'static str,
    },
    #[error("{}: cannot read it as a tar archive: {source}", .archive.display())]
    ArchiveCorrupt {
        archive: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: refusing to load member '{member}': {reason}", .archive.display())]
    UnsafeMember {
        archive: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{} does not appear to be a correctly formed DKMS archive: no dkms.conf found within it", .archive.display())]
    ArchiveNoDkmsConf { archive: PathBuf },
    #[error("{} is not a valid DKMS tarball: no valid dkms.conf in dkms_source_tree or dkms_binaries_only", .archive.display())]
    ArchiveNoValidConf { archive: PathBuf },
    #[error("{}: {member} is not a valid dkms.conf", .archive.display())]
    ArchiveConf {
        archive: PathBuf,
        member: String,
        #[source]
        source: Box<ConfError>,
    },
    #[error("{module}/{version} is already added; remove it first (dkms remove {module}/{version} --all), or pass --force to load over it")]
    ArchiveAlreadyAdded {
        module: String,
        version: String,
        /// Whether the tarball had upstream's layout (exit 8) or was a plain source
        /// tarball, which upstream hands to `add` (exit 3).
        dkms_layout: bool,
    },
}

impl From<crate::trust::TrustError> for EngineError {
    fn from(e: crate::trust::TrustError) -> Self {
        EngineError::Untrusted(Box::new(e))
    }
}

impl crate::exit::HasExitCode for EngineError {
    fn exit(&self) -> Exit {
        match self {
            EngineError::AlreadyAdded { .. } => Exit::WrongState,
            EngineError::SourceMissing { .. } => Exit::Usage,
            EngineError::NoDkmsConf { .. } => Exit::NoDkmsConf,
            EngineError::Conf(_) => Exit::BadConf,
            EngineError::UnsafeBuildOutput { .. } => Exit::BuildFailed,
            EngineError::Sandbox(_) => Exit::Failure,
            EngineError::NotAdded { .. } => Exit::WrongState,
            EngineError::Broken { .. } => Exit::Broken,
            EngineError::NoHeaders { .. } | EngineError::NoKernelToBuild(_) => Exit::NoHeaders,
            EngineError::Excluded { .. } => Exit::Excluded,
            EngineError::MissingDependencies { .. } => Exit::MissingDependencies,
            EngineError::Patch { exit, .. } => *exit,
            EngineError::BuildFailed { .. } | EngineError::BuildNoSpace { .. } => Exit::BuildFailed,
            // dkms exits with the script's own status (`exit "$res"`).
            EngineError::ScriptFailed { code, .. } => u8::try_from(*code)
                .ok()
                .filter(|&c| c != 0)
                .map_or(Exit::Failure, Exit::from_code),
            EngineError::ModulesMissing { .. } => Exit::ModulesMissing,
            EngineError::NothingInstalled { .. } => Exit::InstallFailed,
            EngineError::NoKernel(_) => Exit::InstallFailed,
            EngineError::PreInstallFailed { .. } => Exit::PreInstallFailed,
            EngineError::NotBuilt { .. } | EngineError::AlreadyBuilt { .. } => Exit::WrongState,
            EngineError::AlreadyInstalled { .. } => Exit::AlreadyInstalled,
            EngineError::KnownFailure { exit_code, .. } => Exit::from_code(*exit_code),
            EngineError::Fs(_) | EngineError::Exec(_) | EngineError::Untrusted(_) => Exit::Failure,
            EngineError::NotBuiltForArchive { .. }
            | EngineError::ArchiveWrite { .. }
            | EngineError::ArchiveCompression { .. } => Exit::InstallFailed,
            EngineError::ArchiveDirNotWritable { .. } | EngineError::ArchiveIsRpm { .. } => {
                Exit::NoDkmsConf
            }
            EngineError::ArchiveMissing { .. } => Exit::Usage,
            EngineError::ArchiveNoDkmsConf { .. } => Exit::WrongState,
            EngineError::ArchiveConf { .. } => Exit::BadConf,
            // Upstream has no code for an unreadable or hostile tarball (tar just
            // complains); "not a valid DKMS tarball" is the closest.
            EngineError::ArchiveFormat { .. }
            | EngineError::ArchiveCorrupt { .. }
            | EngineError::UnsafeMember { .. }
            | EngineError::ArchiveNoValidConf { .. } => Exit::ModulesMissing,
            EngineError::ArchiveAlreadyAdded { dkms_layout, .. } => {
                if *dkms_layout {
                    Exit::BadConf
                } else {
                    Exit::WrongState
                }
            }
        }
    }
}

impl EngineError {
    /// Upstream dkms's exit code for this failure, as a number (see [`Exit`]).
    pub fn exit_code(&self) -> u8 {
        crate::exit::HasExitCode::exit(self).code()
    }

    /// The make.log (or script log) to show the user, when there is one.
    pub fn log(&self) -> Option<&PathBuf> {
        match self {
            EngineError::BuildFailed { log, .. }
            | EngineError::ScriptFailed { log, .. }
            | EngineError::ModulesMissing { log, .. }
            | EngineError::KnownFailure { log, .. } => Some(log),
            _ => None,
        }
    }
}

/// Attaches what was being done and to which path to an I/O error, as the fs layer
/// does (a full disk or quota gets its own variant, because its fix is the user's).
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> EngineError {
    let wrap = crate::fs::io_err(what, path);
    move |source| EngineError::Fs(wrap(source))
}

/// What build and install check and clear before they touch a target: its source is
/// trusted, its build and work directories are not reached through a symlink out of
/// the DKMS tree, and temp names an interrupted run left in the module are swept.
pub(crate) fn prepare_target(host: &crate::Host, target: &Target) -> Result<(), EngineError> {
    host.check_added_source(&target.module, &target.version)?;
    let root = host.dkms_root()?;
    root.check(&target.build_dir(&host.paths))?;
    root.check(&target.work_dir(&host.paths))?;
    root.sweep_module(&host.paths.module_dir(&target.module))?;
    // A run killed mid-build leaves `<v>/build` pointing at a work dir it no longer
    // keeps; upstream and our own scripts must not find it there.
    shared_build::settle(host, target)?;
    Ok(())
}

/// Checks that `module/version` is added and not broken, as every command but add does.
pub(crate) fn require_added(
    host: &crate::Host,
    module: &str,
    version: &str,
) -> Result<(), EngineError> {
    let listed = crate::tree::module_versions(&host.paths, Some(module), Some(version));
    match listed.first().map(|mv| mv.source) {
        Some(crate::tree::SourceState::Added) => Ok(()),
        Some(crate::tree::SourceState::Broken) => Err(EngineError::Broken {
            module: module.into(),
            version: version.into(),
        }),
        _ => Err(EngineError::NotAdded {
            module: module.into(),
            version: version.into(),
        }),
    }
}

/// Says so when a dkms.conf describes no module (upstream warns every time it reads one).
pub(crate) fn note_no_modules(conf: &crate::conf::DkmsConf, progress: &dyn Progress) {
    if conf.modules.is_empty() {
        progress.event(Event::NoModules { file: &conf.file });
    }
}

/// Warns about the deprecated directives of a dkms.conf (add does, and each build, as
/// upstream's strict reading does).
pub(crate) fn note_deprecations(conf: &crate::conf::DkmsConf, progress: &dyn Progress) {
    for d in &conf.deprecations {
        progress.event(Event::Deprecated {
            file: &conf.file,
            directive: &d.directive,
            advice: &d.advice,
        });
    }
}

/// Evaluates the dkms.conf for a target, honouring `-c`.
pub(crate) fn read_conf(
    host: &crate::Host,
    target: &Target,
    options: &Options,
) -> Result<crate::conf::DkmsConf, ConfError> {
    let file = options.conf_override.clone().unwrap_or_else(|| {
        host.paths
            .version_dir(&target.module, &target.version)
            .join("source/dkms.conf")
    });
    let ctx = host.eval_context(
        &target.module,
        &target.version,
        &target.kernel,
        &target.arch,
    );
    crate::conf::evaluate(&file, &ctx)
}
