//! The pacman package database, read through libalpm: which package owns a module
//! source or a kernel, and a package's pkgbase.
//!
//! This is the only module that uses the `alpm` crate. Its major version follows the
//! libalpm it links (2.x for libalpm 13 on Debian 12, 5.x for libalpm 16 on current
//! Arch), chosen by the `libalpm13` or `libalpm16` feature; the few calls whose types
//! differ between the two are wrapped here. Built with neither feature, every open
//! fails with [`PackageDbError::NotBuiltIn`] and status says so.
//!
//! Reading is cheap only when the files lists of few packages are loaded, so owners
//! are looked up first in the packages likely to own a path (named by the caller:
//! `<module>-dkms`, the kernel's pkgbase) and only the paths still unowned send us
//! through every installed package.

use serde::Serialize;
use std::path::{Path, PathBuf};

#[cfg(all(feature = "libalpm13", feature = "libalpm16"))]
compile_error!("enable only one of the features libalpm13 (alpm 2.x) and libalpm16 (alpm 5.x)");

#[cfg(all(feature = "libalpm13", not(feature = "libalpm16")))]
use alpm13 as alpm;
#[cfg(feature = "libalpm16")]
use alpm16 as alpm;

/// Where pacman keeps its database when nobody says otherwise.
pub const DEFAULT_DBPATH: &str = "/var/lib/pacman";

/// An installed package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Package {
    pub name: String,
    pub version: String,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum PackageDbError {
    #[error("could not read the pacman database {}: it has no local database (`{}` is missing); package owners are not shown", .dbpath.display(), .dbpath.join("local/ALPM_DB_VERSION").display())]
    Missing { dbpath: PathBuf },
    #[error("could not read the pacman database {}: {reason}; package owners are not shown", .dbpath.display())]
    Unreadable { dbpath: PathBuf, reason: String },
    #[error("this dkms-hook was built without libalpm (features libalpm13/libalpm16); package owners are not shown")]
    NotBuiltIn,
}

/// An open, read-only handle on the local package database.
pub struct PackageDb {
    #[cfg(any(feature = "libalpm13", feature = "libalpm16"))]
    handle: alpm::Alpm,
}

/// A path to look up, relative to pacman's root (`usr/src/hello-1.0/`; directories end
/// in `/` as in the database's files lists), with the packages likely to own it.
#[derive(Debug, Clone)]
pub struct OwnerQuery {
    pub path: Vec<u8>,
    pub likely: Vec<String>,
}

impl OwnerQuery {
    /// Queries `path` (absolute, under `root`) as pacman records it; `None` when the
    /// path is not under the root, so no package can own it.
    pub fn new(root: &Path, path: &Path, is_dir: bool, likely: Vec<String>) -> Option<OwnerQuery> {
        use std::os::unix::ffi::OsStrExt;
        let relative = path.strip_prefix(root).ok()?;
        let mut bytes = relative.as_os_str().as_bytes().to_vec();
        if bytes.is_empty() {
            return None;
        }
        if is_dir && !bytes.ends_with(b"/") {
            bytes.push(b'/');
        }
        Some(OwnerQuery {
            path: bytes,
            likely,
        })
    }
}

#[cfg(any(feature = "libalpm13", feature = "libalpm16"))]
impl PackageDb {
    /// Opens the local database under `dbpath` for a system rooted at `root`.
    ///
    /// Fails when `dbpath` holds no local database (not an Arch system, or a wrong
    /// path) or libalpm refuses it.
    pub fn open(root: &Path, dbpath: &Path) -> Result<PackageDb, PackageDbError> {
        use std::os::unix::ffi::OsStrExt;
        if !dbpath.join("local/ALPM_DB_VERSION").is_file() {
            return Err(PackageDbError::Missing {
                dbpath: dbpath.to_path_buf(),
            });
        }
        let handle = alpm::Alpm::new(
            root.as_os_str().as_bytes().to_vec(),
            dbpath.as_os_str().as_bytes().to_vec(),
        )
        .map_err(|e| PackageDbError::Unreadable {
            dbpath: dbpath.to_path_buf(),
            reason: e.to_string(),
        })?;
        Ok(PackageDb { handle })
    }

    /// The pkgbase of the installed package called `name` (its own name when the
    /// package does not record one).
    pub fn pkgbase(&self, name: &str) -> Option<String> {
        let db = self.handle.localdb();
        let pkg = db.pkg(name).ok()?;
        Some(pkg.base().unwrap_or(pkg.name()).to_string())
    }

    /// The owner of each query's path, in order. Packages named in a query's `likely`
    /// list are read first; every other package only while some path is unowned.
    pub fn owners(&self, queries: &[OwnerQuery]) -> Vec<Option<Package>> {
        let db = self.handle.localdb();
        let mut found: Vec<Option<Package>> = vec![None; queries.len()];
        let mut checked = std::collections::HashSet::new();
        let check = |pkg: &alpm::Package, found: &mut Vec<Option<Package>>| {
            for (query, slot) in queries.iter().zip(found.iter_mut()) {
                if slot.is_none() && has_file(pkg, &query.path) {
                    *slot = Some(Package {
                        name: pkg.name().to_string(),
                        version: pkg.version().as_str().to_string(),
                    });
                }
            }
        };
        for name in queries.iter().flat_map(|q| &q.likely) {
            if !checked.insert(name.clone()) {
                continue;
            }
            if let Ok(pkg) = db.pkg(name.as_str()) {
                check(pkg_ref(&pkg), &mut found);
            }
        }
        if found.iter().any(Option::is_none) {
            for pkg in db.pkgs() {
                if found.iter().all(Option::is_some) {
                    break;
                }
                if !checked.contains(pkg.name()) {
                    check(pkg_ref(&pkg), &mut found);
                }
            }
        }
        found
    }
}

// alpm 2.x hands out packages and files lists by value, 5.x by reference, and its
// `contains` returns a Result; these let one body serve both.
#[cfg(all(feature = "libalpm13", not(feature = "libalpm16")))]
fn pkg_ref<'a, 'h>(pkg: &'a alpm::Package<'h>) -> &'a alpm::Package<'h> {
    pkg
}
#[cfg(feature = "libalpm16")]
fn pkg_ref<'a>(pkg: &&'a alpm::Package) -> &'a alpm::Package {
    pkg
}
#[cfg(all(feature = "libalpm13", not(feature = "libalpm16")))]
fn has_file(pkg: &alpm::Package, path: &[u8]) -> bool {
    matches!(pkg.files().contains(path.to_vec()), Ok(Some(_)))
}
#[cfg(feature = "libalpm16")]
fn has_file(pkg: &alpm::Package, path: &[u8]) -> bool {
    pkg.files().contains(path.to_vec()).is_some()
}

#[cfg(not(any(feature = "libalpm13", feature = "libalpm16")))]
impl PackageDb {
    /// Without libalpm there is nothing to open.
    pub fn open(_root: &Path, _dbpath: &Path) -> Result<PackageDb, PackageDbError> {
        Err(PackageDbError::NotBuiltIn)
    }
    pub fn pkgbase(&self, _name: &str) -> Option<String> {
        None
    }
    pub fn owners(&self, queries: &[OwnerQuery]) -> Vec<Option<Package>> {
        vec![None; queries.len()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_queried_relative_to_the_root_with_a_trailing_slash() {
        let q = OwnerQuery::new(
            Path::new("/"),
            Path::new("/usr/src/hello-1.0"),
            true,
            vec![],
        )
        .unwrap();
        assert_eq!(q.path, b"usr/src/hello-1.0/");
        let q = OwnerQuery::new(
            Path::new("/"),
            Path::new("/usr/lib/modules/6.1/vmlinuz"),
            false,
            vec![],
        )
        .unwrap();
        assert_eq!(q.path, b"usr/lib/modules/6.1/vmlinuz");
        assert!(OwnerQuery::new(Path::new("/x"), Path::new("/usr/src"), true, vec![]).is_none());
    }

    #[test]
    fn a_directory_without_a_local_database_is_reported_as_missing() {
        let dir = tempfile::tempdir().unwrap();
        let err = PackageDb::open(Path::new("/"), dir.path()).err().unwrap();
        assert!(
            matches!(
                err,
                PackageDbError::Missing { .. } | PackageDbError::NotBuiltIn
            ),
            "{err}"
        );
    }
}
