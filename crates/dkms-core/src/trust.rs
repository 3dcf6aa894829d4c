//! Trust: whether a file dkms-hook is about to run as root could have been written by
//! someone other than root.
//!
//! A dkms.conf is a bash script that we source, and a module source tree holds the
//! Makefiles and scripts that `make` runs; as root, both run with full privileges. If a
//! local user owns such a file, or can write it (or the directory holding it, or a
//! directory above it), that user gets root the next time a kernel is installed. So
//! when the binary runs as root it hands every [`Host`](crate::Host) a [`Gate`], and
//! nothing is sourced by bash or built unless the gate passes it:
//!
//! - a module source tree: every file and directory in it (symlinks are not followed;
//!   a symlink itself must be root's), and every directory above it up to the source
//!   tree root (or up to `/` for a source elsewhere);
//! - a dkms.conf evaluated by bash: its whole source directory as above (a dkms.conf
//!   may source helper files next to it); an override file under the etc dir or a
//!   `-c` file: the file and the directories above it (up to the etc dir, or `/`).
//!
//! `status` needs no gate for a plain-assignment dkms.conf: the bash-free evaluator only
//! parses it, so an untrusted module is still listed exactly as upstream lists it; a
//! dkms.conf that needs bash is reported as not evaluated, with the reason.
//!
//! An entry passes when root owns it, no group other than root's can write it, and
//! nobody else can. A world-writable directory with the sticky bit (`/tmp`) is
//! accepted only *above* a source: there a user may add names but cannot replace or
//! rename root's; inside a source tree a new file could still be picked up by a
//! Makefile's wildcard, so it is refused there. Symlink modes mean nothing on Linux and
//! are not checked, only their owner.
//!
//! Checks are pure functions of `lstat` metadata ([`problem`]); results are cached per
//! path for the life of the gate (one command). Once a path is known to be writable by
//! root alone, no other user can change it between the check and its use.

use std::collections::HashMap;
use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What is wrong with one file or directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Problem {
    /// A user other than root owns it.
    OwnedByUser,
    /// Its group is not root's and may write it.
    GroupWritable,
    /// Anybody may write it.
    WorldWritable,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Problem::OwnedByUser => "owned by a user other than root",
            Problem::GroupWritable => "writable by a group other than root's",
            Problem::WorldWritable => "writable by everyone",
        })
    }
}

/// The decision for one entry, from its owner, group and mode alone.
///
/// `sticky_ok` accepts a world- or group-writable *directory* with the sticky bit
/// (used for the directories above a source, see the module docs).
pub fn problem(uid: u32, gid: u32, mode: u32, kind: Kind, sticky_ok: bool) -> Option<Problem> {
    if uid != 0 {
        return Some(Problem::OwnedByUser);
    }
    // A symlink's mode is always 0777 on Linux and grants nothing.
    if kind == Kind::Symlink {
        return None;
    }
    let sticky_dir = kind == Kind::Dir && mode & 0o1000 != 0 && sticky_ok;
    if mode & 0o002 != 0 && !sticky_dir {
        return Some(Problem::WorldWritable);
    }
    if mode & 0o020 != 0 && gid != 0 && !sticky_dir {
        return Some(Problem::GroupWritable);
    }
    None
}

/// The kind of a directory entry, as far as trust is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
}

impl Kind {
    fn of(meta: &Metadata) -> Kind {
        let file_type = meta.file_type();
        if file_type.is_symlink() {
            Kind::Symlink
        } else if file_type.is_dir() {
            Kind::Dir
        } else {
            Kind::File
        }
    }
}

/// Why something was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrustError {
    #[error(
        "refusing to use the {what} {} as root: {} is {problem} (owner {}, group {}, mode {:04o}), so a user other than root could run code as root through it; fix: `{fix}` if root should own it, or pass --allow-untrusted-sources (allow_untrusted_sources = true in dkms-hook.toml) to trust it deliberately",
        .checked.display(), .path.display(), user_name(*.uid), group_name(*.gid), .mode & 0o7777
    )]
    Untrusted {
        /// "module source", "dkms.conf", "override file".
        what: &'static str,
        /// The source directory or file that was being checked.
        checked: PathBuf,
        /// The entry that failed the check (inside `checked`, or a directory above it).
        path: PathBuf,
        uid: u32,
        gid: u32,
        mode: u32,
        problem: Problem,
        /// The command that makes root the only one able to change it.
        fix: String,
    },
    #[error("cannot check who may change {}: {message}", .path.display())]
    Unreadable { path: PathBuf, message: String },
}

/// Checks files and source trees before they run as root, caching each answer.
///
/// Cheap to clone (one shared cache); `Host` owns one when the process runs as root
/// and `--allow-untrusted-sources` was not given.
#[derive(Debug, Clone)]
pub struct Gate {
    inner: Arc<GateInner>,
}

#[derive(Debug)]
struct GateInner {
    /// Directories above which a check of ancestors stops (inclusive): the source
    /// tree, the etc dir, the DKMS tree; canonical where they exist.
    roots: Vec<PathBuf>,
    cache: Mutex<HashMap<(PathBuf, bool), Result<(), TrustError>>>,
}

impl Gate {
    /// A gate for a host whose module sources live under `source_tree`, override files
    /// under `etc_dir` and DKMS state under `dkms_tree`.
    pub fn new(source_tree: &Path, etc_dir: &Path, dkms_tree: &Path) -> Gate {
        let roots = [source_tree, etc_dir, dkms_tree]
            .iter()
            .map(|p| p.canonicalize().unwrap_or_else(|_| p.to_path_buf()))
            .collect();
        Gate {
            inner: Arc::new(GateInner {
                roots,
                cache: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// Checks a module source directory: every entry in it and every directory above
    /// it (see the module docs). `dir` may be reached through symlinks.
    pub fn check_source(&self, dir: &Path) -> Result<(), TrustError> {
        self.cached(dir, true, |real| {
            self.check_ancestors(real, "module source")?;
            check_tree(real, "module source")
        })
    }

    /// Checks the files bash is about to source: the dkms.conf (its whole directory
    /// when it is named `dkms.conf`, as it may source its neighbours) and the override
    /// files (each file and the directories above it).
    pub fn check_conf_files(&self, files: &[PathBuf]) -> Result<(), TrustError> {
        for (index, file) in files.iter().enumerate() {
            let is_module_conf = index == 0 && file.file_name().is_some_and(|n| n == "dkms.conf");
            match file.parent().filter(|_| is_module_conf) {
                Some(dir) => self.check_source(dir)?,
                None => self.cached(file, false, |real| {
                    let what = if index == 0 {
                        "dkms.conf"
                    } else {
                        "override file"
                    };
                    self.check_ancestors(real, what)?;
                    check_entry(real, real, what, false, || single_fix(real))
                })?,
            }
        }
        Ok(())
    }

    /// Checks the symlink chain of the DKMS tree leading to a module version's
    /// `source` link: the directories holding it up to the DKMS tree root. Whoever can
    /// write them can point `source` elsewhere after the source was checked.
    pub fn check_tree_dirs(&self, version_dir: &Path) -> Result<(), TrustError> {
        self.cached(version_dir, false, |real| {
            check_entry(real, real, "DKMS tree directory", true, || single_fix(real))?;
            self.check_ancestors(real, "DKMS tree directory")
        })
    }

    fn cached(
        &self,
        path: &Path,
        tree: bool,
        check: impl FnOnce(&Path) -> Result<(), TrustError>,
    ) -> Result<(), TrustError> {
        let real = path.canonicalize().map_err(|e| TrustError::Unreadable {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let key = (real.clone(), tree);
        if let Some(answer) = self.lock().get(&key) {
            return answer.clone();
        }
        let answer = check(&real);
        self.lock().insert(key, answer.clone());
        answer
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(PathBuf, bool), Result<(), TrustError>>> {
        self.inner
            .cache
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The directories above `real` (canonical), up to and including the first root
    /// that contains it, or up to `/`. Sticky world-writable directories pass here.
    fn check_ancestors(&self, real: &Path, what: &'static str) -> Result<(), TrustError> {
        let stop = self
            .inner
            .roots
            .iter()
            .filter(|root| real.starts_with(root) && real != root.as_path())
            .max_by_key(|root| root.components().count());
        for dir in real.ancestors().skip(1) {
            check_entry(real, dir, what, true, || single_fix(dir))?;
            if stop.is_some_and(|s| s == dir) {
                break;
            }
        }
        Ok(())
    }
}

/// `chown root:root X && chmod go-w X`, for one entry.
fn single_fix(path: &Path) -> String {
    let p = shell_quote(path);
    format!("chown root:root {p} && chmod go-w {p}")
}

/// Every entry of a source tree (the root included), not following symlinks.
fn check_tree(root: &Path, what: &'static str) -> Result<(), TrustError> {
    let fix = || {
        let p = shell_quote(root);
        format!("chown -R root:root {p} && chmod -R go-w {p}")
    };
    check_entry(root, root, what, false, fix)?;
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).map_err(|e| unreadable(&dir, e))?;
        for entry in entries {
            let entry = entry.map_err(|e| unreadable(&dir, e))?;
            let path = entry.path();
            // DirEntry::metadata does not follow symlinks.
            let meta = entry.metadata().map_err(|e| unreadable(&path, e))?;
            judge(root, &path, &meta, what, false, fix)?;
            if meta.is_dir() {
                stack.push(path);
            }
        }
    }
    Ok(())
}

fn check_entry(
    checked: &Path,
    path: &Path,
    what: &'static str,
    sticky_ok: bool,
    fix: impl FnOnce() -> String,
) -> Result<(), TrustError> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| unreadable(path, e))?;
    judge(checked, path, &meta, what, sticky_ok, fix)
}

fn judge(
    checked: &Path,
    path: &Path,
    meta: &Metadata,
    what: &'static str,
    sticky_ok: bool,
    fix: impl FnOnce() -> String,
) -> Result<(), TrustError> {
    match problem(
        meta.uid(),
        meta.gid(),
        meta.mode(),
        Kind::of(meta),
        sticky_ok,
    ) {
        None => Ok(()),
        Some(problem) => Err(TrustError::Untrusted {
            what,
            checked: checked.to_path_buf(),
            path: path.to_path_buf(),
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.mode(),
            problem,
            fix: fix(),
        }),
    }
}

fn unreadable(path: &Path, e: std::io::Error) -> TrustError {
    TrustError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A path as a shell word, for the fix commands in messages.
fn shell_quote(path: &Path) -> String {
    crate::shell::quote(&path.display().to_string())
}

/// Whether this process runs with root's effective uid: the binary's question for
/// deciding whether a [`Gate`] is needed (an unprivileged user gains nothing).
pub fn process_is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `name (uid)`, or the bare number when the user database has no entry.
fn user_name(uid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: passwd is plain data that getpwuid_r fills in; buf outlives the call and
    // its length is passed; pw_name, when set, points into buf (NUL-terminated).
    let name = unsafe {
        let mut pwd: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pwd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null() && !pwd.pw_name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(pwd.pw_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    match name {
        Some(name) => format!("{name} ({uid})"),
        None => uid.to_string(),
    }
}

/// `name (gid)`, or the bare number when the group database has no entry.
fn group_name(gid: u32) -> String {
    let mut buf = vec![0u8; 4096];
    // SAFETY: as in user_name, with group and getgrgid_r.
    let name = unsafe {
        let mut grp: libc::group = std::mem::zeroed();
        let mut result: *mut libc::group = std::ptr::null_mut();
        let rc = libc::getgrgid_r(
            gid,
            &mut grp,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        (rc == 0 && !result.is_null() && !grp.gr_name.is_null()).then(|| {
            std::ffi::CStr::from_ptr(grp.gr_name)
                .to_string_lossy()
                .into_owned()
        })
    };
    match name {
        Some(name) => format!("{name} ({gid})"),
        None => gid.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn only_root_owned_entries_without_foreign_write_access_pass() {
        use Kind::*;
        let cases = [
            // uid, gid, mode, kind, sticky_ok, expected
            (0, 0, 0o644, File, false, None),
            (0, 0, 0o755, Dir, false, None),
            (0, 0, 0o664, File, false, None),
            (65534, 0, 0o644, File, false, Some(Problem::OwnedByUser)),
            (
                1000,
                1000,
                0o777,
                Symlink,
                false,
                Some(Problem::OwnedByUser),
            ),
            (0, 0, 0o777, Symlink, false, None),
            (0, 100, 0o664, File, false, Some(Problem::GroupWritable)),
            (0, 100, 0o644, File, false, None),
            (0, 0, 0o646, File, false, Some(Problem::WorldWritable)),
            (0, 0, 0o1777, Dir, false, Some(Problem::WorldWritable)),
            (0, 0, 0o1777, Dir, true, None),
            (0, 0, 0o0777, Dir, true, Some(Problem::WorldWritable)),
            (0, 100, 0o1775, Dir, true, None),
        ];
        for (uid, gid, mode, kind, sticky_ok, expected) in cases {
            assert_eq!(
                problem(uid, gid, mode, kind, sticky_ok),
                expected,
                "uid {uid} gid {gid} mode {mode:o} {kind:?} sticky_ok {sticky_ok}"
            );
        }
    }

    #[test]
    #[ignore = "tier b: needs root (the trust gate accepts only root-owned files); scripts/test runs it"]
    fn a_world_writable_file_deep_in_a_source_is_named_with_the_fix() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let module = src.join("foo-1.0");
        std::fs::create_dir_all(module.join("sub")).unwrap();
        std::fs::write(module.join("dkms.conf"), "PACKAGE_NAME=foo\n").unwrap();
        let bad = module.join("sub/helper.sh");
        std::fs::write(&bad, "").unwrap();
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o666)).unwrap();
        let gate = Gate::new(&src, &root.path().join("etc"), &root.path().join("dkms"));
        let err = gate.check_source(&module).unwrap_err();
        let TrustError::Untrusted { path, problem, .. } = &err else {
            panic!("{err}");
        };
        assert_eq!(
            (path.as_path(), *problem),
            (bad.as_path(), Problem::WorldWritable)
        );
        let text = err.to_string();
        assert!(text.contains("mode 0666"), "{text}");
        assert!(text.contains("chmod -R go-w"), "{text}");
        assert!(text.contains("--allow-untrusted-sources"), "{text}");
        // The same answer again, from the cache; a plain dkms.conf check sees it too.
        assert_eq!(gate.check_source(&module).unwrap_err(), err);
        assert_eq!(
            gate.check_conf_files(&[module.join("dkms.conf")])
                .unwrap_err(),
            err
        );
        std::fs::set_permissions(&bad, std::fs::Permissions::from_mode(0o644)).unwrap();
        let fresh = Gate::new(&src, &root.path().join("etc"), &root.path().join("dkms"));
        assert_eq!(fresh.check_source(&module), Ok(()));
    }

    #[test]
    #[ignore = "tier b: needs root (the trust gate accepts only root-owned files); scripts/test runs it"]
    fn directories_above_a_source_count_up_to_the_source_tree() {
        let root = tempfile::tempdir().unwrap();
        let src = root.path().join("src");
        let module = src.join("foo-1.0");
        std::fs::create_dir_all(&module).unwrap();
        let gate = || Gate::new(&src, &root.path().join("etc"), &root.path().join("dkms"));
        // The source tree root is checked...
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = gate().check_source(&module).unwrap_err();
        assert!(
            matches!(&err, TrustError::Untrusted { path, .. } if *path == src),
            "{err}"
        );
        // ...a sticky one passes above a source...
        std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(gate().check_source(&module), Ok(()));
        // ...but not inside one.
        std::fs::set_permissions(&module, std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(gate().check_source(&module).is_err());
    }
}
