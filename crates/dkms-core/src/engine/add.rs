//! `add`: register a module source with DKMS (`<m>/<v>/source -> <source_tree>/<m>-<v>`).

use super::build::copy_tree;
use super::script::run_script;
use super::{EngineError, Event, Options, Progress};
use crate::conf;
use crate::host::Host;
use crate::name::{Arch, KernelRelease, ModuleName, ModuleVersion};
use crate::tree::Target;
use std::path::{Path, PathBuf};

/// What the user named to add.
#[derive(Debug, Clone)]
pub enum AddSource {
    /// `m/v` or `-m m -v v`: the source is already at `<source_tree>/<m>-<v>`.
    ModuleVersion {
        module: ModuleName,
        version: ModuleVersion,
    },
    /// A directory holding a dkms.conf, or the dkms.conf itself; copied into the
    /// source tree when it is elsewhere.
    Path(PathBuf),
}

/// Adds a module version; returns its `(module, version)`.
///
/// Fails when the source or its dkms.conf is missing or invalid, or the version is
/// already added (exit 3).
pub fn add(
    host: &Host,
    source: &AddSource,
    kernel: &KernelRelease,
    arch: &Arch,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(ModuleName, ModuleVersion), EngineError> {
    let (module, version, source_dir) = match source {
        AddSource::ModuleVersion { module, version } => {
            let dir = host.paths.source_dir(module, version);
            if !dir.is_dir() {
                return Err(EngineError::SourceMissing { dir });
            }
            host.check_source(&dir)?;
            (module.clone(), version.clone(), dir)
        }
        AddSource::Path(path) => {
            let dir = if path.file_name().is_some_and(|n| n == "dkms.conf") {
                path.parent().unwrap_or(Path::new(".")).to_path_buf()
            } else {
                path.clone()
            };
            if !dir.is_dir() {
                return Err(EngineError::SourceMissing { dir });
            }
            let conf_file = dir.join("dkms.conf");
            if !conf_file.is_file() {
                return Err(EngineError::NoDkmsConf { dir });
            }
            // Before anything is evaluated or copied (a copy keeps the owners).
            host.check_source(&dir)?;
            // The names come from the dkms.conf itself, not from the directory name:
            // `foo-bar-1.0` is ambiguous, PACKAGE_NAME is not.
            let ctx = host.eval_context("", "", kernel, arch);
            let parsed = conf::evaluate(&conf_file, &ctx)?;
            let (module, version) = (parsed.package_name, parsed.package_version);
            let wanted = host.paths.source_dir(&module, &version);
            let same = match (dir.canonicalize(), wanted.canonicalize()) {
                (Ok(a), Ok(b)) => a == b,
                _ => false,
            };
            if !same {
                if host.paths.source_link(&module, &version).exists() {
                    return Err(EngineError::AlreadyAdded {
                        module: module.into(),
                        version: version.into(),
                    });
                }
                progress.event(Event::CopyingSource {
                    from: &dir,
                    to: &wanted,
                });
                // Staged next to its place and renamed in, so a killed run leaves
                // no half copy under the real name; the next add sweeps the rest.
                let sources = host.source_root()?;
                sources.sweep_dir(&host.paths.source_tree)?;
                let staged = crate::fs::staging_path(&wanted);
                copy_tree(sources, &dir, &staged)?;
                sources.replace_dir(&staged, &wanted)?;
            }
            (module, version, wanted)
        }
    };

    let link = host.paths.source_link(&module, &version);
    if link.symlink_metadata().is_ok() {
        return Err(EngineError::AlreadyAdded {
            module: module.into(),
            version: version.into(),
        });
    }
    // Validate before touching the tree: a bad dkms.conf adds nothing.
    let target = Target::new(&module, &version, kernel, arch);
    let conf_file = options
        .conf_override
        .clone()
        .unwrap_or_else(|| source_dir.join("dkms.conf"));
    let ctx = host.eval_context(&module, &version, kernel, arch);
    let parsed = conf::evaluate(&conf_file, &ctx)?;
    super::note_no_modules(&parsed, progress);
    for d in &parsed.deprecations {
        progress.event(Event::Deprecated {
            file: &conf_file,
            directive: &d.directive,
            advice: &d.advice,
        });
    }

    let absolute = source_dir.canonicalize().unwrap_or(source_dir.clone());
    host.dkms_root()?.create_symlink(&absolute, &link)?;
    progress.event(Event::LinkedSource {
        link: &link,
        target: &absolute,
    });
    if let Some(script) = &parsed.post_add {
        run_script(
            host,
            &target,
            "post_add",
            script,
            &source_dir,
            None,
            progress,
        )?;
    }
    Ok((module, version))
}
