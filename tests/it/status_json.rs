//! `status --json`: parses, and carries the same entries as the text listing.

use crate::support::{assert_status_matches_upstream, mkdir, Sandbox, ARCH, K53, K54};
use serde_json::Value;

/// The JSON names of the remarks, with the suffix the text listing prints for each.
const NOTES: [(&str, &str); 3] = [
    ("original_modules_exist", " (Original modules exist)"),
    (
        "built_modules_missing",
        " (Built modules are missing in the kernel modules folder)",
    ),
    (
        "built_differs_from_installed",
        " (Differences between built and installed modules)",
    ),
];

/// The text line an entry of the JSON report stands for.
fn entry_line(entry: &Value) -> String {
    let field = |name: &str| -> Option<&str> {
        match &entry[name] {
            Value::Null => None,
            Value::String(s) => Some(s),
            other => panic!("{name} is not a string or null in {entry}: {other}"),
        }
    };
    let module = field("module").expect("entry has a module");
    let version = field("version").expect("entry has a version");
    let state = field("state").expect("entry has a state");
    assert!(
        ["added", "built", "installed", "broken"].contains(&state),
        "unknown state in {entry}"
    );
    let mut line = match (field("kernel"), field("arch")) {
        (Some(k), Some(a)) => format!("{module}/{version}, {k}, {a}: {state}"),
        (None, None) => format!("{module}/{version}: {state}"),
        _ => panic!("kernel and arch come together in {entry}"),
    };
    for note in entry["notes"].as_array().expect("entry has notes") {
        let note = note.as_str().expect("a note is a string");
        let (_, suffix) = NOTES
            .iter()
            .find(|(name, _)| *name == note)
            .unwrap_or_else(|| panic!("unknown note {note} in {entry}"));
        line.push_str(suffix);
    }
    line
}

fn assert_json_matches_text(sb: &Sandbox, args: &[&str]) -> Vec<Value> {
    let mut text_args = vec!["status", "--compat"];
    text_args.extend_from_slice(args);
    let text = sb.run_ours(&text_args);
    assert_eq!(text.code, 0, "{text}");
    let mut json_args = text_args.clone();
    json_args.push("--json");
    let json = sb.run_ours(&json_args);
    assert_eq!(json.code, 0, "{json}");

    let report: Value = serde_json::from_str(&json.stdout)
        .unwrap_or_else(|e| panic!("status --json printed invalid JSON: {e}\n{json}"));
    assert_eq!(report["schema"], 1, "{report}");
    assert_eq!(
        report["dkms_tree"].as_str(),
        sb.dkms_tree().to_str(),
        "{report}"
    );
    let entries = report["entries"]
        .as_array()
        .expect("entries is an array")
        .clone();
    let from_json: Vec<String> = entries.iter().map(entry_line).collect();
    let from_text: Vec<&str> = text.stdout.lines().collect();
    assert_eq!(
        from_json, from_text,
        "status {args:?}: --json and the text listing disagree"
    );
    entries
}

#[test]
#[ignore = "tier c: needs root, kernel headers and upstream dkms 3.0.10; scripts/test runs it"]
fn status_json_parses_and_carries_the_same_entries_as_the_text_listing() {
    let sb = Sandbox::new();
    sb.add("hello", "1.0");
    sb.add("hello", "2.0");
    sb.add("hello-extra", "1.0");
    sb.install("hello", "1.0", K53);
    sb.build("hello", "1.0", K54);
    assert_status_matches_upstream(&sb, &[], &[]);
    mkdir(&sb.original_module_dir("hello", K53));
    sb.remove_source("hello", "2.0");

    let entries = assert_json_matches_text(&sb, &[]);
    assert_eq!(entries.len(), 4, "{entries:?}");
    assert_eq!(
        entries[1],
        serde_json::json!({
            "module": "hello",
            "version": "1.0",
            "kernel": K53,
            "arch": ARCH,
            "state": "installed",
            "notes": ["original_modules_exist"],
        })
    );
    assert_eq!(entries[3]["state"], "broken");
    for args in [
        &["-k", K54][..],
        &["-k", K53, "-k", K54],
        &["-m", "hello"],
        &["-m", "hello/1.0"],
        &["-v", "1.0"],
        &["-a", ARCH],
        &["-m", "nosuch"],
    ] {
        assert_json_matches_text(&sb, args);
    }
}
