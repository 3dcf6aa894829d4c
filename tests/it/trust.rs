//! Trust, as root (the tests run as root): module sources, dkms.conf files and
//! override files that a user other than root owns or can write are refused with an
//! error naming the path, owner, mode and fix, and nothing is built, run or changed;
//! `--allow-untrusted-sources` (or the setting) builds them. And deleting never follows
//! a symlink out of the DKMS tree or the install tree: a victim directory elsewhere in
//! the sandbox, reached through a planted symlink, survives every deleting command.
//!
//! Ownership is changed only inside each test's own sandbox directory.

use crate::report::{Category, Tally};
use crate::snapshot::Snapshot;
use crate::support::{mkdir, symlink, Output, Sandbox, ARCH, K53, K54};
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Debian's `nobody` user and `nogroup` group.
const NOBODY: u32 = 65534;

/// `chown -hR uid:gid path`, inside a sandbox only.
fn chown_tree(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    if fs::symlink_metadata(path).unwrap().is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            chown_tree(&entry.unwrap().path(), uid, gid);
        }
    }
}

fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

/// The trees a refused command must leave alone.
fn trees(sb: &Sandbox) -> Vec<PathBuf> {
    vec![
        sb.dkms_tree(),
        sb.source_tree(),
        sb.install_tree(),
        sb.etc_dir(),
    ]
}

fn hook_line(dir: &str) -> Vec<u8> {
    format!("usr/src/{dir}/dkms.conf\n").into_bytes()
}

/// Runs `args` (with `stdin` for the hook) and asserts it was refused for `path`:
/// non-zero exit, an error naming the path, `problem` and the way out, and not a
/// byte changed in the trees.
fn assert_refused(sb: &Sandbox, args: &[&str], stdin: Option<&[u8]>, path: &Path, problem: &str) {
    let tally = Tally::all_or_nothing(
        Category::BadInput,
        &format!("untrusted: {}", args.join(" ")),
        1,
    );
    let before = Snapshot::of(&trees(sb));
    let out = match stdin {
        Some(input) => sb.run_ours_with_stdin(args, input),
        None => sb.run_ours(args),
    };
    assert_ne!(out.code, 0, "{args:?} must be refused\n{out}");
    for part in [
        &format!("{} is {problem}", path.display()),
        "mode ",
        "--allow-untrusted-sources",
        "chmod",
    ] {
        assert!(out.stderr.contains(part), "{args:?}: no {part:?} in\n{out}");
    }
    before.assert_same(&Snapshot::of(&trees(sb)), &format!("refused {args:?}"));
    tally.nothing_lost();
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_source_owned_by_a_user_is_refused_as_root_and_builds_with_the_override() {
    let sb = Sandbox::new();
    let source = sb.copy_fixture("hello", "1.0");
    chown_tree(&source, NOBODY, NOBODY);
    let owned = "owned by a user other than root";
    let source_arg = source.display().to_string();
    let line = hook_line("hello-1.0");
    for (args, stdin) in [
        (vec!["add", "hello/1.0"], None),
        (vec!["add", source_arg.as_str()], None),
        (vec!["hook", "install"], Some(line.as_slice())),
    ] {
        assert_refused(&sb, &args, stdin, &source, owned);
    }
    let out = sb.run_ours(&["add", "hello/1.0"]);
    assert!(
        out.stderr.contains("nobody (65534)") && out.stderr.contains("chown -R root:root"),
        "{out}"
    );

    // Deliberately trusted: it builds and installs.
    sb.ours(&["add", "hello/1.0", "--allow-untrusted-sources"]);
    sb.ours(&[
        "install",
        "hello/1.0",
        "-k",
        K54,
        "--allow-untrusted-sources",
    ]);
    assert!(sb.installed_module_dir(K54).join("hello.ko").is_file());
    // Without the flag, the added source still is not built for another kernel, and
    // the plan says why instead of promising a build.
    assert_refused(
        &sb,
        &["build", "hello/1.0", "-k", K53],
        None,
        &source,
        owned,
    );
    assert_refused(
        &sb,
        &["install", "hello/1.0", "-k", K53],
        None,
        &source,
        owned,
    );
    let plan = sb.ours(&["plan", "-k", K53]);
    assert!(
        plan.stdout.contains("fail") && plan.stdout.contains(owned),
        "{plan}"
    );
    // The `dkms` face takes the flag too.
    let dkms = sb.run_ours_as_dkms(&["build", "hello/1.0", "-k", K53, "--allow-untrusted-sources"]);
    assert_eq!(dkms.code, 0, "{dkms}");
    assert!(sb
        .built_module_dir("hello", "1.0", K53)
        .join("hello.ko")
        .is_file());
}

/// A dkms.conf that needs bash and leaves a marker file when it runs.
fn marking_conf(sb: &Sandbox) -> (PathBuf, PathBuf) {
    let conf = sb.source_tree().join("hello-1.0/dkms.conf");
    let marker = sb.path("ran-as-root");
    fs::write(
        &conf,
        format!(
            "PACKAGE_NAME=hello\nPACKAGE_VERSION=1.0\nBUILT_MODULE_NAME[0]=hello\nDEST_MODULE_LOCATION[0]=/updates/dkms\nAUTOINSTALL=yes\ntouch {}\n",
            marker.display()
        ),
    )
    .unwrap();
    (conf, marker)
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_group_writable_dkms_conf_is_never_run_by_bash_as_root() {
    let sb = Sandbox::with_hello_installed();
    let (conf, marker) = marking_conf(&sb);
    chown_tree(&conf, 0, NOBODY);
    chmod(&conf, 0o664);
    let problem = "writable by a group other than root's";
    for args in [
        vec!["build", "hello/1.0", "-k", K53],
        vec!["autoinstall", "-k", K53],
    ] {
        assert_refused(&sb, &args, None, &conf, problem);
        assert!(!marker.exists(), "{args:?} ran the dkms.conf");
    }
    // status lists it as before, says why it did not read the dkms.conf, runs nothing.
    let status = sb.run_ours_as_dkms(&["status"]);
    assert_eq!(
        status.stdout,
        format!("hello/1.0, {K54}, {ARCH}: installed\n"),
        "{status}"
    );
    assert!(
        status.stderr.contains("not evaluated") && status.stderr.contains(problem),
        "{status}"
    );
    assert!(!marker.exists(), "status ran the dkms.conf");

    // Trusted in the settings: it is evaluated (the marker appears) and builds.
    // (As root: the unprivileged build user's dkms.conf could not write the marker.)
    fs::write(
        sb.etc_dir().join("dkms-hook.toml"),
        "allow_untrusted_sources = true\nbuild_as_root = true\n",
    )
    .unwrap();
    sb.ours(&["build", "hello/1.0", "-k", K53]);
    assert!(marker.exists());
    assert!(sb
        .built_module_dir("hello", "1.0", K53)
        .join("hello.ko")
        .is_file());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn directories_a_user_can_write_inside_or_above_a_source_are_refused() {
    let sb = Sandbox::with_hello_installed();
    let source = sb.source_tree().join("hello-1.0");
    let sub = source.join("include");
    mkdir(&sub);
    let build = ["build", "hello/1.0", "-k", K53];
    // Inside the source, even a sticky world-writable directory is refused: a file a
    // user drops there can still be picked up by the build.
    chmod(&sub, 0o1777);
    assert_refused(&sb, &build, None, &sub, "writable by everyone");
    chmod(&sub, 0o755);
    // The source tree root above it counts too...
    chmod(&sb.source_tree(), 0o777);
    assert_refused(&sb, &build, None, &sb.source_tree(), "writable by everyone");
    let out = sb.run_ours(&build);
    let fix = format!(
        "chown root:root {0} && chmod go-w {0}",
        sb.source_tree().display()
    );
    assert!(out.stderr.contains(&fix), "{out}");
    // ...but a sticky one above a source (like /tmp) lets nobody replace root's files.
    chmod(&sb.source_tree(), 0o1777);
    sb.ours(&build);
    assert!(sb
        .built_module_dir("hello", "1.0", K53)
        .join("hello.ko")
        .is_file());
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn an_override_file_a_user_owns_is_refused() {
    let sb = Sandbox::with_hello_installed();
    let file = sb.etc_dir().join("hello.conf");
    fs::write(&file, "AUTOINSTALL=yes\n").unwrap();
    chown_tree(&file, NOBODY, NOBODY);
    for args in [
        vec!["build", "hello/1.0", "-k", K53],
        vec!["autoinstall", "-k", K53],
    ] {
        assert_refused(&sb, &args, None, &file, "owned by a user other than root");
    }
    let out = sb.run_ours(&["build", "hello/1.0", "-k", K53]);
    assert!(out.stderr.contains("override file"), "{out}");
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn a_plain_dkms_conf_anyone_can_write_is_only_parsed_and_status_matches_upstream() {
    // The documented choice: status reads a plain-assignment dkms.conf without bash,
    // so it can list an untrusted module exactly as upstream does; building it is
    // still refused.
    let sb = Sandbox::with_hello_installed();
    let conf = sb.source_tree().join("hello-1.0/dkms.conf");
    chmod(&conf, 0o666);
    let expected = crate::support::assert_status_matches_upstream(&sb, &[], &[]);
    assert_eq!(expected, format!("hello/1.0, {K54}, {ARCH}: installed\n"));
    // The explained status says why K53 will not get it, instead of "pending".
    let matrix = sb.ours(&["status"]);
    assert!(
        matrix.stdout.contains("untrusted[") && matrix.stdout.contains("not built as root"),
        "{matrix}"
    );
    assert!(matrix.stdout.contains("writable by everyone"), "{matrix}");
    assert_refused(
        &sb,
        &["build", "hello/1.0", "-k", K53],
        None,
        &conf,
        "writable by everyone",
    );
}

// ---------------------------------------------------------------------------------
// Deleting never follows a symlink out of the trees
// ---------------------------------------------------------------------------------

/// A planted symlink in the DKMS tree or the install tree, pointing at `T/victim`.
struct Trap {
    name: &'static str,
    /// Fills `T/victim` and plants the link (on a sandbox with hello installed).
    plant: fn(&Sandbox, &Path),
    /// The deleting commands to try, each on a fresh sandbox, with hook stdin.
    commands: Vec<(Vec<String>, Option<Vec<u8>>)>,
    /// Whether the commands succeed (the link alone is removed) or refuse.
    succeeds: bool,
}

fn args(list: &[&str]) -> (Vec<String>, Option<Vec<u8>>) {
    (list.iter().map(|s| s.to_string()).collect(), None)
}

fn hook_remove_kernel(kernel: &str) -> (Vec<String>, Option<Vec<u8>>) {
    (
        vec!["hook".into(), "remove".into()],
        Some(format!("usr/lib/modules/{kernel}/modules.order\n").into_bytes()),
    )
}

/// A build directory's contents: what the victim imitates.
fn fake_build(dir: &Path) {
    mkdir(&dir.join("module"));
    mkdir(&dir.join("log"));
    fs::write(dir.join("module/hello.ko"), "precious module").unwrap();
    fs::write(dir.join("log/make.log"), "precious log").unwrap();
}

/// The kernel goes away without our hooks: `cleanup` then sees its leftovers.
fn remove_kernel(sb: &Sandbox, kernel: &str) {
    fs::remove_dir_all(sb.install_tree().join(kernel).join("kernel")).unwrap();
}

/// Runs one command against one trap and tallies it as a case of the reliability
/// report; `Err` says what went wrong.
fn run_trap(trap: &Trap, command: &(Vec<String>, Option<Vec<u8>>)) -> Result<(), String> {
    let mut tally = Tally::new(
        Category::BadInput,
        &format!(
            "symlink out of the tree ({}): {}",
            trap.name,
            command.0.join(" ")
        ),
    );
    let outcome = trap_outcome(trap, command);
    match &outcome {
        Ok(()) => tally.kept(),
        Err(what) => tally.lost(what.clone()),
    }
    tally.finish();
    outcome
}

/// The checks of [`run_trap`].
fn trap_outcome(trap: &Trap, command: &(Vec<String>, Option<Vec<u8>>)) -> Result<(), String> {
    let sb = Sandbox::with_hello_installed();
    let victim = sb.path("victim");
    mkdir(&victim);
    (trap.plant)(&sb, &victim);
    let before = Snapshot::of(std::slice::from_ref(&victim));
    assert!(
        fs::read_dir(&victim).unwrap().next().is_some(),
        "{}: the victim is empty",
        trap.name
    );
    let (list, stdin) = command;
    let list: Vec<&str> = list.iter().map(String::as_str).collect();
    let out: Output = match stdin {
        Some(input) => sb.run_ours_with_stdin(&list, input),
        None => sb.run_ours(&list),
    };
    let what = format!("{} with {list:?}", trap.name);
    if let Some(diff) = before.diff(&Snapshot::of(std::slice::from_ref(&victim))) {
        return Err(format!("{what} changed the victim:\n{diff}{out}"));
    }
    if trap.succeeds && out.code != 0 {
        return Err(format!("{what} failed\n{out}"));
    }
    let refused =
        out.stderr.contains("is a symbolic link") && out.stderr.contains("refusing to delete");
    if !trap.succeeds && (out.code == 0 || !refused) {
        return Err(format!("{what} did not refuse clearly\n{out}"));
    }
    Ok(())
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn deleting_and_installing_commands_never_follow_a_symlink_out_of_the_trees() {
    let traps = [
        Trap {
            name: "a module version directory",
            plant: |sb, victim| {
                symlink(&sb.source_tree().join("hello-1.0"), &victim.join("source"));
                fake_build(&victim.join(K53).join(ARCH));
                mkdir(&sb.dkms_tree().join("evil"));
                symlink(victim, &sb.dkms_tree().join("evil/1.0"));
            },
            commands: vec![
                args(&["remove", "evil/1.0", "--all"]),
                args(&["unbuild", "evil/1.0", "-k", K53]),
                args(&["install", "evil/1.0", "-k", K53]),
            ],
            succeeds: false,
        },
        Trap {
            name: "a build directory",
            plant: |sb, victim| {
                fake_build(&victim.join(ARCH));
                symlink(victim, &sb.dkms_tree().join("hello/1.0").join(K53));
            },
            commands: vec![
                args(&["unbuild", "hello/1.0", "-k", K53]),
                args(&["remove", "hello/1.0", "--all"]),
                hook_remove_kernel(K53),
            ],
            succeeds: false,
        },
        Trap {
            name: "a build directory of a removed kernel",
            plant: |sb, victim| {
                fake_build(&victim.join(ARCH));
                symlink(victim, &sb.dkms_tree().join("hello/1.0").join(K53));
                remove_kernel(sb, K53);
            },
            commands: vec![args(&["cleanup", "--yes"])],
            succeeds: false,
        },
        Trap {
            name: "an install directory",
            plant: |sb, victim| {
                let updates = sb.install_tree().join(K54).join("updates");
                fs::rename(&updates, victim.join("updates")).unwrap();
                symlink(&victim.join("updates"), &updates);
            },
            commands: vec![
                args(&["uninstall", "hello/1.0", "-k", K54]),
                args(&["remove", "hello/1.0", "--all"]),
                hook_remove_kernel(K54),
                args(&["install", "hello/1.0", "-k", K54, "--force"]),
            ],
            succeeds: false,
        },
        Trap {
            name: "archived original modules",
            plant: |sb, victim| {
                let dir = victim.join(K54).join(ARCH);
                mkdir(&dir);
                fs::write(dir.join("hello.ko"), "precious original").unwrap();
                symlink(victim, &sb.dkms_tree().join("hello/original_module"));
            },
            commands: vec![args(&["uninstall", "hello/1.0", "-k", K54])],
            succeeds: false,
        },
        // The link is the last component: only the link goes.
        Trap {
            name: "the source link",
            plant: |sb, victim| {
                fs::copy(
                    sb.source_tree().join("hello-1.0/dkms.conf"),
                    victim.join("dkms.conf"),
                )
                .unwrap();
                let link = sb.dkms_tree().join("hello/1.0/source");
                fs::remove_file(&link).unwrap();
                symlink(victim, &link);
            },
            commands: vec![args(&["remove", "hello/1.0", "--all"])],
            succeeds: true,
        },
        Trap {
            name: "a work directory",
            plant: |sb, victim| {
                fs::write(victim.join("make.log"), "precious log").unwrap();
                symlink(
                    victim,
                    &sb.dkms_tree().join(format!("hello/1.0/build-{K54}-{ARCH}")),
                );
            },
            commands: vec![args(&["unbuild", "hello/1.0", "-k", K54])],
            succeeds: true,
        },
        Trap {
            name: "a work directory of a removed kernel",
            plant: |sb, victim| {
                fs::write(victim.join("make.log"), "precious log").unwrap();
                symlink(
                    victim,
                    &sb.dkms_tree().join(format!("hello/1.0/build-{K53}-{ARCH}")),
                );
                remove_kernel(sb, K53);
            },
            commands: vec![args(&["cleanup", "--yes"])],
            succeeds: true,
        },
    ];
    let failures: Vec<String> = traps
        .iter()
        .flat_map(|trap| trap.commands.iter().map(move |c| (trap, c)))
        .filter_map(|(trap, command)| run_trap(trap, command).err())
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
