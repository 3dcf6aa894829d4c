//! Finds the installed kernels with headers for the tier (b) and (c) integration tests
//! (tests/it/support.rs), so that no test hard-codes a kernel release.
//!
//! The tests name their two kernels in hundreds of `const` argument lists
//! (`&["build", "hello/1.0", "-k", K53]`), so the releases are found here, once per
//! build, and handed to them as `DKMS_HOOK_IT_OLDER_KERNEL` / `DKMS_HOOK_IT_NEWER_KERNEL`
//! (empty when fewer than two kernels have headers; the tests then fail saying so).
//! The binary does not use them. Cargo reruns this when a kernel directory appears or
//! goes. Read-only: it lists `/usr/lib/modules/*/build` (every distribution) and
//! `/usr/src/linux-headers-*` (Debian, when the `build` link is missing).

use std::cmp::Ordering;
use std::path::Path;

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // A directory's mtime changes when an entry comes or goes: the kernel list, and
    // each kernel's `build` link.
    for dir in ["/usr/lib/modules", "/usr/src"] {
        if Path::new(dir).is_dir() {
            println!("cargo:rerun-if-changed={dir}");
        }
    }
    for entry in std::fs::read_dir("/usr/lib/modules")
        .into_iter()
        .flatten()
        .flatten()
    {
        println!("cargo:rerun-if-changed={}", entry.path().display());
    }
    let mut kernels = kernels_with_headers();
    kernels.sort_by(|a, b| version_cmp(a, b));
    let (older, newer) = match kernels.as_slice() {
        [.., older, newer] => (older.clone(), newer.clone()),
        _ => (String::new(), String::new()),
    };
    println!("cargo:rustc-env=DKMS_HOOK_IT_OLDER_KERNEL={older}");
    println!("cargo:rustc-env=DKMS_HOOK_IT_NEWER_KERNEL={newer}");
    println!(
        "cargo:rustc-env=DKMS_HOOK_IT_KERNELS_FOUND={}",
        kernels.join(" ")
    );
}

/// Releases whose headers are installed (a kbuild Makefile and the kernel's .config).
fn kernels_with_headers() -> Vec<String> {
    let mut found = Vec::new();
    let names = |dir: &str| -> Vec<String> {
        std::fs::read_dir(dir)
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok()?.file_name().into_string().ok())
                    .collect()
            })
            .unwrap_or_default()
    };
    let has_headers = |dir: &Path| dir.join("Makefile").is_file() && dir.join(".config").is_file();
    for release in names("/usr/lib/modules") {
        if has_headers(&Path::new("/usr/lib/modules").join(&release).join("build")) {
            found.push(release);
        }
    }
    for name in names("/usr/src") {
        if let Some(release) = name.strip_prefix("linux-headers-") {
            if !found.iter().any(|k| k == release)
                && has_headers(&Path::new("/usr/src").join(&name))
            {
                found.push(release.to_string());
            }
        }
    }
    found
}

/// Orders releases by their digit runs compared as numbers (6.1.0-9 < 6.1.0-10), then
/// as text: enough to tell the older of two installed kernels.
fn version_cmp(a: &str, b: &str) -> Ordering {
    let key = |s: &str| -> Vec<u64> {
        s.split(|c: char| !c.is_ascii_digit())
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().unwrap_or(u64::MAX))
            .collect()
    };
    key(a).cmp(&key(b)).then_with(|| a.cmp(b))
}
