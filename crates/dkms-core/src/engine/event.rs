//! What the library reports while it works, as typed events: the engine, the
//! scheduler, the command policies and the hook say *what* happened, and the binary's
//! renderers decide how it reads (pacman style for `dkms-hook`, upstream's text for
//! `dkms`). A change of wording therefore never touches the library.
//!
//! Events borrow from the caller: they are built on the spot and rendered at once, so
//! they cost no clones, and an error can travel inside one without being `Clone`.

use super::{EngineError, JobResult};
use crate::tree::Target;
use std::error::Error;
use std::path::Path;

/// One thing that happened (or will not happen) while a command runs.
#[derive(Debug, Clone, Copy)]
pub enum Event<'a> {
    // add
    /// A module source from elsewhere is copied into the source tree.
    CopyingSource { from: &'a Path, to: &'a Path },
    /// A dkms.conf uses a deprecated directive (a warning).
    Deprecated {
        file: &'a Path,
        directive: &'a str,
        advice: &'a str,
    },
    /// A dkms.conf describes no kernel module (valid: nothing is built or
    /// installed; a warning each time it is read, as upstream warns).
    NoModules { file: &'a Path },
    /// `<m>/<v>/source` now points at the module source.
    LinkedSource { link: &'a Path, target: &'a Path },
    /// `add` registered a module version.
    Added { module: &'a str, version: &'a str },

    // build
    /// A build starts.
    Building { target: &'a Target },
    /// `--force` builds although BUILD_DEPENDS are missing (a warning).
    BuildingDespiteMissingDependencies {
        target: &'a Target,
        missing: &'a [String],
    },
    /// One module of the version is excluded by BUILD_EXCLUSIVE (a warning).
    ModuleExcluded {
        target: &'a Target,
        module: &'a str,
        reason: &'a str,
    },
    /// Processes of an interrupted build still write in the work dir; we wait (a warning).
    WaitingForInterruptedBuild { work: &'a Path },
    /// They did not stop in time; the build goes ahead (a warning).
    InterruptedBuildStillRunning { log: &'a Path },
    /// A MAKE[] with its own `-j` leaves the shared job budget (a warning).
    MakeHardCodesJobs { target: &'a Target },
    /// `strip -g` failed; the debug symbols stay (a warning).
    StripFailed {
        target: &'a Target,
        error: &'a (dyn Error + 'static),
    },
    /// Signing a module failed; it stays unsigned (a warning). `file` is the copy
    /// being signed, `built` the module it is a copy of (`<m>/<v>/build/<name>.ko`,
    /// the name upstream's message gives).
    SigningFailed {
        target: &'a Target,
        file: &'a Path,
        built: &'a Path,
        error: &'a crate::sign::SignError,
    },
    /// Compressing a module failed; it stays uncompressed (a warning).
    CompressionFailed {
        target: &'a Target,
        file: &'a Path,
        error: &'a (dyn Error + 'static),
    },
    /// The kernel wants signed modules but `sign_file` (the one chosen, as upstream
    /// chooses) is not an executable file (a warning).
    SignFileMissing {
        target: &'a Target,
        sign_file: &'a Path,
    },
    /// The modules of a build are not signed on purpose: framework.conf's
    /// `try_sign_modules`, or running in a chroot (upstream's default policy).
    SigningSkipped {
        target: &'a Target,
        why: crate::environment::NoSigning,
    },
    /// The modules of a build are signed with this tool, key and certificate.
    SigningWith {
        sign_file: &'a Path,
        key: &'a Path,
        certificate: &'a Path,
    },
    /// One module file was signed: `file`, the staged copy of `built`
    /// (`<m>/<v>/build/<name>.ko`, the name upstream's line gives).
    Signed {
        target: &'a Target,
        file: &'a Path,
        built: &'a Path,
    },
    /// A build succeeded (its modules are in the DKMS tree).
    Built { target: &'a Target },
    /// A module signing key pair was generated.
    SigningKeyGenerated {
        key: &'a Path,
        certificate: &'a Path,
    },
    /// No signing key could be had; modules are not signed (a warning). The tool,
    /// key and certificate that were to be used come along: upstream names them first.
    NoSigningKey {
        target: &'a Target,
        sign_file: &'a Path,
        key: &'a Path,
        certificate: &'a Path,
        error: &'a crate::sign::SignError,
    },
    /// A dkms.conf script is not executable and is skipped (a warning).
    ScriptNotExecutable {
        target: &'a Target,
        kind: &'a str,
        path: &'a Path,
    },
    /// A dkms.conf script (PRE_BUILD, POST_ADD, ...) runs.
    RunningScript {
        kind: &'a str,
        /// Whether its output goes to make.log (PRE_BUILD, POST_BUILD); the others
        /// write to the caller's terminal, as with upstream.
        logged: bool,
    },
    /// A script whose output went to make.log finished successfully.
    ScriptDone { kind: &'a str },
    /// What a script not logged to make.log (POST_ADD, PRE_INSTALL, POST_INSTALL,
    /// POST_REMOVE) wrote: upstream lets it reach the caller's terminal.
    ScriptOutput {
        kind: &'a str,
        stdout: &'a str,
        stderr: &'a str,
    },

    // install, uninstall, depmod, remove
    /// PRE_INSTALL failed and `--force` installs anyway (a warning).
    InstallingDespitePreInstall { error: &'a EngineError },
    /// An install starts.
    Installing { target: &'a Target },
    /// One module file was installed at `path`.
    Installed { target: &'a Target, path: &'a Path },
    /// An uninstall starts.
    Uninstalling { target: &'a Target },
    /// One installed module file is deleted.
    Uninstalled { target: &'a Target, path: &'a Path },
    /// `uninstall` found nothing installed.
    NotInstalled { target: &'a Target },
    /// `unbuild` found nothing built.
    NotBuilt { target: &'a Target },
    /// depmod is not run: the install tree is not `<root>/lib/modules` (a warning).
    DepmodSkipped {
        kernel: &'a str,
        install_tree: &'a Path,
    },
    /// depmod runs for a kernel.
    RunningDepmod { kernel: &'a str },
    /// depmod ran for a kernel and succeeded.
    DepmodDone { kernel: &'a str },
    /// depmod failed after a command; the command itself succeeded (a warning).
    DepmodFailed {
        kernel: &'a str,
        error: &'a EngineError,
    },
    /// A build is deleted from the DKMS tree.
    Unbuilding { target: &'a Target },
    /// A module version is deleted from the DKMS tree.
    Removing { module: &'a str, version: &'a str },
    /// POST_REMOVE was not run (an untrusted source, as root) (a warning).
    PostRemoveNotRun {
        module: &'a str,
        version: &'a str,
        error: &'a (dyn Error + 'static),
    },
    /// A target is already built or installed and the command skips it (upstream's
    /// rule); `error` says which.
    AlreadyDone { error: &'a EngineError },
    /// A kernel hook (`kernel_prerm`) removes a module version's build for a kernel.
    RemovingForKernel { target: &'a Target },
    /// A command that handles targets one after another is done with this one
    /// (upstream separates them with a blank line).
    TargetDone { target: &'a Target },
    /// A command on one target failed; the others go on.
    TargetFailed { error: &'a EngineError },

    // the scheduler
    /// No shared make jobserver; each build gets its own `-j` (a warning).
    NoJobserver {
        slots: usize,
        error: &'a (dyn Error + 'static),
    },
    /// `modules.dep` is older than the DKMS modules: depmod runs again.
    DepmodStale { kernel: &'a str },
    /// A build was taken from the build cache instead of compiling.
    FromBuildCache { target: &'a Target },
    /// A build cache entry failed its check and was removed; the module is built
    /// again (a warning).
    BuildCacheRejected { target: &'a Target, reason: &'a str },
    /// The build cache could not be read or written; the build goes on without it
    /// (a warning).
    BuildCacheFailed { target: &'a Target, error: &'a str },
    /// A job is skipped because a dependency failed (a warning).
    DependencyFailed { target: &'a Target, reason: &'a str },
    /// Job `number` of `total` starts.
    JobStarted {
        number: usize,
        total: usize,
        target: &'a Target,
    },
    /// Job `number` of `total` ended.
    JobFinished {
        number: usize,
        total: usize,
        target: &'a Target,
        result: &'a JobResult,
    },

    // autoinstall and the hook
    /// `<etc>/no-autoinstall` exists: autoinstall does nothing.
    AutoinstallDisabled,
    /// A target waits for BUILD_DEPENDS that are not registered (a warning);
    /// autoinstall retries it on its next run.
    Deferred {
        target: &'a Target,
        missing: &'a [String],
    },
    /// The same, found while planning a pacman transaction (a warning).
    DeferredInTransaction {
        target: &'a Target,
        missing: &'a [String],
    },
    /// A hook input line is not a path and is ignored (a warning).
    RejectedLine { line: usize, reason: &'a str },
    /// More rejected lines than are shown one by one (a warning).
    MoreRejectedLines { count: usize },
    /// A kernel in the transaction has no headers (a warning). `kernel_package` is
    /// the kernel's package from the pacman database; `pkgbase_file` is set when the
    /// database could not be read and the headers package was named from that file.
    KernelWithoutHeaders {
        kernel: &'a str,
        headers_package: Option<&'a str>,
        kernel_package: Option<&'a str>,
        pkgbase_file: Option<&'a Path>,
    },
    /// An old version stays installed on a kernel: its replacement failed (a warning).
    KeptInstalled {
        module: &'a str,
        version: &'a str,
        kernel: &'a str,
    },
    /// A version whose source went away is removed from the DKMS tree.
    Retiring { module: &'a str, version: &'a str },
    /// Cleaning up after a removed kernel failed for one thing; the rest goes on.
    KernelCleanupFailed { error: &'a EngineError },
    /// Modules were installed for a kernel after its initramfs was built and there
    /// is no way to regenerate it here (a warning).
    InitramfsNotRegenerated { kernel: &'a str },
    /// The initramfs of a kernel is regenerated with `command`.
    RegeneratingInitramfs { kernel: &'a str, command: &'a str },
    /// One module of a version is not installed on a kernel: the kernel's tree has
    /// it already, as new or newer (a warning; `--force` installs it).
    ModuleNotReplaced {
        target: &'a Target,
        module: &'a str,
        refusal: &'a super::version_check::Refusal,
    },
    /// `--force` or `--force-version-override` came from the force-install list.
    ForcedByList {
        target: &'a Target,
        version_override: bool,
    },
    /// framework.conf's `post_transaction` ran (its status never fails the command;
    /// a non-zero one is a warning).
    PostTransactionRan {
        command: &'a str,
        status: &'a crate::exec::ExitDescription,
        log: &'a Path,
    },

    // mktarball
    /// The builds for this kernel go into the tarball.
    ArchivingBuild { kernel: &'a str, arch: &'a str },
    /// A `--binaries-only` tarball is made (no source, the dkms.conf alone).
    ArchivingBinariesOnly,
    /// The module source goes into the tarball.
    ArchivingSource { source: &'a Path },
    /// Where the tarball is written.
    TarballLocation { path: &'a Path },
    /// A member that is no file, directory or symlink is left out (a warning).
    LeftOutOfTarball { path: &'a Path },

    // ldtarball
    /// A tarball of this module version is loaded.
    LoadingTarball { module: &'a str, version: &'a str },
    /// The DKMS tree already has this build, and no --force: kept (a warning).
    BuildExistsSkipped { dest: &'a Path },
    /// The tarball's source is copied into the source tree.
    CopyingTarballSource { to: &'a Path },
    /// The source tree already has the source: kept.
    KeepingExistingSource { dir: &'a Path },
    /// A binaries-only tarball's dkms.conf goes into a real `source` directory.
    CreatingSourceDir { dir: &'a Path },
    /// One build of the tarball is placed into the DKMS tree.
    LoadingBuild { dest: &'a Path },
    /// A directory name in the tarball is not UTF-8: ignored (a warning).
    IgnoredNonUtf8Name { path: &'a Path },
}

impl Event<'_> {
    /// Whether the user should see this even when steps are hidden (the scheduler
    /// hides the engine's steps while many builds run at once).
    pub fn is_warning(&self) -> bool {
        // No wildcard: a new event must be classified here.
        match self {
            Event::Deprecated { .. }
            | Event::NoModules { .. }
            | Event::BuildingDespiteMissingDependencies { .. }
            | Event::ModuleExcluded { .. }
            | Event::WaitingForInterruptedBuild { .. }
            | Event::InterruptedBuildStillRunning { .. }
            | Event::MakeHardCodesJobs { .. }
            | Event::StripFailed { .. }
            | Event::SigningFailed { .. }
            | Event::CompressionFailed { .. }
            | Event::SignFileMissing { .. }
            | Event::NoSigningKey { .. }
            | Event::ScriptNotExecutable { .. }
            | Event::InstallingDespitePreInstall { .. }
            | Event::DepmodSkipped { .. }
            | Event::DepmodFailed { .. }
            | Event::PostRemoveNotRun { .. }
            | Event::TargetFailed { .. }
            | Event::NoJobserver { .. }
            | Event::DependencyFailed { .. }
            | Event::Deferred { .. }
            | Event::DeferredInTransaction { .. }
            | Event::RejectedLine { .. }
            | Event::MoreRejectedLines { .. }
            | Event::KernelWithoutHeaders { .. }
            | Event::KeptInstalled { .. }
            | Event::KernelCleanupFailed { .. }
            | Event::InitramfsNotRegenerated { .. }
            | Event::ModuleNotReplaced { .. }
            | Event::LeftOutOfTarball { .. }
            | Event::BuildExistsSkipped { .. }
            | Event::IgnoredNonUtf8Name { .. }
            | Event::BuildCacheRejected { .. }
            | Event::BuildCacheFailed { .. } => true,
            Event::PostTransactionRan { status, .. } => {
                **status != crate::exec::ExitDescription::Code(0)
            }
            Event::CopyingSource { .. }
            | Event::LinkedSource { .. }
            | Event::Added { .. }
            | Event::Building { .. }
            | Event::SigningKeyGenerated { .. }
            | Event::SigningWith { .. }
            | Event::SigningSkipped { .. }
            | Event::ForcedByList { .. }
            | Event::Signed { .. }
            | Event::Built { .. }
            | Event::Uninstalled { .. }
            | Event::DepmodDone { .. }
            | Event::AlreadyDone { .. }
            | Event::RemovingForKernel { .. }
            | Event::TargetDone { .. }
            | Event::RunningScript { .. }
            | Event::ScriptDone { .. }
            | Event::ScriptOutput { .. }
            | Event::Installing { .. }
            | Event::Installed { .. }
            | Event::Uninstalling { .. }
            | Event::NotInstalled { .. }
            | Event::NotBuilt { .. }
            | Event::RunningDepmod { .. }
            | Event::Unbuilding { .. }
            | Event::Removing { .. }
            | Event::DepmodStale { .. }
            | Event::FromBuildCache { .. }
            | Event::JobStarted { .. }
            | Event::JobFinished { .. }
            | Event::AutoinstallDisabled
            | Event::Retiring { .. }
            | Event::RegeneratingInitramfs { .. }
            | Event::ArchivingBuild { .. }
            | Event::ArchivingBinariesOnly
            | Event::ArchivingSource { .. }
            | Event::TarballLocation { .. }
            | Event::LoadingTarball { .. }
            | Event::CopyingTarballSource { .. }
            | Event::KeepingExistingSource { .. }
            | Event::CreatingSourceDir { .. }
            | Event::LoadingBuild { .. } => false,
        }
    }
}

/// Receives what the library has to say while it works.
pub trait Progress: Sync {
    /// One event, to be rendered (or dropped) at once.
    fn event(&self, event: Event<'_>);
}

/// A [`Progress`] that drops everything, for callers that only want the result.
pub struct Silent;

impl Progress for Silent {
    fn event(&self, _: Event<'_>) {}
}

/// A [`Progress`] that keeps a debug rendering of every event, for tests.
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Recorder(pub std::sync::Mutex<Vec<String>>);

#[cfg(test)]
impl Progress for Recorder {
    fn event(&self, event: Event<'_>) {
        self.0.lock().unwrap().push(format!("{event:?}"));
    }
}
