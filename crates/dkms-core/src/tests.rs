//! What the library's unit tests share: a `Host` on a relocated tree in a temp dir,
//! without trust checks (the temp dir belongs to whoever runs the tests, and the
//! trust gate has its own tests in trust.rs), and a file writer that makes parents.
//! Compiled for tests only.

use crate::{Host, Paths, Settings};
use std::path::Path;

/// The tree's directories under `root`, named `[dkms, source, install, etc, temp]`.
pub fn scratch_paths(root: &Path, names: [&str; 5]) -> Paths {
    let [dkms, source, install, etc, temp] = names.map(|name| root.join(name));
    Paths {
        dkms_tree: dkms,
        source_tree: source,
        install_tree: install,
        etc_dir: etc,
        temp_dir: temp,
        // The machine's os-release would move DEST_MODULE_LOCATION.
        os_release: Vec::new(),
        ..Paths::default()
    }
}

/// A host on `paths`, whose trees and temp dir are made, with no trust gate.
pub fn scratch_host(paths: Paths) -> Host {
    for dir in [
        &paths.dkms_tree,
        &paths.source_tree,
        &paths.install_tree,
        &paths.temp_dir,
    ] {
        std::fs::create_dir_all(dir).unwrap();
    }
    let mut host = Host::new(paths, Settings::default());
    host.trust = None;
    host
}

/// Writes `data` to `path`, making its directory.
pub fn write(path: &Path, data: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, data).unwrap();
}
