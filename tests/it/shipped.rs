//! The files the package ships for users besides the binary (completions/, man/,
//! kernel-install/, systemd/, etc/), checked the way their consumers use them: bash
//! completion through `complete -p` and the completion function on a real tree, the
//! man pages through `man -l`, the kernel-install plugin with a stand-in `dkms`, the
//! unit with `systemd-analyze verify`, framework.conf through bash.
//!
//! The bash, plugin and framework.conf tests are tier (a) (bash and sh only); the man
//! pages need man-db and the unit systemd, so those are tier (b).

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn run(command: &mut Command) -> (bool, String, String) {
    let out = command
        .output()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The candidates the completion function offers for a command line (the last word
/// is the one being completed), read from its COMPREPLY.
fn complete(words: &[&str]) -> Vec<String> {
    let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
    let script = format!(
        "source '{}' || exit 9\n\
         COMP_WORDS=({})\n\
         COMP_CWORD=$(( ${{#COMP_WORDS[@]}} - 1 ))\n\
         COMP_LINE=\"${{COMP_WORDS[*]}}\"\n\
         _dkms\n\
         printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        repo().join("completions/dkms.bash").display(),
        quoted.join(" ")
    );
    let (ok, out, err) = run(Command::new("bash")
        .args(["--norc", "--noprofile", "-c", &script])
        .env_clear()
        .env("PATH", "/usr/bin:/bin"));
    assert!(ok, "{err}");
    let mut words: Vec<String> = out
        .lines()
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    words.sort();
    words
}

#[test]
fn bash_completion_is_registered_for_both_names() {
    let script = format!(
        "source '{}' && complete -p dkms && complete -p dkms-hook",
        repo().join("completions/dkms.bash").display()
    );
    let (ok, out, err) = run(Command::new("bash").args(["--norc", "--noprofile", "-c", &script]));
    assert!(ok, "{err}");
    assert_eq!(out, "complete -F _dkms dkms\ncomplete -F _dkms dkms-hook\n");
}

#[test]
fn bash_completion_offers_actions_options_modules_versions_and_kernels_of_the_trees() {
    let root = tempfile::tempdir().unwrap();
    let dkms = root.path().join("dkms");
    let modules = root.path().join("modules");
    for (m, v) in [("hello", "1.0"), ("hello", "2.0"), ("zfs", "2.2.0")] {
        let dir = dkms.join(m).join(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/usr/src/gone", dir.join("source")).unwrap();
    }
    // An install link is no version.
    std::os::unix::fs::symlink("1.0/6.1/x86_64", dkms.join("hello/kernel-6.1-x86_64")).unwrap();
    for k in ["6.1.0-1-amd64", "6.12.4-arch1-1"] {
        std::fs::create_dir_all(modules.join(k).join("kernel")).unwrap();
    }
    std::fs::create_dir_all(modules.join("not-a-kernel")).unwrap();
    let dkms = dkms.to_str().unwrap();
    let modules = modules.to_str().unwrap();

    assert_eq!(complete(&["dkms", "gen"]), ["generate_mok"]);
    assert_eq!(
        complete(&["dkms", "kernel_p"]),
        ["kernel_postinst", "kernel_preinst", "kernel_prerm"]
    );
    assert!(complete(&["dkms", ""]).contains(&"autoinstall".to_string()));
    assert!(
        !complete(&["dkms", ""]).contains(&"plan".to_string()),
        "plan is dkms-hook's"
    );
    assert!(complete(&["dkms-hook", ""]).contains(&"plan".to_string()));
    assert_eq!(complete(&["dkms", "build", "--kernelv"]), ["--kernelver"]);
    assert_eq!(
        complete(&["dkms", "--dkmstree", dkms, "install", ""]),
        ["hello/1.0", "hello/2.0", "zfs/2.2.0"]
    );
    assert_eq!(
        complete(&["dkms", "remove", "--dkmstree", dkms, "z"]),
        ["zfs/2.2.0"]
    );
    assert_eq!(
        complete(&["dkms", "build", "--dkmstree", dkms, "-m", ""]),
        ["hello", "hello/1.0", "hello/2.0", "zfs", "zfs/2.2.0"]
    );
    assert_eq!(
        complete(&["dkms", "build", "--dkmstree", dkms, "-m", "hello", "-v", ""]),
        ["1.0", "2.0"]
    );
    assert_eq!(
        complete(&["dkms", "build", "--installtree", modules, "-k", ""]),
        ["6.1.0-1-amd64", "6.12.4-arch1-1"]
    );
    // A tree that is not there offers nothing rather than failing.
    assert!(complete(&["dkms", "--dkmstree", "/nonexistent", "build", ""]).is_empty());
}

/// Renders a man page with `man -l`, failing on any groff warning.
fn render_man(page: &Path) -> String {
    let (ok, out, err) = run(Command::new("man")
        .args(["--warnings", "-l"])
        .arg(page)
        .env("MANWIDTH", "80")
        .env("MANPAGER", "cat")
        .env("PAGER", "cat"));
    assert!(ok, "man -l {}: {err}", page.display());
    assert!(
        err.trim().is_empty(),
        "man -l {} warned:\n{err}",
        page.display()
    );
    out
}

#[test]
#[ignore = "tier b: needs man-db (man -l); scripts/test runs it"]
fn both_man_pages_render_and_name_every_action() {
    let dkms = render_man(&repo().join("man/dkms.8"));
    for action in [
        "add",
        "build",
        "install",
        "uninstall",
        "unbuild",
        "remove",
        "autoinstall",
        "status",
        "match",
        "mktarball",
        "generate_mok",
        "kernel_postinst",
        "kernel_prerm",
    ] {
        assert!(dkms.contains(action), "dkms(8) does not mention {action}");
    }
    assert!(dkms.contains("--config"), "{dkms}");

    let dir = tempfile::tempdir().unwrap();
    let page = dir.path().join("dkms-hook.8");
    let (ok, out, err) = run(Command::new(env!("CARGO_BIN_EXE_dkms-hook")).arg("manpage"));
    assert!(ok, "{err}");
    std::fs::write(&page, out).unwrap();
    let hook = render_man(&page);
    for word in ["hook", "plan", "cleanup", "--allow-untrusted-sources"] {
        assert!(hook.contains(word), "dkms-hook(8) does not mention {word}");
    }
}

#[test]
fn kernel_install_plugin_calls_kernel_postinst_on_add_and_kernel_prerm_on_remove() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let fake = dir.path().join("dkms");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(modules.join("6.9.1-arch1-1/build")).unwrap();
    std::fs::create_dir_all(modules.join("6.9.2-noheaders")).unwrap();
    let plugin = repo().join("kernel-install/40-dkms.install");
    let call = |args: &[&str]| {
        let (ok, _, err) = run(Command::new(&plugin)
            .args(args)
            .env("DKMS", &fake)
            .env("MODULES_ROOT", &modules));
        assert!(ok, "{args:?}: {err}");
    };
    call(&["add", "6.9.1-arch1-1", "/boot/entry", "/boot/vmlinuz"]);
    call(&["add", "6.9.2-noheaders", "/boot/entry"]);
    call(&["remove", "6.9.1-arch1-1", "/boot/entry"]);
    call(&["inspect", "6.9.1-arch1-1"]);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "kernel_postinst -k 6.9.1-arch1-1\nkernel_prerm -k 6.9.1-arch1-1\n"
    );
}

#[test]
#[ignore = "tier b: needs systemd-analyze; scripts/test runs it"]
fn systemd_unit_verifies_and_autoinstalls_the_booted_kernel_before_display_managers() {
    let unit = repo().join("systemd/dkms.service");
    // --man=no: the man pages it documents are installed by the package, not here.
    let (ok, out, err) = run(Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&unit));
    assert!(ok && err.trim().is_empty(), "{out}{err}");
    let text = std::fs::read_to_string(&unit).unwrap();
    for line in [
        "Type=oneshot",
        "Before=display-manager.service graphical.target",
        "ExecStart=-/usr/bin/dkms-hook hook install",
        "ExecStart=/usr/bin/dkms autoinstall -k %v",
        "WantedBy=multi-user.target",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line} missing from {text}"
        );
    }
}

#[test]
fn shipped_framework_conf_parses_and_sets_nothing() {
    let conf = repo().join("etc/framework.conf");
    let text = std::fs::read_to_string(&conf).unwrap();
    let set: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        .collect();
    // Settings starts no bash for a framework.conf without an uncommented line.
    assert!(set.is_empty(), "{set:?}");
    for name in dkms_core::settings::FRAMEWORK_VARIABLES {
        assert!(
            text.contains(&format!("#{name}=")),
            "{name} is not documented"
        );
    }
    let (ok, _, err) = run(Command::new("bash").arg("-n").arg(&conf));
    assert!(ok, "{err}");
}

#[test]
fn dkms_autoinstaller_autoinstalls_a_kernel_with_headers_and_skips_one_without() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("calls");
    let fake = dir.path().join("dkms");
    std::fs::write(
        &fake,
        format!("#!/bin/sh\necho \"$*\" >> '{}'\n", log.display()),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let modules = dir.path().join("modules");
    std::fs::create_dir_all(modules.join("6.9.1-arch1-1/build/include")).unwrap();
    let script = repo().join("init/dkms_autoinstaller");
    let call = |args: &[&str]| {
        run(Command::new(&script)
            .args(args)
            .env("DKMS", &fake)
            .env("MODULES_ROOT", &modules))
    };
    let (ok, out, _) = call(&["start", "6.9.1-arch1-1"]);
    assert!(ok && out.is_empty(), "{out}");
    let (ok, out, _) = call(&["start", "6.9.2-noheaders"]);
    assert!(ok);
    assert_eq!(
        out,
        "Automatic installation of modules for kernel 6.9.2-noheaders was skipped since the kernel headers for this kernel do not seem to be installed.\n"
    );
    assert!(call(&["stop"]).0);
    assert!(!call(&["bogus"]).0);
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        "autoinstall --kernelver 6.9.1-arch1-1\n"
    );
}

/// A DKMS tree with two module versions and an install tree with one kernel, as the
/// zsh and fish tests read them.
fn completion_trees() -> (tempfile::TempDir, String, String) {
    let root = tempfile::tempdir().unwrap();
    let dkms = root.path().join("dkms");
    let modules = root.path().join("modules");
    for (m, v) in [("hello", "1.0"), ("zfs", "2.2.0")] {
        let dir = dkms.join(m).join(v);
        std::fs::create_dir_all(&dir).unwrap();
        std::os::unix::fs::symlink("/usr/src/gone", dir.join("source")).unwrap();
    }
    std::fs::create_dir_all(modules.join("6.1.0-1-amd64/kernel")).unwrap();
    std::fs::create_dir_all(modules.join("not-a-kernel")).unwrap();
    let text = |p: PathBuf| p.to_str().unwrap().to_string();
    (root, text(dkms), text(modules))
}

/// fish's own completion of a command line (`complete --do-complete`), candidates
/// without their descriptions, sorted.
fn fish_complete(line: &str) -> Vec<String> {
    let script = format!(
        "source '{}'; or exit 9; complete --do-complete '{line}'",
        repo().join("completions/dkms.fish").display()
    );
    let (ok, out, err) = run(Command::new("fish").args(["--no-config", "-c", &script]));
    assert!(ok, "{err}");
    let mut words: Vec<String> = out
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .filter(|w| !w.is_empty())
        .collect();
    words.sort();
    words
}

#[test]
#[ignore = "tier b: needs fish (scripts/install-deps); scripts/test runs it"]
fn fish_completion_offers_actions_modules_and_kernels_of_the_trees() {
    let (_root, dkms, modules) = completion_trees();
    assert_eq!(fish_complete("dkms gen"), ["generate_mok"]);
    assert_eq!(
        fish_complete("dkms kernel_p"),
        ["kernel_postinst", "kernel_preinst", "kernel_prerm"]
    );
    assert!(fish_complete("dkms pl").is_empty(), "plan is dkms-hook's");
    assert_eq!(fish_complete("dkms-hook pl"), ["plan"]);
    assert_eq!(
        fish_complete(&format!("dkms --dkmstree {dkms} install ")),
        ["hello/1.0", "zfs/2.2.0"]
    );
    assert_eq!(
        fish_complete(&format!("dkms build --installtree {modules} -k ")),
        ["6.1.0-1-amd64"]
    );
    assert_eq!(fish_complete("dkms build --kernelv"), ["--kernelver"]);
}

/// Runs `calls` after sourcing completions/_dkms in `zsh -f`, with compsys's
/// `_describe` replaced by one printing the candidates and `_arguments` by nothing
/// (compsys needs a terminal): the tree-reading functions are what is tested.
fn zsh_candidates(calls: &str) -> String {
    let script = format!(
        "_describe() {{ local -a c; c=(\"${{(@P)4}}\"); (( $#c )) && print -rl -- \"${{c[@]}}\"; return 0; }}\n\
         _arguments() {{ :; }}\n\
         source '{}' || exit 9\n{calls}",
        repo().join("completions/_dkms").display()
    );
    let (ok, out, err) = run(Command::new("zsh").args(["-f", "-c", &script]));
    assert!(ok, "{err}");
    out
}

#[test]
#[ignore = "tier b: needs zsh (scripts/install-deps); scripts/test runs it"]
fn zsh_completion_reads_modules_versions_and_kernels_from_the_trees() {
    let (ok, _, err) = run(Command::new("zsh")
        .args(["-n"])
        .arg(repo().join("completions/_dkms")));
    assert!(ok, "{err}");
    let (_root, dkms, modules) = completion_trees();
    assert_eq!(
        zsh_candidates(&format!(
            "words=(dkms --dkmstree {dkms} install '')\n_dkms_pairs"
        )),
        "hello/1.0\nzfs/2.2.0\n"
    );
    assert_eq!(
        zsh_candidates(&format!(
            "words=(dkms --dkmstree {dkms} build -m hello -v '')\n_dkms_versions"
        )),
        "1.0\n"
    );
    assert_eq!(
        zsh_candidates(&format!(
            "words=(dkms --installtree {modules} -k '')\n_dkms_kernels"
        )),
        "6.1.0-1-amd64\n"
    );
    assert_eq!(
        zsh_candidates("words=(dkms --dkmstree /nonexistent install '')\n_dkms_pairs"),
        ""
    );
    // The actions offered: dkms-hook's extras only under that name.
    let actions = std::fs::read_to_string(repo().join("completions/_dkms")).unwrap();
    for action in [
        "generate_mok",
        "kernel_postinst",
        "kernel_prerm",
        "autoinstall",
    ] {
        assert!(actions.contains(&format!("'{action}:")), "{action}");
    }
}
