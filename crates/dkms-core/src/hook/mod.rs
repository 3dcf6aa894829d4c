//! The pacman hook: what the three `hooks/*.hook` files run, as library functions
//! returning typed reports, so the hook's delicate semantics are tested without a
//! pacman sandbox.
//!
//! pacman reports a `*-dkms` version upgrade (usr/src/foo-1.0 -> foo-1.1) as a Remove
//! of the old path plus an Install of the new one, and a PreTransaction hook cannot
//! see the other half. So nothing is uninstalled before the transaction:
//! [`pre_transaction`] only notes which versions go away (and cleans up after kernels
//! being removed), and [`post_transaction`] (which also sees removed paths) retires
//! an old version on a kernel once the new one is installed there, or uninstalls it
//! when nothing replaces it; where the new version failed, the old one stays.
//!
//! - `targets`: pacman's lines -> [`Changes`], and the post-transaction plan.
//! - `transaction`: the pre- and post-transaction work and their [`HookReport`].
//! - `note`: the note the pre-transaction hooks leave for the post-transaction one.
//! - `initramfs`: regenerating an initramfs mkinitcpio's hook did not.
//! - `preflight`: before the transaction, building for incoming kernels from their
//!   headers package (`headers_package`), aborting for `boot_critical` modules.

mod boot_critical;
mod headers_package;
mod initramfs;
mod note;
mod preflight;
mod targets;
mod transaction;

pub use boot_critical::{BootCritical, Why as BootCriticalWhy};
pub use headers_package::{HeadersPackageError, PackageSources};
pub use initramfs::InitramfsOutcome;
pub use preflight::{preflight, PreflightProblem, PreflightReport, PreflightRequest};
pub use targets::{
    builds_of, headers_only_kernels, identify, install_plan, kernels_without_headers,
    parse_targets, Changes, Source,
};
pub use transaction::{post_transaction, pre_transaction, HookReport, PreTransaction, Problem};

#[cfg(test)]
mod tests;
