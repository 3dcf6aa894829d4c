//! Evaluating a dkms.conf and its override files into a [`RawConf`]: without a shell
//! when the files are plain assignments (`fast`), else from the command's batch when
//! `batch` already evaluated it, else one bash child running eval.sh, in a fresh
//! scratch directory and only after the trust gate passed every file.

use super::fast;
use super::{parse_dump, ConfError, EvalContext, RawConf};
use crate::exec::{Command, ExecError};
use std::ffi::OsString;
use std::path::{Path, PathBuf};

pub(super) const EVAL_SCRIPT: &str = include_str!("eval.sh");

/// Evaluates the dkms.conf and its override files: without a shell when the file is
/// plain assignments (see `fast`), else through bash.
pub fn evaluate_raw(conf: &Path, ctx: &EvalContext) -> Result<RawConf, ConfError> {
    let text = std::fs::read(conf).map_err(|source| ConfError::Unreadable {
        file: conf.to_path_buf(),
        source,
    })?;
    let mut raw = match fast::evaluate(conf, &text, ctx) {
        Some(raw) => raw,
        None => match ctx.prepared.as_ref().and_then(|p| p.get(conf, ctx)) {
            Some(prepared) => prepared?,
            None => evaluate_with_bash(conf, ctx)?,
        },
    };
    apply_directives(&mut raw, ctx);
    Ok(raw)
}

/// `--directive NAME=VALUE` replaces the directive's scalar value (element 0) after
/// sourcing, re-matching it when it is one of the regex directives.
fn apply_directives(raw: &mut RawConf, ctx: &EvalContext) {
    for (name, value) in &ctx.directives {
        raw.values
            .entry(name.clone())
            .or_default()
            .insert(0, value.clone().into_bytes());
        let subject = match name.as_str() {
            "MAKE_MATCH" | "PATCH_MATCH" | "BUILD_EXCLUSIVE_KERNEL" => &ctx.kernelver,
            "BUILD_EXCLUSIVE_ARCH" => &ctx.arch,
            _ => continue,
        };
        raw.matches.remove(&(name.clone(), 0));
        if !value.is_empty() {
            if let Some(rc) = fast::ere_match(value.as_bytes(), subject) {
                raw.matches.insert((name.clone(), 0), rc);
            }
        }
    }
}

/// The general path: bash sources the files (see eval.sh).
///
/// Refuses (before starting bash) files the context's trust gate does not pass.
pub fn evaluate_with_bash(conf: &Path, ctx: &EvalContext) -> Result<RawConf, ConfError> {
    let files = ctx.conf_files(conf);
    if let Some(gate) = &ctx.trust {
        gate.check_conf_files(&files)
            .map_err(|reason| ConfError::Untrusted {
                file: conf.to_path_buf(),
                reason: Box::new(reason),
            })?;
    }
    let marker = marker();
    // A dkms.conf is a script: what it writes to relative paths lands in a directory
    // of its own that is removed afterwards, not in the source (upstream uses the
    // caller's working directory, `/` in a pacman hook). Without one, `/`.
    let scratch = tempfile::Builder::new()
        .prefix("dkms-hook-eval.")
        .tempdir_in(&ctx.scratch_dir)
        .ok();
    let cwd = scratch.as_ref().map_or(Path::new("/"), |d| d.path());
    // As root, bash runs as the build user, able to write only in its scratch dir.
    let jail = match &scratch {
        Some(dir) => {
            let jail = ctx.builder.jail(&[dir.path()]);
            crate::sandbox::hand_over(dir.path(), &jail).map_err(|source| ConfError::Eval {
                file: conf.to_path_buf(),
                source: ExecError::Spawn {
                    command: format!("chown {}", dir.path().display()),
                    source,
                },
            })?;
            jail
        }
        None => ctx.builder.jail(&[]),
    };
    let command = Command::build_step("bash", "evaluate dkms.conf files", &jail)
        .caller_env(&ctx.caller_env)
        .args(["--norc", "--noprofile", "-c", EVAL_SCRIPT, "dkms-eval"])
        .args(script_args(&marker, &files, ctx))
        .dir(cwd)
        .timeout(ctx.timeout);
    let output = command
        .output_with_stdin(&[])
        .map_err(|source| match source {
            ExecError::Timeout { timeout, .. } => ConfError::Hung {
                file: conf.to_path_buf(),
                timeout,
            },
            source => ConfError::Eval {
                file: conf.to_path_buf(),
                source,
            },
        })?;
    let mut raw = parse_dump(&output.stdout);
    raw.file = conf.to_path_buf();
    checked(raw)
}

/// eval.sh's arguments after `$0`: the marker, the context dkms.conf sees, `--` and
/// the files to source.
pub(super) fn script_args(marker: &str, files: &[PathBuf], ctx: &EvalContext) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec![
        marker.into(),
        ctx.kernelver.clone().into(),
        ctx.arch.clone().into(),
        ctx.kernel_source_dir.clone().into(),
        ctx.kernel_config.clone().into(),
        ctx.dkms_tree.clone().into(),
        ctx.source_tree.clone().into(),
        ctx.install_tree.clone().into(),
        ctx.module.clone().into(),
        ctx.module_version.clone().into(),
        "--".into(),
    ];
    args.extend(files.iter().map(|f| f.clone().into_os_string()));
    args
}

/// What bash's dump says about the files as an error: one could not be opened, one
/// exited the shell, or bash could not parse one.
pub(super) fn checked(raw: RawConf) -> Result<RawConf, ConfError> {
    if let Some((file, reason)) = raw.unreadable.first() {
        return Err(ConfError::UnreadableByBuilder {
            file: file.clone(),
            reason: reason.clone(),
        });
    }
    if let Some(file) = raw.exited.first() {
        return Err(ConfError::Exited { file: file.clone() });
    }
    for (file, text) in &raw.stderr {
        if let Some(message) = syntax_error(text) {
            return Err(ConfError::Syntax {
                file: file.clone(),
                message,
            });
        }
    }
    Ok(raw)
}

/// A marker that a dkms.conf will not print by accident.
pub(super) fn marker() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("\u{1}dkms-hook-{}-{nanos}\u{1}", std::process::id())
}

/// Picks bash's syntax error out of what sourcing printed, with its line number.
fn syntax_error(stderr: &str) -> Option<String> {
    let line = stderr
        .lines()
        .find(|l| l.contains("syntax error") || l.contains("unexpected end of file"))?;
    // bash prints "<file>: line N: syntax error ..."; keep from "line N" on.
    let start = line.find("line ").unwrap_or(0);
    Some(line[start..].trim().to_string())
}
