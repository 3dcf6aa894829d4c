//! Reading an untrusted tarball into a fresh private directory, so that nothing in it
//! reaches outside that directory, now or after its parts are moved into place.
//!
//! A tarball ends up in `/usr/src` and `/var/lib/dkms`, which root reads and builds, so
//! every member passes a policy before `tar::Entry::unpack_in` writes it: refused (the
//! whole load failing) when its name is absolute or has `..`, when it lies under a
//! symlink of the archive (so nothing is written through one), when it is a device or
//! a fifo, when it is a hard link to anything but a file extracted before it, or when it
//! is a symlink that [`leaves`] its directory tree. [`check_links_stay_in`] applies the
//! symlink rule again to each part that is moved into place.

use crate::compress;
use crate::engine::{io_err, EngineError};
use std::collections::BTreeSet;
use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};

fn unsafe_member(archive: &Path, member: &str, reason: String) -> EngineError {
    let (archive, member) = (archive.into(), member.into());
    EngineError::UnsafeMember {
        archive,
        member,
        reason,
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
    let file = File::open(archive).map_err(io_err("cannot open", archive))?;
    let mut reader = BufReader::new(file);
    let magic = reader.fill_buf().map_err(io_err("cannot read", archive))?;
    let compression = compress::sniff(magic).map_err(|format| EngineError::ArchiveFormat {
        archive: archive.into(),
        format,
    })?;
    let mut tar = tar::Archive::new(compress::decoder(reader, compression).map_err(corrupt)?);
    let mut symlinks = BTreeSet::new();
    for entry in tar.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let member = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let refuse = |reason: String| unsafe_member(archive, &member, reason);
        let kind = entry.header().entry_type();
        let rel = relative(&entry.path_bytes()).map_err(|r| refuse(r.into()))?;
        if kind.is_pax_global_extensions() || (rel.as_os_str().is_empty() && kind.is_dir()) {
            continue; // `./` is the root itself, which is ours.
        }
        if rel.as_os_str().is_empty() {
            return Err(refuse("it names the archive's root as a file".into()));
        }
        if let Some(link) = rel.ancestors().skip(1).find(|a| symlinks.contains(*a)) {
            return Err(refuse(format!(
                "it lies under the symlink '{}'",
                link.display()
            )));
        }
        let path = root.join(&rel);
        if kind.is_character_special() || kind.is_block_special() {
            return Err(refuse("it is a device node".into()));
        } else if kind.is_fifo() {
            return Err(refuse("it is a fifo".into()));
        } else if kind.is_symlink() {
            let target = entry.link_name_bytes().unwrap_or_default();
            let target = Path::new(OsStr::from_bytes(&target));
            if target.as_os_str().is_empty() {
                return Err(refuse("it is a symlink without a target".into()));
            } else if target.has_root() {
                let why = format!(
                    "it is a symlink to the absolute path '{}'",
                    target.display()
                );
                return Err(refuse(why));
            } else if leaves(&rel, target) {
                let shown = target.display();
                return Err(refuse(format!(
                    "it is a symlink to '{shown}', which leads out of the archive"
                )));
            }
        } else if kind.is_hard_link() {
            let target = entry.link_name_bytes().unwrap_or_default().into_owned();
            let shown = String::from_utf8_lossy(&target).into_owned();
            let target = relative(&target)
                .map_err(|r| refuse(format!("it is a hard link to '{shown}': {r}")))?;
            let through_link = target.ancestors().any(|a| symlinks.contains(a));
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
        if !kind.is_dir() && super::is_real_dir(&path) {
            return Err(refuse(
                "it would replace a directory extracted before it".into(),
            ));
        }
        // A later member replaces an earlier symlink of the same name, as with tar
        // (unpack_in would write a directory through it), and a hard link a file.
        if symlinks.remove(&rel) || (kind.is_hard_link() && path.symlink_metadata().is_ok()) {
            fs::remove_file(&path).map_err(io_err("cannot remove", &path))?;
        }
        match entry.unpack_in(root) {
            Ok(true) => {}
            Ok(false) => return Err(refuse("its path leads out of the archive".into())),
            Err(e) if matches!(e.kind(), io::ErrorKind::StorageFull) => {
                return Err(EngineError::Fs(crate::fs::FsError::NoSpace {
                    what: "cannot extract into",
                    path: root.into(),
                    source: e,
                }));
            }
            Err(e) => return Err(corrupt(e)),
        }
        if kind.is_symlink() {
            symlinks.insert(rel);
        }
    }
    // The root becomes the source directory when a plain tarball has its dkms.conf at
    // the top; tempfile made it 0700.
    let mode = fs::Permissions::from_mode(0o755);
    fs::set_permissions(root, mode).map_err(io_err("cannot set mode of", root))
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

/// Whether the symlink `rel` (relative to the top of its tree) to `target` may lead out
/// of that tree. Only leading `..` are accepted, no more than `rel` is deep: then a link
/// resolves, from wherever it really is, to a place inside, and so does any path
/// through it, whatever other links it meets (`b -> a/x/..` with `a/x -> ..` escapes).
fn leaves(rel: &Path, target: &Path) -> bool {
    let mut depth = rel.components().count().saturating_sub(1);
    let mut descended = false;
    for part in target.components() {
        match part {
            Component::ParentDir if descended || depth == 0 => return true,
            Component::ParentDir => depth -= 1,
            Component::Normal(_) => descended = true,
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => return true,
        }
    }
    false
}

/// Fails unless every symlink under `subtree` (a part of the extraction `root` about
/// to be moved into place) stays inside `subtree` by [`leaves`].
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
            let (path, child) = (entry.path(), rel.join(entry.file_name()));
            let meta = path
                .symlink_metadata()
                .map_err(io_err("cannot inspect", &path))?;
            if meta.is_dir() {
                stack.push(child);
                continue;
            }
            let target = fs::read_link(&path).unwrap_or_default();
            if meta.is_symlink() && leaves(&child, &target) {
                let part = super::member_name(root, subtree);
                let why = format!(
                    "it is a symlink to '{}', which leads out of {part}",
                    target.display()
                );
                return Err(unsafe_member(
                    archive,
                    &super::member_name(root, &path),
                    why,
                ));
            }
        }
    }
    Ok(())
}
