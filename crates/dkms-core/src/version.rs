//! Version ordering as dkms does it.
//!
//! dkms compares kernel and module versions with its `VER()` helper: every run of
//! digits is padded to at least three digits and the results are compared as strings.
//! That makes `5.4.1000` sort below `5.4.999`, which we keep on purpose: choosing a
//! different "newest version" than upstream would make `autoinstall` disagree with it.

use std::cmp::Ordering;

/// The padded form `VER()` compares: digit runs padded to three digits.
pub fn ver_key(version: &str) -> String {
    let mut out = String::with_capacity(version.len() + 8);
    let bytes = version.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_digit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_digit() {
                i += 1;
            }
            let run = &version[start..i];
            for _ in run.len()..3 {
                out.push('0');
            }
            out.push_str(run);
        } else {
            // Spaces are removed by VER()'s last sed step; keep every other byte.
            let ch = version[i..].chars().next().unwrap_or(' ');
            if ch != ' ' {
                out.push(ch);
            }
            i += ch.len_utf8();
        }
    }
    out
}

/// Compares two versions the way dkms's `VER()` string comparison does.
pub fn ver_cmp(a: &str, b: &str) -> Ordering {
    ver_key(a).as_bytes().cmp(ver_key(b).as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digit_runs_are_padded_to_three() {
        assert_eq!(
            ver_key("2.6.9-1cvs200409091247"),
            "002.006.009-001cvs200409091247"
        );
        assert_eq!(ver_key("6.1.0-54-amd64"), "006.001.000-054-amd064");
    }

    #[test]
    fn long_digit_runs_sort_as_strings_like_upstream() {
        assert_eq!(ver_cmp("5.4.1000", "5.4.999"), Ordering::Less);
        assert_eq!(
            ver_cmp("6.1.0-54-amd64", "6.1.0-53-amd64"),
            Ordering::Greater
        );
        assert_eq!(ver_cmp("1.10", "1.9"), Ordering::Greater);
        assert_eq!(ver_cmp("2.2.0", "2.2.0"), Ordering::Equal);
    }
}
