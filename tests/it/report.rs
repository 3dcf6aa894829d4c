//! Counts for the reliability report: each reliability test records how many cases it
//! tried in a category and how many of them ended with nothing lost.
//!
//! When `DKMS_HOOK_RELIABILITY_REPORT` names a file, one JSON line per scenario is
//! appended to it; `scripts/fault-report` runs the suite with it set and sums the lines
//! per category. Without the variable nothing is written, so ordinary test runs are
//! unaffected.

use std::fs::OpenOptions;
use std::io::Write;

/// The categories `scripts/fault-report` prints, in its order.
#[derive(Clone, Copy, Debug)]
#[allow(dead_code)]
pub enum Category {
    /// A SIGKILL (or other fault, such as a full disk) injected into a running command.
    Fault,
    /// A malformed or hostile input handed to a command.
    BadInput,
    /// Two or more commands run at once against one tree.
    Concurrent,
}

impl Category {
    fn name(self) -> &'static str {
        match self {
            Category::Fault => "faults injected",
            Category::BadInput => "bad inputs tried",
            Category::Concurrent => "concurrent runs",
        }
    }
}

/// Records `tried` cases of `scenario`, `nothing_lost` of which kept every working
/// module and converged on the next run. Call it after the assertions, so a failing
/// test records nothing and the report cannot overstate.
#[allow(dead_code)]
pub fn record(category: Category, scenario: &str, tried: usize, nothing_lost: usize) {
    let Some(path) = std::env::var_os("DKMS_HOOK_RELIABILITY_REPORT") else {
        return;
    };
    let line = format!(
        "{{\"category\":\"{}\",\"scenario\":\"{}\",\"tried\":{},\"nothing_lost\":{}}}\n",
        category.name(),
        scenario.replace('\\', "\\\\").replace('"', "\\\""),
        tried,
        nothing_lost
    );
    // O_APPEND writes of one short line are atomic, so parallel tests may share the file.
    if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
        let _ = file.write_all(line.as_bytes());
    }
}
