//! Command policies above the engine: what `build`/`install`/`uninstall`/`unbuild`
//! do over several kernels and when depmod runs after them, `remove`'s depmod,
//! `match`'s selection, and `autoinstall`'s outcome classes (installed, skipped and
//! why, failed and why). The binary only parses arguments, renders the reports and
//! picks the exit code from them.
//!
//! The hook (`crate::hook`) uses the same outcome classes.

use crate::engine::{self, EngineError, Event, JobResult, Options, Progress, RunReport};
use crate::exit::{Exit, HasExitCode};
use crate::name::{Arch, KernelRelease, ModuleName, ModuleVersion};
use crate::plan::{self, Left, Plan};
use crate::tree::{self, KernelArch, Target};
use crate::Host;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Why a target was left out without that being a failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Skip {
    /// BUILD_EXCLUSIVE_* rules the kernel out.
    Excluded(String),
    /// The kernel has no headers.
    NoHeaders,
    /// BUILD_DEPENDS not registered with DKMS; retried on the next run.
    WaitsFor(Vec<String>),
}

/// Why a target failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Not built: known to fail before building (bad dkms.conf, a cycle), or a
    /// dependency failed.
    NotBuilt(String),
    /// Building or installing failed; `log` is the make.log when there is one.
    Failed {
        message: String,
        log: Option<PathBuf>,
    },
}

/// Every target of a planned run, sorted into outcome classes, in plan order.
#[derive(Debug, Clone, Default)]
pub struct Outcomes {
    pub installed: Vec<Target>,
    pub skipped: Vec<(Target, Skip)>,
    pub failed: Vec<(Target, Failure)>,
    /// Kernels whose depmod failed, with the error.
    pub depmod_failures: Vec<(String, String)>,
    /// Targets installed from the build cache, without compiling.
    pub from_cache: Vec<Target>,
}

impl Outcomes {
    /// What the plan leaves out before anything runs. `AlreadyInstalled` is no
    /// outcome: nothing happened to it.
    pub fn of_plan(plan: &Plan) -> Outcomes {
        let mut outcomes = Outcomes::default();
        for decision in &plan.decisions {
            let target = decision.target.clone();
            match &decision.left {
                None | Some(Left::AlreadyInstalled) => {}
                Some(Left::Excluded(reason)) => outcomes
                    .skipped
                    .push((target, Skip::Excluded(reason.clone()))),
                Some(Left::NoHeaders) => outcomes.skipped.push((target, Skip::NoHeaders)),
                Some(Left::Deferred(deps)) => outcomes
                    .skipped
                    .push((target, Skip::WaitsFor(deps.clone()))),
                Some(Left::Failed(reason)) => outcomes
                    .failed
                    .push((target, Failure::NotBuilt(reason.clone()))),
            }
        }
        outcomes
    }

    /// Adds what a run of the plan did.
    pub fn add_run(&mut self, report: RunReport) {
        for outcome in report.outcomes {
            let target = outcome.target;
            match outcome.result {
                JobResult::Installed => self.installed.push(target),
                JobResult::Excluded { reason } => {
                    self.skipped.push((target, Skip::Excluded(reason)))
                }
                JobResult::Skipped { reason } => {
                    self.failed.push((target, Failure::NotBuilt(reason)))
                }
                JobResult::Failed { message, log, .. } => {
                    self.failed.push((target, Failure::Failed { message, log }))
                }
            }
        }
        self.depmod_failures.extend(report.depmod_failures);
        self.from_cache.extend(report.from_cache);
    }

    /// Whether nothing failed (depmod included).
    pub fn succeeded(&self) -> bool {
        self.failed.is_empty() && self.depmod_failures.is_empty()
    }
}

/// What `autoinstall` did.
#[derive(Debug, Clone)]
pub enum Autoinstall {
    /// `<etc>/no-autoinstall` exists.
    Disabled,
    Ran(Outcomes),
}

impl Autoinstall {
    /// Upstream's exit: 11 when anything failed.
    pub fn exit(&self) -> Exit {
        match self {
            Autoinstall::Ran(outcomes) if !outcomes.succeeded() => Exit::AutoinstallFailed,
            _ => Exit::Success,
        }
    }
}

/// `autoinstall`: the plan's targets, dependencies first, independent ones in
/// parallel; a failure skips only what depends on it.
pub fn autoinstall(
    host: &Host,
    kernels: &[KernelArch],
    options: &Options,
    progress: &dyn Progress,
) -> Autoinstall {
    if host.paths.etc_dir.join("no-autoinstall").exists() {
        progress.event(Event::AutoinstallDisabled);
        return Autoinstall::Disabled;
    }
    let plan = plan::autoinstall(host, kernels);
    let mut outcomes = Outcomes::of_plan(&plan);
    for (target, skip) in &outcomes.skipped {
        if let Skip::WaitsFor(missing) = skip {
            progress.event(Event::Deferred { target, missing });
        }
    }
    outcomes.add_run(engine::run_plan(host, &plan, options, progress));
    Autoinstall::Ran(outcomes)
}

/// `autoinstall`'s plan as `dkms-hook plan` shows it: what the run would really do.
/// A target whose failure is remembered (same source, same headers) is not rebuilt
/// by autoinstall or the hook unless `retry_failed`, so it is shown as failed with
/// the remembered failure's message, and so is everything that waits for it.
pub fn autoinstall_preview(host: &Host, kernels: &[KernelArch], retry_failed: bool) -> Plan {
    let mut plan = plan::autoinstall(host, kernels);
    if retry_failed {
        return plan;
    }
    let mut failed: BTreeSet<Target> = BTreeSet::new();
    for decision in &mut plan.decisions {
        if decision.left.is_some() {
            continue;
        }
        let target = &decision.target;
        if let Some(known) = crate::failure::still_failing(&host.paths, target) {
            let error = EngineError::KnownFailure {
                target: Box::new(target.clone()),
                exit_code: known.exit_code,
                log: known.log.unwrap_or_default(),
            };
            decision.left = Some(Left::Failed(error.to_string()));
            failed.insert(target.clone());
        } else if let Some(dependency) = decision.after.iter().find(|a| failed.contains(*a)) {
            decision.left = Some(Left::Failed(format!(
                "it waits for {}/{}, which failed before and is not retried (pass --retry-failed)",
                dependency.module, dependency.version
            )));
            failed.insert(target.clone());
        }
    }
    plan
}

/// The per-kernel commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PerKernel {
    Build,
    Install,
    Uninstall,
    Unbuild,
}

/// `build`/`install`/`uninstall`/`unbuild` of `module/version` for each kernel.
/// Failures are reported as [`Event::TargetFailed`] as they happen and the next
/// kernel still runs; depmod runs once for each kernel whose install tree changed.
/// Returns the exit of the last failure (upstream's is that of the last kernel: ours
/// lets no failure hide behind a later success), `Success` when none failed.
pub fn per_kernel(
    command: PerKernel,
    host: &Host,
    module: &ModuleName,
    version: &ModuleVersion,
    kernels: &[KernelArch],
    options: &Options,
    progress: &dyn Progress,
) -> Exit {
    per_kernel_with(
        command,
        host,
        (module, version),
        kernels,
        options,
        WhenDone::Fail,
        progress,
    )
}

/// What a per-kernel command does with a target already in the state it asks for
/// (`build` of what is built, `install` of what is installed, without `--force`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WhenDone {
    /// A failure with the error's exit (the `dkms-hook` face's rule).
    Fail,
    /// A skip, reported as [`Event::AlreadyDone`], and success (upstream's rule,
    /// which `set -e` scriptlets rely on).
    Skip,
}

/// [`per_kernel`] with the rule for what is already done.
pub fn per_kernel_with(
    command: PerKernel,
    host: &Host,
    (module, version): (&ModuleName, &ModuleVersion),
    kernels: &[KernelArch],
    options: &Options,
    when_done: WhenDone,
    progress: &dyn Progress,
) -> Exit {
    let mut exit = Exit::Success;
    let mut touched = BTreeSet::new();
    for (kernel, arch) in kernels {
        let target = Target::new(module, version, kernel, arch);
        let result = match command {
            PerKernel::Build => engine::build(host, &target, options, progress),
            PerKernel::Install
                if when_done == WhenDone::Skip
                    && options.force
                    && target.is_installed(&host.paths) =>
            {
                // Upstream uninstalls first, with its own depmod, then installs.
                reinstall(host, &target, options, progress).map(|()| {
                    touched.insert(kernel.clone());
                })
            }
            PerKernel::Install => engine::install(host, &target, options, progress).map(|()| {
                touched.insert(kernel.clone());
            }),
            PerKernel::Uninstall => {
                engine::uninstall(host, &target, options, progress).map(|done| {
                    if done {
                        touched.insert(kernel.clone());
                    } else {
                        progress.event(Event::NotInstalled { target: &target });
                    }
                })
            }
            PerKernel::Unbuild if when_done == WhenDone::Skip => {
                unbuild_one(host, &target, options, progress)
            }
            PerKernel::Unbuild => engine::unbuild(host, &target, options, progress).map(|done| {
                touched.insert(kernel.clone());
                if !done {
                    progress.event(Event::NotBuilt { target: &target });
                }
            }),
        };
        match result {
            Err(
                error @ (EngineError::AlreadyBuilt { .. } | EngineError::AlreadyInstalled { .. }),
            ) if when_done == WhenDone::Skip => {
                progress.event(Event::AlreadyDone { error: &error });
            }
            Err(error) => {
                exit = error.exit();
                progress.event(Event::TargetFailed { error: &error });
            }
            Ok(()) => {}
        }
    }
    depmod_each(host, touched, options, progress);
    exit
}

/// Which kernel package hook a distribution calls: before a kernel is installed or
/// removed (`kernel_preinst`, `kernel_prerm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelHook {
    /// Only AUTOINSTALL module versions are unbuilt (upstream's rule).
    Preinst,
    /// Every module version built for the kernel is unbuilt.
    Prerm,
}

/// `kernel_preinst`/`kernel_prerm -k K`: every module version built for `kernel` is
/// unbuilt (uninstalled first), then depmod runs once. Failures are reported as
/// [`Event::TargetFailed`]; the exit is [`Exit::KernelHookFailed`] when any failed.
pub fn kernel_unbuild(
    hook: KernelHook,
    host: &Host,
    kernel: &KernelRelease,
    arch: &Arch,
    options: &Options,
    progress: &dyn Progress,
) -> Exit {
    let mut exit = Exit::Success;
    let mut touched = false;
    for mv in tree::module_versions(&host.paths, None, None) {
        let target = Target::new(&mv.module, &mv.version, kernel, arch);
        if !target.is_built(&host.paths) {
            continue;
        }
        if hook == KernelHook::Preinst {
            let autoinstall = host
                .read_conf(&mv.module, &mv.version, kernel, arch)
                .is_ok_and(|conf| conf.autoinstall);
            if !autoinstall {
                continue;
            }
        }
        progress.event(Event::RemovingForKernel { target: &target });
        let installed = target.is_installed(&host.paths);
        if !installed {
            progress.event(Event::NotInstalled { target: &target });
        }
        match engine::unbuild(host, &target, options, progress) {
            Ok(_) => touched |= installed,
            Err(error) => {
                exit = Exit::KernelHookFailed;
                progress.event(Event::TargetFailed { error: &error });
            }
        }
        progress.event(Event::TargetDone { target: &target });
    }
    if touched {
        depmod_each(host, BTreeSet::from([kernel.clone()]), options, progress);
    }
    exit
}

/// `remove module/version` from `kernels` (or `all` of them), then depmod for every
/// kernel it touched.
pub fn remove(
    host: &Host,
    module: &ModuleName,
    version: &ModuleVersion,
    kernels: &[KernelArch],
    all: bool,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let touched: BTreeSet<KernelRelease> = if all {
        tree::built_for(&host.paths, module, version, None, None)
            .into_iter()
            .map(|(k, _)| k)
            .collect()
    } else {
        kernels.iter().map(|(k, _)| k.clone()).collect()
    };
    engine::remove(host, module, version, kernels, all, options, progress)?;
    depmod_each(host, touched, options, progress);
    Ok(())
}

/// `remove module/version` as upstream dkms does it: for each kernel (every one it
/// is built for with `all`) the module is uninstalled (depmod at once) and unbuilt,
/// each step saying when there was nothing to do, then the version is deleted.
pub fn remove_each_kernel(
    host: &Host,
    module: &ModuleName,
    version: &ModuleVersion,
    kernels: &[KernelArch],
    all: bool,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let listed = tree::module_versions(&host.paths, Some(module), Some(version));
    let Some(found) = listed.first() else {
        return Err(EngineError::NotAdded {
            module: module.to_string(),
            version: version.to_string(),
        });
    };
    // A broken version has nothing to unbuild through its source: the engine's
    // remove deals with it.
    if found.source == tree::SourceState::Added {
        let kernels = if all {
            tree::built_for(&host.paths, module, version, None, None)
        } else {
            kernels.to_vec()
        };
        for (kernel, arch) in &kernels {
            let target = Target::new(module, version, kernel, arch);
            unbuild_one(host, &target, options, progress)?;
            progress.event(Event::TargetDone { target: &target });
        }
    }
    engine::remove(host, module, version, kernels, all, options, progress)
}

/// Uninstalls (then runs depmod) and unbuilds one target, reporting each step that
/// finds nothing to do, as upstream's `unbuild` does.
fn unbuild_one(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    if engine::uninstall(host, target, options, progress)? {
        depmod_each(
            host,
            BTreeSet::from([target.kernel.clone()]),
            options,
            progress,
        );
    } else {
        progress.event(Event::NotInstalled { target });
    }
    if !engine::unbuild(host, target, options, progress)? {
        progress.event(Event::NotBuilt { target });
    }
    Ok(())
}

/// `install --force` of an installed target, as upstream does it: uninstall, depmod,
/// then install.
fn reinstall(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    if engine::uninstall(host, target, options, progress)? {
        depmod_each(
            host,
            BTreeSet::from([target.kernel.clone()]),
            options,
            progress,
        );
    }
    progress.event(Event::TargetDone { target });
    engine::install(host, target, options, progress)
}

/// depmod for each kernel; a failure is a warning (the command itself succeeded).
fn depmod_each(
    host: &Host,
    kernels: BTreeSet<KernelRelease>,
    options: &Options,
    progress: &dyn Progress,
) {
    for kernel in kernels {
        match engine::depmod(host, &kernel, options, progress) {
            Ok(true) => progress.event(Event::DepmodDone { kernel: &kernel }),
            Ok(false) => {}
            Err(error) => progress.event(Event::DepmodFailed {
                kernel: &kernel,
                error: &error,
            }),
        }
    }
}

/// `match --templatekernel T -k K`: every module version installed for `template`
/// (same arch) is installed for `kernel`, through the scheduler so dependencies come
/// first. Returns what failed (dependents of a failure included).
pub fn match_kernel(
    host: &Host,
    template: &KernelRelease,
    kernel: &KernelRelease,
    arch: &Arch,
    options: &Options,
    progress: &dyn Progress,
) -> Vec<engine::Outcome> {
    let plan = match_plan(host, template, kernel, arch);
    let report = engine::run_plan(host, &plan, options, progress);
    report.failed().cloned().collect()
}

/// The plan of `match`: what is installed for `template` is rebuilt for `kernel`.
pub fn match_plan(
    host: &Host,
    template: &KernelRelease,
    kernel: &KernelRelease,
    arch: &Arch,
) -> Plan {
    let installed: BTreeSet<(ModuleName, ModuleVersion)> =
        tree::module_versions(&host.paths, None, None)
            .into_iter()
            .filter(|mv| tree::is_installed(&host.paths, &mv.module, &mv.version, template, arch))
            .map(|mv| (mv.module, mv.version))
            .collect();
    plan::plan(host, &[(kernel.clone(), arch.clone())], |_, m, v| {
        installed
            .contains(&(m.clone(), v.clone()))
            .then_some(plan::Selection::Rebuild)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outcome;
    use crate::plan::Decision;
    use std::path::Path;

    fn target(m: &str, k: &str) -> Target {
        Target::parse(m, "1.0", k, "x86_64").unwrap()
    }

    #[test]
    fn outcome_classes_keep_plan_order_and_count_a_failed_dependency_as_a_failure() {
        let decision = |m: &str, left: Option<Left>| Decision {
            target: target(m, "6.1"),
            left,
            after: Vec::new(),
            rebuild: false,
        };
        let plan = Plan {
            decisions: vec![
                decision("ok", Some(Left::AlreadyInstalled)),
                decision("ex", Some(Left::Excluded("arch".into()))),
                decision("nh", Some(Left::NoHeaders)),
                decision("wait", Some(Left::Deferred(vec!["base".into()]))),
                decision("bad", Some(Left::Failed("bad dkms.conf".into()))),
                decision("a", None),
                decision("b", None),
                decision("c", None),
            ],
        };
        let mut outcomes = Outcomes::of_plan(&plan);
        assert!(!outcomes.succeeded());
        outcomes.add_run(RunReport {
            outcomes: vec![
                Outcome {
                    target: target("a", "6.1"),
                    result: JobResult::Installed,
                },
                Outcome {
                    target: target("b", "6.1"),
                    result: JobResult::Failed {
                        message: "make failed".into(),
                        log: Some("/x/make.log".into()),
                        exit_code: 10,
                    },
                },
                Outcome {
                    target: target("c", "6.1"),
                    result: JobResult::Skipped {
                        reason: "b failed".into(),
                    },
                },
            ],
            from_cache: vec![],
            depmod_failures: vec![("6.1".into(), "depmod: oops".into())],
        });
        let names = |v: Vec<&Target>| v.iter().map(|t| t.module.clone()).collect::<Vec<_>>();
        assert_eq!(names(outcomes.installed.iter().collect()), ["a"]);
        assert_eq!(
            names(outcomes.skipped.iter().map(|(t, _)| t).collect()),
            ["ex", "nh", "wait"]
        );
        assert_eq!(outcomes.skipped[2].1, Skip::WaitsFor(vec!["base".into()]));
        assert_eq!(
            names(outcomes.failed.iter().map(|(t, _)| t).collect()),
            ["bad", "b", "c"]
        );
        assert_eq!(outcomes.failed[2].1, Failure::NotBuilt("b failed".into()));
        assert_eq!(Autoinstall::Ran(outcomes).exit(), Exit::AutoinstallFailed);
        assert_eq!(Autoinstall::Disabled.exit(), Exit::Success);
        assert_eq!(Autoinstall::Ran(Outcomes::default()).exit(), Exit::Success);
    }

    /// A source `name-1.0` added to a relocated tree with one kernel that has headers.
    fn add_module(host: &Host, name: &str, extra: &str) {
        let dir = host.paths.source_tree.join(format!("{name}-1.0"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("dkms.conf"),
            format!("PACKAGE_NAME=\"{name}\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"{name}\"\nDEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\n{extra}"),
        )
        .unwrap();
        let source = engine::AddSource::ModuleVersion {
            module: ModuleName::parse(name).unwrap(),
            version: ModuleVersion::parse("1.0").unwrap(),
        };
        let options = Options::default();
        engine::add(
            host,
            &source,
            &KernelRelease::parse("6.1").unwrap(),
            &Arch::parse("x86_64").unwrap(),
            &options,
            &crate::event::Recorder::default(),
        )
        .unwrap();
    }

    #[test]
    fn the_plan_shows_a_remembered_failure_and_its_dependents_as_not_built() {
        let root = tempfile::tempdir().unwrap();
        let at = |p: &str| root.path().join(p);
        let paths = crate::Paths {
            dkms_tree: at("var/lib/dkms"),
            source_tree: at("usr/src"),
            install_tree: at("usr/lib/modules"),
            etc_dir: at("etc/dkms"),
            temp_dir: at("tmp"),
            ..crate::Paths::default()
        };
        std::fs::create_dir_all(paths.install_tree.join("6.1/build/include")).unwrap();
        for dir in [&paths.dkms_tree, &paths.temp_dir] {
            std::fs::create_dir_all(dir).unwrap();
        }
        let mut host = Host::new(paths, crate::Settings::default());
        host.trust = None;
        add_module(&host, "base", "");
        add_module(&host, "user", "BUILD_DEPENDS=(\"base\")\n");
        add_module(&host, "other", "");
        let kernels = [(
            KernelRelease::parse("6.1").unwrap(),
            Arch::parse("x86_64").unwrap(),
        )];
        let failed = target("base", "6.1");
        crate::failure::record(
            &host,
            &failed,
            10,
            "make failed",
            Some(Path::new("/x/make.log")),
        );

        let left = |plan: &Plan, m: &str| {
            plan.decisions
                .iter()
                .find(|d| d.target.module == m)
                .map(|d| d.left.clone())
                .unwrap()
        };
        let plan = autoinstall_preview(&host, &kernels, false);
        let Some(Left::Failed(why)) = left(&plan, "base") else {
            panic!("{plan:?}");
        };
        assert!(
            why.contains("--retry-failed") && why.contains("/x/make.log"),
            "{why}"
        );
        let Some(Left::Failed(why)) = left(&plan, "user") else {
            panic!("{plan:?}");
        };
        assert!(why.contains("base/1.0"), "{why}");
        assert_eq!(left(&plan, "other"), None);

        // --retry-failed builds it again, as autoinstall would.
        let plan = autoinstall_preview(&host, &kernels, true);
        assert_eq!(left(&plan, "base"), None);
        assert_eq!(left(&plan, "user"), None);
    }
}
