//! [`Root`]: an open directory handle for a tree's root, and the resolution of paths
//! below it that never goes through a symlink or above the root.
//!
//! Every path a `Root` method takes is either relative to the root or absolute and
//! inside it (the engine derives paths from `Paths`, so most are absolute). The last
//! component is never followed (a final symlink is acted on as a link); every
//! directory between the root and it must be a real directory, or the method refuses
//! before changing anything ([`FsError::SymlinkOnPath`]).
//!
//! Resolution uses `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` (Linux 5.6+), one
//! system call for the whole path; where the kernel does not have it (or a seccomp
//! filter refuses it) it falls back to opening one component at a time with
//! `O_NOFOLLOW`, which gives the same answer. Errors of the fast path are classified
//! by the walk, which can name the symlink in the way.

use super::{errno_err, io_err, FsError};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};

/// How directories below the root are opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Resolve {
    /// `openat2` where the kernel has it, the walk where not.
    Openat2,
    /// Always the walk (tests force it to cover the fallback).
    #[cfg_attr(not(test), allow(dead_code))]
    Walk,
}

/// Whether this kernel has `openat2`: 0 not known yet, 1 yes, 2 no.
static OPENAT2: AtomicU8 = AtomicU8::new(0);

/// Flags for a directory below the root: readable (for listing and fsync), never a
/// symlink.
pub(crate) const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// A tree's root, opened once per command; every change inside the tree is one of
/// its methods (see `atomic.rs`).
#[derive(Debug)]
pub struct Root {
    path: PathBuf,
    fd: OwnedFd,
    pub(crate) resolve: Resolve,
    /// Whether directories are replaced with `RENAME_EXCHANGE` (tests turn it off to
    /// cover the move-aside fallback).
    pub(crate) exchange: bool,
}

/// What resolving a directory found.
pub(crate) enum Found {
    Dir(OwnedFd),
    /// It, or a directory above it, does not exist or is not a directory.
    Missing,
}

impl Root {
    /// Opens the tree rooted at `path` (following a symlink at `path` itself, which
    /// is how the user named the tree). Fails when it is not a directory.
    pub fn open(path: impl Into<PathBuf>) -> Result<Root, FsError> {
        let path = path.into();
        let fd = rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(errno_err("cannot open", &path))?;
        Ok(Root {
            path,
            fd,
            resolve: Resolve::Openat2,
            exchange: true,
        })
    }

    /// [`Root::open`], creating the root directory (and its parents) first when it is
    /// missing.
    pub fn open_or_create(path: impl Into<PathBuf>) -> Result<Root, FsError> {
        let path = path.into();
        std::fs::create_dir_all(&path).map_err(io_err("cannot create directory", &path))?;
        Root::open(path)
    }

    /// The root as it was named, for messages and for tools that need a path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether `path` names something strictly inside this tree (lexically).
    pub fn contains(&self, path: &Path) -> bool {
        self.relative(path).is_ok()
    }

    /// `path` as written by the user: absolute paths stay, relative ones are joined
    /// to the root.
    pub(crate) fn full(&self, path: &Path) -> PathBuf {
        self.path.join(path)
    }

    /// `path` relative to the root: absolute paths must be inside it, and no
    /// component may be `..` (or `.` anywhere but the start).
    pub(crate) fn relative<'a>(&self, path: &'a Path) -> Result<&'a Path, FsError> {
        let outside = || FsError::OutsideTree {
            path: path.to_path_buf(),
            root: self.path.clone(),
        };
        let relative = if path.is_absolute() {
            path.strip_prefix(&self.path).map_err(|_| outside())?
        } else {
            path
        };
        let mut any = false;
        for c in relative.components() {
            match c {
                Component::Normal(_) => any = true,
                Component::CurDir if !any => {}
                _ => return Err(outside()),
            }
        }
        if any {
            Ok(relative)
        } else {
            Err(outside())
        }
    }

    /// `path` split into the directory holding it (relative, possibly empty: the
    /// root) and its name.
    pub(crate) fn split<'a>(&self, path: &'a Path) -> Result<(&'a Path, &'a OsStr), FsError> {
        let relative = self.relative(path)?;
        let name = relative.file_name().ok_or_else(|| FsError::OutsideTree {
            path: path.to_path_buf(),
            root: self.path.clone(),
        })?;
        Ok((relative.parent().unwrap_or(Path::new("")), name))
    }

    /// Opens the directory `dir` (relative, empty for the root), every component a
    /// real directory.
    pub(crate) fn open_dir(&self, dir: &Path) -> Result<Found, FsError> {
        if dir.as_os_str().is_empty() || dir == Path::new(".") {
            return self.dup().map(Found::Dir);
        }
        if self.resolve == Resolve::Openat2 && OPENAT2.load(Ordering::Relaxed) != 2 {
            let flags = ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS;
            match rustix::fs::openat2(&self.fd, dir, DIR_FLAGS, Mode::empty(), flags) {
                Ok(fd) => {
                    OPENAT2.store(1, Ordering::Relaxed);
                    return Ok(Found::Dir(fd));
                }
                // Not there, a symlink, or a race with a rename: the walk says which.
                Err(Errno::NOENT | Errno::NOTDIR | Errno::LOOP | Errno::XDEV | Errno::AGAIN) => {}
                // An old kernel, or a seccomp filter that does not know openat2.
                Err(Errno::NOSYS | Errno::PERM | Errno::INVAL | Errno::TOOBIG) => {
                    OPENAT2.store(2, Ordering::Relaxed);
                }
                Err(e) => return Err(errno_err("cannot open", self.full(dir))(e)),
            }
        }
        self.walk(dir, false)
    }

    /// Opens `dir` one component at a time without following symlinks; with
    /// `create`, missing directories are made on the way (as `mkdir -p`).
    pub(crate) fn walk(&self, dir: &Path, create: bool) -> Result<Found, FsError> {
        let mut current = self.dup()?;
        let mut walked = PathBuf::new();
        for part in dir.components() {
            let Component::Normal(part) = part else {
                continue;
            };
            walked.push(part);
            let opened = match rustix::fs::openat(&current, part, DIR_FLAGS, Mode::empty()) {
                Err(Errno::NOENT) if create => {
                    match rustix::fs::mkdirat(&current, part, Mode::from_raw_mode(0o777)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => {
                            return Err(errno_err("cannot create directory", self.full(&walked))(e))
                        }
                    }
                    rustix::fs::openat(&current, part, DIR_FLAGS, Mode::empty())
                }
                other => other,
            };
            match opened {
                Ok(fd) => current = fd,
                Err(e) => {
                    return match self.kind_at(&current, part) {
                        Some(FileType::Symlink) => {
                            Err(self.symlink_error(&current, part, &walked, dir))
                        }
                        None | Some(_) if !create => Ok(Found::Missing),
                        _ => Err(errno_err("cannot open", self.full(&walked))(e)),
                    }
                }
            }
        }
        Ok(Found::Dir(current))
    }

    /// Opens `dir`, making missing directories; fails on anything but a real
    /// directory on the way.
    pub(crate) fn create_dirs(&self, dir: &Path) -> Result<OwnedFd, FsError> {
        match self.walk(dir, true)? {
            Found::Dir(fd) => Ok(fd),
            Found::Missing => Err(io_err("cannot create directory", self.full(dir))(
                std::io::Error::from(Errno::NOTDIR),
            )),
        }
    }

    /// The type of `name` in `dir`, without following it; `None` when missing.
    pub(crate) fn kind_at(&self, dir: impl AsFd, name: &OsStr) -> Option<FileType> {
        rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
            .ok()
            .map(|s| FileType::from_raw_mode(s.st_mode))
    }

    fn symlink_error(&self, dir: &OwnedFd, name: &OsStr, link: &Path, path: &Path) -> FsError {
        let target = rustix::fs::readlinkat(dir, name, Vec::new())
            .map(|t| PathBuf::from(OsStr::from_bytes(t.as_bytes())))
            .unwrap_or_default();
        FsError::SymlinkOnPath {
            path: self.full(path),
            link: self.full(link),
            target,
        }
    }

    fn dup(&self) -> Result<OwnedFd, FsError> {
        self.fd
            .try_clone()
            .map_err(io_err("cannot open", &self.path))
    }

    /// The directory holding `path`, opened (or `None` when it is missing), and the
    /// name of `path` in it. Refuses `path`s outside the tree or behind a symlink.
    pub(crate) fn parent_of<'a>(
        &self,
        path: &'a Path,
    ) -> Result<Option<(OwnedFd, &'a OsStr)>, FsError> {
        let (dir, name) = self.split(path)?;
        Ok(
            match self.open_dir(dir).map_err(|e| self.name_target(e, path))? {
                Found::Dir(fd) => Some((fd, name)),
                Found::Missing => None,
            },
        )
    }

    /// Names the path that was asked for in a symlink refusal (the walk only knows
    /// the directory it opened).
    pub(super) fn name_target(&self, e: FsError, path: &Path) -> FsError {
        match e {
            FsError::SymlinkOnPath { link, target, .. } => FsError::SymlinkOnPath {
                path: self.full(path),
                link,
                target,
            },
            e => e,
        }
    }

    /// Fails when changing `path` would go through a symlink (or out of the tree);
    /// changes nothing. For callers that must refuse before they start.
    pub fn check(&self, path: &Path) -> Result<(), FsError> {
        self.parent_of(path).map(|_| ())
    }

    /// [`Root::check`] for each of `paths`, so a command can refuse before changing
    /// any.
    pub fn check_all(&self, paths: &[PathBuf]) -> Result<(), FsError> {
        paths.iter().try_for_each(|p| self.check(p))
    }

    /// Whether `path` is a real directory reached through real directories only.
    pub fn is_real_dir(&self, path: &Path) -> bool {
        match self.relative(path) {
            Ok(rel) => matches!(self.open_dir(rel), Ok(Found::Dir(_))),
            Err(_) => path == self.path,
        }
    }

    /// Names in the directory `dir` (the root itself when `dir` is the root).
    pub(crate) fn list(fd: &OwnedFd, dir: &Path) -> Result<Vec<OsString>, FsError> {
        let entries = rustix::fs::Dir::read_from(fd).map_err(errno_err("cannot list", dir))?;
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(errno_err("cannot list", dir))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(OsStr::from_bytes(name).to_os_string());
            }
        }
        Ok(names)
    }

    /// Opens `dir` for a sweep or a listing: `None` when it is missing, not a
    /// directory, or itself a symlink (not ours to enter).
    pub(crate) fn open_existing(&self, dir: &Path) -> Result<Option<OwnedFd>, FsError> {
        if dir == self.path || dir.as_os_str().is_empty() {
            return self.dup().map(Some);
        }
        let rel = self.relative(dir)?;
        match self.open_dir(rel) {
            Ok(Found::Dir(fd)) => Ok(Some(fd)),
            Ok(Found::Missing) => Ok(None),
            // The directory itself is a symlink: skipped, as before.
            Err(FsError::SymlinkOnPath { link, .. }) if link == self.full(rel) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
