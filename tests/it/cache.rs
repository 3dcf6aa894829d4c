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
    assert!(!first.stdout.contains("from the build cache"), "{first}");
    let entries = cache_entries(&sb);
    assert_eq!(entries.len(), 1, "one entry kept: {entries:?}");
    let installed = sb.installed_module_dir(K54);

    // Unbuilt (what a killed run or a package reinstall leaves to rebuild): taken
    // from the cache, no make.
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let again = sb.ours(&["autoinstall", "-k", K54]);
    assert!(
        again.stdout.contains(&format!(
            "hello/1.0 for {K54} (x86_64): from the build cache (not compiled)"
        )),
        "{again}"
    );
    assert!(installed.read_dir().unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with("hello.ko")));

    // --no-cache compiles.
    sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
    let compiled = sb.ours(&["autoinstall", "-k", K54, "--no-cache"]);
    assert!(
        !compiled.stdout.contains("from the build cache"),
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
            !rebuilt.stdout.contains("from the build cache"),
            "{rebuilt}"
        );
        let entries = cache_entries(&sb);
        assert_eq!(entries.len(), 1, "{entries:?}");
        sb.ours(&["unbuild", "hello/1.0", "-k", K54]);
        let hit = sb.ours(&["autoinstall", "-k", K54]);
        assert!(
            hit.stdout.contains("from the build cache"),
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
