//! `unbuild` and `remove`: take builds out of the DKMS tree (uninstalling first), and
//! a module version out of DKMS once nothing is left. The source under the source
//! tree is never deleted: it belongs to the package that installed it.

use super::{require_added, uninstall, EngineError, Event, Options, Progress};
use crate::host::Host;
use crate::name::{ModuleName, ModuleVersion};
use crate::tree::{self, KernelArch, Target};

/// Uninstalls (if installed) and deletes one build. Returns false when there was no
/// build for that kernel.
pub fn unbuild(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<bool, EngineError> {
    let root = host.dkms_root()?;
    let dir = target.build_dir(&host.paths);
    let work = target.work_dir(&host.paths);
    // Refuse before uninstalling anything: a symlink on the way out of the tree.
    root.check(&dir)?;
    root.check(&work)?;
    uninstall(host, target, options, progress)?;
    if !dir.exists() {
        return Ok(false);
    }
    progress.event(Event::Unbuilding { target });
    root.remove(&dir)?;
    root.remove(&work)?;
    super::shared_build::settle(host, target)?;
    if let Some(kernel_dir) = dir.parent() {
        root.remove_empty_dirs(
            kernel_dir,
            &host.paths.version_dir(&target.module, &target.version),
        );
    }
    Ok(true)
}

/// Removes the given builds of `module/version` (every build with `all`), then the
/// version itself when none is left (POST_REMOVE runs in each uninstall).
pub fn remove(
    host: &Host,
    module: &ModuleName,
    version: &ModuleVersion,
    kernels: &[KernelArch],
    all: bool,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    // First, so that a removal interrupted after the version went leaves nothing.
    let root = host.dkms_root()?;
    root.sweep_module(&host.paths.module_dir(module))?;
    if let Err(e) = require_added(host, module, version) {
        // A broken version can still be removed: that is how a user fixes it.
        if !matches!(e, EngineError::Broken { .. }) {
            return Err(e);
        }
    }
    let targets: Vec<Target> = if all {
        tree::built_for(&host.paths, module, version, None, None)
            .into_iter()
            .map(|(k, a)| Target::new(module, version, &k, &a))
            .collect()
    } else {
        kernels
            .iter()
            .map(|(k, a)| Target::new(module, version, k, a))
            .collect()
    };
    let version_dir = host.paths.version_dir(module, version);
    root.check(&version_dir)?;
    for target in &targets {
        unbuild(host, target, options, progress)?;
    }
    if tree::built_for(&host.paths, module, version, None, None).is_empty() {
        progress.event(Event::Removing { module, version });
        root.remove(&version_dir)?;
        root.remove_empty_dirs(&host.paths.module_dir(module), &host.paths.dkms_tree);
    }
    Ok(())
}
