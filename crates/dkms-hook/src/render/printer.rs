//! Messages in makepkg's style: `==> ` steps, `  -> ` sub-steps, `==> WARNING:` and
//! `==> ERROR:` on stderr. Colour is decided per stream: never inside a pacman hook
//! (a pipe), never with NO_COLOR, always with `--color always`.

use crate::cli::ColorChoice;
use std::io::{IsTerminal, Write};

pub struct Printer {
    color_stderr: bool,
    color_stdout: bool,
    quiet: bool,
}

const RED: &str = "\x1b[1;31m";
const YELLOW: &str = "\x1b[1;33m";
const GREEN: &str = "\x1b[1;32m";
const BLUE: &str = "\x1b[1;34m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

impl Printer {
    pub fn new(choice: ColorChoice, quiet: bool) -> Printer {
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color_stderr = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color && std::io::stderr().is_terminal(),
        };
        let color_stdout = match choice {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => !no_color && std::io::stdout().is_terminal(),
        };
        Printer {
            color_stderr,
            color_stdout,
            quiet,
        }
    }

    /// `==> WARNING: ...` on stderr (suppressed by -q).
    pub fn warning(&self, message: &str) {
        if self.quiet {
            return;
        }
        let (c, b, r) = self.styles(YELLOW);
        let _ = writeln!(std::io::stderr(), "{c}==> WARNING:{r}{b} {message}{r}");
    }

    /// `==> ERROR: <error>` then `  -> <cause>` for each cause in the chain.
    pub fn error(&self, err: &anyhow::Error) {
        self.error_chain(err.as_ref());
    }

    /// `==> ERROR: <message>`, a message without causes.
    pub fn error_text(&self, message: &str) {
        let (c, b, r) = self.styles(RED);
        let _ = writeln!(std::io::stderr(), "{c}==> ERROR:{r}{b} {message}{r}");
    }

    /// The same for any error with sources.
    pub fn error_chain(&self, err: &(dyn std::error::Error + 'static)) {
        let (c, b, r) = self.styles(RED);
        let mut stderr = std::io::stderr().lock();
        let _ = writeln!(stderr, "{c}==> ERROR:{r}{b} {err}{r}");
        let mut source = err.source();
        while let Some(cause) = source {
            let _ = writeln!(stderr, "  -> {cause}");
            source = cause.source();
        }
    }

    /// Whether stdout gets colours (a terminal, no NO_COLOR, or --color always).
    pub fn colors_stdout(&self) -> bool {
        self.color_stdout
    }

    /// `  -> <detail>` on stdout (suppressed by -q).
    pub fn detail(&self, message: &str) {
        if self.quiet {
            return;
        }
        let (c, b, r) = if self.color_stdout {
            (BLUE, BOLD, RESET)
        } else {
            ("", "", "")
        };
        let _ = writeln!(std::io::stdout(), "{c}  ->{r}{b} {message}{r}");
    }

    /// `==> <step>` on stdout (suppressed by -q).
    pub fn step(&self, message: &str) {
        if self.quiet {
            return;
        }
        let (c, b, r) = if self.color_stdout {
            (GREEN, BOLD, RESET)
        } else {
            ("", "", "")
        };
        let _ = writeln!(std::io::stdout(), "{c}==>{r}{b} {message}{r}");
    }

    /// One line on stdout as is, no prefix (upstream's text; suppressed by -q).
    pub fn out_line(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stdout(), "{text}");
        }
    }

    /// One line on stderr as is, no prefix (upstream's warnings; suppressed by -q).
    pub fn err_line(&self, text: &str) {
        if !self.quiet {
            let _ = writeln!(std::io::stderr(), "{text}");
        }
    }

    /// Upstream's error form on stderr: a blank line, then `Error! ` and the text
    /// (which may span lines). Never suppressed.
    pub fn upstream_error(&self, text: &str) {
        let _ = write!(std::io::stderr(), "\nError! {text}\n");
    }

    /// Text upstream dkms prints on stderr, byte for byte.
    pub fn raw_stderr(&self, text: &str) {
        if !self.quiet {
            let _ = std::io::stderr().write_all(text.as_bytes());
        }
    }

    fn styles(&self, colour: &'static str) -> (&'static str, &'static str, &'static str) {
        if self.color_stderr {
            (colour, BOLD, RESET)
        } else {
            ("", "", "")
        }
    }
}
