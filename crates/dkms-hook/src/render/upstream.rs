//! The `dkms` face's words: upstream dkms 3.4.x's lines for the events and errors
//! scripts and its test suite look at (`Creating symlink`, `Building module(s)...
//! done.`, `Installing <file>`, `Deleting <file>`, `Running depmod... done.`, the
//! signing lines, the skip messages, and errors as a blank line then `Error! ...` on
//! stderr). Events upstream has no line for print nothing; events only we have
//! (warnings about our extras) keep the pacman face's wording.
//!
//! The strings are facts of the interface (scripts compare them), so they are
//! reproduced exactly; the library never holds them.

use super::{pacman, Line};
use dkms_core::commands::Outcomes;
use dkms_core::engine::{EngineError, Event};
use dkms_core::tree::Target;
use std::path::Path;
use std::sync::Mutex;

/// What this face holds back until a later event: upstream prints `Signing module
/// <file>` after `Building module(s)... done.`, we sign before the build is done.
#[derive(Default)]
pub struct Pending {
    signed: Mutex<Vec<String>>,
    /// The blank line after an autoinstall job: upstream prints it after the
    /// kernel's depmod, which our scheduler runs once the job has ended.
    blank: Mutex<bool>,
    /// `Autoinstall of module ...`: upstream prints the signing lines before it,
    /// we know them only once the job's build has started.
    job_line: Mutex<Option<String>>,
}

impl Pending {
    /// The held-back blank line, if any.
    fn take_job_line(&self) -> Option<Line<'static>> {
        let mut held = self.job_line.lock().unwrap_or_else(|p| p.into_inner());
        held.take().map(Line::Out)
    }

    fn take_blank(&self) -> Option<Line<'static>> {
        let mut blank = self.blank.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *blank).then(|| Line::Out(String::new()))
    }
}

/// The lines for one event (none for an event this face does not show).
pub fn lines<'a>(event: &Event<'a>, pending: &Pending) -> Vec<Line<'a>> {
    if let Event::DepmodDone { .. } = event {
        let mut lines = vec![Line::Out("Running depmod... done.".to_string())];
        lines.extend(pending.take_blank());
        return lines;
    }
    let shown = event_lines(event, pending);
    if shown.is_empty() {
        return shown;
    }
    let mut lines: Vec<Line<'a>> = pending.take_blank().into_iter().collect();
    if let Event::SigningWith { .. } = event {
        lines.extend(shown);
        lines.extend(pending.take_job_line());
    } else {
        lines.extend(pending.take_job_line());
        lines.extend(shown);
    }
    lines
}

fn event_lines<'a>(event: &Event<'a>, pending: &Pending) -> Vec<Line<'a>> {
    use Event as E;
    use Line::Out;
    let one = |line| vec![line];
    match *event {
        // Upstream copies a source directory into the source tree without a word, and
        // says nothing more once the symlink is made.
        E::CopyingSource { .. } | E::Added { .. } => vec![],
        E::LinkedSource { link, target } => one(Out(format!(
            "Creating symlink {} -> {}",
            link.display(),
            target.display()
        ))),
        E::Building { .. } | E::Installing { .. } | E::Unbuilding { .. } => vec![],
        E::RunningDepmod { .. } => vec![],
        E::SigningWith {
            sign_file,
            key,
            certificate,
        } => vec![
            Out(format!("Sign command: {}", sign_file.display())),
            Out(format!("Signing key: {}", key.display())),
            Out(format!(
                "Public certificate (MOK): {}",
                certificate.display()
            )),
            Out(String::new()),
        ],
        E::SigningKeyGenerated { .. } => one(Out(
            "Certificate or key are missing, generating self signed certificate for MOK..."
                .to_string(),
        )),
        E::Signed { file, .. } => {
            let mut signed = pending.signed.lock().unwrap_or_else(|p| p.into_inner());
            signed.push(format!("Signing module {}", file.display()));
            vec![]
        }
        E::Built { .. } => {
            let mut lines = vec![Out("Building module(s)... done.".to_string())];
            let mut signed = pending.signed.lock().unwrap_or_else(|p| p.into_inner());
            lines.extend(signed.drain(..).map(Out));
            lines
        }
        E::Installed { path, .. } => one(Out(format!("Installing {}", path.display()))),
        E::Uninstalling { target } => vec![
            Out(format!("Module {}:", for_kernel(target))),
            Out("Before uninstall, this module version was ACTIVE on this kernel.".to_string()),
        ],
        E::Uninstalled { path, .. } => one(Out(format!("Deleting {}", path.display()))),
        E::NotInstalled { target } => one(Out(format!(
            "Module {}/{} is not installed for kernel {} ({}). Skipping...",
            target.module, target.version, target.kernel, target.arch
        ))),
        E::NotBuilt { target } => one(Out(format!(
            "Module {}/{} is not built for kernel {} ({}). Skipping...",
            target.module, target.version, target.kernel, target.arch
        ))),
        E::DepmodDone { .. } => one(Out("Running depmod... done.".to_string())),
        E::Removing { module, version } => one(Out(format!(
            "Deleting module {module}/{version} completely from the DKMS tree."
        ))),
        E::RemovingForKernel { target } => one(Line::Err(format!(
            "dkms: removing module {}/{} for kernel {} ({})",
            target.module, target.version, target.kernel, target.arch
        ))),
        E::TargetDone { .. } => one(Out(String::new())),
        E::JobStarted { target, .. } => {
            let line = format!(
                "Autoinstall of module {}/{} for kernel {} ({})",
                target.module, target.version, target.kernel, target.arch
            );
            *pending.job_line.lock().unwrap_or_else(|p| p.into_inner()) = Some(line);
            vec![]
        }
        E::JobFinished { result, .. } => {
            let mut lines: Vec<Line<'a>> = pending.take_job_line().into_iter().collect();
            if let dkms_core::engine::JobResult::Failed { message, .. } = result {
                lines.push(Line::UpstreamError(message.clone()));
            }
            *pending.blank.lock().unwrap_or_else(|p| p.into_inner()) = true;
            lines
        }
        E::ModuleNotReplaced {
            target,
            module,
            refusal,
        } => match refusal {
            dkms_core::engine::version_check::Refusal::Newer { version, .. } => {
                one(Line::UpstreamError(format!(
                    "Module version {} for {module}.ko\nis not newer than what is already found in kernel {} ({version}).\nYou may override by specifying --force.",
                    target.version, target.kernel
                )))
            }
            dkms_core::engine::version_check::Refusal::Same { found, version } => one(Out(format!(
                "Module {} already installed at version {version}, override by specifying --force",
                found.display()
            ))),
        },
        E::ForcedByList {
            target,
            version_override,
        } => one(Out(if version_override {
            format!("Forcing version override of {}", target.module)
        } else {
            format!("Forcing installation of {}", target.module)
        })),
        E::SigningSkipped { why, .. } => one(Out(match why {
            dkms_core::environment::NoSigning::Policy => {
                "Module signing is disabled by policy, modules won't be signed".to_string()
            }
            dkms_core::environment::NoSigning::Chroot => {
                "Running in chroot, modules won't be signed".to_string()
            }
        })),
        // invoke_command's line: the description, then " done." or the status.
        E::PostTransactionRan {
            status, command, ..
        } => {
            let end = match status {
                dkms_core::exec::ExitDescription::Code(0) => " done.".to_string(),
                dkms_core::exec::ExitDescription::Code(code) => {
                    format!("(bad exit status: {code})\nFailed command:\n{command}")
                }
                dkms_core::exec::ExitDescription::Signal(signal) => format!(
                    "(bad exit status: {})\nFailed command:\n{command}",
                    128 + signal
                ),
            };
            one(Out(format!(
                "{}...{end}",
                dkms_core::post_transaction::DESCRIPTION
            )))
        }
        // Said in the closing lines, where upstream says it.
        E::Deferred { .. } => vec![],
        E::AutoinstallDisabled => one(Out(
            "Automatic installation of modules has been disabled.".to_string()
        )),
        E::AlreadyDone { error } => skip_line(error).map(Out).into_iter().collect(),
        E::TargetFailed { error } => match error {
            EngineError::Excluded { .. } => pacman::line(event).into_iter().collect(),
            _ => one(Line::UpstreamError(error_text(error))),
        },
        _ => pacman::line(event).into_iter().collect(),
    }
}

/// `module/version for kernel K (arch)`, as upstream names a target.
fn for_kernel(t: &Target) -> String {
    format!(
        "{}/{} for kernel {} ({})",
        t.module, t.version, t.kernel, t.arch
    )
}

/// A skip upstream treats as success: `build` of what is built, `install` of what
/// is installed (without `--force`).
pub fn skip_line(error: &EngineError) -> Option<String> {
    match error {
        EngineError::AlreadyBuilt { target } => Some(format!(
            "Module {}/{} already built for kernel {} ({}), skip. You may override by specifying --force.",
            target.module, target.version, target.kernel, target.arch
        )),
        EngineError::AlreadyInstalled { target } => Some(format!(
            "Module {}/{} already installed on kernel {} ({}), skip. You may override by specifying --force.",
            target.module, target.version, target.kernel, target.arch
        )),
        _ => None,
    }
}

/// Upstream's text (after `Error! `) for an engine error; ours where upstream has
/// no counterpart.
pub fn error_text(error: &EngineError) -> String {
    use EngineError as E;
    match error {
        E::AlreadyAdded { module, version } => format!(
            "DKMS tree already contains: {module}/{version}\nYou cannot add the same module/version combo more than once."
        ),
        E::SourceMissing { dir } => format!(
            "Could not find module source directory.\nDirectory: {} does not exist.",
            dir.display()
        ),
        E::NotAdded { module, version } => format!(
            "The module/version combo: {module}/{version} is not located in the DKMS tree."
        ),
        E::NothingInstalled { .. } => "Installation aborted.".to_string(),
        E::Broken { module, version } => format!(
            "{module}/{version} is broken!\nMissing the source directory or the symbolic link pointing to it.\nManual intervention is required!"
        ),
        E::NoDkmsConf { dir } => format!("{} must contain a dkms.conf file!", dir.display()),
        E::NoHeaders { kernel, dir } => {
            no_headers(kernel, dir.parent().unwrap_or(Path::new("/")))
        }
        E::NoKernelToBuild(not_installed) | E::NoKernel(not_installed) => {
            no_headers(&not_installed.kernel, &not_installed.dir)
        }
        E::BuildFailed { target, log, .. } => format!(
            "Bad return status for module build on kernel: {} ({})\nConsult {} for more information.",
            target.kernel,
            target.arch,
            log.display()
        ),
        E::Conf(conf) => match conf_file(conf) {
            Some(file) => format!(
                "Bad conf file.\nFile: {} does not represent a valid dkms.conf file.",
                file.display()
            ),
            None => "Bad conf file.".to_string(),
        },
        _ => chain(error),
    }
}

/// Upstream's message for a kernel without headers; `kernel_dir` is
/// `<install_tree>/<kernel>`.
pub fn no_headers(kernel: &str, kernel_dir: &Path) -> String {
    let dir = kernel_dir.display();
    format!(
        "Your kernel headers for kernel {kernel} cannot be found at {dir}/build or {dir}/source.\nPlease install your distribution's kernel headers package matching {kernel}, or use the --kernelsourcedir option to tell DKMS where it's located."
    )
}

/// The dkms.conf a configuration error is about, when it names one.
fn conf_file(error: &dkms_core::conf::ConfError) -> Option<&Path> {
    use dkms_core::conf::ConfError as C;
    match error {
        C::Unreadable { file, .. }
        | C::Eval { file, .. }
        | C::Hung { file, .. }
        | C::Exited { file }
        | C::Untrusted { file, .. }
        | C::Syntax { file, .. }
        | C::Directive { file, .. } => Some(file),
    }
}

/// Any error with its causes, one per line, for errors upstream has no text for.
pub fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push('\n');
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// An error that reached the top of a `dkms` command: upstream's words for the
/// errors it has words for.
pub fn top_error(error: &anyhow::Error) -> String {
    for cause in error.chain() {
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return error_text(engine);
        }
    }
    let mut text = error.to_string();
    for cause in error.chain().skip(1) {
        text.push('\n');
        text.push_str(&cause.to_string());
    }
    text
}

/// What `build`/`install` say when the module version they add first was added.
pub fn already_added(module: &str, version: &str) -> String {
    format!("Module {module}/{version} already added.")
}

/// autoinstall's closing lines: per kernel, what succeeded, was skipped, failed.
pub fn autoinstall_summary(outcomes: &Outcomes, pending: &Pending) -> Vec<Line<'static>> {
    use std::collections::BTreeMap;
    let mut kernels: BTreeMap<&str, [Vec<&str>; 3]> = BTreeMap::new();
    for t in &outcomes.installed {
        kernels.entry(&t.kernel).or_default()[0].push(&t.module);
    }
    for (t, skip) in &outcomes.skipped {
        if matches!(skip, dkms_core::commands::Skip::Excluded(_)) {
            kernels.entry(&t.kernel).or_default()[1].push(&t.module);
        }
    }
    for (t, _) in &outcomes.failed {
        kernels.entry(&t.kernel).or_default()[2].push(&t.module);
    }
    let mut lines: Vec<Line<'static>> = pending.take_job_line().into_iter().collect();
    lines.extend(pending.take_blank());
    for (kernel, [installed, skipped, failed]) in &kernels {
        for (list, word) in [
            (installed, "succeeded for"),
            (skipped, "was skipped for"),
            (failed, "failed for"),
        ] {
            if !list.is_empty() {
                lines.push(Line::Out(format!(
                    "Autoinstall on {kernel} {word} module(s) {}.",
                    list.join(" ")
                )));
            }
        }
    }
    let mut deferred: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    for (t, skip) in &outcomes.skipped {
        if let dkms_core::commands::Skip::WaitsFor(missing) = skip {
            lines.push(Line::Out(format!(
                "{}/{} autoinstall deferred: BUILD_DEPENDS not registered with DKMS: {}.",
                t.module,
                t.version,
                missing.join(" ")
            )));
            deferred
                .entry(&t.kernel)
                .or_default()
                .push(format!("{}/{}", t.module, t.version));
        }
    }
    for (kernel, modules) in &deferred {
        lines.push(Line::Out(format!(
            "Autoinstall on {kernel} deferred module(s) {} due to BUILD_DEPENDS not yet registered with DKMS.",
            modules.join(" ")
        )));
        lines.push(Line::Out(
            "These may be provided externally or by a package not yet configured; autoinstall will retry on the next trigger.".to_string(),
        ));
    }
    if !outcomes.failed.is_empty() {
        lines.push(Line::UpstreamError(
            "One or more modules failed to install during autoinstall.\nRefer to previous errors for more information.".to_string(),
        ));
    }
    lines
}
