//! The explained `dkms-hook status`: one row per module version, one column per
//! kernel, a short word per cell and numbered notes below with the reason, the log
//! or the command that fixes it. Fits 80 columns for three kernels by dropping the
//! suffix all kernel names share (said in a legend), never by cutting a reason.

use dkms_core::pkgdb::Package;
use dkms_core::status::{Cell, Matrix};
use std::fmt::Write as _;

const GREEN: &str = "\x1b[32m";
const YELLOW: &str = "\x1b[33m";
const RED: &str = "\x1b[1;31m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

/// The suffix every kernel name shares from a `-` on (`-amd64`, `-arch1-1`), if
/// dropping it leaves names that are still all different and not empty.
fn common_suffix(names: &[String]) -> String {
    let Some(first) = names.first() else {
        return String::new();
    };
    if names.len() < 2 {
        return String::new();
    }
    for (i, _) in first.match_indices('-') {
        let suffix = &first[i..];
        if names
            .iter()
            .all(|n| n.ends_with(suffix) && n.len() > suffix.len())
        {
            let mut short: Vec<&str> = names.iter().map(|n| &n[..n.len() - suffix.len()]).collect();
            short.sort_unstable();
            short.dedup();
            if short.len() == names.len() {
                return suffix.to_string();
            }
        }
    }
    String::new()
}

fn when(time: u64) -> String {
    // Days ago is what a user needs ("did it fail in the last upgrade?").
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    match now.saturating_sub(time) {
        s if s < 120 => "just now".into(),
        s if s < 7200 => format!("{} minutes ago", s / 60),
        s if s < 172_800 => format!("{} hours ago", s / 3600),
        s => format!("{} days ago", s / 86400),
    }
}

/// Renders the matrix as text; `color` adds ANSI colours to the cells.
pub fn render(matrix: &Matrix, color: bool) -> String {
    let mut out = String::new();
    if matrix.rows.is_empty() {
        out.push_str("No DKMS modules are added.\n");
        return out;
    }
    let names: Vec<String> = matrix
        .kernels
        .iter()
        .map(|k| k.release.to_string())
        .collect();
    let suffix = common_suffix(&names);
    let labels: Vec<&str> = names.iter().map(|n| &n[..n.len() - suffix.len()]).collect();
    let first_width = matrix
        .rows
        .iter()
        .map(|r| r.module.len() + 1 + r.version.len())
        .chain(["MODULE/VERSION".len()])
        .max()
        .unwrap_or(14);

    let mut notes: Vec<String> = Vec::new();
    let mut grid: Vec<Vec<(String, &'static str)>> = Vec::new();
    for row in &matrix.rows {
        let mut cells = Vec::new();
        for (cell, kernel) in row.cells.iter().zip(&matrix.kernels) {
            let mut note = |text: String| {
                notes.push(format!(
                    "{} on {}: {text}",
                    format_args!("{}/{}", row.module, row.version),
                    kernel.release
                ));
                notes.len()
            };
            let (word, colour) = match cell {
                Cell::Installed => ("installed".to_string(), GREEN),
                Cell::Built => ("built".to_string(), YELLOW),
                Cell::Failed { log, time, .. } => {
                    let log = log
                        .as_ref()
                        .map(|l| format!(": see {}", l.display()))
                        .unwrap_or_default();
                    let n = note(format!(
                        "build failed {}{log}; not retried until the source or headers change (dkms-hook autoinstall --retry-failed -k {})",
                        when(*time),
                        kernel.release
                    ));
                    (format!("FAILED[{n}]"), RED)
                }
                Cell::Excluded { reason } => {
                    let n = note(format!("excluded by BUILD_EXCLUSIVE: {reason}"));
                    (format!("excluded[{n}]"), DIM)
                }
                Cell::NoHeaders { package } => {
                    let package = package
                        .clone()
                        .unwrap_or_else(|| "the headers package of this kernel".into());
                    let n = note(format!(
                        "no kernel headers: install {package}; the module is built then"
                    ));
                    (format!("no headers[{n}]"), YELLOW)
                }
                Cell::Dependency { reason } => {
                    let n = note(reason.clone());
                    (format!("dep[{n}]"), RED)
                }
                Cell::Pending => {
                    let n = note(format!(
                        "not built yet: dkms-hook autoinstall -k {}",
                        kernel.release
                    ));
                    (format!("pending[{n}]"), YELLOW)
                }
                Cell::Manual => ("manual".to_string(), DIM),
                Cell::Superseded => ("-".to_string(), DIM),
                Cell::Broken => {
                    let n = note("the source directory or the link to it is missing: reinstall its package, or `dkms remove --all` it".into());
                    (format!("broken[{n}]"), RED)
                }
                Cell::BadConf { error } => {
                    let n = note(error.clone());
                    (format!("bad conf[{n}]"), RED)
                }
                Cell::Untrusted { reason } => {
                    let n = note(format!("not built as root: {reason}"));
                    (format!("untrusted[{n}]"), RED)
                }
            };
            cells.push((word, colour));
        }
        grid.push(cells);
    }
    let widths: Vec<usize> = labels
        .iter()
        .enumerate()
        .map(|(i, l)| {
            grid.iter()
                .map(|r| r[i].0.len())
                .chain([l.len()])
                .max()
                .unwrap_or(9)
        })
        .collect();

    // The last column is not padded: no trailing blanks in a pipe or pacman.log.
    let last = widths.len().saturating_sub(1);
    let _ = write!(out, "{:first_width$}", "MODULE/VERSION");
    for (i, (label, width)) in labels.iter().zip(&widths).enumerate() {
        let width = if i == last { 0 } else { *width };
        let _ = write!(out, "  {label:width$}");
    }
    out.push('\n');
    for (row, cells) in matrix.rows.iter().zip(&grid) {
        let _ = write!(
            out,
            "{:first_width$}",
            format!("{}/{}", row.module, row.version)
        );
        for (i, ((word, colour), width)) in cells.iter().zip(&widths).enumerate() {
            let width = if i == last { 0 } else { *width };
            if color {
                let _ = write!(out, "  {colour}{word:width$}{RESET}");
            } else {
                let _ = write!(out, "  {word:width$}");
            }
        }
        out.push('\n');
    }
    let mut legend = Vec::new();
    if !suffix.is_empty() {
        legend.push(format!("kernel columns omit their common suffix {suffix}"));
    }
    if grid.iter().flatten().any(|(w, _)| w == "manual") {
        legend.push("manual = AUTOINSTALL off, built only by `dkms install`".into());
    }
    if grid.iter().flatten().any(|(w, _)| w == "-") {
        legend.push("- = an older version; a newer one is used".into());
    }
    if !legend.is_empty() {
        out.push('\n');
        for line in legend {
            let _ = writeln!(out, "{line}");
        }
    }
    render_packages(&mut out, matrix, &mut notes);
    render_leftovers(&mut out, matrix);
    if !notes.is_empty() {
        out.push('\n');
        for (i, note) in notes.iter().enumerate() {
            let _ = writeln!(out, "[{}] {note}", i + 1);
        }
    }
    let _ = writeln!(out, "\nBuilds run as: {}", builder(&matrix.builder));
    out
}

/// Who runs dkms.conf, the scripts and make, in words (see `dkms_core::sandbox`).
pub fn builder(builder: &dkms_core::sandbox::Builder) -> String {
    use dkms_core::sandbox::Builder;
    match builder {
        Builder::Caller => "the calling user (dkms-hook does not run as root)".into(),
        Builder::Root => "root (build_as_root = true)".into(),
        Builder::User(user) => format!(
            "{}, confined to each build's work directory",
            user.describe()
        ),
    }
}

/// Who installed each source and kernel, with a note for an orphaned source and a
/// kernel whose headers package is missing; or why the database could not be read.
fn render_packages(out: &mut String, matrix: &Matrix, notes: &mut Vec<String>) {
    let packages = &matrix.packages;
    out.push('\n');
    if let Some(error) = &packages.error {
        let _ = writeln!(out, "Packages: {error}");
        return;
    }
    let describe = |p: &Package| format!("{} {}", p.name, p.version);
    let mut lines: Vec<(String, String)> = Vec::new();
    for row in &matrix.rows {
        let name = format!("{}/{}", row.module, row.version);
        let owner = match &row.package {
            Some(p) => describe(p),
            None => {
                notes.push(format!(
                    "{name}: no package owns its source: it was copied in by hand or its package was removed; `dkms remove {name} --all` removes it from DKMS"
                ));
                format!("no package (orphan)[{}]", notes.len())
            }
        };
        lines.push((name, owner));
    }
    for kp in &packages.kernels {
        let kernel = kp
            .package
            .as_ref()
            .map_or_else(|| "no package".to_string(), describe);
        let headers = match (&kp.headers, &kp.headers_package) {
            (Some(h), _) => format!("headers {}", describe(h)),
            (None, Some(name)) if kp.headers_missing => {
                notes.push(format!(
                    "kernel {}: its headers package {name} is not installed: install it to build DKMS modules for this kernel",
                    kp.release
                ));
                format!("headers {name} not installed[{}]", notes.len())
            }
            (None, _) => "headers from no package".to_string(),
        };
        lines.push((kp.release.clone(), format!("{kernel}, {headers}")));
    }
    let width = lines.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
    let _ = writeln!(out, "Packages:");
    for (name, owner) in lines {
        let _ = writeln!(out, "  {name:width$}  {owner}");
    }
}

/// What removed kernels left behind, which `dkms-hook cleanup` removes.
fn render_leftovers(out: &mut String, matrix: &Matrix) {
    if matrix.leftovers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "\nLeft behind by removed kernels (`dkms-hook cleanup --yes` removes it):"
    );
    for leftover in &matrix.leftovers {
        let _ = writeln!(
            out,
            "  {}: {} ({})",
            leftover.kernel,
            leftover.path.display(),
            leftover.what
        );
    }
}

#[cfg(test)]
mod tests {
    use super::common_suffix;

    #[test]
    fn kernel_names_lose_only_a_suffix_they_all_share() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            common_suffix(&names(&["6.1.0-53-amd64", "6.1.0-54-amd64"])),
            "-amd64"
        );
        assert_eq!(
            common_suffix(&names(&["6.12.4-arch1-1", "6.6.60-1-lts"])),
            ""
        );
        assert_eq!(
            common_suffix(&names(&["6.12.4-arch1-1", "6.12.5-arch1-1"])),
            "-arch1-1"
        );
        assert_eq!(common_suffix(&names(&["6.1.0-54-amd64"])), "");
    }
}
