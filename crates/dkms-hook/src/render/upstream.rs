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
}

/// The lines for one event (none for an event this face does not show).
pub fn lines<'a>(event: &Event<'a>, pending: &Pending) -> Vec<Line<'a>> {
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
            Out(format!("Public certificate (MOK): {}", certificate.display())),
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
    format!("{}/{} for kernel {} ({})", t.module, t.version, t.kernel, t.arch)
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
fn no_headers(kernel: &str, kernel_dir: &Path) -> String {
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

/// autoinstall's closing table.
pub fn autoinstall_summary(outcomes: &Outcomes) -> Vec<Line<'static>> {
    pacman::autoinstall_summary(outcomes)
}
