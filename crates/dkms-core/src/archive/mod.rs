//! `mktarball` and `ldtarball`: DKMS tarballs in upstream's format, so tarballs move
//! freely between upstream dkms and us.
//!
//! ```text
//! dkms_main_tree/<kernel>/<arch>/{module,log}/...     each build (empty with --source-only)
//! dkms_source_tree/...                               the module source (not --binaries-only)
//! dkms_binaries_only/{PACKAGE_NAME,PACKAGE_VERSION,dkms.conf}        (--binaries-only)
//! ```
//!
//! Upstream names it `<m>-<v>-kernel<k>-<a>[-kernel<k>-<a>...].dkms.tar.gz` (or
//! `-source-only`, or `-manykernels` past 200 characters) under
//! `<dkms_tree>/<m>/<v>/tarball/` and extracts it with `tar -xaf` into a scratch
//! directory, so member names need no `./` prefix. `write` makes them on `tar::Builder`,
//! `extract` reads untrusted ones (a policy filter over the members, then
//! `Entry::unpack_in`, then the symlinks), `load` places what a tarball brings.
//!
//! **Invariant:** archive/ changes the DKMS tree and the source tree only through the
//! functions at the bottom of this file, which call the fs layer's root handles and atomic
//! operations: nothing is deleted or replaced through a symlinked directory, and nothing
//! appears half-written under its real name.

mod extract;
mod load;
mod write;

pub use load::{load_tarball, load_tarball_with};
pub use write::make_tarball_with;

use crate::engine::{copy_tree, EngineError};
use crate::fs::{staging_path, Root};
use std::path::{Path, PathBuf};

/// What `mktarball` puts in the tarball.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TarballMode {
    /// The source and the builds.
    #[default]
    Full,
    /// `--source-only`: the source, and an empty `dkms_main_tree`.
    SourceOnly,
    /// `--binaries-only`: the builds and the dkms.conf, no source.
    BinariesOnly,
}

/// Where the source of a loaded tarball ended up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoadedSource {
    /// Copied from the tarball to `<source_tree>/<m>-<v>` and registered.
    Copied(PathBuf),
    /// `<source_tree>/<m>-<v>` existed and was kept (without force), or the tarball
    /// had no source; it is registered.
    KeptExisting(PathBuf),
    /// A `--binaries-only` tarball and no source on the system: as upstream does, the
    /// dkms.conf went into a real directory `<dkms_tree>/<m>/<v>/source/` and the
    /// version is not registered (upstream's later versions do not count it as added).
    BinariesOnly(PathBuf),
}

/// What [`load_tarball_with`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    pub module: String,
    pub version: String,
    pub source: LoadedSource,
    /// Builds placed into the DKMS tree, as `(kernel, arch)`.
    pub loaded: Vec<crate::tree::KernelArch>,
    /// Builds skipped because the DKMS tree already had them (without force).
    pub skipped: Vec<crate::tree::KernelArch>,
}

/// `path` as the tarball member it came from (`./dkms_source_tree/dkms.conf`).
fn member_name(root: &Path, path: &Path) -> String {
    match path.strip_prefix(root) {
        Ok(rel) => format!("./{}", rel.display()),
        Err(_) => path.display().to_string(),
    }
}

fn is_real_dir(path: &Path) -> bool {
    path.symlink_metadata().is_ok_and(|m| m.is_dir())
}

// ---------------------------------------------------------------------------------
// The only changes archive/ makes to the trees. (When the engine's file operations
// move to a root-handle layer, these five functions are what changes.)
// ---------------------------------------------------------------------------------

/// The handle of the tree at `root`: every change below goes through it (see `fs`).
fn tree(root: &Path) -> Result<Root, EngineError> {
    Ok(Root::open_or_create(root)?)
}

/// Fails unless `path` is inside the tree `root` and reached through real directories.
fn check_within(root: &Path, path: &Path) -> Result<(), EngineError> {
    Ok(tree(root)?.check(path)?)
}

/// Removes `path` (a link, a file or a directory tree) inside the tree `root`.
fn remove_within(root: &Path, path: &Path) -> Result<(), EngineError> {
    Ok(tree(root)?.remove(path)?)
}

/// Writes `bytes` to `dest` atomically with mode 0644: through the tree's handle when
/// `dest` is inside the tree `root`, else through a handle on its own directory (a
/// tarball the user asked for elsewhere), made when missing as upstream's `mkdir -p`.
fn write_file(root: &Path, dest: &Path, bytes: &[u8]) -> Result<(), EngineError> {
    let handle = if dest.starts_with(root) {
        tree(root)?
    } else {
        Root::open_or_create(dest.parent().unwrap_or(Path::new(".")))?
    };
    Ok(handle.write(dest, bytes, 0o644)?)
}

/// Creates the real directory `dir` inside the tree `root`.
fn create_dir_within(root: &Path, dir: &Path) -> Result<(), EngineError> {
    Ok(tree(root)?.create_dir_all(dir)?)
}

/// Moves (from inside the tree) or copies the directory `from` to `dest` inside the
/// tree `root`: staged under a temp name beside `dest`, synced, then exchanged with
/// what is there, so `dest` is always either the old tree or the complete new one.
fn place_dir(root: &Path, from: &Path, dest: &Path) -> Result<(), EngineError> {
    let handle = tree(root)?;
    handle.check(dest)?;
    if let Some(parent) = dest.parent() {
        handle.create_dir_all(parent)?;
    }
    let staged = staging_path(dest);
    handle.remove(&staged)?;
    let result = if handle.contains(from) {
        handle.rename(from, &staged).map_err(EngineError::from)
    } else {
        copy_tree(&handle, from, &staged)
    }
    .and_then(|()| Ok(handle.replace_dir(&staged, dest)?));
    if result.is_err() {
        let _ = handle.remove(&staged);
    }
    result
}

#[cfg(test)]
mod tests;
