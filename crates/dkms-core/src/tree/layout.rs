//! The layout: every name under the DKMS tree (`/var/lib/dkms`) and the install tree
//! (`/usr/lib/modules`), spelled here and nowhere else, so the two trees' shapes are
//! one page to read and one place to change (a tidy test holds other files to it).
//!
//! ```text
//! <dkms_tree>/.dkms-hook.lock                         the tree lock (lock.rs)
//! <dkms_tree>/.dkms-hook-transaction                  the hook's note (hook/note.rs)
//! <dkms_tree>/.dkms-hook-conf-cache/<m>/<v>/<k>-<a>   bash's dump of a dkms.conf (conf/cache.rs)
//! <dkms_tree>/<m>/<v>/source -> <source_tree>/<m>-<v>
//! <dkms_tree>/<m>/<v>/build                           upstream's shared build dir
//! <dkms_tree>/<m>/<v>/build-<k>-<a>/make.log          our work dir, one per target
//! <dkms_tree>/<m>/<v>/failed-<k>-<a>.json             a failure record (failure.rs)
//! <dkms_tree>/<m>/<v>/tarball/                        mktarball's default directory
//! <dkms_tree>/<m>/<v>/<k>/<a>/module/<name>.ko[.zst|.xz|.gz]
//! <dkms_tree>/<m>/<v>/<k>/<a>/log/make.log
//! <dkms_tree>/<m>/kernel-<k>-<a> -> <v>/<k>/<a>       installed
//! <dkms_tree>/<m>/original_module/<k>/<a>/            modules dkms replaced
//! <install_tree>/<k>/build                            the kernel's headers
//! <install_tree>/<k>/updates/dkms, updates, extra     where DKMS modules go
//! <install_tree>/<k>/modules.dep                      depmod's output
//! ```
//!
//! Only path arithmetic: nothing here reads the disk (apart from `kernel_config`'s
//! choice between two files) or changes it.

use crate::name::{Arch, KernelRelease, ModuleName, ModuleVersion, NameError};
use crate::paths::Paths;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// `<dkms_tree>/<m>/<v>/source`: the link to the module's source.
const SOURCE: &str = "source";
/// `<dkms_tree>/<m>/<v>/build`: upstream's one build directory per version, which a
/// dkms.conf's MAKE may name; we point it at the target's work dir.
const SHARED_BUILD: &str = "build";
/// `<dkms_tree>/<m>/<v>/<k>/<a>/module`: the built module files.
const MODULE: &str = "module";
/// `<dkms_tree>/<m>/<v>/<k>/<a>/log`: the kept build log.
const LOG: &str = "log";
/// The make log, in a work dir and in a build's `log/`.
const MAKE_LOG: &str = "make.log";
/// `<dkms_tree>/<m>/<v>/tarball`.
const TARBALL: &str = "tarball";
/// `<dkms_tree>/<m>/original_module`.
const ORIGINAL_MODULE: &str = "original_module";
/// Prefixes of the per-target names next to a version's builds.
const INSTALL_LINK_PREFIX: &str = "kernel-";
const WORK_DIR_PREFIX: &str = "build-";
const FAILURE_PREFIX: &str = "failed-";
const FAILURE_SUFFIX: &str = ".json";
/// In the install tree, below `<k>`: where DKMS puts modules by default (Arch and
/// Debian), its parent, and the older location.
const DKMS_UPDATES: &str = "updates/dkms";
const UPDATES: &str = "updates";
const EXTRA: &str = "extra";

/// The build cache of a DKMS tree (a dot name: neither upstream's globs nor our
/// listings take it for a module).
pub fn build_cache_dir(dkms_tree: &Path) -> PathBuf {
    dkms_tree.join(".dkms-hook-cache")
}

/// The lock file of a DKMS tree.
pub fn lock_file(dkms_tree: &Path) -> PathBuf {
    dkms_tree.join(".dkms-hook.lock")
}

/// `<k>-<a>`, the tail of the per-target names.
fn target_suffix(kernel: &str, arch: &str) -> String {
    format!("{kernel}-{arch}")
}

/// `kernel-<k>-<a>`: the install link's name.
/// `<dkms_tree>/.dkms-hook-conf-cache/<m>/<v>/<k>-<a>`: what bash made of that
/// module version's dkms.conf for that kernel, for `status` (see `conf::cache`). A
/// dot name, so neither we nor upstream take it for a module.
pub fn conf_cache_file(
    dkms_tree: &Path,
    module: &str,
    version: &str,
    kernel: &str,
    arch: &str,
) -> PathBuf {
    dkms_tree
        .join(".dkms-hook-conf-cache")
        .join(module)
        .join(version)
        .join(format!("{kernel}-{arch}"))
}

pub fn install_link_name(kernel: &str, arch: &str) -> String {
    format!("{INSTALL_LINK_PREFIX}{}", target_suffix(kernel, arch))
}

/// `kernel-<k>-<a>` names: dkms skips `*/kernel-*-*` when listing versions.
pub fn is_install_link_name(name: &str) -> bool {
    name.strip_prefix(INSTALL_LINK_PREFIX)
        .is_some_and(|rest| rest.contains('-'))
}

/// The kernel of a `kernel-<k>-<a>` install link name.
pub fn parse_install_link_name(name: &str) -> Option<&str> {
    let (kernel, _arch) = name.strip_prefix(INSTALL_LINK_PREFIX)?.rsplit_once('-')?;
    Some(kernel)
}

/// `<dkms_tree>/<m>/original_module`, given `<dkms_tree>/<m>`.
pub fn original_modules_of(module_dir: &Path) -> PathBuf {
    module_dir.join(ORIGINAL_MODULE)
}

/// What we keep per kernel next to a version's builds, besides `<k>/<a>` itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum KernelEntry {
    /// `build-<k>-<a>/`: a work directory (left after a failed build, for its log).
    WorkDir,
    /// `failed-<k>-<a>.json`: a failure record.
    FailureRecord,
}

/// The kernel a `build-<k>-<a>` or `failed-<k>-<a>.json` name belongs to, and which
/// of the two it is.
pub fn parse_kernel_entry(name: &str) -> Option<(&str, KernelEntry)> {
    let (rest, kind) = match (
        name.strip_prefix(WORK_DIR_PREFIX),
        name.strip_prefix(FAILURE_PREFIX),
    ) {
        (Some(rest), _) => (rest, KernelEntry::WorkDir),
        (_, Some(rest)) => (
            rest.strip_suffix(FAILURE_SUFFIX)?,
            KernelEntry::FailureRecord,
        ),
        _ => return None,
    };
    let (kernel, _arch) = rest.rsplit_once('-')?;
    Some((kernel, kind))
}

/// The failure record that keeps the work dir `name` (`build-<k>-<a>`, relative to
/// `version_dir`): `<version_dir>/failed-<k>-<a>.json`. `None` for any other name.
pub fn failure_record_of_work_dir(version_dir: &Path, name: &Path) -> Option<PathBuf> {
    let name = name.to_str()?;
    if name.contains('/') {
        return None;
    }
    let suffix = name.strip_prefix(WORK_DIR_PREFIX)?;
    Some(version_dir.join(format!("{FAILURE_PREFIX}{suffix}{FAILURE_SUFFIX}")))
}

/// `<build>/module`: the module files of a finished (or staged) build.
pub fn modules_of(build_dir: &Path) -> PathBuf {
    build_dir.join(MODULE)
}

/// `<root>/boot/System.map-<k>`: the kernel's symbol map, which upstream gives depmod
/// (`-F`) when it exists; `root` is `/`, or depmod's `-b` base for a relocated tree.
pub fn system_map(root: &Path, kernel: &str) -> PathBuf {
    root.join("boot").join(format!("System.map-{kernel}"))
}

/// `<build>/log`: the log directory of a finished (or staged) build.
pub fn log_dir_of(build_dir: &Path) -> PathBuf {
    build_dir.join(LOG)
}

/// `<work>/.dkms-hook-post-build`: the directory POST_BUILD sees (bound, in its
/// jail) at `<m>/<v>/<k>/<a>`; root moves its regular files into the build after.
pub fn post_build_staging_in(work: &Path) -> PathBuf {
    work.join(".dkms-hook-post-build")
}

/// `<dir>/make.log`: the make log in a work dir or a build's `log/`.
pub fn make_log_in(dir: &Path) -> PathBuf {
    dir.join(MAKE_LOG)
}

/// The directories of a kernel's modules tree that DKMS installs into, relative to
/// `<install_tree>/<k>`: `updates/dkms`, `updates`, `extra`.
pub const DKMS_MODULE_DIRS: [&str; 3] = [DKMS_UPDATES, UPDATES, EXTRA];

impl Paths {
    /// `<dkms_tree>/<module>`.
    pub fn module_dir(&self, module: &str) -> PathBuf {
        self.dkms_tree.join(module)
    }

    /// `<dkms_tree>/<module>/<version>`.
    pub fn version_dir(&self, module: &str, version: &str) -> PathBuf {
        self.dkms_tree.join(module).join(version)
    }

    /// `<dkms_tree>/<m>/<v>/source`: the link to the module's source.
    pub fn source_link(&self, module: &str, version: &str) -> PathBuf {
        self.version_dir(module, version).join(SOURCE)
    }

    /// `<etc_dir>/<m>`: the administrator's overrides of a module's scripts (a file
    /// named as the script's first word) and, in `patches/`, of its PATCH[] files.
    pub fn module_override_dir(&self, module: &str) -> PathBuf {
        self.etc_dir.join(module)
    }

    /// `<dkms_tree>/<m>/<v>/build`: upstream's shared build directory.
    pub fn shared_build_dir(&self, module: &str, version: &str) -> PathBuf {
        self.version_dir(module, version).join(SHARED_BUILD)
    }

    /// `<dkms_tree>/<m>/<v>/tarball`: where mktarball writes by default.
    pub fn tarball_dir(&self, module: &str, version: &str) -> PathBuf {
        self.version_dir(module, version).join(TARBALL)
    }

    /// `<dkms_tree>/<m>/<v>/<k>/<a>`: a finished build (`module/`, `log/`).
    pub fn build_dir(&self, module: &str, version: &str, kernel: &str, arch: &str) -> PathBuf {
        self.version_dir(module, version).join(kernel).join(arch)
    }

    /// `<dkms_tree>/<m>/kernel-<k>-<a>`: its presence, pointing at a version's
    /// build, is what "installed" means.
    pub fn install_link(&self, module: &str, kernel: &str, arch: &str) -> PathBuf {
        self.module_dir(module)
            .join(install_link_name(kernel, arch))
    }

    /// `<dkms_tree>/<m>/original_module`.
    pub fn original_modules(&self, module: &str) -> PathBuf {
        original_modules_of(&self.module_dir(module))
    }

    /// `<dkms_tree>/<m>/original_module/<k>/<a>`: modules that installing replaced.
    pub fn original_module_dir(&self, module: &str, kernel: &str, arch: &str) -> PathBuf {
        self.original_modules(module).join(kernel).join(arch)
    }

    /// `<dkms_tree>/.dkms-hook-transaction`: the hook's transaction note.
    pub fn transaction_note(&self) -> PathBuf {
        self.dkms_tree.join(".dkms-hook-transaction")
    }

    /// `<dkms_tree>/post_transaction.log`: what framework.conf's `post_transaction`
    /// printed the last time it ran (upstream's name; its run_test.sh reads it).
    pub fn post_transaction_log(&self) -> PathBuf {
        self.dkms_tree.join("post_transaction.log")
    }

    /// `<source_tree>/<module>-<version>`, where packages put sources.
    pub fn source_dir(&self, module: &str, version: &str) -> PathBuf {
        self.source_tree.join(format!("{module}-{version}"))
    }

    /// `<install_tree>/<kernel>`.
    pub fn kernel_dir(&self, kernel: &str) -> PathBuf {
        self.install_tree.join(kernel)
    }

    /// `<install_tree>/<kernel>/updates/dkms`: where DKMS modules go by default.
    pub fn kernel_dkms_dir(&self, kernel: &str) -> PathBuf {
        self.kernel_dir(kernel).join(DKMS_UPDATES)
    }

    /// `<install_tree>/<kernel>/updates`.
    pub fn kernel_updates_dir(&self, kernel: &str) -> PathBuf {
        self.kernel_dir(kernel).join(UPDATES)
    }

    /// `<install_tree>/<kernel>/modules.dep`: depmod's output (absent: never run).
    pub fn modules_dep(&self, kernel: &str) -> PathBuf {
        self.kernel_dir(kernel).join("modules.dep")
    }

    /// `<install_tree>/<kernel>/extra`: where older dkms versions put modules.
    pub fn kernel_extra_dir(&self, kernel: &str) -> PathBuf {
        self.kernel_dir(kernel).join(EXTRA)
    }

    /// `<install_tree>/<kernel>/build` unless `--kernelsourcedir` was given.
    pub fn kernel_source_dir(&self, kernel: &str) -> PathBuf {
        self.kernel_source_dir
            .clone()
            .unwrap_or_else(|| self.kernel_dir(kernel).join("build"))
    }

    /// The kernel config BUILD_EXCLUSIVE_CONFIG reads, preferring `auto.conf` as dkms does;
    /// `--config` (`Paths::kernel_config`) wins for every kernel, as with dkms.
    pub fn kernel_config(&self, kernel: &str) -> PathBuf {
        if let Some(config) = &self.kernel_config {
            return config.clone();
        }
        let source = self.kernel_source_dir(kernel);
        let auto = source.join("include/config/auto.conf");
        if auto.exists() {
            auto
        } else {
            source.join(".config")
        }
    }
}

/// One module version for one kernel and architecture: the unit dkms builds and
/// installs, and the node of the build plan.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct Target {
    pub module: ModuleName,
    pub version: ModuleVersion,
    pub kernel: KernelRelease,
    pub arch: Arch,
}

/// A kernel release and the architecture a module is built for it: what `-k K/A`
/// names, and what the per-kernel commands loop over.
pub type KernelArch = (KernelRelease, Arch);

impl Target {
    /// From names already validated where they entered, so a `Target` always joins
    /// onto a tree root as plain path components.
    pub fn new(
        module: &ModuleName,
        version: &ModuleVersion,
        kernel: &KernelRelease,
        arch: &Arch,
    ) -> Target {
        Target {
            module: module.clone(),
            version: version.clone(),
            kernel: kernel.clone(),
            arch: arch.clone(),
        }
    }

    /// Parses the four names where they enter as strings; fails naming the first
    /// that is not a plain path component.
    pub fn parse(
        module: &str,
        version: &str,
        kernel: &str,
        arch: &str,
    ) -> Result<Target, NameError> {
        Ok(Target {
            module: ModuleName::parse(module)?,
            version: ModuleVersion::parse(version)?,
            kernel: KernelRelease::parse(kernel)?,
            arch: Arch::parse(arch)?,
        })
    }

    /// `<dkms_tree>/<m>/<v>/<k>/<a>`: the finished build (`module/`, `log/`).
    pub fn build_dir(&self, paths: &Paths) -> PathBuf {
        paths.build_dir(&self.module, &self.version, &self.kernel, &self.arch)
    }

    /// `<dkms_tree>/<m>/<v>/<k>/<a>/module`: the built module files.
    pub fn modules_dir(&self, paths: &Paths) -> PathBuf {
        modules_of(&self.build_dir(paths))
    }

    /// `<dkms_tree>/<m>/<v>/source`.
    pub fn source_link(&self, paths: &Paths) -> PathBuf {
        paths.source_link(&self.module, &self.version)
    }

    /// `<dkms_tree>/<m>/<v>/build-<k>-<a>`: where the source is compiled. One per
    /// kernel and arch (upstream has one per version), so kernels build in parallel;
    /// its name does not look like a kernel release, so upstream's listing skips it.
    pub fn work_dir(&self, paths: &Paths) -> PathBuf {
        paths.version_dir(&self.module, &self.version).join(format!(
            "{WORK_DIR_PREFIX}{}",
            target_suffix(&self.kernel, &self.arch)
        ))
    }

    /// `<dkms_tree>/<m>/<v>/failed-<k>-<a>.json`: the failure record (failure.rs).
    /// No upstream glob matches it, and upstream's remove deletes it with the version.
    pub fn failure_record(&self, paths: &Paths) -> PathBuf {
        paths.version_dir(&self.module, &self.version).join(format!(
            "{FAILURE_PREFIX}{}{FAILURE_SUFFIX}",
            target_suffix(&self.kernel, &self.arch)
        ))
    }

    /// `<dkms_tree>/<m>/kernel-<k>-<a>`.
    pub fn install_link(&self, paths: &Paths) -> PathBuf {
        paths.install_link(&self.module, &self.kernel, &self.arch)
    }

    /// What the install link contains when this target is installed.
    pub fn install_link_target(&self) -> PathBuf {
        install_link_target(&self.version, &self.kernel, &self.arch)
    }

    /// `<dkms_tree>/<m>/original_module/<k>/<a>`.
    pub fn original_module_dir(&self, paths: &Paths) -> PathBuf {
        paths.original_module_dir(&self.module, &self.kernel, &self.arch)
    }
}

/// `<v>/<k>/<a>`: the install link's content, relative to `<dkms_tree>/<m>`.
pub fn install_link_target(version: &str, kernel: &str, arch: &str) -> PathBuf {
    Path::new(version).join(kernel).join(arch)
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}/{} for {} ({})",
            self.module, self.version, self.kernel, self.arch
        )
    }
}
