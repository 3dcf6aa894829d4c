//! `install` / `uninstall`: copy built modules into the kernel's module directory and
//! point the `kernel-<k>-<a>` link at the build, or undo that.
//!
//! Order matters for "nothing lost": the new version is built before anything is
//! touched; each file is renamed over the old one (never deleted first); modules of
//! the kernel that ours replace are archived under `original_module` and put back on
//! uninstall; the old version's leftovers are removed last.
//!
//! Every step can be repeated after a kill: the install link is switched last, an
//! archive is made once (and never of our own module), and uninstall puts originals
//! back over ours before it drops the link, the archive only after.

use super::build::discard_stale_work_dir;
use super::{build, io_err, read_conf, require_added, EngineError, Event, Options, Progress};
use crate::exec::Command;
use crate::host::Host;
use crate::tree::{self, Target, MODULE_SUFFIXES};
use std::fs;
use std::path::{Path, PathBuf};

/// Installs `target`, building it first if needed. Another installed version of the
/// module for the same kernel is replaced only once this one has built. Does not run
/// depmod: callers run [`depmod`] once per kernel after all installs.
pub fn install(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    require_added(host, &target.module, &target.version)?;
    super::prepare_target(host, target)?;
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    crate::kernel::require_installed(&host.paths, &target.kernel).map_err(EngineError::NoKernel)?;
    if target.is_installed(&host.paths) && !options.force {
        return Err(EngineError::AlreadyInstalled {
            target: Box::new(target.clone()),
        });
    }
    // Nothing is written or deleted through a symlink out of the trees.
    let dkms_root = host.dkms_root()?;
    dkms_root.check(&target.original_module_dir(&host.paths))?;
    if target.is_built(&host.paths) {
        discard_stale_work_dir(host, target)?;
    } else {
        build(host, target, options, progress)?;
    }
    let conf = read_conf(host, target, options)?;
    super::note_no_modules(&conf, progress);
    let source_dir = target.source_link(&host.paths);
    if let Some(script) = &conf.pre_install {
        if let Err(e) = super::script::run_script(
            host,
            target,
            "pre_install",
            script,
            &source_dir,
            None,
            progress,
        ) {
            if !options.force {
                return Err(EngineError::PreInstallFailed {
                    target: Box::new(target.clone()),
                    status: e.to_string(),
                });
            }
            progress.event(Event::InstallingDespitePreInstall { error: &e });
        }
    }

    let previous =
        tree::installed_version(&host.paths, &target.module, &target.kernel, &target.arch)
            .filter(|v| *v != target.version)
            .map(|version| Target {
                version,
                ..target.clone()
            });
    let old_files = previous
        .as_ref()
        .map(|old| installed_files(host, old, options))
        .unwrap_or_default();
    let first_install = target.install_link(&host.paths).symlink_metadata().is_err();

    // The force-install list (upstream's force_installation), per module name.
    let tokens = super::version_check::force_list(&host.paths.force_install_dir);
    let listed_force = tokens.iter().any(|t| *t == target.module);
    let listed_override = tokens.contains(&format!("{}_version-override", target.module));
    if listed_force || listed_override {
        let version_override = listed_override;
        progress.event(Event::ForcedByList {
            target,
            version_override,
        });
    }
    let force = options.force || listed_force;
    let compare = !(options.force_version_override || listed_override);
    let install_root = host.install_root()?;
    progress.event(Event::Installing { target });
    let module_dir = target.modules_dir(&host.paths);
    let mut written = Vec::new();
    for spec in conf.modules.iter().filter(|m| m.excluded.is_none()) {
        let Some(built) = built_file(&module_dir, &spec.dest_name) else {
            return Err(EngineError::ModulesMissing {
                target: Box::new(target.clone()),
                missing: vec![format!("{}.ko", spec.dest_name)],
                log: target.build_dir(&host.paths).join("log/make.log"),
            });
        };
        let file_name = built
            .file_name()
            .map(|n| n.to_os_string())
            .unwrap_or_default();
        let dest_dir = kernel_dir.join(spec.dest_location.trim_start_matches('/'));
        install_root.check(&dest_dir)?;
        install_root.sweep_dir(&dest_dir)?;
        let dest = dest_dir.join(&file_name);
        if compare && !force {
            let mut ours = old_files.clone();
            if !first_install {
                ours.extend(installed_files(host, target, options));
            }
            let found = super::version_check::find_module(&kernel_dir, &spec.dest_name, &ours);
            let refusal = found.and_then(|f| super::version_check::check(&f, &built));
            // The same module at our own destination is this version's file from an
            // interrupted install whose link never came: installing it again converges.
            let own_leftover = matches!(
                &refusal,
                Some(super::version_check::Refusal::Same { found, .. })
                    if found.parent() == Some(dest_dir.as_path())
            );
            if let Some(refusal) = refusal.filter(|_| !own_leftover) {
                let module = spec.dest_name.as_str();
                progress.event(Event::ModuleNotReplaced {
                    target,
                    module,
                    refusal: &refusal,
                });
                continue;
            }
        }
        // Any variant of the same module in that directory (other compression) goes
        // too, or modprobe would see two.
        let variants: Vec<PathBuf> = MODULE_SUFFIXES
            .iter()
            .map(|s| dest_dir.join(format!("{}{s}", spec.dest_name)))
            .filter(|p| p.exists())
            .collect();
        // A same-named module elsewhere in the kernel's tree (upstream's find_module)
        // is archived and moved away once ours is in place, or modprobe could load it.
        let mut moved_away = None;
        if first_install {
            for existing in variants.iter().filter(|p| !old_files.contains(p)) {
                archive_original(host, target, existing, &built)?;
            }
            if variants.iter().all(|p| old_files.contains(p)) {
                let elsewhere =
                    super::version_check::find_module(&kernel_dir, &spec.dest_name, &old_files);
                if let Some(elsewhere) =
                    elsewhere.filter(|e| e.parent() != Some(dest_dir.as_path()))
                {
                    archive_original(host, target, &elsewhere, &built)?;
                    moved_away = Some(elsewhere);
                }
            }
        }
        if host.settings.symlink_modules == Some(true) {
            // framework.conf's symlink_modules: upstream's `cp -f -s`, an absolute
            // link into the DKMS tree's build, replaced atomically like a copy.
            install_root.symlink(&built, &dest)?;
        } else {
            install_root.copy(&built, &dest)?;
        }
        for variant in variants.iter().filter(|p| **p != dest) {
            let _ = install_root.remove(variant);
        }
        if let Some(original) = moved_away {
            install_root.remove(&original)?;
        }
        progress.event(Event::Installed {
            target,
            path: &dest,
        });
        written.push(dest);
    }
    if written.is_empty() && conf.modules.iter().any(|m| m.excluded.is_none()) {
        return Err(EngineError::NothingInstalled {
            target: Box::new(target.clone()),
        });
    }
    dkms_root.symlink(
        &target.install_link_target(),
        &target.install_link(&host.paths),
    )?;
    for stale in old_files.iter().filter(|f| !written.contains(f)) {
        let _ = install_root.remove(stale);
        if let Some(parent) = stale.parent() {
            install_root.remove_empty_dirs(parent, &kernel_dir);
        }
    }
    if let Some(script) = &conf.post_install {
        // dkms ignores POST_INSTALL's exit status: the module is installed.
        match super::script::run_script(
            host,
            target,
            "post_install",
            script,
            &source_dir,
            None,
            progress,
        ) {
            Err(EngineError::ScriptFailed { .. }) | Ok(()) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// The built module file for `name` in a build's `module/` dir, whatever its suffix.
fn built_file(module_dir: &Path, name: &str) -> Option<PathBuf> {
    MODULE_SUFFIXES
        .iter()
        .map(|s| module_dir.join(format!("{name}{s}")))
        .find(|p| p.is_file())
}

/// Where the modules of an installed target are in the install tree: each built file
/// name at the dkms.conf's install location (or, when the dkms.conf cannot be read
/// any more, at the distribution's default location).
fn installed_files(host: &Host, target: &Target, options: &Options) -> Vec<PathBuf> {
    let module_dir = target.modules_dir(&host.paths);
    let dirs = install_dirs(host, target, options);
    let Ok(entries) = fs::read_dir(&module_dir) else {
        return Vec::new();
    };
    let names: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().contains(".ko"))
        .collect();
    let mut files = Vec::new();
    for name in &names {
        for dir in &dirs {
            let candidate = dir.join(name);
            if candidate.is_file() && !files.contains(&candidate) {
                files.push(candidate);
            }
        }
    }
    files
}

/// Copies a kernel module ours replaces to `original_module/<k>/<a>/`, with a
/// `.origin` file naming where it came from, as upstream does.
///
/// After an interrupted install the same step runs again, so it must not archive
/// twice: an existing archive (complete, since it is written atomically, and written
/// after its `.origin`) is the original and is kept, and a file byte-identical to
/// `ours` (the build being installed) is our own copy, not an original.
fn archive_original(
    host: &Host,
    target: &Target,
    file: &Path,
    ours: &Path,
) -> Result<(), EngineError> {
    let dir = target.original_module_dir(&host.paths);
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let archived = dir.join(&name);
    if archived.exists() {
        return Ok(());
    }
    let bytes = fs::read(file).map_err(io_err("cannot archive", file))?;
    if fs::read(ours).is_ok_and(|built| built == bytes) {
        return Ok(());
    }
    let mut origin = archived.clone().into_os_string();
    origin.push(".origin");
    let root = host.dkms_root()?;
    root.write(
        Path::new(&origin),
        format!("{}\n", file.display()).as_bytes(),
        0o644,
    )?;
    Ok(root.write(&archived, &bytes, 0o644)?)
}

/// Removes `target`'s modules from the kernel, puts back any originals they replaced,
/// and removes the install link. Returns false when it was not installed.
///
/// Originals are copied back over ours (the path is never empty in between) before
/// the link goes, and the archive only after it: a run killed before the link went
/// does it all again, one killed after finds no link but an archive, and finishes by
/// putting the originals back (again) and dropping the archive.
pub fn uninstall(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<bool, EngineError> {
    let dkms_root = host.dkms_root()?;
    dkms_root.sweep_module(&host.paths.module_dir(&target.module))?;
    dkms_root.check(&target.original_module_dir(&host.paths))?;
    let link = target.install_link(&host.paths);
    if !target.is_installed(&host.paths) {
        if link.symlink_metadata().is_err() {
            // Nothing of the module is installed for this kernel: an archive (or
            // its emptied directories) is what an interrupted run left.
            restore_originals(host, target)?;
            drop_archive(host, target)?;
        }
        return Ok(false);
    }
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    let dirs = install_dirs(host, target, options);
    // Nothing is removed if any file is reached through a symlink out of the trees.
    let install_root = host.install_root()?;
    install_root.check_all(&installed_files(host, target, options))?;
    install_root.check_all(&dirs)?;
    dkms_root.check(&target.original_module_dir(&host.paths))?;
    progress.event(Event::Uninstalling { target });
    for dir in &dirs {
        install_root.sweep_dir(dir)?;
    }
    let originals = restore_originals(host, target)?;
    for file in installed_files(host, target, options) {
        if !originals.contains(&file) {
            progress.event(Event::Uninstalled {
                target,
                path: &file,
            });
            install_root.remove(&file)?;
        }
    }
    // Also the directories an interrupted run already emptied.
    for dir in &dirs {
        install_root.remove_empty_dirs(dir, &kernel_dir);
    }
    dkms_root.remove(&link)?;
    drop_archive(host, target)?;
    post_remove(host, target, options, progress)?;
    Ok(true)
}

/// Runs the dkms.conf's POST_REMOVE after one uninstall, as upstream does on each
/// (its exit status ignored). Uninstalling must work for an untrusted source too
/// (that is how it goes away); only its script is not run as root.
fn post_remove(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let Some(script) = read_conf(host, target, options)
        .ok()
        .and_then(|c| c.post_remove)
    else {
        return Ok(());
    };
    let (module, version) = (&target.module, &target.version);
    let source = host.paths.source_link(module, version);
    if !source.is_dir() {
        return Ok(());
    }
    if let Err(error) = host.check_added_source(module, version) {
        progress.event(Event::PostRemoveNotRun {
            module,
            version,
            error: &error,
        });
        return Ok(());
    }
    match super::script::run_script(
        host,
        target,
        "post_remove",
        &script,
        &source,
        None,
        progress,
    ) {
        Err(EngineError::ScriptFailed { .. }) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

/// The directories `target`'s modules are installed in (by its dkms.conf, or the
/// distribution's default location when that cannot be read).
fn install_dirs(host: &Host, target: &Target, options: &Options) -> Vec<PathBuf> {
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    let locations: Vec<String> = match read_conf(host, target, options) {
        Ok(conf) => conf
            .modules
            .iter()
            .map(|m| m.dest_location.clone())
            .collect(),
        Err(_) => vec![host
            .dest_location_override
            .clone()
            .unwrap_or_else(|| "/updates/dkms".into())],
    };
    let mut dirs: Vec<PathBuf> = locations
        .iter()
        .map(|l| kernel_dir.join(l.trim_start_matches('/')))
        .collect();
    dirs.dedup();
    dirs
}

/// Removes the archive of originals, and `original_module/` when it is empty.
fn drop_archive(host: &Host, target: &Target) -> Result<(), EngineError> {
    let dir = target.original_module_dir(&host.paths);
    let root = host.dkms_root()?;
    root.remove(&dir)?;
    root.remove_empty_dirs(&dir, &host.paths.module_dir(&target.module));
    Ok(())
}

/// Copies every archived original back to where it came from (atomically, over our
/// module if that is still there). Returns the paths restored.
fn restore_originals(host: &Host, target: &Target) -> Result<Vec<PathBuf>, EngineError> {
    let dir = target.original_module_dir(&host.paths);
    let mut restored = Vec::new();
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(restored);
    };
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|e| e == "origin") {
            continue;
        }
        let mut origin_file = path.clone().into_os_string();
        origin_file.push(".origin");
        let Ok(origin) = fs::read_to_string(&origin_file) else {
            continue;
        };
        let origin = PathBuf::from(origin.trim_end());
        // Only ever restore into this kernel's directory, whatever the file says.
        if !origin.starts_with(&kernel_dir)
            || origin
                .components()
                .any(|c| c == std::path::Component::ParentDir)
        {
            continue;
        }
        host.install_root()?.copy(&path, &origin)?;
        restored.push(origin);
    }
    Ok(restored)
}

/// Runs depmod for one kernel, on the install tree we were given (never on the real
/// /lib/modules when the tree was relocated). Skipped with `--no-depmod`, or when
/// the kernel has no `modules.dep` (not a booted kernel's tree). Returns whether it ran.
pub fn depmod(
    host: &Host,
    kernel: &str,
    options: &Options,
    progress: &dyn Progress,
) -> Result<bool, EngineError> {
    if options.no_depmod || !(options.depmod_always || host.paths.modules_dep(kernel).exists()) {
        return Ok(false);
    }
    let tree = &host.paths.install_tree;
    let mut command = Command::new("depmod", "update module dependency lists (kmod)");
    let mut root = Path::new("/");
    if tree != Path::new("/lib/modules") && tree != Path::new("/usr/lib/modules") {
        // depmod -b ROOT works on ROOT/lib/modules/<k>: only possible when the install
        // tree has that shape.
        let base = tree
            .parent()
            .and_then(Path::parent)
            .filter(|_| tree.ends_with("lib/modules"));
        let base = base.filter(|b| {
            let (a, b) = (b.join("lib/modules").canonicalize(), tree.canonicalize());
            matches!((a, b), (Ok(a), Ok(b)) if a == b)
        });
        let Some(base) = base else {
            progress.event(Event::DepmodSkipped {
                kernel,
                install_tree: tree,
            });
            return Ok(false);
        };
        command = command.arg("-b").arg(base.as_os_str());
        root = base;
    }
    let system_map = tree::layout::system_map(root, kernel);
    if system_map.is_file() {
        command = command.arg("-F").arg(system_map.as_os_str());
    }
    progress.event(Event::RunningDepmod { kernel });
    command.arg("-a").arg(kernel).read()?;
    Ok(true)
}
