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
use dkms_core::sign::SignError;
use dkms_core::tree::Target;
use std::path::Path;
use std::sync::Mutex;

/// What this face holds back until a later event: upstream prints `Signing module
/// <file>` after `Building module(s)... done.`, we sign before the build is done.
#[derive(Default)]
pub struct Pending {
    signed: Mutex<Vec<Held>>,
    /// The blank line after an autoinstall job: upstream prints it after the
    /// kernel's depmod, which our scheduler runs once the job has ended.
    blank: Mutex<bool>,
    /// `Autoinstall of module ...`: upstream prints the signing lines before it,
    /// we know them only once the job's build has started.
    job_line: Mutex<Option<String>>,
    /// The trees, for the paths upstream's messages name (set once the command's host
    /// is known).
    pub paths: std::sync::OnceLock<dkms_core::Paths>,
}

/// A line held back in [`Pending`], for stdout or stderr.
enum Held {
    Out(String),
    Err(String),
}

impl Held {
    fn line(self) -> Line<'static> {
        match self {
            Held::Out(text) => Line::Out(text),
            Held::Err(text) => Line::Err(text),
        }
    }
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
        // Upstream says `... done.` once a logged script has finished, and names the
        // others with a colon before their output (which reaches the terminal).
        E::RunningScript { logged: true, .. } => vec![],
        E::RunningScript {
            kind,
            logged: false,
        } => one(Out(format!("Running the {kind} script:"))),
        E::ScriptDone { kind } => one(Out(format!("Running the {kind} script... done."))),
        // The script's own output, which reaches upstream's terminal unchanged.
        E::ScriptOutput { stdout, stderr, .. } => stdout
            .lines()
            .map(|l| Out(l.to_string()))
            .chain(stderr.lines().map(|l| Line::Err(l.to_string())))
            .collect(),
        // Upstream names a replacement only for OBSOLETE_BY; the others are just named.
        E::Deprecated {
            file, directive, ..
        } if directive != "OBSOLETE_BY" => one(Line::Err(format!(
            "Deprecated feature: {directive} ({})",
            file.display()
        ))),
        E::Deprecated {
            file,
            directive,
            advice,
        } => one(Line::Err(format!(
            "Deprecated feature: {directive} ({}): {advice}",
            file.display()
        ))),
        E::BuildingDespiteMissingDependencies { target, missing } => one(Line::Err(format!(
            "Warning: Trying to build module {} despite of missing BUILD_DEPENDS: {}.",
            for_kernel(target),
            missing.join(" ")
        ))),
        E::NoModules { .. } => one(Line::Err(
            "dkms.conf: Warning! Zero modules specified.".to_string(),
        )),
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
        } => {
            let mut lines = sign_prologue(sign_file, Some((key, certificate)));
            lines.push(Out(String::new()));
            lines
        }
        E::SignFileMissing { sign_file, .. } => {
            let mut lines = sign_prologue(sign_file, None);
            lines.push(Out(format!(
                "Binary {} not found, modules won't be signed",
                sign_file.display()
            )));
            lines.push(Out(String::new()));
            lines
        }
        E::NoSigningKey {
            sign_file,
            key,
            certificate,
            error,
            ..
        } => {
            let mut lines = sign_prologue(sign_file, Some((key, certificate)));
            lines.push(Out(no_key_line(error, key, certificate)));
            lines.push(Out(String::new()));
            lines
        }
        // Upstream says so between the key lines and the blank line, and its test
        // suite filters the line out; the key lines are what matters.
        E::SigningKeyGenerated { .. } => vec![],
        E::Signed { built, .. } => {
            let mut signed = pending.signed.lock().unwrap_or_else(|p| p.into_inner());
            signed.push(Held::Out(format!("Signing module {}", built.display())));
            vec![]
        }
        E::SigningFailed { built, error, .. } => {
            let mut signed = pending.signed.lock().unwrap_or_else(|p| p.into_inner());
            signed.push(Held::Out(format!("Signing module {}", built.display())));
            signed.push(Held::Err(format!(
                "Warning: Failed to sign module '{}'!",
                built.display()
            )));
            signed.push(Held::Err(sign_file_output(error)));
            vec![]
        }
        E::Built { .. } => {
            let mut lines = vec![Out("Building module(s)... done.".to_string())];
            let mut signed = pending.signed.lock().unwrap_or_else(|p| p.into_inner());
            lines.extend(signed.drain(..).map(Held::line));
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
        E::JobFinished { result, target, .. } => {
            let mut lines: Vec<Line<'a>> = pending.take_job_line().into_iter().collect();
            match result {
                dkms_core::engine::JobResult::Failed { message, .. } => {
                    lines.push(Line::UpstreamError(message.clone()));
                }
                dkms_core::engine::JobResult::Excluded { .. } => {
                    lines.extend(excluded_lines(target, pending));
                }
                _ => {}
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
            EngineError::Excluded { target, .. } => excluded_lines(target, pending),
            _ => error_lines(error),
        },
        _ => pacman::line(event).into_iter().collect(),
    }
}

/// `Sign command:` and, when the key was looked at, `Signing key:` and `Public
/// certificate (MOK):`: what upstream prints before it decides whether it can sign.
fn sign_prologue(sign_file: &Path, key: Option<(&Path, &Path)>) -> Vec<Line<'static>> {
    let mut lines = vec![Line::Out(format!("Sign command: {}", sign_file.display()))];
    if let Some((key, certificate)) = key {
        lines.push(Line::Out(format!("Signing key: {}", key.display())));
        lines.push(Line::Out(format!(
            "Public certificate (MOK): {}",
            certificate.display()
        )));
    }
    lines
}

/// Upstream's line for a key pair it could not have: which file is missing, or that
/// openssl is.
pub fn no_key_line(error: &SignError, key: &Path, certificate: &Path) -> String {
    use dkms_core::exec::ExecError;
    match error {
        SignError::Generate {
            source: ExecError::NotFound { .. },
            ..
        } => "openssl not found, can't generate key and certificate.".to_string(),
        SignError::CertificateNotGenerated { .. } => format!(
            "Certificate file {} not found and can't be generated, modules won't be signed",
            certificate.display()
        ),
        SignError::GeneratedNothing { missing, .. } if missing.ends_with("cert.der") => format!(
            "Certificate file {} not found and can't be generated, modules won't be signed",
            certificate.display()
        ),
        _ => format!(
            "Key file {} not found and can't be generated, modules won't be signed",
            key.display()
        ),
    }
}

/// What sign-file printed when it failed (upstream prints its output after the
/// warning, an empty line when there was none).
fn sign_file_output(error: &SignError) -> String {
    match error {
        SignError::Sign {
            source: dkms_core::exec::ExecError::Failed { stderr_tail, .. },
            ..
        } => stderr_tail.clone(),
        _ => String::new(),
    }
}

/// Upstream's warning for a target BUILD_EXCLUSIVE_* excludes (on stderr), naming
/// the dkms.conf by upstream's copy of it under `<m>/<v>/<k>/<a>/`.
fn excluded_lines(target: &Target, pending: &Pending) -> Vec<Line<'static>> {
    let conf = match pending.paths.get() {
        Some(paths) => target
            .build_dir(paths)
            .join("dkms.conf")
            .display()
            .to_string(),
        None => "dkms.conf".to_string(),
    };
    [
        format!("Warning: The {conf}"),
        format!(
            "for module {}/{} includes BUILD_EXCLUSIVE directives",
            target.module, target.version
        ),
        "which do not match this kernel/arch/config for any modules.".to_string(),
        "This indicates that it should not be built.".to_string(),
    ]
    .into_iter()
    .map(Line::Err)
    .collect()
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
            // Upstream names the file by its absolute path.
            Some(file) => format!(
                "Bad conf file.\nFile: {} does not represent a valid dkms.conf file.",
                std::path::absolute(file)
                    .unwrap_or_else(|_| file.to_path_buf())
                    .display()
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
        | C::UnreadableByBuilder { file, .. }
        | C::Eval { file, .. }
        | C::Hung { file, .. }
        | C::Exited { file }
        | C::Untrusted { file, .. }
        | C::Syntax { file, .. }
        | C::Invalid { file, .. } => Some(file),
    }
}

/// Upstream's lines for an engine error: a bad dkms.conf's `dkms.conf: Error! ...`
/// lines (every problem, on stderr), then the `Error!` text.
pub fn error_lines(error: &EngineError) -> Vec<Line<'static>> {
    let mut lines: Vec<Line<'static>> = match error {
        EngineError::Conf(dkms_core::conf::ConfError::Invalid { problems, .. }) => problems
            .iter()
            .map(|p| Line::Err(problem_line(p)))
            .collect(),
        _ => Vec::new(),
    };
    lines.push(Line::UpstreamError(error_text(error)));
    lines
}

/// Upstream's `dkms.conf: Error! ...` line for one problem (two lines for a bad
/// DEST_MODULE_LOCATION, as upstream); ours in the same form for a rule only we have.
fn problem_line(problem: &dkms_core::conf::Problem) -> String {
    use dkms_core::conf::UpstreamRule as R;
    let text = match &problem.rule {
        Some(R::NoPackageName) => "No 'PACKAGE_NAME' directive specified.".to_string(),
        Some(R::NoPackageVersion) => "No 'PACKAGE_VERSION' directive specified.".to_string(),
        Some(R::NoBuiltModuleName { record }) => {
            format!("No 'BUILT_MODULE_NAME' directive specified for record #{record}.")
        }
        Some(R::BuiltModuleNameSuffix { record }) => format!(
            "'BUILT_MODULE_NAME' directive ends in '.o' or '.ko' in record #{record}."
        ),
        Some(R::DestModuleNameSuffix { record }) => format!(
            "'DEST_MODULE_NAME' directive ends in '.o' or '.ko' in record #{record}."
        ),
        Some(R::NoDestModuleLocation { record }) => {
            format!("No 'DEST_MODULE_LOCATION' directive specified for record #{record}.")
        }
        Some(R::DestModuleLocationPrefix { record }) => format!(
            "Directive 'DEST_MODULE_LOCATION' does not begin with\n'/kernel', '/updates', or '/extra' in record #{record}."
        ),
        Some(R::UnsupportedValue { name, value }) => {
            format!("Unsupported {name} value '{value}'")
        }
        Some(R::DuplicateBuiltModule { module, record }) => {
            format!("Duplicate module '{module}' in 'BUILT_MODULE_NAME[{record}]'.")
        }
        Some(R::DuplicateDestModule { module, record }) => {
            format!("Duplicate module '{module}' in 'DEST_MODULE_NAME[{record}]'.")
        }
        None => problem.to_string(),
    };
    format!("dkms.conf: Error! {text}")
}

/// [`error_lines`] for an error that reached the top of a `dkms` command.
pub fn top_error_lines(error: &anyhow::Error) -> Vec<Line<'static>> {
    for cause in error.chain() {
        if let Some(engine) = cause.downcast_ref::<EngineError>() {
            return error_lines(engine);
        }
    }
    vec![Line::UpstreamError(top_error(error))]
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

/// The usage text of the `dkms` face, printed (as upstream prints its usage) when no
/// action is given. Our own words: what matters to scripts is the exit status.
pub fn usage() -> String {
    [
        "Usage: dkms ACTION [OPTIONS] [MODULE/VERSION | SOURCE-DIR | TARBALL]",
        "Actions: add, remove, build, unbuild, install, uninstall, match, autoinstall,",
        "         mktarball, ldtarball, status, generate_mok, kernel_preinst,",
        "         kernel_postinst, kernel_prerm",
        "Options: -m MODULE[/VERSION] -v VERSION -k KERNEL[/ARCH] -a ARCH -c DKMS.CONF",
        "         -q --force --all --templatekernel KERNEL --directive NAME=VALUE",
        "         --config KERNEL-CONFIG --archive TARBALL --kernelsourcedir DIR",
        "         --dkmstree DIR --sourcetree DIR --installtree DIR --binaries-only",
        "         --source-only --verbose --debug --no-depmod -j N --version --help",
        "Run `dkms --help` for what each one does.",
        "",
    ]
    .join("\n")
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
