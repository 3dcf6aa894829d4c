//! Failure memory: a failed build is recorded in the DKMS tree, so the next pacman
//! transaction does not spend minutes rebuilding a source that cannot build against
//! the same kernel, and status can say when and where it failed.
//!
//! The record's place is [`Target::failure_record`]. A record only stands while the source and the kernel
//! headers are unchanged; a successful build removes it.

use crate::host::Host;
use crate::paths::Paths;
use crate::tree::Target;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// What is remembered about one failed build.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureRecord {
    pub module: String,
    pub version: String,
    pub kernel: String,
    pub arch: String,
    /// Seconds since the Unix epoch.
    pub time: u64,
    pub log: Option<PathBuf>,
    /// Upstream's exit code for the failure and its message.
    pub exit_code: u8,
    pub message: String,
    /// Fingerprints of the source tree and of the kernel headers when it failed.
    pub source_fingerprint: String,
    pub kernel_fingerprint: String,
}

/// Remembers that `target` failed. Errors writing the record are ignored: failure
/// memory is an optimisation and must never turn into a second failure.
pub fn record(host: &Host, target: &Target, exit_code: u8, message: &str, log: Option<&Path>) {
    let paths = &host.paths;
    let record = FailureRecord {
        module: target.module.to_string(),
        version: target.version.to_string(),
        kernel: target.kernel.to_string(),
        arch: target.arch.to_string(),
        time: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        log: log.map(Path::to_path_buf),
        exit_code,
        message: message.to_string(),
        source_fingerprint: source_fingerprint(paths, target),
        kernel_fingerprint: kernel_fingerprint(paths, &target.kernel),
    };
    if let Ok(json) = serde_json::to_vec_pretty(&record) {
        // Under a temp name first, which the next run sweeps if this one is killed.
        if let Ok(root) = host.dkms_root() {
            let _ = root.write(&target.failure_record(paths), &json, 0o644);
        }
    }
}

/// Forgets a failure (after a successful build, or when the version is removed).
pub fn clear(host: &Host, target: &Target) {
    if let Ok(root) = host.dkms_root() {
        let _ = root.remove(&target.failure_record(&host.paths));
    }
}

/// The recorded failure of `target`, whatever changed since. Its log is named as
/// users and upstream find it: `<v>/build/make.log` while `<v>/build` points at this
/// target's kept work dir (the latest failed build of the version), else the work
/// dir's own `make.log`.
pub fn read(paths: &Paths, target: &Target) -> Option<FailureRecord> {
    let bytes = std::fs::read(target.failure_record(paths)).ok()?;
    let mut record: FailureRecord = serde_json::from_slice(&bytes).ok()?;
    record.log = record.log.map(|log| log_as_found(paths, target, log));
    Some(record)
}

/// `log` through `<v>/build` when that link points at `target`'s work dir and `log`
/// is the work dir's make.log.
fn log_as_found(paths: &Paths, target: &Target, log: PathBuf) -> PathBuf {
    let work = target.work_dir(paths);
    let shared = paths.shared_build_dir(&target.module, &target.version);
    let points_here =
        std::fs::read_link(&shared).is_ok_and(|link| Some(link.as_os_str()) == work.file_name());
    if points_here && log == crate::tree::layout::make_log_in(&work) {
        crate::tree::layout::make_log_in(&shared)
    } else {
        log
    }
}

/// The recorded failure, only if the source and the kernel headers are still the
/// ones it failed with (so building again would fail again).
pub fn still_failing(paths: &Paths, target: &Target) -> Option<FailureRecord> {
    let record = read(paths, target)?;
    (record.source_fingerprint == source_fingerprint(paths, target)
        && record.kernel_fingerprint == kernel_fingerprint(paths, &target.kernel))
    .then_some(record)
}

/// Names, sizes and modification times of every file in the module source.
fn source_fingerprint(paths: &Paths, target: &Target) -> String {
    let source = target.source_link(paths);
    let mut entries = Vec::new();
    collect(&source, &source, &mut entries);
    entries.sort();
    fnv(entries.join("\n").as_bytes())
}

/// The headers' config and Module.symvers: they change with every kernel build.
fn kernel_fingerprint(paths: &Paths, kernel: &str) -> String {
    let dir = paths.kernel_source_dir(kernel);
    let parts: Vec<String> = [
        ".config",
        "Module.symvers",
        "include/generated/utsrelease.h",
    ]
    .iter()
    .map(|f| stamp(&dir.join(f)))
    .collect();
    fnv(parts.join("\n").as_bytes())
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.file_type() {
            Ok(t) if t.is_dir() => collect(root, &path, out),
            Ok(_) => out.push(format!(
                "{} {}",
                path.strip_prefix(root).unwrap_or(&path).display(),
                stamp(&path)
            )),
            Err(_) => {}
        }
    }
}

fn stamp(path: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => format!("{}:{}.{}", m.size(), m.mtime(), m.mtime_nsec()),
        Err(_) => "-".into(),
    }
}

/// FNV-1a, 64 bits: a fingerprint, not a security measure.
fn fnv(bytes: &[u8]) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        hash ^= u64::from(*b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_stands_until_the_source_changes_and_a_success_clears_it() {
        let root = tempfile::tempdir().unwrap();
        let paths = Paths {
            dkms_tree: root.path().join("dkms"),
            source_tree: root.path().join("src"),
            install_tree: root.path().join("modules"),
            ..Paths::default()
        };
        let source = paths.source_dir("m", "1");
        std::fs::create_dir_all(&source).unwrap();
        std::fs::write(source.join("m.c"), "broken").unwrap();
        std::fs::create_dir_all(paths.version_dir("m", "1")).unwrap();
        std::os::unix::fs::symlink(&source, paths.version_dir("m", "1").join("source")).unwrap();
        let target = Target::parse("m", "1", "6.1.0-54-amd64", "x86_64").unwrap();
        let host = Host::new(paths.clone(), crate::Settings::default());

        record(
            &host,
            &target,
            10,
            "make failed",
            Some(Path::new("/x/make.log")),
        );
        let known = still_failing(&paths, &target).expect("recorded");
        assert_eq!(
            (known.exit_code, known.log.as_deref()),
            (10, Some(Path::new("/x/make.log")))
        );

        std::thread::sleep(std::time::Duration::from_millis(20));
        std::fs::write(source.join("m.c"), "fixed now").unwrap();
        assert!(
            still_failing(&paths, &target).is_none(),
            "a changed source is worth a new try"
        );
        assert!(
            read(&paths, &target).is_some(),
            "the record itself stays until cleared"
        );
        clear(&host, &target);
        assert!(read(&paths, &target).is_none());
    }
}
