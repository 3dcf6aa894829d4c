//! `dkms-hook hook install|upgrade|remove`: what the pacman .hook files run. The
//! work and its policy live in `dkms_core::hook`; here stdin is read, the report's
//! closing summary printed and the exit status picked.
//!
//! PostTransaction hooks cannot fail pacman, so failures are printed as a summary
//! that cannot be missed and the exit status is non-zero; nothing aborts early.

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
}

pub fn run(kind: HookKind, host: &Host, options: &Options, renderer: &Renderer) -> Result<Exit> {
    let mut input = Vec::new();
    std::io::stdin()
        .read_to_end(&mut input)
        .context("reading the hook targets from stdin")?;
    let kernel = crate::commands::running_kernel();
    let report = match kind {
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
