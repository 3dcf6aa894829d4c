//! The transaction note: `module/version` lines of sources a pre-transaction hook saw
//! being replaced or removed, read (and deleted) by the post-transaction hook, which
//! can no longer read their dkms.conf.

use crate::engine::EngineError;
use crate::hook::Source;
use crate::{Host, Paths};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the note lives.
pub(crate) fn path(paths: &Paths) -> PathBuf {
    paths.transaction_note()
}

/// Appends the sources to the note. Fails when the note cannot be written.
pub(crate) fn append(host: &Host, sources: &[Source]) -> Result<(), EngineError> {
    if sources.is_empty() {
        return Ok(());
    }
    let file = path(&host.paths);
    let mut note = std::fs::read_to_string(&file).unwrap_or_default();
    for source in sources {
        note.push_str(&format!("{}/{}\n", source.module, source.version));
    }
    Ok(host.dkms_root()?.write(&file, note.as_bytes(), 0o644)?)
}

/// Takes the note: its `module/version` lines, the file removed.
pub(crate) fn take(host: &Host) -> BTreeSet<String> {
    let file = path(&host.paths);
    let note = std::fs::read_to_string(&file).unwrap_or_default();
    if let Ok(root) = host.dkms_root() {
        let _ = root.remove(&file);
    }
    note.lines().map(str::to_string).collect()
}
