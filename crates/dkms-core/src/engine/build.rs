//! `build`: compile one module version for one kernel in a work directory of its own,
//! then stage the results (stripped, signed, compressed) and rename them into
//! `<m>/<v>/<k>/<a>` in one step. What is installed is never touched here. While it
//! builds, upstream's `<m>/<v>/build` is a symlink to that work directory, so the
//! scripts and MAKE lines that name it (zfs's POST_BUILD) find this build there.
//! As root, the module's code runs as the build user in a jail (see `output`).

use super::output::{copy_built_file, read_built_file};
use super::script::shell;
use super::{read_conf, require_added, shared_build, EngineError, Event, Options, Progress};
use crate::compress::{self, Compression};
use crate::conf::DkmsConf;
use crate::environment::build_environment_prelude;
use crate::exec::{Command, ExitDescription};
use crate::exit::Exit;
use crate::host::Host;
use crate::kernel::KernelConfig;
use crate::sandbox::Jail;
use crate::sign;
use crate::tree::{self, Target};
use std::fs::{self, File, TryLockError};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Builds `target`. Fails (with upstream's exit code) when it is excluded by
/// BUILD_EXCLUSIVE_* (77), has no headers (21), misses BUILD_DEPENDS (13), or make
/// fails or leaves out a module; the make.log path is in the error.
pub fn build(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let result = build_target(host, target, options, progress);
    if result.is_ok() {
        progress.event(Event::Built { target });
    }
    // Failure memory: compile-time failures are remembered, a success forgets them.
    match &result {
        Ok(()) => crate::failure::clear(host, target),
        Err(
            e @ (EngineError::BuildFailed { .. }
            | EngineError::ModulesMissing { .. }
            | EngineError::Patch { .. }
            | EngineError::ScriptFailed { .. }),
        ) => crate::failure::record(
            host,
            target,
            e.exit_code(),
            &e.to_string(),
            e.log().map(PathBuf::as_path),
        ),
        Err(_) => {}
    }
    // After a success `<v>/build` goes, as upstream's; after a remembered failure it
    // points at the failed build's kept work dir, so `<v>/build/make.log` is its log.
    let settled = shared_build::settle(host, target);
    result.and(settled)
}

fn build_target(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    require_added(host, &target.module, &target.version)?;
    // Without --kernelsourcedir the headers live in the kernel's directory: a kernel
    // that has none is not installed (a typo?), which says more than "no headers".
    if host.paths.kernel_source_dir.is_none() {
        crate::kernel::require_installed(&host.paths, &target.kernel)
            .map_err(EngineError::NoKernelToBuild)?;
    }
    super::prepare_target(host, target)?;
    let conf = read_conf(host, target, options)?;
    super::note_no_modules(&conf, progress);
    super::note_deprecations(&conf, progress);
    if let Some(reason) = &conf.excluded {
        return Err(EngineError::Excluded {
            target: Box::new(target.clone()),
            reason: reason.clone(),
        });
    }
    let kernel_source_dir = host.paths.kernel_source_dir(&target.kernel);
    if !kernel_source_dir.join("include").is_dir() {
        return Err(EngineError::NoHeaders {
            kernel: target.kernel.to_string(),
            dir: kernel_source_dir,
        });
    }
    if target.is_built(&host.paths) && !options.force {
        return Err(EngineError::AlreadyBuilt {
            target: Box::new(target.clone()),
        });
    }
    let missing = missing_dependencies(host, target, &conf);
    if !missing.is_empty() {
        if !options.force {
            return Err(EngineError::MissingDependencies {
                target: Box::new(target.clone()),
                missing,
            });
        }
        progress.event(Event::BuildingDespiteMissingDependencies {
            target,
            missing: &missing,
        });
    }
    for module in conf.modules.iter().filter(|m| m.excluded.is_some()) {
        progress.event(Event::ModuleExcluded {
            target,
            module: &module.built_name,
            reason: module.excluded.as_deref().unwrap_or_default(),
        });
    }

    progress.event(Event::Building { target });
    let work = target.work_dir(&host.paths);
    let version_dir = host.paths.version_dir(&target.module, &target.version);
    let source = target.source_link(&host.paths);
    // Upstream's `<v>/build` is this build's directory while it runs (scripts and
    // MAKE lines name it): one build of a module version at a time.
    let claim = shared_build::Claim::new(&version_dir);
    let shared = host.paths.shared_build_dir(&target.module, &target.version);
    wait_for_leftover_processes(&work, progress);
    let root = host.dkms_root()?;
    // The build user's own directory, writable only by it (and only it in its jail).
    let jail = host.builder.jail(&[&work]);
    super::output::copy_source_for_build(root, &source, &work, &jail)?;
    shared_build::place(host, target, &work, &claim)?;
    let log_path = tree::layout::make_log_in(&work);
    // Through the handle: a `make.log` symlink among the copied sources is not
    // followed.
    let mut log = root.append(&log_path)?;
    // Held by every child the build starts, which get the log as stdout and stderr:
    // see wait_for_leftover_processes. Best effort, as locks are on some file systems.
    let _ = log.try_lock();
    let _ = writeln!(
        log,
        "DKMS (dkms-hook {}) make.log for {}/{} for kernel {} ({})",
        env!("CARGO_PKG_VERSION"),
        target.module,
        target.version,
        target.kernel,
        target.arch
    );

    apply_patches(host, target, &conf, &work, (&log, &log_path), &jail)?;
    if let Some(script) = &conf.pre_build {
        super::script::run_script_in(
            host,
            target,
            "pre_build",
            script,
            (&shared, &jail),
            Some((&log, &log_path)),
            progress,
        )?;
    }
    run_make(
        host,
        target,
        &conf,
        (&work, &jail),
        options,
        (&log, &log_path),
        progress,
    )?;

    let staged = stage_modules(host, target, &conf, (&work, &jail), &log_path, progress)?;
    let final_dir = target.build_dir(&host.paths);
    // The log goes in with the modules, so a build never appears without it; the
    // open handle follows the file, so POST_BUILD's output still lands in it. The
    // build user could have put something else in its place: only ours moves.
    super::output::require_own_log(target, &log, &log_path)?;
    let staged_log = staged.join("log/make.log");
    root.rename(&log_path, &staged_log)?;
    root.replace_dir(&staged, &final_dir)?;
    let log_path = final_dir.join("log/make.log");
    if let Some(script) = &conf.post_build {
        // POST_BUILD may copy into `<v>/<k>/<a>/` (zfs's Module.symvers): its jail
        // shows a staging dir of the work dir there, whose files root then moves in.
        let post_jail = super::output::post_build_jail(host, root, &work, &final_dir)?;
        super::script::run_script_in(
            host,
            target,
            "post_build",
            script,
            (&shared, &post_jail),
            Some((&log, &log_path)),
            progress,
        )?;
        super::output::take_post_build_files(root, target, &work, &final_dir, &post_jail)?;
    }
    // `<v>/build` goes with it once the failure memory is updated (see `build`).
    root.remove(&work)?;
    Ok(())
}

/// Copies a source tree as `cp -a` does (modes, symlinks, times) into a new `dest`
/// inside `root` (whatever was at `dest` is removed first, through the handle; `cp`
/// writes only below a directory the handle made).
pub(crate) fn copy_tree(
    root: &crate::fs::Root,
    source: &Path,
    dest: &Path,
) -> Result<(), EngineError> {
    root.remove(dest)?;
    root.create_dir_all(dest)?;
    Command::new("cp", "copy module sources")
        .arg("-a")
        .arg("--")
        .arg(source.join(".").as_os_str())
        .arg(dest.as_os_str())
        .read()?;
    Ok(())
}

/// Removes the target's work directory when no failure record keeps it (it is kept
/// only for the make.log a remembered failure points at): one left next to a finished
/// build comes from a run interrupted between putting the build in place and
/// removing its work directory. Only ever for this target, whose work directory no
/// other thread of the run uses.
pub(crate) fn discard_stale_work_dir(host: &Host, target: &Target) -> Result<(), EngineError> {
    if target.failure_record(&host.paths).exists() {
        return Ok(());
    }
    Ok(host.dkms_root()?.remove(&target.work_dir(&host.paths))?)
}

/// How long a build waits for processes of an interrupted run that are still writing
/// in its work directory: compilers finishing their file after make died with us.
const LEFTOVER_WAIT: Duration = Duration::from_secs(120);

/// Waits until no process of an interrupted run holds the work directory's make.log.
/// A build holds an exclusive flock on it, shared by every child (they get it as
/// stdout and stderr), so the lock is free once all of them have exited; until then
/// they may still write objects that the new build would take for its own. Gives up
/// with a warning after [`LEFTOVER_WAIT`] (a build that left a daemon behind).
fn wait_for_leftover_processes(work: &Path, progress: &dyn Progress) {
    let log = tree::layout::make_log_in(work);
    let Some(file) = super::output::open_log_safely(&log) else {
        return;
    };
    let start = Instant::now();
    let mut told = false;
    loop {
        match file.try_lock() {
            Err(TryLockError::WouldBlock) if start.elapsed() < LEFTOVER_WAIT => {
                if !told {
                    progress.event(Event::WaitingForInterruptedBuild { work });
                    told = true;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            Err(TryLockError::WouldBlock) => {
                progress.event(Event::InterruptedBuildStillRunning { log: &log });
                return;
            }
            // Free (the lock goes with `file`), or locks do not work here.
            _ => return,
        }
    }
}

/// BUILD_DEPENDS that are not installed for the target's kernel and arch.
fn missing_dependencies(host: &Host, target: &Target, conf: &DkmsConf) -> Vec<String> {
    conf.build_depends
        .iter()
        .filter(|dep| {
            tree::installed_version(&host.paths, dep, &target.kernel, &target.arch).is_none()
        })
        .cloned()
        .collect()
}

fn apply_patches(
    host: &Host,
    target: &Target,
    conf: &DkmsConf,
    work: &Path,
    (log, log_path): (&File, &Path),
    jail: &Jail,
) -> Result<(), EngineError> {
    for patch in &conf.patches {
        // /etc/dkms/<m>/patches/<patch> (root's, through the trust gate) wins; the
        // source's is read beneath the work dir, which the build user owns.
        let missing = || EngineError::Patch {
            target: Box::new(target.clone()),
            patch: patch.clone(),
            problem: format!("cannot be found in {}", work.join("patches").display()),
            exit: Exit::AlreadyInstalled,
        };
        let bytes = match host.module_override(&target.module, &format!("patches/{patch}"))? {
            Some(file) => fs::read(&file).map_err(|_| missing())?,
            None => {
                read_built_file(target, work, &Path::new("patches").join(patch))
                    .map_err(|_| missing())?
                    .bytes
            }
        };
        let status = Command::build_step("patch", "apply PATCH[] from dkms.conf", jail)
            .args(["-p1"])
            .dir(work)
            .run_to_log(log, &bytes)?;
        if status != ExitDescription::Code(0) {
            return Err(EngineError::Patch {
                target: Box::new(target.clone()),
                patch: patch.clone(),
                problem: format!("did not apply ({status}); see {}", log_path.display()),
                exit: Exit::InstallFailed,
            });
        }
        let _ = host;
    }
    Ok(())
}

/// The make command upstream would run: MAKE[] or the default, with a leading
/// `make` rewritten to `make -jN KERNELRELEASE=<k>`, `LLVM=1` for clang kernels, and
/// upstream's shared build path pointed at this target's own work directory. With
/// `jobs` = `None` (a shared jobserver provides the slots) no `-j` is added: a `-jN`
/// on make's command line makes it leave the jobserver.
pub fn make_command(
    host: &Host,
    target: &Target,
    conf: &DkmsConf,
    work: &Path,
    jobs: Option<usize>,
) -> String {
    let kernel_source_dir = host.paths.kernel_source_dir(&target.kernel);
    let mut command = conf.make_command.clone().unwrap_or_else(|| {
        format!(
            "make -C {} M={}",
            kernel_source_dir.display(),
            work.display()
        )
    });
    let shared = host.paths.shared_build_dir(&target.module, &target.version);
    command = replace_path(
        &command,
        &shared.display().to_string(),
        &work.display().to_string(),
    );
    if let Some(rest) = command.strip_prefix("make") {
        // 0 is `parallel_jobs=0`: upstream's bare `-j`, no limit.
        let jobs = jobs
            .map(|j| {
                if j == 0 {
                    " -j".to_string()
                } else {
                    format!(" -j{j}")
                }
            })
            .unwrap_or_default();
        command = format!("make{jobs} KERNELRELEASE={}{rest}", target.kernel);
    }
    let config = fs::read_to_string(host.paths.kernel_config(&target.kernel)).unwrap_or_default();
    if config.lines().any(|l| l == "CONFIG_CC_IS_CLANG=y") {
        command.push_str(" LLVM=1");
    }
    command
}

fn run_make(
    host: &Host,
    target: &Target,
    conf: &DkmsConf,
    (work, jail): (&Path, &Jail),
    options: &Options,
    (log, log_path): (&File, &Path),
    progress: &dyn Progress,
) -> Result<(), EngineError> {
    let jobs = options.jobserver.is_none().then_some(options.jobs);
    let command = make_command(host, target, conf, work, jobs);
    if options.jobserver.is_some() && hard_codes_jobs(&command) {
        progress.event(Event::MakeHardCodesJobs { target });
    }
    let mut log_writer = log;
    let _ = writeln!(
        log_writer,
        "\n# command: cd {} && {command}",
        work.display()
    );
    let benv = build_environment_prelude(host.settings.build_environment.as_deref());
    let script = format!("{benv}export module module_version kernelver arch; eval \"$1\"");
    let mut make = shell(host, target, &script, "build kernel modules", jail)
        .arg(&command)
        .dir(work);
    if let Some(client) = &options.jobserver {
        make = make.jobserver(client);
    }
    let status = make.run_to_log(log, &[])?;
    let _ = writeln!(log_writer, "\n# exit code: {status}");
    if status != ExitDescription::Code(0) && out_of_space(work, log_path) {
        // Not the source's fault: no failure record (the next run builds again), and
        // the partial objects go, to give the space back.
        host.dkms_root()?.remove(work)?;
        return Err(EngineError::BuildNoSpace {
            target: Box::new(target.clone()),
            dir: work.to_path_buf(),
        });
    }
    if status != ExitDescription::Code(0) {
        return Err(EngineError::BuildFailed {
            target: Box::new(target.clone()),
            command,
            status: status.to_string(),
            log: log_path.to_path_buf(),
        });
    }
    Ok(())
}

/// Below this much free space, a failed make is taken to have failed for want of it.
const LOW_SPACE: u64 = 1 << 20;

/// Whether a failed make in `dir` ran out of space: its log says so (in the C locale
/// its children run in; the compiler deletes the half-written object, so the space
/// may be free again by now), or the file system is (next to) full.
fn out_of_space(dir: &Path, log: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    use std::os::unix::ffi::OsStrExt;
    let mut tail = Vec::new();
    if let Some(mut file) = super::output::open_log_safely(log) {
        let _ = file.seek(SeekFrom::End(-(64 << 10)));
        let _ = file.read_to_end(&mut tail);
    }
    let tail = String::from_utf8_lossy(&tail);
    if tail.contains("No space left on device") || tail.contains("Disk quota exceeded") {
        return true;
    }
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::zeroed();
    // SAFETY: `path` is NUL-terminated and `stat` is writable memory of the right
    // type; statvfs only writes into it.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return false;
    }
    // SAFETY: statvfs returned 0, so it filled the struct (it was zeroed anyway).
    let stat = unsafe { stat.assume_init() };
    // Both are u64 here but narrower on 32-bit targets.
    #[allow(clippy::unnecessary_cast)]
    let free = (stat.f_bavail as u64).saturating_mul(stat.f_frsize as u64);
    free < LOW_SPACE
}

/// Copies every expected module into a staging directory next to the final one, and
/// strips, signs and compresses it there. Returns the staging directory.
fn stage_modules(
    host: &Host,
    target: &Target,
    conf: &DkmsConf,
    (work, jail): (&Path, &Jail),
    log_path: &Path,
    progress: &dyn Progress,
) -> Result<PathBuf, EngineError> {
    let wanted: Vec<_> = conf
        .modules
        .iter()
        .filter(|m| m.excluded.is_none())
        .collect();
    let missing: Vec<String> = wanted
        .iter()
        .map(|m| format!("{}{}.ko", m.built_location, m.built_name))
        .filter(|rel| !work.join(rel).is_file())
        .collect();
    if !missing.is_empty() {
        return Err(EngineError::ModulesMissing {
            target: Box::new(target.clone()),
            missing,
            log: log_path.to_path_buf(),
        });
    }
    let root = host.dkms_root()?;
    let staged = crate::fs::staging_path(&target.build_dir(&host.paths));
    root.remove(&staged)?;
    let module_dir = tree::layout::modules_of(&staged);
    root.create_dir_all(&module_dir)?;
    root.create_dir_all(&tree::layout::log_dir_of(&staged))?;

    let kernel_config = host.kernel_config(&target.kernel);
    let kernel_config = kernel_config.as_ref().as_ref();
    let compression = kernel_config.map_or(Compression::None, KernelConfig::module_compression);
    let signing = signing_setup(host, target, kernel_config, progress);
    for spec in wanted {
        let relative = PathBuf::from(format!("{}{}.ko", spec.built_location, spec.built_name));
        let staged_ko = module_dir.join(format!("{}.ko", spec.dest_name));
        // strip parses what make wrote: the build user's job, in the work dir.
        if spec.strip {
            if let Err(e) = Command::build_step("strip", "strip debug symbols from modules", jail)
                .arg("-g")
                .arg("--")
                .arg(relative.as_os_str())
                .dir(work)
                .read()
            {
                progress.event(Event::StripFailed { target, error: &e });
            }
        }
        copy_built_file(root, target, work, &relative, &staged_ko)?;
        if let Some((sign_file, hash, key)) = &signing {
            let built = host
                .paths
                .shared_build_dir(&target.module, &target.version)
                .join(format!("{}{}.ko", spec.built_location, spec.built_name));
            match sign::sign_module(sign_file, hash, key, &staged_ko) {
                Ok(_) => progress.event(Event::Signed {
                    target,
                    file: &staged_ko,
                    built: &built,
                }),
                Err(e) => progress.event(Event::SigningFailed {
                    target,
                    file: &staged_ko,
                    built: &built,
                    error: &e,
                }),
            }
        }
        if compression != Compression::None {
            let options = match compression {
                Compression::Zstd => host.settings.compress_zstd_opts.as_deref(),
                Compression::Xz => host.settings.compress_xz_opts.as_deref(),
                Compression::Gzip => host.settings.compress_gzip_opts.as_deref(),
                Compression::None => None,
            };
            if let Err(e) = compress::compress(root, &staged_ko, compression, options) {
                progress.event(Event::CompressionFailed {
                    target,
                    file: &staged_ko,
                    error: &e,
                });
            }
        }
    }
    let symvers = Path::new("Module.symvers");
    if work.join(symvers).is_file() {
        let _ = copy_built_file(root, target, work, symvers, &module_dir.join(symvers));
    }
    Ok(staged)
}

/// sign-file, the hash and the key to sign with, when the kernel wants signed modules
/// and everything needed is there; a warning otherwise (signing never fails a build).
fn signing_setup(
    host: &Host,
    target: &Target,
    kernel_config: Option<&KernelConfig>,
    progress: &dyn Progress,
) -> Option<(PathBuf, String, sign::SigningKey)> {
    if let Some(why) = crate::environment::signing_policy(
        host.settings.try_sign_modules.as_deref(),
        &host.caller_env,
    ) {
        progress.event(Event::SigningSkipped { target, why });
        return None;
    }
    let hash = kernel_config?.signature_hash()?;
    let kernel_source_dir = host.paths.kernel_source_dir(&target.kernel);
    let sign_file = sign::sign_file_for(
        &kernel_source_dir,
        host.settings.sign_file.as_deref(),
        &target.kernel,
    );
    if !sign::is_usable_sign_file(&sign_file) {
        progress.event(Event::SignFileMissing {
            target,
            sign_file: &sign_file,
        });
        return None;
    }
    let key = sign::SigningKey::configured(&host.settings, &host.paths);
    // Parallel builds must not each generate a key pair and mix the halves.
    static KEY_GENERATION: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let generated = {
        let _guard = KEY_GENERATION.lock().unwrap_or_else(|p| p.into_inner());
        sign::ensure_signing_key(&key)
    };
    match generated {
        Ok(true) => progress.event(Event::SigningKeyGenerated {
            key: &key.key,
            certificate: &key.certificate,
        }),
        Ok(false) => {}
        Err(e) => {
            progress.event(Event::NoSigningKey {
                target,
                sign_file: &sign_file,
                key: &key.key,
                certificate: &key.certificate,
                error: &e,
            });
            return None;
        }
    }
    progress.event(Event::SigningWith {
        sign_file: &sign_file,
        key: &key.key,
        certificate: &key.certificate,
    });
    Some((sign_file, hash, key))
}

/// Whether a make command line carries its own `-j`/`-jN`/`--jobs`.
fn hard_codes_jobs(command: &str) -> bool {
    command.split_whitespace().any(|word| {
        word == "-j"
            || word.starts_with("--jobs")
            || (word.starts_with("-j") && word[2..].bytes().all(|b| b.is_ascii_digit()))
    })
}

/// Replaces `from` in `text` where it is a whole path (not followed by more name
/// characters), so `.../build` is rewritten but `.../build-6.1` is not.
fn replace_path(text: &str, from: &str, to: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find(from) {
        let after = &rest[pos + from.len()..];
        let whole = !after.starts_with(|c: char| c.is_alphanumeric() || "_.-".contains(c));
        out.push_str(&rest[..pos]);
        out.push_str(if whole { to } else { from });
        rest = after;
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::replace_path;

    #[test]
    fn upstream_build_path_is_rewritten_only_as_a_whole_path() {
        let text = "make -C /k M=/d/m/1/build V=1 X=/d/m/1/build/sub Y=/d/m/1/build-6.1";
        assert_eq!(
            replace_path(text, "/d/m/1/build", "/d/m/1/build-6.1-x86_64"),
            "make -C /k M=/d/m/1/build-6.1-x86_64 V=1 X=/d/m/1/build-6.1-x86_64/sub Y=/d/m/1/build-6.1"
        );
    }
}
