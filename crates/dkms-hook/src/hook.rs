//! `dkms-hook hook install|upgrade|remove|preflight`: what the pacman .hook files run. The
//! work and its policy live in `dkms_core::hook`; here stdin is read, the report's
//! closing summary printed and the exit status picked.
//!
//! PostTransaction hooks cannot fail pacman, so failures are printed as a summary
//! that cannot be missed and the exit status is non-zero; nothing aborts early. The
//! pre-flight is the one hook whose failure stops pacman (`AbortOnFail`): it fails
//! only for a boot-critical module, and says how to go on anyway.

use crate::render::{pacman, Renderer};
use anyhow::{Context, Result};
use dkms_core::engine::Options;
use dkms_core::exit::Exit;
use dkms_core::hook::{self, PreTransaction};
use dkms_core::Host;
use std::io::Read;

/// Which .hook file ran us (see `dkms_core::hook` for why pre-transaction hooks
/// only take notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// PostTransaction, Install/Upgrade/Remove: build what changed, retire what went.
    Install,
    /// PreTransaction, Upgrade (a same-path reinstall): note the versions replaced.
    Upgrade,
    /// PreTransaction, Remove: note removed sources; clean up kernels being removed.
    Remove,
    /// PreTransaction, Install/Upgrade of kernels and headers: build for the incoming
    /// kernels from their headers package; abort for boot-critical failures.
    Preflight,
}

/// The environment variable that lets a transaction go on despite a boot-critical
/// module failing to build for an incoming kernel.
pub const ALLOW_BOOT_CRITICAL_FAILURE: &str = "DKMS_HOOK_ALLOW_BOOT_CRITICAL_FAILURE";

pub fn run(kind: HookKind, host: &Host, options: &Options, renderer: &Renderer) -> Result<Exit> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the hook targets from stdin")?;
    let kernel = crate::commands::running_release()?;
    let report = match kind {
        HookKind::Preflight => return Ok(preflight(host, &input, options, renderer)),
        HookKind::Install => hook::post_transaction(host, &input, &kernel, options, renderer),
        HookKind::Upgrade => hook::pre_transaction(
            host,
            PreTransaction::Upgrade,
            &input,
            &kernel,
            options,
            renderer,
        )?,
        HookKind::Remove => hook::pre_transaction(
            host,
            PreTransaction::Remove,
            &input,
            &kernel,
            options,
            renderer,
        )?,
    };
    if kind == HookKind::Install && !report.installed.is_empty() {
        renderer.printer.step(&format!(
            "build cache: {} of {} installed module(s) taken from it, not compiled",
            report.from_cache.len(),
            report.installed.len()
        ));
    }
    for problem in &report.problems {
        renderer.printer.error_text(&pacman::hook_problem(problem));
    }
    // Once per transaction, after all work, when modules were installed or removed:
    // what framework.conf's post_transaction is documented for. Like its status, a
    // failure to run it never fails the transaction's hook.
    let changed =
        !(report.installed.is_empty() && report.unbuilt.is_empty() && report.retired.is_empty());
    if kind == HookKind::Install && changed {
        if let Err(error) = crate::run_post_transaction(host, renderer) {
            renderer
                .printer
                .warning(&format!("post_transaction: {error:#}"));
        }
    }
    Ok(report.exit())
}

/// The pre-flight: builds, then says what it found and whether pacman may go on.
fn preflight(host: &Host, input: &[u8], options: &Options, renderer: &Renderer) -> Exit {
    let allow = std::env::var_os(ALLOW_BOOT_CRITICAL_FAILURE).is_some_and(|v| v == "1");
    let request = hook::PreflightRequest {
        packages: crate::pacman_invocation::package_sources(
            host.settings.pacman_cachedir.as_deref(),
        ),
        allow_boot_critical_failure: allow,
    };
    let report = hook::preflight(host, input, &request, options, renderer);
    let printer = renderer.printer;
    for (kernel, file) in &report.packages {
        printer.detail(&format!(
            "pre-flight for {kernel}: headers from {}",
            file.display()
        ));
    }
    for module in &report.deferred {
        printer.detail(&format!(
            "{module}: its new source arrives in this transaction; built after it"
        ));
    }
    for problem in &report.problems {
        let text = pacman::preflight_problem(problem);
        if problem.is_critical() && report.abort {
            printer.error_text(&text);
        } else {
            printer.warning(&text);
        }
    }
    if report.abort {
        printer.error_text(&format!(
            "the transaction is stopped before any file changed: a module needed to boot would be missing from the new kernel. Fix the build, or go on anyway with {ALLOW_BOOT_CRITICAL_FAILURE}=1 in pacman's environment (sudo {ALLOW_BOOT_CRITICAL_FAILURE}=1 pacman -Syu) or allow_boot_critical_failure = true in /etc/dkms-hook.toml"
        ));
    } else if report.overridden {
        printer.warning(
            "a boot-critical module failed for an incoming kernel; going on as allowed (the new kernel may not boot)",
        );
    } else if !report.kernels.is_empty() {
        let problems = report.problems.len();
        let tail = if problems > 0 {
            format!(", {problems} problem(s); the transaction goes on")
        } else {
            String::new()
        };
        printer.step(&format!(
            "pre-flight: {} module(s) built for {}{tail}",
            report.built.len(),
            report.kernels.join(", ")
        ));
    }
    report.exit()
}
