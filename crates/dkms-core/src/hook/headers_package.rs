//! The headers package of a kernel that is about to be installed: finding its package
//! file and unpacking its build tree into a private scratch directory, so that the
//! pre-flight can build modules before pacman has extracted anything.
//!
//! A PreTransaction hook runs after pacman downloaded the packages and while it holds
//! the database lock, so the package files are the one source of truth: those named on
//! pacman's command line (`pacman -U FILE`) and those in its cache directories
//! (`pacman -S`/`-Syu` download there). A package file is recognised by its own
//! member list, not by its name (a `pkgbase-headers` name is only the first guess):
//! it is ours when it has `usr/lib/modules/<kernel>/build/`. Nothing here needs
//! libalpm, so the held lock does not matter.
//!
//! A package file is untrusted input like a tarball: members are unpacked only when
//! they lie under the kernel's build tree, have no `..` or absolute name, are not below
//! a symlink unpacked before, and are plain files, directories, symlinks or hard links
//! to files unpacked before; anything else fails the extraction, naming the member.

use crate::compress;
use std::collections::BTreeSet;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Component, Path, PathBuf};

/// How many members a package file may have before its kernel's build tree shows up,
/// for it still to count as that kernel's headers package (pacman packages list
/// `.PKGINFO`, `.BUILDINFO`, `.MTREE`, then the tree in sorted order).
const MEMBERS_BEFORE_THE_TREE: usize = 64;

/// Why the headers package of a kernel cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum HeadersPackageError {
    #[error("no package file with the headers of kernel {kernel} (usr/lib/modules/{kernel}/build/) was found; searched: {}", searched_list(.searched))]
    NotFound {
        kernel: String,
        searched: Vec<PathBuf>,
    },
    #[error("{}: cannot read it: {source}", .file.display())]
    Unreadable {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not a package pacman could install ({format})", .file.display())]
    Format { file: PathBuf, format: &'static str },
    #[error("{}: the archive is corrupt or truncated: {source}", .file.display())]
    Corrupt {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: member {member} is refused: {reason}", .file.display())]
    UnsafeMember {
        file: PathBuf,
        member: String,
        reason: String,
    },
    #[error("{}: cannot unpack {member} into {}: {source}", .file.display(), .scratch.display())]
    Unpack {
        file: PathBuf,
        member: String,
        scratch: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn searched_list(searched: &[PathBuf]) -> String {
    if searched.is_empty() {
        return "nothing (no package files and no cache directory)".into();
    }
    let shown: Vec<String> = searched.iter().map(|p| p.display().to_string()).collect();
    shown.join(", ")
}

/// Where pacman's package files for this transaction may be.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PackageSources {
    /// Package files named on pacman's command line (`-U`), tried first.
    pub files: Vec<PathBuf>,
    /// pacman's cache directories (`CacheDir`, `--cachedir`).
    pub cache_dirs: Vec<PathBuf>,
}

/// The member name prefix of `kernel`'s build tree inside a package.
fn tree_prefix(kernel: &str) -> String {
    format!("usr/lib/modules/{kernel}/build")
}

/// Finds the package file holding `kernel`'s build tree: the command line's files
/// first, then the cache directories' package files, those named like a headers
/// package first and newest first. Fails with every place searched when none has it;
/// a file that cannot be read is passed over (it may be another package's download).
pub fn find(kernel: &str, sources: &PackageSources) -> Result<PathBuf, HeadersPackageError> {
    let mut candidates: Vec<PathBuf> = sources.files.clone();
    let mut searched: Vec<PathBuf> = sources.files.clone();
    for dir in &sources.cache_dirs {
        searched.push(dir.clone());
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut found: Vec<(bool, std::time::SystemTime, PathBuf)> = entries
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| is_package_file(p))
            .map(|p| {
                let name = p.file_name().unwrap_or_default().to_string_lossy();
                let headers = name.contains("-headers-");
                let modified = p
                    .metadata()
                    .and_then(|m| m.modified())
                    .unwrap_or(std::time::UNIX_EPOCH);
                (headers, modified, p)
            })
            .collect();
        // Headers-named packages first, newest first: the common case reads one file.
        found.sort_by(|a, b| b.0.cmp(&a.0).then(b.1.cmp(&a.1)));
        // Only headers-named ones: reading the head of every cached package would make
        // a big cache slow, and every kernel headers package Arch ships is named so.
        candidates.extend(found.into_iter().filter(|f| f.0).map(|f| f.2));
    }
    let prefix = tree_prefix(kernel);
    for file in candidates {
        match holds_tree(&file, &prefix) {
            Ok(true) => return Ok(file),
            Ok(false) => {}
            Err(e) => log::debug!("{e}"),
        }
    }
    Err(HeadersPackageError::NotFound {
        kernel: kernel.to_string(),
        searched,
    })
}

/// A pacman package file by its name (`*.pkg.tar*`, signatures left out).
fn is_package_file(path: &Path) -> bool {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    name.contains(".pkg.tar") && !name.ends_with(".sig") && !name.ends_with(".part")
}

/// Opens a package file as a tar stream, decompressing by its magic bytes.
fn open(file: &Path) -> Result<tar::Archive<Box<dyn std::io::Read>>, HeadersPackageError> {
    let unreadable = |source| HeadersPackageError::Unreadable {
        file: file.into(),
        source,
    };
    let handle = File::open(file).map_err(unreadable)?;
    let mut reader = BufReader::new(handle);
    let magic = reader.fill_buf().map_err(unreadable)?;
    let compression = compress::sniff(magic).map_err(|format| HeadersPackageError::Format {
        file: file.into(),
        format,
    })?;
    let decoder =
        compress::decoder(reader, compression).map_err(|source| HeadersPackageError::Corrupt {
            file: file.into(),
            source,
        })?;
    Ok(tar::Archive::new(Box::new(decoder)))
}

/// A member's name without a leading `./` or trailing `/`.
fn member_name(raw: &[u8]) -> String {
    let name = String::from_utf8_lossy(raw);
    let name = name.strip_prefix("./").unwrap_or(&name);
    name.trim_end_matches('/').to_string()
}

/// Whether `file`'s first members reach `prefix` (a build tree), reading only the
/// head of the archive: another kernel's tree, or none soon enough, says no.
fn holds_tree(file: &Path, prefix: &str) -> Result<bool, HeadersPackageError> {
    let corrupt = |source| HeadersPackageError::Corrupt {
        file: file.into(),
        source,
    };
    let mut archive = open(file)?;
    for (seen, entry) in archive.entries().map_err(corrupt)?.enumerate() {
        if seen > MEMBERS_BEFORE_THE_TREE {
            return Ok(false);
        }
        let entry = entry.map_err(corrupt)?;
        let name = member_name(&entry.path_bytes());
        if name == prefix || name.starts_with(&format!("{prefix}/")) {
            return Ok(true);
        }
        if let Some(rest) = name.strip_prefix("usr/lib/modules/") {
            let kernel_of_member = rest.split('/').next().unwrap_or_default();
            let ours = prefix.trim_start_matches("usr/lib/modules/");
            if !kernel_of_member.is_empty() && !ours.starts_with(&format!("{kernel_of_member}/")) {
                return Ok(false);
            }
        }
    }
    Ok(false)
}

/// Unpacks `kernel`'s build tree from `file` into `scratch`, as
/// `scratch/usr/lib/modules/<kernel>/build` (so `scratch/usr/lib/modules` serves as an
/// install tree). Fails on a corrupt archive, a refused member (see the module docs)
/// or when the package has no such tree.
pub fn extract_build_tree(
    file: &Path,
    kernel: &str,
    scratch: &Path,
) -> Result<(), HeadersPackageError> {
    let corrupt = |source| HeadersPackageError::Corrupt {
        file: file.into(),
        source,
    };
    let prefix = tree_prefix(kernel);
    let mut archive = open(file)?;
    let mut symlinks: BTreeSet<PathBuf> = BTreeSet::new();
    let mut files: BTreeSet<PathBuf> = BTreeSet::new();
    let mut any = false;
    for entry in archive.entries().map_err(corrupt)? {
        let mut entry = entry.map_err(corrupt)?;
        let name = member_name(&entry.path_bytes());
        if !(name == prefix || name.starts_with(&format!("{prefix}/"))) {
            continue;
        }
        let refuse = |reason: &str| HeadersPackageError::UnsafeMember {
            file: file.into(),
            member: name.clone(),
            reason: reason.into(),
        };
        let path = PathBuf::from(&name);
        if path
            .components()
            .any(|c| !matches!(c, Component::Normal(_)))
        {
            return Err(refuse("its name has '..', '.' or a leading '/'"));
        }
        if path.ancestors().skip(1).any(|a| symlinks.contains(a)) {
            return Err(refuse("it lies below a symbolic link of the archive"));
        }
        let kind = entry.header().entry_type();
        if kind.is_symlink() {
            symlinks.insert(path.clone());
        } else if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(corrupt)?
                .map(|t| PathBuf::from(member_name(t.as_os_str().as_encoded_bytes())));
            if !target.is_some_and(|t| files.contains(&t)) {
                return Err(refuse("a hard link to something not unpacked before it"));
            }
        } else if kind.is_file() {
            files.insert(path.clone());
        } else if !kind.is_dir() {
            return Err(refuse("not a file, directory or link (a device or fifo?)"));
        }
        entry.set_preserve_mtime(true);
        let unpacked = entry
            .unpack_in(scratch)
            .map_err(|source| HeadersPackageError::Unpack {
                file: file.into(),
                member: name.clone(),
                scratch: scratch.into(),
                source,
            })?;
        if !unpacked {
            return Err(refuse("the archive library refused its path"));
        }
        any = true;
    }
    if !any {
        return Err(HeadersPackageError::NotFound {
            kernel: kernel.to_string(),
            searched: vec![file.to_path_buf()],
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd package file with the given (name, contents) members (dirs end in `/`).
    fn package(dir: &Path, name: &str, members: &[(&str, &str)]) -> PathBuf {
        let mut builder = tar::Builder::new(Vec::new());
        for (member, contents) in members {
            let mut header = tar::Header::new_gnu();
            if member.ends_with('/') {
                header.set_entry_type(tar::EntryType::Directory);
                header.set_mode(0o755);
                header.set_size(0);
                builder
                    .append_data(&mut header, member, std::io::empty())
                    .unwrap();
            } else {
                header.set_mode(0o644);
                header.set_size(contents.len() as u64);
                builder
                    .append_data(&mut header, member, contents.as_bytes())
                    .unwrap();
            }
        }
        let tar = builder.into_inner().unwrap();
        let file = dir.join(name);
        std::fs::write(&file, zstd::encode_all(&tar[..], 3).unwrap()).unwrap();
        file
    }

    fn headers(dir: &Path, name: &str, kernel: &str) -> PathBuf {
        let top = format!("usr/lib/modules/{kernel}/build/");
        let makefile = format!("{top}Makefile");
        let include = format!("{top}include/");
        package(
            dir,
            name,
            &[
                (".PKGINFO", "pkgname = x\n"),
                ("usr/", ""),
                ("usr/lib/", ""),
                ("usr/lib/modules/", ""),
                (&top, ""),
                (&makefile, "all:\n"),
                (&include, ""),
                ("usr/src/elsewhere", "not unpacked"),
            ],
        )
    }

    #[test]
    fn the_package_with_the_kernels_build_tree_is_found_by_its_members() {
        let dir = tempfile::tempdir().unwrap();
        headers(
            dir.path(),
            "linux-headers-6.1-1-x86_64.pkg.tar.zst",
            "6.1.0-a",
        );
        let ours = headers(
            dir.path(),
            "linux-lts-headers-6.1-1-x86_64.pkg.tar.zst",
            "6.1.0-b",
        );
        package(
            dir.path(),
            "zlib-1-1-x86_64.pkg.tar.zst",
            &[("usr/bin/x", "")],
        );
        let sources = PackageSources {
            files: vec![],
            cache_dirs: vec![dir.path().to_path_buf()],
        };
        assert_eq!(find("6.1.0-b", &sources).unwrap(), ours);
        let missing = find("6.1.0-c", &sources).unwrap_err().to_string();
        assert!(missing.contains("6.1.0-c") && missing.contains(&dir.path().display().to_string()));
    }

    #[test]
    fn only_the_build_tree_is_unpacked() {
        let dir = tempfile::tempdir().unwrap();
        let file = headers(dir.path(), "h.pkg.tar.zst", "6.1.0-a");
        let scratch = tempfile::tempdir().unwrap();
        extract_build_tree(&file, "6.1.0-a", scratch.path()).unwrap();
        let build = scratch.path().join("usr/lib/modules/6.1.0-a/build");
        assert!(build.join("include").is_dir());
        assert_eq!(
            std::fs::read_to_string(build.join("Makefile")).unwrap(),
            "all:\n"
        );
        assert!(!scratch.path().join("usr/src").exists());
    }

    #[test]
    fn a_truncated_package_fails_saying_so() {
        let dir = tempfile::tempdir().unwrap();
        let file = headers(dir.path(), "h.pkg.tar.zst", "6.1.0-a");
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() / 2]).unwrap();
        let scratch = tempfile::tempdir().unwrap();
        let error = extract_build_tree(&file, "6.1.0-a", scratch.path()).unwrap_err();
        assert!(
            matches!(
                error,
                HeadersPackageError::Corrupt { .. } | HeadersPackageError::Unpack { .. }
            ),
            "{error:?}"
        );
        std::fs::write(&file, b"not a package").unwrap();
        let error = extract_build_tree(&file, "6.1.0-a", scratch.path()).unwrap_err();
        assert!(error.to_string().contains("h.pkg.tar.zst"), "{error}");
    }
}
