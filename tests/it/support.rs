//! The test harness: a sandbox holding a DKMS tree, a source tree and an install tree
//! for the two real kernels whose headers are installed, plus runners for our binary
//! and for Debian's upstream dkms 3.0.10.
//!
//! Upstream dkms is run in a private mount namespace, because even with
//! `--installtree` it writes `/var/lib/dkms/mok.{key,pub}` and runs depmod on the real
//! `/lib/modules/<kernel>`. Inside that namespace `/var/lib/dkms` is an empty tmpfs and
//! `/usr/lib/modules` (which is `/lib/modules` on merged-/usr Debian) is the sandbox's
//! install tree, so the real system is never touched. [`Sandbox::run_upstream`] also
//! checks after every run that the real directories still hold what they held before.
//!
//! Nothing here skips: not being root, fewer than two kernels with headers, a missing
//! or different upstream dkms, or a failing `unshare` make the tests fail. The tests
//! that use the sandbox are tier (b) or (c) and `#[ignore]`d, so plain `cargo test`
//! never gets here.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The kernels the sandbox installs: the two newest installed kernels with headers,
/// older first, found when the tests were built (crates/dkms-hook/build.rs), never
/// hard-coded. Empty when fewer than two exist; [`check_prerequisites`] then fails.
pub const KERNELS: [&str; 2] = [
    env!("DKMS_HOOK_IT_OLDER_KERNEL"),
    env!("DKMS_HOOK_IT_NEWER_KERNEL"),
];
/// The older of the two kernels (named after Debian's 6.1.0-53, which the tests were
/// first written for).
pub const K53: &str = KERNELS[0];
/// The newer of the two kernels (Debian's 6.1.0-54 when the tests were written).
pub const K54: &str = KERNELS[1];
/// Every installed kernel with headers the build found, for the failure message.
const KERNELS_FOUND: &str = env!("DKMS_HOOK_IT_KERNELS_FOUND");
/// The only architecture the sandbox builds for.
pub const ARCH: &str = "x86_64";

/// Debian's upstream dkms, the reference implementation.
pub const UPSTREAM_DKMS: &str = "/usr/sbin/dkms";
/// The upstream version whose output the normalizer knows.
pub const UPSTREAM_VERSION: &str = "dkms-3.0.10";

/// What a command printed and how it exited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

impl fmt::Display for Output {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "exit code: {}\n--- stdout ---\n{}--- stderr ---\n{}--- end ---",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A temporary directory `T` with:
///
/// ```text
/// T/dkms                     the DKMS tree (--dkmstree)
/// T/src                      module sources (--sourcetree)
/// T/inst/<K>/kernel/         an empty kernel module directory, for each of KERNELS
/// T/inst/<K>/build -> the real headers of K (see [`headers`])
/// T/etc                      our --etc-dir: dkms-hook.toml (pacman db T/pacman)
/// T/bin/dkms -> dkms-hook    our binary under its compat name
/// ```
pub struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Sandbox {
    pub fn new() -> Sandbox {
        check_prerequisites();
        let dir = tempfile::Builder::new()
            .prefix("dkms-hook-it.")
            .tempdir()
            .expect("creating the sandbox directory");
        // Upstream compares `readlink -f` of the install link with the tree path as a
        // string, so the tree must be named by its canonical path.
        let root = dir
            .path()
            .canonicalize()
            .expect("canonicalizing the sandbox");
        // The build user (builds as root run unprivileged) must reach the sources,
        // the headers links and its work dir; tempdirs are made 0700.
        std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("opening the sandbox to the build user");
        for sub in ["dkms", "src", "inst", "etc", "bin"] {
            mkdir(&root.join(sub));
        }
        for kernel in KERNELS {
            mkdir(&root.join("inst").join(kernel).join("kernel"));
            symlink(
                &headers(kernel),
                &root.join("inst").join(kernel).join("build"),
            );
        }
        symlink(Path::new(ours_exe()), &root.join("bin").join("dkms"));
        // Our settings: not the host's, and a pacman database that does not exist
        // (tests/it/pacman.rs reads real ones), so status output is the same anywhere.
        std::fs::write(
            root.join("etc/dkms-hook.toml"),
            format!("pacman_dbpath = \"{}\"\n", root.join("pacman").display()),
        )
        .expect("writing the sandbox's dkms-hook.toml");
        Sandbox { _dir: dir, root }
    }

    /// Sets `build_as_root = true` in the sandbox's dkms-hook.toml: builds run as
    /// root, as upstream's do, instead of as the unprivileged build user.
    pub fn build_as_root(&self) {
        let file = self.etc_dir().join("dkms-hook.toml");
        let mut text = std::fs::read_to_string(&file).expect("reading dkms-hook.toml");
        text.push_str("build_as_root = true\n");
        std::fs::write(&file, text).expect("writing dkms-hook.toml");
    }

    pub fn dkms_tree(&self) -> PathBuf {
        self.root.join("dkms")
    }

    pub fn source_tree(&self) -> PathBuf {
        self.root.join("src")
    }

    pub fn install_tree(&self) -> PathBuf {
        self.root.join("inst")
    }

    pub fn etc_dir(&self) -> PathBuf {
        self.root.join("etc")
    }

    /// `T/<relative>`, for what a test keeps in the sandbox besides the trees.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Creates `T/root/lib/modules/<K>/` (an empty `kernel/` and `build` -> the real
    /// headers) for each of KERNELS: an install tree laid out as `depmod -b T/root`
    /// wants it. Returns `T/root/lib/modules`.
    pub fn rooted_install_tree(&self) -> PathBuf {
        let tree = self.root.join("root/lib/modules");
        for kernel in KERNELS {
            mkdir(&tree.join(kernel).join("kernel"));
            symlink(&headers(kernel), &tree.join(kernel).join("build"));
        }
        tree
    }

    /// A sandbox with hello/1.0 added and installed for K54 by our binary: a working
    /// module that a command given bad input must leave working.
    pub fn with_hello_installed() -> Sandbox {
        let sb = Sandbox::new();
        sb.copy_fixture("hello", "1.0");
        sb.ours(&["add", "hello/1.0"]);
        sb.ours(&["install", "hello/1.0", "-k", K54]);
        assert!(sb.installed_module_dir(K54).join("hello.ko").is_file());
        sb
    }

    /// `T/dkms/<m>/<v>/<k>/<arch>/module/`: where a build keeps its modules.
    pub fn built_module_dir(&self, module: &str, version: &str, kernel: &str) -> PathBuf {
        self.dkms_tree()
            .join(module)
            .join(version)
            .join(kernel)
            .join(ARCH)
            .join("module")
    }

    /// `T/inst/<k>/updates/dkms/`: where Debian's dkms installs modules.
    pub fn installed_module_dir(&self, kernel: &str) -> PathBuf {
        self.install_tree()
            .join(kernel)
            .join("updates")
            .join("dkms")
    }

    /// `T/dkms/<m>/original_module/<k>/<arch>/`.
    pub fn original_module_dir(&self, module: &str, kernel: &str) -> PathBuf {
        self.dkms_tree()
            .join(module)
            .join("original_module")
            .join(kernel)
            .join(ARCH)
    }

    /// Copies `tests/fixtures/<module>-<version>` to `T/src/<module>-<version>`.
    pub fn copy_fixture(&self, module: &str, version: &str) -> PathBuf {
        let name = format!("{module}-{version}");
        let from = fixtures_dir().join(&name);
        assert!(
            from.join("dkms.conf").is_file(),
            "no fixture {}",
            from.display()
        );
        let to = self.source_tree().join(&name);
        copy_dir(&from, &to);
        fill_in_kernels(&to.join("dkms.conf"));
        to
    }

    /// Removes `T/src/<module>-<version>`, leaving the DKMS tree's `source` link dangling.
    pub fn remove_source(&self, module: &str, version: &str) {
        let dir = self.source_tree().join(format!("{module}-{version}"));
        fs::remove_dir_all(&dir).unwrap_or_else(|e| panic!("removing {}: {e}", dir.display()));
    }

    /// The options that point a dkms at this sandbox's trees.
    fn tree_args(&self) -> Vec<String> {
        self.tree_args_with(&self.install_tree())
    }

    fn tree_args_with(&self, install_tree: &Path) -> Vec<String> {
        vec![
            "--dkmstree".into(),
            path_str(&self.dkms_tree()),
            "--sourcetree".into(),
            path_str(&self.source_tree()),
            "--installtree".into(),
            path_str(install_tree),
        ]
    }

    /// Runs our binary as `dkms-hook <args> --dkmstree T/dkms --sourcetree T/src
    /// --installtree T/inst --etc-dir T/etc`.
    pub fn run_ours(&self, args: &[&str]) -> Output {
        self.run_ours_at(Path::new(ours_exe()), args)
    }

    /// Runs our binary under its compat name: argv[0] is `T/bin/dkms`, a symlink to it.
    pub fn run_ours_as_dkms(&self, args: &[&str]) -> Output {
        self.run_ours_at(&self.root.join("bin").join("dkms"), args)
    }

    fn run_ours_at(&self, program: &Path, args: &[&str]) -> Output {
        self.run_ours_with(program, args, &self.tree_args())
    }

    /// Runs our binary like [`Sandbox::run_ours`], but with `--installtree
    /// install_tree` instead of `T/inst`.
    pub fn run_ours_with_install_tree(&self, install_tree: &Path, args: &[&str]) -> Output {
        let trees = self.tree_args_with(install_tree);
        self.run_ours_with(Path::new(ours_exe()), args, &trees)
    }

    /// Runs our binary and fails the test unless it exits 0.
    pub fn ours(&self, args: &[&str]) -> Output {
        let out = self.run_ours(args);
        assert_eq!(out.code, 0, "dkms-hook {args:?} failed\n{out}");
        out
    }

    fn run_ours_with(&self, program: &Path, args: &[&str], trees: &[String]) -> Output {
        let mut cmd = Command::new(program);
        self.configure_ours(&mut cmd, args, trees);
        run(cmd)
    }

    fn configure_ours(&self, cmd: &mut Command, args: &[&str], trees: &[String]) {
        cmd.args(args)
            .args(trees)
            .arg("--etc-dir")
            .arg(self.etc_dir())
            // Our settings file (see Sandbox::new), not the host's.
            .env("DKMS_HOOK_CONFIG", self.etc_dir().join("dkms-hook.toml"))
            .env_remove("RUST_LOG");
    }

    /// Our binary with `args` and the sandbox's trees, not yet run, behind `wrapper`
    /// (a tracer, `nsenter`, ...; empty for none): for tests that need stdin, a
    /// signal, a mount namespace or several runs at once.
    pub fn ours_command(&self, wrapper: &[&str], args: &[&str]) -> Command {
        let trees = self.tree_args();
        let mut cmd = match wrapper.split_first() {
            Some((program, rest)) => {
                let mut cmd = Command::new(program);
                cmd.args(rest).arg(ours_exe());
                cmd
            }
            None => Command::new(ours_exe()),
        };
        self.configure_ours(&mut cmd, args, &trees);
        cmd
    }

    /// Runs our binary like [`Sandbox::run_ours`], with `stdin` as its standard input
    /// (what pacman gives `dkms-hook hook ...`: the target lines).
    pub fn run_ours_with_stdin(&self, args: &[&str], stdin: &[u8]) -> Output {
        use std::io::Write;
        let mut cmd = self.ours_command(&[], args);
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = stdin.to_vec();
        // Written from a thread: the child may fill its output pipes before reading.
        let writer = std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
        let out = child.wait_with_output().expect("waiting for dkms-hook");
        writer.join().expect("the stdin writer");
        Output {
            stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
            stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
            code: out.status.code().unwrap_or(-1),
        }
    }

    /// Runs Debian's dkms with `<args> --dkmstree T/dkms --sourcetree T/src
    /// --installtree T/inst` in a private mount namespace (see the module docs), with
    /// `LC_ALL=C`, and checks that the real system was left alone.
    pub fn run_upstream(&self, args: &[&str]) -> Output {
        let before = real_system_snapshot();
        const SCRIPT: &str = r#"root=$1; shift
mount --make-rprivate / &&
mount -t tmpfs tmpfs /var/lib/dkms &&
mount --bind "$root/inst" /usr/lib/modules &&
exec "$0" "$@""#;
        let mut cmd = Command::new("unshare");
        cmd.args(["-m", "sh", "-c", SCRIPT, UPSTREAM_DKMS])
            .arg(&self.root)
            .args(args)
            .args(self.tree_args())
            .env("LC_ALL", "C");
        let out = run(cmd);
        let after = real_system_snapshot();
        assert_eq!(
            before, after,
            "upstream dkms {args:?} changed /var/lib/dkms or /usr/lib/modules/<kernel> on the real system\n{out}"
        );
        out
    }

    /// Runs upstream dkms and fails the test unless it exits 0.
    pub fn upstream(&self, args: &[&str]) -> Output {
        let out = self.run_upstream(args);
        assert_eq!(out.code, 0, "upstream dkms {args:?} failed\n{out}");
        out
    }

    /// Copies the fixture (unless already in T/src) and `dkms add`s it.
    pub fn add(&self, module: &str, version: &str) {
        if !self
            .source_tree()
            .join(format!("{module}-{version}"))
            .exists()
        {
            self.copy_fixture(module, version);
        }
        self.upstream(&["add", "-m", module, "-v", version]);
    }

    /// `dkms build` for one kernel (the module must be added).
    pub fn build(&self, module: &str, version: &str, kernel: &str) {
        self.upstream(&["build", "-m", module, "-v", version, "-k", kernel]);
        let built = self.built_module_dir(module, version, kernel);
        assert!(built.is_dir(), "dkms build left no {}", built.display());
    }

    /// `dkms install` for one kernel (builds first if needed).
    pub fn install(&self, module: &str, version: &str, kernel: &str) {
        self.upstream(&["install", "-m", module, "-v", version, "-k", kernel]);
        let link = self
            .dkms_tree()
            .join(module)
            .join(format!("kernel-{kernel}-{ARCH}"));
        assert!(
            link.symlink_metadata().is_ok(),
            "dkms install left no {}",
            link.display()
        );
    }
}

/// The fixed prefix upstream 3.4 (and we) print on stderr after a `m/v: broken` line.
pub fn broken_message(module_version: &str) -> String {
    format!(
        "\nError! {module_version}: Missing the module source directory or the symbolic link pointing to it.\nManual intervention is required!\n"
    )
}

/// The three remarks status appends to built and installed lines, as dkms 3.0.10
/// words them and as 3.1.3 and later (and we) do. Index 0 is the original-module
/// remark; 1 and 2 come from the per-module loop.
const SUFFIXES: [(&str, &str); 3] = [
    (" (original_module exists)", " (Original modules exist)"),
    (
        " (WARNING! Missing some built modules!)",
        " (Built modules are missing in the kernel modules folder)",
    ),
    (
        " (WARNING! Diff between built and installed module!)",
        " (Differences between built and installed modules)",
    ),
];

/// Turns dkms 3.0.10's status stdout into what 3.1.3+ prints for the same tree:
///
/// - the remarks get their new wording; 3.0.10 repeats the per-module remark once per
///   module (no `break`), 3.1.3+ prints only the first, so only the first is kept;
/// - each `m/v` in `broken` (a version whose `source` link dangles) is listed by
///   3.0.10 as `m/v: added` and by 3.0.13+ as `m/v: broken`.
///
/// Returns the normalized stdout and the stderr 3.4 adds: one [`broken_message`] per
/// broken line, in order.
pub fn normalize_upstream_3_0_10(stdout: &str, broken: &[&str]) -> (String, String) {
    let mut out = String::new();
    let mut stderr = String::new();
    for line in stdout.lines() {
        if let Some(mv) = line.strip_suffix(": added") {
            if broken.contains(&mv) {
                out.push_str(&format!("{mv}: broken\n"));
                stderr.push_str(&broken_message(mv));
                continue;
            }
        }
        let (mut base, mut found) = (line, Vec::new());
        'strip: loop {
            for (i, (old, _)) in SUFFIXES.iter().enumerate() {
                if let Some(rest) = base.strip_suffix(old) {
                    base = rest;
                    found.push(i);
                    continue 'strip;
                }
            }
            break;
        }
        found.reverse();
        out.push_str(base);
        if found.contains(&0) {
            out.push_str(SUFFIXES[0].1);
        }
        if let Some(&first) = found.iter().find(|&&i| i != 0) {
            out.push_str(SUFFIXES[first].1);
        }
        out.push('\n');
    }
    (out, stderr)
}

/// Runs `status <args>` with upstream and with ours (as `dkms-hook` and as `dkms`) and
/// fails unless stdout, stderr and the exit code agree byte for byte after
/// [`normalize_upstream_3_0_10`]. Returns the (normalized) expected stdout so callers
/// can also pin it down literally.
pub fn assert_status_matches_upstream(sb: &Sandbox, args: &[&str], broken: &[&str]) -> String {
    let mut full = vec!["status"];
    full.extend_from_slice(args);
    let upstream = sb.upstream(&full);
    let (stdout, broken_stderr) = normalize_upstream_3_0_10(&upstream.stdout, broken);
    let expected = Output {
        stdout,
        stderr: upstream.stderr.clone() + &broken_stderr,
        code: upstream.code,
    };
    for (face, ours) in compat_status_runs(sb, &full) {
        if ours != expected {
            panic!(
                "`{face} {}` differs from upstream dkms 3.0.10 (normalized)\n\
                 === upstream, as printed ===\n{upstream}\n\
                 === expected (normalized) ===\n{expected}\n\
                 === ours ===\n{ours}",
                full.join(" ")
            );
        }
    }
    expected.stdout
}

/// Runs `status <args>` (in `full`) through both forms that print upstream's lines:
/// `dkms-hook status --compat` (plain `dkms-hook status` explains itself) and the
/// binary run as `dkms`.
fn compat_status_runs(sb: &Sandbox, full: &[&str]) -> [(&'static str, Output); 2] {
    let compat: Vec<&str> = full.iter().copied().chain(["--compat"]).collect();
    [
        ("dkms-hook --compat", sb.run_ours(&compat)),
        ("dkms", sb.run_ours_as_dkms(full)),
    ]
}

/// [`assert_status_matches_upstream`] for each argument list.
pub fn assert_statuses_match_upstream(sb: &Sandbox, arg_lists: &[&[&str]], broken: &[&str]) {
    for args in arg_lists {
        assert_status_matches_upstream(sb, args, broken);
    }
}

/// Runs `status <args>` with ours (both faces) and fails unless it prints exactly
/// `stdout` and `stderr` and exits 0.
pub fn assert_ours_status(sb: &Sandbox, args: &[&str], stdout: &str, stderr: &str) {
    let mut full = vec!["status"];
    full.extend_from_slice(args);
    let expected = Output {
        stdout: stdout.to_string(),
        stderr: stderr.to_string(),
        code: 0,
    };
    for (face, ours) in compat_status_runs(sb, &full) {
        if ours != expected {
            panic!(
                "`{face} {}` is wrong\n=== expected ===\n{expected}\n=== ours ===\n{ours}",
                full.join(" ")
            );
        }
    }
}

/// `<module>/<version>, <kernel>, x86_64: <state>` plus the newline.
pub fn line(module_version: &str, kernel: &str, state: &str) -> String {
    format!("{module_version}, {kernel}, {ARCH}: {state}\n")
}

/// Fixtures that treat one kernel differently name it by placeholder, since the
/// kernels are found at build time: `@OLDER_KERNEL@` (the release as text) and
/// `@NEWER_KERNEL_RE@` (the release as a POSIX regular expression).
fn fill_in_kernels(conf: &Path) {
    let text = fs::read_to_string(conf).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
    if !text.contains('@') {
        return;
    }
    let as_regex: String = K54
        .chars()
        .flat_map(|c| {
            let escape = matches!(
                c,
                '.' | '[' | ']' | '(' | ')' | '*' | '+' | '?' | '^' | '$' | '|' | '\\' | '{' | '}'
            );
            escape.then_some('\\').into_iter().chain([c])
        })
        .collect();
    let filled = text
        .replace("@OLDER_KERNEL@", K53)
        .replace("@NEWER_KERNEL_RE@", &as_regex);
    fs::write(conf, filled).unwrap_or_else(|e| panic!("{}: {e}", conf.display()));
}

fn ours_exe() -> &'static str {
    env!("CARGO_BIN_EXE_dkms-hook")
}

fn fixtures_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// The headers of an installed kernel: where its `build` link leads (every
/// distribution), else Debian's `/usr/src/linux-headers-<kernel>`.
pub fn headers(kernel: &str) -> PathBuf {
    let build = Path::new("/usr/lib/modules").join(kernel).join("build");
    match fs::canonicalize(&build) {
        Ok(dir) if dir.join("Makefile").is_file() => dir,
        _ => PathBuf::from(format!("/usr/src/linux-headers-{kernel}")),
    }
}

/// Fails (never skips) when what the suite needs is missing.
fn check_prerequisites() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        assert!(
            dkms_core::trust::process_is_root(),
            "tier (b) and (c) tests need root (mount namespaces, a real install tree): \
             run scripts/test as root; plain `cargo test` runs tier (a) only"
        );
        assert!(
            KERNELS.iter().all(|k| !k.is_empty()),
            "tier (b) and (c) tests need two installed kernels with headers \
             (/usr/lib/modules/<release>/build or /usr/src/linux-headers-<release>); \
             the build found {}: install the headers of a second kernel \
             (scripts/install-deps) and rebuild",
            if KERNELS_FOUND.is_empty() {
                "none"
            } else {
                KERNELS_FOUND
            }
        );
        for kernel in KERNELS {
            let makefile = headers(kernel).join("Makefile");
            assert!(
                makefile.is_file(),
                "kernel headers for {kernel} are missing ({} does not exist): \
                 install linux-headers-{kernel}",
                makefile.display()
            );
        }
        assert!(
            Path::new(UPSTREAM_DKMS).is_file(),
            "upstream dkms is missing ({UPSTREAM_DKMS}): install Debian's dkms {UPSTREAM_VERSION}"
        );
        let mut cmd = Command::new(UPSTREAM_DKMS);
        cmd.arg("--version");
        let version = run(cmd);
        assert_eq!(
            version.stdout.trim(),
            UPSTREAM_VERSION,
            "the normalizer knows only {UPSTREAM_VERSION}'s output\n{version}"
        );
        for tool in [
            "unshare", "nsenter", "strace", "make", "gcc", "depmod", "modinfo", "patch", "openssl",
        ] {
            let mut cmd = Command::new("sh");
            cmd.args(["-c", "command -v \"$0\"", tool]);
            assert_eq!(run(cmd).code, 0, "{tool} is missing");
        }
    });
}

/// The names in the real directories upstream dkms must not write to.
pub fn real_system_snapshot() -> Vec<(PathBuf, BTreeSet<String>)> {
    let mut dirs = vec![PathBuf::from("/var/lib/dkms")];
    dirs.extend(
        KERNELS
            .iter()
            .map(|k| Path::new("/usr/lib/modules").join(k)),
    );
    dirs.into_iter()
        .map(|dir| {
            let names = fs::read_dir(&dir)
                .map(|entries| {
                    entries
                        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
                        .collect()
                })
                .unwrap_or_default();
            (dir, names)
        })
        .collect()
}

pub fn run(mut cmd: Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    Output {
        stdout: String::from_utf8(out.stdout).expect("stdout is UTF-8"),
        stderr: String::from_utf8(out.stderr).expect("stderr is UTF-8"),
        code: out.status.code().unwrap_or(-1),
    }
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("sandbox paths are UTF-8").to_string()
}

pub fn mkdir(dir: &Path) {
    fs::create_dir_all(dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
}

pub fn symlink(target: &Path, link: &Path) {
    std::os::unix::fs::symlink(target, link)
        .unwrap_or_else(|e| panic!("linking {} -> {}: {e}", link.display(), target.display()));
}

fn copy_dir(from: &Path, to: &Path) {
    mkdir(to);
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("reading {}: {e}", from.display())) {
        let entry = entry.expect("reading a fixture entry");
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().expect("fixture file type").is_dir() {
            copy_dir(&src, &dst);
        } else {
            fs::copy(&src, &dst)
                .unwrap_or_else(|e| panic!("copying {} to {}: {e}", src.display(), dst.display()));
        }
    }
}

/// Top-level names in a DKMS tree that are dkms-hook's infrastructure, not dkms state:
/// the tree lock, status's conf cache and the build cache (tests/it/cache.rs checks
/// that one). Tree listings and snapshots leave them out.
pub const INFRASTRUCTURE: [&str; 3] = [
    ".dkms-hook.lock",
    ".dkms-hook-conf-cache",
    ".dkms-hook-cache",
];
