//! What root takes from a build that ran as the unprivileged build user: the user owns
//! the work directory, so anything in it may be a trap (a symlink to /etc/shadow named
//! `hello.ko`, a FIFO that blocks a reader, a setuid binary). Root reads a build's
//! files only through here: resolved beneath the work directory without following any
//! symlink (openat2), only regular files, opened non-blocking, and with the setuid,
//! setgid and sticky bits dropped from the mode they are written with. What goes in
//! (the source copy, POST_BUILD's staging dir) is handed to the user here too.

use super::{io_err, EngineError};
use crate::exec::Command;
use crate::sandbox::{self, Jail};
use crate::tree::Target;
use rustix::fs::{FileType, Mode, OFlags, ResolveFlags};
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};

/// A file of the build, as root may use it.
pub(super) struct BuiltFile {
    pub bytes: Vec<u8>,
    /// The permission bits only (no setuid, setgid or sticky bit).
    pub mode: u32,
}

/// Reads `relative` below `work` as described above. Fails, naming the file, when it
/// is reached through a symlink or outside `work`, or is not a regular file.
pub(super) fn read_built_file(
    target: &Target,
    work: &Path,
    relative: &Path,
) -> Result<BuiltFile, EngineError> {
    let refuse = |problem: String| EngineError::UnsafeBuildOutput {
        module: target.module.to_string(),
        version: target.version.to_string(),
        kernel: target.kernel.to_string(),
        file: work.join(relative),
        problem,
    };
    // The work directory itself is named by root's own path (its parent is root's).
    let dir = rustix::fs::open(
        work,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| refuse(format!("(its work directory cannot be opened: {e})")))?;
    let fd = rustix::fs::openat2(
        &dir,
        relative,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )
    .map_err(|e| match e {
        rustix::io::Errno::LOOP | rustix::io::Errno::XDEV => {
            refuse("behind a symbolic link or outside its work directory".into())
        }
        e => refuse(format!("unreadable ({e})")),
    })?;
    let stat = rustix::fs::fstat(&fd).map_err(|e| refuse(format!("unreadable ({e})")))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(refuse("as something other than a regular file".into()));
    }
    let mut bytes = Vec::new();
    std::fs::File::from(fd)
        .read_to_end(&mut bytes)
        .map_err(|e| refuse(format!("unreadable ({e})")))?;
    Ok(BuiltFile {
        bytes,
        mode: stat.st_mode & 0o777,
    })
}

/// Copies `relative` (a file make built below `work`) to `to` inside `root` with its
/// permission bits, through the handle, as root may trust it (see `output`).
pub(super) fn copy_built_file(
    root: &crate::fs::Root,
    target: &Target,
    work: &Path,
    relative: &Path,
    to: &Path,
) -> Result<(), EngineError> {
    let file = read_built_file(target, work, relative)?;
    Ok(root.write(to, &file.bytes, file.mode)?)
}

/// Fails unless `log_path` is still the make.log the build opened (`log`): the build
/// user owns the work dir and could have replaced it with a link to a secret.
pub(super) fn require_own_log(
    target: &Target,
    log: &File,
    log_path: &Path,
) -> Result<(), EngineError> {
    use std::os::unix::fs::MetadataExt;
    let ours = log.metadata().map_err(io_err("cannot read", log_path))?;
    let there = fs::symlink_metadata(log_path).map_err(io_err("cannot read", log_path))?;
    if there.file_type().is_file() && (there.dev(), there.ino()) == (ours.dev(), ours.ino()) {
        return Ok(());
    }
    Err(EngineError::UnsafeBuildOutput {
        module: target.module.to_string(),
        version: target.version.to_string(),
        kernel: target.kernel.to_string(),
        file: log_path.to_path_buf(),
        problem: "in place of the make.log it was given".into(),
    })
}

/// Copies the module source into a new work directory `dest` for a build: the
/// directory is made by root, handed to the build user, and filled by `cp -a` running
/// as that user (so every file in it is the user's, and nothing it holds is root's).
pub(super) fn copy_source_for_build(
    root: &crate::fs::Root,
    source: &Path,
    dest: &Path,
    jail: &Jail,
) -> Result<(), EngineError> {
    root.remove(dest)?;
    root.create_dir_all(dest)?;
    sandbox::hand_over(dest, jail).map_err(io_err("cannot prepare", dest))?;
    Command::build_step("cp", "copy module sources", jail)
        .arg("-a")
        .arg("--")
        .arg(source.join(".").as_os_str())
        .arg(dest.as_os_str())
        .dir(dest)
        .read()?;
    Ok(())
}

/// The jail POST_BUILD runs in: the work dir writable, and a staging dir of it bound
/// over the build's final directory `final_dir` (`<v>/<k>/<a>`), which a script may
/// copy into as upstream's does (the build's own files are hidden from it meanwhile).
pub(super) fn post_build_jail(
    host: &crate::host::Host,
    root: &crate::fs::Root,
    work: &Path,
    final_dir: &Path,
) -> Result<Jail, EngineError> {
    let staging = crate::tree::layout::post_build_staging_in(work);
    root.create_dir_all(&staging)?;
    let jail = host
        .builder
        .jail_with_binds(&[work], &[(&staging, final_dir)]);
    sandbox::hand_over(&staging, &jail).map_err(io_err("cannot prepare", &staging))?;
    Ok(jail)
}

/// Moves what a confined POST_BUILD left in its staging directory (inside `work`; its
/// jail showed it at `final_dir`) into the build at `final_dir`: the regular files at
/// its top, as zfs copies Module.symvers and zfs_config.h there. What it leaves out
/// (symlinks, directories, devices, names of the build's own directories) is logged.
pub(super) fn take_post_build_files(
    root: &crate::fs::Root,
    target: &Target,
    work: &Path,
    final_dir: &Path,
    jail: &Jail,
) -> Result<(), EngineError> {
    let staging = crate::tree::layout::post_build_staging_in(work);
    if !jail.is_confined() {
        return Ok(());
    }
    let Ok(entries) = std::fs::read_dir(&staging) else {
        return Ok(());
    };
    let relative_staging = staging.strip_prefix(work).unwrap_or(&staging).to_path_buf();
    let mut left_out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let destination = final_dir.join(&name);
        if root.is_real_dir(&destination) {
            left_out.push(PathBuf::from(&name));
            continue;
        }
        match read_built_file(target, work, &relative_staging.join(&name)) {
            Ok(file) => root.write(&destination, &file.bytes, file.mode)?,
            Err(EngineError::UnsafeBuildOutput { .. }) => left_out.push(PathBuf::from(&name)),
            Err(e) => return Err(e),
        }
    }
    for name in left_out {
        log::warn!(
            "POST_BUILD of {}/{} left {} in {}: not a regular file (or one of the build's own directories), not taken",
            target.module,
            target.version,
            name.display(),
            final_dir.display()
        );
    }
    Ok(())
}

/// Opens `path` (a work directory's make.log, which the build user can replace) for
/// reading without following a symlink or blocking on a FIFO; `None` when it cannot.
pub(super) fn open_log_safely(path: &Path) -> Option<std::fs::File> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .ok()
    .map(std::fs::File::from)
}
