//! `install` / `uninstall`: copy built modules into the kernel's module directory and
//! point the `kernel-<k>-<a>` link at the build, or undo that.
//!
//! Order matters for "nothing lost": the new version is built before anything is
//! touched; each file is renamed over the old one (never deleted first); modules of
//! the kernel that ours replace are archived under `original_module` and put back on
//! uninstall; the old version's leftovers are removed last.

use super::fsutil::{atomic_copy, atomic_symlink, remove_empty_dirs};
use super::{build, io_err, read_conf, require_added, EngineError, Options, Progress};
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
    host.check_added_source(&target.module, &target.version)?;
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    crate::kernel::require_installed(&host.paths, &target.kernel).map_err(EngineError::NoKernel)?;
    if target.is_installed(&host.paths) && !options.force {
        return Err(EngineError::AlreadyInstalled {
            target: Box::new(target.clone()),
        });
    }
    if !target.is_built(&host.paths) {
        build(host, target, options, progress)?;
    }
    let conf = read_conf(host, target, options)?;
    let source_dir = host
        .paths
        .version_dir(&target.module, &target.version)
        .join("source");
    if let Some(script) = &conf.pre_install {
        if let Err(e) = super::build::run_script(
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
            progress.warn(&format!("{e}; installing anyway (--force)"));
        }
    }

    let previous =
        tree::installed_version(&host.paths, &target.module, &target.kernel, &target.arch)
            .filter(|v| *v != target.version)
            .map(|v| Target::new(&target.module, &v, &target.kernel, &target.arch));
    let old_files = previous
        .as_ref()
        .map(|old| installed_files(host, old, options))
        .unwrap_or_default();
    let first_install = target.install_link(&host.paths).symlink_metadata().is_err();

    progress.step(&format!("Installing {target}"));
    let module_dir = target.build_dir(&host.paths).join("module");
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
        let dest = dest_dir.join(&file_name);
        // Any variant of the same module in that directory (other compression) goes
        // too, or modprobe would see two.
        let variants: Vec<PathBuf> = MODULE_SUFFIXES
            .iter()
            .map(|s| dest_dir.join(format!("{}{s}", spec.dest_name)))
            .filter(|p| p.exists())
            .collect();
        if first_install {
            for existing in variants.iter().filter(|p| !old_files.contains(p)) {
                archive_original(host, target, existing)?;
            }
        }
        atomic_copy(&built, &dest)?;
        for variant in variants.iter().filter(|p| **p != dest) {
            let _ = super::confined::remove_within(&host.paths.install_tree, variant);
        }
        progress.step(&format!("  -> {}", dest.display()));
        written.push(dest);
    }
    atomic_symlink(
        &target.install_link_target(),
        &target.install_link(&host.paths),
    )?;
    for stale in old_files.iter().filter(|f| !written.contains(f)) {
        let _ = super::confined::remove_within(&host.paths.install_tree, stale);
        if let Some(parent) = stale.parent() {
            remove_empty_dirs(parent, &kernel_dir);
        }
    }
    if let Some(script) = &conf.post_install {
        super::build::run_script(
            host,
            target,
            "post_install",
            script,
            &source_dir,
            None,
            progress,
        )?;
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
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    let module_dir = target.build_dir(&host.paths).join("module");
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
    let Ok(entries) = fs::read_dir(&module_dir) else {
        return Vec::new();
    };
    let names: Vec<_> = entries
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .filter(|n| n.to_string_lossy().contains(".ko"))
        .collect();
    let mut files = Vec::new();
    for name in &names {
        for location in &locations {
            let candidate = kernel_dir.join(location.trim_start_matches('/')).join(name);
            if candidate.is_file() && !files.contains(&candidate) {
                files.push(candidate);
            }
        }
    }
    files
}

/// Moves a kernel module ours replaces to `original_module/<k>/<a>/`, with a
/// `.origin` file naming where it came from, as upstream does.
fn archive_original(host: &Host, target: &Target, file: &Path) -> Result<(), EngineError> {
    let dir = target.original_module_dir(&host.paths);
    fs::create_dir_all(&dir).map_err(io_err("cannot create directory", &dir))?;
    let name = file
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    let archived = dir.join(&name);
    fs::copy(file, &archived).map_err(io_err("cannot archive", file))?;
    let mut origin = archived.clone().into_os_string();
    origin.push(".origin");
    fs::write(&origin, format!("{}\n", file.display()))
        .map_err(io_err("cannot write", PathBuf::from(&origin)))?;
    Ok(())
}

/// Removes `target`'s modules from the kernel, puts back any originals they replaced,
/// and removes the install link. Returns false when it was not installed.
pub fn uninstall(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<bool, EngineError> {
    if !target.is_installed(&host.paths) {
        return Ok(false);
    }
    let kernel_dir = host.paths.kernel_dir(&target.kernel);
    let files = installed_files(host, target, options);
    // Nothing is removed if any file is reached through a symlink out of the tree.
    super::confined::check_all(&host.paths.install_tree, &files)?;
    super::confined::check(
        &host.paths.dkms_tree,
        &target.original_module_dir(&host.paths),
    )?;
    progress.step(&format!("Uninstalling {target}"));
    for file in files {
        fs::remove_file(&file).map_err(io_err("cannot remove", &file))?;
        if let Some(parent) = file.parent() {
            remove_empty_dirs(parent, &kernel_dir);
        }
    }
    restore_originals(host, target)?;
    let link = target.install_link(&host.paths);
    fs::remove_file(&link).map_err(io_err("cannot remove", &link))?;
    Ok(true)
}

fn restore_originals(host: &Host, target: &Target) -> Result<(), EngineError> {
    let dir = target.original_module_dir(&host.paths);
    let Ok(entries) = fs::read_dir(&dir) else {
        return Ok(());
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
        atomic_copy(&path, &origin)?;
    }
    super::confined::remove_within(&host.paths.dkms_tree, &dir)?;
    if let Some(parent) = dir.parent() {
        remove_empty_dirs(parent, &host.paths.module_dir(&target.module));
    }
    Ok(())
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
    let kernel_dir = host.paths.kernel_dir(kernel);
    if options.no_depmod || !kernel_dir.join("modules.dep").exists() {
        return Ok(false);
    }
    let tree = &host.paths.install_tree;
    let mut command = Command::new("depmod", "update module dependency lists (kmod)");
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
            progress.warn(&format!(
                "depmod skipped for {kernel}: the install tree {} is not laid out as <root>/lib/modules",
                tree.display()
            ));
            return Ok(false);
        };
        command = command.arg("-b").arg(base.as_os_str());
    }
    progress.step(&format!("Running depmod for {kernel}"));
    command.arg("-a").arg(kernel).read()?;
    Ok(true)
}
