//! The transaction note: `module/version` lines of sources a pre-transaction hook saw
//! being replaced or removed, read (and deleted) by the post-transaction hook, which
//! can no longer read their dkms.conf.

use crate::engine::{io_err, EngineError};
use crate::hook::Source;
use crate::Paths;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// Where the note lives.
pub(crate) fn path(paths: &Paths) -> PathBuf {
    paths.dkms_tree.join(".dkms-hook-transaction")
}

/// Appends the sources to the note. Fails when the note cannot be written.
pub(crate) fn append(paths: &Paths, sources: &[Source]) -> Result<(), EngineError> {
    if sources.is_empty() {
        return Ok(());
    }
    let file = path(paths);
    let mut note = std::fs::read_to_string(&file).unwrap_or_default();
    for source in sources {
        note.push_str(&format!("{}/{}\n", source.module, source.version));
    }
    std::fs::create_dir_all(&paths.dkms_tree)
        .map_err(io_err("creating the DKMS tree", &paths.dkms_tree))?;
    std::fs::write(&file, note).map_err(io_err("writing the transaction note", &file))
}

/// Takes the note: its `module/version` lines, the file removed.
pub(crate) fn take(paths: &Paths) -> BTreeSet<String> {
    let file = path(paths);
    let note = std::fs::read_to_string(&file).unwrap_or_default();
    let _ = std::fs::remove_file(&file);
    note.lines().map(str::to_string).collect()
}
