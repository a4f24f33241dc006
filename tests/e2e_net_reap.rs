//! End to end: the network helper of a container without published ports, which the
//! monitor does not wait for before it reports the exit, is still reaped by the monitor
//! (after the report) — not handed to whatever inherits it, where it stays a zombie until
//! that process reaps (this machine's init does so only now and then).

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::time::{Duration, Instant};

use common::Env;
use net_helpers::*;

/// The parent pid and the state letter of `pid`, from /proc/PID/stat.
fn ppid_and_state(pid: i32) -> Option<(i32, char)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((ppid, state))
}

/// The pids of the processes named `comm` whose parent is `parent`.
fn children_named(parent: i32, comm: &str) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let name = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if name.trim() == comm && ppid_and_state(pid).is_some_and(|(p, _)| p == parent) {
            out.push(pid);
        }
    }
    out
}

#[test]
fn a_helper_without_ports_is_reaped_after_the_exit_not_left_a_zombie() {
    let env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "quiet",
            "--network",
            "slirp4netns",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&run_ok(&env, &["inspect", "quiet"])).unwrap();
    let init = v[0]["State"]["Pid"].as_i64().unwrap() as i32;
    let (monitor, _) = ppid_and_state(init).expect("the container's init is gone");
    let helpers = children_named(monitor, "slirp4netns");
    assert_eq!(helpers.len(), 1, "the monitor's slirp4netns: {helpers:?}");
    let helper = helpers[0];
    // Watch the helper's parent from before the stop until its /proc entry is gone: the
    // monitor must stay its parent (reaping it), never hand it to an inheritor.
    let watcher = std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut parents = vec![monitor];
        while let Some((ppid, state)) = ppid_and_state(helper) {
            if !parents.contains(&ppid) {
                parents.push(ppid);
            }
            if Instant::now() > deadline {
                return Err(format!("still there after 20 s: state {state}"));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(parents)
    });
    run_ok(&env, &["stop", "-t", "1", "quiet"]);
    let parents = watcher
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("slirp4netns {helper}: {e}"));
    assert_eq!(
        parents,
        [monitor],
        "slirp4netns {helper} was handed from its monitor {monitor} to another parent \
         instead of being reaped by it"
    );
    assert_no_helpers_left(&env);
}

#[test]
fn a_daemon_stopped_right_after_an_exit_reaps_the_monitor_first() {
    let mut env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "brief",
            "--network",
            "slirp4netns",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&run_ok(&env, &["inspect", "brief"])).unwrap();
    let init = v[0]["State"]["Pid"].as_i64().unwrap() as i32;
    let (monitor, _) = ppid_and_state(init).expect("the container's init is gone");
    // The exit is recorded when the monitor reports it; the monitor then still reaps its
    // slirp4netns (~20 ms), and skiffd reaps the monitor in the background.
    run_ok(&env, &["stop", "-t", "1", "brief"]);
    env.stop_daemon();
    // skiffd is gone: had it not reaped the monitor first, the monitor (alive or a
    // zombie) would now be another process's child.
    if let Some((ppid, state)) = ppid_and_state(monitor) {
        panic!("the monitor {monitor} outlived skiffd's stop: state {state}, parent {ppid}");
    }
}
