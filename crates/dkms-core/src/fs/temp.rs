//! The one place temp names are made and parsed:
//! `.dkms-hook-tmp-<pid>-<new|old|gone>-<name>`.
//!
//! Whatever is incomplete in a tree carries such a name, so a later run can tell
//! leftovers from real things and what to do with each. The format is fixed: trees
//! left by earlier versions and the SIGKILL suite (tests/it/faults.rs) depend on it.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

/// Prefix of every temp name we create, so a later run can find and remove leftovers.
pub const TEMP_PREFIX: &str = ".dkms-hook-tmp";

/// What a temp name holds, which decides what a sweep does with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TempKind {
    /// Something being written (a file, a symlink, a staged build): incomplete until it
    /// is renamed in, so a leftover is deleted.
    New,
    /// A complete directory moved aside for its replacement, where the file system
    /// cannot exchange the two in one step: put back when the replacement never
    /// arrived, deleted otherwise.
    Old,
    /// A directory on its way out, renamed so that no half-deleted tree keeps a real
    /// name: deleted.
    Gone,
}

impl TempKind {
    fn word(self) -> &'static str {
        match self {
            TempKind::New => "new",
            TempKind::Old => "old",
            TempKind::Gone => "gone",
        }
    }
}

/// A temp name taken apart: who made it, what it holds, and the real name it stands
/// for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TempName {
    /// The process that created it, when the name says.
    pub pid: Option<u32>,
    /// `None` for a name with our prefix in a format we do not know (treated as
    /// incomplete: the prefix says it is ours).
    pub kind: Option<TempKind>,
    /// The real name it stands for.
    pub real: OsString,
}

impl TempName {
    /// A temp name of this process for `real`.
    pub fn new(kind: TempKind, real: &OsStr) -> TempName {
        TempName {
            pid: Some(std::process::id()),
            kind: Some(kind),
            real: real.to_os_string(),
        }
    }

    /// `None` unless `name` is one of our temp names.
    pub fn parse(name: &OsStr) -> Option<TempName> {
        let rest = name
            .as_bytes()
            .strip_prefix(TEMP_PREFIX.as_bytes())?
            .strip_prefix(b"-")
            .unwrap_or_default();
        let mut parts = rest.splitn(3, |&b| b == b'-');
        let pid = parts
            .next()
            .and_then(|p| std::str::from_utf8(p).ok())
            .and_then(|p| p.parse().ok());
        let kind = match parts.next() {
            Some(b"new") => Some(TempKind::New),
            Some(b"old") => Some(TempKind::Old),
            Some(b"gone") => Some(TempKind::Gone),
            _ => None,
        };
        let real = OsString::from_vec(parts.next().unwrap_or_default().to_vec());
        Some(TempName { pid, kind, real })
    }

    /// Whether this process made it (then another thread of this run may be writing
    /// it right now, and no sweep touches it).
    pub fn is_own(&self) -> bool {
        self.pid == Some(std::process::id())
    }

    /// The file name: `<TEMP_PREFIX>-<pid>-<kind>-<real>`.
    pub fn to_os_string(&self) -> OsString {
        let pid = self.pid.map(|p| p.to_string()).unwrap_or_default();
        let kind = self.kind.map(TempKind::word).unwrap_or_default();
        let mut name = OsString::from(format!("{TEMP_PREFIX}-{pid}-{kind}-"));
        name.push(&self.real);
        name
    }
}

/// `path`'s sibling under a temp name of this process.
pub(crate) fn temp_sibling(path: &Path, kind: TempKind) -> PathBuf {
    let name = path.file_name().unwrap_or(OsStr::new(""));
    let temp = TempName::new(kind, name).to_os_string();
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.join(temp),
        _ => PathBuf::from(temp),
    }
}

/// The temp name under which `dest` is prepared before it is renamed into place
/// (`Root::replace_dir` for a directory).
pub fn staging_path(dest: &Path) -> PathBuf {
    temp_sibling(dest, TempKind::New)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_parse_back_into_pid_kind_and_real_name() {
        let name = OsString::from(format!("{TEMP_PREFIX}-42-old-x86_64"));
        assert_eq!(
            TempName::parse(&name),
            Some(TempName {
                pid: Some(42),
                kind: Some(TempKind::Old),
                real: "x86_64".into()
            })
        );
        // A real name that itself starts with a kind word stays whole.
        let name = OsString::from(format!("{TEMP_PREFIX}-7-new-old-foo.ko"));
        assert_eq!(TempName::parse(&name).unwrap().real, "old-foo.ko");
        assert_eq!(TempName::parse(OsStr::new("hello.ko")), None);
        let odd = TempName::parse(OsStr::new(".dkms-hook-tmp-x")).unwrap();
        assert_eq!((odd.pid, odd.kind), (None, None));
    }

    #[test]
    fn made_names_keep_the_format_and_round_trip() {
        for kind in [TempKind::New, TempKind::Old, TempKind::Gone] {
            let made = TempName::new(kind, OsStr::new("hello-1.0.ko"));
            let name = made.to_os_string();
            assert_eq!(
                name,
                OsString::from(format!(
                    "{TEMP_PREFIX}-{}-{}-hello-1.0.ko",
                    std::process::id(),
                    kind.word()
                ))
            );
            let parsed = TempName::parse(&name).unwrap();
            assert_eq!(parsed, made);
            assert!(parsed.is_own());
        }
        let staged = staging_path(Path::new("/t/m/1.0/k/x86_64"));
        assert_eq!(staged.parent(), Some(Path::new("/t/m/1.0/k")));
        let parsed = TempName::parse(staged.file_name().unwrap()).unwrap();
        assert_eq!(
            (parsed.kind, parsed.real),
            (Some(TempKind::New), "x86_64".into())
        );
    }
}
