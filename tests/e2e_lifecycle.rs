//! End to end: detached containers under their monitors — stop/kill/restart/rename,
//! restart policies, events, filters, and containers that survive a daemon crash (their
//! logs: e2e_logs).

mod common;

use std::process::Stdio;

use common::{entries, stderr, stdout, Env};

#[test]
fn stop_kills_after_the_timeout_and_kill_sends_signals() {
    let env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "stubborn",
            "demo/busybox",
            "sleep",
            "1000"
        ])
        .status
        .success());
    let t = std::time::Instant::now();
    let stop = env.skiff(&["stop", "-t", "1", "stubborn"]);
    assert!(stop.status.success(), "{}", stderr(&stop));
    assert!(
        t.elapsed() >= std::time::Duration::from_millis(900),
        "stop did not wait for the timeout"
    );
    // pid 1 ignores SIGTERM without a handler, so SIGKILL ended it: 137.
    assert_eq!(env.inspect("stubborn")["State"]["ExitCode"], 137);
    // A trap makes SIGTERM work at once, with the stop signal the container asked for.
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "polite",
            "--stop-signal",
            "USR1",
            "demo/busybox",
            "sh",
            "-c",
            "trap 'exit 42' USR1; while :; do sleep 0.1; done"
        ])
        .status
        .success());
    assert!(env.eventually(5, || env.inspect("polite")["State"]["Status"] == "running"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(env.skiff(&["stop", "-t", "20", "polite"]).status.success());
    assert_eq!(env.inspect("polite")["State"]["ExitCode"], 42);
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "target",
            "demo/busybox",
            "sleep",
            "1000"
        ])
        .status
        .success());
    assert!(env
        .skiff(&["kill", "-s", "KILL", "target"])
        .status
        .success());
    assert_eq!(stdout(&env.skiff(&["wait", "target"])).trim(), "137");
    let again = env.skiff(&["kill", "target"]);
    assert!(!again.status.success());
    assert!(stderr(&again).contains("not running"), "{}", stderr(&again));
}

#[test]
fn restart_policy_on_failure_restarts_exactly_n_times() {
    let env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "flaky",
            "--restart",
            "on-failure:2",
            "demo/busybox",
            "sh",
            "-c",
            "echo run; exit 3"
        ])
        .status
        .success());
    assert!(
        env.eventually(20, || env.inspect("flaky")["RestartCount"] == 2
            && env.inspect("flaky")["State"]["Status"] == "exited")
    );
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let v = env.inspect("flaky");
    assert_eq!(v["RestartCount"], 2, "{v}");
    assert_eq!(v["State"]["ExitCode"], 3);
    assert_eq!(stdout(&env.skiff(&["logs", "flaky"])), "run\nrun\nrun\n");
}

#[test]
fn stop_by_the_user_is_never_restarted() {
    let env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "always",
            "--restart",
            "always",
            "demo/busybox",
            "sleep",
            "1000"
        ])
        .status
        .success());
    assert!(env.skiff(&["stop", "-t", "0", "always"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(800));
    let v = env.inspect("always");
    assert_eq!(v["State"]["Status"], "exited", "{v}");
    assert_eq!(v["RestartCount"], 0);
    // restart brings it back.
    assert!(env
        .skiff(&["restart", "-t", "0", "always"])
        .status
        .success());
    assert_eq!(env.inspect("always")["State"]["Status"], "running");
    assert!(env.skiff(&["rm", "-f", "always"]).status.success());
}

#[test]
fn containers_survive_a_daemon_crash() {
    let mut env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "web",
            "demo/busybox",
            "sh",
            "-c",
            "i=0; while :; do echo beat $i; i=$((i+1)); sleep 0.2; done"
        ])
        .status
        .success());
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "short",
            "demo/busybox",
            "sh",
            "-c",
            "sleep 1; exit 5"
        ])
        .status
        .success());
    let pid = env.inspect("web")["State"]["Pid"].as_u64().unwrap();
    assert!(pid > 0);
    env.kill_daemon();
    // While no daemon runs: `short` ends, `web` keeps logging.
    std::thread::sleep(std::time::Duration::from_millis(1800));
    env.start_daemon();
    let v = env.inspect("web");
    assert_eq!(v["State"]["Status"], "running", "{v}\n{}", env.daemon_log());
    assert_eq!(v["State"]["Pid"].as_u64().unwrap(), pid, "same process");
    assert!(env.eventually(10, || env.inspect("short")["State"]["Status"] == "exited"));
    assert_eq!(
        env.inspect("short")["State"]["ExitCode"],
        5,
        "exit while the daemon was down"
    );
    // Logs are unbroken across the crash: consecutive beats.
    let logs = stdout(&env.skiff(&["logs", "web"]));
    let beats: Vec<u64> = logs
        .lines()
        .filter_map(|l| l.strip_prefix("beat ")?.parse().ok())
        .collect();
    assert!(beats.len() >= 8, "{logs}");
    assert!(beats.windows(2).all(|w| w[1] == w[0] + 1), "{beats:?}");
    // Still stoppable by the new daemon.
    assert!(env.skiff(&["stop", "-t", "1", "web"]).status.success());
    assert_eq!(env.inspect("web")["State"]["Status"], "exited");
    assert!(env.skiff(&["rm", "web", "short"]).status.success());
    assert!(entries(&env.data().join("containers")).is_empty());
}

/// skiffd stopped cleanly (SIGTERM, as `systemctl stop` does) while a container runs:
/// it exits 0 (it once aborted here with a stack overflow: each dropped monitor's
/// reaper task spawned another as the runtime shut down), the container runs on with
/// no daemon, and the next skiffd adopts it.
#[test]
fn a_clean_stop_with_a_running_container_exits_zero_and_the_container_runs_on() {
    let mut env = Env::new();
    let run = env.skiff(&[
        "run",
        "-d",
        "--name",
        "web",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let pid = env.inspect("web")["State"]["Pid"].as_u64().unwrap();
    // Panics unless skiffd exits 0.
    env.stop_daemon();
    assert!(
        std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "the container ended with skiffd"
    );
    env.start_daemon();
    let v = env.inspect("web");
    assert_eq!(v["State"]["Status"], "running", "{v}\n{}", env.daemon_log());
    assert_eq!(v["State"]["Pid"].as_u64().unwrap(), pid, "same process");
    assert!(env.skiff(&["rm", "-f", "web"]).status.success());
}

#[test]
fn always_containers_come_back_when_the_daemon_starts() {
    let mut env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "svc",
            "--restart",
            "unless-stopped",
            "demo/busybox",
            "sh",
            "-c",
            "sleep 0.5; exit 1"
        ])
        .status
        .success());
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "held",
            "--restart",
            "unless-stopped",
            "demo/busybox",
            "sleep",
            "1000"
        ])
        .status
        .success());
    assert!(env.skiff(&["stop", "-t", "0", "held"]).status.success());
    env.kill_daemon();
    std::thread::sleep(std::time::Duration::from_millis(1000));
    env.start_daemon();
    assert!(
        env.eventually(10, || env.inspect("svc")["State"]["Status"] == "running"),
        "{}",
        env.daemon_log()
    );
    assert_eq!(env.inspect("held")["State"]["Status"], "exited");
    assert!(env.skiff(&["rm", "-f", "svc", "held"]).status.success());
}

#[test]
fn rename_names_and_parallel_creates() {
    let env = Env::new();
    assert!(env
        .skiff(&["create", "--name", "old", "demo/busybox", "true"])
        .status
        .success());
    assert!(env.skiff(&["rename", "old", "new"]).status.success());
    assert_eq!(env.inspect("new")["Name"], "/new");
    assert!(!env.skiff(&["inspect", "old"]).status.success());
    let handles: Vec<_> = (0..20)
        .map(|_| {
            env.skiff_cmd(&["create", "demo/busybox", "true"])
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let ids: Vec<String> = handles
        .into_iter()
        .map(|h| {
            let o = h.wait_with_output().unwrap();
            assert!(o.status.success(), "{}", stderr(&o));
            stdout(&o).trim().to_string()
        })
        .collect();
    let names: std::collections::BTreeSet<String> = ids
        .iter()
        .map(|id| env.inspect(id)["Name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 20, "{names:?}");
    // Ambiguous prefixes list the candidates.
    // A one-digit prefix that several of the 20 ids share is ambiguous: the error
    // lists the candidates.
    let digit = (0..16)
        .map(|d| format!("{d:x}"))
        .find(|d| ids.iter().filter(|id| id.starts_with(d.as_str())).count() >= 2)
        .expect("20 random ids share a first digit");
    let amb = env.skiff(&["inspect", &digit]);
    assert!(!amb.status.success());
    let e = stderr(&amb);
    assert!(e.contains("ambiguous"), "{e}");
    let listed = ids
        .iter()
        .filter(|id| id.starts_with(digit.as_str()))
        .all(|id| e.contains(&id[..12]));
    assert!(listed, "{e}");
    // A unique prefix works.
    let unique = ids
        .iter()
        .find_map(|id| {
            (4..64)
                .map(|n| &id[..n])
                .find(|p| ids.iter().filter(|o| o.starts_with(p)).count() == 1)
        })
        .unwrap();
    assert!(env.skiff(&["inspect", unique]).status.success());
}

#[test]
fn ps_filters_format_and_events() {
    let env = Env::new();
    let mut events = env
        .skiff_cmd(&["events", "--format", "json", "--filter", "type=container"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(300));
    let run = env.skiff(&[
        "run",
        "-d",
        "--name",
        "evented",
        "-l",
        "tier=front",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(run.status.success());
    let id = stdout(&run).trim().to_string();
    assert!(env
        .skiff(&[
            "create",
            "--name",
            "idle",
            "-l",
            "tier=back",
            "demo/busybox",
            "true"
        ])
        .status
        .success());
    let running = stdout(&env.skiff(&["ps", "--format", "json"]));
    assert_eq!(running.lines().count(), 1, "{running}");
    let v: serde_json::Value = serde_json::from_str(running.lines().next().unwrap()).unwrap();
    assert_eq!(v["Names"], "evented");
    let back = stdout(&env.skiff(&["ps", "-a", "-q", "--filter", "label=tier=back"]));
    assert_eq!(back.lines().count(), 1);
    let created = stdout(&env.skiff(&["ps", "--filter", "status=created"]));
    assert!(
        created.contains("idle") && !created.contains("evented"),
        "{created}"
    );
    assert!(!env
        .skiff(&["ps", "--filter", "colour=red"])
        .status
        .success());
    assert!(env
        .skiff(&["rename", "evented", "evented2"])
        .status
        .success());
    assert!(env.skiff(&["rm", "-f", "evented2"]).status.success());
    std::thread::sleep(std::time::Duration::from_millis(300));
    let _ = events.kill();
    let out = events.wait_with_output().unwrap();
    let actions: Vec<String> = stdout(&out)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["Actor"]["ID"] == id.as_str())
        .map(|v| v["Action"].as_str().unwrap_or_default().to_string())
        .collect();
    // rm -f: kill, then die and destroy.
    assert_eq!(
        actions,
        ["create", "start", "rename", "kill", "die", "destroy"],
        "{}",
        stdout(&out)
    );
}

#[test]
fn rm_force_leaves_no_process_directory_or_mount() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "doomed",
        "demo/busybox",
        "sh",
        "-c",
        "mkdir -p /home/user/x && chown 1000 /home/user/x && touch /home/user/x/f && sleep 1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    assert!(env.eventually(5, || env.inspect("doomed")["State"]["Status"] == "running"));
    let v = env.inspect("doomed");
    let (pid, monitor) = (
        v["State"]["Pid"].as_u64().unwrap(),
        v["State"]["MonitorPid"].as_u64().unwrap(),
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    let rm = env.skiff(&["rm", "doomed"]);
    assert!(
        !rm.status.success() && stderr(&rm).contains("is running"),
        "{}",
        stderr(&rm)
    );
    assert!(env.skiff(&["rm", "-f", "doomed"]).status.success());
    assert!(
        !std::path::Path::new(&format!("/proc/{pid}")).exists(),
        "container process left"
    );
    assert!(
        env.eventually(5, || !std::path::Path::new(&format!("/proc/{monitor}"))
            .exists()),
        "monitor left"
    );
    assert!(!env.data().join("containers").join(&id).exists());
    assert!(
        entries(&env.data().join("containers")).is_empty(),
        "{:?}",
        entries(&env.data().join("containers"))
    );
    assert!(entries(&env.runtime().join("containers")).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(&id[..12]));
}

/// The executable a process runs (`/proc/PID/exe`), by file name.
fn exe_name(pid: u64) -> String {
    std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .unwrap_or_default()
}

#[test]
fn the_monitor_and_its_fuse_server_run_the_small_monitor_binary() {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "fuse"]);
    let tar = env.busybox_tar();
    let import = env.skiff(&["import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(import.status.success(), "{}", stderr(&import));
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "idle",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(5, || env.inspect("idle")["State"]["Status"] == "running"));
    let v = env.inspect("idle");
    let (init, monitor) = (
        v["State"]["Pid"].as_u64().unwrap(),
        v["State"]["MonitorPid"].as_u64().unwrap(),
    );
    // Not skiffd re-executed: its own binary, with its own name.
    assert_eq!(exe_name(monitor), "skiff-monitor");
    let comm = std::fs::read_to_string(format!("/proc/{monitor}/comm")).unwrap();
    assert_eq!(comm.trim(), "skiff-monitor");
    // Its other children (the FUSE server, the network helper) are not skiffd either.
    let children =
        std::fs::read_to_string(format!("/proc/{monitor}/task/{monitor}/children")).unwrap();
    let others: Vec<(u64, String)> = children
        .split_whitespace()
        .map(|p| p.parse::<u64>().unwrap())
        .filter(|p| *p != init)
        .map(|p| (p, exe_name(p)))
        .collect();
    assert!(
        others.iter().all(|(_, exe)| exe != "skiffd"),
        "children of the monitor running skiffd: {others:?}"
    );
    // The FUSE server is among them, under a name of its own.
    let names: Vec<String> = others
        .iter()
        .map(|(p, _)| std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default())
        .collect();
    assert!(
        names.iter().any(|n| n.trim() == "skiff-fuse"),
        "no skiff-fuse among the monitor's children: {names:?}"
    );
    assert!(env.skiff(&["rm", "-f", "idle"]).status.success());
}
