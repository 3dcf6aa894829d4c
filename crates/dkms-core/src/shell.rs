//! Quoting a value as one shell word, for the two places a value meets a shell: the fix
//! commands we print in messages, and values substituted into a user's command template
//! (`initramfs_command`, `post_transaction`). Values are never spliced into a shell
//! string unquoted.

/// `value` as one shell word: as it is when it holds only characters no shell treats
/// specially, else single-quoted (a `'` inside becomes `'\''`). The result always reads
/// back as exactly `value`.
pub fn quote(value: &str) -> String {
    if !value.is_empty()
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._+-:@,=".contains(&b))
    {
        value.to_string()
    } else {
        format!("'{}'", value.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::quote;

    #[test]
    fn every_value_reads_back_through_bash_as_itself() {
        let values = [
            "",
            "plain",
            "/usr/lib/modules/6.1.0-54-amd64",
            "a b",
            "it's",
            "$(reboot)",
            "`id`",
            "a;b",
            "*",
            "x\ny",
            "'",
            "\\",
            "--flag=value",
        ];
        for value in values {
            let out = std::process::Command::new("bash")
                .args(["--norc", "--noprofile", "-c"])
                .arg(format!("printf %s {}", quote(value)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(out.stdout).unwrap(), value, "{value:?}");
        }
    }

    #[test]
    fn plain_words_stay_readable() {
        assert_eq!(quote("/var/lib/dkms/mok.key"), "/var/lib/dkms/mok.key");
        assert_eq!(quote("a b"), "'a b'");
    }
}
