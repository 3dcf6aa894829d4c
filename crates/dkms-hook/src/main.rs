//! The `dkms-hook` binary (also installed as `dkms`): parses arguments, gathers the
//! host's paths and settings, calls the library, prints, and maps errors to exit codes.
//!
//! Run as `dkms` it must behave like upstream dkms byte for byte where scripts look;
//! run as `dkms-hook` it adds our own commands. Everything else lives in dkms-core.

mod cli;
mod commands;
mod hook;
mod pacman_invocation;
mod render;

use anyhow::{bail, Context, Result};
use clap::Parser;
use cli::{Action, Cli, GlobalArgs};
use dkms_core::exit::{Exit, HasExitCode};
use dkms_core::settings::{read_framework_conf_for, Settings};
use dkms_core::status::{self, StatusQuery};
use dkms_core::{Host, Paths};
use render::{Face, Printer, Renderer};
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// A command line the binary refuses before calling the library, with the exit
/// upstream dkms uses for it.
#[derive(Debug)]
struct Refused {
    exit: Exit,
    message: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Refused {}

impl HasExitCode for Refused {
    fn exit(&self) -> Exit {
        self.exit
    }
}

/// Refuses the command line with `exit` and `message`.
pub(crate) fn refuse(exit: Exit, message: impl Into<String>) -> anyhow::Error {
    Refused {
        exit,
        message: message.into(),
    }
    .into()
}

/// The one place an error becomes an exit status: the first error in the chain that
/// knows its dkms exit, else a general failure.
fn exit_of(err: &anyhow::Error) -> Exit {
    for cause in err.chain() {
        let known: Option<&dyn HasExitCode> = if let Some(e) = cause.downcast_ref::<Refused>() {
            Some(e)
        } else if let Some(e) = cause.downcast_ref::<dkms_core::engine::EngineError>() {
            Some(e)
        } else if let Some(e) = cause.downcast_ref::<dkms_core::conf::ConfError>() {
            Some(e)
        } else if let Some(e) = cause.downcast_ref::<dkms_core::settings::SettingsError>() {
            Some(e)
        } else if let Some(e) = cause.downcast_ref::<dkms_core::lock::LockError>() {
            Some(e)
        } else {
            None
        };
        if let Some(known) = known {
            return known.exit();
        }
    }
    Exit::Failure
}

fn face() -> Face {
    let argv0 = std::env::args_os().next().unwrap_or_default();
    let name = std::path::Path::new(&argv0)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    if name == "dkms" {
        Face::Dkms
    } else {
        Face::DkmsHook
    }
}

fn main() -> ExitCode {
    // The reliability proof run's deliberate bug, in builds with that feature only.
    #[cfg(feature = "break-atomicity")]
    if std::env::var_os("DKMS_HOOK_BREAK_ATOMICITY").is_some() {
        dkms_core::fs::proof::break_atomicity();
    }
    if let Some((index, arg)) = std::env::args_os()
        .enumerate()
        .skip(1)
        .find(|(_, arg)| arg.to_str().is_none())
    {
        // clap would only say that some argument is not UTF-8; name it.
        Printer::new(cli::ColorChoice::Auto, false).error(&anyhow::anyhow!(
            "argument {index} ({:?}) is not UTF-8: module names, versions, kernels and paths given to dkms-hook must be UTF-8",
            arg.to_string_lossy()
        ));
        return ExitCode::from(Exit::Usage.code());
    }
    let face = face();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e)
            if face == Face::Dkms
                && e.kind() == clap::error::ErrorKind::MissingRequiredArgument =>
        {
            // Upstream without an action: its error, its usage on stdout, and exit 0
            // (its script ends with the usage's echo).
            Printer::new(cli::ColorChoice::Never, false)
                .upstream_error("Unknown action specified: \"\"");
            print!("{}", render::upstream::usage());
            return ExitCode::SUCCESS;
        }
        Err(e) => e.exit(),
    };
    if face == Face::Dkms && cli.global.quiet {
        // Upstream's -q is `exec >/dev/null 2>&1`: nothing at all is printed, errors
        // and status included, and the children inherit it.
        if let Err(e) = silence_stdio() {
            Printer::new(cli.global.color, false).error(&anyhow::anyhow!("-q: {e}"));
        }
    }
    let printer = Printer::new(cli.global.color, cli.global.quiet);
    let renderer = Renderer::new(&printer, face);
    let exit = match run(cli, &renderer) {
        Ok(exit) => exit,
        Err(err) if is_broken_pipe(&err) => Exit::Success,
        Err(err) => {
            match renderer.face {
                Face::Dkms => {
                    for line in render::upstream::top_error_lines(&err) {
                        renderer.print(&line);
                    }
                }
                Face::DkmsHook => printer.error(&err),
            }
            exit_of(&err)
        }
    };
    ExitCode::from(exit.code())
}

/// Points stdout and stderr at /dev/null, as a shell's `exec >/dev/null 2>&1`.
/// The null device is opened with open(2) like the dup2 that follows: it is no file
/// of any tree, so it is not the fs layer's business.
fn silence_stdio() -> std::io::Result<()> {
    use std::os::fd::{FromRawFd, OwnedFd};
    // SAFETY: a NUL-terminated constant path; open touches no memory of ours.
    let fd = unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: open just returned this descriptor and nothing else owns it.
    let null = unsafe { OwnedFd::from_raw_fd(fd) };
    for stdio in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        use std::os::fd::AsRawFd;
        // SAFETY: dup2 on a descriptor we own and the process's stdio; it touches no
        // memory of ours.
        if unsafe { libc::dup2(null.as_raw_fd(), stdio) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Log level: RUST_LOG, else --debug, else --verbose, else the settings' log_level,
/// else warn.
fn init_logging(global: &GlobalArgs, configured: Option<&str>) {
    let default = if global.debug {
        "debug"
    } else if global.verbose {
        "info"
    } else {
        configured.unwrap_or("warn")
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(default))
        .format_target(false)
        .format_timestamp(None)
        .init();
}

fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

fn run(cli: Cli, renderer: &Renderer) -> Result<Exit> {
    let (face, printer) = (renderer.face, renderer.printer);
    let host = host(&cli.global, face, printer)?;
    let _ = renderer.pending.paths.set(host.paths.clone());
    init_logging(&cli.global, host.settings.log_level.as_deref());
    let target = cli.targets.first().map(String::as_str);
    // Commands that change the trees run one at a time; status and plan never wait.
    let _lock = if changes_trees(cli.action) || (cli.action == Action::Cleanup && cli.global.yes) {
        let path = dkms_core::lock::lock_path(&host.paths.dkms_tree);
        Some(dkms_core::lock::lock_tree(
            &host.paths.dkms_tree,
            LOCK_TIMEOUT,
            || {
                printer.warning(&format!(
                    "waiting for another dkms-hook run to finish (it holds {})",
                    path.display()
                ))
            },
        )?)
    } else {
        None
    };
    match cli.action {
        Action::Status => {
            // Scripts call `dkms status` and parse it: that face, and --compat, keep
            // upstream's lines; `dkms-hook status` explains itself.
            if face == Face::Dkms || cli.compat {
                let query = cli::status_query(&cli.global, target)?;
                return run_status(&host, &query, cli.json, printer);
            }
            let matrix = dkms_core::status::matrix(&host);
            if matrix.builder == dkms_core::sandbox::Builder::Root {
                printer.warning(
                    "builds run as root (build_as_root = true in dkms-hook.toml): every module's dkms.conf, scripts and Makefile can change anything on this machine; remove the setting to build as the unprivileged build user",
                );
            }
            let mut out = std::io::stdout().lock();
            if cli.json {
                serde_json::to_writer_pretty(&mut out, &matrix).context("writing status JSON")?;
                writeln!(out)?;
            } else {
                out.write_all(render::matrix::render(&matrix, printer.colors_stdout()).as_bytes())?;
            }
            Ok(Exit::Success)
        }
        // An unknown action, as clap reports the others: a usage error, not success.
        Action::Plan if face == Face::Dkms => bail!(refuse(
            Exit::Usage,
            "Unknown action specified: \"plan\" (plan is a dkms-hook command; run dkms-hook plan)"
        )),
        Action::Plan => commands::plan(&host, &cli.global, cli.json),
        Action::GenerateMok => commands::generate_mok(&host, renderer),
        Action::Cleanup => commands::cleanup(&host, cli.global.yes, cli.json, renderer),
        Action::Completions => {
            use clap::CommandFactory;
            let shell = match target {
                Some("bash") => clap_complete::Shell::Bash,
                Some("zsh") => clap_complete::Shell::Zsh,
                Some("fish") => clap_complete::Shell::Fish,
                _ => bail!(refuse(
                    Exit::Usage,
                    "usage: dkms-hook completions bash|zsh|fish"
                )),
            };
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "dkms-hook",
                &mut std::io::stdout(),
            );
            Ok(Exit::Success)
        }
        Action::Manpage => {
            use clap::CommandFactory;
            let command = Cli::command().name("dkms-hook");
            clap_mangen::Man::new(command)
                .section("8")
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(Exit::Success)
        }
        Action::Hook => {
            let kind = match target {
                Some("install") => hook::HookKind::Install,
                Some("upgrade") => hook::HookKind::Upgrade,
                Some("remove") => hook::HookKind::Remove,
                Some("preflight") => hook::HookKind::Preflight,
                _ => bail!(refuse(
                    Exit::Usage,
                    "usage: dkms-hook hook install|upgrade|remove|preflight (targets on stdin)"
                )),
            };
            hook::run(
                kind,
                &host,
                &commands::options(&host, &cli.global),
                renderer,
            )
        }
        action => {
            let exit = commands::run(action, &host, &cli.global, &cli.targets, renderer)?;
            // Upstream runs post_transaction after these commands succeeded.
            let changes_modules = matches!(
                action,
                Action::Install | Action::Uninstall | Action::Unbuild | Action::Remove
            );
            if exit == Exit::Success && changes_modules {
                run_post_transaction(&host, renderer)?;
            }
            Ok(exit)
        }
    }
}

/// framework.conf's `post_transaction`, when set: its status never fails the command.
pub(crate) fn run_post_transaction(host: &Host, renderer: &Renderer) -> Result<()> {
    if let Some(command) = host.settings.post_transaction.as_deref() {
        if !command.is_empty() {
            dkms_core::post_transaction::run(host, command, renderer)?;
        }
    }
    Ok(())
}

/// Merges settings files and command-line overrides into the host description.
fn host(global: &GlobalArgs, face: Face, printer: &Printer) -> Result<Host> {
    let mut paths = Paths::default();
    if face == Face::Dkms {
        // Upstream's default install tree (the same directory where /lib is
        // /usr/lib), so `dkms` prints and takes the paths upstream does.
        paths.install_tree = PathBuf::from("/lib/modules");
    }
    if let Some(dir) = &global.etc_dir {
        paths.etc_dir = dir.clone();
    }
    let settings_file = global
        .settings
        .clone()
        .or_else(|| std::env::var_os("DKMS_HOOK_CONFIG").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("/etc/dkms-hook.toml"));
    let (toml, unknown_keys) = Settings::from_toml_file(&settings_file)?;
    for unknown in &unknown_keys {
        printer.warning(&unknown.to_string());
    }
    // `$kernelver` in framework.conf is the command's first kernel, as upstream has it
    // when it re-reads post_transaction (and the signing variables).
    let kernelver = cli::kernels_with_arches(global)
        .ok()
        .and_then(|k| k.into_iter().next().map(|(k, _)| k))
        .unwrap_or_else(commands::running_kernel);
    let framework = read_framework_conf_for(&paths.framework_conf_files(), Some(&kernelver))?;
    let settings = toml.or(framework);
    // Upstream's tmp_location defaults to the caller's TMPDIR, else /tmp.
    if let Some(tmp) = std::env::var_os("TMPDIR").filter(|t| !t.is_empty()) {
        paths.temp_dir = PathBuf::from(tmp);
    }
    settings.apply_trees(&mut paths);
    if let Some(t) = &global.dkms_tree {
        paths.dkms_tree = t.clone();
    }
    if let Some(t) = &global.source_tree {
        paths.source_tree = t.clone();
    }
    if let Some(t) = &global.install_tree {
        paths.install_tree = t.clone();
    }
    paths.kernel_source_dir = global.kernel_source_dir.clone();
    paths.kernel_config = global.kernel_config.clone();
    // bash and make run in other directories than ours: relative paths would
    // point elsewhere for them. (A deleted working directory leaves them as given.)
    let cwd = std::env::current_dir().unwrap_or_default();
    let paths = paths.made_absolute(&cwd);
    let mut host = Host::new(paths, settings);
    // Upstream passes its caller's environment on to dkms.conf, the scripts and make
    // (a hook's: pacman's); the library never reads the environment itself.
    host.caller_env = dkms_core::environment::CallerEnv::new(std::env::vars_os());
    // Only root can be given root by a dkms.conf; anyone else runs their own files.
    if global.allow_untrusted_sources || !dkms_core::trust::process_is_root() {
        host.trust = None;
    }
    // The build cache is dkms-hook's: under the name `dkms` a build compiles, runs
    // its scripts and writes make.log with upstream's lines, as upstream's does.
    if global.no_cache || face == Face::Dkms {
        host.build_cache = None;
    }
    // As root, builds run as the unprivileged build user (or, opted out, as root);
    // anyone else builds as themselves, as before.
    if dkms_core::trust::process_is_root() {
        host.builder = dkms_core::sandbox::Builder::for_root(
            host.settings.build_as_root.unwrap_or(false),
            host.settings.build_user.as_deref(),
        )?;
    }
    for directive in &global.directives {
        let Some((name, value)) = directive.split_once('=') else {
            bail!(refuse(
                Exit::Failure,
                format!("--directive '{directive}' is not NAME=VALUE")
            ));
        };
        if !dkms_core::conf::DIRECTIVES.contains(&name) {
            bail!(refuse(
                Exit::Failure,
                format!("--directive: '{name}' is not a dkms.conf directive")
            ));
        }
        host.directives.push((name.to_string(), value.to_string()));
    }
    Ok(host)
}

fn run_status(host: &Host, query: &StatusQuery, json: bool, printer: &Printer) -> Result<Exit> {
    let entries = status::status(host, query, |m, v, k, a| host.read_conf(m, v, k, a));
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    if json {
        let report = status::JsonReport {
            schema: 1,
            dkms_tree: &host.paths.dkms_tree,
            entries: &entries,
        };
        serde_json::to_writer_pretty(&mut out, &report).context("writing status JSON")?;
        writeln!(out)?;
        return Ok(Exit::Success);
    }
    for entry in &entries {
        if let Some(problem) = &entry.conf_error {
            out.flush()?;
            printer.warning(problem);
        }
        writeln!(out, "{}", entry.compat_line())?;
        if entry.state == status::State::Broken {
            out.flush()?;
            printer.raw_stderr(&entry.compat_broken_message());
        }
    }
    out.flush()?;
    Ok(Exit::Success)
}

/// How long a command waits for another run's tree lock before giving up.
const LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30 * 60);

/// Whether an action writes to the DKMS tree or the install tree. mktarball does: its
/// tarball is written under a temp name in `<m>/<v>/tarball/`, which another run's
/// sweep would delete, and it reads builds another run may be replacing.
fn changes_trees(action: Action) -> bool {
    !matches!(
        action,
        Action::Status
            | Action::Plan
            | Action::Completions
            | Action::Manpage
            | Action::Cleanup
            | Action::GenerateMok
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_error_exits_with_the_code_it_knows_and_shows_its_own_message_first() {
        let tarball: anyhow::Error = dkms_core::engine::EngineError::ArchiveMissing {
            archive: "/no/such.tar.gz".into(),
        }
        .into();
        assert_eq!(exit_of(&tarball), Exit::Usage);
        assert_eq!(tarball.to_string(), "/no/such.tar.gz does not exist");

        let refused = refuse(Exit::AlreadyInstalled, "no --all here").context("while parsing");
        assert_eq!(exit_of(&refused), Exit::AlreadyInstalled);
        assert_eq!(exit_of(&anyhow::anyhow!("plain")), Exit::Failure);
    }
}
