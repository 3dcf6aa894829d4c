//! One writer at a time: a command that changes the trees waits for another run's
//! lock (saying so), and read-only commands never wait.

use crate::report::{Category, Tally};
use crate::support::Sandbox;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
#[ignore = "tier b: needs root and the installed kernels' headers; scripts/test runs it"]
fn a_writer_waits_for_the_tree_lock_while_status_does_not() {
    // Two runs against a held lock: status, which goes ahead, and add, which waits.
    let tally = Tally::all_or_nothing(
        Category::Concurrent,
        "a writer and status against a held lock",
        2,
    );
    let sb = Sandbox::new();
    sb.copy_fixture("hello", "1.0");
    std::fs::create_dir_all(sb.dkms_tree()).unwrap();
    let lock = sb.dkms_tree().join(".dkms-hook.lock");
    // Another run (here util-linux flock) holds the lock for two seconds.
    let mut holder = Command::new("flock")
        .arg(&lock)
        .args(["sleep", "2"])
        .spawn()
        .expect("run flock");
    std::thread::sleep(Duration::from_millis(300));

    let start = Instant::now();
    let status = sb.run_ours(&["status", "--compat"]);
    assert_eq!(status.code, 0, "{status}");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "status must not wait for the lock"
    );

    let start = Instant::now();
    let add = sb.run_ours(&["add", "hello/1.0"]);
    let waited = start.elapsed();
    assert_eq!(add.code, 0, "{add}");
    assert!(
        add.stderr.contains("waiting for another dkms-hook run"),
        "{add}"
    );
    assert!(
        waited >= Duration::from_millis(1200),
        "add returned after {waited:?}, before the lock was free"
    );
    holder.wait().unwrap();
    assert_eq!(
        sb.run_ours(&["status", "--compat"]).stdout,
        "hello/1.0: added\n"
    );
    tally.nothing_lost();
}
