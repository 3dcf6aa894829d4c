//! The only place in the library that spawns processes.
//!
//! Every child gets an explicit environment (never ours: the library does not read the
//! environment), an explicit working directory and a deadline, and every spawn is logged
//! at debug level so `RUST_LOG=debug` shows exactly what ran. Failures are classified
//! here (not found, exit status, signal, timeout) so callers can explain them.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub use crate::environment::SYSTEM_PATH;

/// Why a child process did not produce what we needed.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error("`{program}` was not found: install it (it is needed to {purpose})")]
    NotFound { program: String, purpose: String },
    #[error("could not run `{command}`: {source}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish within {} seconds and was killed", .timeout.as_secs())]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` {status}{}", tail_suffix(.stderr_tail))]
    Failed {
        command: String,
        status: ExitDescription,
        stderr_tail: String,
    },
}

fn tail_suffix(tail: &str) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(": {tail}")
    }
}

/// How a process ended, worded for an error message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitDescription {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitDescription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitDescription::Code(code) => write!(f, "exited with status {code}"),
            ExitDescription::Signal(sig) => write!(f, "was killed by signal {sig}"),
        }
    }
}

/// A command to run: program, arguments, environment and working directory.
#[derive(Debug, Clone)]
pub struct Command {
    program: String,
    args: Vec<OsString>,
    env: Vec<(String, OsString)>,
    dir: Option<PathBuf>,
    timeout: Option<Duration>,
    purpose: String,
    jobserver: Option<jobserver::Client>,
    jail: crate::sandbox::Jail,
}

/// What a finished command printed, and how it ended.
#[derive(Debug)]
pub struct Output {
    pub status: ExitDescription,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Output {
    pub fn success(&self) -> bool {
        self.status == ExitDescription::Code(0)
    }
}

impl Command {
    /// A command with an empty environment except `PATH` (see [`SYSTEM_PATH`]).
    /// `purpose` finishes the sentence "it is needed to ..." in a not-found error.
    pub fn new(program: &str, purpose: &str) -> Self {
        Command {
            program: program.to_string(),
            args: Vec::new(),
            env: vec![("PATH".to_string(), SYSTEM_PATH.into())],
            dir: None,
            timeout: None,
            purpose: purpose.to_string(),
            jobserver: None,
            jail: crate::sandbox::Jail::none(),
        }
    }

    /// A build step (dkms.conf evaluation, patch, script, make, strip): the caller
    /// must say which jail it runs in, `Jail::none()` included, so no build step can
    /// start as root by omission. As the build user, `TMPDIR` is the first writable
    /// directory (the rest of the system, `/tmp` too, is read-only there).
    pub fn build_step(program: &str, purpose: &str, jail: &crate::sandbox::Jail) -> Self {
        let mut command = Command::new(program, purpose);
        command.jail = jail.clone();
        command
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<OsString>) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_string(), value.into()));
        self
    }

    /// Gives the child the caller's environment (see `environment`), its `PATH`
    /// included when it has one; variables set afterwards win.
    pub fn caller_env(mut self, caller: &crate::environment::CallerEnv) -> Self {
        for (name, value) in caller.vars() {
            self = self.env(name, value.clone());
        }
        self
    }

    pub fn dir(mut self, dir: &Path) -> Self {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Lets make (and its sub-makes) take job slots from a shared GNU make jobserver,
    /// so parallel builds together never run more compile jobs than the budget.
    pub fn jobserver(mut self, client: &jobserver::Client) -> Self {
        self.jobserver = Some(client.clone());
        self
    }

    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The command line as a user would type it, for logs and error messages.
    pub fn display(&self) -> String {
        let mut line = self.program.clone();
        for arg in &self.args {
            line.push(' ');
            let arg = arg.to_string_lossy();
            // Inline scripts would drown the message; they are ours, not the user's.
            if arg.len() > 200 {
                line.push_str("<script>");
                continue;
            }
            if arg.contains(|c: char| c.is_whitespace() || c == '\'' || c == '"') || arg.is_empty()
            {
                line.push('\'');
                line.push_str(&arg.replace('\'', r"'\''"));
                line.push('\'');
            } else {
                line.push_str(&arg);
            }
        }
        line
    }

    fn expression(&self) -> duct::Expression {
        let mut env = self.env.clone();
        if let Some(tmp) = self.jail.scratch() {
            env.retain(|(k, _)| k != "TMPDIR");
            env.push(("TMPDIR".to_string(), tmp.as_os_str().to_owned()));
        }
        let mut expr = duct::cmd(&self.program, &self.args).full_env(env);
        if let Some(dir) = &self.dir {
            expr = expr.dir(dir);
        }
        // A process group of its own, so a timeout can kill the subshells a script
        // started too, not just the script.
        let jobserver = self.jobserver.clone();
        let parent = std::process::id();
        let jail = self.jail.clone();
        let dir = self.dir.clone();
        expr.before_spawn(move |command| {
            use std::os::unix::process::CommandExt;
            command.process_group(0);
            // Prepared here, before the fork: the child only makes system calls.
            let jail = std::sync::Arc::new(jail.prepare(dir.as_deref())?);
            // The child dies with the thread that started it (which waits for it): a
            // make left running after dkms-hook was killed would go on writing in a
            // work directory that the next run reuses.
            // SAFETY: runs in the child between fork and exec, and only calls prctl,
            // getppid and the system calls of `sandbox::enter`, which are
            // async-signal-safe and allocate nothing.
            unsafe {
                command.pre_exec(move || {
                    // First: changing the uid clears the parent-death signal.
                    if let Some(jail) = jail.as_ref() {
                        crate::sandbox::enter(jail)?;
                    }
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    // We may have died before that took effect.
                    if u32::try_from(libc::getppid()).ok() != Some(parent) {
                        return Err(io::Error::from_raw_os_error(libc::ESRCH));
                    }
                    Ok(())
                });
            }
            if let Some(client) = &jobserver {
                client.configure_make(command);
            }
            Ok(())
        })
    }

    /// Runs the command with `stdin` as its input, capturing stdout and stderr. Fails
    /// only when it could not be run or timed out; a non-zero exit is in the output.
    pub fn output_with_stdin(&self, stdin: &[u8]) -> Result<Output, ExecError> {
        log::debug!("running {}", self.display());
        let handle = self
            .expression()
            .stdin_bytes(stdin.to_vec())
            .stdout_capture()
            .stderr_capture()
            .unchecked()
            .start()
            .map_err(|e| self.spawn_error(e))?;
        let output = match self.timeout {
            None => handle.wait().map_err(|e| self.spawn_error(e))?.clone(),
            Some(timeout) => {
                let deadline = Instant::now() + timeout;
                loop {
                    if let Some(output) = handle.try_wait().map_err(|e| self.spawn_error(e))? {
                        break output.clone();
                    }
                    if Instant::now() >= deadline {
                        for pid in handle.pids() {
                            kill_process_group(pid);
                        }
                        let _ = handle.kill();
                        return Err(ExecError::Timeout {
                            command: self.display(),
                            timeout,
                        });
                    }
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        };
        Ok(Output {
            status: describe(&output.status),
            stdout: output.stdout,
            stderr: output.stderr,
        })
    }

    /// Runs the command with stdout and stderr appended to `log` (make.log), and
    /// returns how it ended. Fails only when it could not be run.
    pub fn run_to_log(
        &self,
        log: &std::fs::File,
        stdin: &[u8],
    ) -> Result<ExitDescription, ExecError> {
        log::debug!("running {}", self.display());
        let out = log.try_clone().map_err(|e| self.spawn_error(e))?;
        let err = log.try_clone().map_err(|e| self.spawn_error(e))?;
        let output = self
            .expression()
            .stdin_bytes(stdin.to_vec())
            .stdout_file(out)
            .stderr_file(err)
            .unchecked()
            .run()
            .map_err(|e| self.spawn_error(e))?;
        Ok(describe(&output.status))
    }

    /// Runs the command and fails unless it exits 0; returns its stdout.
    pub fn read(&self) -> Result<Vec<u8>, ExecError> {
        let output = self.output_with_stdin(&[])?;
        if output.success() {
            Ok(output.stdout)
        } else {
            Err(ExecError::Failed {
                command: self.display(),
                status: output.status,
                stderr_tail: last_lines(&output.stderr, 5),
            })
        }
    }

    fn spawn_error(&self, source: io::Error) -> ExecError {
        if source.kind() == io::ErrorKind::NotFound {
            ExecError::NotFound {
                program: self.program.clone(),
                purpose: self.purpose.clone(),
            }
        } else {
            ExecError::Spawn {
                command: self.display(),
                source,
            }
        }
    }
}

/// Sends SIGKILL to the process group led by `pid` (every spawn leads its own group).
fn kill_process_group(pid: u32) {
    if let Ok(pid) = libc::pid_t::try_from(pid) {
        // SAFETY: kill(2) with a negative pid only signals that process group; a stale
        // group id at worst fails with ESRCH.
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
}

fn describe(status: &std::process::ExitStatus) -> ExitDescription {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitDescription::Code(code),
        (None, Some(sig)) => ExitDescription::Signal(sig),
        (None, None) => ExitDescription::Code(-1),
    }
}

/// The last `n` non-empty lines of a child's output, joined for an error message.
pub fn last_lines(bytes: &[u8], n: usize) -> String {
    let text = String::from_utf8_lossy(bytes);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join(" / ")
}
