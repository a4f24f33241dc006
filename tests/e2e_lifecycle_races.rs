//! End to end: what runs of a container is always what its record says — under
//! concurrent Start/Stop/Restart/Remove (issue 12 item 5), when its monitor dies (item
//! 6) and when skiffd crashes during `run -d` (item 8).

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use common::{entries, stderr, stdout, Env};
use skiff::dbus::proxy::{ContainerProxy, ManagerProxy};

/// The errors a call that loses a race may answer: the container is gone, or in the
/// wrong state for the call. (UnknownObject: the call reached the bus after the removed
/// container's object was taken down.)
const LEGITIMATE: [&str; 4] = [
    "org.skiff.Error.NoSuchContainer",
    "org.skiff.Error.ContainerRunning",
    "org.skiff.Error.ContainerNotRunning",
    "org.freedesktop.DBus.Error.UnknownObject",
];

fn error_name(e: &zbus::Error) -> String {
    match e {
        zbus::Error::MethodError(name, msg, _) => {
            format!("{name}: {}", msg.as_deref().unwrap_or(""))
        }
        // zbus's own errors, e.g. org.freedesktop.DBus.Error.UnknownObject.
        other => other.to_string(),
    }
}

/// A small deterministic generator (the storm must be the same on every run).
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (self.0 >> 33) % n
    }
}

fn create(env: &Env, name: &str) -> String {
    let out = env.skiff(&["create", "--name", name, "demo/busybox", "sleep", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    stdout(&out).trim().to_string()
}

#[test]
fn removed_containers_stay_removed_under_concurrent_calls() {
    let mut env = Env::new();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let conn = rt.block_on(async {
        zbus::connection::Builder::address(env.address.as_str())
            .build()
            .await
            .unwrap()
    });
    let mut rng = Lcg(12);
    let mut all_ids = Vec::new();
    let mut bad = Vec::new();
    let mut calls = 0;
    for round in 0..5 {
        let ids: Vec<String> = (0..5)
            .map(|i| create(&env, &format!("c{round}x{i}")))
            .collect();
        all_ids.extend(ids.iter().cloned());
        let ops: Vec<(usize, u64)> = (0..100)
            .map(|_| (rng.next(5) as usize, rng.next(4)))
            .collect();
        let results = rt.block_on(async {
            let mgr = ManagerProxy::new(&conn).await.unwrap();
            let mut proxies = Vec::new();
            for id in &ids {
                let path = mgr.get_container(id).await.unwrap();
                proxies.push(
                    ContainerProxy::builder(&conn)
                        .path(path)
                        .build()
                        .await
                        .unwrap(),
                );
            }
            let calls = ops.iter().map(|&(i, op)| {
                let c = proxies[i].clone();
                async move {
                    let r = match op {
                        0 => c.start(Default::default(), 0).await,
                        1 => c.stop(0, 0).await,
                        2 => c.restart(0, 0).await,
                        _ => c.remove(1).await,
                    };
                    (op, r)
                }
            });
            let results = futures_util::future::join_all(calls).await;
            // Whatever is left goes too.
            for c in &proxies {
                if let Err(e) = c.remove(1).await {
                    let name = error_name(&e);
                    if !LEGITIMATE.iter().any(|l| name.starts_with(l)) {
                        return Err(format!("final remove: {name}"));
                    }
                }
            }
            Ok(results)
        });
        let results = results.unwrap_or_else(|e| panic!("{e}\n{}", env.daemon_log()));
        for (op, r) in results {
            calls += 1;
            if let Err(e) = r {
                let name = error_name(&e);
                if !LEGITIMATE.iter().any(|l| name.starts_with(l)) {
                    bad.push(format!("op {op}: {name}"));
                }
            }
        }
        assert!(
            stdout(&env.skiff(&["ps", "-a", "-q"])).trim().is_empty(),
            "round {round}: containers left"
        );
    }
    assert_eq!(calls, 500);
    assert!(
        bad.is_empty(),
        "errors that are not NoSuchContainer or a state error:\n{}",
        bad.join("\n")
    );
    let no_dirs = |env: &Env| {
        all_ids.iter().all(|id| {
            !env.data().join("containers").join(id).exists()
                && !env.runtime().join("containers").join(id).exists()
        })
    };
    assert!(
        env.eventually(30, || no_dirs(&env)),
        "dirs of removed containers left: {:?} {:?}",
        entries(&env.data().join("containers")),
        entries(&env.runtime().join("containers"))
    );
    env.stop_daemon();
    env.start_daemon();
    let ps = env.skiff(&["ps", "-a", "-q"]);
    assert!(ps.status.success(), "{}", stderr(&ps));
    let back = stdout(&ps);
    assert!(
        back.trim().is_empty(),
        "removed containers came back:\n{back}"
    );
    assert!(no_dirs(&env));
}

/// The processes whose parent chain leads to `pid` (its descendants), `pid` excluded.
fn descendants(pid: u32) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    let mut todo = vec![pid];
    while let Some(p) = todo.pop() {
        for task in entries(Path::new(&format!("/proc/{p}/task"))) {
            let kids = std::fs::read_to_string(format!("/proc/{p}/task/{task}/children"))
                .unwrap_or_default();
            for k in kids.split_whitespace().filter_map(|k| k.parse().ok()) {
                if out.insert(k) {
                    todo.push(k);
                }
            }
        }
    }
    out
}

fn alive(pid: u32) -> bool {
    // A zombie has ended: only its entry waits for its parent.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim()
        .to_string()
}

fn mounted(id: &str) -> bool {
    // Any mount of the container's rootfs, in any mount namespace we can see.
    entries(Path::new("/proc"))
        .iter()
        .filter(|p| p.parse::<u32>().is_ok())
        .any(|p| {
            std::fs::read_to_string(format!("/proc/{p}/mountinfo"))
                .is_ok_and(|m| m.contains(&format!("{id}/rootfs")))
        })
}

#[test]
fn a_monitor_that_dies_takes_its_container_along() {
    let env = Env::new();
    for (round, signo) in [(0, libc::SIGTERM), (1, libc::SIGKILL)] {
        let name = format!("mon{round}");
        let out = env.skiff(&[
            "run",
            "-d",
            "--name",
            &name,
            "demo/busybox",
            "sleep",
            "1000",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = stdout(&out).trim().to_string();
        let v = env.inspect(&name);
        let monitor = v["State"]["MonitorPid"].as_u64().unwrap() as u32;
        let init = v["State"]["Pid"].as_u64().unwrap() as u32;
        let family = descendants(monitor);
        assert!(family.contains(&init), "{family:?} lacks init {init}");
        // SAFETY: kill(2) on the monitor this test started.
        unsafe { libc::kill(monitor as i32, signo) };
        assert!(
            env.eventually(30, || !alive(monitor) && family.iter().all(|&p| !alive(p))),
            "signal {signo}: processes of the container left: {:?}",
            family
                .iter()
                .filter(|&&p| alive(p))
                .map(|&p| (p, comm(p)))
                .collect::<Vec<_>>()
        );
        assert!(!mounted(&id), "the FUSE rootfs is still mounted");
        assert!(env.eventually(30, || env.inspect(&name)["State"]["Status"] == "exited"));
        let v = env.inspect(&name);
        let error = v["State"]["Error"].as_str().unwrap_or("");
        assert!(error.contains("monitor"), "inspect does not say why: {v}");
        // A clean start afterwards: one instance, running.
        let out = env.skiff(&["start", &name]);
        assert!(out.status.success(), "{}", stderr(&out));
        let v = env.inspect(&name);
        assert_eq!(v["State"]["Status"], "running");
        assert_eq!(v["State"]["Error"], "");
        let out = env.skiff(&["rm", "-f", &name]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
}

/// `pkill skiffd` (by process name) must not reach the monitors.
#[test]
fn monitors_are_not_named_skiffd() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "named",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let monitor = env.inspect("named")["State"]["MonitorPid"]
        .as_u64()
        .unwrap() as u32;
    assert_eq!(comm(monitor), "skiff-monitor");
    let cmdline = std::fs::read(format!("/proc/{monitor}/cmdline")).unwrap();
    assert!(
        cmdline.starts_with(b"skiff-monitor\0"),
        "{:?}",
        String::from_utf8_lossy(&cmdline)
    );
    assert!(env.skiff(&["rm", "-f", "named"]).status.success());
}

/// The environment variable that marks the crash test's containers (its value: the
/// test's directory), so their inits are found whatever their monitors.
const MARK: &str = "SKIFF_TEST_DIR";

/// The parent of `pid` (0 if it is gone).
fn ppid(pid: u32) -> u32 {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| {
            s.rsplit(')')
                .next()?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// What runs of this test's containers: their inits (by [`MARK`]), and the
/// helper processes skiffd started for them (monitors, FUSE servers, network helpers:
/// found by this test's XDG_RUNTIME_DIR in their environment), skiffd itself and its
/// monitor zygote excepted (a zygote of a crashed skiffd is not: it must end).
fn container_processes(env: &Env, daemon: u32) -> (BTreeSet<u32>, BTreeSet<u32>) {
    let marker = format!(
        "XDG_RUNTIME_DIR={}\0",
        env.dir.path().join("runtime").display()
    );
    let init_marker = format!("{MARK}={}\0", env.dir.path().display());
    let (mut inits, mut helpers) = (BTreeSet::new(), BTreeSet::new());
    for p in entries(Path::new("/proc"))
        .iter()
        .filter_map(|p| p.parse::<u32>().ok())
    {
        if p == daemon || !alive(p) || (comm(p) == "skiff-zygote" && ppid(p) == daemon) {
            continue;
        }
        let environ = std::fs::read(format!("/proc/{p}/environ")).unwrap_or_default();
        let has = |m: &str| environ.windows(m.len()).any(|w| w == m.as_bytes());
        if has(&init_marker) {
            inits.insert(p);
        } else if has(&marker) && comm(p) != "skiff" {
            helpers.insert(p);
        }
    }
    // The shared network's holder, its namespace keeper and its slirp4netns are skiffd's
    // (one for all the containers of the default network), not a container's.
    let state = std::fs::read_to_string(env.runtime().join("network/holder.json"));
    let holder: serde_json::Value =
        serde_json::from_str(&state.unwrap_or_default()).unwrap_or_default();
    if let Some(h) = holder["pid"].as_u64().map(|p| p as u32) {
        helpers.remove(&h);
        for d in descendants(h) {
            helpers.remove(&d);
        }
    }
    (inits, helpers)
}

/// What runs of this test's containers, and what the running records name:
/// (matches, inits, helpers, records' pids, records' monitors).
type Accounting = (
    bool,
    BTreeSet<u32>,
    BTreeSet<u32>,
    BTreeSet<u32>,
    BTreeSet<u32>,
);

fn accounting(env: &Env, daemon: u32) -> Accounting {
    let mut pids = BTreeSet::new();
    let mut monitors = BTreeSet::new();
    let ps = env.skiff(&["ps", "-q"]);
    assert!(ps.status.success(), "{}", stderr(&ps));
    for line in stdout(&ps).split_whitespace() {
        let v = env.inspect(line);
        pids.insert(v["State"]["Pid"].as_u64().unwrap_or(0) as u32);
        monitors.insert(v["State"]["MonitorPid"].as_u64().unwrap_or(0) as u32);
    }
    let family: BTreeSet<u32> = monitors
        .iter()
        .flat_map(|m| descendants(*m).into_iter().chain([*m]))
        .collect();
    let (inits, helpers) = container_processes(env, daemon);
    (
        inits == pids && helpers.is_subset(&family),
        inits,
        helpers,
        pids,
        monitors,
    )
}

/// Every record matches what runs: the inits are exactly those of the running records,
/// every helper belongs to a running record's monitor.
fn assert_accounted(env: &Env, when: &str) {
    let daemon = env.daemon_pid();
    assert!(
        env.eventually(20, || accounting(env, daemon).0),
        "{when}: what runs is not what the records say: {:?}\n{}",
        accounting(env, daemon),
        env.daemon_log()
    );
}

/// Deterministic crash points of a start (`skiffd --crash-at`): after the bundle is
/// written, right after the monitor is spawned, once the container runs but before the
/// record says so.
#[test]
fn a_daemon_crash_at_each_point_of_a_start_is_undone() {
    let mut env = Env::new();
    let mark = format!("{MARK}={}", env.dir.path().display());
    for point in skiff::daemon::strays::CRASH_POINTS {
        let name = format!("at-{point}");
        env.stop_daemon();
        env.start_daemon_with(&["--crash-at", point]);
        let out = env.skiff(&[
            "run",
            "-d",
            "-e",
            &mark,
            "--name",
            &name,
            "demo/busybox",
            "sleep",
            "1000",
        ]);
        assert!(!out.status.success(), "{point}: skiffd did not crash");
        env.kill_daemon(); // reaps it
        env.start_daemon_with(&[]);
        assert_accounted(&env, point);
        let daemon = env.daemon_pid();
        assert!(
            env.eventually(20, || {
                let (inits, helpers) = container_processes(&env, daemon);
                inits.is_empty() && helpers.is_empty()
            }),
            "{point}: the start was not undone: {:?}\n{}",
            container_processes(&env, daemon),
            env.daemon_log()
        );
        let v = env.inspect(&name);
        assert_eq!(v["State"]["Status"], "created", "{point}: {v}");
        // It starts cleanly now, and rm -f ends it.
        let out = env.skiff(&["start", &name]);
        assert!(out.status.success(), "{point}: {}", stderr(&out));
        assert_accounted(&env, point);
        assert_eq!(env.inspect(&name)["State"]["Status"], "running");
        assert!(env.skiff(&["rm", "-f", &name]).status.success());
        assert!(
            env.eventually(20, || {
                let (inits, helpers) = container_processes(&env, daemon);
                inits.is_empty() && helpers.is_empty()
            }),
            "{point}: rm -f left {:?}",
            container_processes(&env, daemon)
        );
    }
}

#[test]
fn a_daemon_crash_during_run_leaves_no_unaccounted_container() {
    let mut env = Env::new();
    let mut names = Vec::new();
    let (mut undone, mut adopted) = (0, 0);
    let mark = format!("{MARK}={}", env.dir.path().display());
    let cmd = [
        "run",
        "-d",
        "-e",
        &mark,
        "--name",
        "",
        "demo/busybox",
        "sleep",
        "1000",
    ];
    for i in 0..12u64 {
        let name = format!("crash{i}");
        let mut args = cmd;
        args[5] = &name;
        let mut run = env
            .skiff_cmd(&args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Varied points of the start: 0 to 330 ms after the CLI was spawned.
        std::thread::sleep(Duration::from_millis(i * 30));
        env.kill_daemon();
        let _ = run.wait();
        names.push(name);
        env.start_daemon();
        assert_accounted(&env, &format!("round {i}"));
        let log = env.daemon_log();
        undone += log.matches("its record does not say so").count();
        adopted += log.matches("re-adopted running container").count();
    }
    // Which paths the crash points took (informative: the timing varies).
    eprintln!("starts undone: {undone}, containers re-adopted: {adopted}");
    for name in &names {
        let out = env.skiff(&["rm", "-f", name]);
        assert!(
            out.status.success() || stderr(&out).contains("no such container"),
            "{}",
            stderr(&out)
        );
    }
    let daemon = env.daemon_pid();
    let nothing = || {
        let (inits, helpers) = container_processes(&env, daemon);
        inits.is_empty() && helpers.is_empty()
    };
    assert!(
        env.eventually(20, nothing),
        "rm -f left processes: {:?}",
        container_processes(&env, daemon)
    );
    assert!(stdout(&env.skiff(&["ps", "-a", "-q"])).trim().is_empty());
}

/// skiffd killed once a `--rm` container's exit is known and before its removal begins
/// (`--crash-at exit-recorded`): the next skiffd finds the run ended and removes the
/// container, as `--rm` asked.
#[test]
fn a_daemon_crash_between_a_rm_containers_exit_and_its_removal_removes_it_at_restart() {
    let mut env = Env::new();
    env.stop_daemon();
    env.start_daemon_with(&["--crash-at", "exit-recorded"]);
    let daemon = env.daemon_pid();
    let mut run = env
        .skiff_cmd(&[
            "run",
            "--rm",
            "--name",
            "brief",
            "demo/busybox",
            "sh",
            "-c",
            "exit 3",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // skiffd is our child: once it died at the point, it is a zombie until reaped.
    let dead = || {
        std::fs::read_to_string(format!("/proc/{daemon}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
    };
    assert!(
        env.eventually(60, dead),
        "skiffd did not crash at exit-recorded"
    );
    let _ = run.kill();
    let _ = run.wait();
    env.kill_daemon(); // reaps it
    env.start_daemon_with(&[]);
    assert!(
        env.eventually(20, || {
            stdout(&env.skiff(&["ps", "-a", "-q"])).trim().is_empty()
                && entries(&env.data().join("containers")).is_empty()
        }),
        "the --rm container is left: {}\n{:?}\n{}",
        stdout(&env.skiff(&["ps", "-a"])),
        entries(&env.data().join("containers")),
        env.daemon_log()
    );
}
