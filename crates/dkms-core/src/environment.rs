//! The caller's environment, as upstream dkms passes it on: dkms.conf evaluation,
//! the scripts and make see what `dkms` (or pacman, in a hook) was started with,
//! minus the five compiler variables upstream unsets at startup, plus the compiler
//! the kernel was built with. The library never reads its own environment: the
//! binary reads it once and hands it over as a [`CallerEnv`] on the `Host`.

use crate::kernel::KernelConfig;
use std::ffi::OsString;
use std::path::Path;
use std::sync::Arc;

/// PATH given to children: the system directories only, so a user's PATH cannot
/// substitute a `make` or `bash` for one that runs as root.
pub const SYSTEM_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What upstream unsets before evaluating anything (`unset CC CXX CFLAGS CXXFLAGS
/// LDFLAGS`): a user's CFLAGS must not leak into a kernel module build.
pub const UNSET: [&str; 5] = ["CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS"];

/// Why a build's modules are deliberately left unsigned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoSigning {
    /// framework.conf says `try_sign_modules=false`.
    Policy,
    /// `try_sign_modules` is not `true` and we run in a chroot: the key there is not
    /// the one the machine's firmware knows.
    Chroot,
}

/// Whether modules are signed at all, by `try_sign_modules` (upstream's
/// `prepare_signing`): `false` never, `true` always, anything else (unset,
/// `not_in_chroot`) unless [`running_in_chroot`].
pub fn signing_policy(try_sign_modules: Option<&str>, caller: &CallerEnv) -> Option<NoSigning> {
    match try_sign_modules {
        Some("false") => Some(NoSigning::Policy),
        Some("true") => None,
        _ if running_in_chroot(caller) => Some(NoSigning::Chroot),
        _ => None,
    }
}

/// Upstream's `running_in_chroot`: fakechroot in the caller's environment, or a
/// mount table that differs from init's (a chroot or a private mount namespace), or
/// a root directory that is not init's. What cannot be read counts as no chroot
/// (upstream takes an unreadable `/proc/1/root` as a chroot, which would stop
/// signing in containers that hide it).
pub fn running_in_chroot(caller: &CallerEnv) -> bool {
    let var = |name: &str| caller.get(name).map(|v| v.to_string_lossy().into_owned());
    if var("FAKECHROOT").as_deref() == Some("true")
        && var("FAKECHROOT_BASE").is_some()
        && var("LD_PRELOAD").is_some_and(|p| p.contains("libfakechroot.so"))
    {
        return true;
    }
    if let (Ok(init), Ok(ours)) = (
        std::fs::read("/proc/1/mountinfo"),
        std::fs::read("/proc/self/mountinfo"),
    ) {
        if init != ours {
            return true;
        }
    }
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/proc/1/root"), std::fs::metadata("/")) {
        (Ok(init), Ok(ours)) => (init.dev(), init.ino()) != (ours.dev(), ours.ino()),
        _ => false,
    }
}

/// The bash that applies framework.conf's `build_environment` to a build command
/// (PRE_BUILD, make, POST_BUILD; upstream's do_build, not the install scripts): the
/// file is sourced in a subshell that sees the build's variables (`$kernelver` ...),
/// and only what it exports comes back, after the compiler choice, so it can set
/// `CC`. Empty when it is not set or not a file, as upstream ignores it then.
pub fn build_environment_prelude(file: Option<&Path>) -> String {
    match file {
        Some(file) if file.is_file() => format!(
            "source <( (source {} &>/dev/null; export -p) ); ",
            crate::shell::quote(&file.to_string_lossy())
        ),
        _ => String::new(),
    }
}

/// The caller's variables minus [`UNSET`] (and names that are not UTF-8, which no
/// shell could name). Empty by default: library users and tests that pass none get
/// children with only `PATH`, as before.
#[derive(Debug, Clone, Default)]
pub struct CallerEnv {
    vars: Arc<[(String, OsString)]>,
}

impl CallerEnv {
    /// From the caller's variables (what the binary was started with).
    pub fn new(vars: impl IntoIterator<Item = (OsString, OsString)>) -> CallerEnv {
        let vars: Vec<(String, OsString)> = vars
            .into_iter()
            .filter_map(|(name, value)| Some((name.into_string().ok()?, value)))
            .filter(|(name, _)| !name.is_empty() && !UNSET.contains(&name.as_str()))
            .collect();
        CallerEnv { vars: vars.into() }
    }

    pub fn vars(&self) -> &[(String, OsString)] {
        &self.vars
    }

    fn get(&self, name: &str) -> Option<&OsString> {
        self.vars.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    /// Whether `program` is an executable file in one of the caller's `PATH`
    /// directories (the system path when the caller has none), as `command -v`.
    pub fn finds(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        let path = self
            .get("PATH")
            .cloned()
            .unwrap_or_else(|| SYSTEM_PATH.into());
        std::env::split_paths(&path).any(|dir| {
            let candidate = if dir.as_os_str().is_empty() {
                Path::new(".").join(program)
            } else {
                dir.join(program)
            };
            std::fs::metadata(candidate)
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    }

    /// The compiler variables upstream exports for a build on a kernel with this
    /// config: `CC`/`KERNEL_CC` = the first word of `CONFIG_CC_VERSION_TEXT` (`gcc-12`
    /// on Debian, `gcc` on Arch), then `clang` for a clang kernel and `LD`/`KERNEL_LD`
    /// = `ld.lld` for an LLD one, each only when the caller's PATH has it.
    pub fn compiler_for(&self, config: Option<&KernelConfig>) -> Vec<(String, String)> {
        let mut vars = Vec::new();
        let Some(config) = config else {
            return vars;
        };
        let mut set = |names: [&str; 2], program: &str| {
            for name in names {
                vars.retain(|(n, _): &(String, String)| n != name);
                vars.push((name.to_string(), program.to_string()));
            }
        };
        let version_text = config
            .value("CONFIG_CC_VERSION_TEXT")
            .map(|v| v.trim_matches('"'));
        if let Some(cc) = version_text.and_then(|t| t.split(' ').next()) {
            if !cc.is_empty() && self.finds(cc) {
                set(["CC", "KERNEL_CC"], cc);
            }
        }
        if config.enabled("CONFIG_CC_IS_CLANG") && self.finds("clang") {
            set(["CC", "KERNEL_CC"], "clang");
        }
        if config.enabled("CONFIG_LD_IS_LLD") && self.finds("ld.lld") {
            set(["LD", "KERNEL_LD"], "ld.lld");
        }
        vars
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn try_sign_modules_false_never_signs_true_always_and_fakechroot_is_a_chroot() {
        let none = CallerEnv::default();
        assert_eq!(
            signing_policy(Some("false"), &none),
            Some(NoSigning::Policy)
        );
        let fake = CallerEnv::new([
            ("FAKECHROOT".into(), "true".into()),
            ("FAKECHROOT_BASE".into(), "/x".into()),
            ("LD_PRELOAD".into(), "/usr/lib/libfakechroot.so".into()),
        ]);
        assert_eq!(signing_policy(None, &fake), Some(NoSigning::Chroot));
        assert_eq!(
            signing_policy(Some("not_in_chroot"), &fake),
            Some(NoSigning::Chroot)
        );
        assert_eq!(signing_policy(Some("true"), &fake), None);
    }

    fn env(vars: &[(&str, &str)]) -> CallerEnv {
        CallerEnv::new(vars.iter().map(|(n, v)| (n.into(), v.into())))
    }

    #[test]
    fn the_five_compiler_variables_are_dropped_and_the_rest_kept() {
        let caller = env(&[
            ("CC", "cc"),
            ("CXX", "c++"),
            ("CFLAGS", "-O0"),
            ("CXXFLAGS", "-O0"),
            ("LDFLAGS", "-s"),
            ("CPPFLAGS", "-DX"),
            ("IGNORE_CC_MISMATCH", "1"),
        ]);
        let names: Vec<&str> = caller.vars().iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["CPPFLAGS", "IGNORE_CC_MISMATCH"]);
    }

    #[test]
    fn the_kernels_compiler_is_chosen_only_when_the_path_has_it() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path();
        for program in ["gcc-12", "clang"] {
            std::fs::write(bin.join(program), "").unwrap();
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(bin.join(program), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let caller = env(&[("PATH", bin.to_str().unwrap())]);
        let gcc =
            KernelConfig::parse(b"CONFIG_CC_VERSION_TEXT=\"gcc-12 (Debian 12.2.0-14) 12.2.0\"\n");
        assert_eq!(
            caller.compiler_for(Some(&gcc)),
            [
                ("CC".into(), "gcc-12".into()),
                ("KERNEL_CC".into(), "gcc-12".into())
            ]
        );
        let clang = KernelConfig::parse(
            b"CONFIG_CC_VERSION_TEXT=\"clang version 17\"\nCONFIG_CC_IS_CLANG=y\nCONFIG_LD_IS_LLD=y\n",
        );
        // clang is there, ld.lld is not: LD stays unset.
        assert_eq!(
            caller.compiler_for(Some(&clang)),
            [
                ("CC".into(), "clang".into()),
                ("KERNEL_CC".into(), "clang".into())
            ]
        );
        let missing = KernelConfig::parse(b"CONFIG_CC_VERSION_TEXT=\"gcc-13 (x) 13\"\n");
        assert!(caller.compiler_for(Some(&missing)).is_empty());
    }
}
