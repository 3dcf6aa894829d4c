//! The build cache: a build is kept and taken again instead of compiling (after an
//! unbuild, as after a killed run or a reinstall of an unchanged source), `--no-cache`
//! compiles, and an entry that was truncated or changed is refused, said, and built
//! again, never installed.

use crate::support::{Sandbox, K54};
use std::path::{Path, PathBuf};

fn cache_entries(sb: &Sandbox) -> Vec<PathBuf> {
    let kernel_dir = sb.dkms_tree().join(".dkms-hook-cache").join(K54);
    let Ok(entries) = std::fs::read_dir(&kernel_dir) else {
        return Vec::new();
    };
    entries.map(|e| e.unwrap().path()).collect()
}

fn ko_in(entry: &Path) -> PathBuf {
    let digests = std::fs::read_to_string(entry.join("digests")).unwrap();
    let rel = digests
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(_, p)| p)
        .find(|p| p.contains("hello.ko"))
        .expect("the module in the entry")
        .to_string();
    entry.join("files").join(rel)
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn an_unchanged_build_comes_from_the_cache_and_a_tampered_entry_is_rebuilt() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.add("hello", "1.0");
    let first = sb.ours(&["autoinstall", "-k", K54]);
    assert!(
        first
            .stdout
            .contains(&format!("[1/1] building hello/1.0 for {K54}")),
        "{first}"
    );
    assert!(!first.stdout.contains("cached build"), "{first}");
    let entries = cache_entries(&sb);
    assert_eq!(entries.len(), 1, "one entry kept: {entries:?}");
    let installed = sb.installed_module_dir(K54);

    // Unbuilt (what a killed run or a package reinstall leaves to rebuild): taken
    // from the cache, no make.
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let again = sb.ours(&["autoinstall", "-k", K54]);
    // The job line says what happens: nothing is built.
    assert!(
        again.stdout.contains(&format!(
            "[1/1] reusing the cached build of hello/1.0 for {K54} (not compiled)"
        )) && !again.stdout.contains("building"),
        "{again}"
    );
    assert!(installed.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("hello.ko")));

    // The dkms face prints upstream's lines, the same for a hit as for a compile.
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let hit_as_dkms = sb.run_ours_as_dkms(&["autoinstall", "-k", K54]);
    assert_eq!(hit_as_dkms.code, 0, "{hit_as_dkms}");
    assert!(
        !hit_as_dkms.stdout.contains("cached")
            && !hit_as_dkms.stdout.contains("reusing")
            && hit_as_dkms.stdout.contains(&format!(
                "Autoinstall of module hello/1.0 for kernel {K54} (x86_64)"
            )),
        "{hit_as_dkms}"
    );

    // --no-cache compiles.
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let compiled = sb.ours(&["autoinstall", "-k", K54, "--no-cache"]);
    assert!(
        !compiled.stdout.contains("cached build")
            && compiled.stdout.contains("[1/1] building hello/1.0"),
        "{compiled}"
    );

    // Truncated: refused, said, built again, and the entry is good again.
    for tamper in ["truncate", "change"] {
        let ko = ko_in(&cache_entries(&sb)[0]);
        let bytes = std::fs::read(&ko).unwrap();
        if tamper == "truncate" {
            std::fs::write(&ko, &bytes[..bytes.len() / 2]).unwrap();
        } else {
            let mut changed = bytes.clone();
            let middle = changed.len() / 2;
            changed[middle] ^= 0xff;
            std::fs::write(&ko, changed).unwrap();
        }
        sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
        let rebuilt = sb.ours(&["autoinstall", "-k", K54]);
        assert!(
            rebuilt
                .stderr
                .contains("the build cache entry is refused and built again")
                && rebuilt.stderr.contains("does not match its digest"),
            "{tamper}: {rebuilt}"
        );
        assert!(
            !rebuilt.stdout.contains("cached build")
                && rebuilt.stdout.contains("[1/1] building hello/1.0"),
            "{rebuilt}"
        );
        let entries = cache_entries(&sb);
        assert_eq!(entries.len(), 1, "{entries:?}");
        sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
        let hit = sb.ours(&["autoinstall", "-k", K54]);
        assert!(
            hit.stdout.contains("reusing the cached build of hello/1.0"),
            "{tamper}: {hit}"
        );
    }

    // Bounded: the entries of a kernel that is gone go with `cleanup --yes`.
    let gone = sb
        .dkms_tree()
        .join(".dkms-hook-cache/9.9.9-gone/0123/files");
    std::fs::create_dir_all(&gone).unwrap();
    let listed = sb.ours(&["cleanup"]);
    assert!(
        listed
            .stdout
            .contains("build cache entries of a removed kernel"),
        "{listed}"
    );
    sb.ours(&["cleanup", "--yes"]);
    assert!(!sb.dkms_tree().join(".dkms-hook-cache/9.9.9-gone").exists());
    assert_eq!(
        cache_entries(&sb).len(),
        1,
        "the installed kernel's entry stays"
    );
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn the_dkms_face_compiles_with_upstreams_lines_even_when_the_cache_holds_the_build() {
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    sb.add("hello", "1.0");
    sb.ours(&["autoinstall", "-k", K54]);
    assert_eq!(
        cache_entries(&sb).len(),
        1,
        "the dkms-hook face keeps an entry"
    );
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let out = sb.run_ours_as_dkms(&["autoinstall", "-k", K54]);
    assert_eq!(out.code, 0, "{out}");
    assert!(!out.stdout.contains("build cache"), "{out}");
    assert!(
        out.stdout.contains("Building module(s)... done.\n"),
        "{out}"
    );
}
