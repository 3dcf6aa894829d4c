//! `dkms-hook hook install|upgrade|remove`: what the pacman .hook files run.
//!
//! PostTransaction hooks cannot fail pacman, so failures are printed as a summary
//! that cannot be missed and the exit status is non-zero; nothing here aborts early.

use crate::output::Printer;
use anyhow::{Context, Result};
use dkms_core::engine::{self, AddSource, JobResult, Options};
use dkms_core::hook::{self, Changes, Source};
use dkms_core::plan::Left;
use dkms_core::tree::{self, SourceState, Target};
use dkms_core::Host;
use std::collections::BTreeSet;
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

/// Which .hook file ran us.
///
/// pacman reports a `*-dkms` version upgrade (usr/src/foo-1.0 -> foo-1.1) as a Remove
/// of the old path plus an Install of the new one, and a PreTransaction hook cannot
/// see the other half. So nothing is uninstalled before the transaction: the remove
/// hook only notes which versions go away, and the PostTransaction hook (which also
/// sees removed paths) retires an old version on a kernel once the new one is
/// installed there, or uninstalls it when nothing replaces it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum HookKind {
    /// PostTransaction, Install/Upgrade/Remove: build what changed, retire what went.
    Install,
    /// PreTransaction, Upgrade (a same-path reinstall): note the versions replaced.
    Upgrade,
    /// PreTransaction, Remove: note removed sources; clean up kernels being removed.
    Remove,
}

/// The note the pre-transaction hooks leave for the post-transaction one:
/// `module/version` lines of sources being replaced or removed.
fn transaction_note(host: &Host) -> PathBuf {
    host.paths.dkms_tree.join(".dkms-hook-transaction")
}

pub fn run(kind: HookKind, host: &Host, options: &Options, printer: &Printer) -> Result<ExitCode> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the hook targets from stdin")?;
    let changes = hook::parse_targets(&input);
    // pacman only ever sends paths: a line that cannot be one is ignored, as the
    // unrelated paths are, but said (pacman.log keeps it), so a bug upstream of us is
    // seen. It does not fail the hook.
    for (line, reason) in changes.rejected.iter().take(MAX_REJECTED_SHOWN) {
        printer.warning(&format!(
            "hook input line {line} is not a path: {reason}; ignored"
        ));
    }
    if changes.rejected.len() > MAX_REJECTED_SHOWN {
        printer.warning(&format!(
            "{} more hook input lines are not paths; ignored",
            changes.rejected.len() - MAX_REJECTED_SHOWN
        ));
    }
    // Bad sources are reported and make the exit status non-zero, but everything else
    // in the transaction is still done.
    let mut problems: Vec<String> = Vec::new();
    let arch = dkms_core::kernel::default_arch();
    let kernel = crate::commands::running_kernel();
    // Removed sources are gone in the post-transaction hook and not yet arrived in a
    // pre-transaction install: only the ones on disk can be read.
    let sources: Vec<Source> = changes
        .sources
        .iter()
        .filter(|dir| source_dir(host, dir).join("dkms.conf").is_file())
        .filter_map(|dir| {
            let local = source_dir(host, dir);
            match hook::identify(host, &local, &kernel, arch) {
                Ok(source) => Some(source),
                Err(e) => {
                    problems.push(format!("{} is not built: {}", local.display(), chain(&e)));
                    None
                }
            }
        })
        .collect();
    let code = match kind {
        HookKind::Install => {
            // Reports the problems with its own in the closing summary.
            return install(
                host, &changes, &sources, &kernel, options, printer, problems,
            );
        }
        HookKind::Upgrade => note_sources(host, &sources)?,
        HookKind::Remove => {
            note_sources(host, &sources)?;
            remove_kernels(host, &changes, options, printer)?
        }
    };
    for problem in &problems {
        printer.error(&anyhow::anyhow!("{problem}"));
    }
    Ok(if problems.is_empty() {
        code
    } else {
        ExitCode::FAILURE
    })
}

/// How many rejected input lines are named one by one; the rest are counted.
const MAX_REJECTED_SHOWN: usize = 5;

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

/// `usr/src/<dir>` from pacman, inside our (possibly relocated) source tree.
fn source_dir(host: &Host, relative: &std::path::Path) -> PathBuf {
    match relative.strip_prefix("usr/src") {
        Ok(rest) => host.paths.source_tree.join(rest),
        Err(_) => PathBuf::from("/").join(relative),
    }
}

fn note_sources(host: &Host, sources: &[Source]) -> Result<ExitCode> {
    if sources.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    let mut note = std::fs::read_to_string(transaction_note(host)).unwrap_or_default();
    for source in sources {
        note.push_str(&format!("{}/{}\n", source.module, source.version));
    }
    host.dkms_root()
        .and_then(|root| root.write(&transaction_note(host), note.as_bytes(), 0o644))
        .context("writing the transaction note")?;
    Ok(ExitCode::SUCCESS)
}

/// A kernel being removed takes everything DKMS built for it along, including the
/// `updates/dkms` directory pacman would leave behind. Headers alone going away
/// leave the installed modules working, so they stay.
fn remove_kernels(
    host: &Host,
    changes: &Changes,
    options: &Options,
    printer: &Printer,
) -> Result<ExitCode> {
    let mut failed = false;
    let no_depmod = Options {
        no_depmod: true,
        ..options.clone()
    };
    for kernel in &changes.kernels {
        for mv in tree::module_versions(&host.paths, None, None) {
            for (k, a) in tree::built_for(&host.paths, &mv.module, &mv.version, Some(kernel), None)
            {
                let target = Target::new(&mv.module, &mv.version, &k, &a);
                if let Err(e) = engine::unbuild(host, &target, &no_depmod, printer) {
                    printer.error_chain(&e);
                    failed = true;
                }
            }
        }
        let dkms_dir = host.paths.kernel_dir(kernel).join("updates/dkms");
        if let Err(e) = engine::remove_path(host, &dkms_dir) {
            printer.error_chain(&e);
            failed = true;
        }
        let updates = host.paths.kernel_dir(kernel).join("updates");
        if let Ok(root) = host.install_root() {
            root.remove_empty_dirs(&updates, &host.paths.kernel_dir(kernel));
        }
        // Work directories and failure records of that kernel go too.
        for mv in tree::module_versions(&host.paths, None, None) {
            for (k, path, _) in tree::kernel_entries(&host.paths, &mv.module, &mv.version) {
                if k == *kernel {
                    if let Err(e) = engine::remove_path(host, &path) {
                        printer.error_chain(&e);
                        failed = true;
                    }
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn install(
    host: &Host,
    changes: &Changes,
    sources: &[Source],
    kernel: &str,
    options: &Options,
    printer: &Printer,
    mut problems: Vec<String>,
) -> Result<ExitCode> {
    let arch = dkms_core::kernel::default_arch();
    for source in sources {
        let listed =
            tree::module_versions(&host.paths, Some(&source.module), Some(&source.version));
        if listed
            .first()
            .is_some_and(|mv| mv.source == SourceState::Added)
        {
            continue;
        }
        let result = engine::add(
            host,
            &AddSource::Path(source.dir.clone()),
            kernel,
            arch,
            options,
            printer,
        );
        if let Err(e) = result {
            problems.push(format!("{}/{}: {e}", source.module, source.version));
        }
    }
    let headless = hook::kernels_without_headers(host, changes);
    if !headless.is_empty() {
        // The pacman database knows the kernel's real pkgbase; the pkgbase file is the
        // fallback when it cannot be read.
        let owners = dkms_core::status::owners(host, &[], &headless);
        for (k, packages) in headless.iter().zip(&owners.packages.kernels) {
            let package = packages
                .headers_package
                .clone()
                .unwrap_or_else(|| "the headers package".into());
            let source = match (&owners.packages.error, &packages.package) {
                (None, Some(p)) => format!(" (kernel package {})", p.name),
                (Some(_), _) => format!(
                    " (named from {}; the pacman database could not be read)",
                    k.dir.join("pkgbase").display()
                ),
                (None, None) => String::new(),
            };
            printer.warning(&format!(
                "kernel {} has no headers: install {package}{source} to build DKMS modules for it (they will be built then)",
                k.release
            ));
        }
    }

    let plan = hook::install_plan(host, sources, changes, arch);
    for decision in &plan.decisions {
        let t = &decision.target;
        match &decision.left {
            Some(Left::Failed(reason)) => problems.push(format!(
                "{}/{} for {}: not built: {reason}",
                t.module, t.version, t.kernel
            )),
            Some(Left::Deferred(deps)) => printer.warning(&format!(
                "{}/{} for {} deferred: BUILD_DEPENDS not registered with DKMS: {}",
                t.module,
                t.version,
                t.kernel,
                deps.join(", ")
            )),
            _ => {}
        }
    }
    let report = engine::run_plan(host, &plan, options, printer);
    let mut installed_on = BTreeSet::new();
    let mut failed_on = BTreeSet::new();
    for outcome in &report.outcomes {
        let t = &outcome.target;
        match &outcome.result {
            JobResult::Installed => {
                installed_on.insert(t.kernel.clone());
            }
            JobResult::Excluded { .. } => {}
            JobResult::Skipped { reason } => {
                failed_on.insert((t.module.clone(), t.kernel.clone()));
                problems.push(format!(
                    "{}/{} for {}: not built: {reason}",
                    t.module, t.version, t.kernel
                ));
            }
            JobResult::Failed { message, log, .. } => {
                failed_on.insert((t.module.clone(), t.kernel.clone()));
                problems.push(match log {
                    Some(log) => format!(
                        "{}/{} failed to build for {}: see {}",
                        t.module,
                        t.version,
                        t.kernel,
                        log.display()
                    ),
                    None => format!("{}/{} for {}: {message}", t.module, t.version, t.kernel),
                });
            }
        }
    }
    for (kernel, error) in &report.depmod_failures {
        problems.push(format!("depmod for {kernel}: {error}"));
    }
    retire_removed_versions(host, sources, &failed_on, options, printer, &mut problems);
    regenerate_initramfs(host, changes, &installed_on, printer, &mut problems);

    if problems.is_empty() {
        return Ok(ExitCode::SUCCESS);
    }
    for problem in &problems {
        printer.error(&anyhow::anyhow!("{problem}"));
    }
    Ok(ExitCode::FAILURE)
}

/// Versions whose source went away in this transaction (noted by the pre-transaction
/// hooks, or found with a dangling source link) are retired kernel by kernel: where
/// another version of the module is now installed, the old build is dropped; where
/// none is (the package was removed, not upgraded), it is uninstalled; where the new
/// version failed to build, the old one stays installed and working.
fn retire_removed_versions(
    host: &Host,
    sources: &[Source],
    failed: &BTreeSet<(String, String)>,
    options: &Options,
    printer: &Printer,
    problems: &mut Vec<String>,
) {
    let note = std::fs::read_to_string(transaction_note(host)).unwrap_or_default();
    if let Ok(root) = host.dkms_root() {
        let _ = root.remove(&transaction_note(host));
    }
    let noted: BTreeSet<&str> = note.lines().collect();
    for mv in tree::module_versions(&host.paths, None, None) {
        if mv.source == SourceState::Added {
            continue;
        }
        // Removed in this transaction (noted while its dkms.conf was readable), or a
        // broken leftover that no kernel uses any more. A broken version that is still
        // installed from an earlier transaction (its replacement failed) is kept.
        let removed_now = noted.contains(format!("{}/{}", mv.module, mv.version).as_str())
            && !sources
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
        for (k, a) in tree::built_for(&host.paths, &mv.module, &mv.version, None, None) {
            let target = Target::new(&mv.module, &mv.version, &k, &a);
            if target.is_installed(&host.paths) && failed.contains(&(mv.module.clone(), k.clone()))
            {
                printer.warning(&format!(
                    "{}/{} stays installed for {k}: its replacement failed to build",
                    mv.module, mv.version
                ));
                keep = true;
                continue;
            }
            if let Err(e) = engine::unbuild(host, &target, options, printer) {
                problems.push(format!("removing {target}: {e}"));
                keep = true;
            }
        }
        if !keep {
            printer.step(&format!(
                "Removing {}/{} from the DKMS tree: its source was removed",
                mv.module, mv.version
            ));
            if let Err(e) =
                engine::remove(host, &mv.module, &mv.version, &[], true, options, printer)
            {
                problems.push(format!("removing {}/{}: {e}", mv.module, mv.version));
            }
        }
    }
}

/// mkinitcpio's hook does not run when only headers changed; when we then installed
/// modules for that kernel, the initramfs is regenerated here.
fn regenerate_initramfs(
    host: &Host,
    changes: &Changes,
    installed_on: &BTreeSet<String>,
    printer: &Printer,
    problems: &mut Vec<String>,
) {
    for kernel in hook::headers_only_kernels(changes).intersection(installed_on) {
        let pkgbase = dkms_core::kernel::Kernel::probe(&host.paths, kernel).and_then(|k| k.pkgbase);
        let template = match (&host.settings.initramfs_command, &pkgbase) {
            (Some(command), _) => command.clone(),
            (None, Some(_)) if std::path::Path::new("/usr/bin/mkinitcpio").exists() => {
                "mkinitcpio -p {pkgbase}".to_string()
            }
            _ => {
                printer.warning(&format!(
                    "modules were installed for {kernel} after its initramfs was built; regenerate it yourself (no mkinitcpio or initramfs_command in dkms-hook.toml)"
                ));
                continue;
            }
        };
        // The values come from files; quoted, they stay one word each in the shell.
        let command = template.replace("{kernel}", &shell_quote(kernel)).replace(
            "{pkgbase}",
            &shell_quote(pkgbase.as_deref().unwrap_or(kernel)),
        );
        printer.step(&format!(
            "Regenerating the initramfs of {kernel}: {command}"
        ));
        match dkms_core::exec::Command::new("sh", "regenerate the initramfs")
            .args(["-c", &command])
            .read()
        {
            Ok(_) => {}
            Err(e) => problems.push(format!("initramfs for {kernel}: {e}")),
        }
    }
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}
