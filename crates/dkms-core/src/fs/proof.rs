//! The deliberate bug for the reliability proof run (docs/RELIABILITY.md): compiled in
//! only with the `break-atomicity` feature, which no release build enables. With it
//! switched on, [`super::Root::replace_dir`] deletes the old directory before renaming
//! the new one in, so the SIGKILL suite must count losses: the proof that its counts
//! can show one.

use std::sync::atomic::{AtomicBool, Ordering};

static BROKEN: AtomicBool = AtomicBool::new(false);

/// Switches the bug on for the rest of the process (the binary does, when
/// `DKMS_HOOK_BREAK_ATOMICITY` is set in a build with the feature).
pub fn break_atomicity() {
    BROKEN.store(true, Ordering::Relaxed);
}

pub(super) fn atomicity_broken() -> bool {
    BROKEN.load(Ordering::Relaxed)
}
