//! The engine commands (add, build, install, uninstall, unbuild, remove, autoinstall):
//! resolve the command line into targets, call dkms-core, report, pick the exit code.

use crate::cli::{Action, GlobalArgs};
use crate::output::Printer;
use anyhow::{bail, Result};
use dkms_core::engine::{self, AddSource, EngineError, Options};
use dkms_core::plan::{self, Left};
use dkms_core::tree::Target;
use dkms_core::Host;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

/// Runs one engine action.
pub fn run(
    action: Action,
    host: &Host,
    global: &GlobalArgs,
    targets: &[String],
    printer: &Printer,
) -> Result<ExitCode> {
    let options = Options {
        force: global.force,
        no_depmod: global.no_depmod,
        jobs: global.jobs.or(host.settings.jobs).unwrap_or_else(num_cpus),
        conf_override: global.conf.clone(),
    };
    let kernels = crate::kernels_with_arches(global)?;
    let kernels: Vec<(String, String)> = kernels
        .into_iter()
        .map(|(k, a)| {
            (
                k,
                a.unwrap_or_else(|| dkms_core::kernel::default_arch().to_string()),
            )
        })
        .collect();
    let with_default = || {
        if kernels.is_empty() {
            vec![(
                running_kernel(),
                dkms_core::kernel::default_arch().to_string(),
            )]
        } else {
            kernels.clone()
        }
    };
    match action {
        Action::Add => {
            let source = add_source(global, targets)?;
            let (kernel, arch) = with_default().remove(0);
            let (m, v) = engine::add(host, &source, &kernel, &arch, &options, printer)
                .map_err(engine_error)?;
            printer.step(&format!("Added {m}/{v}"));
            Ok(ExitCode::SUCCESS)
        }
        Action::Build | Action::Install | Action::Uninstall | Action::Unbuild => {
            if global.all && !matches!(action, Action::Uninstall | Action::Unbuild) {
                bail!(crate::exit(
                    5,
                    format!("The action {action:?} does not support the --all parameter.")
                        .to_lowercase()
                ));
            }
            let (module, version) = module_version(global, targets)?;
            let kernels = if global.all {
                dkms_core::tree::built_for(&host.paths, &module, &version, None, None)
            } else {
                with_default()
            };
            per_kernel(action, host, &module, &version, &kernels, &options, printer)
        }
        Action::Remove => {
            let (module, version) = module_version(global, targets)?;
            if kernels.is_empty() && !global.all {
                bail!(crate::exit(
                    1,
                    "remove needs the kernels to remove from: give -k <kernel> (repeatable) or --all"
                ));
            }
            engine::remove(
                host, &module, &version, &kernels, global.all, &options, printer,
            )
            .map_err(engine_error)?;
            depmod_all(
                host,
                kernels.iter().map(|(k, _)| k.clone()).collect(),
                &options,
                printer,
            );
            Ok(ExitCode::SUCCESS)
        }
        Action::Autoinstall => autoinstall(host, &with_default(), &options, printer),
        Action::Status => unreachable!("status is not an engine command"),
    }
}

/// build/install/uninstall/unbuild for each kernel; upstream's exit code is that of
/// the last kernel, ours that of the last failure, so no failure hides behind a success.
fn per_kernel(
    action: Action,
    host: &Host,
    module: &str,
    version: &str,
    kernels: &[(String, String)],
    options: &Options,
    printer: &Printer,
) -> Result<ExitCode> {
    let mut code = 0u8;
    let mut touched = BTreeSet::new();
    for (kernel, arch) in kernels {
        let target = Target::new(module, version, kernel, arch);
        let result = match action {
            Action::Build => engine::build(host, &target, options, printer),
            Action::Install => engine::install(host, &target, options, printer).map(|()| {
                touched.insert(kernel.clone());
            }),
            Action::Uninstall => engine::uninstall(host, &target, options, printer).map(|done| {
                if done {
                    touched.insert(kernel.clone());
                } else {
                    printer.step(&format!("{target} is not installed"));
                }
            }),
            Action::Unbuild => engine::unbuild(host, &target, options, printer).map(|done| {
                touched.insert(kernel.clone());
                if !done {
                    printer.step(&format!("{target} is not built"));
                }
            }),
            _ => Ok(()),
        };
        if let Err(e) = result {
            code = e.exit_code();
            report(&e, printer);
        }
    }
    depmod_all(host, touched, options, printer);
    Ok(ExitCode::from(code))
}

fn report(e: &EngineError, printer: &Printer) {
    match e {
        EngineError::Excluded { .. } => printer.warning(&e.to_string()),
        _ => printer.error_chain(e),
    }
}

/// Keeps the EngineError inside the anyhow error, so `main` finds its exit code.
fn engine_error(e: EngineError) -> anyhow::Error {
    anyhow::Error::new(e)
}

fn depmod_all(host: &Host, kernels: BTreeSet<String>, options: &Options, printer: &Printer) {
    for kernel in kernels {
        if let Err(e) = engine::depmod(host, &kernel, options, printer) {
            printer.warning(&format!("depmod for {kernel} failed: {e}"));
        }
    }
}

/// `autoinstall`: the plan's targets in dependency order; a failure skips what
/// depends on it, the rest go on; exit 11 when anything failed.
fn autoinstall(
    host: &Host,
    kernels: &[(String, String)],
    options: &Options,
    printer: &Printer,
) -> Result<ExitCode> {
    if host.paths.etc_dir.join("no-autoinstall").exists() {
        printer.step("Automatic installation of modules has been disabled.");
        return Ok(ExitCode::SUCCESS);
    }
    let plan = plan::autoinstall(host, kernels);
    let mut failed: Vec<(Target, String)> = Vec::new();
    let mut installed = BTreeSet::new();
    for decision in &plan.decisions {
        let target = &decision.target;
        match &decision.left {
            Some(Left::AlreadyInstalled) => continue,
            Some(Left::Excluded(reason)) => printer.step(&format!("Skipping {target}: {reason}")),
            Some(Left::NoHeaders) => printer.warning(&format!("{target}: no kernel headers, skipped")),
            Some(Left::Deferred(deps)) => printer.warning(&format!(
                "{target} deferred: BUILD_DEPENDS not registered with DKMS: {}; it is retried on the next run",
                deps.join(", ")
            )),
            Some(Left::Failed(reason)) => failed.push((target.clone(), reason.clone())),
            None => {
                if let Some(dep) = decision.after.iter().find(|d| failed.iter().any(|(f, _)| f == *d)) {
                    failed.push((target.clone(), format!("dependency {}/{} failed on {}", dep.module, dep.version, dep.kernel)));
                    continue;
                }
                printer.step(&format!("Autoinstall of module {}/{} for kernel {} ({})", target.module, target.version, target.kernel, target.arch));
                match engine::install(host, target, options, printer) {
                    Ok(()) => {
                        installed.insert(target.kernel.clone());
                    }
                    Err(EngineError::Excluded { reason, .. }) => printer.step(&format!("Skipping {target}: {reason}")),
                    Err(e) => {
                        let log = e.log().map(|l| format!(": see {}", l.display())).unwrap_or_default();
                        failed.push((target.clone(), format!("{e}{log}")));
                    }
                }
            }
        }
    }
    depmod_all(host, installed, options, printer);
    if failed.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for (target, reason) in &failed {
        printer.error(&anyhow::anyhow!(
            "{}/{} failed for {}: {reason}",
            target.module,
            target.version,
            target.kernel
        ));
    }
    Ok(ExitCode::from(11))
}

/// `m/v` from the positional argument, `-m m/v`, or `-m m -v v`.
fn module_version(global: &GlobalArgs, targets: &[String]) -> Result<(String, String)> {
    let mut module = global.module.clone();
    let mut version = global.module_version.clone();
    for given in targets.first().into_iter().chain(global.module.iter()) {
        if let Some((m, v)) = crate::split_module_version(given) {
            module = Some(m);
            version = Some(v);
        }
    }
    match (module, version) {
        (Some(m), Some(v)) if !m.is_empty() && !v.is_empty() => Ok((m, v)),
        _ => bail!(crate::exit(
            1,
            "Arguments <module> and <module-version> are not specified: use module/version, or -m <module> -v <version>"
        )),
    }
}

/// What `add` was given: a path (directory or dkms.conf) or a module/version.
fn add_source(global: &GlobalArgs, targets: &[String]) -> Result<AddSource> {
    if let Some(first) = targets.first() {
        let path = PathBuf::from(first);
        if path.exists() {
            return Ok(AddSource::Path(path));
        }
    }
    let (module, version) = module_version(global, targets)?;
    Ok(AddSource::ModuleVersion { module, version })
}

/// The running kernel's release, as `uname -r` prints it.
pub fn running_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
