//! `ldtarball`: a tarball made by `mktarball` (ours or upstream's) or a plain source
//! tarball with a dkms.conf, extracted safely (`extract`) and placed into the trees.

use super::extract::{check_links_stay_in, extract};
use super::{
    check_within, create_dir_within, is_real_dir, member_name, place_dir, remove_within,
    write_file, Loaded, LoadedSource,
};
use crate::conf;
use crate::engine::{self, io_err, AddSource, EngineError, Event, Progress, Silent};
use crate::fs::TEMP_PREFIX;
use crate::host::Host;
use crate::name::{Arch, KernelRelease};
use crate::tree::{self, KernelArch};
use std::collections::VecDeque;
use std::fs;
use std::path::{Path, PathBuf};

/// Loads a tarball, gzip, xz or zstd compressed or not; returns `(module, version)`.
/// See [`load_tarball_with`].
pub fn load_tarball(
    host: &Host,
    archive: &Path,
    force: bool,
) -> Result<(String, String), EngineError> {
    load_tarball_with(host, archive, force, &Silent).map(|l| (l.module, l.version))
}

/// Loads a tarball: extracts it safely into a private directory inside the DKMS tree,
/// puts the source at `<source_tree>/<m>-<v>` unless it is already there, places each
/// build at `<dkms_tree>/<m>/<v>/<k>/<a>` unless already there, then registers the
/// source as `add` does (running POST_ADD). The caller holds the tree lock.
///
/// `force` replaces an existing source and existing builds, and loads over an added
/// version. Fails, having placed nothing, when the archive is missing (exit 2),
/// unreadable or hostile (7, naming the member), has no usable dkms.conf (3 or 7, 8 if
/// it is invalid), the version is already added (8; 3 for a plain source tarball), or a
/// place it would write is reached through a symlinked directory (1).
pub fn load_tarball_with(
    host: &Host,
    archive: &Path,
    force: bool,
    progress: &dyn Progress,
) -> Result<Loaded, EngineError> {
    let paths = &host.paths;
    if fs::metadata(archive).is_err() {
        return Err(EngineError::ArchiveMissing {
            archive: archive.into(),
        });
    }
    if archive.extension().is_some_and(|e| e == "rpm") {
        return Err(EngineError::ArchiveIsRpm {
            archive: archive.into(),
        });
    }
    // The scratch dir sits in the DKMS tree, so what it holds is renamed, not copied,
    // into place; the tree's handle makes the root when it is missing.
    host.dkms_root()?;
    let temp = tempfile::Builder::new()
        .prefix(&format!("{TEMP_PREFIX}-ldtarball-"))
        .tempdir_in(&paths.dkms_tree)
        .map_err(io_err("cannot create a directory in", &paths.dkms_tree))?;
    let root = temp.path();
    extract(archive, root)?;

    // What the tarball holds: upstream's layout, or any tree with a dkms.conf.
    let main_tree = root.join("dkms_main_tree");
    let dkms_layout = is_real_dir(&main_tree);
    let builds = if dkms_layout {
        list_builds(&main_tree, progress)
    } else {
        Vec::new()
    };
    // dkms.conf is evaluated for the first kernel the tarball has a build for, else
    // (as upstream's `add_module` after loading) for the running kernel.
    let (eval_kernel, eval_arch) = match builds.first() {
        Some(first) => first.clone(),
        None => default_kernel(paths)?,
    };
    let ctx = host.eval_context("", "", &eval_kernel, &eval_arch);
    let evaluate = |conf_file: &Path| {
        conf::evaluate(conf_file, &ctx).map_err(|source| EngineError::ArchiveConf {
            archive: archive.into(),
            member: member_name(root, conf_file),
            source: Box::new(source),
        })
    };
    // The source directory, or (binaries only) the dkms.conf, and the parsed conf.
    let (payload, binaries_only, parsed) = if dkms_layout {
        let mut first_error = None;
        let parts = [("dkms_source_tree", false), ("dkms_binaries_only", true)];
        let found = parts.into_iter().find_map(|(dir, binaries_only)| {
            let (dir, conf_file) = (root.join(dir), root.join(dir).join("dkms.conf"));
            if !is_real_dir(&dir) || !conf_file.symlink_metadata().is_ok_and(|m| m.is_file()) {
                return None;
            }
            let payload = if binaries_only {
                conf_file.clone()
            } else {
                dir
            };
            let parsed = evaluate(&conf_file)
                .map_err(|e| first_error.get_or_insert(e))
                .ok()?;
            Some((payload, binaries_only, parsed))
        });
        let no_conf = || EngineError::ArchiveNoValidConf {
            archive: archive.into(),
        };
        found.ok_or_else(|| first_error.unwrap_or_else(no_conf))?
    } else {
        let conf_file = find_dkms_conf(root).ok_or_else(|| EngineError::ArchiveNoDkmsConf {
            archive: archive.into(),
        })?;
        let parsed = evaluate(&conf_file)?;
        (
            conf_file.parent().unwrap_or(root).to_path_buf(),
            false,
            parsed,
        )
    };
    let (module, version) = (parsed.package_name, parsed.package_version);
    progress.event(Event::LoadingTarball {
        module: &module,
        version: &version,
    });

    let link = paths.source_link(&module, &version);
    // A link to a directory (added), or a real directory (a binaries-only load, which
    // upstream 3.0 calls added).
    if link.is_dir() && !force {
        return Err(EngineError::ArchiveAlreadyAdded {
            module: module.into(),
            version: version.into(),
            dkms_layout,
        });
    }

    // Check everything before placing anything: a link that stays inside the
    // extraction root may still leave the part that is moved into place, and a place
    // reached through a symlinked directory is refused before anything changed.
    check_within(&paths.dkms_tree, &link)?;
    let source_dir = paths.source_dir(&module, &version);
    let place_source = !binaries_only && (force || source_dir.symlink_metadata().is_err());
    if place_source {
        check_links_stay_in(archive, root, &payload)?;
        check_within(&paths.source_tree, &source_dir)?;
    }
    let mut to_load = Vec::new();
    let mut skipped = Vec::new();
    for (kernel, arch) in builds {
        let dest = tree::build_dir(paths, &module, &version, &kernel, &arch);
        check_within(&paths.dkms_tree, &dest)?;
        if dest.symlink_metadata().is_ok() && !force {
            progress.event(Event::BuildExistsSkipped { dest: &dest });
            skipped.push((kernel, arch));
            continue;
        }
        let from = main_tree.join(&kernel).join(&arch);
        check_links_stay_in(archive, root, &from)?;
        to_load.push((kernel, arch, from, dest));
    }

    let source = if place_source {
        progress.event(Event::CopyingTarballSource { to: &source_dir });
        place_dir(&paths.source_tree, &payload, &source_dir)?;
        LoadedSource::Copied(source_dir.clone())
    } else if !binaries_only {
        progress.event(Event::KeepingExistingSource { dir: &source_dir });
        LoadedSource::KeptExisting(source_dir.clone())
    } else if source_dir.is_dir() {
        LoadedSource::KeptExisting(source_dir.clone())
    } else {
        progress.event(Event::CreatingSourceDir { dir: &link });
        if link.symlink_metadata().is_ok_and(|m| !m.is_dir()) {
            remove_within(&paths.dkms_tree, &link)?;
        }
        create_dir_within(&paths.dkms_tree, &link)?;
        let conf = fs::read(&payload).map_err(io_err("cannot read", &payload))?;
        write_file(&paths.dkms_tree, &link.join("dkms.conf"), &conf)?;
        LoadedSource::BinariesOnly(link.clone())
    };

    let mut loaded = Vec::new();
    for (kernel, arch, from, dest) in to_load {
        progress.event(Event::LoadingBuild { dest: &dest });
        place_dir(&paths.dkms_tree, &from, &dest)?;
        loaded.push((kernel, arch));
    }

    // Registration, as `add` does it (POST_ADD included).
    if let LoadedSource::Copied(dir) | LoadedSource::KeptExisting(dir) = &source {
        let points_here = match (link.canonicalize(), dir.canonicalize()) {
            (Ok(a), Ok(b)) => link.symlink_metadata().is_ok_and(|m| m.is_symlink()) && a == b,
            _ => false,
        };
        if !points_here {
            remove_within(&paths.dkms_tree, &link)?;
            let add = AddSource::ModuleVersion {
                module: module.clone(),
                version: version.clone(),
            };
            engine::add(
                host,
                &add,
                &eval_kernel,
                &eval_arch,
                &engine::Options::default(),
                progress,
            )?;
        }
    }
    drop(temp);
    Ok(Loaded {
        module: module.into(),
        version: version.into(),
        source,
        loaded,
        skipped,
    })
}

/// The `(kernel, arch)` directories under `dkms_main_tree`, sorted; only real
/// directories with UTF-8 names not starting with a dot (upstream's `*/*`).
/// The running kernel, else the newest installed one; fails when there is neither.
fn default_kernel(paths: &crate::paths::Paths) -> Result<KernelArch, EngineError> {
    let release = crate::kernel::running_release().or_else(|| {
        let newest = crate::kernel::installed_kernels(paths).into_iter().next();
        newest.map(|k| k.release)
    });
    match release {
        Some(release) => Ok((release, crate::kernel::default_arch_name())),
        None => Err(EngineError::NoKernelToBuild(crate::kernel::NotInstalled {
            kernel: "(the running kernel)".into(),
            dir: paths.install_tree.clone(),
            installed: Vec::new(),
        })),
    }
}

/// Build directories whose kernel or arch is no plain name are skipped, as the tree
/// listings skip them.
fn list_builds(main_tree: &Path, progress: &dyn Progress) -> Vec<KernelArch> {
    let subdirs = |dir: &Path| {
        let entries = fs::read_dir(dir).into_iter().flatten().flatten();
        let dirs = entries.filter(|e| e.file_type().is_ok_and(|t| t.is_dir()));
        let mut names: Vec<String> = dirs
            .filter_map(|e| {
                let name = e.file_name().into_string();
                let shown = dir.join(e.file_name());
                let warn = |_| progress.event(Event::IgnoredNonUtf8Name { path: &shown });
                name.map_err(warn).ok()
            })
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        names
    };
    let kernels = subdirs(main_tree).into_iter();
    let arches = |k: String| {
        let release = KernelRelease::parse(&k).ok();
        subdirs(&main_tree.join(&k))
            .into_iter()
            .filter_map(move |a| Some((release.clone()?, Arch::parse(&a).ok()?)))
    };
    kernels.flat_map(arches).collect()
}

/// The shallowest `dkms.conf` file under `root` (sorted by name within a level), not
/// looking through symlinks.
fn find_dkms_conf(root: &Path) -> Option<PathBuf> {
    let mut queue = VecDeque::from([root.to_path_buf()]);
    while let Some(dir) = queue.pop_front() {
        let mut entries: Vec<_> = fs::read_dir(&dir).ok()?.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        if let Some(conf) = entries
            .iter()
            .find(|e| e.file_name() == "dkms.conf" && e.file_type().is_ok_and(|t| t.is_file()))
        {
            return Some(conf.path());
        }
        queue.extend(
            entries
                .iter()
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path()),
        );
    }
    None
}
