//! pacman's target lines (what it writes on stdin for `NeedsTargets`) -> what changed
//! (module sources, kernels, headers), and what changed -> the post-transaction plan.
//!
//! pacman gives root-relative paths, sorted and de-duplicated, directories ending in
//! `/`; install and upgrade targets come mixed. A path that is not one of our target
//! shapes is ignored (with a debug log). A line that cannot be a path at all (not
//! UTF-8, longer than PATH_MAX, control characters, a `..` component) is reported in
//! [`Changes::rejected`] with its line number, and the other lines still count: one
//! bad line must not stop the modules of a transaction from being built.

use crate::conf::{self, DkmsConf};
use crate::host::Host;
use crate::kernel::Kernel;
use crate::name::{Arch, ModuleName, ModuleVersion};
use crate::plan::{self, Plan};
use crate::tree::{KernelArch, Target};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// What a transaction touched, from the hook's target lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// `usr/src/<dir>/dkms.conf`: the source directories, root-relative.
    pub sources: BTreeSet<PathBuf>,
    /// `usr/lib/modules/<k>/build/include/`: kernels whose headers changed.
    pub headers: BTreeSet<String>,
    /// `usr/lib/modules/<k>/modules.order`: kernels that were themselves installed,
    /// upgraded or removed.
    pub kernels: BTreeSet<String>,
    /// Lines that cannot be paths: (1-based line number, why), in input order.
    pub rejected: Vec<(usize, String)>,
}

/// The longest path Linux accepts (PATH_MAX, with its NUL).
const PATH_MAX: usize = 4096;

/// Why a target line cannot be a path, if it cannot.
fn reject_reason(line: &[u8]) -> Option<String> {
    if line.len() >= PATH_MAX {
        return Some(format!(
            "{} bytes long, longer than any path ({PATH_MAX})",
            line.len()
        ));
    }
    let Ok(text) = std::str::from_utf8(line) else {
        return Some(format!("not UTF-8 text: {}", preview(line)));
    };
    if text.chars().any(char::is_control) {
        return Some(format!("control characters in {}", preview(line)));
    }
    if text.split('/').any(|part| part == "..") {
        return Some(format!("'..' in {}", preview(line)));
    }
    None
}

/// A line as a short quoted string for a message: escaped, at most 80 characters.
fn preview(line: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(line);
    let mut shown: String = format!("{text:?}").chars().take(MAX).collect();
    if shown.chars().count() == MAX {
        shown.push_str("...");
    }
    shown
}

/// Parses pacman's target lines; see the module docs for what is ignored and what
/// is rejected. Linear in the input.
pub fn parse_targets(input: &[u8]) -> Changes {
    let mut changes = Changes::default();
    for (index, line) in input.split(|&b| b == b'\n').enumerate() {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.is_empty() {
            continue;
        }
        if let Some(reason) = reject_reason(line) {
            changes.rejected.push((index + 1, reason));
            continue;
        }
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let parts: Vec<&str> = line.trim_start_matches('/').split('/').collect();
        let name_ok = |s: &str| !s.is_empty() && s != ".";
        match parts.as_slice() {
            ["usr", "src", dir, "dkms.conf"] if name_ok(dir) => {
                changes.sources.insert(Path::new("usr/src").join(dir));
            }
            ["usr", "lib", "modules", k, "build", "include", ""]
            | ["usr", "lib", "modules", k, "build", "include"]
                if name_ok(k) =>
            {
                changes.headers.insert((*k).to_string());
            }
            ["usr", "lib", "modules", k, "modules.order"] if name_ok(k) => {
                changes.kernels.insert((*k).to_string());
            }
            _ => log::debug!("ignoring hook target {line:?}"),
        }
    }
    changes
}

/// A module source named by the transaction, identified by its dkms.conf.
#[derive(Debug, Clone)]
pub struct Source {
    pub dir: PathBuf,
    pub module: ModuleName,
    pub version: ModuleVersion,
}

/// Reads PACKAGE_NAME and PACKAGE_VERSION of a source: the directory name is not
/// trusted (`foo-bar-1.0` could be foo-bar 1.0 or foo bar-1.0). Fails for an invalid
/// dkms.conf, or a source a user other than root could change (when the host checks).
pub fn identify(
    host: &Host,
    dir: &Path,
    kernel: &str,
    arch: &str,
) -> Result<Source, conf::ConfError> {
    host.check_source(dir)
        .map_err(|reason| conf::ConfError::Untrusted {
            file: dir.join("dkms.conf"),
            reason: Box::new(reason),
        })?;
    let ctx = host.eval_context("", "", kernel, arch);
    let parsed: DkmsConf = conf::evaluate(&dir.join("dkms.conf"), &ctx)?;
    Ok(Source {
        dir: dir.to_path_buf(),
        module: parsed.package_name,
        version: parsed.package_version,
    })
}

/// The post-transaction work: every changed source for every kernel with headers
/// (rebuilt even if that version is installed: its files were just replaced), plus
/// the newest AUTOINSTALL modules for kernels whose modules tree or headers changed.
pub fn install_plan(host: &Host, sources: &[Source], changes: &Changes, arch: &Arch) -> Plan {
    let kernels: Vec<KernelArch> = crate::kernel::installed_kernels(&host.paths)
        .into_iter()
        .filter(|k| k.has_headers)
        .map(|k| (k.release, arch.clone()))
        .collect();
    let newest = plan::newest_versions(host);
    plan::plan(host, &kernels, |kernel, module, version| {
        if sources
            .iter()
            .any(|s| s.module == *module && s.version == *version)
        {
            Some(plan::Selection::Rebuild)
        } else if (changes.kernels.contains(kernel.as_str())
            || changes.headers.contains(kernel.as_str()))
            && newest.get(module) == Some(version)
        {
            Some(plan::Selection::IfAutoinstall)
        } else {
            None
        }
    })
}

/// Kernels in the transaction that have a modules tree but no headers: nothing can be
/// built for them until the headers package is installed.
pub fn kernels_without_headers(host: &Host, changes: &Changes) -> Vec<Kernel> {
    changes
        .kernels
        .iter()
        .filter_map(|k| Kernel::probe(&host.paths, k))
        .filter(|k| k.has_modules && !k.has_headers)
        .collect()
}

/// Kernels that got headers in this transaction while the kernel itself did not
/// change and no module source did: mkinitcpio's own hook does not run for them, so
/// the initramfs must be regenerated by us once modules are built.
pub fn headers_only_kernels(changes: &Changes) -> BTreeSet<String> {
    if !changes.sources.is_empty() {
        return BTreeSet::new();
    }
    changes
        .headers
        .difference(&changes.kernels)
        .cloned()
        .collect()
}

/// Targets of a removed module source, for every kernel it is built for.
pub fn builds_of(host: &Host, module: &ModuleName, version: &ModuleVersion) -> Vec<Target> {
    crate::tree::built_for(&host.paths, module, version, None, None)
        .into_iter()
        .map(|(k, a)| Target::new(module, version, &k, &a))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_sorted_into_sources_headers_and_kernels() {
        let input = b"usr/lib/modules/6.1.0-54-amd64/build/include/\nusr/lib/modules/6.1.0-54-amd64/modules.order\nusr/src/nvidia-550.54/dkms.conf\nusr/src/zfs-2.2.0/dkms.conf\n";
        let changes = parse_targets(input);
        assert_eq!(
            changes
                .sources
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>(),
            ["usr/src/nvidia-550.54", "usr/src/zfs-2.2.0"]
        );
        assert_eq!(
            changes.headers.iter().collect::<Vec<_>>(),
            ["6.1.0-54-amd64"]
        );
        assert_eq!(
            changes.kernels.iter().collect::<Vec<_>>(),
            ["6.1.0-54-amd64"]
        );
    }

    #[test]
    fn garbage_lines_are_rejected_with_their_line_numbers_and_the_rest_still_counts() {
        let mut input = Vec::new();
        input.extend_from_slice(
            b"\xff\xfe binary\n\n../../etc/passwd\nusr/src/../dkms.conf\nusr/src/x/y/dkms.conf\n",
        );
        input.extend(std::iter::repeat_n(b'a', 1_000_000));
        input.extend_from_slice(
            b"\nusr/lib/modules/../modules.order\nusr/lib/modules/6.1/modules.order\r\n",
        );
        let changes = parse_targets(&input);
        assert!(changes.sources.is_empty());
        assert_eq!(changes.kernels.iter().collect::<Vec<_>>(), ["6.1"]);
        let rejected: Vec<usize> = changes.rejected.iter().map(|(n, _)| *n).collect();
        // The binary line, the two `..` lines, the megabyte line; `usr/src/x/y` is
        // just not one of our shapes.
        assert_eq!(rejected, [1, 3, 4, 6, 7], "{:?}", changes.rejected);
        assert!(changes.rejected[0].1.contains("not UTF-8"));
        assert!(changes.rejected[3].1.contains("1000000 bytes long"));
        let long = parse_targets(&[b'\xff'; 4000]);
        assert!(
            long.rejected[0].1.chars().count() < 120,
            "{:?}",
            long.rejected
        );
    }

    #[test]
    fn a_hundred_thousand_lines_yield_exactly_the_targets_among_them() {
        // A big transaction: a few real targets at known places among unrelated
        // paths (what a kernel package installs) and garbage.
        let mut input = Vec::new();
        let mut expected = Changes::default();
        for i in 0..100_000usize {
            let line: Vec<u8> = match i {
                _ if i % 20_000 == 7 => {
                    let dir = format!("mod{i}-1.0");
                    expected.sources.insert(Path::new("usr/src").join(&dir));
                    format!("usr/src/{dir}/dkms.conf").into_bytes()
                }
                _ if i % 25_000 == 11 => {
                    let k = format!("6.{i}.0-arch1-1");
                    expected.headers.insert(k.clone());
                    format!("usr/lib/modules/{k}/build/include/").into_bytes()
                }
                _ if i % 50_000 == 13 => {
                    let k = format!("6.{i}.0-arch1-1");
                    expected.kernels.insert(k.clone());
                    format!("usr/lib/modules/{k}/modules.order").into_bytes()
                }
                _ if i % 1000 == 999 => {
                    expected.rejected.push((i + 1, String::new()));
                    match i % 3 {
                        0 => b"\xff\xfe".to_vec(),
                        1 => vec![b'x'; 5000],
                        _ => b"usr/src/a\x07b/dkms.conf".to_vec(),
                    }
                }
                _ => format!("usr/lib/modules/6.9.0/kernel/drivers/m{i}.ko.zst").into_bytes(),
            };
            input.extend_from_slice(&line);
            input.push(b'\n');
        }
        let mut changes = parse_targets(&input);
        assert_eq!(changes.rejected.len(), 100);
        for (found, wanted) in changes.rejected.iter_mut().zip(&expected.rejected) {
            assert_eq!(found.0, wanted.0);
            found.1.clear();
        }
        assert_eq!(
            (
                changes.sources.len(),
                changes.headers.len(),
                changes.kernels.len()
            ),
            (5, 4, 2)
        );
        assert_eq!(changes, expected);
    }

    #[test]
    fn a_headers_only_transaction_needs_our_initramfs_regeneration() {
        let changes = parse_targets(b"usr/lib/modules/6.1.0-54-amd64/build/include/\n");
        assert_eq!(
            headers_only_kernels(&changes)
                .into_iter()
                .collect::<Vec<_>>(),
            ["6.1.0-54-amd64"]
        );
        let with_kernel = parse_targets(b"usr/lib/modules/6.1.0-54-amd64/build/include/\nusr/lib/modules/6.1.0-54-amd64/modules.order\n");
        assert!(headers_only_kernels(&with_kernel).is_empty());
    }
}
