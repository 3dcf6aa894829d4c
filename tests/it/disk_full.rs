//! A full disk: a small tmpfs as the install tree, or as the DKMS tree, in a private
//! mount namespace (the rest of the system never sees it). The command must fail
//! with an error that says so and names the place, leave what was installed exactly
//! as it was, leave no temp name behind, and succeed once there is room.

use crate::report::{Category, Tally};
use crate::support::{headers, Output, Sandbox, ARCH, K53};
use crate::trees::{read_tree, temp_names};
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

/// A tmpfs of a given size mounted over a directory inside a mount namespace of its
/// own, kept alive by a `sleep` that holds the namespace. Commands run in it through
/// `nsenter`; the test reads its files through `/proc/<pid>/root`. Dropping it kills
/// the holder, which takes the namespace and the mount with it.
struct PrivateTmpfs {
    holder: Child,
    dir: PathBuf,
}

impl PrivateTmpfs {
    fn over(dir: &Path, size: &str) -> PrivateTmpfs {
        const SCRIPT: &str = r#"mount --make-rprivate / &&
mount -t tmpfs -o "size=$1,mode=0755" dkms-hook-disk-full "$0" &&
echo mounted && exec sleep 3600"#;
        let mut holder = Command::new("unshare")
            .args(["-m", "sh", "-c", SCRIPT])
            .arg(dir)
            .arg(size)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("running unshare");
        let mut line = String::new();
        BufReader::new(holder.stdout.take().expect("piped stdout"))
            .read_line(&mut line)
            .expect("reading from the namespace holder");
        assert_eq!(line, "mounted\n", "mounting a tmpfs over {}", dir.display());
        PrivateTmpfs {
            holder,
            dir: dir.to_path_buf(),
        }
    }

    /// `path` as seen inside the namespace, from outside it.
    fn view(&self, path: &Path) -> PathBuf {
        Path::new(&format!("/proc/{}/root", self.holder.id())).join(path.strip_prefix("/").unwrap())
    }

    /// The `nsenter` prefix that runs a command inside the namespace.
    fn enter(&self) -> Vec<String> {
        ["nsenter", "-t", &self.holder.id().to_string(), "-m", "--"]
            .map(String::from)
            .to_vec()
    }

    /// Gives the tmpfs a new size.
    fn resize(&self, size: &str) {
        let status = Command::new("nsenter")
            .args(["-t", &self.holder.id().to_string(), "-m", "--"])
            .args(["mount", "-o", &format!("remount,size={size}")])
            .arg(&self.dir)
            .status()
            .expect("running nsenter");
        assert!(status.success(), "remounting the tmpfs with size={size}");
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        let _ = self.holder.kill();
        let _ = self.holder.wait();
    }
}

/// Runs our binary inside `fs`'s namespace on the sandbox's trees.
fn ours_in(sb: &Sandbox, fs: &PrivateTmpfs, args: &[&str]) -> Output {
    let enter = fs.enter();
    let wrapper: Vec<&str> = enter.iter().map(String::as_str).collect();
    let out = sb
        .ours_command(&wrapper, args)
        .stdin(Stdio::null())
        .output()
        .expect("running dkms-hook in the namespace");
    Output {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        code: out.status.code().unwrap_or(-1),
    }
}

fn ok(out: Output, what: &str) -> Output {
    assert_eq!(out.code, 0, "{what}\n{out}");
    out
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn installing_a_module_that_does_not_fit_fails_naming_the_path_and_keeps_the_old_one() {
    let tally = Tally::all_or_nothing(Category::Fault, "install tree full", 1);
    let sb = Sandbox::new();
    // The install tree is a 1 MiB tmpfs (in the namespace) with one kernel in it.
    let tmpfs = PrivateTmpfs::over(&sb.install_tree(), "1M");
    let kernel_dir = tmpfs.view(&sb.install_tree().join(K53));
    fs::create_dir_all(kernel_dir.join("kernel")).unwrap();
    std::os::unix::fs::symlink(headers(K53), kernel_dir.join("build")).unwrap();
    for version in ["1.0", "2.0"] {
        sb.copy_fixture("big", version);
        ok(
            ours_in(&sb, &tmpfs, &["add", &format!("big/{version}")]),
            "add",
        );
    }
    ok(
        ours_in(&sb, &tmpfs, &["install", "big/1.0", "-k", K53]),
        "install 1.0",
    );
    ok(
        ours_in(&sb, &tmpfs, &["build", "big/2.0", "-k", K53]),
        "build 2.0",
    );
    let installed = kernel_dir.join("updates/dkms/big.ko");
    let v1 = fs::read(&installed).unwrap();
    let v2 = fs::read(sb.built_module_dir("big", "2.0", K53).join("big.ko")).unwrap();
    assert!(v2.len() > 4 << 20, "big 2.0 is larger than the tmpfs");

    let out = ours_in(&sb, &tmpfs, &["install", "big/2.0", "-k", K53]);
    assert_ne!(out.code, 0, "installing onto a full disk succeeded\n{out}");
    let dest = sb.install_tree().join(K53).join("updates/dkms/big.ko");
    assert!(
        out.stderr.contains(dest.to_str().unwrap()) && out.stderr.contains("disk is full"),
        "the error names {} and says the disk is full\n{out}",
        dest.display()
    );
    assert_eq!(
        fs::read(&installed).unwrap(),
        v1,
        "1.0's module is unchanged"
    );
    let link = sb.dkms_tree().join(format!("big/kernel-{K53}-{ARCH}"));
    assert_eq!(
        fs::read_link(&link).unwrap(),
        Path::new("1.0").join(K53).join(ARCH),
        "1.0 is still the installed version"
    );
    for tree in [tmpfs.view(&sb.install_tree()), sb.dkms_tree()] {
        assert_eq!(temp_names(&read_tree(&tree)), Vec::<String>::new());
    }
    let status = ok(ours_in(&sb, &tmpfs, &["status", "--compat"]), "status");
    assert_eq!(
        status.stdout,
        format!("big/1.0, {K53}, {ARCH}: installed\nbig/2.0, {K53}, {ARCH}: built\n")
    );

    // With room, the same command goes through.
    tmpfs.resize("32M");
    ok(
        ours_in(&sb, &tmpfs, &["install", "big/2.0", "-k", K53]),
        "install with room",
    );
    assert_eq!(fs::read(&installed).unwrap(), v2);
    tally.nothing_lost();
}

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_build_that_fills_the_dkms_tree_fails_as_disk_full_keeps_the_installed_module_and_is_retried() {
    let tally = Tally::all_or_nothing(Category::Fault, "DKMS tree full during a build", 1);
    let sb = Sandbox::new();
    // The DKMS tree is a 2 MiB tmpfs (in the namespace): big 1.0 builds in it, the
    // 4 MiB of big 2.0 do not.
    let tmpfs = PrivateTmpfs::over(&sb.dkms_tree(), "2M");
    for version in ["1.0", "2.0"] {
        sb.copy_fixture("big", version);
        ok(
            ours_in(&sb, &tmpfs, &["add", &format!("big/{version}")]),
            "add",
        );
    }
    ok(
        ours_in(&sb, &tmpfs, &["install", "big/1.0", "-k", K53]),
        "install 1.0",
    );
    let installed = sb.installed_module_dir(K53).join("big.ko");
    let v1 = fs::read(&installed).unwrap();
    let dkms_view = tmpfs.view(&sb.dkms_tree());
    let before = read_tree(&dkms_view);

    let out = ours_in(&sb, &tmpfs, &["install", "big/2.0", "-k", K53]);
    assert_eq!(
        out.code, 10,
        "a build that runs out of space fails as a build\n{out}"
    );
    let work = sb.dkms_tree().join(format!("big/2.0/build-{K53}-{ARCH}"));
    assert!(
        out.stderr.contains(work.to_str().unwrap()) && out.stderr.contains("is full"),
        "the error names {} and says its file system is full\n{out}",
        work.display()
    );
    assert_eq!(
        fs::read(&installed).unwrap(),
        v1,
        "1.0's module is unchanged"
    );
    // A build that failed for want of space is not remembered: its work dir goes to
    // give the space back, and with it upstream's `<v>/build`, which pointed at it
    // while it ran (a link left dangling would be followed by upstream's scripts).
    let shared = tmpfs.view(&sb.dkms_tree().join("big/2.0/build"));
    assert!(
        fs::symlink_metadata(&shared).is_err(),
        "{} is gone with the work dir it pointed at",
        shared.display()
    );
    assert_eq!(
        read_tree(&dkms_view),
        before,
        "the failed build left nothing in the DKMS tree (no work directory, no <v>/build, no failure record, no temp name)"
    );

    // A full disk is not the source's fault: once there is room, the next run builds
    // again rather than reporting a remembered failure.
    tmpfs.resize("32M");
    ok(
        ours_in(&sb, &tmpfs, &["install", "big/2.0", "-k", K53]),
        "install with room",
    );
    assert_eq!(
        fs::read(&installed).unwrap(),
        fs::read(
            tmpfs
                .view(&sb.built_module_dir("big", "2.0", K53))
                .join("big.ko")
        )
        .unwrap()
    );
    tally.nothing_lost();
}
