//! Turning what the library reports into text: one renderer per face. `pacman`
//! words things for `dkms-hook` (makepkg style, what pacman.log keeps), `upstream`
//! for `dkms` (upstream dkms's text), `matrix` and `plan` render `dkms-hook status`
//! and `dkms-hook plan`; `printer` writes lines with colour decided per stream.
//!
//! A change of wording touches only these modules, never the library.

pub mod matrix;
pub mod pacman;
pub mod plan;
pub mod printer;
pub mod upstream;

use dkms_core::commands::Outcomes;
use dkms_core::engine::{Event, Progress};
pub use printer::Printer;

/// Which name we were run as: `dkms` promises upstream's exact behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Face {
    Dkms,
    DkmsHook,
}

/// One line of output, before colour.
pub enum Line<'a> {
    /// `==> text` on stdout.
    Step(String),
    /// `  -> text` on stdout.
    Detail(String),
    /// `==> WARNING: text` on stderr.
    Warning(String),
    /// `==> ERROR: error` and `  -> cause` per cause, on stderr.
    Error(&'a (dyn std::error::Error + 'static)),
    /// `==> ERROR: text` on stderr, no causes.
    ErrorText(String),
    /// A line on stdout as is (upstream's text).
    Out(String),
    /// A line on stderr as is (upstream's warnings).
    Err(String),
    /// Upstream's `\nError! text` on stderr.
    UpstreamError(String),
}

/// The events of one command, rendered for one face as they come.
pub struct Renderer<'a> {
    pub printer: &'a Printer,
    pub face: Face,
    /// Lines the `dkms` face holds back until a later event.
    pub pending: upstream::Pending,
}

impl<'a> Renderer<'a> {
    pub fn new(printer: &'a Printer, face: Face) -> Renderer<'a> {
        Renderer {
            printer,
            face,
            pending: upstream::Pending::default(),
        }
    }
}

impl Renderer<'_> {
    /// Prints one line.
    pub fn print(&self, line: &Line<'_>) {
        match line {
            Line::Step(text) => self.printer.step(text),
            Line::Detail(text) => self.printer.detail(text),
            Line::Warning(text) => self.printer.warning(text),
            Line::Error(error) => self.printer.error_chain(*error),
            Line::ErrorText(text) => self.printer.error_text(text),
            Line::Out(text) => self.printer.out_line(text),
            Line::Err(text) => self.printer.err_line(text),
            Line::UpstreamError(text) => self.printer.upstream_error(text),
        }
    }

    /// autoinstall's closing table.
    pub fn autoinstall_summary(&self, outcomes: &Outcomes) {
        let lines = match self.face {
            Face::Dkms => upstream::autoinstall_summary(outcomes, &self.pending),
            Face::DkmsHook => pacman::autoinstall_summary(outcomes),
        };
        for line in &lines {
            self.print(line);
        }
    }
}

impl Progress for Renderer<'_> {
    fn event(&self, event: Event<'_>) {
        match self.face {
            Face::Dkms => {
                for line in upstream::lines(&event, &self.pending) {
                    self.print(&line);
                }
            }
            Face::DkmsHook => {
                if let Some(line) = pacman::line(&event) {
                    self.print(&line);
                }
            }
        }
    }
}
