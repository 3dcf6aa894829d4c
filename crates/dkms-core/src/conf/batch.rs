//! Evaluating many dkms.conf files in one bash process, so that a command that reads
//! every module version for every kernel (`status`) starts one shell instead of one
//! per module x kernel for the confs the bash-free path cannot read (zfs's sources the
//! kernel's `.config` and builds PRE_BUILD from command substitutions).
//!
//! The batch runs eval.sh once per request, each time in an asynchronous subshell of
//! one bash (a fork, not a new program), in an empty directory of its own, with eval.sh's usual
//! arguments and none of the driver's variables: each request sees what a bash
//! started for it alone would see, and prints the same dump after a `B <number>`
//! record. Results are kept in [`Prepared`], which [`evaluate_raw`](super::evaluate_raw)
//! asks before starting a bash of its own. Anything the batch could not answer (the
//! trust gate refused a file, the batch hung or could not start) is simply not
//! prepared, so that evaluation takes the per-conf path and reports its own error,
//! naming its file, exactly as before. Across commands, `cache` remembers the
//! dumps, so an unchanged tree starts no bash at all.

use super::eval::{checked, marker, script_args, EVAL_SCRIPT};
use super::raw::{parse_batch, RawConf};
use super::{cache, fast, ConfError, EvalContext};
use crate::exec::Command;
use crate::fs::Root;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

/// The driver: `$1` is eval.sh, then each request is a count N and eval.sh's N
/// arguments. Its own variables are unset before eval.sh runs, and stdin is empty.
const BATCH_SCRIPT: &str = r#"
__batch_script=$1
shift
__batch_n=0
while (($# > 0)); do
    __batch_count=$1
    shift
    __batch_args=("${@:1:__batch_count}")
    shift "$__batch_count"
    printf 'B\0%s\0' "$__batch_n"
    # An asynchronous command, waited for at once: a `( ... )` subshell is not quite
    # a fresh bash (there a failed `read` followed by a command not found ends the
    # dkms.conf's own subshell early), an asynchronous one is.
    mkdir -- "$__batch_n" && {
        cd -- "$__batch_n" && set -- "${__batch_args[@]}" &&
            eval 'unset "${!__batch_@}";'"$__batch_script"
    } </dev/null &
    wait "$!"
    __batch_n=$((__batch_n + 1))
done
"#;

/// At most this many bytes of arguments per bash process (Linux allows 2 MiB for
/// arguments and environment together); a longer batch is split.
const ARGUMENT_BYTES_PER_BATCH: usize = 256 * 1024;

/// How much longer than one evaluation's timeout a batch may take per request.
const TIME_PER_REQUEST: Duration = Duration::from_millis(100);

/// Which evaluation a result answers: the file and everything of the context that
/// eval.sh is given.
type Key = (PathBuf, String, String, String, String);

fn key(conf: &Path, ctx: &EvalContext) -> Key {
    (
        conf.to_path_buf(),
        ctx.kernelver.clone(),
        ctx.arch.clone(),
        ctx.module.clone(),
        ctx.module_version.clone(),
    )
}

/// bash's dumps for the confs a batch evaluated, before `--directive` is applied.
#[derive(Debug, Default)]
pub struct Prepared {
    dumps: Mutex<HashMap<Key, RawConf>>,
}

impl Prepared {
    /// The batch's result for `conf` in `ctx`, checked as a single evaluation's would
    /// be; `None` when the batch did not evaluate it.
    pub(super) fn get(&self, conf: &Path, ctx: &EvalContext) -> Option<Result<RawConf, ConfError>> {
        let dumps = self.dumps.lock().unwrap_or_else(|p| p.into_inner());
        dumps.get(&key(conf, ctx)).cloned().map(checked)
    }

    /// Evaluates, in as few bash processes as the argument limit allows, every
    /// request that needs bash and passes the trust gate, and keeps the results.
    /// With `cache` (the DKMS tree's root handle), results come from the conf cache
    /// when their key is unchanged, and new ones are stored there (see `cache`).
    /// The requests share the first one's caller environment, scratch dir and
    /// timeout: they come from one `Host`. Never fails: what is not prepared is
    /// evaluated on its own later, and reports its own error then.
    pub fn evaluate(&self, requests: &[(PathBuf, EvalContext)], cache: Option<&Root>) {
        let marker = marker();
        let mut pending: Vec<Pending> = Vec::new();
        for (conf, ctx) in requests {
            let files = ctx.conf_files(conf);
            let needs_bash = std::fs::read(conf)
                .ok()
                .is_some_and(|text| fast::evaluate(conf, &text, ctx).is_none());
            let trusted = ctx
                .trust
                .as_ref()
                .is_none_or(|gate| gate.check_conf_files(&files).is_ok());
            let key = key(conf, ctx);
            let known = pending.iter().any(|p| p.key == key)
                || self
                    .dumps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .contains_key(&key);
            if !needs_bash || !trusted || known {
                continue;
            }
            let cache_key = cache.and_then(|_| cache::key(&files, ctx));
            if let Some(mut raw) = cache_key.as_ref().and_then(|k| cache::load(ctx, k)) {
                raw.file = conf.clone();
                self.dumps
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(key, raw);
                continue;
            }
            pending.push(Pending {
                key,
                args: script_args(&marker, &files, ctx),
                ctx,
                cache_key,
            });
        }
        let Some((_, first)) = requests.first() else {
            return;
        };
        let mut start = 0;
        while start < pending.len() {
            let mut end = start;
            let mut bytes = 0;
            while end < pending.len() && (end == start || bytes < ARGUMENT_BYTES_PER_BATCH) {
                bytes += pending[end].args.iter().map(|a| a.len() + 1).sum::<usize>();
                end += 1;
            }
            self.run(first, &pending[start..end], cache);
            start = end;
        }
    }

    /// One bash process for `requests`, in a fresh scratch directory.
    fn run(&self, ctx: &EvalContext, requests: &[Pending], cache: Option<&Root>) {
        let Ok(scratch) = tempfile::Builder::new()
            .prefix("dkms-hook-eval.")
            .tempdir_in(&ctx.scratch_dir)
        else {
            return;
        };
        // As root, the batch's bash is the build user's too, as each conf's alone is
        // (conf/eval.rs): able to write only in its scratch dir. Without the hand-over
        // the confs go to their own paths, which say why.
        let jail = ctx.builder.jail(&[scratch.path()]);
        if crate::sandbox::hand_over(scratch.path(), &jail).is_err() {
            return;
        }
        let mut command = Command::build_step("bash", "evaluate dkms.conf files", &jail)
            .caller_env(&ctx.caller_env)
            .args([
                "--norc",
                "--noprofile",
                "-c",
                BATCH_SCRIPT,
                "dkms-eval",
                EVAL_SCRIPT,
            ]);
        for request in requests {
            command = command
                .arg(request.args.len().to_string())
                .args(&request.args);
        }
        let timeout = ctx.timeout + TIME_PER_REQUEST * requests.len() as u32;
        let Ok(output) = command
            .dir(scratch.path())
            .timeout(timeout)
            .output_with_stdin(&[])
        else {
            return;
        };
        let mut dumps = self.dumps.lock().unwrap_or_else(|p| p.into_inner());
        for (number, mut raw) in parse_batch(&output.stdout) {
            let Some(request) = requests.get(number) else {
                continue;
            };
            raw.file = request.key.0.clone();
            if let (Some(root), Some(cache_key)) = (cache, &request.cache_key) {
                cache::store(root, request.ctx, cache_key, &raw);
            }
            dumps.insert(request.key.clone(), raw);
        }
    }
}

/// A request the batch still has to evaluate.
struct Pending<'a> {
    key: Key,
    args: Vec<std::ffi::OsString>,
    ctx: &'a EvalContext,
    /// Its conf cache key, when there is a cache to store the result in.
    cache_key: Option<String>,
}
