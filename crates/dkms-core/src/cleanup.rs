//! Leftovers of kernels that are gone: what DKMS put in their module directories and
//! what it keeps for them in the DKMS tree. Found here, listed by `dkms-hook cleanup`
//! and removed only with `--yes`.
//!
//! A kernel is gone when its install-tree directory has no modules tree (`kernel/` or
//! `modules.order`) any more: pacman removed the package but not the files DKMS added.

use crate::engine::{remove_path, EngineError};
use crate::host::Host;
use crate::kernel::Kernel;
use crate::tree::{self, SourceState};
use serde::Serialize;
use std::collections::BTreeSet;
use std::path::PathBuf;

/// One thing left behind for a kernel that is no longer installed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Leftover {
    pub kernel: String,
    pub path: PathBuf,
    pub what: &'static str,
}

fn installed(host: &Host, kernel: &str) -> bool {
    Kernel::probe(&host.paths, kernel).is_some_and(|k| k.has_modules)
}

/// Everything left behind for kernels that are gone, sorted by kernel and path.
pub fn leftovers(host: &Host) -> Vec<Leftover> {
    let mut found = BTreeSet::new();
    // Module directories of removed kernels that still hold DKMS's modules.
    if let Ok(entries) = std::fs::read_dir(&host.paths.install_tree) {
        for entry in entries.flatten() {
            let Ok(kernel) = entry.file_name().into_string() else {
                continue;
            };
            if installed(host, &kernel) {
                continue;
            }
            let dir = entry.path();
            if host.paths.kernel_dkms_dir(&kernel).exists()
                || host.paths.kernel_extra_dir(&kernel).exists()
            {
                found.insert(Leftover {
                    kernel,
                    path: dir,
                    what: "module directory of a removed kernel, holding DKMS modules",
                });
            }
        }
    }
    // DKMS tree entries for kernels that are gone.
    for mv in tree::module_versions(&host.paths, None, None) {
        if mv.source == SourceState::Unknown {
            continue;
        }
        for (kernel, arch) in tree::built_for(&host.paths, &mv.module, &mv.version, None, None) {
            if !installed(host, &kernel) {
                found.insert(Leftover {
                    kernel: kernel.to_string(),
                    path: tree::build_dir(&host.paths, &mv.module, &mv.version, &kernel, &arch),
                    what: "build for a removed kernel",
                });
            }
        }
        for (kernel, path, kind) in tree::kernel_entries(&host.paths, &mv.module, &mv.version) {
            if !installed(host, &kernel) {
                let what = match kind {
                    tree::KernelEntry::WorkDir => "work directory of a removed kernel",
                    tree::KernelEntry::FailureRecord => "failure record of a removed kernel",
                };
                found.insert(Leftover { kernel, path, what });
            }
        }
    }
    // Install links and archived originals of kernels that are gone.
    if let Ok(modules) = std::fs::read_dir(&host.paths.dkms_tree) {
        for module in modules.flatten().filter(|m| m.path().is_dir()) {
            for entry in std::fs::read_dir(module.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let name = entry.file_name().to_string_lossy().into_owned();
                if let Some(kernel) = tree::layout::parse_install_link_name(&name) {
                    if !installed(host, kernel) {
                        found.insert(Leftover {
                            kernel: kernel.to_string(),
                            path: entry.path(),
                            what: "install link of a removed kernel",
                        });
                    }
                }
            }
            for entry in std::fs::read_dir(tree::layout::original_modules_of(&module.path()))
                .into_iter()
                .flatten()
                .flatten()
            {
                let kernel = entry.file_name().to_string_lossy().into_owned();
                if !installed(host, &kernel) {
                    found.insert(Leftover {
                        kernel,
                        path: entry.path(),
                        what: "archived original modules of a removed kernel",
                    });
                }
            }
        }
    }
    // Build cache entries of kernels that are gone (the cache's bound).
    let cache = tree::layout::build_cache_dir(&host.paths.dkms_tree);
    if let Ok(entries) = std::fs::read_dir(&cache) {
        for entry in entries.flatten() {
            let kernel = entry.file_name().to_string_lossy().into_owned();
            if !installed(host, &kernel) {
                found.insert(Leftover {
                    kernel,
                    path: entry.path(),
                    what: "build cache entries of a removed kernel",
                });
            }
        }
    }
    found.into_iter().collect()
}

/// Removes one leftover (never following a symlink out of the trees), then the
/// directories it leaves empty inside the DKMS tree.
pub fn remove(host: &Host, leftover: &Leftover) -> Result<(), EngineError> {
    remove_path(host, &leftover.path)?;
    if let Some(parent) = leftover.path.parent() {
        if parent.starts_with(&host.paths.dkms_tree) {
            host.dkms_root()?
                .remove_empty_dirs(parent, &host.paths.dkms_tree);
        }
    }
    Ok(())
}
