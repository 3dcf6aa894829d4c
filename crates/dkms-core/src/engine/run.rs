//! Executes a [`Plan`]: independent targets build in parallel, dependents wait for
//! their dependencies on the same kernel, a failure skips only what depends on it,
//! and each kernel gets one depmod as soon as its last target is done.
//!
//! Every make draws job slots from one GNU make jobserver holding `jobs` tokens; a
//! running build holds one token itself (make's implicit slot), so however many
//! builds run, no more than `jobs` compile jobs run at once.

use super::{depmod, install, EngineError, Event, Options, Progress};
use crate::host::Host;
use crate::name::KernelRelease;
use crate::plan::Plan;
use crate::tree::Target;
use serde::Serialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Condvar, Mutex};

/// What happened to one target of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum JobResult {
    Installed,
    /// BUILD_EXCLUSIVE_* turned out to exclude it (exit 77 upstream): not a failure.
    Excluded {
        reason: String,
    },
    /// Not attempted because a dependency failed.
    Skipped {
        reason: String,
    },
    Failed {
        message: String,
        log: Option<PathBuf>,
        exit_code: u8,
    },
}

/// One target's outcome, in plan order.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub target: Target,
    #[serde(flatten)]
    pub result: JobResult,
}

/// Everything a run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunReport {
    pub outcomes: Vec<Outcome>,
    /// Kernels whose depmod failed, with the error.
    pub depmod_failures: Vec<(String, String)>,
    /// Targets installed from the build cache, without compiling.
    pub from_cache: Vec<Target>,
}

impl RunReport {
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.outcomes.iter().filter(|o| {
            matches!(
                o.result,
                JobResult::Failed { .. } | JobResult::Skipped { .. }
            )
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Waiting,
    Running,
    Done(bool),
}

struct Shared {
    states: Vec<State>,
    results: Vec<Option<JobResult>>,
    /// Unfinished targets per kernel, for depmod as soon as a kernel is done.
    left_per_kernel: HashMap<KernelRelease, usize>,
    installed_per_kernel: HashMap<KernelRelease, bool>,
    started: usize,
    depmod_failures: Vec<(String, String)>,
    from_cache: Vec<Target>,
}

/// Runs every job of `plan` with up to `options.jobs` builds at once.
pub fn run_plan(host: &Host, plan: &Plan, options: &Options, progress: &dyn Progress) -> RunReport {
    let jobs: Vec<&Target> = plan.jobs().map(|d| &d.target).collect();
    let rebuild: Vec<bool> = plan.jobs().map(|d| d.rebuild).collect();
    let index_of: HashMap<&Target, usize> = jobs.iter().enumerate().map(|(i, t)| (*t, i)).collect();
    let deps: Vec<Vec<usize>> = plan
        .jobs()
        .map(|d| {
            d.after
                .iter()
                .filter_map(|t| index_of.get(t).copied())
                .collect()
        })
        .collect();
    // `jobs` 0 is framework.conf's `parallel_jobs=0`: no limit, so every job may run
    // at once and each make gets a bare `-j` instead of a jobserver's tokens.
    let unlimited = options.jobs == 0;
    let slots = if unlimited {
        jobs.len().max(1)
    } else {
        options.jobs
    };
    let mut options = options.clone();
    if options.jobserver.is_none() && !unlimited {
        match jobserver::Client::new(slots) {
            Ok(client) => options.jobserver = Some(client),
            Err(e) => progress.event(Event::NoJobserver { slots, error: &e }),
        }
    }
    let mut left_per_kernel = HashMap::new();
    for t in &jobs {
        *left_per_kernel.entry(t.kernel.clone()).or_insert(0) += 1;
    }
    // A kernel whose modules.dep missed an earlier run's installs (that run was killed
    // before its depmod) gets one too: with its jobs, or now when it has none.
    let mut stale = HashMap::new();
    let mut stale_now = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for d in &plan.decisions {
        let t = &d.target;
        if seen.insert((t.kernel.clone(), t.arch.clone()))
            && crate::tree::depmod_stale(&host.paths, &t.kernel, &t.arch)
        {
            if left_per_kernel.contains_key(&t.kernel) {
                stale.insert(t.kernel.clone(), true);
            } else {
                stale_now.push(t.kernel.clone());
            }
        }
    }
    for kernel in &stale_now {
        progress.event(Event::DepmodStale { kernel });
    }
    let shared = Mutex::new(Shared {
        states: vec![State::Waiting; jobs.len()],
        results: vec![None; jobs.len()],
        left_per_kernel,
        installed_per_kernel: stale,
        started: 0,
        depmod_failures: Vec::new(),
        from_cache: Vec::new(),
    });
    let wake = Condvar::new();
    let total = jobs.len();
    let chain = chain_lengths(&deps);
    let workers = slots.min(total).max(1);
    let lock = || shared.lock().unwrap_or_else(|p| p.into_inner());
    run_depmods(host, &options, progress, &stale_now, &lock);

    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                // Take the first waiting job whose dependencies all succeeded; a job
                // with a failed dependency is settled as skipped right here.
                let mut depmod_now = Vec::new();
                let picked = {
                    let mut state = lock();
                    loop {
                        let mut next = None;
                        let mut progressed = false;
                        for i in 0..total {
                            if state.states[i] != State::Waiting {
                                continue;
                            }
                            if let Some(&bad) = deps[i]
                                .iter()
                                .find(|&&d| state.states[d] == State::Done(false))
                            {
                                let dep = jobs[bad];
                                let reason = format!(
                                    "dependency {}/{} failed on {}",
                                    dep.module, dep.version, dep.kernel
                                );
                                progress.event(Event::DependencyFailed {
                                    target: jobs[i],
                                    reason: &reason,
                                });
                                state.states[i] = State::Done(false);
                                state.results[i] = Some(JobResult::Skipped { reason });
                                depmod_now.extend(finish_kernel(
                                    &mut state,
                                    &jobs[i].kernel,
                                    false,
                                ));
                                progressed = true;
                                continue;
                            }
                            // Of the ready jobs, the one with the longest chain of
                            // dependents behind it goes first: it bounds the run.
                            if deps[i]
                                .iter()
                                .all(|&d| state.states[d] == State::Done(true))
                                && next.is_none_or(|n: usize| chain[i] > chain[n])
                            {
                                next = Some(i);
                            }
                        }
                        if let Some(i) = next {
                            state.states[i] = State::Running;
                            state.started += 1;
                            break Some((i, state.started));
                        }
                        if progressed {
                            wake.notify_all();
                            continue;
                        }
                        if state.states.iter().all(|s| matches!(s, State::Done(_))) {
                            break None;
                        }
                        state = wake.wait(state).unwrap_or_else(|p| p.into_inner());
                    }
                };
                run_depmods(host, &options, progress, &depmod_now, &lock);
                let Some((i, number)) = picked else {
                    wake.notify_all();
                    return;
                };
                let target = jobs[i];
                progress.event(Event::JobStarted {
                    number,
                    total,
                    target,
                });
                // make's implicit job slot: held for the whole build.
                let token = options.jobserver.as_ref().and_then(|c| c.acquire().ok());
                let quiet = WarningsOnly(progress, options.job_steps);
                let known = (!options.retry_failed)
                    .then(|| crate::failure::still_failing(&host.paths, target))
                    .flatten();
                let (from_cache, store_key) =
                    if known.is_none() && (rebuild[i] || !target.is_built(&host.paths)) {
                        lookup_cache(host, target, &options, &quiet)
                    } else {
                        (false, None)
                    };
                if from_cache {
                    lock().from_cache.push(target.clone());
                }
                let outcome = if let Some(known) = known {
                    Err(EngineError::KnownFailure {
                        target: Box::new(target.clone()),
                        exit_code: known.exit_code,
                        log: known.log.unwrap_or_default(),
                    })
                } else if rebuild[i] {
                    // The source was replaced: build it again, then swap it in.
                    let forced = Options {
                        force: true,
                        ..options.clone()
                    };
                    if from_cache {
                        install(host, target, &forced, &quiet)
                    } else {
                        super::build(host, target, &forced, &quiet)
                            .and_then(|()| install(host, target, &forced, &quiet))
                    }
                } else {
                    install(host, target, &options, &quiet)
                };
                // The key is taken again after the build: a first build generates
                // the signing key pair, which the key covers.
                if let (Ok(()), Some(_), Some(cache)) = (&outcome, &store_key, &host.build_cache) {
                    let stored = super::read_conf(host, target, &options)
                        .map_err(|e| e.to_string())
                        .and_then(|conf| {
                            let key = crate::cache::key(host, target, &conf);
                            crate::cache::store(host, cache, target, &key)
                        });
                    if let Err(error) = stored {
                        quiet.event(Event::BuildCacheFailed {
                            target,
                            error: &error,
                        });
                    }
                }
                let result = match outcome {
                    Ok(()) => JobResult::Installed,
                    Err(EngineError::Excluded { reason, .. }) => JobResult::Excluded { reason },
                    // A remembered failure keeps its own message (it says why it was
                    // not rebuilt), so summaries print that rather than just the log.
                    Err(e @ EngineError::KnownFailure { .. }) => JobResult::Failed {
                        message: e.to_string(),
                        log: None,
                        exit_code: e.exit_code(),
                    },
                    Err(e) => JobResult::Failed {
                        message: e.to_string(),
                        log: e.log().cloned(),
                        exit_code: e.exit_code(),
                    },
                };
                drop(token);
                let ok = !matches!(result, JobResult::Failed { .. });
                progress.event(Event::JobFinished {
                    number,
                    total,
                    target,
                    result: &result,
                });
                let mut state = lock();
                state.states[i] = State::Done(ok);
                let installed = result == JobResult::Installed;
                state.results[i] = Some(result);
                let kernel_done = finish_kernel(&mut state, &target.kernel, installed);
                drop(state);
                run_depmods(host, &options, progress, kernel_done.as_slice(), &lock);
                wake.notify_all();
            });
        }
    });

    let state = shared.into_inner().unwrap_or_else(|p| p.into_inner());
    RunReport {
        outcomes: jobs
            .iter()
            .zip(state.results)
            .map(|(t, r)| Outcome {
                target: (*t).clone(),
                result: r.unwrap_or(JobResult::Skipped {
                    reason: "not run".into(),
                }),
            })
            .collect(),
        depmod_failures: state.depmod_failures,
        from_cache: state.from_cache,
    }
}

/// Restores `target`'s build from the build cache when it holds it: `(true, None)`.
/// Otherwise `(false, key)`, the key to keep the coming build under (`None`: no cache,
/// or it cannot be used). A refused entry is reported; the target is built again.
fn lookup_cache(
    host: &Host,
    target: &Target,
    options: &Options,
    progress: &dyn Progress,
) -> (bool, Option<String>) {
    let Some(cache) = &host.build_cache else {
        return (false, None);
    };
    let Ok(conf) = super::read_conf(host, target, options) else {
        return (false, None);
    };
    if conf.excluded.is_some() {
        return (false, None);
    }
    let key = crate::cache::key(host, target, &conf);
    match crate::cache::restore(host, cache, target, &key) {
        Ok(crate::cache::Lookup::Hit) => {
            progress.event(Event::FromBuildCache { target });
            (true, None)
        }
        Ok(crate::cache::Lookup::Miss) => (false, Some(key)),
        Ok(crate::cache::Lookup::Rejected(reason)) => {
            progress.event(Event::BuildCacheRejected {
                target,
                reason: &reason,
            });
            (false, Some(key))
        }
        Err(error) => {
            progress.event(Event::BuildCacheFailed {
                target,
                error: &error,
            });
            (false, None)
        }
    }
}

/// Counts a finished target of `kernel`; after its last one, returns the kernel when
/// anything was installed there, for one depmod (run outside the lock).
fn finish_kernel(
    state: &mut Shared,
    kernel: &KernelRelease,
    installed: bool,
) -> Option<KernelRelease> {
    if installed {
        state.installed_per_kernel.insert(kernel.clone(), true);
    }
    let left = state.left_per_kernel.get_mut(kernel)?;
    *left -= 1;
    (*left == 0
        && state
            .installed_per_kernel
            .get(kernel)
            .copied()
            .unwrap_or(false))
    .then(|| kernel.clone())
}

fn run_depmods<'a>(
    host: &Host,
    options: &Options,
    progress: &dyn Progress,
    kernels: &[KernelRelease],
    lock: &dyn Fn() -> std::sync::MutexGuard<'a, Shared>,
) {
    for kernel in kernels {
        match depmod(host, kernel, options, progress) {
            Ok(true) => progress.event(Event::DepmodDone { kernel }),
            Ok(false) => {}
            Err(e) => lock()
                .depmod_failures
                .push((kernel.to_string(), e.to_string())),
        }
    }
}

/// Passes the engine's warnings on but not its step-by-step lines: with many builds
/// at once, the scheduler's one line per start and end is what stays readable.
/// With `Options::job_steps` everything is passed on.
struct WarningsOnly<'a>(&'a dyn Progress, bool);

impl Progress for WarningsOnly<'_> {
    fn event(&self, event: Event<'_>) {
        // A build taken from the cache is said even then: nothing else shows it.
        if self.1 || event.is_warning() || matches!(event, Event::FromBuildCache { .. }) {
            self.0.event(event);
        } else {
            log::info!("{event:?}");
        }
    }
}

/// For each job, the number of jobs in the longest chain of jobs that (transitively)
/// wait for it, itself included: the critical-path priority.
fn chain_lengths(deps: &[Vec<usize>]) -> Vec<usize> {
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); deps.len()];
    for (job, needs) in deps.iter().enumerate() {
        for &needed in needs {
            dependents[needed].push(job);
        }
    }
    let mut memo: Vec<Option<usize>> = vec![None; deps.len()];
    fn length(
        job: usize,
        dependents: &[Vec<usize>],
        memo: &mut Vec<Option<usize>>,
        depth: usize,
    ) -> usize {
        if let Some(known) = memo[job] {
            return known;
        }
        // The plan has no cycles; the depth bound only guards against a bad plan.
        let longest = if depth > dependents.len() {
            0
        } else {
            dependents[job]
                .iter()
                .map(|&d| length(d, dependents, memo, depth + 1))
                .max()
                .unwrap_or(0)
        };
        memo[job] = Some(longest + 1);
        longest + 1
    }
    (0..deps.len())
        .map(|job| length(job, &dependents, &mut memo, 0))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::chain_lengths;

    #[test]
    fn the_head_of_the_longest_chain_has_the_highest_priority() {
        // 0 <- 1 <- 2 (a chain), 3 alone, 4 <- 5.
        let deps = vec![vec![], vec![0], vec![1], vec![], vec![], vec![4]];
        assert_eq!(chain_lengths(&deps), [3, 2, 1, 1, 2, 1]);
    }
}
