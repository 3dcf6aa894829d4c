//! framework.conf's `post_transaction`: a command upstream runs once after a command
//! that changed the installed modules (install, uninstall, unbuild, remove), and that
//! we also run once after a pacman transaction that installed or removed modules
//! (the documented intent; upstream's own autoinstall never gets there).
//!
//! As upstream's `invoke_command`: the command is `eval`'d by bash with the caller's
//! environment, its output (stdout and stderr together) goes to
//! `<dkms_tree>/post_transaction.log`, truncated first, in make.log's block format,
//! and its exit status is reported but never fails the command.

use crate::engine::{EngineError, Event, Progress};
use crate::exec::{Command, ExitDescription};
use crate::Host;
use std::time::Instant;

/// What upstream writes above the command's output, and the terminal's description.
pub const DESCRIPTION: &str = "Executing post-transaction command";

/// Runs `command` (the post_transaction value, already read with the kernel version
/// in scope) and writes its log. Returns how it ended: a failing command is an
/// event, not an error. Fails only when bash cannot be started or the log cannot be
/// written.
pub fn run(
    host: &Host,
    command: &str,
    progress: &dyn Progress,
) -> Result<ExitDescription, EngineError> {
    let started = Instant::now();
    let output = Command::new("bash", "run framework.conf's post_transaction")
        .args([
            "--norc",
            "--noprofile",
            "-c",
            "eval \"$1\" 2>&1",
            "post_transaction",
        ])
        .arg(command)
        .caller_env(&host.caller_env)
        .dir(&host.paths.dkms_tree)
        .output_with_stdin(&[])?;
    let elapsed = started.elapsed().as_secs();
    let code = match output.status {
        ExitDescription::Code(code) => code,
        // bash's $? for a signal.
        ExitDescription::Signal(signal) => 128 + signal,
    };
    let mut log = format!("\n{DESCRIPTION}\n# command: {command}\n").into_bytes();
    log.extend_from_slice(&output.stdout);
    log.extend_from_slice(&output.stderr);
    log.extend_from_slice(
        format!(
            "\n# exit code: {code}\n# elapsed time: {:02}:{:02}:{:02}\n{}\n",
            elapsed / 3600,
            elapsed / 60 % 60,
            elapsed % 60,
            "-".repeat(64)
        )
        .as_bytes(),
    );
    let path = host.paths.post_transaction_log();
    host.dkms_root()?.write(&path, &log, 0o644)?;
    progress.event(Event::PostTransactionRan {
        command,
        status: &output.status,
        log: &path,
    });
    Ok(output.status)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Recorder;
    use crate::{Paths, Settings};

    #[test]
    fn post_transaction_is_evaluated_and_logged_as_upstream_and_its_failure_is_not_an_error() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths {
            dkms_tree: root.path().join("dkms"),
            ..Paths::default()
        };
        std::fs::create_dir_all(&paths.dkms_tree).unwrap();
        let host = Host::new(paths, Settings::default());
        let events = Recorder::default();
        // eval: the quotes go, the variable expands, the redirection works.
        let status = run(
            &host,
            "x=ok; echo \"said $x\"; echo err >&2; exit 3",
            &events,
        )
        .unwrap();
        assert_eq!(status, ExitDescription::Code(3));
        let log = std::fs::read_to_string(host.paths.post_transaction_log()).unwrap();
        let expected = "\nExecuting post-transaction command\n# command: x=ok; echo \"said $x\"; echo err >&2; exit 3\nsaid ok\nerr\n\n# exit code: 3\n# elapsed time: 00:00:00\n";
        assert!(log.starts_with(expected), "{log}");
        assert!(log.ends_with(&format!("{}\n", "-".repeat(64))), "{log}");
        // The next run truncates it.
        run(&host, "true", &events).unwrap();
        let log = std::fs::read_to_string(host.paths.post_transaction_log()).unwrap();
        assert_eq!(log.matches(DESCRIPTION).count(), 1, "{log}");
        let seen = events.0.lock().unwrap();
        assert!(
            seen.iter().any(|e| e.starts_with("PostTransactionRan")),
            "{seen:?}"
        );
    }
}
