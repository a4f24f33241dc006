//! End to end: `RunContainer` spawns the container's monitor while it creates the
//! container (skiffd's `prespawn`); a run whose create fails leaves no monitor behind,
//! and one that works runs as ever, its output and exit code through the monitor.

mod common;

use common::{stderr, stdout, Env};

/// The monitors skiffd `daemon` spawned that are still there (its children named
/// skiff-monitor).
fn monitors_of(daemon: u32) -> Vec<u32> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let Some((head, tail)) = stat.rsplit_once(") ") else {
            continue;
        };
        let comm = head.split_once(" (").map(|(_, c)| c).unwrap_or("");
        let ppid: u32 = tail
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        if ppid == daemon && comm == "skiff-monitor" {
            found.push(pid);
        }
    }
    found
}

#[test]
fn a_run_whose_create_fails_leaves_no_monitor_behind() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    assert!(env
        .skiff(&["create", "--name", "taken", "demo/busybox", "true"])
        .status
        .success());
    for _ in 0..3 {
        let out = env.skiff(&["run", "--rm", "--name", "taken", "demo/busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        assert!(stderr(&out).contains("taken"), "{}", stderr(&out));
    }
    let out = env.skiff(&["run", "--rm", "--pull", "never", "demo/nope", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(
        env.eventually(10, || monitors_of(daemon).is_empty()),
        "monitors left: {:?}",
        monitors_of(daemon)
    );
    // And a run that works still does, with its output and exit code.
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "echo out; exit 4",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out\n");
    assert!(env.eventually(10, || monitors_of(daemon).is_empty()));
}
