//! Evaluating the common dkms.conf without starting bash.
//!
//! Most dkms.conf files are plain assignments (`NAME="value"`, `NAME[1]=value`) whose
//! values use at most the variables dkms provides (`$kernelver`, `${module_version}`)
//! or ones assigned above them. For exactly that subset of bash this module produces
//! the same [`RawConf`] bash would; for anything else (a loop, a command
//! substitution, an array literal, an unknown variable, an override file) it returns
//! `None` and the caller runs bash. This is what keeps `status` fork-free. The
//! `*_MATCH` regexes are matched with glibc's `regcomp(REG_EXTENDED)`, the same code
//! bash's `=~` calls.

use super::raw::RawConf;
use super::EvalContext;
use std::collections::HashMap;
use std::path::Path;

/// Evaluates `text` (the dkms.conf at `file`) when it lies in the supported subset.
pub fn evaluate(file: &Path, text: &[u8], ctx: &EvalContext) -> Option<RawConf> {
    if ctx.conf_files(file).len() > 1 {
        return None;
    }
    let text = std::str::from_utf8(text).ok()?;
    let mut vars: HashMap<String, String> = [
        ("kernelver", ctx.kernelver.clone()),
        ("arch", ctx.arch.clone()),
        (
            "kernel_source_dir",
            ctx.kernel_source_dir.to_str()?.to_string(),
        ),
        ("kernel_config", ctx.kernel_config.to_str()?.to_string()),
        ("dkms_tree", ctx.dkms_tree.to_str()?.to_string()),
        ("source_tree", ctx.source_tree.to_str()?.to_string()),
        ("install_tree", ctx.install_tree.to_str()?.to_string()),
        ("module", ctx.module.clone()),
        ("module_version", ctx.module_version.clone()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    let mut raw = RawConf {
        file: file.to_path_buf(),
        ..RawConf::default()
    };
    for line in text.lines() {
        let line = line.replace('\r', "");
        let line = line.trim_start_matches([' ', '\t']);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (name, target, values) = assignment(line, &vars)?;
        if !values.iter().all(|value| survives_round_trip(value)) {
            return None;
        }
        let elements: Vec<(usize, String)> = match target {
            Target::Element(index) => vec![(index, values.into_iter().next()?)],
            // `NAME=(a b)` replaces the whole array with elements 0, 1, ...
            Target::Whole => {
                vars.remove(&name);
                raw.values.remove(&name);
                values.into_iter().enumerate().collect()
            }
        };
        for (index, value) in elements {
            if index == 0 {
                vars.insert(name.clone(), value.clone());
            }
            if super::DIRECTIVES.contains(&name.as_str()) {
                raw.values
                    .entry(name.clone())
                    .or_default()
                    .insert(index, value.into_bytes());
            }
        }
    }
    for (name, subject) in [
        ("MAKE_MATCH", &ctx.kernelver),
        ("PATCH_MATCH", &ctx.kernelver),
        ("BUILD_EXCLUSIVE_KERNEL", &ctx.kernelver),
        ("BUILD_EXCLUSIVE_ARCH", &ctx.arch),
    ] {
        let Some(elements) = raw.values.get(name) else {
            continue;
        };
        let mut results = Vec::new();
        for (index, pattern) in elements {
            if pattern.is_empty() {
                continue;
            }
            results.push(((name.to_string(), *index), ere_match(pattern, subject)?));
        }
        raw.matches.extend(results);
    }
    Some(raw)
}

/// Whether dkms's second expansion of a value (see eval.sh: echoed unquoted, then
/// sourced back inside double quotes) leaves it as it is, so the bash-free result
/// is bash's. Quotes, expansions, whitespace other than single spaces between words
/// and a backslash that double quotes would consume change there. Glob characters
/// only matter in a value of several words: a single word is globbed together with
/// the assignment's `NAME[i]="` around it, which names no file in the empty
/// directory bash evaluates in (so `^6\.[0-9]+` regexes stay bash-free).
fn survives_round_trip(value: &str) -> bool {
    let bytes = value.as_bytes();
    let consumed_backslash = bytes.iter().enumerate().any(|(i, &b)| {
        b == b'\\'
            && bytes
                .get(i + 1)
                .is_none_or(|next| b"$`\"\\\n".contains(next))
    });
    let several_words = value.contains(' ');
    let changes = consumed_backslash
        || value.contains(['$', '`', '"', '\t', '\n'])
        || (several_words && value.contains(['*', '?', '[']))
        || value.starts_with(' ')
        || value.ends_with(' ')
        || value.contains("  ");
    !changes
}

/// What an assignment sets: one element (`NAME=v`, `NAME[i]=v`), or the whole array
/// (`NAME=(a b)`, which first unsets every element).
enum Target {
    Element(usize),
    Whole,
}

/// Parses `NAME=value`, `NAME[digits]=value` or a one-line array literal
/// `NAME=(word ...)` (and a trailing comment). `BUILD_DEPENDS=("spl")` is the common
/// array literal; literals with `[i]=` keys or spanning lines go to bash.
fn assignment(line: &str, vars: &HashMap<String, String>) -> Option<(String, Target, Vec<String>)> {
    let name_len = line
        .bytes()
        .enumerate()
        .take_while(|&(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()))
        .count();
    if name_len == 0 {
        return None;
    }
    let name = &line[..name_len];
    let mut rest = &line[name_len..];
    let mut index = 0;
    if let Some(after) = rest.strip_prefix('[') {
        let close = after.find(']')?;
        let digits = &after[..close];
        if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        index = digits.parse().ok()?;
        rest = &after[close + 1..];
    }
    let value_text = rest.strip_prefix('=')?;
    let (target, values, tail) = match value_text.strip_prefix('(') {
        // `NAME[i]=(...)` is an error in bash.
        Some(_) if rest.len() != line.len() - name_len => return None,
        Some(mut list) => {
            let mut values = Vec::new();
            loop {
                list = list.trim_start_matches([' ', '\t']);
                if let Some(after) = list.strip_prefix(')') {
                    break (Target::Whole, values, after);
                }
                if list.is_empty() || list.starts_with('#') {
                    // The literal goes on on the next line.
                    return None;
                }
                let (value, after) = word(list, vars)?;
                if after.len() == list.len() {
                    return None;
                }
                values.push(value);
                list = after;
            }
        }
        None => {
            let (value, tail) = word(value_text, vars)?;
            (Target::Element(index), vec![value], tail)
        }
    };
    let tail = tail.trim_start_matches([' ', '\t']);
    if !(tail.is_empty() || tail.starts_with('#')) {
        // `A=1 B=2` or `A=1 command`: valid bash, not our subset.
        return None;
    }
    Some((name.to_string(), target, values))
}

/// One shell word of an assignment value: quoted and unquoted parts up to unquoted
/// whitespace. Returns the value and the text after it.
fn word<'a>(text: &'a str, vars: &HashMap<String, String>) -> Option<(String, &'a str)> {
    let mut out = String::new();
    let mut chars = text.char_indices().peekable();
    while let Some(&(i, c)) = chars.peek() {
        match c {
            // `)` ends an array literal's last word (after a plain value the caller
            // rejects what is left).
            ' ' | '\t' | ')' => return Some((out, &text[i..])),
            '\'' => {
                chars.next();
                loop {
                    let (_, c) = chars.next()?;
                    if c == '\'' {
                        break;
                    }
                    out.push(c);
                }
            }
            '"' => {
                chars.next();
                loop {
                    let (j, c) = chars.next()?;
                    match c {
                        '"' => break,
                        '\\' => {
                            let (_, next) = chars.next()?;
                            if !matches!(next, '$' | '`' | '"' | '\\') {
                                out.push('\\');
                            }
                            out.push(next);
                        }
                        '$' => {
                            let (value, used) = expansion(&text[j + 1..], vars)?;
                            out.push_str(&value);
                            for _ in 0..used {
                                chars.next();
                            }
                        }
                        '`' => return None,
                        other => out.push(other),
                    }
                }
            }
            '\\' => {
                chars.next();
                let (_, next) = chars.next()?;
                out.push(next);
            }
            '$' => {
                chars.next();
                let (value, used) = expansion(&text[i + 1..], vars)?;
                out.push_str(&value);
                for _ in 0..used {
                    chars.next();
                }
            }
            c if c.is_ascii_alphanumeric() || "/._+:,=@%-".contains(c) => {
                out.push(c);
                chars.next();
            }
            _ => return None,
        }
    }
    Some((out, ""))
}

/// `name` or `{name}` after a `$`, for known variables only. Returns the value and
/// how many characters the reference used.
fn expansion(text: &str, vars: &HashMap<String, String>) -> Option<(String, usize)> {
    let (name, used) = if let Some(inner) = text.strip_prefix('{') {
        let close = inner.find('}')?;
        (&inner[..close], close + 2)
    } else {
        let len = text
            .bytes()
            .enumerate()
            .take_while(|&(i, b)| {
                b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit())
            })
            .count();
        (&text[..len], len)
    };
    let valid = !name.is_empty()
        && name
            .bytes()
            .enumerate()
            .all(|(i, b)| b == b'_' || b.is_ascii_alphabetic() || (i > 0 && b.is_ascii_digit()));
    if !valid {
        return None;
    }
    Some((vars.get(name)?.clone(), used))
}

/// bash's `[[ subject =~ pattern ]]`: 0 matched, 1 did not, 2 invalid pattern.
/// `None` when the pattern cannot be handed to regcomp (an interior NUL).
pub(super) fn ere_match(pattern: &[u8], subject: &str) -> Option<u8> {
    let pattern = std::ffi::CString::new(pattern).ok()?;
    let subject = std::ffi::CString::new(subject).ok()?;
    // SAFETY: regex_t is plain data that regcomp initialises; it is freed once, after
    // a successful regcomp, and both strings are NUL-terminated and outlive the calls.
    unsafe {
        let mut regex: libc::regex_t = std::mem::zeroed();
        if libc::regcomp(
            &mut regex,
            pattern.as_ptr(),
            libc::REG_EXTENDED | libc::REG_NOSUB,
        ) != 0
        {
            return Some(2);
        }
        let rc = libc::regexec(&regex, subject.as_ptr(), 0, std::ptr::null_mut(), 0);
        libc::regfree(&mut regex);
        Some(if rc == 0 { 0 } else { 1 })
    }
}
