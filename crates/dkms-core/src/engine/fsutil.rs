//! File operations that leave either the old state or the new one, and the sweep that
//! clears what an interrupted run left behind.
//!
//! A run can be killed at any moment (SIGKILL, power loss, a pacman hook cancelled).
//! So nothing with a real name is ever partial: a file is written under a temp name
//! in its final directory, synced and renamed over; a directory is built under a temp
//! name and exchanged with the one it replaces in a single `renameat2`; a directory
//! being deleted is first renamed out of sight. Whatever is incomplete therefore
//! carries a temp name, `<TEMP_PREFIX>-<pid>-<kind>-<name>`, and the next run that
//! touches the directory sweeps it ([`sweep_dir`], [`sweep_module`]).
//!
//! Sweeping deletes other processes' temp names, so it is only right while no other
//! process writes: callers hold the tree lock (`lock.rs`). Names with our own pid are
//! never swept, because other threads of this run may be writing them right now.

use super::{io_err, EngineError};
use crate::exec::Command;
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of every temp name we create, so a later run can find and remove leftovers.
pub const TEMP_PREFIX: &str = ".dkms-hook-tmp";

/// What a temp name holds, which decides what a sweep does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TempKind {
    /// Something being written (a file, a symlink, a staged build): incomplete until it
    /// is renamed in, so a leftover is deleted.
    New,
    /// A complete directory moved aside for its replacement, where the file system
    /// cannot exchange the two in one step: put back when the replacement never
    /// arrived, deleted otherwise.
    Old,
    /// A directory on its way out, renamed so that no half-deleted tree keeps a real
    /// name: deleted.
    Gone,
}

impl TempKind {
    fn word(self) -> &'static str {
        match self {
            TempKind::New => "new",
            TempKind::Old => "old",
            TempKind::Gone => "gone",
        }
    }
}

/// `<dir>/<TEMP_PREFIX>-<pid>-<kind>-<name>`.
fn temp_path(dir: &Path, kind: TempKind, name: &OsStr) -> PathBuf {
    let mut file = OsString::from(format!(
        "{TEMP_PREFIX}-{}-{}-",
        std::process::id(),
        kind.word()
    ));
    file.push(name);
    dir.join(file)
}

/// The temp name under which `dest` is prepared before it is renamed into place.
pub fn staging_path(dest: &Path) -> PathBuf {
    temp_path(parent(dest), TempKind::New, name(dest))
}

/// A name found by a sweep, taken apart.
#[derive(Debug, PartialEq, Eq)]
struct Leftover {
    /// The process that created it, when the name says.
    pid: Option<u32>,
    kind: Option<TempKind>,
    /// The real name it stands for.
    real: OsString,
}

impl Leftover {
    /// `None` unless `name` is one of our temp names. Names in an unknown format are
    /// still ours (the prefix says so) and are treated as incomplete.
    fn parse(name: &OsStr) -> Option<Leftover> {
        let rest = name
            .as_bytes()
            .strip_prefix(TEMP_PREFIX.as_bytes())?
            .strip_prefix(b"-")
            .unwrap_or_default();
        let mut parts = rest.splitn(3, |&b| b == b'-');
        let pid = parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse().ok());
        let kind = match parts.next() {
            Some(b"new") => Some(TempKind::New),
            Some(b"old") => Some(TempKind::Old),
            Some(b"gone") => Some(TempKind::Gone),
            _ => None,
        };
        let real = OsString::from_vec(parts.next().unwrap_or_default().to_vec());
        Some(Leftover { pid, kind, real })
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn name(path: &Path) -> &OsStr {
    path.file_name().unwrap_or(OsStr::new(""))
}

fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

/// Writes `bytes` to `dest` atomically with `mode`: temp name, fsync, rename over,
/// fsync the directory. On any failure (a full disk included) `dest` is untouched and
/// the temp file is gone.
pub fn atomic_write(dest: &Path, bytes: &[u8], mode: u32) -> Result<(), EngineError> {
    let dir = parent(dest);
    fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
    let temp = temp_path(dir, TempKind::New, name(dest));
    // A leftover of an earlier run that had our pid.
    let _ = fs::remove_file(&temp);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&temp)
            .map_err(io_err("cannot create", &temp))?;
        // Errors name `dest`: the temp name means nothing to the user.
        file.write_all(bytes)
            .map_err(io_err("cannot write", dest))?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(io_err("cannot set mode of", &temp))?;
        file.sync_all().map_err(io_err("cannot write", dest))?;
        fs::rename(&temp, dest).map_err(io_err("cannot rename into place", dest))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Copies `source` to `dest` atomically, with mode 0644.
pub fn atomic_copy(source: &Path, dest: &Path) -> Result<(), EngineError> {
    let bytes = fs::read(source).map_err(io_err("cannot read", source))?;
    atomic_write(dest, &bytes, 0o644)
}

/// Points the symlink `link` at `target`, replacing whatever was there atomically.
pub fn atomic_symlink(target: &Path, link: &Path) -> Result<(), EngineError> {
    let dir = parent(link);
    let temp = temp_path(dir, TempKind::New, name(link));
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).map_err(io_err("cannot create symlink", &temp))?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(io_err("cannot rename symlink into place", link)(e));
    }
    sync_dir(dir)
}

/// Swaps two directory entries in one step: `renameat2(RENAME_EXCHANGE)`.
fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let a = CString::new(a.as_os_str().as_bytes())?;
    let b = CString::new(b.as_os_str().as_bytes())?;
    // SAFETY: both pointers are NUL-terminated strings that live until the call
    // returns; AT_FDCWD resolves them as every other path here is resolved.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Puts the directory `staged` (a [`staging_path`]) at `dest`. An existing `dest` is
/// exchanged with it in one step, so `dest` never goes missing, then deleted. Where
/// the file system cannot exchange (NFS, some FUSE), the old `dest` is moved aside
/// first under a temp name that a sweep puts back if the kill came in between.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<(), EngineError> {
    let dir = parent(dest);
    sync_tree(staged)?;
    if dest.symlink_metadata().is_err() {
        fs::rename(staged, dest).map_err(io_err("cannot rename into place", dest))?;
        return sync_dir(dir);
    }
    match exchange(staged, dest) {
        Ok(()) => {
            sync_dir(dir)?;
            // `staged` now names the old directory, under a temp name.
            remove_in_place(staged)
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
            ) =>
        {
            let old = temp_path(dir, TempKind::Old, name(dest));
            fs::rename(dest, &old).map_err(io_err("cannot move aside", dest))?;
            if let Err(e) = fs::rename(staged, dest) {
                let _ = fs::rename(&old, dest);
                return Err(io_err("cannot rename into place", dest)(e));
            }
            sync_dir(dir)?;
            remove_in_place(&old)
        }
        Err(e) => Err(io_err("cannot exchange into place", dest)(e)),
    }
}

/// Flushes every file and directory under `dir` to disk, so that renaming `dir` into
/// place after a power loss cannot expose empty files.
fn sync_tree(dir: &Path) -> Result<(), EngineError> {
    let entries = fs::read_dir(dir).map_err(io_err("cannot list", dir))?;
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io_err("cannot inspect", &path))?;
        if kind.is_dir() {
            sync_tree(&path)?;
        } else if kind.is_file() {
            File::open(&path)
                .and_then(|f| f.sync_all())
                .map_err(io_err("cannot sync", &path))?;
        }
    }
    sync_dir(dir)
}

/// Removes a file or a directory tree without following symlinks out of it. A
/// directory is renamed to a temp name first, so that a kill half-way through leaves
/// a name the next sweep removes rather than a half-deleted tree under its real name.
pub fn remove_tree(path: &Path) -> Result<(), EngineError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot inspect", path)(e)),
        Ok(m) if m.is_dir() => {
            let gone = temp_path(parent(path), TempKind::Gone, name(path));
            match fs::rename(path, &gone) {
                Ok(()) => remove_in_place(&gone),
                // A mount point or a directory we may not rename: delete in place.
                Err(_) => remove_in_place(path),
            }
        }
        Ok(_) => fs::remove_file(path).map_err(io_err("cannot remove", path)),
    }
}

/// Deletes a file, symlink or directory tree where it is (never following symlinks:
/// `remove_dir_all` unlinks them). A missing `path` is not an error.
pub fn remove_in_place(path: &Path) -> Result<(), EngineError> {
    let result = match fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
        Err(e) => Err(e),
    };
    match result {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("cannot remove", path)(e)),
        _ => Ok(()),
    }
}

/// Removes `dir` and its parents while they are empty, stopping at `stop` (kept).
/// A `dir` already gone still has its parents tried: an interrupted run may have
/// removed the deepest directories only. Nothing is removed when a directory between
/// them is a symlink (it would be an empty directory elsewhere).
pub fn remove_empty_dirs(mut dir: &Path, stop: &Path) {
    while dir.starts_with(stop) && dir != stop && fs::symlink_metadata(dir).is_err() {
        match dir.parent() {
            Some(parent) => dir = parent,
            None => return,
        }
    }
    if !super::confined::real_dirs(stop, dir) {
        return;
    }
    while dir.starts_with(stop) && dir != stop {
        if fs::remove_dir(dir).is_err() {
            break;
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => break,
        }
    }
}

/// Copies a source tree as `cp -a` does (modes, symlinks, times), into a new `dest`.
pub fn copy_tree(source: &Path, dest: &Path) -> Result<(), EngineError> {
    remove_tree(dest)?;
    fs::create_dir_all(dest).map_err(io_err("cannot create directory", dest))?;
    Command::new("cp", "copy module sources")
        .arg("-a")
        .arg("--")
        .arg(source.join(".").as_os_str())
        .arg(dest.as_os_str())
        .read()?;
    Ok(())
}

/// Clears what interrupted runs left under temp names directly in `dir`: incomplete
/// things are deleted, and a directory an interrupted [`replace_dir`] had moved aside
/// is put back when its replacement never arrived. Never follows symlinks. Returns how
/// many names it cleared; a missing `dir` has none.
pub fn sweep_dir(dir: &Path) -> Result<usize, EngineError> {
    // A symlinked directory is not ours to sweep: it leads out of the tree.
    if fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        return Ok(0);
    }
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => return Ok(0),
        Err(e) => return Err(io_err("cannot list", dir)(e)),
    };
    let own = std::process::id();
    let mut cleared = 0;
    for entry in entries {
        let entry = entry.map_err(io_err("cannot list", dir))?;
        let Some(leftover) = Leftover::parse(&entry.file_name()) else {
            continue;
        };
        if leftover.pid == Some(own) {
            continue;
        }
        let path = entry.path();
        if leftover.kind == Some(TempKind::Old) && !leftover.real.is_empty() {
            let real = dir.join(&leftover.real);
            if real.symlink_metadata().is_err() {
                log::info!(
                    "putting back {} (moved aside by an interrupted run)",
                    real.display()
                );
                fs::rename(&path, &real).map_err(io_err("cannot put back", &real))?;
                sync_dir(dir)?;
                cleared += 1;
                continue;
            }
        }
        log::info!("removing {} (left by an interrupted run)", path.display());
        remove_in_place(&path)?;
        cleared += 1;
    }
    Ok(cleared)
}

/// Sweeps (see [`sweep_dir`]) every directory of a module's part of the DKMS tree
/// where temp names are made: the module directory (install links), its version
/// directories (removed builds), `<v>/<k>` (staged builds), and
/// `original_module/<k>/<a>` (archived originals). Symlinks (`source`) are not
/// followed and work directories (`build-*`, the sources being compiled) not entered.
/// A module directory left empty is removed: an interrupted `remove` leaves one.
pub fn sweep_module(module_dir: &Path) -> Result<usize, EngineError> {
    fn subdirs(dir: &Path) -> Vec<PathBuf> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
            .filter(|e| !e.file_name().as_bytes().starts_with(b"build-"))
            .map(|e| e.path())
            .collect()
    }
    let mut cleared = sweep_dir(module_dir)?;
    for version in subdirs(module_dir) {
        cleared += sweep_dir(&version)?;
        for kernel in subdirs(&version) {
            cleared += sweep_dir(&kernel)?;
            for arch in subdirs(&kernel) {
                cleared += sweep_dir(&arch)?;
            }
        }
    }
    // Fails unless empty, which is the point.
    let _ = fs::remove_dir(module_dir);
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftover(dir: &Path, pid: u32, kind: &str, real: &str) -> PathBuf {
        dir.join(format!("{TEMP_PREFIX}-{pid}-{kind}-{real}"))
    }

    /// A pid that is certainly not ours.
    fn other_pid() -> u32 {
        std::process::id().wrapping_add(1)
    }

    #[test]
    fn temp_names_parse_back_into_pid_kind_and_real_name() {
        let name = OsString::from(format!("{TEMP_PREFIX}-42-old-x86_64"));
        assert_eq!(
            Leftover::parse(&name),
            Some(Leftover {
                pid: Some(42),
                kind: Some(TempKind::Old),
                real: "x86_64".into()
            })
        );
        // A real name that itself starts with a kind word stays whole.
        let name = OsString::from(format!("{TEMP_PREFIX}-7-new-old-foo.ko"));
        assert_eq!(Leftover::parse(&name).unwrap().real, "old-foo.ko");
        assert_eq!(Leftover::parse(OsStr::new("hello.ko")), None);
        let odd = Leftover::parse(OsStr::new(".dkms-hook-tmp-x")).unwrap();
        assert_eq!((odd.pid, odd.kind), (None, None));
    }

    #[test]
    fn a_sweep_deletes_partial_things_and_puts_back_a_directory_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let partial = leftover(d, other_pid(), "new", "hello.ko");
        fs::write(&partial, b"half").unwrap();
        let staged = leftover(d, other_pid(), "new", "x86_64");
        fs::create_dir_all(staged.join("module")).unwrap();
        let aside = leftover(d, other_pid(), "old", "k1");
        fs::create_dir_all(aside.join("module")).unwrap();
        fs::write(aside.join("module/m.ko"), b"complete").unwrap();
        // Moved aside, but its replacement did arrive: the old one just goes.
        let superseded = leftover(d, other_pid(), "old", "k2");
        fs::create_dir_all(&superseded).unwrap();
        fs::create_dir_all(d.join("k2/module")).unwrap();
        // This process's own temp names are in use by another thread.
        let ours = d.join(format!("{TEMP_PREFIX}-{}-new-busy.ko", std::process::id()));
        fs::write(&ours, b"in progress").unwrap();
        // A symlink leftover is unlinked, never followed.
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"keep").unwrap();
        let link = leftover(d, other_pid(), "gone", "link");
        std::os::unix::fs::symlink(outside.path(), &link).unwrap();

        assert_eq!(sweep_dir(d).unwrap(), 5);
        let mut names: Vec<String> = fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        let busy = ours.file_name().unwrap().to_string_lossy().into_owned();
        assert_eq!(names, [busy.as_str(), "k1", "k2"]);
        assert_eq!(fs::read(d.join("k1/module/m.ko")).unwrap(), b"complete");
        assert!(outside.path().join("keep").exists());
    }

    #[test]
    fn replacing_a_directory_exchanges_it_and_leaves_no_temp_name() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("x86_64");
        fs::create_dir_all(dest.join("module")).unwrap();
        fs::write(dest.join("module/m.ko"), b"old").unwrap();
        let staged = staging_path(&dest);
        fs::create_dir_all(staged.join("module")).unwrap();
        fs::write(staged.join("module/m.ko"), b"new").unwrap();
        replace_dir(&staged, &dest).unwrap();
        assert_eq!(fs::read(dest.join("module/m.ko")).unwrap(), b"new");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1, "only x86_64 is left");
    }

    #[test]
    fn removing_a_tree_never_follows_a_symlink_out_of_it() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("keep"), b"keep").unwrap();
        let tree = dir.path().join("tree");
        fs::create_dir_all(&tree).unwrap();
        std::os::unix::fs::symlink(outside.path(), tree.join("source")).unwrap();
        remove_tree(&tree).unwrap();
        assert!(!tree.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(outside.path().join("keep").exists());
    }
}
