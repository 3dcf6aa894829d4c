//! The only way the library changes the DKMS tree, the install tree and the source
//! tree: a [`Root`] handle per tree, whose methods cannot reach outside it.
//!
//! Safety used to be a convention (call a check before each write or delete); here it
//! is the type. A `Root` holds an open descriptor of its tree's root and resolves
//! every path below it one real directory at a time (`openat2` with
//! `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS` where the kernel has it, a walk with
//! `O_NOFOLLOW` per component where not), so neither `..` nor a symlink planted in
//! the tree can redirect a write or a delete to the victim directory it points at.
//! The root itself may be a symlink (`/lib/modules` on merged-/usr systems, a
//! relocated `--dkmstree`): it is opened once, as the user named it.
//!
//! On top of that handle (`atomic.rs`) every change leaves either the old state or
//! the new one: files are written under a temp name ([`TempName`]) and renamed over,
//! a directory replaces another with `renameat2(RENAME_EXCHANGE)`, a directory being
//! deleted is renamed out of sight first, and sweeps clear what a killed run left.

mod atomic;
#[cfg(feature = "break-atomicity")]
pub mod proof;
mod root;
mod temp;
#[cfg(test)]
mod tests;

pub use root::Root;
pub use temp::{staging_path, TempKind, TempName, TEMP_PREFIX};

use std::path::PathBuf;

/// Why a change inside a tree was refused or failed. The engine wraps it as
/// `EngineError::Fs`, in these words (exit code 1).
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    #[error("{what} {}: the disk is full; free some space there and run again", .path.display())]
    NoSpace {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {}: {source}", .path.display())]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("refusing to delete or write {}: {} is a symbolic link (to {}), and going through it would change things outside the tree; remove that link or put a real directory in its place, then run again", .path.display(), .link.display(), .target.display())]
    SymlinkOnPath {
        path: PathBuf,
        link: PathBuf,
        target: PathBuf,
    },
    #[error("refusing to delete {}: it is not inside {}", .path.display(), .root.display())]
    OutsideTree { path: PathBuf, root: PathBuf },
}

impl FsError {
    /// Whether the disk (or a quota) was full, whose fix is the user's.
    pub fn is_no_space(&self) -> bool {
        matches!(self, FsError::NoSpace { .. })
    }
}

/// Attaches what was being done and to which path to an I/O error; a full disk (or
/// quota) gets its own variant.
pub(crate) fn io_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(std::io::Error) -> FsError {
    let path = path.into();
    move |source| {
        if matches!(source.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT)) {
            FsError::NoSpace { what, path, source }
        } else {
            FsError::Io { what, path, source }
        }
    }
}

/// [`io_err`] for the errno rustix returns.
pub(crate) fn errno_err(
    what: &'static str,
    path: impl Into<PathBuf>,
) -> impl FnOnce(rustix::io::Errno) -> FsError {
    let f = io_err(what, path);
    move |e| f(std::io::Error::from(e))
}
