//! The one table of exit codes: upstream dkms's codes, each with the situations it
//! means, and the [`HasExitCode`] trait every error type that reaches the binary
//! implements.
//!
//! Scripts and `*-dkms` package scriptlets test dkms's exit status, so the `dkms` face
//! must exit as upstream does. Upstream reuses a code for several situations (the list
//! atop its `dkms.in`); each variant below names its main situation and lists the
//! others. Errors carry an [`Exit`], never a bare number, and the binary turns it into
//! its process exit status in one place.

/// An exit status of dkms, with its meaning (upstream dkms 3.4.x's numbering).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Exit {
    /// 0: done; also a skip upstream treats as success.
    Success,
    /// 1: a general failure: not root, no write access, `<module>/<version>` not
    /// given, `-a` and `-k` counts differ, `match` with the wrong parameters; ours also
    /// for I/O errors, a refused untrusted source, a symlink on a path to delete.
    Failure,
    /// 2: a usage error or something given that does not exist: an unknown option,
    /// `-k` with `--all`, a template kernel equal to the target kernel, a missing
    /// module source directory, a missing tarball.
    Usage,
    /// 3: the module version is in the wrong state for the command: already added,
    /// not added, already built; an `--arch` with `--all`; a tarball without dkms.conf.
    WrongState,
    /// 4: the module version is broken (its source is gone), or the command line
    /// names more than one action or kernel where one is needed, or dkms.conf or
    /// os-release cannot be found.
    Broken,
    /// 5: already installed for that kernel; an action that does not take `--all`; a
    /// patch that cannot be found or has a `..` component.
    AlreadyInstalled,
    /// 6: installing failed: no such kernel, a copy failed, depmod problems; also a
    /// patch that does not apply and a tarball that cannot be made.
    InstallFailed,
    /// 7: make did not produce a module dkms.conf names; a tarball without a valid
    /// dkms.conf.
    ModulesMissing,
    /// 8: a bad dkms.conf; a module source with nothing in it; a tarball's module
    /// already added; both `--binaries-only` and `--source-only`.
    BadConf,
    /// 9: a module source without dkms.conf; no write permission for a tarball; an rpm
    /// given to ldtarball.
    NoDkmsConf,
    /// 10: make (or a build script) failed; a malformed dkms.conf in a source tree.
    BuildFailed,
    /// 11: one or more modules failed during autoinstall.
    AutoinstallFailed,
    /// 12: the architecture could not be determined.
    NoArch,
    /// 13: BUILD_DEPENDS are missing (and no `--force`).
    MissingDependencies,
    /// 14: `kernel_preinst` or `kernel_prerm` failed for some module.
    KernelHookFailed,
    /// 15: a `cd` failed (upstream internal).
    ChdirFailed,
    /// 16: an empty kernel version or arch reached a command (upstream internal).
    EmptyKernelOrArch,
    /// 21: the kernel's headers cannot be found (or the kernel is not installed).
    NoHeaders,
    /// 77: skipped because BUILD_EXCLUSIVE_* does not match this kernel, arch or
    /// config.
    Excluded,
    /// 101: the PRE_INSTALL script failed (and no `--force`).
    PreInstallFailed,
}

impl Exit {
    /// Every code, in numeric order.
    pub const ALL: [Exit; 20] = [
        Exit::Success,
        Exit::Failure,
        Exit::Usage,
        Exit::WrongState,
        Exit::Broken,
        Exit::AlreadyInstalled,
        Exit::InstallFailed,
        Exit::ModulesMissing,
        Exit::BadConf,
        Exit::NoDkmsConf,
        Exit::BuildFailed,
        Exit::AutoinstallFailed,
        Exit::NoArch,
        Exit::MissingDependencies,
        Exit::KernelHookFailed,
        Exit::ChdirFailed,
        Exit::EmptyKernelOrArch,
        Exit::NoHeaders,
        Exit::Excluded,
        Exit::PreInstallFailed,
    ];

    /// The process exit status.
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::Failure => 1,
            Exit::Usage => 2,
            Exit::WrongState => 3,
            Exit::Broken => 4,
            Exit::AlreadyInstalled => 5,
            Exit::InstallFailed => 6,
            Exit::ModulesMissing => 7,
            Exit::BadConf => 8,
            Exit::NoDkmsConf => 9,
            Exit::BuildFailed => 10,
            Exit::AutoinstallFailed => 11,
            Exit::NoArch => 12,
            Exit::MissingDependencies => 13,
            Exit::KernelHookFailed => 14,
            Exit::ChdirFailed => 15,
            Exit::EmptyKernelOrArch => 16,
            Exit::NoHeaders => 21,
            Exit::Excluded => 77,
            Exit::PreInstallFailed => 101,
        }
    }

    /// The exit for a status read back from a file (a failure record): a code this
    /// table does not know is a general failure.
    pub fn from_code(code: u8) -> Exit {
        Exit::ALL
            .into_iter()
            .find(|e| e.code() == code)
            .unwrap_or(Exit::Failure)
    }
}

/// An error that knows how dkms exits for it.
pub trait HasExitCode {
    /// Upstream dkms's exit status for this failure.
    fn exit(&self) -> Exit;
}

impl HasExitCode for crate::conf::ConfError {
    fn exit(&self) -> Exit {
        Exit::BadConf
    }
}

impl HasExitCode for crate::sandbox::SandboxError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

impl HasExitCode for crate::settings::SettingsError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

impl HasExitCode for crate::lock::LockError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

impl HasExitCode for crate::exec::ExecError {
    fn exit(&self) -> Exit {
        Exit::Failure
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_reads_back_as_itself_and_unknown_codes_are_general_failures() {
        for exit in Exit::ALL {
            assert_eq!(Exit::from_code(exit.code()), exit);
        }
        let codes: Vec<u8> = Exit::ALL.iter().map(|e| e.code()).collect();
        let mut sorted = codes.clone();
        sorted.sort_unstable();
        sorted.dedup();
        assert_eq!(codes, sorted, "codes are unique and in order");
        assert_eq!(Exit::from_code(42), Exit::Failure);
    }
}
