//! The pre-flight: before pacman installs a kernel (or its headers), build every
//! AUTOINSTALL module for it from the incoming headers package, so that a module the
//! machine needs to boot that cannot be built stops the transaction while nothing has
//! changed yet. What `hooks/60-dkms-preflight.hook` runs (PreTransaction,
//! `AbortOnFail`).
//!
//! Each incoming kernel's build tree is unpacked from its package file (see
//! `headers_package`) into a private scratch directory, which also holds a scratch
//! DKMS tree registering the newest added version of every module (their `source`
//! links point at the real sources, checked by the same trust gate) and a scratch
//! install tree. The same planner and engine then build there, in dependency order,
//! with the same jobserver and failure rules as the post-transaction hook. Nothing in
//! the real DKMS tree or install tree changes. A module whose new source arrives in
//! this same transaction is left to the post-transaction hook: its new version is not
//! on disk yet, and building the old one could refuse an upgrade that fixes it.
//!
//! The decision: a failure (or a headers package that cannot be found or unpacked)
//! that touches a boot-critical module (see `boot_critical`) aborts, unless the
//! `allow_boot_critical_failure` setting or the caller's override says go on; every
//! other failure is a warning, and the post-transaction hook tries again.

use super::boot_critical::{BootCritical, Why};
use super::headers_package::{self, HeadersPackageError, PackageSources};
use super::targets;
use crate::commands::{Failure, Outcomes};
use crate::engine::{self, Options, Progress};
use crate::exit::Exit;
use crate::host::Host;
use crate::name::{Arch, KernelRelease};
use crate::paths::Paths;
use crate::plan::{self, Selection};
use crate::tree::{self, SourceState, Target};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What the caller knows beyond the host: where the package files are, and whether
/// the user asked to go on despite a boot-critical failure (the binary reads the
/// environment variable).
#[derive(Debug, Clone, Default)]
pub struct PreflightRequest {
    pub packages: PackageSources,
    /// `DKMS_HOOK_ALLOW_BOOT_CRITICAL_FAILURE=1` (or the setting): warn, do not abort.
    pub allow_boot_critical_failure: bool,
}

/// One thing the pre-flight found wrong.
#[derive(Debug)]
pub enum PreflightProblem {
    /// The headers of an incoming kernel cannot be had; `critical` are the
    /// boot-critical AUTOINSTALL modules that therefore cannot be checked.
    Headers {
        kernel: String,
        error: HeadersPackageError,
        critical: Vec<(String, Why)>,
    },
    /// A module did not build for an incoming kernel. When it is boot-critical, the
    /// `log` (in `failure`) lies in the kept scratch directory; otherwise the scratch
    /// directory is gone and the post-transaction hook builds it again.
    Target {
        target: Target,
        failure: Failure,
        critical: Option<Why>,
    },
    /// The scratch directory could not be set up.
    Scratch { kernel: String, error: String },
}

impl PreflightProblem {
    /// Whether this problem concerns a boot-critical module.
    pub fn is_critical(&self) -> bool {
        match self {
            PreflightProblem::Headers { critical, .. } => !critical.is_empty(),
            PreflightProblem::Target { critical, .. } => critical.is_some(),
            PreflightProblem::Scratch { .. } => false,
        }
    }
}

/// What the pre-flight did, and its verdict.
#[derive(Debug, Default)]
pub struct PreflightReport {
    /// The incoming kernels checked.
    pub kernels: Vec<String>,
    /// The headers package file used for each kernel.
    pub packages: Vec<(String, PathBuf)>,
    /// Targets that built (in the scratch trees).
    pub built: Vec<Target>,
    /// Modules left to the post-transaction hook: their new source arrives now.
    pub deferred: Vec<String>,
    pub problems: Vec<PreflightProblem>,
    /// Kept scratch directories holding failed builds' logs.
    pub kept: Vec<PathBuf>,
    /// The transaction must not go on.
    pub abort: bool,
    /// A boot-critical failure that would abort, let through by the override.
    pub overridden: bool,
}

impl PreflightReport {
    /// Failure (pacman aborts the transaction, the hook has `AbortOnFail`) only when
    /// a boot-critical module is affected and not overridden.
    pub fn exit(&self) -> Exit {
        if self.abort {
            Exit::Failure
        } else {
            Exit::Success
        }
    }
}

/// The pre-flight for pacman's target lines `input` (see the module docs). `kernel`
/// is the running kernel.
pub fn preflight(
    host: &Host,
    input: &[u8],
    request: &PreflightRequest,
    options: &Options,
    progress: &dyn Progress,
) -> PreflightReport {
    let changes = targets::parse_targets(input);
    let mut report = PreflightReport::default();
    if host.settings.preflight == Some(false) {
        return report;
    }
    let incoming: BTreeSet<String> = changes
        .headers
        .iter()
        .chain(&changes.kernels)
        .cloned()
        .collect();
    if incoming.is_empty() {
        return report;
    }
    let critical = BootCritical::detect(host);
    let arch = crate::kernel::default_arch();
    let newest = plan::newest_versions(host);
    let arriving: Vec<String> = changes
        .sources
        .iter()
        .filter_map(|dir| dir.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    // A source arriving now (`usr/src/<module>-<version>`) replaces that module.
    let deferred: BTreeSet<String> = newest
        .keys()
        .filter(|m| arriving.iter().any(|dir| dir.starts_with(&format!("{m}-"))))
        .map(|m| m.to_string())
        .collect();
    report.deferred = deferred.iter().cloned().collect();
    for kernel in &incoming {
        report.kernels.push(kernel.clone());
        let critical_here = || {
            newest
                .iter()
                .filter(|(m, _)| !deferred.contains(m.as_str()))
                .filter_map(|(m, v)| {
                    let conf = host.read_conf(m, v, kernel, arch).ok()?;
                    if !conf.autoinstall {
                        return None;
                    }
                    let built = conf.modules.iter().map(|s| s.built_name.as_str());
                    critical.why(m, built).map(|w| (m.to_string(), w.clone()))
                })
                .collect::<Vec<_>>()
        };
        let scratch = match Scratch::new(host, kernel) {
            Ok(s) => s,
            Err(error) => {
                report.problems.push(PreflightProblem::Scratch {
                    kernel: kernel.clone(),
                    error,
                });
                continue;
            }
        };
        // The incoming headers, or the installed ones when only the kernel changes.
        let installed_headers = host.paths.kernel_source_dir(kernel);
        let headers =
            if changes.headers.contains(kernel) || !installed_headers.join("include").is_dir() {
                let found = headers_package::find(kernel, &request.packages).and_then(|file| {
                    headers_package::extract_build_tree(&file, kernel, scratch.path())?;
                    Ok(file)
                });
                match found {
                    Ok(file) => {
                        report.packages.push((kernel.clone(), file));
                        None
                    }
                    Err(error) => {
                        let critical = critical_here();
                        report.problems.push(PreflightProblem::Headers {
                            kernel: kernel.clone(),
                            error,
                            critical,
                        });
                        continue;
                    }
                }
            } else {
                Some(installed_headers)
            };
        let built = build_for(
            host,
            &scratch,
            kernel,
            arch,
            headers,
            &deferred,
            &critical,
            options,
            progress,
            &mut report,
        );
        if let Err(error) = built {
            report.problems.push(PreflightProblem::Scratch {
                kernel: kernel.clone(),
                error,
            });
        }
        // A boot-critical failure's log is kept for the user to read; the others
        // are built again after the transaction, with their log in the DKMS tree.
        let critical_failed = report.problems.iter().any(|p| {
            matches!(p, PreflightProblem::Target { target, critical: Some(_), .. } if target.kernel == *kernel)
        });
        if let Some(kept) = scratch.finish(critical_failed) {
            report.kept.push(kept);
        }
    }
    let critical_failure = report.problems.iter().any(PreflightProblem::is_critical);
    let allowed = request.allow_boot_critical_failure
        || host.settings.allow_boot_critical_failure == Some(true);
    report.abort = critical_failure && !allowed;
    report.overridden = critical_failure && allowed;
    report
}

/// Registers the newest module versions in the scratch DKMS tree and builds every
/// AUTOINSTALL one for `kernel` there, recording outcomes in `report`.
#[allow(clippy::too_many_arguments)]
fn build_for(
    host: &Host,
    scratch: &Scratch,
    kernel: &str,
    arch: &str,
    headers: Option<PathBuf>,
    deferred: &BTreeSet<String>,
    critical: &BootCritical,
    options: &Options,
    progress: &dyn Progress,
    report: &mut PreflightReport,
) -> Result<(), String> {
    let mut paths = Paths {
        dkms_tree: scratch.path().join("dkms"),
        install_tree: scratch.install_tree(),
        ..host.paths.clone()
    };
    // Unpacked headers sit where the scratch install tree expects them.
    paths.kernel_source_dir = headers;
    std::fs::create_dir_all(paths.kernel_dir(kernel))
        .map_err(|e| format!("cannot make {}: {e}", paths.kernel_dir(kernel).display()))?;
    let mut scratch_host = Host::new(paths, host.settings.clone());
    scratch_host.directives = host.directives.clone();
    scratch_host.caller_env = host.caller_env.clone();
    if host.trust.is_none() {
        scratch_host.trust = None;
    }
    // What the pre-flight builds goes into the real build cache, signed with the real
    // key pair (so its cache key and signature are those of the real build).
    scratch_host.build_cache = host.build_cache.clone();
    let settings = &mut scratch_host.settings;
    settings.signing_key = Some(signing_path(host, &host.settings.signing_key, "mok.key"));
    settings.signing_certificate = Some(signing_path(
        host,
        &host.settings.signing_certificate,
        "mok.pub",
    ));
    let root = scratch_host.dkms_root().map_err(|e| e.to_string())?;
    for (module, version) in plan::newest_versions(host) {
        if deferred.contains(module.as_str()) {
            continue;
        }
        let real = host.paths.source_link(&module, &version);
        let Ok(source) = std::fs::read_link(&real) else {
            continue;
        };
        let source = if source.is_relative() {
            real.parent().unwrap_or(Path::new("/")).join(source)
        } else {
            source
        };
        let link = scratch_host.paths.source_link(&module, &version);
        if let Some(parent) = link.parent() {
            root.create_dir_all(parent).map_err(|e| e.to_string())?;
        }
        root.symlink(&source, &link).map_err(|e| e.to_string())?;
    }
    debug_assert!(tree::module_versions(&scratch_host.paths, None, None)
        .iter()
        .all(|mv| mv.source == SourceState::Added));
    let kernels = [(
        KernelRelease::parse(kernel).map_err(|e| e.to_string())?,
        Arch::parse(arch).map_err(|e| e.to_string())?,
    )];
    let planned = plan::plan(&scratch_host, &kernels, |_, _, _| {
        Some(Selection::IfAutoinstall)
    });
    let scratch_options = Options {
        no_depmod: true,
        retry_failed: true,
        ..options.clone()
    };
    let mut outcomes = Outcomes::of_plan(&planned);
    outcomes.add_run(engine::run_plan(
        &scratch_host,
        &planned,
        &scratch_options,
        progress,
    ));
    report.built.extend(outcomes.installed);
    for (target, failure) in outcomes.failed {
        let why = scratch_host
            .read_conf(
                &target.module,
                &target.version,
                &target.kernel,
                &target.arch,
            )
            .ok()
            .and_then(|conf| {
                let built = conf.modules.iter().map(|s| s.built_name.as_str());
                critical.why(&target.module, built).cloned()
            })
            .or_else(|| critical.why(&target.module, []).cloned());
        report.problems.push(PreflightProblem::Target {
            target,
            failure,
            critical: why,
        });
    }
    Ok(())
}

/// A signing key or certificate path: the setting, or the real DKMS tree's default
/// (as the engine's build picks it).
fn signing_path(host: &Host, setting: &Option<PathBuf>, name: &str) -> PathBuf {
    setting
        .clone()
        .unwrap_or_else(|| host.paths.dkms_tree.join(name))
}

/// The private scratch directory of one kernel's pre-flight, in the host's temp dir:
/// `usr/lib/modules/<kernel>/build` (the unpacked headers, also the scratch install
/// tree) and `dkms` (the scratch DKMS tree).
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(host: &Host, kernel: &str) -> Result<Scratch, String> {
        let dir = tempfile::Builder::new()
            .prefix(&format!("dkms-hook-preflight-{kernel}-"))
            .tempdir_in(&host.paths.temp_dir)
            .map_err(|e| {
                format!(
                    "cannot make a scratch directory in {}: {e}",
                    host.paths.temp_dir.display()
                )
            })?;
        Ok(Scratch { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn install_tree(&self) -> PathBuf {
        self.path().join("usr/lib/modules")
    }

    /// Removes the scratch directory; with `keep_logs`, keeps the scratch DKMS tree
    /// (the failed builds' make.log files) and drops only the headers, returning
    /// where it is.
    fn finish(self, keep_logs: bool) -> Option<PathBuf> {
        if !keep_logs {
            return None;
        }
        let _ = std::fs::remove_dir_all(self.path().join("usr"));
        Some(self.dir.keep())
    }
}
