//! `unbuild` and `remove`: take builds out of the DKMS tree (uninstalling first), and
//! a module version out of DKMS once nothing is left. The source under the source
//! tree is never deleted: it belongs to the package that installed it.

use super::{read_conf, require_added, uninstall, EngineError, Event, Options, Progress};
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
/// version itself when none is left, running POST_REMOVE as upstream does.
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
    let mut post_remove = None;
    for target in &targets {
        if post_remove.is_none() {
            post_remove = read_conf(host, target, options)
                .ok()
                .and_then(|c| c.post_remove);
        }
        unbuild(host, target, options, progress)?;
    }
    if tree::built_for(&host.paths, module, version, None, None).is_empty() {
        progress.event(Event::Removing { module, version });
        if let (Some(script), Some(target)) = (post_remove, targets.first()) {
            let source = host.paths.source_link(module, version);
            // Removing must work for an untrusted source too (that is how it goes
            // away); only its script is not run as root.
            let trusted = || match host.check_added_source(module, version) {
                Ok(()) => true,
                Err(e) => {
                    progress.event(Event::PostRemoveNotRun {
                        module,
                        version,
                        error: &e,
                    });
                    false
                }
            };
            if source.is_dir() && trusted() {
                // dkms ignores POST_REMOVE's exit status.
                match super::build::run_script(
                    host,
                    target,
                    "post_remove",
                    &script,
                    &source,
                    None,
                    progress,
                ) {
                    Err(EngineError::ScriptFailed { .. }) | Ok(()) => {}
                    Err(e) => return Err(e),
                }
            }
        }
        root.remove(&version_dir)?;
        root.remove_empty_dirs(&host.paths.module_dir(module), &host.paths.dkms_tree);
    }
    Ok(())
}
