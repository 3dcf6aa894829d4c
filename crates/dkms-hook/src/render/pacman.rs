//! The `dkms-hook` face's words: every library event, hook problem and autoinstall
//! outcome as a makepkg-style line (`==>` steps, `  ->` details, `==> WARNING:`,
//! `==> ERROR:`). This is the text pacman.log keeps; scripts do not parse it.

use super::Line;
use dkms_core::commands::{Failure, Outcomes, Skip};
use dkms_core::engine::{EngineError, Event, JobResult};
use dkms_core::hook::Problem;
use dkms_core::tree::Target;

/// The line for one event, or `None` for an event this face does not show.
pub fn line<'a>(event: &Event<'a>) -> Option<Line<'a>> {
    use Event as E;
    use Line::{Step, Warning};
    Some(match *event {
        E::CopyingSource { from, to } => {
            Step(format!("Copying {} to {}", from.display(), to.display()))
        }
        E::Deprecated {
            file,
            directive,
            advice,
        } => Warning(format!("{}: {directive} is deprecated: {advice}", file.display())),
        E::NoModules { file } => Warning(format!(
            "{}: describes no kernel module (no BUILT_MODULE_NAME or DEST_MODULE_LOCATION); nothing is built or installed",
            file.display()
        )),
        E::LinkedSource { link, target } => Step(format!(
            "Creating symlink {} -> {}",
            link.display(),
            target.display()
        )),
        E::Added { module, version } => Step(format!("Added {module}/{version}")),
        E::Building { target } => Step(format!("Building {target}")),
        E::BuildingDespiteMissingDependencies { target, missing } => Warning(format!(
            "building {target} despite missing BUILD_DEPENDS: {}",
            missing.join(", ")
        )),
        E::ModuleExcluded {
            target,
            module,
            reason,
        } => Warning(format!("{target}: module {module} is skipped: {reason}")),
        E::WaitingForInterruptedBuild { work } => Warning(format!(
            "waiting for processes of an interrupted build still writing in {}",
            work.display()
        )),
        E::InterruptedBuildStillRunning { log } => Warning(format!(
            "processes of an interrupted build still hold {}; building anyway",
            log.display()
        )),
        E::MakeHardCodesJobs { target } => Warning(format!(
            "{target}: MAKE in dkms.conf passes its own -j, so this build leaves the shared job budget"
        )),
        E::StripFailed { target, error } => Warning(format!(
            "{target}: strip -g failed, keeping debug symbols: {error}"
        )),
        E::SigningFailed {
            target,
            file,
            error,
            ..
        } => Warning(format!(
            "{target}: signing {} failed: {error}",
            file.display()
        )),
        E::CompressionFailed {
            target,
            file,
            error,
        } => Warning(format!(
            "{target}: compressing {} failed, keeping it uncompressed: {error}",
            file.display()
        )),
        E::ModuleNotReplaced {
            target,
            module,
            refusal,
        } => Warning(match refusal {
            dkms_core::engine::version_check::Refusal::Newer { found, version } => format!(
                "{target}: {module}.ko is not installed: {} is newer (version {version}); pass --force to replace it",
                found.display()
            ),
            dkms_core::engine::version_check::Refusal::Same { found, version } => format!(
                "{target}: {module}.ko is not installed: {} is the same module (version {version}); pass --force to replace it",
                found.display()
            ),
        }),
        E::ForcedByList {
            target,
            version_override,
        } => Step(if version_override {
            format!("Forcing version override of {target} (modules_to_force_install)")
        } else {
            format!("Forcing installation of {target} (modules_to_force_install)")
        }),
        E::SigningSkipped { target, why } => Step(match why {
            dkms_core::environment::NoSigning::Policy => {
                format!("Not signing {target}: try_sign_modules=false in framework.conf")
            }
            dkms_core::environment::NoSigning::Chroot => format!(
                "Not signing {target}: running in a chroot (try_sign_modules=true in framework.conf signs anyway)"
            ),
        }),
        E::SignFileMissing { target, .. } => Warning(format!(
            "{target}: the kernel wants signed modules but sign-file was not found; modules are not signed"
        )),
        E::SigningKeyGenerated { key, certificate } => Step(format!(
            "Generated a module signing key: {} and {}",
            key.display(),
            certificate.display()
        )),
        E::NoSigningKey { target, error, .. } => Warning(format!(
            "{target}: no signing key: {error}; modules are not signed"
        )),
        E::ScriptNotExecutable { target, kind, path } => Warning(format!(
            "{target}: the {kind} script {} is not executable; skipped",
            path.display()
        )),
        E::RunningScript { kind, .. } => Step(format!("Running the {kind} script")),
        E::ScriptOutput { stdout, stderr, .. } => {
            Line::Out(format!("{stdout}{stderr}").trim_end().to_string())
        }
        E::InstallingDespitePreInstall { error } => {
            Warning(format!("{error}; installing anyway (--force)"))
        }
        E::Installing { target } => Step(format!("Installing {target}")),
        // Kept as this face always printed it (a step line holding a sub-step).
        E::Installed { path, .. } => Step(format!("  -> {}", path.display())),
        E::Uninstalling { target } => Step(format!("Uninstalling {target}")),
        E::NotInstalled { target } => Step(format!("{target} is not installed")),
        E::NotBuilt { target } => Step(format!("{target} is not built")),
        E::DepmodSkipped {
            kernel,
            install_tree,
        } => Warning(format!(
            "depmod skipped for {kernel}: the install tree {} is not laid out as <root>/lib/modules",
            install_tree.display()
        )),
        E::RunningDepmod { kernel } => Step(format!("Running depmod for {kernel}")),
        E::DepmodFailed { kernel, error } => {
            Warning(format!("depmod for {kernel} failed: {error}"))
        }
        E::Unbuilding { target } => Step(format!("Deleting {target} from the DKMS tree")),
        E::Removing { module, version } => Step(format!(
            "Deleting module {module}/{version} completely from the DKMS tree"
        )),
        E::PostRemoveNotRun {
            module,
            version,
            error,
        } => Warning(format!("POST_REMOVE of {module}/{version} not run: {error}")),
        E::TargetFailed { error } => target_failed(error),
        E::AlreadyDone { error } => Step(error.to_string()),
        E::RemovingForKernel { target } => Step(format!("Removing {target}")),
        E::NoJobserver { slots, error } => Warning(format!(
            "no shared make jobserver ({error}); each build gets -j{slots}"
        )),
        E::DepmodStale { kernel } => Step(format!(
            "modules.dep of {kernel} is older than its DKMS modules (an interrupted run?)"
        )),
        E::FromBuildCache { target } => Step(format!(
            "{target}: from the build cache (not compiled)"
        )),
        E::BuildCacheRejected { target, reason } => Warning(format!(
            "{target}: the build cache entry is refused and built again: {reason}"
        )),
        E::BuildCacheFailed { target, error } => Warning(format!(
            "{target}: the build cache is not used: {error}"
        )),
        E::DependencyFailed { target, reason } => Warning(format!("{target} skipped: {reason}")),
        E::JobStarted {
            number,
            total,
            target,
        } => Step(format!(
            "[{number}/{total}] building {}/{} for {}",
            target.module, target.version, target.kernel
        )),
        E::JobFinished {
            number,
            total,
            target,
            result,
        } => {
            let word = match result {
                JobResult::Installed => "installed".to_string(),
                JobResult::Excluded { reason } => format!("skipped ({reason})"),
                JobResult::Failed { log: Some(log), .. } => {
                    format!("FAILED (see {})", log.display())
                }
                _ => "FAILED".to_string(),
            };
            Step(format!(
                "[{number}/{total}] {}/{} for {}: {word}",
                target.module, target.version, target.kernel
            ))
        }
        E::AutoinstallDisabled => {
            Step("Automatic installation of modules has been disabled.".to_string())
        }
        E::Deferred { target, missing } => Warning(format!(
            "{}/{} deferred on {}: BUILD_DEPENDS not registered with DKMS: {}; retried on the next run",
            target.module,
            target.version,
            target.kernel,
            missing.join(", ")
        )),
        E::DeferredInTransaction { target, missing } => Warning(format!(
            "{}/{} for {} deferred: BUILD_DEPENDS not registered with DKMS: {}",
            target.module,
            target.version,
            target.kernel,
            missing.join(", ")
        )),
        E::RejectedLine { line, reason } => Warning(format!(
            "hook input line {line} is not a path: {reason}; ignored"
        )),
        E::MoreRejectedLines { count } => Warning(format!(
            "{count} more hook input lines are not paths; ignored"
        )),
        E::KernelWithoutHeaders {
            kernel,
            headers_package,
            kernel_package,
            pkgbase_file,
        } => {
            let package = headers_package.unwrap_or("the headers package");
            let source = match (kernel_package, pkgbase_file) {
                (_, Some(file)) => format!(
                    " (named from {}; the pacman database could not be read)",
                    file.display()
                ),
                (Some(p), None) => format!(" (kernel package {p})"),
                (None, None) => String::new(),
            };
            Warning(format!(
                "kernel {kernel} has no headers: install {package}{source} to build DKMS modules for it (they will be built then)"
            ))
        }
        E::KeptInstalled {
            module,
            version,
            kernel,
        } => Warning(format!(
            "{module}/{version} stays installed for {kernel}: its replacement failed to build"
        )),
        E::Retiring { module, version } => Step(format!(
            "Removing {module}/{version} from the DKMS tree: its source was removed"
        )),
        E::KernelCleanupFailed { error } => Line::Error(error),
        E::InitramfsNotRegenerated { kernel } => Warning(format!(
            "modules were installed for {kernel} after its initramfs was built; regenerate it yourself (no mkinitcpio or initramfs_command in dkms-hook.toml)"
        )),
        E::RegeneratingInitramfs { kernel, command } => {
            Step(format!("Regenerating the initramfs of {kernel}: {command}"))
        }
        E::PostTransactionRan {
            command,
            status,
            log,
        } => match status {
            dkms_core::exec::ExitDescription::Code(0) => {
                Step(format!("Ran post_transaction: {command}"))
            }
            _ => Warning(format!(
                "post_transaction {status} (ignored): {command}; its output is in {}",
                log.display()
            )),
        },
        E::ArchivingBuild { kernel, arch } => Step(format!(
            "Marking modules for {kernel} ({arch}) for archiving..."
        )),
        E::ArchivingBinariesOnly => {
            Step("Creating tarball structure to specifically accommodate binaries.".into())
        }
        E::ArchivingSource { source } => {
            Step(format!("Marking {} for archiving...", source.display()))
        }
        E::TarballLocation { path } => Step(format!("Tarball location: {}", path.display())),
        E::LeftOutOfTarball { path } => Warning(format!(
            "{}: not a file, directory or symlink; left out of the tarball",
            path.display()
        )),
        E::LoadingTarball { module, version } => {
            Step(format!("Loading tarball for {module}/{version}"))
        }
        E::BuildExistsSkipped { dest } => {
            Warning(format!("{} already exists. Skipping...", dest.display()))
        }
        E::CopyingTarballSource { to } => {
            Step(format!("Copying the source to {}", to.display()))
        }
        E::KeepingExistingSource { dir } => {
            Step(format!("{} already exists; keeping it", dir.display()))
        }
        E::CreatingSourceDir { dir } => Step(format!("Creating {}", dir.display())),
        E::LoadingBuild { dest } => Step(format!("Loading {}...", dest.display())),
        E::IgnoredNonUtf8Name { path } => {
            Warning(format!("ignoring {}: not a UTF-8 name", path.display()))
        }
        // Facts this face has always left unsaid.
        E::SigningWith { .. }
        | E::Signed { .. }
        | E::Built { .. }
        | E::Uninstalled { .. }
        | E::DepmodDone { .. }
        | E::TargetDone { .. }
        | E::ScriptDone { .. } => return None,
    })
}

/// A failed target of a per-kernel command: an exclusion is only a warning.
pub fn target_failed(error: &EngineError) -> Line<'_> {
    match error {
        EngineError::Excluded { .. } => Line::Warning(error.to_string()),
        _ => Line::Error(error),
    }
}

/// One problem of the hook's closing summary (an `==> ERROR:` line).
pub fn hook_problem(problem: &Problem) -> String {
    match problem {
        Problem::NotIdentified { dir, error } => {
            format!("{} is not built: {}", dir.display(), chain(error))
        }
        Problem::AddFailed {
            module,
            version,
            error,
        } => format!("{module}/{version}: {error}"),
        Problem::Target { target: t, failure } => match failure {
            Failure::NotBuilt(reason) => format!(
                "{}/{} for {}: not built: {reason}",
                t.module, t.version, t.kernel
            ),
            Failure::Failed { log: Some(log), .. } => format!(
                "{}/{} failed to build for {}: see {}",
                t.module,
                t.version,
                t.kernel,
                log.display()
            ),
            Failure::Failed { message, log: None } => {
                format!("{}/{} for {}: {message}", t.module, t.version, t.kernel)
            }
        },
        Problem::Depmod { kernel, error } => format!("depmod for {kernel}: {error}"),
        Problem::Unbuild { target, error } => format!("removing {target}: {error}"),
        Problem::Remove {
            module,
            version,
            error,
        } => format!("removing {module}/{version}: {error}"),
        Problem::Initramfs { kernel, error } => format!("initramfs for {kernel}: {error}"),
    }
}

/// One problem of the pre-flight, on one line: module, kernel, make.log, and why it
/// is boot-critical when it is.
pub fn preflight_problem(problem: &dkms_core::hook::PreflightProblem) -> String {
    use dkms_core::hook::PreflightProblem;
    match problem {
        PreflightProblem::Headers {
            kernel,
            error,
            critical,
        } => {
            let affected: Vec<String> = critical
                .iter()
                .map(|(m, why)| format!("{m} (boot-critical: {why})"))
                .collect();
            if affected.is_empty() {
                format!("pre-flight for {kernel} skipped: {}", chain(error))
            } else {
                format!(
                    "pre-flight for {kernel}: {}; so {} cannot be checked for it",
                    chain(error),
                    affected.join(", ")
                )
            }
        }
        PreflightProblem::Target {
            target: t,
            failure,
            critical,
        } => {
            let what = match failure {
                Failure::Failed { log: Some(log), .. } if critical.is_some() => {
                    format!("failed to build: see {}", log.display())
                }
                Failure::Failed { log: Some(_), .. } => {
                    "failed to build; it is built again after the transaction, its make.log then in the DKMS tree".to_string()
                }
                Failure::Failed { message, log: None } => message.clone(),
                Failure::NotBuilt(reason) => format!("not built: {reason}"),
            };
            let why = critical
                .as_ref()
                .map(|w| format!(" [boot-critical: {w}]"))
                .unwrap_or_default();
            format!(
                "pre-flight: {}/{} for incoming kernel {} {what}{why}",
                t.module, t.version, t.kernel
            )
        }
        PreflightProblem::Scratch { kernel, error } => {
            format!("pre-flight for {kernel} skipped: {error}")
        }
    }
}

/// An error and its causes on one line, for the closing summary.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// autoinstall's closing table: what was installed, skipped (why) and failed (why,
/// log).
pub fn autoinstall_summary(outcomes: &Outcomes) -> Vec<Line<'static>> {
    let name = |t: &Target| format!("{}/{} for {}", t.module, t.version, t.kernel);
    let failed = outcomes.failed.len() + outcomes.depmod_failures.len();
    if outcomes.installed.is_empty() && outcomes.skipped.is_empty() && failed == 0 {
        return vec![Line::Step(
            "Nothing to do: every module is installed for every kernel.".to_string(),
        )];
    }
    let mut lines = vec![Line::Step(format!(
        "Summary: {} installed, {} skipped, {failed} failed",
        outcomes.installed.len(),
        outcomes.skipped.len(),
    ))];
    for t in &outcomes.installed {
        lines.push(Line::Detail(format!("installed  {}", name(t))));
    }
    for (t, skip) in &outcomes.skipped {
        let why = match skip {
            Skip::Excluded(reason) => format!("excluded: {reason}"),
            Skip::NoHeaders => "no kernel headers".to_string(),
            Skip::WaitsFor(deps) => format!("waits for {}", deps.join(", ")),
        };
        lines.push(Line::Detail(format!("skipped    {}: {why}", name(t))));
    }
    for (t, failure) in &outcomes.failed {
        let why = match failure {
            Failure::NotBuilt(reason) => format!("not built: {reason}"),
            Failure::Failed { log: Some(log), .. } => {
                format!("failed to build: see {}", log.display())
            }
            Failure::Failed { message, log: None } => message.clone(),
        };
        lines.push(Line::ErrorText(format!("{}: {why}", name(t))));
    }
    for (kernel, error) in &outcomes.depmod_failures {
        lines.push(Line::ErrorText(format!("depmod/- for {kernel}: {error}")));
    }
    lines
}
