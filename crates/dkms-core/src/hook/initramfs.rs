//! Regenerating the initramfs of a kernel whose headers (only) changed in the
//! transaction: mkinitcpio's own hook does not run then, yet we installed modules
//! for that kernel after its initramfs was built.

use crate::engine::{Event, Progress};
use crate::exec::ExecError;
use crate::Host;

/// What happened to one kernel's initramfs.
#[derive(Debug)]
pub enum InitramfsOutcome {
    /// `command` ran and succeeded.
    Regenerated { kernel: String, command: String },
    /// `command` failed (the error is a [`super::Problem::Initramfs`]).
    Failed { kernel: String, command: String },
    /// Neither mkinitcpio nor `initramfs_command` is there: the user must do it.
    NotRegenerated { kernel: String },
}

/// Regenerates the initramfs of `kernel` with the host's `initramfs_command`, else
/// `mkinitcpio -p <pkgbase>` when mkinitcpio is installed.
pub(crate) fn regenerate(
    host: &Host,
    kernel: &str,
    progress: &dyn Progress,
) -> (InitramfsOutcome, Option<ExecError>) {
    let pkgbase = crate::kernel::Kernel::probe(&host.paths, kernel).and_then(|k| k.pkgbase);
    let template = match (&host.settings.initramfs_command, &pkgbase) {
        (Some(command), _) => command.clone(),
        (None, Some(_)) if std::path::Path::new("/usr/bin/mkinitcpio").exists() => {
            "mkinitcpio -p {pkgbase}".to_string()
        }
        _ => {
            progress.event(Event::InitramfsNotRegenerated { kernel });
            let outcome = InitramfsOutcome::NotRegenerated {
                kernel: kernel.to_string(),
            };
            return (outcome, None);
        }
    };
    // The values come from files; quoted, they stay one word each in the shell.
    let command = template.replace("{kernel}", &shell_quote(kernel)).replace(
        "{pkgbase}",
        &shell_quote(pkgbase.as_deref().unwrap_or(kernel)),
    );
    progress.event(Event::RegeneratingInitramfs {
        kernel,
        command: &command,
    });
    match crate::exec::Command::new("sh", "regenerate the initramfs")
        .args(["-c", &command])
        .read()
    {
        Ok(_) => {
            let outcome = InitramfsOutcome::Regenerated {
                kernel: kernel.to_string(),
                command,
            };
            (outcome, None)
        }
        Err(error) => {
            let outcome = InitramfsOutcome::Failed {
                kernel: kernel.to_string(),
                command,
            };
            (outcome, Some(error))
        }
    }
}

/// `value` as one single-quoted shell word.
fn shell_quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}
