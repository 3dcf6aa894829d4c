//! The running distribution, from os-release, as dkms uses it: to decide where
//! modules are installed (`/updates/dkms` on Arch and Debian, whatever dkms.conf says).

use std::path::PathBuf;

/// Reads `ID`/`ID_LIKE` from the first os-release file that exists and returns the
/// DEST_MODULE_LOCATION dkms forces on this distribution, if any.
///
/// dkms takes `ID` for Ubuntu, otherwise `ID_LIKE` when set, otherwise `ID`, and
/// matches the start of that word: so Manjaro (`ID_LIKE=arch`) installs to
/// `/updates/dkms` like Arch.
pub fn dest_location_override(os_release: &[PathBuf]) -> Option<String> {
    let text = os_release
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok())?;
    let field = |key: &str| {
        text.lines().find_map(|line| {
            let value = line.trim().strip_prefix(key)?.strip_prefix('=')?;
            Some(
                value
                    .trim()
                    .trim_matches(|c| c == '"' || c == '\'')
                    .to_string(),
            )
        })
    };
    let id = field("ID").unwrap_or_default();
    let like = field("ID_LIKE");
    let distribution = match like {
        Some(like) if id != "ubuntu" => like,
        _ => id,
    };
    location_for(&distribution).map(str::to_string)
}

fn location_for(distribution: &str) -> Option<&'static str> {
    let starts = |prefixes: &[&str]| prefixes.iter().any(|p| distribution.starts_with(p));
    if starts(&["fedora", "centos", "rhel"]) {
        Some("/extra")
    } else if starts(&["sles", "suse", "opensuse"]) {
        Some("/updates")
    } else if starts(&["debian", "ubuntu", "arch"]) {
        Some("/updates/dkms")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_os_release(text: &str) -> Option<String> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("os-release");
        std::fs::write(&file, text).unwrap();
        dest_location_override(&[dir.path().join("missing"), file])
    }

    #[test]
    fn arch_and_its_derivatives_install_to_updates_dkms() {
        assert_eq!(
            with_os_release("ID=arch\n").as_deref(),
            Some("/updates/dkms")
        );
        assert_eq!(
            with_os_release("ID=manjaro\nID_LIKE=arch\n").as_deref(),
            Some("/updates/dkms")
        );
        assert_eq!(
            with_os_release("ID=debian\n").as_deref(),
            Some("/updates/dkms")
        );
    }

    #[test]
    fn other_families_follow_upstream() {
        assert_eq!(
            with_os_release("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n").as_deref(),
            Some("/extra")
        );
        assert_eq!(
            with_os_release("ID=opensuse-tumbleweed\nID_LIKE=\"opensuse suse\"\n").as_deref(),
            Some("/updates")
        );
        assert_eq!(with_os_release("ID=gentoo\n"), None);
        assert_eq!(dest_location_override(&[]), None);
    }
}
