//! The directives of a dkms.conf as bash left them: names, indices and byte values.
//!
//! Kept separate from validation so the NUL-separated protocol with `eval.sh` is read
//! in one place, and so tests can build a [`RawConf`] without running bash.

use super::ConfError;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

/// Every directive element bash printed, plus the regex match results and stderr.
#[derive(Debug, Default, Clone)]
pub struct RawConf {
    /// The dkms.conf this came from (errors name it).
    pub file: PathBuf,
    /// name -> index -> value bytes.
    pub values: HashMap<String, BTreeMap<usize, Vec<u8>>>,
    /// (MATCH array name, index) -> 0 matched, 1 not matched, 2 invalid regex.
    pub matches: HashMap<(String, usize), u8>,
    /// Per sourced file, what it printed on stderr.
    pub stderr: Vec<(PathBuf, String)>,
    /// Files that exited the shell while being sourced.
    pub exited: Vec<PathBuf>,
    /// Files bash could not open although they exist, with the reason
    /// ("Permission denied"): the evaluating user cannot reach them.
    pub unreadable: Vec<(PathBuf, String)>,
    /// PACKAGE_NAME/PACKAGE_VERSION before dkms's round trip (word splitting turns a
    /// newline into a space): validation refuses the real value. Empty from the
    /// bash-free path, which never changes a value.
    pub before_round_trip: HashMap<String, Vec<u8>>,
}

/// Parses `eval.sh` output. Malformed records (which bash never prints) are ignored
/// rather than trusted.
pub fn parse_dump(bytes: &[u8]) -> RawConf {
    parse_records(bytes)
        .into_iter()
        .next()
        .map(|(_, raw)| raw)
        .unwrap_or_default()
}

/// Parses the output of one batch (see `batch`): each request's dump follows a
/// `B <request number>` record. Request numbers that do not parse are dropped.
pub(super) fn parse_batch(bytes: &[u8]) -> Vec<(usize, RawConf)> {
    parse_records(bytes)
        .into_iter()
        .filter_map(|(number, raw)| Some((number?, raw)))
        .collect()
}

/// The dumps in `bytes`, each under the request number its `B` record gave (`None`
/// for records before any `B`: a single evaluation's whole output).
fn parse_records(bytes: &[u8]) -> Vec<(Option<usize>, RawConf)> {
    use std::os::unix::ffi::OsStrExt;
    let mut dumps = vec![(None, RawConf::default())];
    let mut fields = bytes.split(|&b| b == 0);
    let path = |f: &[u8]| PathBuf::from(std::ffi::OsStr::from_bytes(f));
    while let Some(tag) = fields.next() {
        if tag == b"B" {
            let Some(number) = fields.next() else { break };
            dumps.push((parse_index(number), RawConf::default()));
            continue;
        }
        let Some((_, raw)) = dumps.last_mut() else {
            break;
        };
        match tag {
            b"V" => {
                let (Some(name), Some(index), Some(value)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    break;
                };
                if let Some(index) = parse_index(index) {
                    raw.values
                        .entry(String::from_utf8_lossy(name).into_owned())
                        .or_default()
                        .insert(index, value.to_vec());
                }
            }
            b"M" => {
                let (Some(name), Some(index), Some(rc)) =
                    (fields.next(), fields.next(), fields.next())
                else {
                    break;
                };
                if let (Some(index), Ok(rc)) = (
                    parse_index(index),
                    std::str::from_utf8(rc).unwrap_or("").parse(),
                ) {
                    raw.matches
                        .insert((String::from_utf8_lossy(name).into_owned(), index), rc);
                }
            }
            b"E" => {
                let (Some(file), Some(text)) = (fields.next(), fields.next()) else {
                    break;
                };
                let file = path(file);
                // A CRLF file is sourced through a pipe; name the real file instead.
                let text = replace_fd_paths(&String::from_utf8_lossy(text), &file);
                raw.stderr.push((file, text));
            }
            b"P" => {
                let (Some(name), Some(value)) = (fields.next(), fields.next()) else {
                    break;
                };
                raw.before_round_trip
                    .insert(String::from_utf8_lossy(name).into_owned(), value.to_vec());
            }
            b"X" => {
                let Some(file) = fields.next() else { break };
                raw.exited.push(path(file));
            }
            b"U" => {
                let (Some(file), Some(reason)) = (fields.next(), fields.next()) else {
                    break;
                };
                let reason = String::from_utf8_lossy(reason).trim().to_string();
                raw.unreadable.push((path(file), reason));
            }
            _ => {}
        }
    }
    dumps
}

fn parse_index(bytes: &[u8]) -> Option<usize> {
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

fn replace_fd_paths(text: &str, file: &std::path::Path) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(pos) = rest.find("/dev/fd/") {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + "/dev/fd/".len()..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            out.push_str("/dev/fd/");
        } else {
            out.push_str(&file.display().to_string());
        }
        rest = &after[digits..];
    }
    out.push_str(rest);
    out
}

impl RawConf {
    /// The dump eval.sh would print for this (what [`parse_dump`] reads back), for
    /// the conf cache.
    pub(super) fn to_dump(&self) -> Vec<u8> {
        use std::os::unix::ffi::OsStrExt;
        let mut out = Vec::new();
        let mut record = |fields: &[&[u8]]| {
            for field in fields {
                out.extend_from_slice(field);
                out.push(0);
            }
        };
        let mut names: Vec<&String> = self.values.keys().collect();
        names.sort();
        for name in names {
            for (index, value) in &self.values[name] {
                record(&[b"V", name.as_bytes(), index.to_string().as_bytes(), value]);
            }
        }
        let mut matches: Vec<_> = self.matches.iter().collect();
        matches.sort();
        for ((name, index), rc) in matches {
            let (index, rc) = (index.to_string(), rc.to_string());
            record(&[b"M", name.as_bytes(), index.as_bytes(), rc.as_bytes()]);
        }
        for (file, text) in &self.stderr {
            record(&[b"E", file.as_os_str().as_bytes(), text.as_bytes()]);
        }
        for file in &self.exited {
            record(&[b"X", file.as_os_str().as_bytes()]);
        }
        for (file, reason) in &self.unreadable {
            record(&[b"U", file.as_os_str().as_bytes(), reason.as_bytes()]);
        }
        out
    }

    /// The elements of a directive in index order.
    pub fn elements(&self, name: &str) -> impl Iterator<Item = (usize, &[u8])> {
        self.values
            .get(name)
            .into_iter()
            .flat_map(|m| m.iter().map(|(i, v)| (*i, v.as_slice())))
    }

    /// Whether any element of a directive is set and not empty.
    pub fn mentions(&self, name: &str) -> bool {
        self.elements(name).any(|(_, value)| !value.is_empty())
    }

    /// The highest index set for a directive, if any element is set.
    pub fn max_index(&self, name: &str) -> Option<usize> {
        self.values.get(name)?.keys().next_back().copied()
    }

    /// Element `index` of a directive as text; `None` when unset. Errors when the
    /// value is not UTF-8, naming the directive.
    pub fn text(
        &self,
        name: &str,
        index: usize,
        file: &std::path::Path,
    ) -> Result<Option<String>, ConfError> {
        match self.values.get(name).and_then(|m| m.get(&index)) {
            None => Ok(None),
            Some(bytes) => self.to_text(name, bytes, file).map(Some),
        }
    }

    pub fn to_text(
        &self,
        name: &str,
        bytes: &[u8],
        file: &std::path::Path,
    ) -> Result<String, ConfError> {
        String::from_utf8(bytes.to_vec()).map_err(|_| ConfError::Invalid {
            file: file.to_path_buf(),
            problems: vec![super::Problem::new(
                name,
                format!(
                    "the value {:?} is not valid UTF-8",
                    String::from_utf8_lossy(bytes)
                ),
                "use UTF-8 text",
            )],
        })
    }
}
