//! Where the running pacman keeps this transaction's package files, for the
//! pre-flight hook: hooks get no arguments or environment from pacman, so this reads
//! the command line of the pacman that started us (`/proc/<ppid>/cmdline`) for
//! `--cachedir`, `--config` and the package files of `-U`, and falls back to
//! pacman.conf's `CacheDir` and pacman's default cache. The `pacman_cachedir` setting
//! overrides all of it.

use dkms_core::hook::PackageSources;
use std::path::{Path, PathBuf};

/// pacman's default configuration and package cache.
const PACMAN_CONF: &str = "/etc/pacman.conf";
const DEFAULT_CACHE_DIR: &str = "/var/cache/pacman/pkg";

/// The package sources of the running transaction.
pub fn package_sources(setting: Option<&[PathBuf]>) -> PackageSources {
    let args = parent_pacman_args().unwrap_or_default();
    let parsed = parse_args(&args);
    let cache_dirs = match setting {
        Some(dirs) => dirs.to_vec(),
        None if !parsed.cache_dirs.is_empty() => parsed.cache_dirs,
        None => {
            let conf = parsed.config.unwrap_or_else(|| PACMAN_CONF.into());
            let from_conf = std::fs::read_to_string(&conf)
                .map(|text| cache_dirs_of_conf(&text))
                .unwrap_or_default();
            if from_conf.is_empty() {
                vec![DEFAULT_CACHE_DIR.into()]
            } else {
                from_conf
            }
        }
    };
    PackageSources {
        files: parsed.files,
        cache_dirs,
    }
}

/// The arguments of our parent process when it is pacman (hooks run as its child).
fn parent_pacman_args() -> Option<Vec<String>> {
    let ppid = std::os::unix::process::parent_id();
    let raw = std::fs::read(format!("/proc/{ppid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|&b| b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let program = args.first()?;
    let name = Path::new(program).file_name()?.to_string_lossy();
    (name == "pacman").then_some(args)
}

#[derive(Debug, Default, PartialEq, Eq)]
struct Parsed {
    cache_dirs: Vec<PathBuf>,
    config: Option<PathBuf>,
    files: Vec<PathBuf>,
}

/// pacman's options that matter here; `--opt value` and `--opt=value` both count.
/// Package files are the arguments that are existing `*.pkg.tar*` files.
fn parse_args(args: &[String]) -> Parsed {
    let mut parsed = Parsed::default();
    let mut iter = args.iter().skip(1);
    while let Some(arg) = iter.next() {
        let mut value_of = |name: &str| -> Option<String> {
            if arg == name {
                iter.next().cloned()
            } else {
                arg.strip_prefix(&format!("{name}=")).map(str::to_string)
            }
        };
        if let Some(dir) = value_of("--cachedir") {
            parsed.cache_dirs.push(dir.into());
        } else if let Some(conf) = value_of("--config") {
            parsed.config = Some(conf.into());
        } else if !arg.starts_with('-') && arg.contains(".pkg.tar") && Path::new(arg).is_file() {
            parsed.files.push(arg.into());
        }
    }
    parsed
}

/// `CacheDir = a b` lines of a pacman.conf (its `[options]` section; Include files
/// are not followed: pacman's own conf keeps options in the main file).
fn cache_dirs_of_conf(text: &str) -> Vec<PathBuf> {
    text.lines()
        .map(|l| l.split('#').next().unwrap_or_default().trim())
        .filter_map(|l| l.strip_prefix("CacheDir"))
        .filter_map(|rest| rest.trim_start().strip_prefix('='))
        .flat_map(|v| v.split_whitespace().map(PathBuf::from).collect::<Vec<_>>())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pacman_options_are_read_in_both_spellings() {
        let args: Vec<String> = [
            "pacman",
            "--cachedir",
            "/a",
            "--cachedir=/b",
            "--config=/c",
            "-Syu",
        ]
        .map(String::from)
        .to_vec();
        let parsed = parse_args(&args);
        assert_eq!(parsed.cache_dirs, [PathBuf::from("/a"), "/b".into()]);
        assert_eq!(parsed.config, Some("/c".into()));
    }

    #[test]
    fn cache_dirs_come_from_the_conf_file() {
        let conf = "[options]\n#CacheDir = /no\nCacheDir = /x/ /y/\nDBPath=/db\n";
        assert_eq!(
            cache_dirs_of_conf(conf),
            [PathBuf::from("/x/"), "/y/".into()]
        );
    }
}
