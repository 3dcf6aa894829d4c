//! The four names that become single path components in the DKMS tree and the install
//! tree: a module's name and version, a kernel release, an architecture. Each is a
//! validated newtype, parsed once where the name enters (the command line, a dkms.conf,
//! a directory listing), so code further down can join them onto a tree root without
//! checking again: a value of these types is never empty, `.`, `..`, never holds a `/`,
//! whitespace or a control character.

use serde::Serialize;
use std::borrow::Borrow;
use std::ffi::OsStr;
use std::fmt;
use std::ops::Deref;
use std::path::Path;

/// Why a string cannot be one of the names.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} {value:?} {problem}")]
pub struct NameError {
    /// "module name", "module version", "kernel release" or "architecture".
    pub what: &'static str,
    pub value: String,
    pub problem: &'static str,
}

/// [`NameError::problem`] of an empty name.
pub const EMPTY: &str = "is empty";
/// [`NameError::problem`] of `.`, `..` or a name with a `/`.
pub const A_PATH: &str = "would be a path, not a name";
/// [`NameError::problem`] of a name with whitespace or control characters.
pub const WHITESPACE: &str = "contains whitespace or control characters";

/// What is wrong with `value` as a path component, if anything.
fn problem(value: &str) -> Option<&'static str> {
    if value.is_empty() {
        Some(EMPTY)
    } else if value == "." || value == ".." || value.contains('/') {
        Some(A_PATH)
    } else if value.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some(WHITESPACE)
    } else {
        None
    }
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// What the name is called in messages.
            pub const WHAT: &'static str = $what;

            /// Checks that `value` is a single, plain path component.
            pub fn parse(value: &str) -> Result<$name, NameError> {
                match problem(value) {
                    None => Ok($name(value.to_string())),
                    Some(problem) => Err(NameError {
                        what: $what,
                        value: value.to_string(),
                        problem,
                    }),
                }
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<Path> for $name {
            fn as_ref(&self) -> &Path {
                Path::new(&self.0)
            }
        }

        impl AsRef<OsStr> for $name {
            fn as_ref(&self) -> &OsStr {
                OsStr::new(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<$name> for String {
            fn eq(&self, other: &$name) -> bool {
                *self == other.0
            }
        }

        impl PartialEq<$name> for str {
            fn eq(&self, other: &$name) -> bool {
                self == other.0
            }
        }

        impl From<$name> for String {
            fn from(name: $name) -> String {
                name.0
            }
        }

        impl std::str::FromStr for $name {
            type Err = NameError;
            fn from_str(value: &str) -> Result<$name, NameError> {
                $name::parse(value)
            }
        }
    };
}

name_type!(
    /// `PACKAGE_NAME`: `<dkms_tree>/<module>`.
    ModuleName,
    "module name"
);
name_type!(
    /// `PACKAGE_VERSION`: `<dkms_tree>/<module>/<version>`.
    ModuleVersion,
    "module version"
);
name_type!(
    /// A kernel release as `uname -r` prints it: `<install_tree>/<kernel>`.
    KernelRelease,
    "kernel release"
);
name_type!(
    /// A machine architecture as `uname -m` prints it: `<m>/<v>/<kernel>/<arch>`.
    Arch,
    "architecture"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_parse_and_paths_do_not() {
        for good in [
            "hello",
            "1.0",
            "6.1.0-54-amd64",
            "x86_64",
            "zfs-2.1.11",
            "a..b",
        ] {
            assert_eq!(ModuleName::parse(good).unwrap().as_str(), good);
        }
        let cases = [
            ("", "is empty"),
            (".", "would be a path, not a name"),
            ("..", "would be a path, not a name"),
            ("a/b", "would be a path, not a name"),
            ("/abs", "would be a path, not a name"),
            ("a b", "contains whitespace or control characters"),
            ("a\tb", "contains whitespace or control characters"),
            ("a\u{7}", "contains whitespace or control characters"),
            ("a\nb", "contains whitespace or control characters"),
        ];
        for (bad, problem) in cases {
            let e = KernelRelease::parse(bad).unwrap_err();
            assert_eq!(e.problem, problem, "{bad:?}");
            assert_eq!(e.what, "kernel release");
        }
    }

    #[test]
    fn the_error_names_what_and_the_value() {
        let e = ModuleVersion::parse("../x").unwrap_err();
        assert_eq!(
            e.to_string(),
            "the module version \"../x\" would be a path, not a name"
        );
    }

    #[test]
    fn a_name_joins_onto_a_path_as_one_component() {
        let m = ModuleName::parse("hello").unwrap();
        let k = KernelRelease::parse("6.1.0-54-amd64").unwrap();
        let p = Path::new("/var/lib/dkms").join(&m).join(&k);
        assert_eq!(p, Path::new("/var/lib/dkms/hello/6.1.0-54-amd64"));
        assert_eq!(p.components().count(), 6);
    }
}
