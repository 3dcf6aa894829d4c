//! The engine commands (add, build, install, uninstall, unbuild, remove, autoinstall,
//! match, the tarballs, plan, cleanup): resolve the command line into targets, call
//! dkms-core (whose `commands` module holds the policies), render, pick the exit.

use crate::cli::{Action, GlobalArgs};
use crate::refuse;
use crate::render::Face;
use crate::render::{self, Renderer};
use anyhow::{bail, Result};
use dkms_core::archive::{self, TarballMode};
use dkms_core::commands::{self, Autoinstall, KernelHook, PerKernel, WhenDone};
use dkms_core::engine::{self, AddSource, Event, Options, Progress};
use dkms_core::exit::Exit;
use dkms_core::name::{Arch, KernelRelease, ModuleName, ModuleVersion};
use dkms_core::tree::KernelArch;
use dkms_core::Host;
use std::path::PathBuf;

/// The engine options the command line and settings ask for.
pub fn options(host: &Host, global: &GlobalArgs) -> Options {
    Options {
        force: global.force,
        no_depmod: global.no_depmod,
        force_version_override: global.force_version_override,
        jobs: global.jobs.or(host.settings.jobs).unwrap_or_else(num_cpus),
        conf_override: global.conf.clone(),
        jobserver: None,
        retry_failed: global.retry_failed,
        depmod_always: false,
        job_steps: false,
    }
}

/// Runs one engine action.
pub fn run(
    action: Action,
    host: &Host,
    global: &GlobalArgs,
    targets: &[String],
    renderer: &Renderer,
) -> Result<Exit> {
    let mut options = options(host, global);
    // Under the name `dkms`, depmod runs after every change, as upstream's does.
    options.depmod_always = renderer.face == Face::Dkms;
    options.job_steps = renderer.face == Face::Dkms;
    let kernels = engine_kernels(global)?;
    let with_default = || -> Result<Vec<KernelArch>> {
        if kernels.is_empty() {
            Ok(vec![(
                running_release()?,
                dkms_core::kernel::default_arch_name(),
            )])
        } else {
            Ok(kernels.clone())
        }
    };
    match action {
        Action::Add => {
            let source = add_source(global, targets, renderer.face)?;
            let (kernel, arch) = with_default()?.remove(0);
            let (m, v) = engine::add(host, &source, &kernel, &arch, &options, renderer)?;
            renderer.event(Event::Added {
                module: &m,
                version: &v,
            });
            Ok(Exit::Success)
        }
        Action::Build | Action::Install if renderer.face == Face::Dkms => {
            if global.all {
                bail!(refuse(
                    Exit::AlreadyInstalled,
                    format!(
                        "The action {} does not support the --all parameter.",
                        format!("{action:?}").to_lowercase()
                    )
                ));
            }
            let (module, version) = add_first(host, global, targets, &options, renderer)?;
            let command = if action == Action::Build {
                PerKernel::Build
            } else {
                PerKernel::Install
            };
            Ok(commands::per_kernel_with(
                command,
                host,
                (&module, &version),
                &with_default()?,
                &options,
                WhenDone::Skip,
                renderer,
            ))
        }
        Action::KernelPreinst | Action::KernelPrerm | Action::KernelPostinst => {
            let name = match action {
                Action::KernelPreinst => "kernel_preinst",
                Action::KernelPrerm => "kernel_prerm",
                _ => "kernel_postinst",
            };
            if global.all {
                bail!(refuse(
                    Exit::AlreadyInstalled,
                    format!("The action {name} does not support the --all parameter.")
                ));
            }
            let [(kernel, arch)] = kernels.as_slice() else {
                bail!(refuse(
                    Exit::Broken,
                    format!("The action {name} requires exactly one kernel version parameter on the command line.")
                ));
            };
            if action == Action::KernelPostinst {
                if !upstream_autoinstall_gate(host, &kernels)? {
                    return Ok(Exit::Success);
                }
                let done = commands::autoinstall(host, &kernels, &options, renderer);
                if let Autoinstall::Ran(outcomes) = &done {
                    renderer.autoinstall_summary(outcomes);
                }
                return Ok(done.exit());
            }
            let hook = if action == Action::KernelPrerm {
                KernelHook::Prerm
            } else {
                KernelHook::Preinst
            };
            Ok(commands::kernel_unbuild(
                hook, host, kernel, arch, &options, renderer,
            ))
        }
        Action::Build | Action::Install | Action::Uninstall | Action::Unbuild => {
            if global.all && !matches!(action, Action::Uninstall | Action::Unbuild) {
                bail!(refuse(
                    Exit::AlreadyInstalled,
                    format!("The action {action:?} does not support the --all parameter.")
                        .to_lowercase()
                ));
            }
            let (module, version) = module_version(global, targets)?;
            let kernels = if global.all {
                dkms_core::tree::built_for(&host.paths, &module, &version, None, None)
            } else {
                with_default()?
            };
            let command = match action {
                Action::Build => PerKernel::Build,
                Action::Install => PerKernel::Install,
                Action::Uninstall => PerKernel::Uninstall,
                _ => PerKernel::Unbuild,
            };
            if renderer.face == Face::Dkms {
                // Upstream: a version not in the tree is an error, a broken one too.
                require_added(host, &module, &version)?;
                return Ok(commands::per_kernel_with(
                    command,
                    host,
                    (&module, &version),
                    &kernels,
                    &options,
                    WhenDone::Skip,
                    renderer,
                ));
            }
            Ok(commands::per_kernel(
                command, host, &module, &version, &kernels, &options, renderer,
            ))
        }
        Action::Remove => {
            let (module, version) = module_version(global, targets)?;
            if renderer.face == Face::Dkms {
                // Upstream refuses a broken version (its source is gone) too.
                require_added(host, &module, &version)?;
                // Upstream: without -k, the running kernel.
                let kernels = if global.all {
                    Vec::new()
                } else {
                    with_default()?
                };
                commands::remove_each_kernel(
                    host, &module, &version, &kernels, global.all, &options, renderer,
                )?;
                return Ok(Exit::Success);
            }
            if kernels.is_empty() && !global.all {
                bail!(refuse(
                    Exit::Failure,
                    "remove needs the kernels to remove from: give -k <kernel> (repeatable) or --all"
                ));
            }
            commands::remove(
                host, &module, &version, &kernels, global.all, &options, renderer,
            )?;
            Ok(Exit::Success)
        }
        Action::Autoinstall => {
            if renderer.face == Face::Dkms {
                if global.all {
                    bail!(refuse(
                        Exit::AlreadyInstalled,
                        "The action autoinstall does not support the --all parameter."
                    ));
                }
                if kernels.len() > 1 {
                    bail!(refuse(
                        Exit::Broken,
                        "The action autoinstall does not support multiple kernel version parameters on the command line."
                    ));
                }
            }
            if renderer.face == Face::Dkms {
                if !upstream_autoinstall_gate(host, &with_default()?)? {
                    return Ok(Exit::Success);
                }
            } else {
                require_installed(host, &kernels, Exit::AutoinstallFailed)?;
            }
            let done = commands::autoinstall(host, &with_default()?, &options, renderer);
            if let Autoinstall::Ran(outcomes) = &done {
                renderer.autoinstall_summary(outcomes);
            }
            Ok(done.exit())
        }
        Action::Match => {
            require_installed(host, &kernels, Exit::Failure)?;
            match_kernel(host, global, &with_default()?, &options, renderer)
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
                renderer,
            )?;
            renderer
                .printer
                .step(&format!("Tarball location: {}", file.display()));
            Ok(Exit::Success)
        }
        Action::Ldtarball => {
            let Some(archive) = global
                .archive
                .clone()
                .or_else(|| targets.first().map(PathBuf::from))
            else {
                bail!(refuse(Exit::Usage, "ldtarball needs --archive=<tarball>"));
            };
            let loaded = archive::load_tarball_with(host, &archive, global.force, renderer)?;
            renderer.printer.step(&format!(
                "Loaded {}/{} from {}",
                loaded.module,
                loaded.version,
                archive.display()
            ));
            Ok(Exit::Success)
        }
        Action::Status
        | Action::Plan
        | Action::Hook
        | Action::Completions
        | Action::Manpage
        | Action::GenerateMok
        | Action::Cleanup => {
            bail!("{action:?} is not an engine command")
        }
    }
}

/// `generate_mok`: makes sure the signing key pair exists, as upstream's (which
/// names both files first, then generates a pair when either is missing). Exits 1
/// when no pair could be had, as upstream does.
pub fn generate_mok(host: &Host, renderer: &Renderer) -> Result<Exit> {
    use dkms_core::sign::{self, SigningKey};
    use render::Line;
    let pair = SigningKey::configured(&host.settings, &host.paths);
    let dkms = renderer.face == Face::Dkms;
    if dkms {
        renderer.print(&Line::Out(format!("Signing key: {}", pair.key.display())));
        renderer.print(&Line::Out(format!(
            "Public certificate (MOK): {}",
            pair.certificate.display()
        )));
    }
    match sign::ensure_signing_key(&pair) {
        Ok(generated) => {
            if dkms && generated {
                renderer.print(&Line::Out(
                    "Certificate or key are missing, generating self signed certificate for MOK..."
                        .to_string(),
                ));
            } else if !dkms {
                renderer.print(&Line::Step(format!(
                    "{} signing key {} and certificate {}{}",
                    if generated {
                        "Generated the"
                    } else {
                        "Kept the"
                    },
                    pair.key.display(),
                    pair.certificate.display(),
                    if generated {
                        " (enroll it with `mokutil --import`)"
                    } else {
                        ""
                    }
                )));
            }
            Ok(Exit::Success)
        }
        Err(error) if dkms => {
            renderer.print(&Line::Out(render::upstream::no_key_line(
                &error,
                &pair.key,
                &pair.certificate,
            )));
            Ok(Exit::Failure)
        }
        Err(error) => Err(error.into()),
    }
}

/// `match --templatekernel T -k K`: every module version installed for T (same
/// arch) is installed for K (the selection is `dkms_core::commands::match_plan`).
fn match_kernel(
    host: &Host,
    global: &GlobalArgs,
    kernels: &[KernelArch],
    options: &Options,
    renderer: &Renderer,
) -> Result<Exit> {
    let Some(template) = &global.template_kernel else {
        bail!(refuse(
            Exit::Failure,
            "match needs --templatekernel=<kernel> and -k <kernel>"
        ));
    };
    let Some((kernel, arch)) = kernels.first() else {
        bail!(refuse(Exit::Failure, "match needs -k <kernel>"));
    };
    let dkms = renderer.face == Face::Dkms;
    if template == kernel {
        bail!(refuse(
            Exit::Usage,
            if dkms {
                "The templatekernel and the specified kernel version are the same.".to_string()
            } else {
                format!(
                    "The templatekernel and the specified kernel version are the same: {kernel}"
                )
            }
        ));
    }
    if dkms {
        // Upstream's header, and its line when the template kernel has nothing
        // installed (of the module given with -m, if one is).
        use render::Line::Out;
        let module = global
            .module
            .as_deref()
            .map(|m| m.split('/').next().unwrap_or(m));
        renderer.print(&Out(String::new()));
        renderer.print(&Out(format!(
            "Matching modules in kernel: {kernel} ({arch})"
        )));
        renderer.print(&Out(format!(
            "to the configuration of kernel: {template} ({arch})"
        )));
        let paths = &host.paths;
        let anything = dkms_core::tree::module_versions(paths, module, None)
            .iter()
            .any(|mv| {
                dkms_core::tree::is_installed(paths, &mv.module, &mv.version, template, arch)
            });
        if !anything {
            renderer.print(&Out(String::new()));
            renderer.print(&Out(
                "There is nothing to be done for this match.".to_string()
            ));
            return Ok(Exit::Success);
        }
    }
    let template = plain_name(
        &format!("--templatekernel {template:?}"),
        KernelRelease::parse,
        template,
    )?;
    let failed = commands::match_kernel(host, &template, kernel, arch, options, renderer);
    for outcome in &failed {
        renderer
            .printer
            .error_text(&format!("{}: {:?}", outcome.target, outcome.result));
    }
    Ok(if failed.is_empty() {
        Exit::Success
    } else {
        Exit::Failure
    })
}

/// `dkms-hook cleanup [--yes]`: leftovers of kernels that are gone, listed (dry run)
/// or removed.
pub fn cleanup(host: &Host, yes: bool, json: bool, renderer: &Renderer) -> Result<Exit> {
    let printer = renderer.printer;
    let found = dkms_core::cleanup::leftovers(host);
    if json {
        println!("{}", serde_json::to_string_pretty(&found)?);
        if !yes {
            return Ok(Exit::Success);
        }
    }
    if found.is_empty() {
        printer.step("Nothing left behind: every DKMS build belongs to an installed kernel.");
        return Ok(Exit::Success);
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
    Ok(if failed { Exit::Failure } else { Exit::Success })
}

/// `dkms-hook plan`: what autoinstall would do for the kernels, and why, without
/// doing it.
pub fn plan(host: &Host, global: &GlobalArgs, json: bool) -> Result<Exit> {
    let kernels = engine_kernels(global)?;
    require_installed(host, &kernels, Exit::Failure)?;
    let kernels = if kernels.is_empty() {
        dkms_core::kernel::installed_kernels(&host.paths)
            .into_iter()
            .map(|k| (k.release, dkms_core::kernel::default_arch_name()))
            .collect()
    } else {
        kernels
    };
    let plan = dkms_core::commands::autoinstall_preview(host, &kernels, global.retry_failed);
    if json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
    } else {
        print!("{}", render::plan::render(&plan));
    }
    Ok(Exit::Success)
}

/// The `-k`/`-a` pairs of an engine command, arches defaulted, each name checked to
/// be usable as one directory name (they become paths in both trees).
fn engine_kernels(global: &GlobalArgs) -> Result<Vec<KernelArch>> {
    let mut kernels = Vec::new();
    for (kernel, arch) in crate::cli::kernels_with_arches(global)? {
        let arch = arch.unwrap_or_else(|| dkms_core::kernel::default_arch().to_string());
        let kernel = plain_name(&format!("-k {kernel:?}"), KernelRelease::parse, &kernel)?;
        let arch = plain_name(&format!("-a {arch:?}"), Arch::parse, &arch)?;
        kernels.push((kernel, arch));
    }
    Ok(kernels)
}

/// Fails (with `code`) for the first `-k` kernel that is not installed, naming the
/// installed ones: autoinstall, match and plan have nothing to do for it.
fn require_installed(host: &Host, kernels: &[KernelArch], exit: Exit) -> Result<()> {
    for (kernel, _) in kernels {
        if let Err(e) = dkms_core::kernel::require_installed(&host.paths, kernel) {
            bail!(refuse(exit, e.to_string()));
        }
    }
    Ok(())
}

/// Module names, versions, kernel releases and arches become single path components
/// in the DKMS and install trees: no `/`, not `.` or `..`, no whitespace or control
/// characters, not empty. `given` is what the user typed, for the message.
/// `parse` is the name type's (`dkms_core::name`), which words the problem.
fn plain_name<N>(
    given: &str,
    parse: fn(&str) -> Result<N, dkms_core::name::NameError>,
    value: &str,
) -> Result<N> {
    match parse(value) {
        Err(problem) => bail!(refuse(Exit::Failure, format!("{given}: {problem}"))),
        Ok(name) => Ok(name),
    }
}

/// `m/v` from the positional argument, `-m m/v`, or `-m m -v v`.
fn module_version(global: &GlobalArgs, targets: &[String]) -> Result<(ModuleName, ModuleVersion)> {
    let mut module = global.module.clone();
    let mut version = global.module_version.clone();
    for given in targets.first().into_iter().chain(global.module.iter()) {
        if let Some((m, v)) = crate::cli::split_module_version(given) {
            module = Some(m);
            version = Some(v);
        }
    }
    match (module, version) {
        (Some(m), Some(v)) if !m.is_empty() && !v.is_empty() => {
            let given = format!("{:?}", format!("{m}/{v}"));
            let m = plain_name(&given, ModuleName::parse, &m)?;
            let v = plain_name(&given, ModuleVersion::parse, &v)?;
            Ok((m, v))
        }
        _ => bail!(refuse(
            Exit::Failure,
            "Arguments <module> and <module-version> are not specified: use module/version, or -m <module> -v <version>"
        )),
    }
}

/// `build`/`install` under the name `dkms` add what they are given first, as
/// upstream does: a directory, a dkms.conf, or a `m/v` not yet in the DKMS tree.
fn add_first(
    host: &Host,
    global: &GlobalArgs,
    targets: &[String],
    options: &Options,
    renderer: &Renderer,
) -> Result<(ModuleName, ModuleVersion)> {
    let source = add_source(global, targets, Face::DkmsHook)?;
    if let AddSource::ModuleVersion { module, version } = &source {
        if !dkms_core::tree::module_versions(&host.paths, Some(module), Some(version)).is_empty() {
            return Ok((module.clone(), version.clone()));
        }
    }
    let (kernel, arch) = match engine_kernels(global)?.into_iter().next() {
        Some(first) => first,
        None => (running_release()?, dkms_core::kernel::default_arch_name()),
    };
    match engine::add(host, &source, &kernel, &arch, options, renderer) {
        Ok(added) => {
            // Upstream separates the add from the build with a blank line.
            renderer.printer.out_line("");
            Ok(added)
        }
        Err(engine::EngineError::AlreadyAdded { module, version }) => {
            renderer
                .printer
                .out_line(&render::upstream::already_added(&module, &version));
            Ok((ModuleName::parse(&module)?, ModuleVersion::parse(&version)?))
        }
        Err(e) => Err(e.into()),
    }
}

/// Upstream's autoinstall: nothing in the DKMS tree, nothing to do (false, no
/// matter the kernel); else the kernel's headers must be there (exit 21).
fn upstream_autoinstall_gate(host: &Host, kernels: &[KernelArch]) -> Result<bool> {
    // autoinstall itself says that it is disabled.
    if host.paths.etc_dir.join("no-autoinstall").exists() {
        return Ok(true);
    }
    if dkms_core::tree::module_versions(&host.paths, None, None).is_empty() {
        return Ok(false);
    }
    for (kernel, _) in kernels {
        if !host
            .paths
            .kernel_source_dir(kernel)
            .join("include")
            .is_dir()
        {
            bail!(refuse(
                Exit::NoHeaders,
                render::upstream::no_headers(kernel, &host.paths.kernel_dir(kernel))
            ));
        }
    }
    Ok(true)
}

/// Fails unless `module/version` is in the DKMS tree with its source (upstream's
/// check before uninstall, unbuild and remove).
fn require_added(host: &Host, module: &str, version: &str) -> Result<()> {
    let listed = dkms_core::tree::module_versions(&host.paths, Some(module), Some(version));
    match listed.first().map(|mv| mv.source) {
        Some(dkms_core::tree::SourceState::Added) => Ok(()),
        Some(_) => Err(engine::EngineError::Broken {
            module: module.into(),
            version: version.into(),
        }
        .into()),
        None => Err(engine::EngineError::NotAdded {
            module: module.into(),
            version: version.into(),
        }
        .into()),
    }
}

/// What `add` was given: a path (directory or dkms.conf) or a module/version.
fn add_source(global: &GlobalArgs, targets: &[String], face: Face) -> Result<AddSource> {
    if let Some(first) = targets.first() {
        let path = PathBuf::from(first);
        // Upstream takes a directory for a source only when it holds a dkms.conf;
        // otherwise the word is read as module/version (and is not one).
        let not_a_source = face == Face::Dkms && path.is_dir() && !path.join("dkms.conf").is_file();
        if path.exists() && !not_a_source {
            return Ok(AddSource::Path(path));
        }
    }
    match module_version(global, targets) {
        Ok((module, version)) => Ok(AddSource::ModuleVersion { module, version }),
        Err(e) if face == Face::Dkms && e.to_string().starts_with("Arguments <module>") => {
            bail!(refuse(
                Exit::Failure,
                "Arguments <module> and <module-version> are not specified.\n\
                 Usage: add <module>/<module-version> or\n       \
                 add -m <module>/<module-version> or\n       \
                 add -m <module> -v <module-version>"
            ))
        }
        Err(e) => Err(e),
    }
}

/// The running kernel's release, as `uname -r` prints it.
pub fn running_kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// The running kernel, upstream's default `-k`, as a name.
pub fn running_release() -> Result<KernelRelease> {
    match dkms_core::kernel::running_release() {
        Some(release) => Ok(release),
        None => bail!(refuse(
            Exit::Failure,
            "cannot tell the running kernel from /proc/sys/kernel/osrelease: give -k <kernel>"
        )),
    }
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
