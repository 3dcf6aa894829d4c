//! Load: 50 modules x 4 kernels planned and statused with every row and job right,
//! and a hook run fed 100,000 target lines doing exactly what the few real targets
//! among them ask. How fast is measured by `scripts/bench-load`, never asserted here.

use crate::snapshot::Snapshot;
use crate::support::{headers, line, mkdir, symlink, Sandbox, ARCH, K53, K54};
use serde_json::Value;
use std::collections::BTreeSet;
use std::fs;

const MODULES: usize = 50;
/// Two more kernels besides K53 and K54, with K54's headers.
const EXTRA: [&str; 2] = ["6.1.0-55-load", "6.1.0-56-load"];

/// 50 modules added; built and installed (fake module files) for K53 and K54,
/// pending on the two extra kernels.
fn big_tree() -> Sandbox {
    let sb = Sandbox::new();
    for kernel in EXTRA {
        mkdir(&sb.install_tree().join(kernel).join("kernel"));
        symlink(&headers(K54), &sb.install_tree().join(kernel).join("build"));
    }
    for i in 0..MODULES {
        let m = format!("load{i}");
        let source = sb.source_tree().join(format!("{m}-1.0"));
        mkdir(&source);
        fs::write(
            source.join("dkms.conf"),
            format!("PACKAGE_NAME={m}\nPACKAGE_VERSION=1.0\nDEST_MODULE_LOCATION[0]=/updates/dkms\nAUTOINSTALL=yes\n"),
        )
        .unwrap();
        let version = sb.dkms_tree().join(&m).join("1.0");
        mkdir(&version);
        symlink(&source, &version.join("source"));
        for kernel in [K53, K54] {
            let module = sb.built_module_dir(&m, "1.0", kernel);
            mkdir(&module);
            let bytes = format!("module {m} for {kernel}");
            fs::write(module.join(format!("{m}.ko")), &bytes).unwrap();
            let installed = sb.installed_module_dir(kernel);
            mkdir(&installed);
            fs::write(installed.join(format!("{m}.ko")), &bytes).unwrap();
            symlink(
                &std::path::Path::new("1.0").join(kernel).join(ARCH),
                &sb.dkms_tree()
                    .join(&m)
                    .join(format!("kernel-{kernel}-{ARCH}")),
            );
        }
    }
    sb
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}):\n{out}"))
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn fifty_modules_on_four_kernels_are_planned_and_statused_row_by_row() {
    let sb = big_tree();
    let all: Vec<&str> = [K53, K54].into_iter().chain(EXTRA).collect();

    // The plan: a build for every module on each extra kernel, nothing else to do.
    let plan = json(&sb.ours(&["plan", "--json"]).stdout);
    let mut jobs = BTreeSet::new();
    let mut installed = BTreeSet::new();
    for decision in plan["decisions"].as_array().unwrap() {
        let target = &decision["target"];
        let key = (
            target["module"].as_str().unwrap().to_string(),
            target["kernel"].as_str().unwrap().to_string(),
        );
        match decision["left"]
            .as_object()
            .map(|l| l["kind"].as_str().unwrap())
        {
            None => assert!(jobs.insert(key)),
            Some("already_installed") => assert!(installed.insert(key)),
            Some(other) => panic!("{key:?} left out: {other}: {decision}"),
        }
    }
    let expect = |kernels: &[&str]| -> BTreeSet<(String, String)> {
        (0..MODULES)
            .flat_map(|i| {
                kernels
                    .iter()
                    .map(move |k| (format!("load{i}"), k.to_string()))
            })
            .collect()
    };
    assert_eq!(jobs, expect(&EXTRA));
    assert_eq!(installed, expect(&[K53, K54]));

    // The explained status: 50 rows of 4 cells, installed or pending.
    let matrix = json(&sb.ours(&["status", "--json"]).stdout);
    let kernels: Vec<&str> = matrix["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["release"].as_str().unwrap())
        .collect();
    assert_eq!(
        kernels.iter().copied().collect::<BTreeSet<_>>(),
        all.iter().copied().collect::<BTreeSet<_>>()
    );
    let rows = matrix["rows"].as_array().unwrap();
    assert_eq!(rows.len(), MODULES);
    for row in rows {
        let cells = row["cells"].as_array().unwrap();
        assert_eq!(cells.len(), 4, "{row}");
        for (kernel, cell) in kernels.iter().zip(cells) {
            let want = if EXTRA.contains(kernel) {
                "pending"
            } else {
                "installed"
            };
            assert_eq!(cell["state"], want, "{} on {kernel}", row["module"]);
        }
    }

    // Upstream's lines: every build, in bash glob order (load0, load1, load10, ...).
    let mut names: Vec<String> = (0..MODULES).map(|i| format!("load{i}/1.0")).collect();
    names.sort();
    let expected: String = names
        .iter()
        .flat_map(|mv| [K53, K54].map(|k| line(mv, k, "installed")))
        .collect();
    let status = sb.run_ours_as_dkms(&["status"]);
    assert_eq!(status.stdout, expected, "{status}");
    assert_eq!(status.stderr, "");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_hook_fed_100000_lines_builds_exactly_what_its_few_targets_name() {
    let sb = Sandbox::with_hello_installed();
    // A kernel transaction for K53 hidden among 100,000 lines: its modules tree and
    // headers, the files its package installs, unrelated paths and some garbage.
    let mut input = String::new();
    let mut garbage = 0;
    for i in 0..100_000 {
        match i {
            40_000 => input.push_str(&format!("usr/lib/modules/{K53}/build/include/\n")),
            60_000 => input.push_str(&format!("usr/lib/modules/{K53}/modules.order\n")),
            _ if i % 10_000 == 5 => {
                garbage += 1;
                input.push_str("\u{1}\u{2} not a path\n");
            }
            _ if i % 2 == 0 => input.push_str(&format!(
                "usr/lib/modules/{K53}/kernel/drivers/m{i}.ko.xz\n"
            )),
            _ => input.push_str(&format!("usr/share/doc/p{i}/README\n")),
        }
    }
    let source = sb.source_tree();
    let before = Snapshot::of(std::slice::from_ref(&source));
    let out = sb.run_ours_with_stdin(&["hook", "install"], input.as_bytes());
    // The garbage is ignored with a warning naming it; the rest is done.
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stderr.contains("hook input line 6 is not a path"),
        "{out}"
    );
    assert!(
        out.stderr
            .contains(&format!("{} more hook input lines", garbage - 5)),
        "{out}"
    );
    assert!(
        sb.installed_module_dir(K53).join("hello.ko").is_file(),
        "{out}"
    );
    crate::support::assert_ours_status(
        &sb,
        &[],
        &format!(
            "{}{}",
            line("hello/1.0", K53, "installed"),
            line("hello/1.0", K54, "installed")
        ),
        "",
    );
    before.assert_same(&Snapshot::of(&[source]), "the hook");
}
