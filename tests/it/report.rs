//! Counts for the reliability report: each reliability scenario tallies the cases it
//! tried in a category, and for each one whether anything was lost, so that the report
//! can show a loss as well as a success.
//!
//! A case "loses something" when a check after it fails: a working module gone or
//! half-written, a tree changed that had to stay the same, a run that does not
//! converge. A scenario goes on after a lost case (a kill point that broke an invariant
//! is followed by the next kill point), records its tally, and only then fails the test
//! with every loss listed. A scenario that panics before it finishes still records what
//! it counted, plus the unfinished case as lost (see [`Tally`]'s `Drop`), so a failing
//! test can never be left out of the figures.
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

/// The cases one scenario tried and what each of them lost.
///
/// Two shapes: a scenario of many independent cases (one per kill point) calls
/// [`Tally::kept`] or [`Tally::lost`] per case and [`Tally::finish`] at the end; a
/// scenario whose checks are plain assertions over `n` cases at once starts with
/// [`Tally::all_or_nothing`] and ends with [`Tally::nothing_lost`], and a failed
/// assertion in between counts all `n` as lost when the panic drops the tally.
pub struct Tally {
    category: Category,
    scenario: String,
    kept: usize,
    losses: Vec<String>,
    /// Cases counted as lost if the scenario panics before it finishes.
    pending: usize,
    written: bool,
}

impl Tally {
    /// A scenario of independent cases, each counted as it ends.
    pub fn new(category: Category, scenario: &str) -> Tally {
        Tally {
            category,
            scenario: scenario.to_string(),
            kept: 0,
            losses: Vec::new(),
            pending: 1,
            written: false,
        }
    }

    /// A scenario of `cases` cases checked together by assertions: they count as kept
    /// at [`Tally::nothing_lost`], or all as lost if an assertion fails first.
    pub fn all_or_nothing(category: Category, scenario: &str, cases: usize) -> Tally {
        let mut tally = Tally::new(category, scenario);
        tally.pending = cases;
        tally
    }

    /// One case ended with nothing lost.
    pub fn kept(&mut self) {
        self.kept += 1;
    }

    /// One case lost something; `what` says what, for the test's failure message.
    pub fn lost(&mut self, what: String) {
        self.losses.push(what);
    }

    /// The case ended as `problems` says: kept when there are none, else lost.
    pub fn case(&mut self, problems: Vec<String>, what: impl FnOnce(&[String]) -> String) {
        if problems.is_empty() {
            self.kept();
        } else {
            let text = what(&problems);
            self.lost(text);
        }
    }

    /// How many cases were counted so far.
    pub fn tried(&self) -> usize {
        self.kept + self.losses.len()
    }

    /// Records the tally and returns the losses; the caller fails the test on any.
    pub fn finish(mut self) -> Vec<String> {
        self.write();
        std::mem::take(&mut self.losses)
    }

    /// The end of an [`Tally::all_or_nothing`] scenario: every case held.
    pub fn nothing_lost(mut self) {
        for _ in 0..self.pending {
            self.kept();
        }
        self.write();
    }

    fn write(&mut self) {
        self.written = true;
        let Some(path) = std::env::var_os("DKMS_HOOK_RELIABILITY_REPORT") else {
            return;
        };
        let line = format!(
            "{{\"category\":\"{}\",\"scenario\":\"{}\",\"tried\":{},\"nothing_lost\":{},\"lost\":{}}}\n",
            self.category.name(),
            self.scenario.replace('\\', "\\\\").replace('"', "\\\""),
            self.tried(),
            self.kept,
            self.losses.len()
        );
        // O_APPEND writes of one short line are atomic, so parallel tests may share the file.
        if let Ok(mut file) = OpenOptions::new().create(true).append(true).open(&path) {
            let _ = file.write_all(line.as_bytes());
        }
    }
}

impl Drop for Tally {
    /// A scenario that panicked (a failed assertion) before it finished: the cases it
    /// had not counted yet are lost, and the tally is recorded anyway. A tally dropped
    /// unfinished without a panic is a bug in the test and records its counts as they
    /// are.
    fn drop(&mut self) {
        if self.written {
            return;
        }
        if std::thread::panicking() {
            for _ in 0..self.pending {
                self.losses
                    .push("the scenario failed before it finished".to_string());
            }
        }
        self.write();
    }
}
