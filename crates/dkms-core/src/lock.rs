//! One writer at a time: commands that change the DKMS tree or the install tree hold
//! an exclusive `flock` on `<dkms_tree>/.dkms-hook.lock` for their whole run.
//!
//! flock is released by the kernel when the process dies, so a killed run never
//! leaves a stale lock. Read-only commands (status, plan) do not take it.

use std::fs::{File, OpenOptions, TryLockError};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Held while the guard lives.
#[derive(Debug)]
pub struct TreeLock {
    _file: File,
}

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("cannot open the lock file {}: {source}", .path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another dkms-hook run has held {} for {} seconds; wait for it to finish (or find it with `fuser {}`)", .path.display(), .waited.as_secs(), .path.display())]
    Timeout { path: PathBuf, waited: Duration },
}

/// The lock file of a DKMS tree.
pub fn lock_path(dkms_tree: &Path) -> PathBuf {
    crate::tree::layout::lock_file(dkms_tree)
}

/// Takes the tree lock, calling `waiting` once if another run holds it, and giving
/// up after `timeout`.
pub fn lock_tree(
    dkms_tree: &Path,
    timeout: Duration,
    waiting: impl FnOnce(),
) -> Result<TreeLock, LockError> {
    let path = lock_path(dkms_tree);
    let open_error = |source| LockError::Open {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(dkms_tree).map_err(open_error)?;
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        // A symlink planted at the lock's name is not followed (it would create an
        // empty file wherever it points).
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(open_error)?;
    let start = Instant::now();
    let mut waiting = Some(waiting);
    loop {
        match file.try_lock() {
            Ok(()) => return Ok(TreeLock { _file: file }),
            Err(TryLockError::WouldBlock) => {
                if let Some(tell) = waiting.take() {
                    tell();
                }
                if start.elapsed() >= timeout {
                    return Err(LockError::Timeout {
                        path,
                        waited: start.elapsed(),
                    });
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::Error(source)) => return Err(open_error(source)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_writer_waits_then_times_out_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let held = lock_tree(dir.path(), Duration::from_secs(1), || {}).unwrap();
        let mut told = false;
        let err = lock_tree(dir.path(), Duration::from_millis(300), || told = true).unwrap_err();
        assert!(told, "the waiting callback must run");
        assert!(err.to_string().contains("another dkms-hook run"), "{err}");
        drop(held);
        lock_tree(dir.path(), Duration::from_millis(300), || {}).expect("free after release");
    }
}
