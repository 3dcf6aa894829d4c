//! Builds as root run as the unprivileged build user in a jail (issue #15): the
//! hostile fixture's dkms.conf, PRE_BUILD, Makefile and POST_BUILD try to write
//! outside their work directory, read secrets, reach the host's network and plant
//! setuid files, and every attempt must fail while the module still builds.
//!
//! Each run of our binary here happens in a private mount namespace with overlays
//! over /etc, /root, /usr/lib/modules and /var/lib/dkms, so that even a broken jail
//! writes only into the overlays' upper directories, which the test then finds
//! empty (or, with `build_as_root`, not empty: the probe can see a success).

use crate::support::{run, Output, Sandbox, ARCH, K53, K54};
use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What probe.sh tries in every stage; each must be `blocked` when confined.
const ATTEMPTS: [&str; 12] = [
    "write /etc",
    "write /usr/lib/modules",
    "write /var/lib/dkms",
    "write /root",
    "write the install tree",
    "write the dkms tree",
    "write the source tree",
    "read /root",
    "read /etc/shadow",
    "connect to the host",
    "setuid on the source",
    "setuid on /etc/passwd",
];

/// The system directories overlaid in the test's mount namespace.
const GUARDED: [&str; 4] = ["/etc", "/root", "/usr/lib/modules", "/var/lib/dkms"];

/// Mounts an overlay (upper dirs in $OVL) over each guarded directory that exists,
/// then runs the rest of the command line; any failure stops before running it.
const OVERLAY_SCRIPT: &str = r#"set -e
mount --make-rprivate /
for d in /etc /root /usr/lib/modules /var/lib/dkms; do
    [ -d "$d" ] || continue
    n=$(printf %s "$d" | tr / _)
    mkdir -p "$OVL/$n/upper" "$OVL/$n/work"
    # The overlay's top directory takes the upper dir's owner and mode (/root 0700).
    chown --reference="$d" "$OVL/$n/upper"
    chmod --reference="$d" "$OVL/$n/upper"
    mount -t overlay overlay -o "lowerdir=$d,upperdir=$OVL/$n/upper,workdir=$OVL/$n/work" "$d"
done
exec "$@""#;

/// Runs our binary with `args` inside the overlay namespace, with the probe's
/// environment (the sandbox root, and the port of `listener` on the host's loopback).
fn ours_guarded(sb: &Sandbox, listener: &std::net::TcpListener, args: &[&str]) -> Output {
    let port = listener.local_addr().unwrap().port().to_string();
    let mut cmd = sb.ours_command(&["unshare", "-m", "sh", "-c", OVERLAY_SCRIPT, "sh"], args);
    cmd.env("OVL", sb.path("overlays"))
        .env("HOSTILE_ROOT", sb.path(""))
        .env("HOSTILE_PORT", port);
    run(cmd)
}

/// Every path below `dir` with its mode and content (symlinks by target).
fn digest(dir: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let meta = fs::symlink_metadata(&path).unwrap();
        let content = if meta.file_type().is_symlink() {
            fs::read_link(&path)
                .unwrap()
                .into_os_string()
                .into_encoded_bytes()
        } else if meta.is_dir() {
            for entry in fs::read_dir(&path).unwrap() {
                stack.push(entry.unwrap().path());
            }
            Vec::new()
        } else {
            fs::read(&path).unwrap()
        };
        let relative = path.strip_prefix(dir).unwrap().to_path_buf();
        out.insert(relative, (meta.permissions().mode(), content));
    }
    out
}

/// What the guarded directories' overlays received (nothing, when the jail held).
fn overlay_writes(sb: &Sandbox) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for dir in GUARDED {
        let upper = sb.path(&format!("overlays/{}/upper", dir.replace('/', "_")));
        if upper.is_dir() {
            written.extend(
                digest(&upper)
                    .into_keys()
                    .filter(|p| !p.as_os_str().is_empty()),
            );
        }
    }
    written
}

/// Files below `dir` with a setuid or setgid bit, or named like the planted binary.
fn setuid_files(dir: &Path) -> Vec<PathBuf> {
    digest(dir)
        .into_iter()
        .filter(|(path, (mode, _))| {
            mode & 0o6000 != 0 || path.to_string_lossy().contains("setuid-true")
        })
        .map(|(path, _)| path)
        .collect()
}

fn make_log(sb: &Sandbox, kernel: &str) -> String {
    let log = sb
        .dkms_tree()
        .join(format!("hostile/1.0/{kernel}/{ARCH}/log/make.log"));
    fs::read_to_string(&log).unwrap_or_else(|e| panic!("{}: {e}", log.display()))
}

#[test]
#[ignore = "tier b: needs root, unshare, overlayfs and kernel headers; scripts/test runs it"]
fn a_hostile_build_changes_nothing_outside_its_work_dir_and_still_builds() {
    let sb = Sandbox::new();
    sb.copy_fixture("hostile", "1.0");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let sources = digest(&sb.source_tree());
    let installed = digest(&sb.install_tree());

    let add = ours_guarded(&sb, &listener, &["add", "hostile/1.0"]);
    assert_eq!(add.code, 0, "{add}");
    let build = ours_guarded(
        &sb,
        &listener,
        &["build", "hostile/1.0", "-k", K53, "-k", K54],
    );
    assert_eq!(
        build.code, 0,
        "the module builds despite its attempts\n{build}"
    );

    for kernel in [K53, K54] {
        let log = make_log(&sb, kernel);
        for stage in ["pre_build", "make", "post_build"] {
            for attempt in ATTEMPTS {
                let line = format!("hostile {stage} {attempt}: blocked");
                assert!(
                    log.contains(&line),
                    "{kernel}: no `{line}` in make.log:\n{log}"
                );
            }
        }
        let escaped: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("SUCCEEDED") && !l.contains(" listen:"))
            .collect();
        assert!(
            escaped.is_empty(),
            "{kernel}: attempts that worked: {escaped:#?}"
        );
        // It did try: the planted binaries exist in its work dir for root to find.
        assert!(
            log.contains("hostile pre_build planted a setuid binary"),
            "{log}"
        );
        assert!(
            log.contains("hostile make planted a setuid binary"),
            "{log}"
        );
        // And what upstream-compatible scripts do works: POST_BUILD's copy into
        // <v>/<k>/<a>/ (zfs's Module.symvers) arrives.
        assert!(log.contains("hostile post_build copied its note"), "{log}");
        let note = sb
            .dkms_tree()
            .join(format!("hostile/1.0/{kernel}/{ARCH}/post-build-note"));
        assert_eq!(fs::read_to_string(&note).unwrap(), "note from POST_BUILD\n");
        assert!(sb
            .built_module_dir("hostile", "1.0", kernel)
            .join("hostile.ko")
            .is_file());
    }

    assert_eq!(
        overlay_writes(&sb),
        Vec::<PathBuf>::new(),
        "system dirs written"
    );
    assert!(
        digest(&sb.source_tree()) == sources,
        "the source tree changed"
    );
    assert!(
        digest(&sb.install_tree()) == installed,
        "the install tree changed"
    );
    let strays: Vec<PathBuf> = digest(&sb.dkms_tree())
        .into_keys()
        .filter(|p| p.to_string_lossy().contains("dkms-hook-hostile"))
        .collect();
    assert_eq!(strays, Vec::<PathBuf>::new(), "written in the DKMS tree");
    assert_eq!(setuid_files(&sb.dkms_tree()), Vec::<PathBuf>::new());

    let install = ours_guarded(&sb, &listener, &["install", "hostile/1.0", "-k", K54]);
    assert_eq!(install.code, 0, "{install}");
    assert!(sb.installed_module_dir(K54).join("hostile.ko").is_file());
    assert_eq!(setuid_files(&sb.install_tree()), Vec::<PathBuf>::new());
    assert_eq!(
        overlay_writes(&sb),
        Vec::<PathBuf>::new(),
        "system dirs written"
    );

    // Status says who builds.
    let status = sb.ours(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(json["builder"]["runs_as"], "user", "{json}");
    assert_ne!(json["builder"]["uid"], 0, "{json}");
    let text = sb.ours(&["status"]).stdout;
    assert!(text.contains("Builds run as: "), "{text}");
    assert!(
        text.contains("confined to each build's work directory"),
        "{text}"
    );
}

#[test]
#[ignore = "tier b: needs root, unshare, overlayfs and kernel headers; scripts/test runs it"]
fn build_as_root_builds_unconfined_as_upstream_and_status_warns() {
    let sb = Sandbox::new();
    sb.build_as_root();
    sb.copy_fixture("hostile", "1.0");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let add = ours_guarded(&sb, &listener, &["add", "hostile/1.0"]);
    assert_eq!(add.code, 0, "{add}");
    let build = ours_guarded(&sb, &listener, &["build", "hostile/1.0", "-k", K54]);
    assert_eq!(build.code, 0, "{build}");
    // The probe sees what root can do (into the namespace's overlays only).
    let log = make_log(&sb, K54);
    assert!(log.contains("hostile make write /etc: SUCCEEDED"), "{log}");
    assert!(
        log.contains("hostile pre_build read /etc/shadow: SUCCEEDED"),
        "{log}"
    );
    assert!(
        overlay_writes(&sb).contains(&PathBuf::from("dkms-hook-hostile-make")),
        "{:?}",
        overlay_writes(&sb)
    );
    // Root still takes no setuid bits into the tree it owns.
    assert_eq!(setuid_files(&sb.dkms_tree()), Vec::<PathBuf>::new());

    let status = sb.ours(&["status"]);
    assert!(
        status
            .stdout
            .contains("Builds run as: root (build_as_root = true)"),
        "{status}"
    );
    assert!(status.stderr.contains("builds run as root"), "{status}");
    let json = sb.ours(&["status", "--json"]).stdout;
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(json["builder"]["runs_as"], "root", "{json}");
}
