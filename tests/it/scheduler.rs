//! The dependency scheduler behind `dkms-hook autoinstall` and `dkms-hook plan`: real
//! modules built against the real headers of both kernels, dependencies linked
//! through the Module.symvers DKMS keeps per kernel (so a wrong order fails modpost),
//! and one shared make jobserver whose budget is checked by counting the compile and
//! link jobs that run at once.
//!
//! Helpers live at the bottom of this file: [`Spec`] writes a module source (several
//! C files, one exported `<name>_answer()` that calls its BUILD_DEPENDS' answers) and
//! registers it with `dkms-hook add`.

use crate::support::{Output, Sandbox, ARCH, K53, K54, KERNELS};
use serde_json::Value;
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

const BOTH: [&str; 4] = ["-k", K53, "-k", K54];

// ---------------------------------------------------------------------------------
// An spl/openzfs-style pair.

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_builds_an_openzfs_style_module_after_the_spl_style_module_it_links_against_on_both_kernels(
) {
    let sb = sandbox();
    // openzfs-mini sorts first and needs spl-mini's Module.symvers: alphabetical
    // order would fail in modpost.
    copy_fixture(&sb, "openzfs-mini-2.2.0");
    copy_fixture(&sb, "spl-mini-2.2.0");
    sb_add(&sb, "openzfs-mini/2.2.0");
    sb_add(&sb, "spl-mini/2.2.0");

    let out = autoinstall(&sb, &["-j", "2"]);
    assert_eq!(out.code, 0, "autoinstall failed\n{out}");
    let status = sb.run_ours(&["status", "--compat"]);
    let mut expected = String::new();
    for m in ["openzfs-mini", "spl-mini"] {
        for k in KERNELS {
            expected.push_str(&format!("{m}/2.2.0, {k}, {ARCH}: installed\n"));
        }
    }
    assert_eq!(
        status.stdout, expected,
        "status after autoinstall\n{status}"
    );

    for kernel in KERNELS {
        let dir = sb.installed_module_dir(kernel);
        let dependent = dir.join("openzfs_mini.ko");
        assert_eq!(
            modinfo(&dependent, "depends"),
            "spl_mini",
            "{} does not depend on spl_mini",
            dependent.display()
        );
        assert_eq!(
            modinfo(&dependent, "vermagic").split(' ').next(),
            Some(kernel)
        );
        assert_eq!(modinfo(&dir.join("spl_mini.ko"), "depends"), "");
        // The CRC openzfs-mini recorded for spl_mini_kmem_alloc is the one in the
        // Module.symvers of spl-mini's build for this very kernel.
        let symvers = sb
            .built_module_dir("spl-mini", "2.2.0", kernel)
            .join("Module.symvers");
        let exported = symvers_crc(&symvers, "spl_mini_kmem_alloc");
        let recorded = recorded_crc(&dependent, "spl_mini_kmem_alloc");
        assert_eq!(
            exported,
            recorded,
            "openzfs_mini.ko for {kernel} was not linked against {}",
            symvers.display()
        );
        assert_finished_before_started(&out, "spl-mini", "openzfs-mini", kernel);
    }
}

// ---------------------------------------------------------------------------------
// Plans: cycles, missing and failing dependencies, chains, diamonds.

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_two_module_cycle_fails_both_members_naming_the_cycle_and_other_modules_still_install() {
    let sb = sandbox();
    Spec::new("cycle-a").deps(&["cycle-b"]).add(&sb);
    Spec::new("cycle-b").deps(&["cycle-a"]).add(&sb);
    Spec::new("loner").add(&sb);

    let plan = plan_json(&sb, &["-k", K54]);
    for m in ["cycle-a", "cycle-b"] {
        let left = left_of(&plan, m, K54);
        assert_eq!(left["kind"], "failed", "{m} in the plan: {left}");
        let detail = left["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("cycle-a -> cycle-b -> cycle-a"),
            "{m}'s reason does not name the cycle: {detail}"
        );
    }
    assert_eq!(build_order(&plan, K54), ["loner"]);

    let out = autoinstall(&sb, &["-k", K54]);
    assert_eq!(out.code, 11, "a cycle is a failure\n{out}");
    assert!(
        out.stderr.contains("cycle-a -> cycle-b -> cycle-a"),
        "the cycle is not named on stderr\n{out}"
    );
    assert_eq!(
        states(&sb),
        [
            ("cycle-a/1.0", "added".to_string()),
            ("cycle-b/1.0", "added".to_string()),
            ("loner/1.0", format!("{K54}: installed")),
        ]
        .map(|(a, b)| (a.to_string(), b))
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_cycle_of_four_is_named_along_its_build_depends() {
    // cycle-a needs cycle-c, cycle-c needs cycle-b, cycle-b needs cycle-d, cycle-d
    // needs cycle-a: the loop is a -> c -> b -> d -> a (or, read as "is built
    // before", a -> d -> b -> c -> a); the names in sorted order are no loop at all.
    let sb = sandbox();
    let needs = [
        ("cycle-a", "cycle-c"),
        ("cycle-c", "cycle-b"),
        ("cycle-b", "cycle-d"),
        ("cycle-d", "cycle-a"),
    ];
    for (module, dep) in needs {
        Spec::new(module).deps(&[dep]).add(&sb);
    }
    let plan = plan_json(&sb, &["-k", K54]);
    for (module, _) in needs {
        let left = left_of(&plan, module, K54);
        assert_eq!(left["kind"], "failed", "{module} in the plan: {left}");
        let detail = left["detail"].as_str().unwrap_or_default();
        let named: Vec<&str> = detail
            .trim_start_matches("dependency cycle: ")
            .split(" -> ")
            .collect();
        let forward = named.windows(2).all(|w| needs.contains(&(w[0], w[1])));
        let backward = named.windows(2).all(|w| needs.contains(&(w[1], w[0])));
        assert!(
            named.len() == 5 && (forward || backward),
            "{module}'s reason names a loop its BUILD_DEPENDS do not form: {detail}"
        );
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_module_depending_on_itself_fails_and_other_modules_still_install() {
    let sb = sandbox();
    Spec::new("selfish").deps(&["selfish"]).add(&sb);
    Spec::new("loner").add(&sb);

    let plan = plan_json(&sb, &["-k", K54]);
    let left = left_of(&plan, "selfish", K54);
    assert_eq!(left["kind"], "failed", "selfish in the plan: {left}");
    assert!(
        left["detail"]
            .as_str()
            .unwrap_or_default()
            .contains("selfish -> selfish"),
        "the reason does not name the self-dependency: {left}"
    );
    assert_eq!(build_order(&plan, K54), ["loner"]);

    let out = autoinstall(&sb, &["-k", K54]);
    assert_eq!(out.code, 11, "{out}");
    assert!(out.stderr.contains("selfish -> selfish"), "{out}");
    assert_eq!(installed_on(&sb, K54), ["loner"]);
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_dependency_dkms_has_never_heard_of_defers_its_dependent_with_a_warning_and_autoinstall_exits_0(
) {
    let sb = sandbox();
    Spec::new("orphan").deps(&["ghost"]).add(&sb);
    Spec::new("loner").add(&sb);

    let plan = plan_json(&sb, &BOTH);
    for kernel in KERNELS {
        let left = left_of(&plan, "orphan", kernel);
        assert_eq!(left["kind"], "deferred", "orphan on {kernel}: {left}");
        assert_eq!(left["detail"], serde_json::json!(["ghost"]));
        assert_eq!(build_order(&plan, kernel), ["loner"]);
    }

    let out = autoinstall(&sb, &BOTH);
    assert_eq!(
        out.code, 0,
        "deferring is not a failure (dkms 3.4.1)\n{out}"
    );
    for kernel in KERNELS {
        assert!(
            out.stderr.lines().any(|l| l.starts_with("==> WARNING:")
                && l.contains("orphan/1.0")
                && l.contains(kernel)
                && l.contains("ghost")),
            "no warning that orphan waits for ghost on {kernel}\n{out}"
        );
        assert_eq!(installed_on(&sb, kernel), ["loner"]);
    }
    assert!(!out.stderr.contains("==> ERROR"), "{out}");
    let status = sb.run_ours(&["status", "--compat", "-m", "orphan"]);
    assert_eq!(status.stdout, "orphan/1.0: added\n", "{status}");

    // Once ghost is registered, the next run builds both, ghost first.
    Spec::new("ghost").add(&sb);
    let out = autoinstall(&sb, &BOTH);
    assert_eq!(out.code, 0, "{out}");
    for kernel in KERNELS {
        assert_eq!(installed_on(&sb, kernel), ["ghost", "loner", "orphan"]);
        assert_finished_before_started(&out, "ghost", "orphan", kernel);
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_dependency_that_fails_to_build_skips_its_dependents_on_that_kernel_installs_the_rest_and_exits_11(
) {
    let sb = sandbox();
    Spec::new("broken-base").broken().add(&sb);
    Spec::new("needs-broken").deps(&["broken-base"]).add(&sb);
    Spec::new("loner").add(&sb);

    let out = autoinstall(&sb, &BOTH);
    assert_eq!(out.code, 11, "{out}");
    for kernel in KERNELS {
        let reason = format!("dependency broken-base/1.0 failed on {kernel}");
        assert!(
            out.stderr
                .lines()
                .any(|l| l.contains("needs-broken/1.0") && l.contains(&reason)),
            "needs-broken on {kernel} is not reported as skipped with \"{reason}\"\n{out}"
        );
        assert!(
            !out.stdout
                .contains(&format!("building needs-broken/1.0 for {kernel}")),
            "needs-broken was started on {kernel} although its dependency failed\n{out}"
        );
        assert_eq!(installed_on(&sb, kernel), ["loner"]);
    }
    let status = sb.run_ours(&["status", "--compat", "-m", "needs-broken"]);
    assert_eq!(status.stdout, "needs-broken/1.0: added\n", "{status}");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_three_level_chain_builds_base_then_middle_then_top_on_each_kernel() {
    let sb = sandbox();
    // Alphabetical order is exactly wrong: top, middle, base.
    Spec::new("chain-1-top").deps(&["chain-2-mid"]).add(&sb);
    Spec::new("chain-2-mid").deps(&["chain-3-base"]).add(&sb);
    Spec::new("chain-3-base").add(&sb);

    let plan = plan_json(&sb, &BOTH);
    for kernel in KERNELS {
        assert_eq!(
            build_order(&plan, kernel),
            ["chain-3-base", "chain-2-mid", "chain-1-top"]
        );
    }
    let out = autoinstall(&sb, &["-j", "2"]);
    assert_eq!(out.code, 0, "{out}");
    for kernel in KERNELS {
        assert_eq!(
            installed_on(&sb, kernel),
            ["chain-1-top", "chain-2-mid", "chain-3-base"]
        );
        assert_finished_before_started(&out, "chain-3-base", "chain-2-mid", kernel);
        assert_finished_before_started(&out, "chain-2-mid", "chain-1-top", kernel);
        let top = sb.installed_module_dir(kernel).join("chain_1_top.ko");
        assert_eq!(modinfo(&top, "depends"), "chain_2_mid");
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_diamond_builds_the_base_before_both_sides_and_both_sides_before_the_top() {
    let sb = sandbox();
    // base <- left, base <- right, (left, right) <- top; alphabetical order is the
    // reverse of a valid one.
    Spec::new("diamond-1-top")
        .deps(&["diamond-2-left", "diamond-3-right"])
        .add(&sb);
    Spec::new("diamond-2-left")
        .deps(&["diamond-4-base"])
        .add(&sb);
    Spec::new("diamond-3-right")
        .deps(&["diamond-4-base"])
        .add(&sb);
    Spec::new("diamond-4-base").add(&sb);

    let plan = plan_json(&sb, &BOTH);
    let edges = [
        ("diamond-4-base", "diamond-2-left"),
        ("diamond-4-base", "diamond-3-right"),
        ("diamond-2-left", "diamond-1-top"),
        ("diamond-3-right", "diamond-1-top"),
    ];
    for kernel in KERNELS {
        let order = build_order(&plan, kernel);
        assert_eq!(order.len(), 4, "{order:?}");
        for (dep, dependent) in edges {
            let pos = |m: &str| order.iter().position(|o| o == m).unwrap();
            assert!(
                pos(dep) < pos(dependent),
                "plan order {order:?} on {kernel}"
            );
        }
    }
    let out = autoinstall(&sb, &["-j", "2"]);
    assert_eq!(out.code, 0, "{out}");
    for kernel in KERNELS {
        for (dep, dependent) in edges {
            assert_finished_before_started(&out, dep, dependent, kernel);
        }
        let top = sb.installed_module_dir(kernel).join("diamond_1_top.ko");
        let mut depends: Vec<String> = modinfo(&top, "depends")
            .split(',')
            .map(str::to_string)
            .collect();
        depends.sort();
        assert_eq!(depends, ["diamond_2_left", "diamond_3_right"]);
    }
}

// ---------------------------------------------------------------------------------
// Parallelism changes nothing in the result.

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_parallel_autoinstall_leaves_the_same_trees_byte_for_byte_as_a_serial_one() {
    // Same paths for both runs (the DWARF of a build names its directory, and the
    // build ID covers it), the same signing key, everything else from scratch.
    let sb = sandbox();
    let keys = signing_keys(&sb);
    copy_fixture(&sb, "openzfs-mini-2.2.0");
    copy_fixture(&sb, "spl-mini-2.2.0");
    let register = |sb: &Sandbox| {
        Spec::new("par-alpha").objects(3).add(sb);
        Spec::new("par-beta").objects(3).add(sb);
        sb_add(sb, "openzfs-mini/2.2.0");
        sb_add(sb, "spl-mini/2.2.0");
    };

    let mut trees = Vec::new();
    for jobs in ["1", "2"] {
        reset_trees(&sb);
        install_keys(&sb, &keys);
        register(&sb);
        let out = autoinstall(&sb, &["-j", jobs]);
        assert_eq!(out.code, 0, "autoinstall -j {jobs}\n{out}");
        assert_eq!(out.stdout.matches(": installed").count(), 8, "{out}");
        trees.push((snapshot(&sb.dkms_tree()), snapshot(&sb.install_tree())));
    }
    let (serial, parallel) = (&trees[0], &trees[1]);
    assert_same_tree("the DKMS tree", &serial.0, &parallel.0);
    assert_same_tree("the install tree", &serial.1, &parallel.1);
    // The comparison covers signatures and Module.symvers.
    let kos: Vec<_> = serial
        .1
        .iter()
        .filter(|(p, _)| p.ends_with(".ko"))
        .collect();
    assert_eq!(kos.len(), 8, "{:?}", serial.1.keys());
    for (path, entry) in kos {
        let Entry::File(bytes) = entry else {
            panic!("{path} is not a file")
        };
        assert!(
            bytes.ends_with(b"~Module signature appended~\n"),
            "{path} is not signed"
        );
    }
    assert!(serial
        .0
        .keys()
        .any(|p| p.ends_with("module/Module.symvers")));
}

// ---------------------------------------------------------------------------------
// One job budget for all builds together.

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_j2_never_runs_more_than_2_compile_jobs_at_once_across_all_builds() {
    let max = max_concurrent_jobs(2);
    assert!(max <= 2, "{max} jobs ran at once with -j 2");
    assert!(
        max >= 2,
        "no two jobs ever ran at once with -j 2: nothing parallel"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn autoinstall_j3_never_runs_more_than_3_compile_jobs_at_once_across_all_builds() {
    let max = max_concurrent_jobs(3);
    assert!(max <= 3, "{max} jobs ran at once with -j 3");
    assert!(
        max >= 2,
        "no two jobs ever ran at once with -j 3: nothing parallel"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn one_build_alone_takes_its_extra_job_slots_from_the_shared_jobserver() {
    // -j 2 and a single target: make must get the second slot from the jobserver.
    let sb = sandbox();
    let counter = JobCounter::new(&sb);
    Spec::new("solo").objects(6).counted(&counter).add(&sb);
    let out = autoinstall(&sb, &["-j", "2", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    let max = counter.max();
    assert_eq!(
        max,
        2,
        "one build with -j 2 ran {max} jobs at most\n{}",
        counter.events()
    );
}

/// Runs autoinstall with `-j jobs` for three counted modules on both kernels and
/// returns the most jobs that ran at once (compiles of .c files and links).
fn max_concurrent_jobs(jobs: usize) -> usize {
    let sb = sandbox();
    let counter = JobCounter::new(&sb);
    for m in ["jobs-a", "jobs-b", "jobs-c"] {
        Spec::new(m).objects(6).counted(&counter).add(&sb);
    }
    let j = jobs.to_string();
    let out = autoinstall(&sb, &["-j", &j]);
    assert_eq!(out.code, 0, "{out}");
    assert_eq!(out.stdout.matches(": installed").count(), 6, "{out}");
    let max = counter.max();
    assert!(
        max <= jobs,
        "-j {jobs}: {max} jobs ran at once; the job log (time, +/-, running, tool, file):\n{}",
        counter.events()
    );
    max
}

// =================================================================================
// Helpers.

fn sandbox() -> Sandbox {
    check_tools();
    Sandbox::new()
}

/// Fails (never skips) when a tool these tests use is missing.
fn check_tools() {
    static CHECKED: OnceLock<()> = OnceLock::new();
    CHECKED.get_or_init(|| {
        for tool in [
            "bash", "flock", "gcc-12", "ld", "modinfo", "modprobe", "openssl", "sleep",
        ] {
            let found = Command::new("sh")
                .args(["-c", "command -v \"$0\"", tool])
                .env(
                    "PATH",
                    "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                )
                .stdout(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            assert!(found, "{tool} is missing: run scripts/install-deps");
        }
    });
}

/// The sandbox's top directory (`T`).
fn root(sb: &Sandbox) -> PathBuf {
    sb.dkms_tree()
        .parent()
        .expect("the DKMS tree has a parent")
        .to_path_buf()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures")
}

/// Copies `tests/fixtures/<name>` to `T/src/<name>`.
fn copy_fixture(sb: &Sandbox, name: &str) {
    copy_dir(&fixtures().join(name), &sb.source_tree().join(name));
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap_or_else(|e| panic!("{}: {e}", from.display())) {
        let entry = entry.unwrap();
        let (src, dst) = (entry.path(), to.join(entry.file_name()));
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&src, &dst);
        } else {
            fs::copy(&src, &dst).unwrap();
        }
    }
}

/// `dkms-hook add m/v` (its source must be in T/src).
fn sb_add(sb: &Sandbox, module_version: &str) {
    let out = sb.run_ours(&["add", module_version]);
    assert_eq!(out.code, 0, "add {module_version}\n{out}");
}

/// `dkms-hook autoinstall -k K53 -k K54 <args>` (or the kernels in `args`).
fn autoinstall(sb: &Sandbox, args: &[&str]) -> Output {
    let mut full = vec!["autoinstall"];
    if !args.contains(&"-k") {
        full.extend_from_slice(&BOTH);
    }
    full.extend_from_slice(args);
    full.extend_from_slice(&["--color", "never"]);
    sb.run_ours(&full)
}

fn plan_json(sb: &Sandbox, args: &[&str]) -> Value {
    let mut full = vec!["plan", "--json"];
    full.extend_from_slice(args);
    let out = sb.run_ours(&full);
    assert_eq!(out.code, 0, "plan --json\n{out}");
    serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("plan --json: {e}\n{out}"))
}

fn decisions(plan: &Value) -> &Vec<Value> {
    plan["decisions"]
        .as_array()
        .unwrap_or_else(|| panic!("no decisions in {plan}"))
}

/// The `left` of `module` on `kernel` (null when it is built).
fn left_of<'a>(plan: &'a Value, module: &str, kernel: &str) -> &'a Value {
    let d = decisions(plan)
        .iter()
        .find(|d| d["target"]["module"] == module && d["target"]["kernel"] == kernel)
        .unwrap_or_else(|| panic!("{module} on {kernel} is not in the plan: {plan:#}"));
    &d["left"]
}

/// The modules the plan builds on `kernel`, in plan order.
fn build_order(plan: &Value, kernel: &str) -> Vec<String> {
    decisions(plan)
        .iter()
        .filter(|d| d["target"]["kernel"] == kernel && d["left"].is_null())
        .map(|d| d["target"]["module"].as_str().unwrap().to_string())
        .collect()
}

/// `dep` printed its `installed` line before `dependent` printed `building` on `kernel`.
fn assert_finished_before_started(out: &Output, dep: &str, dependent: &str, kernel: &str) {
    let position = |prefix: String, suffix: String| {
        out.stdout
            .lines()
            .position(|l| l.contains(&prefix) && l.ends_with(&suffix))
            .unwrap_or_else(|| panic!("no line with \"{prefix}\" ending \"{suffix}\"\n{out}"))
    };
    let finished = position(format!("] {dep}/"), format!(" for {kernel}: installed"));
    let started = position(format!("] building {dependent}/"), format!(" for {kernel}"));
    assert!(
        finished < started,
        "{dependent} started on {kernel} before {dep} was installed there\n{out}"
    );
}

/// `status` as (m/v, rest of the line) pairs.
fn states(sb: &Sandbox) -> Vec<(String, String)> {
    let out = sb.run_ours(&["status", "--compat"]);
    assert_eq!(out.code, 0, "{out}");
    out.stdout
        .lines()
        .map(|l| {
            if let Some(mv) = l.strip_suffix(": added") {
                return (mv.to_string(), "added".to_string());
            }
            let mut parts = l.splitn(2, ", ");
            let mv = parts.next().unwrap().to_string();
            let rest = parts.next().unwrap_or_default();
            (mv, rest.replace(&format!(", {ARCH}"), ""))
        })
        .collect()
}

/// The modules `status` reports installed on `kernel`, sorted.
fn installed_on(sb: &Sandbox, kernel: &str) -> Vec<String> {
    let out = sb.run_ours(&["status", "--compat", "-k", kernel]);
    assert_eq!(out.code, 0, "{out}");
    let suffix = format!(", {kernel}, {ARCH}: installed");
    let mut found: Vec<String> = out
        .stdout
        .lines()
        .filter_map(|l| l.strip_suffix(&suffix))
        .map(|mv| mv.split('/').next().unwrap().to_string())
        .collect();
    found.sort();
    found
}

fn modinfo(ko: &Path, field: &str) -> String {
    let out = Command::new("modinfo")
        .args(["-F", field])
        .arg(ko)
        .output()
        .unwrap_or_else(|e| panic!("modinfo: {e}"));
    assert!(out.status.success(), "modinfo {}: {out:?}", ko.display());
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// The CRC of `symbol` in a Module.symvers.
fn symvers_crc(symvers: &Path, symbol: &str) -> u64 {
    let text = fs::read_to_string(symvers).unwrap_or_else(|e| panic!("{}: {e}", symvers.display()));
    let crc = text
        .lines()
        .find_map(|l| {
            let mut fields = l.split('\t');
            let crc = fields.next()?;
            (fields.next()? == symbol).then(|| crc.to_string())
        })
        .unwrap_or_else(|| panic!("{symbol} is not in {}", symvers.display()));
    u64::from_str_radix(crc.trim_start_matches("0x"), 16).unwrap()
}

/// The CRC a module recorded for an imported symbol (`modprobe --dump-modversions`).
fn recorded_crc(ko: &Path, symbol: &str) -> u64 {
    let out = Command::new("modprobe")
        .arg("--dump-modversions")
        .arg(ko)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let crc = text
        .lines()
        .find_map(|l| {
            let (crc, name) = l.split_once('\t')?;
            (name == symbol).then(|| crc.to_string())
        })
        .unwrap_or_else(|| panic!("{} records no CRC for {symbol}:\n{text}", ko.display()));
    u64::from_str_radix(crc.trim_start_matches("0x"), 16).unwrap()
}

/// A generated test module `<name>/1.0`: `n` C files plus a main one, building
/// `<name with _>.ko`, which exports `<ident>_answer()` returning 1 plus the answers of
/// its BUILD_DEPENDS (so it links against each one's Module.symvers, kept by DKMS in
/// `<dep>/1.0/<kernel>/<arch>/module/`).
struct Spec {
    name: String,
    deps: Vec<String>,
    objects: usize,
    broken: bool,
    counter: Option<PathBuf>,
}

impl Spec {
    fn new(name: &str) -> Spec {
        Spec {
            name: name.to_string(),
            deps: Vec::new(),
            objects: 1,
            broken: false,
            counter: None,
        }
    }

    fn deps(mut self, deps: &[&str]) -> Spec {
        self.deps = deps.iter().map(|d| d.to_string()).collect();
        self
    }

    fn objects(mut self, n: usize) -> Spec {
        self.objects = n;
        self
    }

    /// A C syntax error: make fails.
    fn broken(mut self) -> Spec {
        self.broken = true;
        self
    }

    /// Compile and link through the counting wrappers of `counter`.
    fn counted(mut self, counter: &JobCounter) -> Spec {
        self.counter = Some(counter.tools.clone());
        self
    }

    /// Writes the source to T/src/<name>-1.0 and `dkms-hook add`s it.
    fn add(self, sb: &Sandbox) {
        let ident = self.name.replace('-', "_");
        let dir = sb.source_tree().join(format!("{}-1.0", self.name));
        fs::create_dir_all(&dir).unwrap();
        let mut objs = vec![format!("{ident}_main.o")];
        let mut main = String::from(
            "// SPDX-License-Identifier: GPL-2.0\n#include <linux/module.h>\n#include <linux/fs.h>\n",
        );
        for i in 0..self.objects {
            let part = format!("{ident}_part{i}");
            fs::write(
                dir.join(format!("{part}.c")),
                format!(
                    "// SPDX-License-Identifier: GPL-2.0\n#include <linux/module.h>\n#include <linux/slab.h>\n\
                     int {part}(void);\nint {part}(void) {{ return {i}; }}\n"
                ),
            )
            .unwrap();
            objs.push(format!("{part}.o"));
            main.push_str(&format!("int {part}(void);\n"));
        }
        for dep in &self.deps {
            main.push_str(&format!("int {}_answer(void);\n", dep.replace('-', "_")));
        }
        main.push_str(&format!("int {ident}_answer(void)\n{{\n\tint sum = 1;\n"));
        for i in 0..self.objects {
            main.push_str(&format!("\tsum += {ident}_part{i}();\n"));
        }
        for dep in &self.deps {
            main.push_str(&format!("\tsum += {}_answer();\n", dep.replace('-', "_")));
        }
        main.push_str(&format!(
            "\treturn sum;\n}}\nEXPORT_SYMBOL({ident}_answer);\n\
             static int __init {ident}_init(void) {{ return {ident}_answer() > 0 ? 0 : -EINVAL; }}\n\
             static void __exit {ident}_exit(void) {{ }}\n\
             module_init({ident}_init);\nmodule_exit({ident}_exit);\n\
             MODULE_LICENSE(\"GPL\");\nMODULE_VERSION(\"1.0\");\n\
             MODULE_DESCRIPTION(\"dkms-hook scheduler test module {}\");\n",
            self.name
        ));
        if self.broken {
            main.push_str("this is not C;\n");
        }
        fs::write(dir.join(format!("{ident}_main.c")), main).unwrap();
        fs::write(
            dir.join("Makefile"),
            format!("obj-m := {ident}.o\n{ident}-y := {}\n", objs.join(" ")),
        )
        .unwrap();

        let mut make = format!(
            "make -C ${{kernel_source_dir}} M=${{dkms_tree}}/{}/1.0/build",
            self.name
        );
        if !self.deps.is_empty() {
            let symvers: Vec<String> = self
                .deps
                .iter()
                .map(|d| {
                    format!("${{dkms_tree}}/{d}/1.0/${{kernelver}}/${{arch}}/module/Module.symvers")
                })
                .collect();
            make.push_str(&format!(" KBUILD_EXTRA_SYMBOLS='{}'", symvers.join(" ")));
        }
        if let Some(tools) = &self.counter {
            make.push_str(&format!(
                " CC={} LD={}",
                tools.join("cc-counted").display(),
                tools.join("ld-counted").display()
            ));
        }
        let mut conf = format!(
            "PACKAGE_NAME=\"{}\"\nPACKAGE_VERSION=\"1.0\"\nBUILT_MODULE_NAME[0]=\"{ident}\"\n\
             DEST_MODULE_LOCATION[0]=\"/updates/dkms\"\nAUTOINSTALL=\"yes\"\nMAKE[0]=\"{make}\"\n",
            self.name
        );
        for (i, dep) in self.deps.iter().enumerate() {
            conf.push_str(&format!("BUILD_DEPENDS[{i}]=\"{dep}\"\n"));
        }
        fs::write(dir.join("dkms.conf"), conf).unwrap();
        sb_add(sb, &format!("{}/1.0", self.name));
    }
}

/// Counts the jobs running at once: `cc-counted` (compiles of a .c file) and
/// `ld-counted` (links with -o) wrap gcc-12 and ld, and under a flock keep the number
/// running, the maximum, and a log of every start and end.
struct JobCounter {
    tools: PathBuf,
    dir: PathBuf,
}

const COUNTING_WRAPPER: &str = r#"#!/bin/bash
# Counts the jobs running at once (dkms-hook scheduler test).
dir=@DIR@
counted=
case "${0##*/}" in
ld-counted)
    real=ld
    case " $* " in *" -o "*) counted=1 ;; esac
    ;;
*)
    real=gcc-12
    for arg in "$@"; do
        case $arg in *.c) [ -f "$arg" ] && counted=1 ;; esac
    done
    ;;
esac
[ -n "$counted" ] || exec "$real" "$@"
exec 9>>"$dir/lock"
flock 9
n=$(($(cat "$dir/running") + 1))
echo "$n" >"$dir/running"
(( n > $(cat "$dir/max") )) && echo "$n" >"$dir/max"
echo "$(date +%s.%N) + $n ${0##*/} ${*: -1}" >>"$dir/events"
flock -u 9
sleep 0.3
"$real" "$@"
rc=$?
flock 9
n=$(($(cat "$dir/running") - 1))
echo "$n" >"$dir/running"
echo "$(date +%s.%N) - $n ${0##*/} ${*: -1}" >>"$dir/events"
flock -u 9
exit $rc
"#;

impl JobCounter {
    fn new(sb: &Sandbox) -> JobCounter {
        // The wrappers log every compile job to a file outside the work dirs, which
        // the build user's jail (rightly) makes read-only: these builds run as root.
        sb.build_as_root();
        let tools = root(sb).join("tools");
        let dir = root(sb).join("jobs");
        fs::create_dir_all(&tools).unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("running"), "0\n").unwrap();
        fs::write(dir.join("max"), "0\n").unwrap();
        fs::write(dir.join("events"), "").unwrap();
        let script = COUNTING_WRAPPER.replace("@DIR@", dir.to_str().unwrap());
        for name in ["cc-counted", "ld-counted"] {
            let path = tools.join(name);
            fs::write(&path, &script).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(0o755)).unwrap();
        }
        JobCounter { tools, dir }
    }

    fn max(&self) -> usize {
        let events = self.events();
        let starts = events.lines().filter(|l| l.contains(" + ")).count();
        assert!(starts > 0, "the counting wrappers never ran");
        fs::read_to_string(self.dir.join("max"))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }

    fn events(&self) -> String {
        fs::read_to_string(self.dir.join("events")).unwrap()
    }
}

/// A key pair for signing modules, made once per sandbox in T/keys.
fn signing_keys(sb: &Sandbox) -> PathBuf {
    let dir = root(sb).join("keys");
    fs::create_dir_all(&dir).unwrap();
    let status = Command::new("openssl")
        .args(["req", "-new", "-x509", "-nodes", "-days", "36500"])
        .args([
            "-subj",
            "/CN=dkms-hook scheduler test/",
            "-newkey",
            "rsa:2048",
        ])
        .arg("-keyout")
        .arg(dir.join("mok.key"))
        .args(["-outform", "DER", "-out"])
        .arg(dir.join("mok.pub"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "openssl could not make a key pair");
    dir
}

fn install_keys(sb: &Sandbox, keys: &Path) {
    for name in ["mok.key", "mok.pub"] {
        fs::copy(keys.join(name), sb.dkms_tree().join(name)).unwrap();
    }
}

/// Empties the DKMS tree and removes all but `build` and `kernel/` from each kernel's
/// install directory: the sandbox as it was before anything was added.
fn reset_trees(sb: &Sandbox) {
    let dkms = sb.dkms_tree();
    fs::remove_dir_all(&dkms).unwrap();
    fs::create_dir_all(&dkms).unwrap();
    for kernel in KERNELS {
        let dir = sb.install_tree().join(kernel);
        for entry in fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let name = entry.file_name();
            if name == "build" || name == "kernel" {
                continue;
            }
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                fs::remove_dir_all(&path).unwrap();
            } else {
                fs::remove_file(&path).unwrap();
            }
        }
        assert_eq!(fs::read_dir(dir.join("kernel")).unwrap().count(), 0);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Entry {
    Dir,
    Link(PathBuf),
    File(Vec<u8>),
    /// A make.log: only its name is compared.
    Log,
}

/// Every path under `dir` (relative), with its kind and content; not into `build`
/// links (the kernel headers).
fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    fn walk(base: &Path, dir: &Path, into: &mut BTreeMap<String, Entry>) {
        for entry in fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            let path = entry.path();
            let rel = path
                .strip_prefix(base)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            let kind = entry.file_type().unwrap();
            if kind.is_symlink() {
                into.insert(rel, Entry::Link(fs::read_link(&path).unwrap()));
            } else if kind.is_dir() {
                into.insert(rel, Entry::Dir);
                walk(base, &path, into);
            } else if rel.contains("/log/") {
                into.insert(rel, Entry::Log);
            } else {
                into.insert(rel, Entry::File(fs::read(&path).unwrap()));
            }
        }
    }
    let mut map = BTreeMap::new();
    walk(dir, dir, &mut map);
    map
}

fn assert_same_tree(what: &str, a: &BTreeMap<String, Entry>, b: &BTreeMap<String, Entry>) {
    let only_a: Vec<_> = a.keys().filter(|k| !b.contains_key(*k)).collect();
    let only_b: Vec<_> = b.keys().filter(|k| !a.contains_key(*k)).collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what} differs: only after -j 1: {only_a:?}; only after -j 2: {only_b:?}"
    );
    let differ: Vec<_> = a.keys().filter(|k| a[*k] != b[*k]).collect();
    assert!(
        differ.is_empty(),
        "{what}: these differ between -j 1 and -j 2: {differ:?}"
    );
}
