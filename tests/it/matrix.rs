//! The explained `dkms-hook status`: a module x kernel matrix with a reason for every
//! cell that is not installed, checked as plain text (golden) and as JSON.

use crate::support::{Sandbox, K53, K54};

/// A tree with real states: installed, failed (a real compile error), excluded, a
/// kernel without headers, not built yet, a missing dependency and a broken source.
fn scenario() -> Sandbox {
    let sb = Sandbox::new();
    for (m, v) in [("hello", "1.0"), ("broken", "1.0"), ("exclusive", "1.0")] {
        sb.copy_fixture(m, v);
        assert_eq!(sb.run_ours(&["add", &format!("{m}/{v}")]).code, 0);
    }
    // A module that needs one DKMS has never heard of.
    let needy = sb.copy_fixture("needy", "1.0");
    let conf = std::fs::read_to_string(needy.join("dkms.conf"))
        .unwrap()
        .replace("\"hello\"", "\"ghost\"")
        + "AUTOINSTALL=\"yes\"\n";
    std::fs::write(needy.join("dkms.conf"), conf).unwrap();
    assert_eq!(sb.run_ours(&["add", "needy/1.0"]).code, 0);
    // A version whose source has gone: broken.
    let gone = sb.copy_fixture("hello", "2.0");
    assert_eq!(sb.run_ours(&["add", "hello/2.0"]).code, 0);
    std::fs::remove_dir_all(gone).unwrap();
    // hello/1.0 installed on K54, broken fails there; nothing built for K53 yet.
    assert_eq!(sb.run_ours(&["install", "hello/1.0", "-k", K54]).code, 0);
    assert_eq!(sb.run_ours(&["autoinstall", "-k", K54]).code, 11);
    // A third kernel whose headers are not installed.
    let k99 = sb.install_tree().join(fake_kernel());
    std::fs::create_dir_all(k99.join("kernel")).unwrap();
    std::fs::write(k99.join("pkgbase"), "linux-test\n").unwrap();
    sb
}

/// The suffix `dkms-hook status` leaves off the kernel columns: the longest one, from a
/// `-`, that every release ends with and that leaves them distinct (`-amd64` for
/// Debian's kernels), as crates/dkms-hook/src/matrix.rs finds it.
fn suffix_of(kernels: &[&str]) -> String {
    let first = kernels[0];
    for (i, _) in first.match_indices('-') {
        let suffix = &first[i..];
        let mut short: Vec<&str> = kernels
            .iter()
            .filter(|k| k.ends_with(suffix) && k.len() > suffix.len())
            .map(|k| &k[..k.len() - suffix.len()])
            .collect();
        short.sort_unstable();
        short.dedup();
        if short.len() == kernels.len() {
            return suffix.to_string();
        }
    }
    String::new()
}

/// A kernel newer than both real ones, with their suffix and no headers: the newer
/// one's last number made 99 (`6.1.0-99-amd64` next to Debian's 6.1.0-54-amd64).
fn fake_kernel() -> String {
    let suffix = suffix_of(&[K53, K54]);
    let short = &K54[..K54.len() - suffix.len()];
    let end = short
        .rfind(|c: char| c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let start = short[..end]
        .rfind(|c: char| !c.is_ascii_digit())
        .map_or(0, |i| i + 1);
    let number: u64 = short[start..end].parse().unwrap_or(0);
    let bumped = if number < 99 { 99 } else { number + 1 };
    format!("{}{bumped}{}{suffix}", &short[..start], &short[end..])
}

/// The status table as the renderer lays it out: every column but the last padded to
/// its widest cell, two blanks between columns.
fn table(kernels: [&str; 3], rows: &[(&str, [&str; 3])]) -> String {
    let first = rows
        .iter()
        .map(|(name, _)| name.len())
        .chain(["MODULE/VERSION".len()])
        .max()
        .unwrap();
    let widths: Vec<usize> = (0..3)
        .map(|i| {
            rows.iter()
                .map(|(_, cells)| cells[i].len())
                .chain([kernels[i].len()])
                .max()
                .unwrap()
        })
        .collect();
    let line = |name: &str, cells: [&str; 3]| {
        let mut text = format!("{name:first$}");
        for (i, cell) in cells.iter().enumerate() {
            let width = if i == 2 { 0 } else { widths[i] };
            text.push_str(&format!("  {cell:width$}"));
        }
        text + "\n"
    };
    let mut text = line("MODULE/VERSION", kernels);
    for (name, cells) in rows {
        text.push_str(&line(name, *cells));
    }
    text
}

#[test]
fn the_table_helper_lays_out_debians_kernels_as_the_renderer_does() {
    // Tier (a): the golden the status test was first written with, on Debian's kernels.
    let kernels = ["6.1.0-99-amd64", "6.1.0-54-amd64", "6.1.0-53-amd64"];
    assert_eq!(suffix_of(&kernels), "-amd64");
    assert_eq!(suffix_of(&["6.12.4-arch1-1", "6.6.60-1-lts"]), "");
    let text = table(
        ["6.1.0-99", "6.1.0-54", "6.1.0-53"],
        &[
            ("broken/1.0", ["no headers[1]", "FAILED[2]", "pending[3]"]),
            ("exclusive/1.0", ["excluded[4]", "installed", "excluded[5]"]),
            ("hello/1.0", ["no headers[6]", "installed", "pending[7]"]),
            ("hello/2.0", ["broken[8]", "broken[9]", "broken[10]"]),
            ("needy/1.0", ["no headers[11]", "dep[12]", "dep[13]"]),
        ],
    );
    assert_eq!(
        text,
        "\
MODULE/VERSION  6.1.0-99        6.1.0-54   6.1.0-53
broken/1.0      no headers[1]   FAILED[2]  pending[3]
exclusive/1.0   excluded[4]     installed  excluded[5]
hello/1.0       no headers[6]   installed  pending[7]
hello/2.0       broken[8]       broken[9]  broken[10]
needy/1.0       no headers[11]  dep[12]    dep[13]
"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn status_explains_every_module_on_every_kernel_in_plain_text() {
    let sb = scenario();
    let out = sb.run_ours(&["status"]);
    assert_eq!(out.code, 0, "{out}");
    let root = sb.path("").display().to_string();
    let text = out.stdout.replace(root.trim_end_matches('/'), "[ROOT]");
    println!("{text}");
    // With Debian's 6.1.0-53/54-amd64 kernels the table reads:
    //   MODULE/VERSION  6.1.0-99        6.1.0-54   6.1.0-53
    //   broken/1.0      no headers[1]   FAILED[2]  pending[3]
    //   ...
    //   kernel columns omit their common suffix -amd64
    let suffix = suffix_of(&[K53, K54]);
    let short = |k: &str| k[..k.len() - suffix.len()].to_string();
    let k99 = fake_kernel();
    let mut expected = table(
        [&short(&k99), &short(K54), &short(K53)],
        &[
            ("broken/1.0", ["no headers[1]", "FAILED[2]", "pending[3]"]),
            ("exclusive/1.0", ["excluded[4]", "installed", "excluded[5]"]),
            ("hello/1.0", ["no headers[6]", "installed", "pending[7]"]),
            ("hello/2.0", ["broken[8]", "broken[9]", "broken[10]"]),
            ("needy/1.0", ["no headers[11]", "dep[12]", "dep[13]"]),
        ],
    );
    if !suffix.is_empty() {
        expected.push_str(&format!(
            "\nkernel columns omit their common suffix {suffix}\n"
        ));
    }
    expected.push_str(&format!(
        "\nPackages: could not read the pacman database [ROOT]/pacman: it has no local database (`[ROOT]/pacman/local/ALPM_DB_VERSION` is missing); package owners are not shown

[1] broken/1.0 on {k99}: no kernel headers: install linux-test-headers; the module is built then
[2] broken/1.0 on {K54}: build failed just now: see [ROOT]/dkms/broken/1.0/build/make.log; not retried until the source or headers change (dkms-hook autoinstall --retry-failed -k {K54})
[3] broken/1.0 on {K53}: not built yet: dkms-hook autoinstall -k {K53}
"
    ));
    assert!(
        text.starts_with(&expected),
        "got:\n{text}\nexpected to start with:\n{expected}"
    );
    // Three kernels fit 80 columns; the notes below carry whole paths, never cut.
    for line in text.lines().take_while(|l| !l.is_empty()) {
        assert!(line.len() <= 80, "table line wider than 80 columns: {line}");
    }
    for line in text.lines() {
        assert_eq!(line, line.trim_end(), "no trailing blanks");
    }
    assert!(!text.contains('\x1b'), "no colour when piped");
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn status_json_carries_every_cell_with_its_reason() {
    let sb = scenario();
    let out = sb.run_ours(&["status", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    let json: serde_json::Value = serde_json::from_str(&out.stdout).expect("valid JSON");
    let kernels: Vec<&str> = json["kernels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["release"].as_str().unwrap())
        .collect();
    assert_eq!(kernels, [fake_kernel().as_str(), K54, K53]);
    assert_eq!(json["kernels"][0]["has_headers"], false);
    let row = |m: &str| {
        json["rows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["module"] == m)
            .cloned()
            .unwrap()
    };
    let broken = row("broken");
    assert_eq!(broken["cells"][0]["state"], "no_headers");
    assert_eq!(broken["cells"][0]["package"], "linux-test-headers");
    assert_eq!(broken["cells"][1]["state"], "failed");
    assert!(broken["cells"][1]["log"]
        .as_str()
        .unwrap()
        .ends_with("make.log"));
    assert_eq!(broken["cells"][2]["state"], "pending");
    assert_eq!(row("exclusive")["cells"][2]["state"], "excluded");
    assert!(row("exclusive")["cells"][2]["reason"]
        .as_str()
        .unwrap()
        .contains("BUILD_EXCLUSIVE_KERNEL"));
    assert_eq!(row("needy")["cells"][1]["state"], "dependency");
    assert!(row("needy")["cells"][1]["reason"]
        .as_str()
        .unwrap()
        .contains("ghost"));
}

/// Every key path of a JSON value (`rows[].cells[].state`), sorted and deduplicated.
fn shape(value: &serde_json::Value, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (key, v) in map {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                out.insert(path.clone());
                shape(v, &path, out);
            }
        }
        serde_json::Value::Array(items) => {
            for v in items {
                shape(v, &format!("{prefix}[]"), out);
            }
        }
        _ => {}
    }
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn status_json_schema_is_stable() {
    let sb = scenario();
    let json: serde_json::Value =
        serde_json::from_str(&sb.ours(&["status", "--json"]).stdout).expect("valid JSON");
    assert_eq!(json["schema"], 1);
    let mut keys = std::collections::BTreeSet::new();
    shape(&json, "", &mut keys);
    // `builder` (who runs builds, #15) was added to schema 1: adding keys is not
    // a change of meaning.
    let expected = "\
builder
builder.gid
builder.name
builder.runs_as
builder.uid
kernels
kernels[].dir
kernels[].has_headers
kernels[].has_modules
kernels[].pkgbase
kernels[].release
leftovers
packages
packages.dbpath
packages.error
packages.kernels
packages.kernels[].headers
packages.kernels[].headers_missing
packages.kernels[].headers_package
packages.kernels[].package
packages.kernels[].release
rows
rows[].cells
rows[].cells[].log
rows[].cells[].message
rows[].cells[].package
rows[].cells[].reason
rows[].cells[].state
rows[].cells[].time
rows[].module
rows[].orphan
rows[].package
rows[].version
schema";
    assert_eq!(keys.into_iter().collect::<Vec<_>>().join("\n"), expected);
}
