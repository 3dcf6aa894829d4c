//! Reading an untrusted tarball into a fresh private directory, so that nothing in it
//! can reach outside that directory, now or after its parts are moved into place.
//!
//! A tarball ends up in `/usr/src` and `/var/lib/dkms`, which root reads and builds, so
//! every member passes a policy first: refused (the whole load failing) when its name is
//! absolute or has `..`, when it is a device or a fifo, when it lies under a symlink of
//! the archive, when it is a hard link to anything but a file extracted before it, or
//! when it is a symlink whose target is absolute or climbs out by its text. What passes
//! is written by `tar::Entry::unpack_in`, except symlinks: they are created last, so no
//! member is ever written through one, and then each is resolved again (following the
//! others) because links can escape together (`a -> ..`, then `b -> a/..`).
//! [`check_links_stay_in`] repeats that for each part moved into place.

use crate::compress;
use crate::engine::{io_err, EngineError};
use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

/// Symlinks followed while resolving one link before giving up, as the kernel does.
const MAX_LINK_HOPS: usize = 40;

fn unsafe_member(archive: &Path, member: &str, reason: impl Into<String>) -> EngineError {
    EngineError::UnsafeMember {
        archive: archive.into(),
        member: member.into(),
        reason: reason.into(),
    }
}

/// Extracts `archive` (gzip, xz, zstd or plain, told by its first bytes) into `root`,
/// a fresh private directory. Fails, naming the member, on the first one the policy
/// refuses; the caller throws `root` away then.
pub(super) fn extract(archive: &Path, root: &Path) -> Result<(), EngineError> {
    let corrupt = |source| EngineError::ArchiveCorrupt {
        archive: archive.into(),
        source,
    };
    let mut reader = BufReader::new(File::open(archive).map_err(io_err("cannot open", archive))?);
    let magic = reader.fill_buf().map_err(io_err("cannot read", archive))?;
    let compression = compress::sniff(magic).map_err(|format| EngineError::ArchiveFormat {
        archive: archive.into(),
        format,
    })?;
    let mut tar = tar::Archive::new(compress::decoder(reader, compression).map_err(corrupt)?);
    // Symlinks to create once everything else is out: path -> (target, member name).
    let mut symlinks: BTreeMap<PathBuf, (PathBuf, String)> = BTreeMap::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: String| unsafe_member(archive, &member, reason);
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let rel = relative(&entry.path_bytes()).map_err(|r| refuse(r.into()))?;
        if rel.as_os_str().is_empty() {
            // `./`: the root itself, which is ours.
            if kind.is_dir() {
                continue;
            }
            return Err(refuse("it names the archive's root as a file".into()));
        }
        if let Some(link) = rel.ancestors().skip(1).find(|a| symlinks.contains_key(*a)) {
            return Err(refuse(format!(
                "it lies under the symlink '{}'",
                link.display()
            )));
        }
        // A later member replaces an earlier one of the same name, as with tar.
        symlinks.remove(&rel);
        if kind.is_character_special() || kind.is_block_special() {
            return Err(refuse("it is a device node".into()));
        }
        if kind.is_fifo() {
            return Err(refuse("it is a fifo".into()));
        }
        if kind.is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let target = PathBuf::from(OsStr::from_bytes(&target));
            if target.as_os_str().is_empty() {
                return Err(refuse("it is a symlink without a target".into()));
            }
            if target.has_root() {
                let shown = target.display();
                return Err(refuse(format!(
                    "it is a symlink to the absolute path '{shown}'"
                )));
            }
            if escapes_lexically(&rel, &target) {
                let shown = target.display();
                return Err(refuse(format!(
                    "it is a symlink to '{shown}', which leads out of the archive"
                )));
            }
            symlinks.insert(rel, (target, member));
            continue;
        }
        if kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let shown = String::from_utf8_lossy(&target).into_owned();
            let target = relative(&target)
                .map_err(|r| refuse(format!("it is a hard link to '{shown}': {r}")))?;
            let through_link = target.ancestors().any(|a| symlinks.contains_key(a));
            let is_file = root
                .join(&target)
                .symlink_metadata()
                .is_ok_and(|m| m.is_file());
            if target.as_os_str().is_empty() || through_link || !is_file {
                return Err(refuse(format!(
                    "it is a hard link to '{shown}', which is not a file extracted before it"
                )));
            }
        } else if !(kind.is_dir() || kind.is_file() || kind.is_contiguous() || kind.is_gnu_sparse())
        {
            let kind = char::from(kind.as_byte()).escape_default();
            return Err(refuse(format!(
                "its type '{kind}' is not a file, directory or link"
            )));
        }
        if !kind.is_dir() && super::is_real_dir(&root.join(&rel)) {
            return Err(refuse(
                "it would replace a directory extracted before it".into(),
            ));
        }
        match entry.unpack_in(root) {
            Ok(true) => {}
            Ok(false) => return Err(refuse("its path leads out of the archive".into())),
            Err(e) => return Err(unpack_error(archive, root, e)),
        }
    }
    for (rel, (target, member)) in &symlinks {
        make_real_parents(archive, root, rel, member)?;
        let path = root.join(rel);
        match path.symlink_metadata() {
            Ok(m) if m.is_dir() => {
                let why = "it would replace a directory extracted before it";
                return Err(unsafe_member(archive, member, why));
            }
            Ok(_) => fs::remove_file(&path).map_err(io_err("cannot remove", &path))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(target, &path)
            .map_err(io_err("cannot create symlink", &path))?;
    }
    for (rel, (target, member)) in &symlinks {
        if !resolves_inside(root, rel) {
            let why = format!(
                "it is a symlink to '{}', which leads out of the archive",
                target.display()
            );
            return Err(unsafe_member(archive, member, why));
        }
    }
    // The root becomes the source directory when a plain tarball has its dkms.conf at
    // the top; tempfile made it 0700.
    fs::set_permissions(root, fs::Permissions::from_mode(0o755))
        .map_err(io_err("cannot set mode of", root))
}

/// A full disk is the user's to fix; anything else unpack_in says is the archive's.
fn unpack_error(archive: &Path, root: &Path, e: io::Error) -> EngineError {
    if matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    ) {
        EngineError::NoSpace {
            what: "cannot extract into",
            path: root.into(),
            source: e,
        }
    } else {
        EngineError::ArchiveCorrupt {
            archive: archive.into(),
            source: e,
        }
    }
}

/// Creates the missing parents of the symlink `rel` as real directories, refusing to go
/// through a symlink or a file.
fn make_real_parents(
    archive: &Path,
    root: &Path,
    rel: &Path,
    member: &str,
) -> Result<(), EngineError> {
    let mut parents: Vec<&Path> = rel
        .ancestors()
        .skip(1)
        .filter(|a| !a.as_os_str().is_empty())
        .collect();
    parents.reverse();
    for parent in parents {
        let at = root.join(parent);
        match at.symlink_metadata() {
            Ok(m) if m.is_dir() => {}
            Ok(m) => {
                let what = if m.is_symlink() {
                    "symlink"
                } else {
                    "non-directory"
                };
                let why = format!("it lies under the {what} '{}'", parent.display());
                return Err(unsafe_member(archive, member, why));
            }
            Err(_) => fs::DirBuilder::new()
                .mode(0o755)
                .create(&at)
                .map_err(io_err("cannot create directory", &at))?,
        }
    }
    Ok(())
}

/// A member's path relative to the extraction root, `./` and `.` dropped; refuses
/// absolute paths and `..`.
fn relative(bytes: &[u8]) -> Result<PathBuf, &'static str> {
    let mut rel = PathBuf::new();
    for part in Path::new(OsStr::from_bytes(bytes)).components() {
        match part {
            Component::Normal(name) => rel.push(name),
            Component::CurDir => {}
            Component::ParentDir => return Err("its path contains '..'"),
            Component::RootDir | Component::Prefix(_) => return Err("its path is absolute"),
        }
    }
    Ok(rel)
}

/// Whether `target`, read from the directory of the link `rel`, climbs above the root
/// by its text alone.
fn escapes_lexically(rel: &Path, target: &Path) -> bool {
    let mut depth = rel.components().count().saturating_sub(1);
    for part in target.components() {
        match part {
            Component::ParentDir if depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Whether the symlink `root/rel` resolves inside `root`, following every symlink on
/// the way as the kernel would (a missing or non-directory component ends the walk:
/// such a link resolves to nothing, which is harmless).
fn resolves_inside(root: &Path, rel: &Path) -> bool {
    let Ok(target) = fs::read_link(root.join(rel)) else {
        return true;
    };
    // The real directories walked so far, relative to root; never holds a symlink.
    let mut at = PathBuf::from(rel.parent().unwrap_or(Path::new("")));
    // What is left to walk, last part first.
    let mut pending: Vec<OsString> = target.iter().rev().map(OsStr::to_os_string).collect();
    let mut hops = 0;
    while let Some(part) = pending.pop() {
        if part == "/" {
            return false;
        } else if part == ".." {
            if !at.pop() {
                return false;
            }
        } else if part != "." {
            at.push(&part);
            match root.join(&at).symlink_metadata() {
                Ok(m) if m.is_symlink() => {
                    hops += 1;
                    let Ok(next) = fs::read_link(root.join(&at)) else {
                        return false;
                    };
                    if hops > MAX_LINK_HOPS {
                        return false;
                    }
                    at.pop();
                    pending.extend(next.iter().rev().map(OsStr::to_os_string));
                }
                Ok(m) if m.is_dir() => {}
                // A file or nothing: resolution stops here, inside root.
                _ => return true,
            }
        }
    }
    true
}

/// Fails unless every symlink under `subtree` (a part of the extraction `root` about
/// to be moved into place) resolves inside `subtree`.
pub(super) fn check_links_stay_in(
    archive: &Path,
    root: &Path,
    subtree: &Path,
) -> Result<(), EngineError> {
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        let dir = subtree.join(&rel);
        for entry in fs::read_dir(&dir).map_err(io_err("cannot read directory", &dir))? {
            let entry = entry.map_err(io_err("cannot read directory", &dir))?;
            let kind = entry
                .file_type()
                .map_err(io_err("cannot inspect", entry.path()))?;
            let child = rel.join(entry.file_name());
            if kind.is_dir() {
                stack.push(child);
            } else if kind.is_symlink() && !resolves_inside(subtree, &child) {
                let target = fs::read_link(entry.path()).unwrap_or_default();
                let why = format!(
                    "it is a symlink to '{}', which leads out of {}",
                    target.display(),
                    super::member_name(root, subtree)
                );
                return Err(unsafe_member(
                    archive,
                    &super::member_name(root, &entry.path()),
                    why,
                ));
            }
        }
    }
    Ok(())
}
