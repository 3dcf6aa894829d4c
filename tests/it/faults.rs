//! A real SIGKILL at every state-changing system call of a command, and what must hold
//! afterwards.
//!
//! Technique: the command first runs uninterrupted under `strace -f -b execve`, which
//! records each system call of dkms-hook's own threads (children such as make, cp and
//! sign-file are let go at their execve, so they are neither counted nor killed). For
//! each traced call, the `n`-th `name` call of a thread, the command then runs again
//! from the same starting tree under `strace -e inject=name:signal=KILL:when=n`: the
//! kernel kills dkms-hook on entering exactly that call, before it does anything.
//!
//! After each kill: every module file in the install tree and in the builds is complete
//! (byte-identical to a module of the old or the new version), no `kernel-*` link
//! dangles, the installs that worked before still work (old or new version), status
//! runs. Then the same command runs again and must leave exactly the tree an
//! uninterrupted run leaves, with no temp name anywhere.

use crate::report::{Category, Tally};
use crate::support::{run, Sandbox, K53, K54, KERNELS};
use crate::trees::{
    is_kept_module_file, is_module_file, is_temp, restore_trees, save_trees, Node, State,
};
use std::collections::{HashMap, HashSet};
use std::fs;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// System calls that change files or directories, and `openat` (creating a file is
/// an open): a kill before each of them produces every state a run passes through.
/// Plus `waitid`, where dkms-hook starts waiting for a child it just started (make,
/// cp, strip, sign-file): a kill there leaves that child running without its parent.
const STATE_CHANGING: [&str; 26] = [
    "waitid",
    "openat",
    "creat",
    "mkdir",
    "mkdirat",
    "rmdir",
    "rename",
    "renameat",
    "renameat2",
    "link",
    "linkat",
    "symlink",
    "symlinkat",
    "unlink",
    "unlinkat",
    "write",
    "pwrite64",
    "writev",
    "fsync",
    "fdatasync",
    "fchmod",
    "fchmodat",
    "chmod",
    "ftruncate",
    "truncate",
    "copy_file_range",
];

/// Every kill point is tried, unless `DKMS_HOOK_FAULT_POINTS=<n>` asks for a quicker
/// run: then each scenario kills at every rename, symlink and waitid and at `n` other
/// points evenly spread over the run.
fn point_cap() -> usize {
    std::env::var("DKMS_HOOK_FAULT_POINTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX)
}

/// One command to interrupt, on a tree a setup function prepared.
struct Scenario<'a> {
    /// The name in the reliability report.
    name: &'static str,
    args: &'a [&'a str],
    /// `(module, kernel)`: installs that worked before the command and must keep
    /// working (old or new version) at every moment.
    kept: &'a [(&'a str, &'a str)],
    /// Files of the install tree (relative) that must be there, complete, at every
    /// moment: a module of the kernel that ours replaces, or ours.
    kept_files: &'a [&'a str],
    /// Whether the work is spread over the scheduler's worker threads. Each thread
    /// counts its own calls, and which thread takes which target varies from run to
    /// run, so some points traced in the reference run may not come up again; those
    /// are not counted as kills. Single-threaded commands must reach every point.
    threaded: bool,
}

/// Runs our binary under strace with `strace_args`; returns the exit status and what
/// the command printed.
fn run_under_strace(
    sb: &Sandbox,
    strace_args: &[String],
    args: &[&str],
) -> (std::process::ExitStatus, String) {
    let mut wrapper: Vec<&str> = vec!["strace", "-f", "-b", "execve", "-qq"];
    wrapper.extend(strace_args.iter().map(String::as_str));
    let out = sb
        .ours_command(&wrapper, args)
        .stdin(Stdio::null())
        .output()
        .expect("running strace (install it: scripts/install-deps)");
    let text = format!(
        "--- stdout ---\n{}--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

/// The `(system call, n)` pairs of a trace written with `-f -o`, in the order they
/// first happen: the `n`-th call of that name in one of dkms-hook's threads. Children
/// (any process other than the first that calls execve) are left out.
fn kill_points(trace: &str) -> Vec<(String, usize)> {
    kill_points_where(trace, |_| true)
}

/// [`kill_points`] at the calls whose traced text passes `keep` (every call still
/// counts towards `n`).
fn kill_points_where(trace: &str, keep: impl Fn(&str) -> bool) -> Vec<(String, usize)> {
    let lines: Vec<(&str, &str)> = trace
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(pid, call)| (pid, call.trim_start()))
        .collect();
    let main = lines.first().map(|(pid, _)| *pid);
    let children: HashSet<&str> = lines
        .iter()
        .filter(|(pid, call)| Some(*pid) != main && call.starts_with("execve("))
        .map(|(pid, _)| *pid)
        .collect();
    let mut counts: HashMap<(&str, &str), usize> = HashMap::new();
    let mut seen = HashSet::new();
    let mut points = Vec::new();
    for (pid, call) in lines {
        if children.contains(pid) {
            continue;
        }
        let Some((name, _)) = call.split_once('(') else {
            continue;
        };
        if !STATE_CHANGING.contains(&name) {
            continue;
        }
        let n = counts.entry((pid, name)).or_insert(0);
        *n += 1;
        if keep(call) && seen.insert((name.to_string(), *n)) {
            points.push((name.to_string(), *n));
        }
    }
    points
}

/// The calls that put things in place (renames, symlinks), where a kill tests the
/// commit points themselves, and `waitid`, where children run: a sample always keeps
/// all of them.
const COMMITS: [&str; 8] = [
    "waitid",
    "rename",
    "renameat",
    "renameat2",
    "symlink",
    "symlinkat",
    "link",
    "linkat",
];

/// Every commit point of `points` plus at most `max` of the others, evenly spread,
/// first and last included; in the order they happen.
fn sample(points: &[(String, usize)], max: usize) -> Vec<(String, usize)> {
    let others: Vec<(String, usize)> = points
        .iter()
        .filter(|(call, _)| !COMMITS.contains(&call.as_str()))
        .cloned()
        .collect();
    let chosen = spread(&others, max);
    points
        .iter()
        .filter(|p| COMMITS.contains(&p.0.as_str()) || chosen.contains(p))
        .cloned()
        .collect()
}

/// At most `max` of `points`, evenly spread, first and last included.
fn spread<T: Clone>(points: &[T], max: usize) -> Vec<T> {
    if points.len() <= max {
        return points.to_vec();
    }
    if max < 2 {
        return points.iter().take(max).cloned().collect();
    }
    (0..max)
        .map(|i| points[i * (points.len() - 1) / (max - 1)].clone())
        .collect()
}

/// Runs `scenario` on the tree the sandbox holds now: uninterrupted once, then killed
/// at each point. Every kill is a case of the reliability report, counted as lost when
/// it broke an invariant; after the last point the tally is recorded, then the test
/// fails with every loss listed. Returns the number of kills.
fn kill_everywhere(sb: &Sandbox, scenario: &Scenario) -> usize {
    // First, so that a scenario failing before its kill points is counted too.
    let mut tally = Tally::new(Category::Fault, scenario.name);
    let saved = sb.path("fault-before");
    save_trees(sb, &saved);
    let before = State::read(sb);

    // The uninterrupted run, traced: the reference result and the kill points.
    let log = sb.path("fault-trace.log");
    let trace_set = format!("trace={},execve", STATE_CHANGING.join(","));
    let (status, output) = run_under_strace(
        sb,
        &[
            "-o".into(),
            log.display().to_string(),
            "-e".into(),
            trace_set,
            "-e".into(),
            "signal=none".into(),
        ],
        scenario.args,
    );
    assert!(
        status.success(),
        "{}: the uninterrupted run failed ({status})\n{output}",
        scenario.name
    );
    let after = State::read(sb);
    // Running the command again on its own result: the exit code a finished run gives
    // (5 for install, 3 for remove, ...), and the tree must not change.
    let again = sb.run_ours(scenario.args);
    let done_code = again.code;
    assert_eq!(
        State::read(sb).differences_from(&after),
        Vec::<String>::new(),
        "{}: running the command a second time changed the tree\n{again}",
        scenario.name
    );

    let trace = fs::read_to_string(&log).expect("reading the strace log");
    let all_points = kill_points(&trace);
    let points = sample(&all_points, point_cap());
    assert!(
        !points.is_empty(),
        "{}: no state-changing system call was traced",
        scenario.name
    );
    let good = {
        let mut good = before.modules();
        good.extend(after.modules());
        good
    };

    let mut not_reached = Vec::new();
    for (call, n) in &points {
        restore_trees(sb, &saved);
        let (status, output) = run_under_strace(
            sb,
            &[
                "-o".into(),
                "/dev/null".into(),
                "-e".into(),
                format!("trace={call}"),
                "-e".into(),
                "signal=none".into(),
                "-e".into(),
                format!("inject={call}:signal=KILL:when={n}"),
            ],
            scenario.args,
        );
        if status.signal() != Some(SIGKILL) {
            not_reached.push(format!("{call} #{n} ({status})\n{output}"));
            continue;
        }
        // A check that panics loses this kill point only: the scenario goes on.
        let problems = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            check_after_kill(sb, scenario, &before, &after, &good, done_code)
        }))
        .unwrap_or_else(|panic| vec![format!("the checks panicked: {}", panic_text(&panic))]);
        tally.case(problems, |problems| {
            format!("killed before {call} #{n}:\n  {}", problems.join("\n  "))
        });
    }
    let killed = tally.tried();
    let failures = tally.finish();
    assert!(
        failures.is_empty(),
        "{}: {} of {killed} kills lost something:\n{}",
        scenario.name,
        failures.len(),
        failures.join("\n")
    );
    assert!(
        not_reached.is_empty() || (scenario.threaded && killed >= points.len() / 2),
        "{}: {} of {} kill points were not reached (the run took another path):\n{}",
        scenario.name,
        not_reached.len(),
        points.len(),
        not_reached.join("\n")
    );
    eprintln!(
        "{}: {killed} kills ({} points traced, {} not reached), nothing lost",
        scenario.name,
        all_points.len(),
        not_reached.len()
    );
    killed
}

/// The message of a caught panic, for the list of losses.
fn panic_text(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<String>()
        .cloned()
        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "(no message)".to_string())
}

/// strace ends itself with the signal that killed the command.
const SIGKILL: i32 = 9;

/// Everything that must hold after a kill, then after running the command again.
fn check_after_kill(
    sb: &Sandbox,
    scenario: &Scenario,
    before: &State,
    after: &State,
    good: &HashSet<Vec<u8>>,
    done_code: i32,
) -> Vec<String> {
    let mut problems = Vec::new();
    let now = State::read(sb);

    // Never a half-written module, in the install tree or in a build.
    for (name, tree, kept) in [
        (
            "inst",
            &now.inst,
            (|p| is_module_file(p) && !is_temp(p)) as fn(&str) -> bool,
        ),
        ("dkms", &now.dkms, is_kept_module_file),
    ] {
        for (path, node) in tree {
            if kept(path) {
                match node {
                    Node::File(bytes) if good.contains(bytes) => {}
                    other => problems.push(format!(
                        "{name}/{path} is not a complete module of either version ({other:?})"
                    )),
                }
            }
        }
    }

    // No dangling install link.
    for (path, node) in &now.dkms {
        let Some(name) = path.rsplit('/').next() else {
            continue;
        };
        if !name.starts_with("kernel-") || is_temp(path) {
            continue;
        }
        match node {
            Node::Link(target) => {
                let module_dir = sb.dkms_tree().join(path).parent().unwrap().to_path_buf();
                if !module_dir.join(target).join("module").is_dir() {
                    problems.push(format!(
                        "dkms/{path} -> {} dangles (no built module there)",
                        target.display()
                    ));
                }
            }
            other => problems.push(format!("dkms/{path} is not a symlink ({other:?})")),
        }
    }

    // What worked before still works: the link points at the old or the new build,
    // and each module of that build is in the kernel's module directory.
    for (module, kernel) in scenario.kept {
        let allowed: Vec<PathBuf> = [before.link(module, kernel), after.link(module, kernel)]
            .into_iter()
            .flatten()
            .collect();
        let Some(target) = now.link(module, kernel) else {
            problems.push(format!("{module} is no longer installed on {kernel}"));
            continue;
        };
        if !allowed.contains(&target) {
            problems.push(format!(
                "{module} on {kernel} links to {}, neither the old nor the new version",
                target.display()
            ));
            continue;
        }
        let built = sb.dkms_tree().join(module).join(&target).join("module");
        let names: Vec<String> = fs::read_dir(&built)
            .map(|entries| {
                entries
                    .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                    .filter(|n| is_module_file(n))
                    .collect()
            })
            .unwrap_or_default();
        if names.is_empty() {
            problems.push(format!(
                "{module} on {kernel}: no modules in {}",
                built.display()
            ));
        }
        for name in names {
            let installed = format!("{kernel}/updates/dkms/{name}");
            if !matches!(now.inst.get(&installed), Some(Node::File(bytes)) if good.contains(bytes))
            {
                problems.push(format!(
                    "{module} on {kernel}: inst/{installed} is missing or not a complete module"
                ));
            }
        }
    }

    for file in scenario.kept_files {
        if !matches!(now.inst.get(*file), Some(Node::File(bytes)) if good.contains(bytes)) {
            problems.push(format!("inst/{file} is missing or not a complete module"));
        }
    }

    for args in [&["status", "--compat"][..], &["status"][..]] {
        let out = sb.run_ours(args);
        if out.code != 0 {
            problems.push(format!("`{}` fails after the kill\n{out}", args.join(" ")));
        }
    }

    // The next run converges on what an uninterrupted run leaves.
    let rerun = sb.run_ours(scenario.args);
    if rerun.code != 0 && rerun.code != done_code {
        problems.push(format!("running the command again fails\n{rerun}"));
    }
    let converged = State::read(sb).differences_from(after);
    if !converged.is_empty() {
        problems.push(format!(
            "running the command again does not converge:\n    {}",
            converged.join("\n    ")
        ));
    }
    problems
}

/// hello/1.0 added and installed on both kernels, through our binary.
fn hello_1_installed_on_both(sb: &Sandbox) {
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["install", "hello/1.0", "-k", K53, "-k", K54]);
}

/// hello/2.0 added (and built on `built_on`).
fn hello_2_added(sb: &Sandbox, built_on: &[&str]) {
    sb.copy_fixture("hello", "2.0");
    sb.ours(&["add", "hello/2.0"]);
    for kernel in built_on {
        sb.ours(&["build", "hello/2.0", "-k", kernel]);
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_an_upgrade_install_leaves_the_old_or_the_new_module_working() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    hello_2_added(&sb, &[K53]);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "install hello/2.0 over 1.0 (built)",
            args: &["install", "hello/2.0", "-k", K53],
            kept: &[("hello", K53), ("hello", K54)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_an_upgrade_that_builds_first_leaves_the_old_module_working() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    hello_2_added(&sb, &[]);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "install hello/2.0 over 1.0 (build and install)",
            args: &["install", "hello/2.0", "-k", K53],
            kept: &[("hello", K53), ("hello", K54)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_a_forced_rebuild_of_the_installed_version_never_leaves_its_link_dangling() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "build --force of the installed hello/1.0",
            args: &["build", "hello/1.0", "-k", K53, "--force"],
            kept: &[("hello", K53), ("hello", K54)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_add_leaves_the_installed_version_alone_and_the_rerun_adds() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    sb.copy_fixture("hello", "2.0");
    kill_everywhere(
        &sb,
        &Scenario {
            name: "add hello/2.0 next to the installed 1.0",
            args: &["add", "hello/2.0"],
            kept: &[("hello", K53), ("hello", K54)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_uninstall_leaves_the_other_kernel_alone_and_the_rerun_finishes() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "uninstall hello/1.0 from one kernel",
            args: &["uninstall", "hello/1.0", "-k", K53],
            kept: &[("hello", K54)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_remove_all_leaves_other_modules_alone_and_the_rerun_finishes() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    sb.copy_fixture("twomods", "1.0");
    sb.ours(&["add", "twomods/1.0"]);
    sb.ours(&["install", "twomods/1.0", "-k", K53]);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "remove hello/1.0 --all",
            args: &["remove", "hello/1.0", "--all"],
            kept: &[("twomods", K53)],
            kept_files: &[],
            threaded: false,
        },
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_autoinstall_of_two_modules_on_two_kernels_loses_nothing() {
    let sb = Sandbox::new();
    hello_1_installed_on_both(&sb);
    hello_2_added(&sb, &KERNELS);
    sb.copy_fixture("twomods", "1.0");
    sb.ours(&["add", "twomods/1.0"]);
    sb.ours(&["build", "twomods/1.0", "-k", K53, "-k", K54]);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "autoinstall hello/2.0 and twomods/1.0 on two kernels (built)",
            args: &["autoinstall", "-k", K53, "-k", K54],
            kept: &[("hello", K53), ("hello", K54)],
            kept_files: &[],
            threaded: true,
        },
    );
}

/// hello/1.0 added and built for K53, and a module of the same name already in K53's
/// `updates/dkms` (a module of the kernel that ours replaces; its bytes are hello's
/// build for the other kernel, the same version and srcversion, so installing over it
/// needs `--force-version-override`, as with upstream). Returns its path relative to the install tree.
fn hello_1_built_over_an_original(sb: &Sandbox) -> String {
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    sb.ours(&["build", "hello/1.0", "-k", K53, "-k", K54]);
    let original = format!("{K53}/updates/dkms/hello.ko");
    fs::create_dir_all(sb.install_tree().join(K53).join("updates/dkms")).unwrap();
    fs::copy(
        sb.built_module_dir("hello", "1.0", K54).join("hello.ko"),
        sb.install_tree().join(&original),
    )
    .unwrap();
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    original
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_a_first_install_over_a_kernel_module_keeps_that_module_or_ours_in_place() {
    let sb = Sandbox::new();
    let original = hello_1_built_over_an_original(&sb);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "first install of hello/1.0 over a module of the kernel",
            args: &[
                "install",
                "hello/1.0",
                "-k",
                K53,
                "--force-version-override",
            ],
            kept: &[],
            kept_files: &[&original],
            threaded: false,
        },
    );
    let archived = sb.original_module_dir("hello", K53).join("hello.ko");
    assert!(archived.is_file(), "the install archives the original");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_during_uninstall_puts_the_kernels_own_module_back_exactly_once() {
    let sb = Sandbox::new();
    let original = hello_1_built_over_an_original(&sb);
    let bytes = fs::read(sb.install_tree().join(&original)).unwrap();
    sb.ours(&[
        "install",
        "hello/1.0",
        "-k",
        K53,
        "--force-version-override",
    ]);
    kill_everywhere(
        &sb,
        &Scenario {
            name: "uninstall of hello/1.0 that restores a module of the kernel",
            args: &["uninstall", "hello/1.0", "-k", K53],
            kept: &[],
            kept_files: &[&original],
            threaded: false,
        },
    );
    assert_eq!(
        fs::read(sb.install_tree().join(&original)).unwrap(),
        bytes,
        "uninstall puts the original back"
    );
}

/// `openssl <args>`'s stdout; fails the test when openssl fails.
fn openssl(args: &[&str], file: &std::path::Path) -> String {
    let mut cmd = Command::new("openssl");
    cmd.args(args).arg(file);
    let out = run(cmd);
    assert_eq!(out.code, 0, "openssl {args:?} {}\n{out}", file.display());
    out.stdout
}

/// What is wrong with the signing key pair in the DKMS tree and with the signature of
/// `module`: both halves must be there, be one pair, and have signed the module.
fn signing_problems(sb: &Sandbox, module: &std::path::Path) -> Vec<String> {
    let (key, cert) = (
        sb.dkms_tree().join("mok.key"),
        sb.dkms_tree().join("mok.pub"),
    );
    if !key.is_file() || !cert.is_file() {
        return vec![format!(
            "half a key pair: mok.key {}, mok.pub {}",
            if key.is_file() { "present" } else { "missing" },
            if cert.is_file() { "present" } else { "missing" }
        )];
    }
    let mut problems = Vec::new();
    let cert_public = openssl(
        &["x509", "-inform", "DER", "-noout", "-pubkey", "-in"],
        &cert,
    );
    if cert_public != openssl(&["pkey", "-pubout", "-in"], &key) {
        problems.push("mok.key and mok.pub are not one pair".to_string());
    }
    let serial = openssl(
        &["x509", "-inform", "DER", "-noout", "-serial", "-in"],
        &cert,
    );
    let mut cmd = Command::new("modinfo");
    cmd.args(["-F", "sig_key"]).arg(module);
    let signed_by = run(cmd).stdout.trim().replace(':', "");
    if format!("serial={signed_by}") != serial.trim() {
        problems.push(format!(
            "{} is not signed with mok.pub (sig_key {signed_by:?}, certificate {})",
            module.display(),
            serial.trim()
        ));
    }
    problems
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_kill_while_the_first_build_makes_the_signing_key_leaves_one_whole_pair_after_the_next_run() {
    let mut tally = Tally::new(
        Category::Fault,
        "first build, while it makes the signing key",
    );
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.ours(&["add", "hello/1.0"]);
    let args = ["build", "hello/1.0", "-k", K53];
    let saved = sb.path("fault-before");
    save_trees(&sb, &saved);
    let log = sb.path("fault-trace.log");
    let (status, output) = run_under_strace(
        &sb,
        &[
            "-o".into(),
            log.display().to_string(),
            "-e".into(),
            format!("trace={},execve", STATE_CHANGING.join(",")),
            "-e".into(),
            "signal=none".into(),
        ],
        &args,
    );
    assert!(status.success(), "the uninterrupted build failed\n{output}");
    // A new key pair each run, so no reference tree: the checks are about the pair.
    let built = sb.built_module_dir("hello", "1.0", K53).join("hello.ko");
    assert_eq!(signing_problems(&sb, &built), Vec::<String>::new());
    let trace = fs::read_to_string(&log).expect("reading the strace log");
    // The key generation's own calls: those naming its scratch directory or the pair.
    let points = kill_points_where(&trace, |call| {
        call.contains(".dkms-signing-key-") || call.contains("/mok.")
    });
    assert!(
        points.len() >= 4,
        "the key generation was not traced: {points:?}"
    );

    for (call, n) in &points {
        restore_trees(&sb, &saved);
        let (status, output) = run_under_strace(
            &sb,
            &[
                "-o".into(),
                "/dev/null".into(),
                "-e".into(),
                format!("inject={call}:signal=KILL:when={n}"),
            ],
            &args,
        );
        assert_eq!(
            status.signal(),
            Some(SIGKILL),
            "{call} #{n} was not reached\n{output}"
        );
        let rerun = sb.run_ours(&args);
        let mut problems = Vec::new();
        if rerun.code != 0 && rerun.code != 3 {
            problems.push(format!("the next build fails\n{rerun}"));
        }
        problems.extend(signing_problems(&sb, &built));
        let left: Vec<String> = fs::read_dir(sb.dkms_tree())
            .unwrap()
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with(".dkms-signing-key-") || is_temp(n))
            .collect();
        if !left.is_empty() {
            problems.push(format!("left in the DKMS tree: {left:?}"));
        }
        tally.case(problems, |problems| {
            format!("killed before {call} #{n}:\n  {}", problems.join("\n  "))
        });
    }
    let failures = tally.finish();
    assert!(
        failures.is_empty(),
        "{} of {} kills during key generation broke the pair:\n{}",
        failures.len(),
        points.len(),
        failures.join("\n")
    );
}
