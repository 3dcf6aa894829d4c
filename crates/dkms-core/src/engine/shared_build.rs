//! Upstream's `<m>/<v>/build`: the one directory per module version that dkms.conf
//! scripts and MAKE lines name (zfs's POST_BUILD copies `zfs_config.h` and
//! `Module.symvers` from it). Our builds run in per-kernel work dirs, so this module
//! decides what `<v>/build` is at every moment, in one place: while a build runs, a
//! symlink to its work dir (placed by [`place`], the one function a build calls, and
//! the one a per-build mount namespace would replace); afterwards, a symlink to a kept
//! failed build's work dir (so `<v>/build/make.log` is that build's log, where users
//! and upstream look), or nothing. [`settle`] restores that truth after a success and
//! after a run that was killed or ran out of space, so reruns converge and upstream
//! reads (and `rm -rf`s) whatever is left.

use super::EngineError;
use crate::host::Host;
use crate::tree::{self, Target};
use std::path::{Path, PathBuf};
use std::sync::{Condvar, Mutex, MutexGuard};

/// The module versions being built in this process, each by one thread at a time
/// (other processes are kept out by the tree lock): a module version has only one
/// `<v>/build`, and PRE_BUILD (zfs's configure) records that path for make and
/// POST_BUILD, so one build owns it from the copy of the source to POST_BUILD.
pub(super) struct Claim {
    version_dir: PathBuf,
}

static BUILDING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());
static BUILD_DONE: Condvar = Condvar::new();

fn building() -> MutexGuard<'static, Vec<PathBuf>> {
    BUILDING.lock().unwrap_or_else(|e| e.into_inner())
}

impl Claim {
    /// Waits until no other thread builds the module version at `version_dir`.
    pub(super) fn new(version_dir: &Path) -> Claim {
        let mut building = building();
        while building.iter().any(|d| d == version_dir) {
            building = BUILD_DONE.wait(building).unwrap_or_else(|e| e.into_inner());
        }
        building.push(version_dir.to_path_buf());
        Claim {
            version_dir: version_dir.to_path_buf(),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let mut building = building();
        building.retain(|d| d != &self.version_dir);
        BUILD_DONE.notify_all();
    }
}

/// Makes `<v>/build` a relative symlink to `work`, `target`'s work directory,
/// replacing what is there: upstream's empty directory from `dkms add`, its own
/// leftovers of a failed build, or our link for another kernel. Called with a
/// [`Claim`] held, after the sources are copied into `work`.
pub(super) fn place(
    host: &Host,
    target: &Target,
    work: &Path,
    _claim: &Claim,
) -> Result<(), EngineError> {
    let root = host.dkms_root()?;
    let shared = host.paths.shared_build_dir(&target.module, &target.version);
    if root.is_real_dir(&shared) {
        root.remove(&shared)?;
    }
    let name = work.file_name().map(Path::new).unwrap_or(work);
    root.symlink(name, &shared)?;
    Ok(())
}

/// Puts `<v>/build` of `target`'s module version right when no build of it runs in
/// this process: kept while it points at a failed build's kept work dir (one with a
/// failure record), else pointed at another kept failed build of the version, else
/// removed (a successful build's, a disk-full build's whose work dir went, a killed
/// run's). A real directory (upstream's) is left alone. Called after every build,
/// failed or not, and before build and install touch a target.
pub(super) fn settle(host: &Host, target: &Target) -> Result<(), EngineError> {
    let version_dir = host.paths.version_dir(&target.module, &target.version);
    // Held throughout: no thread claims the version (and places its link) meanwhile.
    let building = building();
    if building.iter().any(|d| d == &version_dir) {
        return Ok(());
    }
    let shared = host.paths.shared_build_dir(&target.module, &target.version);
    let Ok(current) = std::fs::read_link(&shared) else {
        return Ok(());
    };
    if kept_failure(&version_dir, &current) {
        return Ok(());
    }
    let root = host.dkms_root()?;
    match kept_failures(&version_dir).into_iter().next() {
        Some(failed) => root.symlink(&failed, &shared)?,
        None => root.remove(&shared)?,
    }
    drop(building);
    Ok(())
}

/// Whether `name` (a link target relative to `version_dir`) is a work dir kept for
/// its failure record's log.
fn kept_failure(version_dir: &Path, name: &Path) -> bool {
    let Some(record) = tree::layout::failure_record_of_work_dir(version_dir, name) else {
        return false;
    };
    record.is_file() && version_dir.join(name).is_dir()
}

/// The names of the version's kept failed work dirs, in name order.
fn kept_failures(version_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(version_dir) else {
        return Vec::new();
    };
    let mut kept: Vec<PathBuf> = entries
        .filter_map(|e| e.ok())
        .map(|e| PathBuf::from(e.file_name()))
        .filter(|name| kept_failure(version_dir, name))
        .collect();
    kept.sort();
    kept
}
