//! Tidy: the invariants docs/ARCHITECTURE.md states, checked against the source text
//! (as rust-analyzer's tidy tests do), so the document cannot drift from the code. Each
//! test names the invariant it holds; a failure lists every offending line. Tier (a):
//! no root, no kernel headers, nothing but the checkout.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// The workspace's `crates/` directory.
fn crates_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the crate sits in crates/")
        .to_path_buf()
}

/// One source file: its path relative to its crate's `src/` and its non-test lines.
struct Source {
    crate_name: &'static str,
    relative: PathBuf,
    lines: Vec<String>,
}

impl Source {
    fn display(&self) -> String {
        format!("crates/{}/src/{}", self.crate_name, self.relative.display())
    }

    /// The module path this file defines (`engine/build.rs` -> `engine::build`).
    fn module(&self) -> String {
        let mut parts: Vec<String> = self
            .relative
            .with_extension("")
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if parts
            .last()
            .is_some_and(|p| p == "mod" || p == "lib" || p == "main")
        {
            parts.pop();
        }
        parts.join("::")
    }

    /// Lines matching `needle`, as `file:line: text`, unless `allowed(self)`.
    fn grep(&self, needles: &[&str]) -> Vec<String> {
        self.lines
            .iter()
            .enumerate()
            .filter(|(_, line)| !is_comment(line))
            .filter(|(_, line)| needles.iter().any(|n| line.contains(n)))
            .map(|(i, line)| format!("{}:{}: {}", self.display(), i + 1, line.trim()))
            .collect()
    }
}

fn is_comment(line: &str) -> bool {
    let t = line.trim_start();
    t.starts_with("//") || t.starts_with("* ") || t.starts_with("/*")
}

/// Every `.rs` file of a crate, with the test code cut off: by convention the unit
/// tests are a `#[cfg(test)]` module at the end of the file, and `tests.rs` files are
/// only tests.
fn sources(crate_name: &'static str) -> Vec<Source> {
    let root = crates_dir().join(crate_name).join("src");
    let mut files = Vec::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .filter(|p| p.file_name().is_some_and(|n| n != "tests.rs"))
        .map(|path| {
            let text = fs::read_to_string(&path).unwrap();
            let lines = text
                .lines()
                .take_while(|l| !l.starts_with("#[cfg(test)]"))
                .map(str::to_string)
                .collect();
            Source {
                crate_name,
                relative: path.strip_prefix(&root).unwrap().to_path_buf(),
                lines,
            }
        })
        .collect()
}

fn all_sources() -> Vec<Source> {
    let mut all = sources("dkms-core");
    all.extend(sources("dkms-hook"));
    all
}

fn assert_none(invariant: &str, offenders: Vec<String>) {
    assert!(
        offenders.is_empty(),
        "docs/ARCHITECTURE.md: {invariant}; these lines break it:\n{}",
        offenders.join("\n")
    );
}

#[test]
fn only_exec_spawns_processes() {
    let offenders = all_sources()
        .iter()
        .filter(|s| !(s.crate_name == "dkms-core" && s.module() == "exec"))
        .flat_map(|s| {
            s.grep(&[
                "std::process::Command",
                "process::Command::new",
                "use duct",
                "duct::",
                "libc::fork",
                "libc::exec",
            ])
        })
        .collect();
    assert_none("only `exec` spawns processes", offenders);
}

#[test]
fn the_library_never_prints_nor_reads_the_environment() {
    let offenders = sources("dkms-core")
        .iter()
        .flat_map(|s| {
            s.grep(&[
                "print!(",
                "println!(",
                "eprint!(",
                "eprintln!(",
                "dbg!(",
                "std::io::stdout",
                "std::io::stderr",
                "io::stdout()",
                "io::stderr()",
                "env::var(",
                "env::var_os(",
                "env::vars(",
                "env::vars_os(",
                "env::args",
                "env::current_dir",
                "env::set_var",
                "env::remove_var",
            ])
        })
        .collect();
    assert_none(
        "the library never prints and never reads the environment (the binary passes what it needs)",
        offenders,
    );
}

/// The calls that change a directory tree: only the fs layer makes them, through a
/// root handle, so nothing can write or delete outside the DKMS and install trees.
const TREE_WRITES: &[&str] = &[
    "fs::rename(",
    "fs::remove_file(",
    "fs::remove_dir(",
    "fs::remove_dir_all(",
    "fs::write(",
    "fs::hard_link(",
    "fs::copy(",
    "fs::create_dir(",
    "fs::create_dir_all(",
    "fs::symlink(",
    "fs::set_permissions(",
    "OpenOptions::new(",
    "File::create(",
    "libc::renameat2",
    "libc::unlinkat",
];

/// The few places outside `fs/` that change files, each with why it may: (file, call or
/// `*`, reason). None of them is inside the DKMS or install tree below its root.
const WRITES_ALLOWED: &[(&str, &str, &str)] = &[
    (
        "lock.rs",
        "fs::create_dir_all(",
        "makes the DKMS tree's root itself",
    ),
    (
        "sandbox.rs",
        "fs::set_permissions(",
        "mode 0700 on a work or scratch dir just made, handed to the build user",
    ),
    (
        "lock.rs",
        "OpenOptions::new(",
        "the lock file, opened O_NOFOLLOW",
    ),
    (
        "compress.rs",
        "fs::copy(",
        "into the compression tool's private scratch dir",
    ),
    (
        "sign.rs",
        "*",
        "key files at user-configured paths, moved in through a Root",
    ),
    (
        "archive/extract.rs",
        "*",
        "the extraction's private scratch dir; placed through a Root",
    ),
    (
        "hook/preflight.rs",
        "*",
        "the pre-flight's private scratch dir in the temp dir, never a tree",
    ),
];

#[test]
fn only_the_fs_layer_writes_in_the_trees() {
    let offenders = all_sources()
        .iter()
        .filter(|s| !(s.crate_name == "dkms-core" && s.module().starts_with("fs")))
        .flat_map(|s| {
            let file = s.relative.display().to_string();
            s.grep(TREE_WRITES)
                .into_iter()
                .filter(move |line| {
                    !WRITES_ALLOWED.iter().any(|(f, call, _)| {
                        s.crate_name == "dkms-core"
                            && *f == file
                            && (*call == "*" || line.contains(call))
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect();
    assert_none(
        "only the fs layer (`fs/`) writes, renames or deletes in the trees; change files through `fs::Root`",
        offenders,
    );
}

/// Names of the /var/lib/dkms layout that only the layout module may spell.
const LAYOUT_NAMES: &[&str] = &[
    "join(\"source\")",
    "join(\"build\")",
    "join(\"log\")",
    "join(\"module\")",
    "join(\"make.log\")",
    "join(\"tarball\")",
    "join(\"original_module\")",
    "\"original_module\"",
    "format!(\"kernel-",
    "format!(\"build-",
    "format!(\"failed-",
];

#[test]
fn only_the_layout_names_tree_paths() {
    let offenders = all_sources()
        .iter()
        .filter(|s| !(s.crate_name == "dkms-core" && s.module() == "tree::layout"))
        .flat_map(|s| s.grep(LAYOUT_NAMES))
        .collect();
    assert_none(
        "only `tree::layout` knows the names under /var/lib/dkms and the install tree",
        offenders,
    );
}

#[test]
fn no_file_has_over_800_non_test_lines() {
    let offenders = all_sources()
        .iter()
        .filter(|s| s.lines.len() > 800)
        .map(|s| format!("{}: {} non-test lines", s.display(), s.lines.len()))
        .collect();
    assert_none("no file over 800 non-test lines", offenders);
}

/// The library modules a file uses: `crate::a::b` and `super::x` resolved to the
/// longest module path that exists.
fn imports(source: &Source, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let own = source.module();
    let parent = own.rsplit_once("::").map_or("", |(p, _)| p).to_string();
    let mut found = BTreeSet::new();
    for line in &source.lines {
        for (prefix, base) in [("crate::", String::new()), ("super::", parent.clone())] {
            let mut rest = line.as_str();
            while let Some(at) = rest.find(prefix) {
                rest = &rest[at + prefix.len()..];
                let path: String = rest
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                    .collect();
                let mut parts: Vec<&str> = path.split("::").filter(|p| !p.is_empty()).collect();
                while !parts.is_empty() {
                    let candidate = if base.is_empty() {
                        parts.join("::")
                    } else {
                        format!("{base}::{}", parts.join("::"))
                    };
                    if modules.contains(&candidate) {
                        if candidate != own && !own.starts_with(&format!("{candidate}::")) {
                            found.insert(candidate);
                        }
                        break;
                    }
                    parts.pop();
                }
            }
        }
    }
    found
}

#[test]
fn no_import_cycle_between_modules() {
    let library = sources("dkms-core");
    let modules: BTreeSet<String> = library.iter().map(Source::module).collect();
    let graph: BTreeMap<String, BTreeSet<String>> = library
        .iter()
        .map(|s| (s.module(), imports(s, &modules)))
        .collect();
    // Cycles between sibling files of one directory (`engine/a.rs` <-> `engine/b.rs`)
    // are what make a module tree hard to read; a parent using its children is not one.
    let mut cycles = BTreeSet::new();
    for (from, targets) in &graph {
        for to in targets {
            if reaches(&graph, to, from, &mut BTreeSet::new())
                && !from.starts_with(&format!("{to}::"))
            {
                let mut pair = [from.clone(), to.clone()];
                pair.sort();
                cycles.insert(format!("{} <-> {}", pair[0], pair[1]));
            }
        }
    }
    assert_none(
        "no import cycle between modules",
        cycles.into_iter().collect(),
    );
}

/// Whether `to` is reachable from `from` (a module counts as reaching its children).
fn reaches(
    graph: &BTreeMap<String, BTreeSet<String>>,
    from: &str,
    to: &str,
    seen: &mut BTreeSet<String>,
) -> bool {
    if from == to {
        return true;
    }
    if !seen.insert(from.to_string()) {
        return false;
    }
    graph
        .get(from)
        .into_iter()
        .flatten()
        .any(|next| reaches(graph, next, to, seen))
}

#[test]
fn the_architecture_document_maps_every_library_module() {
    let doc = fs::read_to_string(crates_dir().join("../docs/ARCHITECTURE.md")).unwrap();
    let offenders = sources("dkms-core")
        .iter()
        .filter(|s| s.module() != "")
        .filter(|s| {
            let file = s.relative.display().to_string();
            let name = file.rsplit('/').next().unwrap_or(&file).to_string();
            let dir = s.relative.parent().map(|p| format!("{}/", p.display()));
            !(doc.contains(&file)
                || doc.contains(&format!("`{name}`"))
                || dir.is_some_and(|d| {
                    d != "/" && doc.contains(&format!("`{d}")) && doc.contains(&name)
                }))
        })
        .map(|s| format!("{} is not in the code map", s.display()))
        .collect();
    assert_none("the code map names every module", offenders);
}
