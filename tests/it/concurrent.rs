//! Several writers started at once on one tree (installs, a build, a pacman hook
//! run): they take the tree lock in turn, and the tree they leave is exactly the one
//! the same commands leave when run one after another.

use crate::report::{Category, Tally};
use crate::support::{Output, Sandbox, K53, K54};
use crate::trees::{restore_trees, save_trees, State};
use std::io::Write;
use std::process::{Child, Stdio};

/// A command line, and what it reads on stdin (the hook's targets).
type Job = (&'static [&'static str], &'static str);

/// Commands that touch different modules or kernels, so that any order gives one
/// result: the lock must make them run one at a time, not change what they do.
const JOBS: [Job; 4] = [
    (&["install", "hello/1.0", "-k", K53], ""),
    (&["install", "twomods/1.0", "-k", K53, "-k", K54], ""),
    (&["build", "zzz-base/1.0", "-k", K53], ""),
    // pacman installing a package that ships perkernel's source.
    (&["hook", "install"], "usr/src/perkernel-1.0/dkms.conf\n"),
];

fn start(sb: &Sandbox, (args, stdin): Job) -> Child {
    let mut child = sb
        .ours_command(&[], args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting dkms-hook");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(stdin.as_bytes())
        .expect("writing the hook targets");
    child
}

fn finish(child: Child) -> Output {
    let out = child.wait_with_output().expect("waiting for dkms-hook");
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn writers_started_together_leave_the_tree_the_same_commands_leave_one_by_one() {
    let tally = Tally::all_or_nothing(
        Category::Concurrent,
        "installs, a build and a hook run started together",
        JOBS.len(),
    );
    let sb = Sandbox::new();
    for module in ["hello", "twomods", "zzz-base", "perkernel"] {
        sb.copy_fixture(module, "1.0");
    }
    for module in ["hello", "twomods", "zzz-base"] {
        sb.ours(&["add", &format!("{module}/1.0")]);
    }
    // Makes the signing key, so that both runs sign with the same one.
    sb.ours(&["build", "zzz-base/1.0", "-k", K54]);
    let saved = sb.path("concurrent-before");
    save_trees(&sb, &saved);

    for job in JOBS {
        let out = finish(start(&sb, job));
        assert_eq!(out.code, 0, "{:?} alone\n{out}", job.0);
    }
    let serial = State::read(&sb);

    restore_trees(&sb, &saved);
    let children: Vec<Child> = JOBS.iter().map(|&job| start(&sb, job)).collect();
    let outputs: Vec<Output> = children.into_iter().map(finish).collect();
    for (job, out) in JOBS.iter().zip(&outputs) {
        assert_eq!(out.code, 0, "{:?} started with the others\n{out}", job.0);
    }
    assert!(
        outputs
            .iter()
            .any(|o| o.stderr.contains("waiting for another dkms-hook run")),
        "no run waited for another: they did not overlap"
    );
    assert_eq!(
        State::read(&sb).differences_from(&serial),
        Vec::<String>::new(),
        "the runs started together left another tree than the same runs one by one"
    );
    tally.nothing_lost();
}
