//! The scripts of a dkms.conf (PRE_BUILD, POST_BUILD, POST_ADD, PRE_INSTALL,
//! POST_INSTALL, POST_REMOVE), run as upstream runs them: from the source (or an
//! `/etc/dkms/<m>/` override), only when executable, PRE_BUILD and POST_BUILD through
//! the shell's `eval` with their output in make.log, the others word-split with their
//! output shown. Build-time scripts run in the build user's jail, the others as root.

use super::{EngineError, Event, Progress};
use crate::environment::build_environment_prelude;
use crate::exec::Command;
use crate::exec::ExitDescription;
use crate::host::Host;
use crate::sandbox::Jail;
use crate::tree::Target;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use std::time::Instant;

/// Runs a dkms.conf script (PRE_BUILD, POST_ADD, ...) as upstream does: relative to
/// `dir` and from it, executable; with a `log` (PRE_BUILD, POST_BUILD) through the
/// shell's `eval`, else only word-split and globbed. A non-executable script is a
/// warning, a failing one an error (callers ignore POST_INSTALL's and POST_REMOVE's).
pub(crate) fn run_script(
    host: &Host,
    target: &Target,
    kind: &'static str,
    script: &str,
    dir: &Path,
    log: Option<(&File, &Path)>,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    run_script_in(
        host,
        target,
        kind,
        script,
        (dir, &Jail::none()),
        log,
        progress,
    )
}

/// [`run_script`] in `jail` (the build user's for PRE_BUILD and POST_BUILD; the
/// others are install-time steps, root's).
pub(super) fn run_script_in(
    host: &Host,
    target: &Target,
    kind: &'static str,
    script: &str,
    (dir, jail): (&Path, &Jail),
    log: Option<(&File, &Path)>,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    // Scripts run as root from the source (or our copy of it): never an untrusted one.
    host.check_added_source(&target.module, &target.version)?;
    let program = script.split_whitespace().next().unwrap_or_default();
    // /etc/dkms/<m>/<script> replaces the source's and runs from there.
    let override_dir = host.paths.module_override_dir(&target.module);
    let overridden = host.module_override(&target.module, program)?.is_some();
    let dir = if overridden {
        override_dir.as_path()
    } else {
        dir
    };
    let path = dir.join(program);
    let executable = fs::metadata(&path).is_ok_and(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.is_file() && m.permissions().mode() & 0o111 != 0
    });
    if !executable {
        progress.event(Event::ScriptNotExecutable {
            target,
            kind,
            path: &path,
        });
        return Ok(());
    }
    progress.event(Event::RunningScript {
        kind,
        logged: log.is_some(),
    });
    // dkms exports these four to the build and install children (they reach them as
    // temporary assignments on its function calls), not to POST_ADD or POST_REMOVE.
    let exports = if matches!(kind, "post_add" | "post_remove") {
        ""
    } else {
        "export module module_version kernelver arch; "
    };
    let (status, log_path) = match log {
        // PRE_BUILD and POST_BUILD: dkms evals `cd <dir>/ && <dir>/<script>`, so the
        // script string goes through the shell a third time (quotes, `$x`, `;`, `&&`
        // and redirections all work), with the output in make.log.
        Some((file, path)) => {
            let benv = build_environment_prelude(host.settings.build_environment.as_deref());
            let body = format!("{benv}{exports}cd -- \"$1/\" && eval \"\\\"\\$1\\\"/$2\"");
            let command = shell(host, target, &body, kind, jail)
                .arg(dir.as_os_str())
                .arg(script)
                .dir(dir);
            let mut writer = file;
            let _ = writeln!(
                writer,
                "\nRunning the {kind} script\n# command: cd {dir}/ && {dir}/{script}",
                dir = dir.display()
            );
            let started = Instant::now();
            let status = command.run_to_log(file, &[])?;
            let _ = writeln!(
                writer,
                "\n# exit code: {}\n# elapsed time: {}\n{}",
                exit_number(&status),
                elapsed(started.elapsed()),
                "-".repeat(64)
            );
            (status, path.to_path_buf())
        }
        // The others: no eval, only word splitting and globbing of `<dir>/<script>`.
        None => {
            let body = format!("{exports}cd -- \"$1/\" || exit 15; exec $1/$2");
            let command = shell(host, target, &body, kind, jail)
                .arg(dir.as_os_str())
                .arg(script)
                .dir(dir);
            let out = command.output_with_stdin(&[])?;
            let (stdout, stderr) = (
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
            );
            if !stdout.is_empty() || !stderr.is_empty() {
                progress.event(Event::ScriptOutput {
                    kind,
                    stdout: &stdout,
                    stderr: &stderr,
                });
            }
            (out.status, PathBuf::from("(no log)"))
        }
    };
    if status != ExitDescription::Code(0) {
        return Err(EngineError::ScriptFailed {
            target: Box::new(target.clone()),
            script: kind,
            status: status.to_string(),
            code: exit_number(&status),
            log: log_path,
        });
    }
    if log.is_some() {
        progress.event(Event::ScriptDone { kind });
    }
    Ok(())
}

/// The variables dkms gives MAKE and the build scripts, as shell assignments read
/// from positional parameters (never spliced into the command text).
const SHELL_PRELUDE: &str = "kernelver=$1 arch=$2 kernel_source_dir=$3 dkms_tree=$4 source_tree=$5 install_tree=$6 module=$7 module_version=$8; shift 8; ";

pub(super) fn shell(
    host: &Host,
    target: &Target,
    script: &str,
    purpose: &str,
    jail: &Jail,
) -> Command {
    let config = host.kernel_config(&target.kernel);
    let mut command = Command::build_step("bash", purpose, jail).caller_env(&host.caller_env);
    for (name, value) in host.caller_env.compiler_for(config.as_ref().as_ref()) {
        command = command.env(&name, value);
    }
    command
        .args(["--norc", "--noprofile", "-c"])
        .arg(format!("{SHELL_PRELUDE}{script}"))
        .arg("dkms-hook")
        .arg(&target.kernel)
        .arg(&target.arch)
        .arg(host.paths.kernel_source_dir(&target.kernel).as_os_str())
        .arg(host.paths.dkms_tree.as_os_str())
        .arg(host.paths.source_tree.as_os_str())
        .arg(host.paths.install_tree.as_os_str())
        .arg(&target.module)
        .arg(&target.version)
}

/// The number a shell would report for how a child ended (128 + signal when killed).
fn exit_number(status: &ExitDescription) -> i32 {
    match status {
        ExitDescription::Code(code) => *code,
        ExitDescription::Signal(signal) => 128 + signal,
    }
}

/// `HH:MM:SS`, as make.log's `# elapsed time:` lines.
fn elapsed(duration: Duration) -> String {
    let secs = duration.as_secs();
    format!("{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}
