//! The changes a [`Root`] makes, each leaving either the old state or the new one.
//!
//! A run can be killed at any moment (SIGKILL, power loss, a pacman hook cancelled).
//! So nothing with a real name is ever partial: a file is written under a temp name
//! in its final directory, synced and renamed over; a directory is built under a temp
//! name and exchanged with the one it replaces in a single `renameat2`; a directory
//! being deleted is first renamed out of sight. Whatever is incomplete therefore
//! carries a [`TempName`], and the next run that touches the directory sweeps it.
//!
//! Sweeping deletes other processes' temp names, so it is only right while no other
//! process writes: callers hold the tree lock (`lock.rs`). Names with our own pid are
//! never swept, because other threads of this run may be writing them right now.

use super::root::{Root, DIR_FLAGS};
use super::temp::{TempKind, TempName};
use super::{errno_err, io_err, FsError};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;
use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

fn sync(fd: impl AsFd, path: &Path) -> Result<(), FsError> {
    rustix::fs::fsync(fd).map_err(errno_err("cannot sync directory", path))
}

impl Root {
    /// Writes `bytes` to `dest` atomically with `mode`, making missing directories:
    /// temp name, fsync, rename over, fsync the directory. On any failure (a full
    /// disk included) `dest` is untouched and the temp file is gone.
    pub fn write(&self, dest: &Path, bytes: &[u8], mode: u32) -> Result<(), FsError> {
        let (dir, name) = self.split(dest)?;
        let dir_fd = self
            .create_dirs(dir)
            .map_err(|e| self.name_target(e, dest))?;
        let full = self.full(dest);
        let temp = TempName::new(TempKind::New, name).to_os_string();
        // A leftover of an earlier run that had our pid.
        let _ = rustix::fs::unlinkat(&dir_fd, &temp, AtFlags::empty());
        let result = (|| {
            let fd = rustix::fs::openat(
                &dir_fd,
                &temp,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(mode),
            )
            .map_err(errno_err("cannot create", &full))?;
            // Errors name `dest`: the temp name means nothing to the user.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
                .map_err(errno_err("cannot set mode of", &full))?;
            let mut file = std::fs::File::from(fd);
            file.write_all(bytes)
                .map_err(io_err("cannot write", &full))?;
            file.sync_all().map_err(io_err("cannot write", &full))?;
            rustix::fs::renameat(&dir_fd, &temp, &dir_fd, name)
                .map_err(errno_err("cannot rename into place", &full))?;
            sync(&dir_fd, &full)
        })();
        if result.is_err() {
            let _ = rustix::fs::unlinkat(&dir_fd, &temp, AtFlags::empty());
        }
        result
    }

    /// Copies `source` (read wherever it is) to `dest` atomically, with mode 0644.
    pub fn copy(&self, source: &Path, dest: &Path) -> Result<(), FsError> {
        let bytes = std::fs::read(source).map_err(io_err("cannot read", source))?;
        self.write(dest, &bytes, 0o644)
    }

    /// Points the symlink `link` at `target` (which is not resolved), replacing
    /// whatever was there atomically and making missing directories.
    pub fn symlink(&self, target: &Path, link: &Path) -> Result<(), FsError> {
        let (dir, name) = self.split(link)?;
        let dir_fd = self
            .create_dirs(dir)
            .map_err(|e| self.name_target(e, link))?;
        let full = self.full(link);
        let temp = TempName::new(TempKind::New, name).to_os_string();
        let _ = rustix::fs::unlinkat(&dir_fd, &temp, AtFlags::empty());
        rustix::fs::symlinkat(target, &dir_fd, &temp)
            .map_err(errno_err("cannot create symlink", &full))?;
        if let Err(e) = rustix::fs::renameat(&dir_fd, &temp, &dir_fd, name) {
            let _ = rustix::fs::unlinkat(&dir_fd, &temp, AtFlags::empty());
            return Err(errno_err("cannot rename symlink into place", &full)(e));
        }
        sync(&dir_fd, &full)
    }

    /// Opens `path` for appending (made with mode 0644 when missing, and its missing
    /// directories), never through a symlink, the last component included: for a log
    /// that grows while a build runs (a log is not a result, so it is not written
    /// atomically).
    pub fn append(&self, path: &Path) -> Result<std::fs::File, FsError> {
        let (dir, name) = self.split(path)?;
        let dir_fd = self
            .create_dirs(dir)
            .map_err(|e| self.name_target(e, path))?;
        let fd = rustix::fs::openat(
            &dir_fd,
            name,
            OFlags::WRONLY | OFlags::APPEND | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .map_err(errno_err("cannot create", self.full(path)))?;
        Ok(std::fs::File::from(fd))
    }

    /// Creates the symlink `link` to `target` (not resolved) in one step, making
    /// missing directories; fails when something is already there. Creating a link
    /// is atomic by itself, so no temp name is involved (nothing for a sweep).
    pub fn create_symlink(&self, target: &Path, link: &Path) -> Result<(), FsError> {
        let (dir, name) = self.split(link)?;
        let dir_fd = self
            .create_dirs(dir)
            .map_err(|e| self.name_target(e, link))?;
        let full = self.full(link);
        rustix::fs::symlinkat(target, &dir_fd, name)
            .map_err(errno_err("cannot create symlink", &full))?;
        sync(&dir_fd, &full)
    }

    /// Makes `dir` and its missing parents (as `mkdir -p`), never through a symlink.
    pub fn create_dir_all(&self, dir: &Path) -> Result<(), FsError> {
        // The root exists as long as the handle does: making it is done already (the
        // parent of a top-level entry is the root).
        if self.full(dir) == self.path() {
            return Ok(());
        }
        let rel = self.relative(dir)?;
        self.create_dirs(rel).map(drop)
    }

    /// Renames `from` to `to`, both inside the tree (replacing a file at `to`).
    pub fn rename(&self, from: &Path, to: &Path) -> Result<(), FsError> {
        let missing = || io_err("cannot move", self.full(from))(Errno::NOENT.into());
        let (from_dir, from_name) = self.parent_of(from)?.ok_or_else(missing)?;
        let (to_dir, to_name) = self.parent_of(to)?.ok_or_else(missing)?;
        rustix::fs::renameat(&from_dir, from_name, &to_dir, to_name)
            .map_err(errno_err("cannot move", self.full(from)))?;
        sync(&to_dir, &self.full(to))
    }

    /// Puts the directory `staged` (a [`super::staging_path`] of `dest`, in the same
    /// directory) at `dest`. An existing `dest` is exchanged with it in one step, so
    /// `dest` never goes missing, then deleted. Where the file system cannot exchange
    /// (NFS, some FUSE), the old `dest` is moved aside first under a temp name that a
    /// sweep puts back if the kill came in between. Everything in `staged` is synced
    /// to disk first, so a power loss cannot expose empty files under the real name.
    pub fn replace_dir(&self, staged: &Path, dest: &Path) -> Result<(), FsError> {
        let full = self.full(dest);
        let (staged_dir, staged_name) = self.split(staged)?;
        let (dir, name) = self.split(dest)?;
        if staged_dir != dir {
            return Err(io_err("cannot rename into place", &full)(
                Errno::XDEV.into(),
            ));
        }
        let Some((dir_fd, _)) = self.parent_of(dest)? else {
            return Err(io_err("cannot rename into place", &full)(
                Errno::NOENT.into(),
            ));
        };
        let staged_full = self.full(staged);
        let staged_fd = rustix::fs::openat(&dir_fd, staged_name, DIR_FLAGS, Mode::empty())
            .map_err(errno_err("cannot open", &staged_full))?;
        sync_tree(&staged_fd, &staged_full)?;
        if self.kind_at(&dir_fd, name).is_none() {
            rustix::fs::renameat(&dir_fd, staged_name, &dir_fd, name)
                .map_err(errno_err("cannot rename into place", &full))?;
            return sync(&dir_fd, &full);
        }
        #[cfg(feature = "break-atomicity")]
        if super::proof::atomicity_broken() {
            // The deliberate bug of the reliability proof run: the old directory is
            // deleted before the new one is renamed in, so a kill in between loses it.
            remove_all_at(&dir_fd, name, &full)?;
            rustix::fs::renameat(&dir_fd, staged_name, &dir_fd, name)
                .map_err(errno_err("cannot rename into place", &full))?;
            return sync(&dir_fd, &full);
        }
        let exchanged = if self.exchange {
            rustix::fs::renameat_with(&dir_fd, staged_name, &dir_fd, name, RenameFlags::EXCHANGE)
        } else {
            Err(Errno::INVAL)
        };
        match exchanged {
            Ok(()) => {
                sync(&dir_fd, &full)?;
                // `staged` now names the old directory, under a temp name.
                remove_all_at(&dir_fd, staged_name, &staged_full)
            }
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                let old = TempName::new(TempKind::Old, name).to_os_string();
                let old_full = self.full(&dir.join(&old));
                rustix::fs::renameat(&dir_fd, name, &dir_fd, &old)
                    .map_err(errno_err("cannot move aside", &full))?;
                if let Err(e) = rustix::fs::renameat(&dir_fd, staged_name, &dir_fd, name) {
                    let _ = rustix::fs::renameat(&dir_fd, &old, &dir_fd, name);
                    return Err(errno_err("cannot rename into place", &full)(e));
                }
                sync(&dir_fd, &full)?;
                remove_all_at(&dir_fd, &old, &old_full)
            }
            Err(e) => Err(errno_err("cannot exchange into place", &full)(e)),
        }
    }

    /// Removes a file, a symlink (only the link) or a directory tree, refusing when a
    /// directory on the way is a symlink. A directory is renamed to a temp name
    /// first, so that a kill half-way through leaves a name the next sweep removes
    /// rather than a half-deleted tree under its real name. A missing path is fine.
    pub fn remove(&self, path: &Path) -> Result<(), FsError> {
        let Some((dir_fd, name)) = self.parent_of(path)? else {
            return Ok(());
        };
        let full = self.full(path);
        match self.kind_at(&dir_fd, name) {
            None => Ok(()),
            Some(FileType::Directory) => {
                let gone = TempName::new(TempKind::Gone, name).to_os_string();
                match rustix::fs::renameat(&dir_fd, name, &dir_fd, &gone) {
                    Ok(()) => remove_all_at(&dir_fd, &gone, &full),
                    // A mount point or a directory we may not rename: delete in place.
                    Err(_) => remove_all_at(&dir_fd, name, &full),
                }
            }
            Some(_) => remove_all_at(&dir_fd, name, &full),
        }
    }

    /// Deletes a file, symlink or directory tree where it is, without a temp name:
    /// for leftovers outside the directories the engine sweeps (cleanup, the remove
    /// hook), which a half-deleted one is found again by. Same refusals as
    /// [`Root::remove`]; a missing path is fine.
    pub fn remove_in_place(&self, path: &Path) -> Result<(), FsError> {
        match self.parent_of(path)? {
            Some((dir_fd, name)) => remove_all_at(&dir_fd, name, &self.full(path)),
            None => Ok(()),
        }
    }

    /// Removes `dir` and its parents while they are empty, stopping at `stop` (kept)
    /// and at the root. A `dir` already gone still has its parents tried: an
    /// interrupted run may have removed the deepest directories only. Nothing is
    /// removed through a symlink (it would be an empty directory elsewhere).
    pub fn remove_empty_dirs(&self, dir: &Path, stop: &Path) {
        let mut dir = self.full(dir);
        let stop = self.full(stop);
        while dir.starts_with(&stop) && dir != stop && self.contains(&dir) {
            match self.parent_of(&dir) {
                // Its parent is gone too: try the one above.
                Ok(None) => {}
                Ok(Some((parent, name))) => {
                    match rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(_) => return,
                    }
                }
                Err(_) => return,
            }
            match dir.parent() {
                Some(p) => dir = p.to_path_buf(),
                None => return,
            }
        }
    }

    /// Clears what interrupted runs left under temp names directly in `dir`:
    /// incomplete things are deleted, and a directory an interrupted
    /// [`Root::replace_dir`] had moved aside is put back when its replacement never
    /// arrived. A missing or symlinked `dir` has nothing to sweep. Returns how many
    /// names it cleared.
    pub fn sweep_dir(&self, dir: &Path) -> Result<usize, FsError> {
        match self.open_existing(dir)? {
            Some(fd) => sweep_fd(&fd, &self.full(dir)),
            None => Ok(0),
        }
    }

    /// Sweeps (see [`Root::sweep_dir`]) every directory of a module's part of the
    /// DKMS tree where temp names are made: the module directory (install links), its
    /// version directories (removed builds), `<v>/<k>` (staged builds), and
    /// `original_module/<k>/<a>` (archived originals). Symlinks (`source`) are not
    /// followed and work directories (`build-*`, the sources being compiled) not
    /// entered. A module directory left empty is removed: an interrupted `remove`
    /// leaves one.
    pub fn sweep_module(&self, module_dir: &Path) -> Result<usize, FsError> {
        fn subdirs(fd: &OwnedFd, path: &Path) -> Vec<(OwnedFd, PathBuf)> {
            let Ok(names) = Root::list(fd, path) else {
                return Vec::new();
            };
            names
                .into_iter()
                .filter(|n| !n.as_bytes().starts_with(b"build-"))
                .filter_map(|n| {
                    let sub = rustix::fs::openat(fd, &n, DIR_FLAGS, Mode::empty()).ok()?;
                    Some((sub, path.join(n)))
                })
                .collect()
        }
        let Some(module_fd) = self.open_existing(module_dir)? else {
            return Ok(0);
        };
        let module_path = self.full(module_dir);
        let mut cleared = sweep_fd(&module_fd, &module_path)?;
        for (version, version_path) in subdirs(&module_fd, &module_path) {
            cleared += sweep_fd(&version, &version_path)?;
            for (kernel, kernel_path) in subdirs(&version, &version_path) {
                cleared += sweep_fd(&kernel, &kernel_path)?;
                for (arch, arch_path) in subdirs(&kernel, &kernel_path) {
                    cleared += sweep_fd(&arch, &arch_path)?;
                }
            }
        }
        // Fails unless empty, which is the point.
        if let Ok(Some((parent, name))) = self.parent_of(module_dir) {
            let _ = rustix::fs::unlinkat(&parent, name, AtFlags::REMOVEDIR);
        }
        Ok(cleared)
    }
}

/// Sweeps the temp names directly in the open directory `fd` (named `path`).
fn sweep_fd(fd: &OwnedFd, path: &Path) -> Result<usize, FsError> {
    let mut cleared = 0;
    for name in Root::list(fd, path)? {
        let Some(leftover) = TempName::parse(&name) else {
            continue;
        };
        if leftover.is_own() {
            continue;
        }
        let full = path.join(&name);
        if leftover.kind == Some(TempKind::Old) && !leftover.real.is_empty() {
            let real = path.join(&leftover.real);
            if rustix::fs::statat(fd, &leftover.real, AtFlags::SYMLINK_NOFOLLOW).is_err() {
                log::info!(
                    "putting back {} (moved aside by an interrupted run)",
                    real.display()
                );
                rustix::fs::renameat(fd, &name, fd, &leftover.real)
                    .map_err(errno_err("cannot put back", &real))?;
                sync(fd, path)?;
                cleared += 1;
                continue;
            }
        }
        log::info!("removing {} (left by an interrupted run)", full.display());
        remove_all_at(fd, &name, &full)?;
        cleared += 1;
    }
    Ok(cleared)
}

/// Deletes `name` in `dir` (a file, a symlink, or a directory tree) without ever
/// following a symlink; `path` names it in errors. A missing `name` is fine.
fn remove_all_at(dir: &OwnedFd, name: &OsStr, path: &Path) -> Result<(), FsError> {
    let is_dir = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        .map(|s| FileType::from_raw_mode(s.st_mode) == FileType::Directory);
    match is_dir {
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(errno_err("cannot remove", path)(e)),
        Ok(false) => {}
        Ok(true) => {
            let sub = match rustix::fs::openat(dir, name, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) => return Ok(()),
                other => other.map_err(errno_err("cannot remove", path))?,
            };
            for entry in Root::list(&sub, path)? {
                remove_all_at(&sub, &entry, &path.join(&entry))?;
            }
        }
    }
    let flags = if matches!(is_dir, Ok(true)) {
        AtFlags::REMOVEDIR
    } else {
        AtFlags::empty()
    };
    match rustix::fs::unlinkat(dir, name, flags) {
        Ok(()) | Err(Errno::NOENT) => Ok(()),
        Err(e) => Err(errno_err("cannot remove", path)(e)),
    }
}

/// Flushes every file and directory under the open directory `fd` to disk.
fn sync_tree(fd: &OwnedFd, path: &Path) -> Result<(), FsError> {
    for name in Root::list(fd, path)? {
        let full = path.join(&name);
        let stat = rustix::fs::statat(fd, &name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(errno_err("cannot inspect", &full))?;
        let flags = match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => DIR_FLAGS,
            FileType::RegularFile => OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            _ => continue,
        };
        let child = rustix::fs::openat(fd, &name, flags, Mode::empty())
            .map_err(errno_err("cannot sync", &full))?;
        if flags == DIR_FLAGS {
            sync_tree(&child, &full)?;
        } else {
            rustix::fs::fsync(&child).map_err(errno_err("cannot sync", &full))?;
        }
    }
    sync(fd, path)
}
