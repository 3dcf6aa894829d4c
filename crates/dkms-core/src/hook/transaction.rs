//! The work of the three hooks, each returning a [`HookReport`]: what was added,
//! built and installed, what failed (with its log), what was retired or kept, the
//! initramfs regenerated, and the problems for the closing summary. Nothing here
//! stops early: PostTransaction hooks cannot fail pacman, so every module of the
//! transaction is still tried and the failures are summed up at the end.

use super::initramfs::{self, InitramfsOutcome};
use super::{note, targets, Changes, Source};
use crate::commands::{Failure, Outcomes};
use crate::conf::ConfError;
use crate::engine::{self, AddSource, EngineError, Event, Options, Progress};
use crate::exec::ExecError;
use crate::exit::Exit;
use crate::name::{KernelRelease, ModuleName, ModuleVersion};
use crate::plan::Left;
use crate::tree::{self, SourceState, Target};
use crate::Host;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Which PreTransaction hook runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PreTransaction {
    /// Upgrade (a same-path reinstall): note the versions replaced.
    Upgrade,
    /// Remove: note removed sources; clean up after kernels being removed.
    Remove,
}

/// A problem for the closing summary; each makes the hook exit non-zero.
#[derive(Debug)]
pub enum Problem {
    /// A module source of the transaction could not be identified (its dkms.conf).
    NotIdentified { dir: PathBuf, error: ConfError },
    /// `add` of a source of the transaction failed.
    AddFailed {
        module: String,
        version: String,
        error: EngineError,
    },
    /// A target was not built, or failed to build or install.
    Target { target: Target, failure: Failure },
    /// depmod failed for a kernel.
    Depmod { kernel: String, error: String },
    /// Retiring the build of a removed version failed.
    Unbuild { target: Target, error: EngineError },
    /// Removing a removed version from the DKMS tree failed.
    Remove {
        module: String,
        version: String,
        error: EngineError,
    },
    /// Regenerating an initramfs failed.
    Initramfs { kernel: String, error: ExecError },
}

/// What a hook did.
#[derive(Debug, Default)]
pub struct HookReport {
    /// Input lines that are not paths: (1-based line number, why).
    pub rejected: Vec<(usize, String)>,
    /// Sources of the transaction, identified by their dkms.conf.
    pub sources: Vec<Source>,
    /// `module/version` added to the DKMS tree.
    pub added: Vec<(ModuleName, ModuleVersion)>,
    /// Targets built and installed.
    pub installed: Vec<Target>,
    /// Of those, the ones taken from the build cache, without compiling.
    pub from_cache: Vec<Target>,
    /// Builds of removed versions dropped (another version replaced them, or none).
    pub unbuilt: Vec<Target>,
    /// Removed versions kept installed on a kernel: their replacement failed there.
    pub kept: Vec<Target>,
    /// `module/version` removed from the DKMS tree: their source went away.
    pub retired: Vec<(String, String)>,
    /// Kernels being removed whose DKMS leftovers were cleaned up.
    pub kernels_cleaned: Vec<String>,
    /// Failures cleaning up after a removed kernel (already reported as
    /// [`Event::KernelCleanupFailed`]).
    pub cleanup_errors: Vec<EngineError>,
    /// Initramfs regenerations (or why not).
    pub initramfs: Vec<InitramfsOutcome>,
    /// The closing summary, in the order things happened.
    pub problems: Vec<Problem>,
}

impl HookReport {
    /// Success, or a general failure when anything went wrong.
    pub fn exit(&self) -> Exit {
        if self.problems.is_empty() && self.cleanup_errors.is_empty() {
            Exit::Success
        } else {
            Exit::Failure
        }
    }
}

/// How many rejected input lines are named one by one; the rest are counted.
const MAX_REJECTED_SHOWN: usize = 5;

/// Parses the input, reports rejected lines, and identifies the sources still on
/// disk (removed ones are gone after the transaction, new ones not yet there before).
fn start(
    host: &Host,
    input: &[u8],
    kernel: &str,
    progress: &dyn Progress,
) -> (Changes, HookReport) {
    let changes = targets::parse_targets(input);
    let mut report = HookReport::default();
    // pacman only ever sends paths: a line that cannot be one is ignored, as the
    // unrelated paths are, but said (pacman.log keeps it), so a bug upstream of us is
    // seen. It does not fail the hook.
    for (line, reason) in changes.rejected.iter().take(MAX_REJECTED_SHOWN) {
        progress.event(Event::RejectedLine {
            line: *line,
            reason,
        });
    }
    if changes.rejected.len() > MAX_REJECTED_SHOWN {
        progress.event(Event::MoreRejectedLines {
            count: changes.rejected.len() - MAX_REJECTED_SHOWN,
        });
    }
    report.rejected = changes.rejected.clone();
    let arch = crate::kernel::default_arch();
    for dir in &changes.sources {
        let local = source_dir(host, dir);
        if !local.join("dkms.conf").is_file() {
            continue;
        }
        match targets::identify(host, &local, kernel, arch) {
            Ok(source) => report.sources.push(source),
            Err(error) => report
                .problems
                .push(Problem::NotIdentified { dir: local, error }),
        }
    }
    (changes, report)
}

/// `usr/src/<dir>` from pacman, inside our (possibly relocated) source tree.
fn source_dir(host: &Host, relative: &Path) -> PathBuf {
    match relative.strip_prefix("usr/src") {
        Ok(rest) => host.paths.source_tree.join(rest),
        Err(_) => PathBuf::from("/").join(relative),
    }
}

/// The PreTransaction hooks: note the sources being replaced or removed; for
/// [`PreTransaction::Remove`], also clean up after the kernels being removed.
/// `kernel` is the running kernel (the context a dkms.conf is read in). Fails only
/// when the note cannot be written (the post-transaction hook then could not retire
/// the old versions).
pub fn pre_transaction(
    host: &Host,
    kind: PreTransaction,
    input: &[u8],
    kernel: &KernelRelease,
    options: &Options,
    progress: &dyn Progress,
) -> Result<HookReport, EngineError> {
    let (changes, mut report) = start(host, input, kernel, progress);
    note::append(host, &report.sources)?;
    if kind == PreTransaction::Remove {
        remove_kernels(host, &changes, options, progress, &mut report);
    }
    Ok(report)
}

/// A kernel being removed takes everything DKMS built for it along, including the
/// `updates/dkms` directory pacman would leave behind. Headers alone going away
/// leave the installed modules working, so they stay.
fn remove_kernels(
    host: &Host,
    changes: &Changes,
    options: &Options,
    progress: &dyn Progress,
    report: &mut HookReport,
) {
    let no_depmod = Options {
        no_depmod: true,
        ..options.clone()
    };
    let failed = |error: EngineError, report: &mut HookReport| {
        progress.event(Event::KernelCleanupFailed { error: &error });
        report.cleanup_errors.push(error);
    };
    for kernel in &changes.kernels {
        for mv in tree::module_versions(&host.paths, None, None) {
            for (k, a) in tree::built_for(&host.paths, &mv.module, &mv.version, Some(kernel), None)
            {
                let target = Target::new(&mv.module, &mv.version, &k, &a);
                match engine::unbuild(host, &target, &no_depmod, progress) {
                    Ok(_) => report.unbuilt.push(target),
                    Err(e) => failed(e, report),
                }
            }
        }
        let dkms_dir = host.paths.kernel_dkms_dir(kernel);
        if let Err(e) = engine::remove_path(host, &dkms_dir) {
            failed(e, report);
        }
        let updates = host.paths.kernel_updates_dir(kernel);
        if let Ok(root) = host.install_root() {
            root.remove_empty_dirs(&updates, &host.paths.kernel_dir(kernel));
        }
        // Work directories and failure records of that kernel go too.
        for mv in tree::module_versions(&host.paths, None, None) {
            for (k, path, _) in tree::kernel_entries(&host.paths, &mv.module, &mv.version) {
                if k == *kernel {
                    if let Err(e) = engine::remove_path(host, &path) {
                        failed(e, report);
                    }
                }
            }
        }
        report.kernels_cleaned.push(kernel.clone());
    }
}

/// The PostTransaction hook (Install/Upgrade/Remove): add and build what changed for
/// every kernel with headers, build the newest AUTOINSTALL modules for kernels that
/// changed, retire versions whose source went away, regenerate the initramfs where
/// mkinitcpio's hook did not run. `kernel` is the running kernel.
pub fn post_transaction(
    host: &Host,
    input: &[u8],
    kernel: &KernelRelease,
    options: &Options,
    progress: &dyn Progress,
) -> HookReport {
    let (changes, mut report) = start(host, input, kernel, progress);
    let arch = crate::kernel::default_arch_name();
    for source in &report.sources {
        let listed =
            tree::module_versions(&host.paths, Some(&source.module), Some(&source.version));
        if listed
            .first()
            .is_some_and(|mv| mv.source == SourceState::Added)
        {
            continue;
        }
        let added = engine::add(
            host,
            &AddSource::Path(source.dir.clone()),
            kernel,
            &arch,
            options,
            progress,
        );
        match added {
            Ok(mv) => report.added.push(mv),
            Err(error) => report.problems.push(Problem::AddFailed {
                module: source.module.to_string(),
                version: source.version.to_string(),
                error,
            }),
        }
    }
    warn_headless(host, &changes, progress);

    let plan = targets::install_plan(host, &report.sources, &changes, &arch);
    for decision in &plan.decisions {
        if let Some(Left::Deferred(missing)) = &decision.left {
            progress.event(Event::DeferredInTransaction {
                target: &decision.target,
                missing,
            });
        }
    }
    // Excluded and headless targets are no problem here: only failures count.
    let planned = Outcomes::of_plan(&plan);
    let mut outcomes = Outcomes::default();
    outcomes.add_run(engine::run_plan(host, &plan, options, progress));
    // An old version is kept where its replacement was tried and failed; one that
    // the plan could not even try (a bad dkms.conf) does not hold the old one back.
    let failed_on: BTreeSet<(ModuleName, KernelRelease)> = outcomes
        .failed
        .iter()
        .map(|(t, _)| (t.module.clone(), t.kernel.clone()))
        .collect();
    let installed_on: BTreeSet<String> = outcomes
        .installed
        .iter()
        .map(|t| t.kernel.to_string())
        .collect();
    for (target, failure) in planned.failed.iter().chain(&outcomes.failed) {
        report.problems.push(Problem::Target {
            target: target.clone(),
            failure: failure.clone(),
        });
    }
    for (kernel, error) in &outcomes.depmod_failures {
        report.problems.push(Problem::Depmod {
            kernel: kernel.clone(),
            error: error.clone(),
        });
    }
    report.from_cache = outcomes.from_cache;
    report.installed = outcomes.installed;
    retire_removed_versions(host, &failed_on, options, progress, &mut report);
    for kernel in targets::headers_only_kernels(&changes).intersection(&installed_on) {
        let (outcome, error) = initramfs::regenerate(host, kernel, progress);
        report.initramfs.push(outcome);
        if let Some(error) = error {
            report.problems.push(Problem::Initramfs {
                kernel: kernel.clone(),
                error,
            });
        }
    }
    report
}

/// Names the headers package of each kernel of the transaction without headers: the
/// pacman database knows the kernel's real pkgbase; the pkgbase file is the fallback
/// when it cannot be read.
fn warn_headless(host: &Host, changes: &Changes, progress: &dyn Progress) {
    let headless = targets::kernels_without_headers(host, changes);
    if headless.is_empty() {
        return;
    }
    let owners = crate::status::owners(host, &[], &headless);
    for (k, packages) in headless.iter().zip(&owners.packages.kernels) {
        let pkgbase_file = k.dir.join("pkgbase");
        let (kernel_package, pkgbase_file) = match (&owners.packages.error, &packages.package) {
            (None, Some(p)) => (Some(p.name.as_str()), None),
            (Some(_), _) => (None, Some(pkgbase_file.as_path())),
            (None, None) => (None, None),
        };
        progress.event(Event::KernelWithoutHeaders {
            kernel: &k.release,
            headers_package: packages.headers_package.as_deref(),
            kernel_package,
            pkgbase_file,
        });
    }
}

/// Versions whose source went away in this transaction (noted by the pre-transaction
/// hooks, or found with a dangling source link) are retired kernel by kernel: where
/// another version of the module is now installed, the old build is dropped; where
/// none is (the package was removed, not upgraded), it is uninstalled; where the new
/// version failed to build, the old one stays installed and working.
fn retire_removed_versions(
    host: &Host,
    failed: &BTreeSet<(ModuleName, KernelRelease)>,
    options: &Options,
    progress: &dyn Progress,
    report: &mut HookReport,
) {
    let noted = note::take(host);
    for mv in tree::module_versions(&host.paths, None, None) {
        if mv.source == SourceState::Added {
            continue;
        }
        // Removed in this transaction (noted while its dkms.conf was readable), or a
        // broken leftover that no kernel uses any more. A broken version that is still
        // installed from an earlier transaction (its replacement failed) is kept.
        let removed_now = noted.contains(&format!("{}/{}", mv.module, mv.version))
            && !report
                .sources
                .iter()
                .any(|s| s.module == mv.module && s.version == mv.version);
        let builds = tree::built_for(&host.paths, &mv.module, &mv.version, None, None);
        let unused = !builds
            .iter()
            .any(|(k, a)| tree::is_installed(&host.paths, &mv.module, &mv.version, k, a));
        if !removed_now && !unused {
            continue;
        }
        let mut keep = false;
        for (k, a) in builds {
            let target = Target::new(&mv.module, &mv.version, &k, &a);
            if target.is_installed(&host.paths) && failed.contains(&(mv.module.clone(), k.clone()))
            {
                progress.event(Event::KeptInstalled {
                    module: &mv.module,
                    version: &mv.version,
                    kernel: &k,
                });
                report.kept.push(target);
                keep = true;
                continue;
            }
            match engine::unbuild(host, &target, options, progress) {
                Ok(_) => report.unbuilt.push(target),
                Err(error) => {
                    report.problems.push(Problem::Unbuild { target, error });
                    keep = true;
                }
            }
        }
        if !keep {
            progress.event(Event::Retiring {
                module: &mv.module,
                version: &mv.version,
            });
            match engine::remove(host, &mv.module, &mv.version, &[], true, options, progress) {
                Ok(()) => report
                    .retired
                    .push((mv.module.to_string(), mv.version.to_string())),
                Err(error) => report.problems.push(Problem::Remove {
                    module: mv.module.to_string(),
                    version: mv.version.to_string(),
                    error,
                }),
            }
        }
    }
}
