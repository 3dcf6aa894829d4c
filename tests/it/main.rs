//! Integration tests of the `dkms-hook` binary, in the style of cargo's testsuite: one
//! test binary, a sandbox per test, real kernel modules built by Debian's upstream dkms
//! for the installed kernels, and outputs compared with upstream's byte for byte.
//!
//! Needs root, `unshare`, Debian's dkms 3.0.10 and linux-headers-6.1.0-{53,54}-amd64;
//! without them the tests fail rather than skip.

mod bad_input;
mod cleanup;
mod concurrent;
mod disk_full;
mod engine;
mod failure;
mod faults;
mod load;
mod lock;
mod matrix;
mod normalizer;
mod pacman;
mod rebuild;
mod report;
mod scheduler;
mod snapshot;
mod status;
mod status_json;
mod status_notes;
mod support;
mod tarball;
mod trees;
mod trust;
