//! File operations that leave either the old state or the new one: write to a temp
//! name in the same directory, fsync, rename over, fsync the directory.

use super::{io_err, EngineError};
use crate::exec::Command;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Prefix of every temp name we create, so a later run can find and remove leftovers.
pub const TEMP_PREFIX: &str = ".dkms-hook-tmp";

fn temp_name(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{TEMP_PREFIX}-{}-{name}", std::process::id()))
}

fn sync_dir(dir: &Path) -> Result<(), EngineError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("cannot sync directory", dir))
}

/// Copies `source` to `dest` atomically, with mode 0644.
pub fn atomic_copy(source: &Path, dest: &Path) -> Result<(), EngineError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir).map_err(io_err("cannot create directory", dir))?;
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = temp_name(dir, &name);
    let result = (|| {
        let bytes = fs::read(source).map_err(io_err("cannot read", source))?;
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&temp)
            .map_err(io_err("cannot create", &temp))?;
        file.write_all(&bytes)
            .map_err(io_err("cannot write", &temp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("cannot set mode of", &temp))?;
        file.sync_all().map_err(io_err("cannot sync", &temp))?;
        fs::rename(&temp, dest).map_err(io_err("cannot rename into place", dest))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

/// Points the symlink `link` at `target`, replacing whatever was there atomically.
pub fn atomic_symlink(target: &Path, link: &Path) -> Result<(), EngineError> {
    let dir = link.parent().unwrap_or(Path::new("/"));
    let name = link
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = temp_name(dir, &name);
    let _ = fs::remove_file(&temp);
    std::os::unix::fs::symlink(target, &temp).map_err(io_err("cannot create symlink", &temp))?;
    if let Err(e) = fs::rename(&temp, link) {
        let _ = fs::remove_file(&temp);
        return Err(io_err("cannot rename symlink into place", link)(e));
    }
    sync_dir(dir)
}

/// Puts the directory `staged` at `dest`, moving an existing `dest` aside first and
/// deleting it only once the new one is in place.
pub fn replace_dir(staged: &Path, dest: &Path) -> Result<(), EngineError> {
    let dir = dest.parent().unwrap_or(Path::new("/"));
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let old = temp_name(dir, &format!("old-{name}"));
    let had_old = dest.symlink_metadata().is_ok();
    if had_old {
        fs::rename(dest, &old).map_err(io_err("cannot move aside", dest))?;
    }
    if let Err(e) = fs::rename(staged, dest) {
        if had_old {
            let _ = fs::rename(&old, dest);
        }
        return Err(io_err("cannot rename into place", dest)(e));
    }
    sync_dir(dir)?;
    if had_old {
        remove_tree(&old)?;
    }
    Ok(())
}

/// Removes a directory tree without following symlinks out of it.
pub fn remove_tree(path: &Path) -> Result<(), EngineError> {
    match fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("cannot inspect", path)(e)),
        // remove_dir_all does not follow symlinks; a symlink itself is just unlinked.
        Ok(m) if m.is_dir() => fs::remove_dir_all(path).map_err(io_err("cannot remove", path)),
        Ok(_) => fs::remove_file(path).map_err(io_err("cannot remove", path)),
    }
}

/// Removes `dir` and its parents while they are empty, stopping at `stop` (kept).
/// Nothing is removed when a directory between them is a symlink (it would be an
/// empty directory elsewhere).
pub fn remove_empty_dirs(mut dir: &Path, stop: &Path) {
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
