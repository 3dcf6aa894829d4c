//! The build cache: what a build produced (`<m>/<v>/<k>/<a>`: the stripped, signed,
//! compressed modules and the make.log), kept under a key of everything that
//! determines it, so that the same build is never compiled twice. The pre-flight
//! fills it for incoming kernels; the post-transaction hook, `autoinstall` after a
//! killed run and the reinstall of an unchanged `*-dkms` package find it there and
//! install without running make.
//!
//! The key (SHA-256) covers: dkms-hook's version; module, version, kernel, arch; the
//! module source tree's content (names, modes, bytes, link targets); the dkms.conf as
//! evaluated for that kernel (with the tree paths replaced by placeholders, so a
//! pre-flight build in its scratch trees has the key of the real build); the headers'
//! identity and content (`.config`, which also names the compiler version
//! `CONFIG_CC_VERSION_TEXT` and the module compression, `Module.symvers` and
//! `include/config/kernel.release`); the signing certificate and `sign_file`; the
//! `compress_*_opts` settings.
//!
//! An entry is `<cache>/<kernel>/<key>/`: the build's files under `build/`, then a
//! `digests` file (SHA-256 and path of each file), written last. **Architecture
//! invariant:** an entry is used only when every file matches its digest; a missing
//! `digests` (a killed store), a truncated or changed file removes the entry, is
//! reported, and the module is built again. Writes go through the fs layer's `Root`.
//! The cache is bounded by the installed kernels: `dkms-hook cleanup` lists the
//! entries of removed kernels with the other leftovers (`cleanup::leftovers`).

use crate::conf::DkmsConf;
use crate::fs::Root;
use crate::host::Host;
use crate::tree::{self, Target};
use sha2::{Digest, Sha256};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// The name of an entry's file list with digests, written last.
const DIGESTS: &str = "digests";
/// The directory of an entry holding the build's files.
const FILES: &str = "files";

/// What looking up the cache found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The build was restored into `<m>/<v>/<k>/<a>` from the cache.
    Hit,
    /// No entry (or no cache): build.
    Miss,
    /// An entry that failed its check was removed; build. The reason says what.
    Rejected(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn sha256(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// A file's bytes for the key, or a marker when it is absent.
fn file_or_none(hasher: &mut Sha256, label: &str, path: &Path) {
    hasher.update(label.as_bytes());
    match std::fs::read(path) {
        Ok(bytes) => {
            hasher.update(b"\0present\0");
            hasher.update(&bytes);
        }
        Err(_) => hasher.update(b"\0none\0"),
    }
}

/// Every entry of the tree at `dir` (following the top symlink only), in name order:
/// relative path, kind, mode and content or link target.
fn hash_tree(hasher: &mut Sha256, root: &Path, dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let rel = path.strip_prefix(root).unwrap_or(&path);
        hasher.update(rel.as_os_str().as_encoded_bytes());
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        hasher.update(meta.permissions().mode().to_le_bytes());
        if meta.file_type().is_symlink() {
            let target = std::fs::read_link(&path).unwrap_or_default();
            hasher.update(b"\0link\0");
            hasher.update(target.as_os_str().as_encoded_bytes());
        } else if meta.is_dir() {
            hasher.update(b"\0dir\0");
            hash_tree(hasher, root, &path);
        } else {
            hasher.update(b"\0file\0");
            hasher.update(std::fs::read(&path).unwrap_or_default());
        }
        hasher.update(b"\0");
    }
}

/// The key of `target`'s build on `host` with its evaluated `conf`.
pub fn key(host: &Host, target: &Target, conf: &DkmsConf) -> String {
    let mut h = Sha256::new();
    h.update(concat!("dkms-hook build cache 1 ", env!("CARGO_PKG_VERSION")).as_bytes());
    for part in [
        target.module.as_str(),
        target.version.as_str(),
        target.kernel.as_str(),
        target.arch.as_str(),
    ] {
        h.update(part.as_bytes());
        h.update(b"\0");
    }
    let source = target.source_link(&host.paths);
    let source = std::fs::canonicalize(&source).unwrap_or(source);
    hash_tree(&mut h, &source, &source);
    let headers = host.paths.kernel_source_dir(&target.kernel);
    let mut evaluated = format!("{conf:?}");
    for (path, placeholder) in [
        (&headers, "[kernel_source_dir]"),
        (&host.paths.install_tree, "[install_tree]"),
        (&host.paths.dkms_tree, "[dkms_tree]"),
    ] {
        evaluated = evaluated.replace(&path.display().to_string(), placeholder);
    }
    h.update(evaluated.as_bytes());
    file_or_none(&mut h, ".config", &headers.join(".config"));
    file_or_none(&mut h, "Module.symvers", &headers.join("Module.symvers"));
    file_or_none(
        &mut h,
        "kernel.release",
        &headers.join("include/config/kernel.release"),
    );
    let settings = &host.settings;
    let certificate = settings
        .signing_certificate
        .clone()
        .unwrap_or_else(|| host.paths.dkms_tree.join("mok.pub"));
    file_or_none(&mut h, "certificate", &certificate);
    let options = format!(
        "{:?}{:?}{:?}{:?}",
        settings.sign_file,
        settings.compress_gzip_opts,
        settings.compress_xz_opts,
        settings.compress_zstd_opts
    );
    h.update(options.as_bytes());
    hex(&h.finalize())
}

/// `<cache>/<kernel>/<key>`.
fn entry_dir(cache: &Path, target: &Target, key: &str) -> PathBuf {
    cache.join(&target.kernel).join(key)
}

/// Every file below `dir`, relative, in name order (directories are implied).
fn files_below(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.filter_map(|e| e.ok()) {
            let path = entry.path();
            match entry.file_type() {
                Ok(t) if t.is_dir() => stack.push(path),
                Ok(t) if t.is_file() => {
                    out.push(path.strip_prefix(dir).unwrap_or(&path).to_path_buf())
                }
                _ => {}
            }
        }
    }
    out.sort();
    out
}

/// Keeps `target`'s finished build under `key`. Fails, saying why, only when the
/// cache cannot be written (the build itself stands; the caller warns).
pub fn store(host: &Host, cache: &Path, target: &Target, key: &str) -> Result<(), String> {
    let text = |e: crate::fs::FsError| e.to_string();
    let root = Root::open_or_create(cache).map_err(text)?;
    let built = target.build_dir(&host.paths);
    let entry = entry_dir(cache, target, key);
    root.remove(&entry).map_err(text)?;
    let mut digests = String::new();
    for rel in files_below(&built) {
        let source = built.join(&rel);
        let bytes = std::fs::read(&source).map_err(|e| format!("{}: {e}", source.display()))?;
        let mode = std::fs::metadata(&source)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        root.write(&entry.join(FILES).join(&rel), &bytes, mode)
            .map_err(text)?;
        digests.push_str(&format!("{} {}\n", sha256(&bytes), rel.display()));
    }
    root.write(&entry.join(DIGESTS), digests.as_bytes(), 0o644)
        .map_err(text)
}

/// Restores `target`'s build from the entry under `key`, after checking every file
/// against its digest; a bad entry is removed and reported as [`Lookup::Rejected`].
pub fn restore(host: &Host, cache: &Path, target: &Target, key: &str) -> Result<Lookup, String> {
    let text = |e: crate::fs::FsError| e.to_string();
    let entry = entry_dir(cache, target, key);
    if !entry.is_dir() {
        return Ok(Lookup::Miss);
    }
    let checked = check(&entry);
    let files = match checked {
        Ok(files) => files,
        Err(reason) => {
            let root = Root::open_or_create(cache).map_err(text)?;
            root.remove(&entry).map_err(text)?;
            return Ok(Lookup::Rejected(format!("{}: {reason}", entry.display())));
        }
    };
    let dkms = host.dkms_root().map_err(text)?;
    let dest = target.build_dir(&host.paths);
    let staged = crate::fs::staging_path(&dest);
    dkms.remove(&staged).map_err(text)?;
    for (rel, bytes, mode) in files {
        dkms.write(&staged.join(rel), &bytes, mode).map_err(text)?;
    }
    dkms.create_dir_all(&tree::layout::modules_of(&staged))
        .map_err(text)?;
    dkms.replace_dir(&staged, &dest).map_err(text)?;
    Ok(Lookup::Hit)
}

type CheckedFile = (PathBuf, Vec<u8>, u32);

/// Reads an entry's files and checks them against `digests`; says what is wrong.
fn check(entry: &Path) -> Result<Vec<CheckedFile>, String> {
    let digests = std::fs::read_to_string(entry.join(DIGESTS))
        .map_err(|e| format!("its digests file cannot be read ({e}): an interrupted store"))?;
    let files_dir = entry.join(FILES);
    let listed: Vec<(&str, PathBuf)> = digests
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(d, p)| (d, PathBuf::from(p)))
        .collect();
    let present = files_below(&files_dir);
    let mut names: Vec<&PathBuf> = listed.iter().map(|(_, p)| p).collect();
    names.sort();
    if names != present.iter().collect::<Vec<_>>() {
        return Err("its files are not the ones its digests list".into());
    }
    let mut out = Vec::new();
    for (digest, rel) in listed {
        let path = files_dir.join(&rel);
        let bytes = std::fs::read(&path).map_err(|e| format!("{}: {e}", rel.display()))?;
        if sha256(&bytes) != digest {
            return Err(format!(
                "{} does not match its digest (truncated or changed)",
                rel.display()
            ));
        }
        let mode = std::fs::metadata(&path)
            .map(|m| m.permissions().mode() & 0o7777)
            .unwrap_or(0o644);
        out.push((rel, bytes, mode));
    }
    if out.is_empty() {
        return Err("it holds no files".into());
    }
    Ok(out)
}
