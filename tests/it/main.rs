//! Integration tests of the `dkms-hook` binary, in the style of cargo's testsuite: one
//! test binary, a sandbox per test, real kernel modules built by Debian's upstream dkms
//! for the installed kernels, and outputs compared with upstream's byte for byte.
//!
//! Tiers (see README.md): almost every test here is tier (b), `#[ignore = "tier b:
//! ..."]` (root, `unshare`, the headers of two installed kernels, found by
//! crates/dkms-hook/build.rs), or tier (c), `#[ignore = "tier c: ..."]` (also Debian's
//! dkms 3.0.10 as the oracle). Plain `cargo test` lists them as ignored and runs the
//! few pure ones (tier a); `scripts/test` runs all with `--include-ignored`, and then
//! a missing prerequisite fails the tests rather than skipping them.

mod bad_input;
mod cache;
mod cleanup;
mod concurrent;
mod disk_full;
mod engine;
mod face;
mod failure;
mod faults;
mod load;
mod lock;
mod matrix;
mod normalizer;
mod pacman;
mod preflight;
mod reach;
mod realmods;
mod rebuild;
mod report;
mod scheduler;
mod scripts;
mod semantics;
mod shipped;
mod snapshot;
mod status;
mod status_json;
mod status_notes;
mod support;
mod tarball;
mod trees;
mod trust;
mod unpriv;
