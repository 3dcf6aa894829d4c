//! Who builds, and the jail a build step runs in: as root, every dkms.conf evaluation,
//! patch, PRE_BUILD/POST_BUILD script, make and strip runs as an unprivileged build
//! user in a private mount and network namespace where the whole system is read-only
//! except the step's own directories. A `*-dkms` package (most are from the AUR) then
//! cannot change the machine while it builds; only the root parent signs, compresses
//! and installs, after checking what the build left (see `engine::build`).
//!
//! The jail is entered in the child between fork and exec (`exec` calls [`enter`]),
//! with raw system calls on values prepared before the fork: nothing there allocates,
//! so it is safe in a multi-threaded parent. Every build-time spawn takes a [`Jail`]
//! (`Jail::none()` is a deliberate choice, visible at the call site), so a new build
//! step cannot forget to drop root.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// The account the package's sysusers.d file creates for builds.
pub const DEFAULT_BUILD_USER: &str = "dkms-hook";

/// The uid and gid used when no build user exists (a package installed without its
/// sysusers.d file, a source checkout). It is in the range systemd's UIDS-GIDS.md
/// leaves unallocated between systemd-nspawn's host users (60514-60577) and
/// DynamicUser= (61184-65519), so no distribution or service hands it out; unlike
/// `nobody` (65534), which NFS and some daemons run as, no other process shares it and
/// could reach into a build. Taken only when no account has it.
pub const TRANSIENT_ID: u32 = 60_999;

/// The last resort when [`TRANSIENT_ID`] belongs to an account: `nobody`. Still
/// unprivileged, and the jail keeps other `nobody` processes' writes out of the build
/// (only the build's own mount of its work dir is writable).
pub const NOBODY_ID: u32 = 65_534;

/// Who runs the build steps (in `dkms-hook status --json` as `"builder"`, tagged by
/// `"runs_as"`: `caller`, `root` or `user` with `name`, `uid`, `gid`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "runs_as", rename_all = "snake_case")]
pub enum Builder {
    /// dkms-hook does not run as root: steps run as the caller, as they always did.
    Caller,
    /// Root, because the settings say `build_as_root = true` (upstream's behaviour).
    Root,
    /// An unprivileged user in a jail (the default as root).
    User(BuildUser),
}

/// An unprivileged account builds run as.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct BuildUser {
    /// The account name, `None` for the transient uid.
    pub name: Option<String>,
    pub uid: u32,
    pub gid: u32,
}

impl BuildUser {
    /// `name (uid N)` or `uid N (transient)`, for status and messages.
    pub fn describe(&self) -> String {
        match &self.name {
            Some(name) => format!("{name} (uid {}, gid {})", self.uid, self.gid),
            None => format!("uid {} (transient, no account)", self.uid),
        }
    }
}

/// Why the build user could not be chosen.
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("build_user = \"{name}\" in dkms-hook.toml names no account: create it (systemd-sysusers, useradd -r {name}) or remove the setting to build as the transient uid {TRANSIENT_ID}")]
    NoSuchUser { name: String },
    #[error("build_user = \"{name}\" is root (uid 0): builds would keep root; set build_as_root = true to say so deliberately")]
    UserIsRoot { name: String },
}

impl Builder {
    /// Who builds when dkms-hook runs as root, from the settings `build_as_root`
    /// (opts out) and `build_user`: that user, else `dkms-hook`, else the transient
    /// uid. Fails when a configured user does not exist or is root.
    pub fn for_root(
        build_as_root: bool,
        build_user: Option<&str>,
    ) -> Result<Builder, SandboxError> {
        if build_as_root {
            return Ok(Builder::Root);
        }
        let configured = build_user;
        let name = configured.unwrap_or(DEFAULT_BUILD_USER);
        if let Some((uid, gid)) = lookup_user(name) {
            if uid == 0 {
                return Err(SandboxError::UserIsRoot {
                    name: name.to_string(),
                });
            }
            return Ok(Builder::User(BuildUser {
                name: Some(name.to_string()),
                uid,
                gid,
            }));
        }
        if configured.is_some() {
            return Err(SandboxError::NoSuchUser {
                name: name.to_string(),
            });
        }
        let id = if uid_has_account(TRANSIENT_ID) {
            NOBODY_ID
        } else {
            TRANSIENT_ID
        };
        Ok(Builder::User(BuildUser {
            name: None,
            uid: id,
            gid: id,
        }))
    }

    /// The jail for one build step that may write only in `writable` (each made a
    /// writable bind mount of itself); none unless builds are unprivileged.
    pub fn jail(&self, writable: &[&Path]) -> Jail {
        self.jail_with_binds(writable, &[])
    }

    /// As [`Builder::jail`], plus directories bound writable over other paths
    /// (`(source, target)`: POST_BUILD's staging dir over `<v>/<k>/<a>`).
    pub fn jail_with_binds(&self, writable: &[&Path], binds: &[(&Path, &Path)]) -> Jail {
        let Builder::User(user) = self else {
            return Jail::none();
        };
        let mut pairs: Vec<(PathBuf, PathBuf)> = writable
            .iter()
            .map(|p| (p.to_path_buf(), p.to_path_buf()))
            .collect();
        pairs.extend(
            binds
                .iter()
                .map(|(s, t)| (s.to_path_buf(), t.to_path_buf())),
        );
        Jail {
            inner: Some(JailSpec {
                user: user.clone(),
                binds: pairs,
            }),
        }
    }

    /// The unprivileged user, if builds run as one.
    pub fn user(&self) -> Option<&BuildUser> {
        match self {
            Builder::User(user) => Some(user),
            _ => None,
        }
    }
}

/// What a build step may touch; `Jail::none()` runs it with the caller's rights.
#[derive(Debug, Clone, Default)]
pub struct Jail {
    inner: Option<JailSpec>,
}

#[derive(Debug, Clone)]
struct JailSpec {
    user: BuildUser,
    binds: Vec<(PathBuf, PathBuf)>,
}

impl Jail {
    /// No jail: the step runs as the caller (not root, or `build_as_root`, or a step
    /// that is root's: signing, depmod).
    pub fn none() -> Jail {
        Jail { inner: None }
    }

    pub fn is_confined(&self) -> bool {
        self.inner.is_some()
    }

    /// Where the step keeps temporary files (its `TMPDIR`): its first writable
    /// directory, since everything else is read-only to it.
    pub fn scratch(&self) -> Option<&Path> {
        self.inner
            .as_ref()
            .and_then(|j| j.binds.first())
            .map(|(_, target)| target.as_path())
    }

    /// The user the step runs as, if confined.
    pub fn user(&self) -> Option<&BuildUser> {
        self.inner.as_ref().map(|j| &j.user)
    }

    /// Everything [`enter`] needs, as C strings made before the fork. `cwd` is
    /// entered again after the mounts (the first chdir saw the old mounts). Fails on a
    /// path with a NUL byte.
    pub(crate) fn prepare(&self, cwd: Option<&Path>) -> io::Result<Option<Prepared>> {
        let Some(spec) = &self.inner else {
            return Ok(None);
        };
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in a path"))
        };
        let binds = spec
            .binds
            .iter()
            .map(|(s, t)| Ok((c(s)?, c(t)?)))
            .collect::<io::Result<Vec<_>>>()?;
        Ok(Some(Prepared {
            uid: spec.user.uid,
            gid: spec.user.gid,
            binds,
            cwd: cwd.map(c).transpose()?,
            root: c(Path::new("/"))?,
        }))
    }
}

/// A jail ready to enter: only C strings and numbers.
#[derive(Debug)]
pub(crate) struct Prepared {
    uid: u32,
    gid: u32,
    binds: Vec<(CString, CString)>,
    cwd: Option<CString>,
    root: CString,
}

/// `struct mount_attr` of mount_setattr(2) (not in the libc crate).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const AT_RECURSIVE: libc::c_uint = 0x8000;

fn check(result: libc::c_int) -> io::Result<()> {
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn mount_setattr(path: &CString, flags: libc::c_uint, set: u64, clear: u64) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a raw system call with a NUL-terminated path and a pointer to a live
    // struct of the size passed; the kernel only reads both.
    let result = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            path.as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Enters the jail: a private mount and network namespace, every mount read-only and
/// nosuid except the prepared binds (writable, nosuid, nodev), no supplementary
/// groups, the build user's gid and uid (which drops every capability), and
/// no_new_privs. Runs in the child between fork and exec: system calls only, on
/// memory prepared before the fork. Any failure aborts the spawn (never runs the step
/// with more rights than meant).
pub(crate) fn enter(jail: &Prepared) -> io::Result<()> {
    // SAFETY (all blocks below): raw system calls with NUL-terminated strings that
    // outlive the calls and null pointers where the calls allow them; they are
    // async-signal-safe and allocate nothing.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWNET))?;
        check(libc::mount(
            std::ptr::null(),
            jail.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))?;
        for (source, target) in &jail.binds {
            check(libc::mount(
                source.as_ptr(),
                target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
        }
    }
    mount_setattr(
        &jail.root,
        AT_RECURSIVE,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID,
        0,
    )?;
    for (_, target) in &jail.binds {
        mount_setattr(
            target,
            0,
            MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
            MOUNT_ATTR_RDONLY,
        )?;
    }
    unsafe {
        if let Some(cwd) = &jail.cwd {
            check(libc::chdir(cwd.as_ptr()))?;
        }
        check(libc::setgroups(0, std::ptr::null()))?;
        check(libc::setresgid(jail.gid, jail.gid, jail.gid))?;
        check(libc::setresuid(jail.uid, jail.uid, jail.uid))?;
        check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0))?;
    }
    Ok(())
}

/// Gives `dir` (made by root for one build step) to the build user, mode 0700: only
/// the step can write there, and other local users cannot read it.
pub fn hand_over(dir: &Path, jail: &Jail) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let Some(user) = jail.user() else {
        return Ok(());
    };
    std::os::unix::fs::lchown(dir, Some(user.uid), Some(user.gid))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// The uid and gid of account `name`, from the passwd database.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let name = CString::new(name).ok()?;
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut entry = std::mem::MaybeUninit::<libc::passwd>::zeroed();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to live memory of the right type and size; getpwnam_r
    // writes only there and sets `found` to `entry` or null.
    let result = unsafe {
        libc::getpwnam_r(
            name.as_ptr(),
            entry.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    if result != 0 || found.is_null() {
        return None;
    }
    // SAFETY: getpwnam_r succeeded and pointed `found` at `entry`, which it filled.
    let entry = unsafe { entry.assume_init() };
    Some((entry.pw_uid, entry.pw_gid))
}

/// Whether an account has `uid`.
fn uid_has_account(uid: u32) -> bool {
    let mut buffer = vec![0 as libc::c_char; 16 * 1024];
    let mut entry = std::mem::MaybeUninit::<libc::passwd>::zeroed();
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: as in lookup_user.
    let result = unsafe {
        libc::getpwuid_r(
            uid,
            entry.as_mut_ptr(),
            buffer.as_mut_ptr(),
            buffer.len(),
            &mut found,
        )
    };
    result == 0 && !found.is_null()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn build_as_root_opts_out_of_the_jail() {
        let builder = Builder::for_root(true, None).unwrap();
        assert_eq!(builder, Builder::Root);
        assert!(!builder.jail(&[Path::new("/tmp")]).is_confined());
    }

    #[test]
    fn a_configured_user_that_does_not_exist_is_an_error_naming_it() {
        let err = Builder::for_root(false, Some("no-such-user-dkms-hook-test"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no-such-user-dkms-hook-test"), "{err}");
    }

    #[test]
    fn root_as_build_user_is_refused() {
        assert!(matches!(
            Builder::for_root(false, Some("root")),
            Err(SandboxError::UserIsRoot { .. })
        ));
    }

    #[test]
    fn without_an_account_builds_get_an_unprivileged_uid() {
        let builder = Builder::for_root(false, None).unwrap();
        let user = builder.user().expect("an unprivileged user");
        assert_ne!(user.uid, 0);
        assert_ne!(user.gid, 0);
        if lookup_user(DEFAULT_BUILD_USER).is_none() {
            assert!(user.uid == TRANSIENT_ID || user.uid == NOBODY_ID);
        }
        assert!(builder.jail(&[Path::new("/tmp")]).is_confined());
        assert!(!Builder::Caller.jail(&[Path::new("/tmp")]).is_confined());
    }
}
