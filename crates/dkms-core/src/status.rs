//! `status`: what is added, built and installed, as plain data, plus the exact lines
//! upstream dkms (3.1.3 and later) prints for it.
//!
//! The states are read from the tree alone (no dkms.conf needed); only the suffixes
//! of built and installed lines need the dkms.conf, to know each module's file names
//! and install location. Nothing here prints: the binary writes the lines.

use crate::conf::{ConfError, DkmsConf};
use crate::host::Host;
use crate::pkgdb::Package;
use crate::tree::{self, ModuleVersion, SourceState};
use serde::Serialize;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Which part of the tree to report on: `-m`, `-v`, and `-k [kernel[/arch]]`/`-a`.
#[derive(Debug, Clone, Default)]
pub struct StatusQuery {
    pub module: Option<String>,
    pub version: Option<String>,
    /// Each requested kernel, with its arch if one was given. Upstream prints the
    /// whole listing once per requested kernel.
    pub kernels: Vec<(String, Option<String>)>,
    /// `-a` without `-k`.
    pub arch: Option<String>,
}

/// The state of one status line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Added,
    Built,
    Installed,
    Broken,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Added => "added",
            State::Built => "built",
            State::Installed => "installed",
            State::Broken => "broken",
        }
    }
}

/// A remark upstream appends to built and installed lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Note {
    /// `original_module/<k>/<a>` exists: installing replaced a module of the kernel.
    OriginalModulesExist,
    /// A module dkms.conf names is not in the build's `module/` directory.
    BuiltModulesMissing,
    /// The installed file differs from the built one (or is gone).
    BuiltDiffersFromInstalled,
}

impl Note {
    /// The suffix upstream 3.1.3+ prints, with its leading space.
    pub fn compat_suffix(self) -> &'static str {
        match self {
            Note::OriginalModulesExist => " (Original modules exist)",
            Note::BuiltModulesMissing => {
                " (Built modules are missing in the kernel modules folder)"
            }
            Note::BuiltDiffersFromInstalled => " (Differences between built and installed modules)",
        }
    }
}

/// One line of status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    pub module: String,
    pub version: String,
    /// Set for built and installed entries.
    pub kernel: Option<String>,
    pub arch: Option<String>,
    pub state: State,
    pub notes: Vec<Note>,
    /// Why the notes could not be worked out (an unreadable or invalid dkms.conf).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conf_error: Option<String>,
}

impl Entry {
    /// The line upstream dkms prints for this entry, without the newline.
    pub fn compat_line(&self) -> String {
        let mut line = match (&self.kernel, &self.arch) {
            (Some(k), Some(a)) => format!(
                "{}/{}, {k}, {a}: {}",
                self.module,
                self.version,
                self.state.as_str()
            ),
            _ => format!("{}/{}: {}", self.module, self.version, self.state.as_str()),
        };
        for note in &self.notes {
            line.push_str(note.compat_suffix());
        }
        line
    }

    /// What upstream prints on stderr after a broken line.
    pub fn compat_broken_message(&self) -> String {
        format!(
            "\nError! {}/{}: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!\n",
            self.module, self.version
        )
    }
}

/// Lists status entries in upstream's order. `read_conf` evaluates a dkms.conf for the
/// notes; callers pass [`Host::read_conf`] or a cached equivalent.
pub fn status<F>(host: &Host, query: &StatusQuery, read_conf: F) -> Vec<Entry>
where
    F: Fn(&str, &str, &str, &str) -> Result<DkmsConf, ConfError> + Sync,
{
    let passes: Vec<(Option<&str>, Option<&str>)> = if query.kernels.is_empty() {
        vec![(None, query.arch.as_deref())]
    } else {
        query
            .kernels
            .iter()
            .map(|(k, a)| (Some(k.as_str()), a.as_deref().or(query.arch.as_deref())))
            .collect()
    };
    let versions = tree::module_versions(
        &host.paths,
        query.module.as_deref(),
        query.version.as_deref(),
    );
    let work: Vec<(Option<&str>, Option<&str>, &ModuleVersion)> = passes
        .iter()
        .flat_map(|&(k, a)| versions.iter().map(move |mv| (k, a, mv)))
        .collect();
    // Every build's dkms.conf is read for the notes: those that need bash are
    // evaluated first, all in one bash process, instead of one each.
    let builds: Vec<(&ModuleVersion, tree::KernelArch)> = work
        .iter()
        .filter(|(_, _, mv)| mv.source == SourceState::Added)
        .flat_map(|&(k, a, mv)| {
            tree::built_for(&host.paths, &mv.module, &mv.version, k, a)
                .into_iter()
                .map(move |ka| (mv, ka))
        })
        .collect();
    let prepare: Vec<(&str, &str, &str, &str)> = builds
        .iter()
        .map(|(mv, (k, a))| {
            (
                mv.module.as_str(),
                mv.version.as_str(),
                k.as_str(),
                a.as_str(),
            )
        })
        .collect();
    host.prepare_confs(&prepare);
    let compression = Mutex::new(HashMap::new());
    let lines_of = |&(kernel, arch, mv): &(Option<&str>, Option<&str>, &ModuleVersion)| {
        version_entries(host, mv, kernel, arch, &read_conf, &compression)
    };
    // Each module version is independent and mostly waits on the filesystem, so the
    // versions are spread over the cores; results are joined back in listing order.
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(work.len().max(1));
    if threads <= 1 {
        return work.iter().flat_map(lines_of).collect();
    }
    let chunk = work.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
            .map(|part| scope.spawn(move || part.iter().flat_map(lines_of).collect::<Vec<_>>()))
            .collect();
        handles
            .into_iter()
            .flat_map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// The status lines of one module version within one pass (one `-k`, or all kernels).
fn version_entries<F>(
    host: &Host,
    mv: &ModuleVersion,
    kernel: Option<&str>,
    arch: Option<&str>,
    read_conf: &F,
    compression: &Mutex<HashMap<String, Option<&'static str>>>,
) -> Vec<Entry>
where
    F: Fn(&str, &str, &str, &str) -> Result<DkmsConf, ConfError>,
{
    let entry = |state, kernel: Option<&str>, arch: Option<&str>| Entry {
        module: mv.module.to_string(),
        version: mv.version.to_string(),
        kernel: kernel.map(str::to_string),
        arch: arch.map(str::to_string),
        state,
        notes: Vec::new(),
        conf_error: None,
    };
    match mv.source {
        SourceState::Unknown => return Vec::new(),
        SourceState::Broken => return vec![entry(State::Broken, None, None)],
        SourceState::Added => {}
    }
    let builds = tree::built_for(&host.paths, &mv.module, &mv.version, kernel, arch);
    if builds.is_empty() {
        return vec![entry(State::Added, None, None)];
    }
    let mut entries = Vec::with_capacity(builds.len());
    for (k, a) in builds {
        let installed = tree::is_installed(&host.paths, &mv.module, &mv.version, &k, &a);
        let state = if installed {
            State::Installed
        } else {
            State::Built
        };
        let mut e = entry(state, Some(&k), Some(&a));
        if tree::original_module_dir(&host.paths, &mv.module, &k, &a).is_dir() {
            e.notes.push(Note::OriginalModulesExist);
        }
        match read_conf(&mv.module, &mv.version, &k, &a) {
            Ok(conf) => {
                let suffix = *compression
                    .lock()
                    .unwrap_or_else(|poisoned| poisoned.into_inner())
                    .entry(k.to_string())
                    .or_insert_with(|| tree::kernel_module_compression(&host.paths.kernel_dir(&k)));
                let build = BuildRef {
                    module: &mv.module,
                    version: &mv.version,
                    kernel: &k,
                    arch: &a,
                };
                if let Some(note) = module_files_note(host, &conf, &build, installed, suffix) {
                    e.notes.push(note);
                }
            }
            Err(err) => e.conf_error = Some(err.to_string()),
        }
        entries.push(e);
    }
    entries
}

/// One build in the tree: a module version for a kernel and arch.
#[derive(Debug, Clone, Copy)]
struct BuildRef<'a> {
    module: &'a str,
    version: &'a str,
    kernel: &'a str,
    arch: &'a str,
}

/// The first problem with the module files of one build, checked module by module in
/// dkms.conf order (modules BUILD_EXCLUSIVE excludes are skipped), as upstream does.
fn module_files_note(
    host: &Host,
    conf: &DkmsConf,
    build: &BuildRef,
    installed: bool,
    compression: Option<&str>,
) -> Option<Note> {
    let BuildRef {
        module,
        version,
        kernel,
        arch,
    } = *build;
    let built_dir = tree::layout::modules_of(&host.paths.build_dir(module, version, kernel, arch));
    let owned_dir = tree::layout::modules_of(&host.paths.install_link(module, kernel, arch));
    let kernel_dir = host.paths.kernel_dir(kernel);
    for spec in conf.modules.iter().filter(|m| m.excluded.is_none()) {
        let Some(built) = tree::module_file(&built_dir, &spec.dest_name, compression) else {
            return Some(Note::BuiltModulesMissing);
        };
        if !installed {
            continue;
        }
        // Upstream takes the first location holding a module of the same version as
        // the one the install link points at (which, installed, is `built`), then
        // compares contents. Identical files have the same version, so one read of
        // each file settles the common case.
        let owned = tree::module_file(&owned_dir, &spec.dest_name, compression);
        let mut locations = vec![spec.dest_location.as_str()];
        if spec.declared_dest_location != spec.dest_location {
            locations.push(spec.declared_dest_location.as_str());
        }
        let actual = locations.into_iter().find_map(|location| {
            let dir = kernel_dir.join(location.trim_start_matches('/'));
            let file = tree::module_file(&dir, &spec.dest_name, compression)?;
            if same_contents(&built, &file) {
                Some(true)
            } else {
                same_module_version(owned.as_deref(), &file).then_some(false)
            }
        });
        // With no matching location upstream looks directly in the kernel directory.
        let identical = actual.unwrap_or_else(|| {
            tree::module_file(&kernel_dir, &spec.dest_name, compression)
                .is_some_and(|file| same_contents(&built, &file))
        });
        if !identical {
            return Some(Note::BuiltDiffersFromInstalled);
        }
    }
    None
}

/// Whether two modules carry the same `version=` (both absent counts as the same),
/// upstream's test for "this installed file is ours".
fn same_module_version(owned: Option<&Path>, installed: &Path) -> bool {
    let version = |p: Option<&Path>| {
        p.and_then(|p| crate::modinfo::field(p, "version"))
            .unwrap_or_default()
    };
    version(owned) == version(Some(installed))
}

/// `diff -q`'s answer, opening each file once and reading only when sizes agree.
fn same_contents(a: &Path, b: &Path) -> bool {
    use std::io::Read;
    let (Ok(mut fa), Ok(mut fb)) = (std::fs::File::open(a), std::fs::File::open(b)) else {
        return false;
    };
    let (Ok(ma), Ok(mb)) = (fa.metadata(), fb.metadata()) else {
        return false;
    };
    if ma.len() != mb.len() {
        return false;
    }
    let size = usize::try_from(ma.len()).unwrap_or(0);
    let (mut x, mut y) = (Vec::with_capacity(size), Vec::with_capacity(size));
    fa.read_to_end(&mut x).is_ok() && fb.read_to_end(&mut y).is_ok() && x == y
}

/// A machine-readable report of status entries, stable for scripts (`--json`).
#[derive(Debug, Serialize)]
pub struct JsonReport<'a> {
    /// Bumped when a field changes meaning or disappears.
    pub schema: u32,
    pub dkms_tree: &'a PathBuf,
    pub entries: &'a [Entry],
}

/// One cell of the module x kernel matrix: the state of a module version on a kernel,
/// with the reason when it is not installed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Cell {
    Installed,
    /// Built but not installed (another version is, or it was uninstalled).
    Built,
    /// The last build failed and nothing changed since.
    Failed {
        log: Option<PathBuf>,
        time: u64,
        message: String,
    },
    /// BUILD_EXCLUSIVE_* rules this kernel out.
    Excluded {
        reason: String,
    },
    /// The kernel has no headers; `package` installs them.
    NoHeaders {
        package: Option<String>,
    },
    /// A BUILD_DEPENDS module failed or is missing on this kernel.
    Dependency {
        reason: String,
    },
    /// Not built yet; `dkms-hook autoinstall -k <kernel>` builds it.
    Pending,
    /// AUTOINSTALL is off: only an explicit `dkms install` builds it.
    Manual,
    /// A newer version of the module is the one autoinstall uses.
    Superseded,
    /// The source directory or the link to it is gone.
    Broken,
    /// Its dkms.conf cannot be evaluated.
    BadConf {
        error: String,
    },
    /// Run as root, its source or dkms.conf can be changed by another user: it will
    /// not be built until that is fixed (or trusted deliberately).
    Untrusted {
        reason: String,
    },
}

/// One row: a module version and its cell for each kernel of [`Matrix::kernels`].
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub module: String,
    pub version: String,
    pub cells: Vec<Cell>,
    /// The package that installed the source, when the pacman database says.
    pub package: Option<Package>,
    /// The database was read and no package owns the source: it was copied in by hand
    /// or its package is gone.
    pub orphan: bool,
}

/// The packages behind one kernel column.
#[derive(Debug, Clone, Serialize)]
pub struct KernelPackages {
    pub release: String,
    /// The package that installed the kernel.
    pub package: Option<Package>,
    /// The headers package this kernel needs (`<pkgbase>-headers`), from the database
    /// when it knows the kernel's package, else from the kernel's `pkgbase` file.
    pub headers_package: Option<String>,
    /// The installed package that owns the headers directory.
    pub headers: Option<Package>,
    /// The kernel's package is known but its headers package is not installed.
    pub headers_missing: bool,
}

/// What the pacman database said, or why it could not be read.
#[derive(Debug, Clone, Serialize)]
pub struct Packages {
    pub dbpath: PathBuf,
    /// Why the database could not be read; owners are all unknown then.
    pub error: Option<String>,
    pub kernels: Vec<KernelPackages>,
}

/// The explained status: every added module version x every installed kernel.
#[derive(Debug, Clone, Serialize)]
pub struct Matrix {
    /// Bumped when a field changes meaning or disappears (`--json`).
    pub schema: u32,
    pub kernels: Vec<crate::kernel::Kernel>,
    pub rows: Vec<Row>,
    pub packages: Packages,
    /// What removed kernels left behind; `dkms-hook cleanup` removes it.
    pub leftovers: Vec<crate::cleanup::Leftover>,
    /// Who runs builds (see `sandbox`).
    pub builder: crate::sandbox::Builder,
}

/// Builds the matrix for every kernel of the install tree.
pub fn matrix(host: &Host) -> Matrix {
    let kernels = crate::kernel::installed_kernels(&host.paths);
    let newest = crate::plan::newest_versions(host);
    let arch = crate::kernel::default_arch();
    let versions: Vec<ModuleVersion> = tree::module_versions(&host.paths, None, None)
        .into_iter()
        .filter(|mv| mv.source != SourceState::Unknown)
        .collect();
    let sources: Vec<(&str, &str)> = versions
        .iter()
        .map(|mv| (mv.module.as_str(), mv.version.as_str()))
        .collect();
    let owners = owners(host, &sources, &kernels);
    // The cells the tree does not decide read their dkms.conf: those that need bash
    // are evaluated first, all in one bash process.
    let undecided: Vec<(&str, &str, &str, &str)> = versions
        .iter()
        .flat_map(|mv| kernels.iter().map(move |k| (mv, k.release.as_str())))
        .filter(|(mv, k)| tree_cell(host, mv, k, arch).is_none())
        .map(|(mv, k)| (mv.module.as_str(), mv.version.as_str(), k, arch))
        .collect();
    host.prepare_confs(&undecided);
    let rows = versions
        .iter()
        .zip(owners.sources.into_iter().zip(owners.orphans))
        .map(|(mv, (package, orphan))| Row {
            module: mv.module.to_string(),
            version: mv.version.to_string(),
            package,
            orphan,
            cells: kernels
                .iter()
                .zip(&owners.packages.kernels)
                .map(|(k, kp)| {
                    cell(
                        host,
                        mv,
                        k,
                        kp.headers_package.as_deref(),
                        arch,
                        newest.get(&mv.module).map(|v| v.as_str()),
                    )
                })
                .collect(),
        })
        .collect();
    Matrix {
        schema: 1,
        packages: owners.packages,
        leftovers: crate::cleanup::leftovers(host),
        builder: host.builder.clone(),
        kernels,
        rows,
    }
}

/// The owners of module sources and kernels, from one pass over the pacman database.
pub struct Owners {
    pub packages: Packages,
    /// The package of each source asked for, in order.
    pub sources: Vec<Option<Package>>,
    /// For each source: the database was read, the source exists and no package owns
    /// it. (A source that is gone is broken, not orphaned.)
    pub orphans: Vec<bool>,
}

/// Looks up which package installed each `(module, version)` source and each kernel
/// (and its headers), or records why the pacman database could not be read.
pub fn owners(host: &Host, sources: &[(&str, &str)], kernels: &[crate::kernel::Kernel]) -> Owners {
    use crate::pkgdb::{OwnerQuery, PackageDb};
    let root = Path::new("/");
    let dbpath = host.pacman_dbpath();
    let (db, error) = match PackageDb::open(root, &dbpath) {
        Ok(db) => (Some(db), None),
        Err(e) => (None, Some(e.to_string())),
    };
    // The database records real paths (`usr/lib/modules`, not the `lib` link). A path
    // that does not exist is owned by nobody worth naming, and asking would read every
    // package's files list.
    let query = |path: PathBuf, is_dir: bool, likely: Vec<String>| {
        let real = std::fs::canonicalize(&path).ok()?;
        OwnerQuery::new(root, &real, is_dir, likely)
    };
    let mut queries: Vec<Option<OwnerQuery>> = Vec::new();
    for (module, version) in sources {
        queries.push(query(
            host.paths.source_tree.join(format!("{module}-{version}")),
            true,
            vec![format!("{module}-dkms"), module.to_string()],
        ));
    }
    for kernel in kernels {
        let pkgbase: Vec<String> = kernel.pkgbase.iter().cloned().collect();
        let image = ["vmlinuz", "modules.order"]
            .iter()
            .map(|f| kernel.dir.join(f))
            .find(|p| p.exists())
            .unwrap_or_else(|| kernel.dir.join("vmlinuz"));
        queries.push(query(image, false, pkgbase));
        queries.push(query(
            host.paths.kernel_source_dir(&kernel.release),
            true,
            kernel.headers_package().into_iter().collect(),
        ));
    }
    let asked: Vec<OwnerQuery> = queries.iter().flatten().cloned().collect();
    let mut answers = match &db {
        Some(db) => db.owners(&asked).into_iter(),
        None => Vec::new().into_iter(),
    };
    let mut found = queries
        .iter()
        .map(|q| q.as_ref().and_then(|_| answers.next().flatten()));
    let source_owners: Vec<Option<Package>> = found.by_ref().take(sources.len()).collect();
    let orphans = queries
        .iter()
        .zip(&source_owners)
        .map(|(query, owner)| db.is_some() && query.is_some() && owner.is_none())
        .collect();
    let mut kernel_packages = Vec::new();
    for kernel in kernels {
        let package = found.next().flatten();
        let headers = found.next().flatten();
        let pkgbase = match (&db, &package) {
            (Some(db), Some(p)) => db.pkgbase(&p.name),
            _ => None,
        };
        let headers_package = pkgbase
            .map(|base| format!("{base}-headers"))
            .or_else(|| kernel.headers_package());
        let headers_missing = package.is_some() && headers.is_none();
        kernel_packages.push(KernelPackages {
            release: kernel.release.to_string(),
            package,
            headers_package,
            headers,
            headers_missing,
        });
    }
    Owners {
        packages: Packages {
            dbpath,
            error,
            kernels: kernel_packages,
        },
        sources: source_owners,
        orphans,
    }
}

/// The cell when the tree alone decides it (broken, installed, built, failed); `None`
/// when it takes the dkms.conf.
fn tree_cell(host: &Host, mv: &ModuleVersion, kernel: &str, arch: &str) -> Option<Cell> {
    // The matrix's kernels and arch are installed kernels' names: plain ones.
    let target = tree::Target::parse(&mv.module, &mv.version, kernel, arch).ok()?;
    if mv.source == SourceState::Broken {
        return Some(Cell::Broken);
    }
    if target.is_installed(&host.paths) {
        return Some(Cell::Installed);
    }
    if target.is_built(&host.paths) {
        return Some(Cell::Built);
    }
    let failure = crate::failure::still_failing(&host.paths, &target)?;
    Some(Cell::Failed {
        log: failure.log,
        time: failure.time,
        message: failure.message,
    })
}

/// One cell; `headers_package` is what installs the kernel's headers, as the pacman
/// database (or the kernel's pkgbase file) names it.
fn cell(
    host: &Host,
    mv: &ModuleVersion,
    kernel: &crate::kernel::Kernel,
    headers_package: Option<&str>,
    arch: &str,
    newest: Option<&str>,
) -> Cell {
    if let Some(cell) = tree_cell(host, mv, &kernel.release, arch) {
        return cell;
    }
    let conf = match host.read_conf(&mv.module, &mv.version, &kernel.release, arch) {
        Ok(conf) => conf,
        Err(e) => {
            return Cell::BadConf {
                error: e.to_string(),
            }
        }
    };
    if let Some(reason) = conf.excluded {
        return Cell::Excluded { reason };
    }
    if !kernel.has_headers {
        return Cell::NoHeaders {
            package: headers_package.map(str::to_string),
        };
    }
    if newest != Some(mv.version.as_str()) {
        return Cell::Superseded;
    }
    if !conf.autoinstall {
        return Cell::Manual;
    }
    if let Err(e) = host.check_added_source(&mv.module, &mv.version) {
        return Cell::Untrusted {
            reason: e.to_string(),
        };
    }
    for dep in &conf.build_depends {
        if tree::installed_version(&host.paths, dep, &kernel.release, arch).is_some() {
            continue;
        }
        let versions = tree::module_versions(&host.paths, Some(dep), None);
        let failed = versions.iter().any(|d| {
            tree::Target::parse(dep, &d.version, &kernel.release, arch)
                .is_ok_and(|t| crate::failure::still_failing(&host.paths, &t).is_some())
        });
        if failed {
            return Cell::Dependency {
                reason: format!("dependency {dep} failed"),
            };
        }
        if versions.is_empty() {
            return Cell::Dependency {
                reason: format!("dependency {dep} is not registered with DKMS"),
            };
        }
    }
    Cell::Pending
}
