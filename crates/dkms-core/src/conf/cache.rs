//! Remembering, across commands, what bash made of a dkms.conf that needs it, so that
//! `status` on real-world confs (zfs's sources the kernel's 10,000-line `.config`:
//! 35 ms of bash per module x kernel) starts no shell when nothing changed.
//!
//! An entry is the dump eval.sh printed, under a key that hashes everything the
//! evaluation could depend on that is cheap to know: eval.sh itself, every sourced
//! file's path and content, the context eval.sh is given, the caller's environment
//! (zfs reads `CROSS_COMPILE` and `ICP_ROOT`), the identity (size, mtime, inode) of
//! the kernel's config files, and of every file in the etc dir (zfs reads
//! `/etc/dkms/zfs.conf`). A conf that reads files elsewhere, or the clock, can be
//! answered from an older state: so only the status notes use the cache (through
//! [`Prepared`](super::Prepared)); builds, installs and plans always evaluate anew.
//! One entry per module version x kernel x arch (`tree::layout::conf_cache_file`),
//! replaced when its key changes, so the cache never grows past the tree. Written
//! atomically through the DKMS tree's root handle when the caller may write there,
//! and read only when no other user could have written it.

use super::eval::EVAL_SCRIPT;
use super::raw::{parse_dump, RawConf};
use super::EvalContext;
use crate::fs::Root;
use std::hash::{Hash, Hasher};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The cache entry's file for an evaluation.
pub(super) fn entry_file(ctx: &EvalContext) -> PathBuf {
    crate::tree::layout::conf_cache_file(
        &ctx.dkms_tree,
        &ctx.module,
        &ctx.module_version,
        &ctx.kernelver,
        &ctx.arch,
    )
}

/// The key of evaluating `files` (the dkms.conf and its override files) in `ctx`;
/// `None` when a file cannot be read (the evaluation then reports it).
pub(super) fn key(files: &[PathBuf], ctx: &EvalContext) -> Option<String> {
    // Two differently seeded SipHash runs: 128 bits, so a collision is not a concern.
    let mut hashers = [
        std::hash::DefaultHasher::new(),
        std::hash::DefaultHasher::new(),
    ];
    1u8.hash(&mut hashers[1]);
    let mut feed = |bytes: &[u8]| {
        for h in &mut hashers {
            bytes.hash(h);
        }
    };
    feed(EVAL_SCRIPT.as_bytes());
    for file in files {
        feed(file.as_os_str().as_encoded_bytes());
        feed(&std::fs::read(file).ok()?);
    }
    for text in [&ctx.kernelver, &ctx.arch, &ctx.module, &ctx.module_version] {
        feed(text.as_bytes());
    }
    for path in [
        &ctx.kernel_source_dir,
        &ctx.kernel_config,
        &ctx.dkms_tree,
        &ctx.source_tree,
        &ctx.install_tree,
    ] {
        feed(path.as_os_str().as_encoded_bytes());
    }
    for (name, value) in ctx.caller_env.vars() {
        feed(name.as_bytes());
        feed(value.as_encoded_bytes());
    }
    let mut identities = vec![
        ctx.kernel_config.clone(),
        ctx.kernel_source_dir.join(".config"),
    ];
    if let Ok(entries) = std::fs::read_dir(&ctx.etc_dir) {
        let mut names: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
        names.sort();
        identities.extend(names);
    }
    for path in identities {
        feed(path.as_os_str().as_encoded_bytes());
        let identity = std::fs::metadata(&path)
            .map(|m| [m.len() as i64, m.mtime(), m.mtime_nsec(), m.ino() as i64])
            .unwrap_or([-1; 4]);
        for number in identity {
            feed(&number.to_le_bytes());
        }
    }
    Some(format!(
        "{:016x}{:016x}",
        hashers[0].finish(),
        hashers[1].finish()
    ))
}

/// The cached dump for `key`, when the entry has that key and no user other than
/// this one (or root) could have written it.
pub(super) fn load(ctx: &EvalContext, key: &str) -> Option<RawConf> {
    let file = entry_file(ctx);
    let meta = std::fs::symlink_metadata(&file).ok()?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let me = unsafe { libc::geteuid() };
    if !meta.is_file() || meta.mode() & 0o022 != 0 || (meta.uid() != 0 && meta.uid() != me) {
        return None;
    }
    let bytes = std::fs::read(&file).ok()?;
    let rest = bytes.strip_prefix(key.as_bytes())?.strip_prefix(b"\n")?;
    Some(parse_dump(rest))
}

/// Stores `raw` under `key`. A failure (a user without write access to the DKMS
/// tree, a full disk) only costs the next command a bash.
pub(super) fn store(root: &Root, ctx: &EvalContext, key: &str, raw: &RawConf) {
    let mut bytes = format!("{key}\n").into_bytes();
    bytes.extend(raw.to_dump());
    let file = entry_file(ctx);
    if let Err(e) = root.write(&file, &bytes, 0o644) {
        log::debug!("not caching {}: {e}", file.display());
    }
}
