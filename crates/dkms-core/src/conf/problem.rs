//! What is wrong with a dkms.conf, one [`Problem`] per broken rule. Validation goes
//! on after a problem (as upstream's `read_conf` does), so a user fixing a file sees
//! every problem at once rather than one per attempt.

use std::fmt;

/// One broken rule: which directive, what is wrong, how to fix it, and which of
/// upstream's rules it is (the `dkms` face prints upstream's line for those).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub directive: String,
    pub problem: String,
    pub fix: String,
    /// `None`: a rule only we have (names that would be paths, `..` in locations,
    /// invalid regexes, ...).
    pub rule: Option<UpstreamRule>,
}

/// Upstream's dkms.conf rules, by the facts its message names (records count from 0,
/// as upstream's `record #N`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamRule {
    NoPackageName,
    NoPackageVersion,
    NoBuiltModuleName {
        record: usize,
    },
    BuiltModuleNameSuffix {
        record: usize,
    },
    DestModuleNameSuffix {
        record: usize,
    },
    NoDestModuleLocation {
        record: usize,
    },
    DestModuleLocationPrefix {
        record: usize,
    },
    /// A yes/no directive (AUTOINSTALL, BUILD_DEPENDS_REBUILD, NO_WEAK_MODULES) with
    /// another value.
    UnsupportedValue {
        name: String,
        value: String,
    },
    /// `module` is `<BUILT_MODULE_LOCATION><BUILT_MODULE_NAME>` of `record`, already
    /// listed by an earlier record.
    DuplicateBuiltModule {
        module: String,
        record: usize,
    },
    /// `module` is the DEST_MODULE_NAME of `record`, already used by an earlier record.
    DuplicateDestModule {
        module: String,
        record: usize,
    },
}

impl Problem {
    pub fn new(
        directive: impl Into<String>,
        problem: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            directive: directive.into(),
            problem: problem.into(),
            fix: fix.into(),
            rule: None,
        }
    }

    pub fn upstream(mut self, rule: UpstreamRule) -> Self {
        self.rule = Some(rule);
        self
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; {}", self.directive, self.problem, self.fix)
    }
}

/// The problems of one file on one line: the first, then `; also: ` and each other.
pub struct ProblemList<'a>(pub &'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; also: ")?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}
