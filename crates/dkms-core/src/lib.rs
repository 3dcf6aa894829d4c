//! dkms-core: the DKMS state model behind the `dkms-hook` binary.
//!
//! It reads what dkms keeps on disk (dkms.conf files, the tree under /var/lib/dkms,
//! the kernels under /usr/lib/modules) and answers questions about it. It never
//! prints and never reads the process environment: the binary gathers settings and
//! paths into a [`host::Host`] and turns results into output and exit codes.
//! See docs/ARCHITECTURE.md for the map.

pub mod archive;
pub mod cache;
pub mod cleanup;
pub mod commands;
pub mod compress;
pub mod conf;
pub mod distro;
pub mod engine;
pub mod environment;
/// The engine's events are the whole library's vocabulary for progress.
pub use engine::event;
pub mod exec;
pub mod exit;
pub mod failure;
pub mod fs;
pub mod hook;
pub mod host;
pub mod kernel;
pub mod lock;
pub mod modinfo;
pub mod name;
pub mod paths;
pub mod pkgdb;
pub mod plan;
pub mod post_transaction;
pub mod sandbox;
pub mod settings;
pub mod shell;
pub mod sign;
pub mod status;
#[cfg(test)]
mod tests;
pub mod tree;
pub mod trust;
pub mod version;

pub use host::Host;
pub use paths::Paths;
pub use settings::Settings;
