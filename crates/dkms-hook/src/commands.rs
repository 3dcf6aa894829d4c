//! The engine commands (add, build, install, uninstall, unbuild, remove, autoinstall):
//! resolve the command line into targets, call dkms-core, report, pick the exit code.

use crate::cli::{Action, GlobalArgs};
use crate::output::Printer;
use anyhow::{bail, Result};
use dkms_core::archive::{self, TarballMode};
use dkms_core::engine::{self, AddSource, EngineError, JobResult, Options};
use dkms_core::plan::{self, Left};
use dkms_core::tree::Target;
use dkms_core::Host;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::ExitCode;

/// The engine options the command line and settings ask for.
pub fn options(host: &Host, global: &GlobalArgs) -> Options {
    Options {
        force: global.force,
        no_depmod: global.no_depmod,
        jobs: global.jobs.or(host.settings.jobs).unwrap_or_else(num_cpus),
        conf_override: global.conf.clone(),
        jobserver: None,
        retry_failed: global.retry_failed,
    }
}

/// Runs one engine action.
pub fn run(
    action: Action,
    host: &Host,
    global: &GlobalArgs,
    targets: &[String],
    printer: &Printer,
) -> Result<ExitCode> {
    let options = options(host, global);
    let kernels = engine_kernels(global)?;
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
            // depmod for every kernel the removal touches, --all included.
            let touched: BTreeSet<String> = if global.all {
                dkms_core::tree::built_for(&host.paths, &module, &version, None, None)
                    .into_iter()
                    .map(|(k, _)| k)
                    .collect()
            } else {
                kernels.iter().map(|(k, _)| k.clone()).collect()
            };
            engine::remove(
                host, &module, &version, &kernels, global.all, &options, printer,
            )
            .map_err(engine_error)?;
            depmod_all(host, touched, &options, printer);
            Ok(ExitCode::SUCCESS)
        }
        Action::Autoinstall => {
            require_installed(host, &kernels, 11)?;
            autoinstall(host, &with_default(), &options, printer)
        }
        Action::Match => {
            require_installed(host, &kernels, 1)?;
            match_kernel(host, global, &with_default(), &options, printer)
        }
        Action::Mktarball => {
            let (module, version) = module_version(global, targets)?;
            let kernels = if global.all || kernels.is_empty() {
                dkms_core::tree::built_for(&host.paths, &module, &version, None, None)
            } else {
                kernels.clone()
            };
            let mode = match (global.source_only, global.binaries_only) {
                (true, _) => TarballMode::SourceOnly,
                (_, true) => TarballMode::BinariesOnly,
                _ => TarballMode::Full,
            };
            let file = archive::make_tarball_with(
                host,
                &module,
                &version,
                &kernels,
                mode,
                global.archive.as_deref(),
                printer,
            )
            .map_err(engine_error)?;
            printer.step(&format!("Tarball location: {}", file.display()));
            Ok(ExitCode::SUCCESS)
        }
        Action::Ldtarball => {
            let Some(archive) = global
                .archive
                .clone()
                .or_else(|| targets.first().map(PathBuf::from))
            else {
                bail!(crate::exit(2, "ldtarball needs --archive=<tarball>"));
            };
            let loaded = archive::load_tarball_with(host, &archive, global.force, printer)
                .map_err(engine_error)?;
            printer.step(&format!(
                "Loaded {}/{} from {}",
                loaded.module,
                loaded.version,
                archive.display()
            ));
            Ok(ExitCode::SUCCESS)
        }
        Action::Status
        | Action::Plan
        | Action::Hook
        | Action::Completions
        | Action::Manpage
        | Action::Cleanup => {
            bail!("{action:?} is not an engine command")
        }
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

/// `match --templatekernel T -k K`: every module version installed for T (same
/// arch) is installed for K, through the scheduler so dependencies come first.
fn match_kernel(
    host: &Host,
    global: &GlobalArgs,
    kernels: &[(String, String)],
    options: &Options,
    printer: &Printer,
) -> Result<ExitCode> {
    let Some(template) = &global.template_kernel else {
        bail!(crate::exit(
            1,
            "match needs --templatekernel=<kernel> and -k <kernel>"
        ));
    };
    let Some((kernel, arch)) = kernels.first() else {
        bail!(crate::exit(1, "match needs -k <kernel>"));
    };
    if template == kernel {
        bail!(crate::exit(
            2,
            format!("The templatekernel and the specified kernel version are the same: {kernel}")
        ));
    }
    let installed: BTreeSet<(String, String)> =
        dkms_core::tree::module_versions(&host.paths, None, None)
            .into_iter()
            .filter(|mv| {
                dkms_core::tree::is_installed(&host.paths, &mv.module, &mv.version, template, arch)
            })
            .map(|mv| (mv.module, mv.version))
            .collect();
    let plan = plan::plan(host, &[(kernel.clone(), arch.clone())], |_, m, v| {
        installed
            .contains(&(m.to_string(), v.to_string()))
            .then_some(plan::Selection::Rebuild)
    });
    let report = engine::run_plan(host, &plan, options, printer);
    let failed: Vec<_> = report.failed().collect();
    for outcome in &failed {
        printer.error(&anyhow::anyhow!("{}: {:?}", outcome.target, outcome.result));
    }
    Ok(if failed.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
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

/// `autoinstall`: the plan's targets, dependencies first, independent ones in
/// parallel; a failure skips only what depends on it; exit 11 when anything failed.
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
    let mut failures: Vec<(Target, String)> = Vec::new();
    let mut skipped: Vec<(Target, String)> = Vec::new();
    for decision in &plan.decisions {
        let target = decision.target.clone();
        match &decision.left {
            None | Some(Left::AlreadyInstalled) => {}
            Some(Left::Excluded(reason)) => skipped.push((target, format!("excluded: {reason}"))),
            Some(Left::NoHeaders) => skipped.push((target, "no kernel headers".into())),
            Some(Left::Deferred(deps)) => {
                printer.warning(&format!(
                    "{}/{} deferred on {}: BUILD_DEPENDS not registered with DKMS: {}; retried on the next run",
                    target.module,
                    target.version,
                    target.kernel,
                    deps.join(", ")
                ));
                skipped.push((target, format!("waits for {}", deps.join(", "))));
            }
            Some(Left::Failed(reason)) => failures.push((target, format!("not built: {reason}"))),
        }
    }
    let report = engine::run_plan(host, &plan, options, printer);
    let mut installed = Vec::new();
    for outcome in &report.outcomes {
        let target = outcome.target.clone();
        match &outcome.result {
            JobResult::Installed => installed.push(target),
            JobResult::Excluded { reason } => skipped.push((target, format!("excluded: {reason}"))),
            JobResult::Skipped { reason } => {
                failures.push((target, format!("not built: {reason}")))
            }
            JobResult::Failed { message, log, .. } => {
                let why = match log {
                    Some(log) => format!("failed to build: see {}", log.display()),
                    None => message.clone(),
                };
                failures.push((target, why));
            }
        }
    }
    for (kernel, error) in &report.depmod_failures {
        failures.push((Target::new("depmod", "-", kernel, ""), error.clone()));
    }
    summary(&installed, &skipped, &failures, printer);
    Ok(if failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(11)
    })
}

/// The closing table: what was installed, skipped (why) and failed (why, log).
fn summary(
    installed: &[Target],
    skipped: &[(Target, String)],
    failures: &[(Target, String)],
    printer: &Printer,
) {
    let name = |t: &Target| format!("{}/{} for {}", t.module, t.version, t.kernel);
    if installed.is_empty() && skipped.is_empty() && failures.is_empty() {
        printer.step("Nothing to do: every module is installed for every kernel.");
        return;
    }
    printer.step(&format!(
        "Summary: {} installed, {} skipped, {} failed",
        installed.len(),
        skipped.len(),
        failures.len()
    ));
    for t in installed {
        printer.detail(&format!("installed  {}", name(t)));
    }
    for (t, why) in skipped {
        printer.detail(&format!("skipped    {}: {why}", name(t)));
    }
    for (t, why) in failures {
        printer.error(&anyhow::anyhow!("{}: {why}", name(t)));
    }
}

/// `dkms-hook cleanup [--yes]`: leftovers of kernels that are gone, listed (dry run)
/// or removed.
pub fn cleanup(host: &Host, yes: bool, json: bool, printer: &Printer) -> Result<ExitCode> {
    let found = dkms_core::cleanup::leftovers(host);
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        if !yes {
            return Ok(ExitCode::SUCCESS);
        }
    }
    if found.is_empty() {
        printer.step("Nothing left behind: every DKMS build belongs to an installed kernel.");
        return Ok(ExitCode::SUCCESS);
    }
    let mut failed = false;
    for leftover in &found {
        if !yes {
            printer.detail(&format!(
                "{}  ({}, kernel {})",
                leftover.path.display(),
                leftover.what,
                leftover.kernel
            ));
            continue;
        }
        match dkms_core::cleanup::remove(host, leftover) {
            Ok(()) => printer.detail(&format!("removed {}", leftover.path.display())),
            Err(e) => {
                printer.error_chain(&e);
                failed = true;
            }
        }
    }
    if !yes {
        printer.step(&format!(
            "{} leftovers; run `dkms-hook cleanup --yes` to remove them",
            found.len()
        ));
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `dkms-hook plan`: what autoinstall would do for the kernels, and why, without
/// doing it.
pub fn plan(host: &Host, global: &GlobalArgs, json: bool) -> Result<ExitCode> {
    let kernels = engine_kernels(global)?;
    require_installed(host, &kernels, 1)?;
    let kernels = if kernels.is_empty() {
        dkms_core::kernel::installed_kernels(&host.paths)
            .into_iter()
            .map(|k| (k.release, dkms_core::kernel::default_arch().to_string()))
            .collect()
    } else {
        kernels
    };
    let plan = plan::autoinstall(host, &kernels);
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    let mut number = 0;
    for d in &plan.decisions {
        let t = &d.target;
        let what = format!("{}/{} for {} ({})", t.module, t.version, t.kernel, t.arch);
        match &d.left {
            None => {
                number += 1;
                let after: Vec<String> = d
                    .after
                    .iter()
                    .map(|a| format!("{}/{}", a.module, a.version))
                    .collect();
                let after = if after.is_empty() {
                    String::new()
                } else {
                    format!(", after {}", after.join(", "))
                };
                println!("{number:>3}. build  {what}{after}");
            }
            Some(Left::AlreadyInstalled) => println!("     ok     {what}: installed"),
            Some(Left::Excluded(r)) => println!("     skip   {what}: excluded: {r}"),
            Some(Left::NoHeaders) => println!("     skip   {what}: no headers for {}", t.kernel),
            Some(Left::Deferred(deps)) => println!(
                "     defer  {what}: BUILD_DEPENDS not registered with DKMS: {}",
                deps.join(", ")
            ),
            Some(Left::Failed(r)) => println!("     fail   {what}: {r}"),
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The `-k`/`-a` pairs of an engine command, arches defaulted, each name checked to
/// be usable as one directory name (they become paths in both trees).
fn engine_kernels(global: &GlobalArgs) -> Result<Vec<(String, String)>> {
    let mut kernels = Vec::new();
    for (kernel, arch) in crate::kernels_with_arches(global)? {
        let arch = arch.unwrap_or_else(|| dkms_core::kernel::default_arch().to_string());
        plain_name(&format!("-k {kernel:?}"), "kernel release", &kernel)?;
        plain_name(&format!("-a {arch:?}"), "architecture", &arch)?;
        kernels.push((kernel, arch));
    }
    Ok(kernels)
}

/// Fails (with `code`) for the first `-k` kernel that is not installed, naming the
/// installed ones: autoinstall, match and plan have nothing to do for it.
fn require_installed(host: &Host, kernels: &[(String, String)], code: u8) -> Result<()> {
    for (kernel, _) in kernels {
        if let Err(e) = dkms_core::kernel::require_installed(&host.paths, kernel) {
            bail!(crate::exit(code, e.to_string()));
        }
    }
    Ok(())
}

/// Module names, versions, kernel releases and arches become single path components
/// in the DKMS and install trees: no `/`, not `.` or `..`, no whitespace or control
/// characters, not empty. `given` is what the user typed, for the message.
fn plain_name(given: &str, what: &str, value: &str) -> Result<()> {
    let problem = if value.is_empty() {
        Some("is empty")
    } else if value == "." || value == ".." || value.contains('/') {
        Some("would be a path, not a name")
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("contains whitespace or control characters")
    } else {
        None
    };
    match problem {
        Some(problem) => bail!(crate::exit(
            1,
            format!("{given}: the {what} {value:?} {problem}")
        )),
        None => Ok(()),
    }
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
        (Some(m), Some(v)) if !m.is_empty() && !v.is_empty() => {
            let given = format!("{:?}", format!("{m}/{v}"));
            plain_name(&given, "module name", &m)?;
            plain_name(&given, "module version", &v)?;
            Ok((m, v))
        }
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
