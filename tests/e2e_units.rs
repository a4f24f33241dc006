//! Containers as systemd user units, pause/unpause and resource limits, against the real
//! `systemd --user` of scripts/user-manager.sh (skipped, and counted so, without one),
//! and what a skiffd without a user manager answers.

mod common;
mod systemd_support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{bin, stderr, stdout, Env};
use systemd_support::{cgroup_of, manager_runtime_dir, unified_root, Service, MANAGER};

/// The static test helper that sends its arguments to $NOTIFY_SOCKET (build.rs).
const SDNOTIFY_SEND: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sdnotify-send"));

/// A counter on stdout (the log), ticking every 0.1 s; SIGTERM ends it with 7.
const COUNTER: &str = "trap 'exit 7' TERM; i=0; while :; do i=$((i+1)); echo $i; sleep 0.1; done";

/// The last number a counter container logged (read through its log, not the frozen
/// container).
fn counter(s: &Service, name: &str) -> u64 {
    let out = s.skiff(&["logs", "--tail", "1", name]);
    stdout(&out).trim().parse().unwrap_or(0)
}

#[test]
fn limits_and_pause_without_a_user_manager_are_not_supported() {
    let env = Env::new();
    for flags in [
        &["--memory", "64m"][..],
        &["--cpus", "0.5"][..],
        &["--pids-limit", "10"][..],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["demo/busybox", "true"]);
        let out = env.skiff(&args);
        assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains(flags[0])
                && err.contains("does not run under a systemd user manager")
                && err.contains("systemctl --user start skiffd"),
            "{err}"
        );
    }
    let out = env.skiff(&["run", "--rm", "--memory", "lots", "demo/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("key \"memory\""), "{}", stderr(&out));
    assert!(stdout(&env.skiff(&["ps", "-a", "-q"])).trim().is_empty());

    let out = env.skiff(&["run", "-d", "--name", "pz", "demo/busybox", "sleep", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["pause", "pz"]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains("cannot pause pz: it has no cgroup of its own")
            && err.contains("systemctl --user start skiffd"),
        "{err}"
    );
    assert_eq!(env.inspect("pz")["State"]["Status"], "running");
    let out = env.skiff(&["unpause", "pz"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no cgroup of its own"),
        "{}",
        stderr(&out)
    );
    assert!(env.skiff(&["rm", "-f", "pz"]).status.success());
}

#[test]
fn units_pause_freezes_the_container_cgroup_and_stop_thaws_it() {
    let Some(rt) =
        manager_runtime_dir("units_pause_freezes_the_container_cgroup_and_stop_thaws_it")
    else {
        return;
    };
    let _turn = MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let s = Service::install(rt);
    s.ok(&s.systemctl(&["start", "skiffd"]));
    let tar = s.env.busybox_tar();
    s.ok(&s.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]));

    let id = s.ok(&s.skiff(&[
        "run",
        "-d",
        "--name",
        "cnt",
        "demo/busybox",
        "sh",
        "-c",
        COUNTER,
    ]));
    let id = id.trim();
    assert!(s.env.eventually(10, || counter(&s, "cnt") > 0));
    // The container in its scope's container/ leaf, its monitor in monitor/.
    let insp: serde_json::Value =
        serde_json::from_str(&s.ok(&s.skiff(&["inspect", "cnt"]))).unwrap();
    let pid = insp[0]["State"]["Pid"].as_u64().unwrap() as u32;
    let mon = insp[0]["State"]["MonitorPid"].as_u64().unwrap() as u32;
    let scope = format!("skiff-{id}.scope");
    assert!(
        cgroup_of(pid).ends_with(&format!("/{scope}/container")),
        "{}",
        cgroup_of(pid)
    );
    assert!(
        cgroup_of(mon).ends_with(&format!("/{scope}/monitor")),
        "{}",
        cgroup_of(mon)
    );
    let cg = PathBuf::from(format!("{}{}", unified_root(), cgroup_of(pid)));
    // An exec'd process joins the container's cgroup (and is frozen with it).
    let ex = s.ok(&s.skiff(&["exec", "cnt", "sh", "-c", "cat /proc/self/cgroup"]));
    assert!(
        ex.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/{scope}/container"))),
        "{ex}"
    );
    s.ok(&s.skiff(&["exec", "-d", "cnt", "sleep", "1000"]));
    let procs = || std::fs::read_to_string(cg.join("cgroup.procs")).unwrap_or_default();
    assert!(
        s.env.eventually(10, || procs().lines().count() >= 3),
        "{}",
        procs()
    );

    // pause: frozen, the counter stands still, docker's State.
    s.ok(&s.skiff(&["pause", "cnt"]));
    let events = std::fs::read_to_string(cg.join("cgroup.events")).unwrap();
    assert!(events.contains("frozen 1"), "{events}");
    let insp: serde_json::Value =
        serde_json::from_str(&s.ok(&s.skiff(&["inspect", "cnt"]))).unwrap();
    assert_eq!(insp[0]["State"]["Status"], "paused");
    assert_eq!(insp[0]["State"]["Paused"], true);
    assert_eq!(insp[0]["State"]["Running"], true);
    let ps = s.ok(&s.skiff(&["ps", "--filter", "status=paused"]));
    assert!(ps.contains("(Paused)") && ps.contains("cnt"), "{ps}");
    // The monitor may still be logging the last number written before the freeze:
    // wait until two reads two ticks apart agree (never, if it still counts).
    let mut frozen_at = counter(&s, "cnt");
    let mut settled = false;
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(200));
        let now = counter(&s, "cnt");
        if now == frozen_at {
            settled = true;
            break;
        }
        frozen_at = now;
    }
    assert!(settled, "the counter kept advancing while paused");
    // Proving that nothing happens takes time: ten ticks of the counter.
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        counter(&s, "cnt"),
        frozen_at,
        "the counter advanced while paused"
    );
    let out = s.skiff(&["pause", "cnt"]);
    assert!(stderr(&out).contains("already paused"), "{}", stderr(&out));
    let out = s.skiff(&["exec", "cnt", "true"]);
    assert!(
        stderr(&out).contains("is paused, unpause the container before exec"),
        "{}",
        stderr(&out)
    );

    // unpause: it goes on.
    s.ok(&s.skiff(&["unpause", "cnt"]));
    assert!(s.env.eventually(10, || counter(&s, "cnt") > frozen_at));
    assert_eq!(inspect_at(&s, "cnt")["State"]["Status"], "running");

    // stop of a paused container: thawed first, so its trap gets SIGTERM (exit 7, not
    // SIGKILL's 137 after the timeout).
    s.ok(&s.skiff(&["pause", "cnt"]));
    s.ok(&s.skiff(&["stop", "-t", "60", "cnt"]));
    let st = inspect_at(&s, "cnt");
    assert_eq!(st["State"]["ExitCode"], 7, "{st}");
    assert_eq!(st["State"]["Paused"], false);
    // Teardown removed the container's cgroup.
    assert!(!cg.exists(), "{} outlived the container", cg.display());

    // kill of a paused container: SIGKILL through cgroup.kill, frozen or not.
    s.ok(&s.skiff(&["start", "cnt"]));
    assert!(s.env.eventually(10, || counter(&s, "cnt") > 0));
    s.ok(&s.skiff(&["pause", "cnt"]));
    s.ok(&s.skiff(&["kill", "cnt"]));
    let (code, _) = {
        let out = s.ok(&s.skiff(&["wait", "cnt"]));
        (out.trim().to_string(), ())
    };
    assert_eq!(code, "137");

    // Limits: applied where the controllers are delegated, else NotSupported naming them.
    let out = s.skiff(&[
        "run",
        "-d",
        "--name",
        "lim",
        "--memory",
        "64m",
        "--pids-limit",
        "50",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    if out.status.success() {
        let insp: serde_json::Value =
            serde_json::from_str(&s.ok(&s.skiff(&["inspect", "lim"]))).unwrap();
        let pid = insp[0]["State"]["Pid"].as_u64().unwrap() as u32;
        let cg = PathBuf::from(format!("{}{}", unified_root(), cgroup_of(pid)));
        let read = |f: &str| std::fs::read_to_string(cg.join(f)).unwrap();
        assert_eq!(read("memory.max").trim(), (64u64 << 20).to_string());
        assert_eq!(read("pids.max").trim(), "50");
    } else {
        assert_eq!(out.status.code(), Some(125));
        let err = stderr(&out);
        assert!(
            err.contains("--memory, --pids-limit cannot be applied")
                && err.contains("not delegated to your user manager")
                && err.contains("Delegate=cpu cpuset io memory pids"),
            "{err}"
        );
    }
}

/// Writes `text` as `~/.config/skiff/units/NAME.container` of the manager.
fn write_container_file(rt: &Path, name: &str, text: &str) -> PathBuf {
    let dir = rt.join("config/skiff/units");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(format!("{name}.container"));
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn units_generated_services_start_stop_restart_and_notify() {
    let Some(rt) = manager_runtime_dir("units_generated_services_start_stop_restart_and_notify")
    else {
        return;
    };
    let _turn = MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let s = Service::install(rt.clone());
    s.ok(&s.systemctl(&["start", "skiffd"]));
    let tar = s.env.busybox_tar();
    s.ok(&s.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]));

    // A host dir for the crashing unit's runs, and the notify helper.
    let host = s.env.dir.path().join("host");
    std::fs::create_dir_all(host.join("state")).unwrap();
    std::fs::create_dir_all(host.join("h")).unwrap();
    let helper = host.join("h/sdnotify-send");
    std::fs::write(&helper, SDNOTIFY_SEND).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&helper, std::fs::Permissions::from_mode(0o755)).unwrap();

    let files = [
        write_container_file(
            &rt,
            "web",
            "[Unit]\nDescription=a skiff test unit\n[Container]\nImage=demo/busybox\n\
             Environment=GREETING=\"hello there $5 100%\"\nStopTimeout=60\n\
             Exec=sh -c \"trap 'exit 0' TERM; echo $GREETING; while :; do sleep 1000 & wait; done\"\n",
        ),
        write_container_file(
            &rt,
            "crash",
            &format!(
                "[Container]\nImage=demo/busybox\nVolume={}:/state\n\
                 Exec=sh -c \"echo run >> /state/runs; exit 3\"\n\
                 [Service]\nRestart=on-failure\nRestartSec=100ms\n",
                host.join("state").display()
            ),
        ),
        write_container_file(
            &rt,
            "ready",
            &format!(
                "[Container]\nImage=demo/busybox\nVolume={}:/h:ro\nNotify=yes\n\
                 Exec=sh -c \"while [ ! -e /h/go ]; do sleep 0.1; done; \
                 /h/sdnotify-send READY=1 STATUS=container-says-ready MAINPID=1; exec sleep 1000\"\n",
                host.join("h").display()
            ),
        ),
        write_container_file(&rt, "bad", "[Container]\nImage=demo/busybox\nPorts=80\n"),
    ];
    let generator = rt.join("user-generators/skiff-systemd-generator");
    let _ = std::fs::remove_file(&generator);
    std::os::unix::fs::symlink(bin("skiff-systemd-generator"), &generator).unwrap();
    let cleanup = Cleanup(
        vec![generator.clone()]
            .into_iter()
            .chain(files.iter().cloned())
            .collect(),
    );
    s.ok(&s.systemctl(&["daemon-reload"]));

    // The generator's error: file and line; the unit skipped, the others made.
    let out_dir = s.env.dir.path().join("gen-out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = s
        .cmd(bin("skiff-systemd-generator"))
        .env("XDG_CONFIG_HOME", rt.join("config"))
        .arg(&out_dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("{}:3: unknown key Ports=", files[3].display())),
        "{err}"
    );
    assert!(out_dir.join("web.service").exists() && !out_dir.join("bad.service").exists());
    assert_eq!(s.show("bad.service", "LoadState"), "not-found");

    // conmon: start returns once the container runs; stop ends it with its stop signal.
    assert_eq!(
        s.show("web.service", "LoadState"),
        "loaded",
        "{}",
        s.manager_log()
    );
    s.ok(&s.systemctl(&["start", "web"]));
    assert_eq!(
        s.show("web", "ActiveState"),
        "active",
        "{}",
        s.journal("web")
    );
    let ps = s.ok(&s.skiff(&["ps", "--filter", "name=web", "--format", "json"]));
    assert!(ps.contains("running"), "{ps}");
    assert!(s.env.eventually(10, || stdout(&s.skiff(&["logs", "web"]))
        .contains("hello there $5 100%")));
    s.ok(&s.systemctl(&["stop", "web"]));
    assert_eq!(
        s.show("web", "ActiveState"),
        "inactive",
        "{}",
        s.journal("web")
    );
    // The trap's exit (0), not SIGKILL's after the timeout; --rm removed it.
    assert_eq!(s.show("web", "ExecMainStatus"), "0", "{}", s.journal("web"));
    assert!(stdout(&s.skiff(&["ps", "-a", "-q"])).trim().is_empty());

    // Restart=on-failure restarts a crashing container.
    s.ok(&s.systemctl(&["start", "--no-block", "crash"]));
    let runs = || {
        std::fs::read_to_string(host.join("state/runs"))
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert!(
        s.env.eventually(60, || runs() >= 3),
        "runs: {}\n{}",
        runs(),
        s.journal("crash")
    );
    assert!(s.show("crash", "NRestarts").parse::<u32>().unwrap() >= 2);
    s.ok(&s.systemctl(&["stop", "crash"]));

    // --sdnotify=container: active only once the container's process says READY=1.
    s.ok(&s.systemctl(&["start", "--no-block", "ready"]));
    assert!(
        s.env.eventually(30, || stdout(&s.skiff(&[
            "ps",
            "--filter",
            "name=ready",
            "-q"
        ]))
        .trim()
        .len()
            == 12),
        "{}",
        s.journal("ready")
    );
    assert_eq!(
        s.show("ready", "ActiveState"),
        "activating",
        "{}",
        s.journal("ready")
    );
    std::fs::write(host.join("h/go"), "").unwrap();
    assert!(
        s.env
            .eventually(30, || s.show("ready", "ActiveState") == "active"),
        "{}",
        s.journal("ready")
    );
    assert_eq!(s.show("ready", "StatusText"), "container-says-ready");
    // MAINPID from the container is not passed on: the main process is skiff run's.
    let main: u32 = s.show("ready", "MainPID").parse().unwrap();
    let comm = std::fs::read_to_string(format!("/proc/{main}/comm")).unwrap_or_default();
    assert_eq!(comm.trim(), "skiff");
    s.ok(&s.systemctl(&["stop", "ready"]));

    // skiff generate systemd: a unit for an existing container.
    s.ok(&s.skiff(&[
        "create",
        "--name",
        "gen1",
        "demo/busybox",
        "sh",
        "-c",
        "trap 'exit 0' TERM; while :; do sleep 1000 & wait; done",
    ]));
    let unit = s.ok(&s.skiff(&["generate", "systemd", "-t", "30", "gen1"]));
    assert!(
        unit.contains("ExecStop=") && unit.contains("stop -t 30 gen1"),
        "{unit}"
    );
    let unit_path = rt.join("config/systemd/user/container-gen1.service");
    std::fs::write(&unit_path, unit).unwrap();
    let _cleanup2 = Cleanup(vec![unit_path]);
    s.ok(&s.systemctl(&["daemon-reload"]));
    s.ok(&s.systemctl(&["start", "container-gen1"]));
    assert!(
        s.env
            .eventually(30, || inspect_at(&s, "gen1")["State"]["Status"]
                == "running"),
        "{}",
        s.journal("container-gen1")
    );
    s.ok(&s.systemctl(&["stop", "container-gen1"]));
    let st = inspect_at(&s, "gen1");
    assert_eq!(st["State"]["Status"], "exited", "{st}");
    assert_eq!(st["State"]["ExitCode"], 0, "{st}");
    drop(cleanup);
    s.ok(&s.systemctl(&["daemon-reload"]));
}

/// Removes files on drop (the manager outlives the test).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// `skiff inspect NAME` through the service's bus, the first element.
fn inspect_at(s: &Service, name: &str) -> serde_json::Value {
    let out = s.skiff(&["inspect", name]);
    let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap_or_default();
    v[0].clone()
}

/// The relay directories of `skiff run --sdnotify=container` in $XDG_RUNTIME_DIR.
fn relay_dirs(env: &Env) -> Vec<PathBuf> {
    let runtime = env.dir.path().join("runtime");
    std::fs::read_dir(&runtime)
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().contains("skiff-sdnotify-"))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A `skiff run --sdnotify=container` killed by SIGKILL leaves its relay directory (no
/// time to clean up); the next one removes it, and keeps the directory of one still
/// running. No user manager needed: NOTIFY_SOCKET is a socket of the test's.
#[test]
fn the_relay_of_a_killed_sdnotify_run_is_swept_by_the_next_run() {
    let env = Env::new();
    let upstream_path = env.dir.path().join("upstream.sock");
    let _upstream = std::os::unix::net::UnixDatagram::bind(&upstream_path).unwrap();
    let run = |name: &str, cmd: &str| {
        let mut c = env.skiff_cmd(&[
            "run",
            "--sdnotify=container",
            "--name",
            name,
            "demo/busybox",
            "sh",
            "-c",
            cmd,
        ]);
        c.env("NOTIFY_SOCKET", &upstream_path);
        c
    };
    let started = |name: &str| {
        env.eventually(30, || {
            env.skiff(&["inspect", "-f", "{{.State.Status}}", name])
                .stdout
                .starts_with(b"running")
        })
    };
    let mut killed = run("killed", "sleep 1000").spawn().unwrap();
    assert!(started("killed"), "{}", env.daemon_log());
    let mut alive = run("alive", "sleep 1000").spawn().unwrap();
    assert!(started("alive"), "{}", env.daemon_log());
    let before = relay_dirs(&env);
    assert_eq!(before.len(), 2, "{before:?}");
    killed.kill().unwrap(); // SIGKILL
    killed.wait().unwrap();
    assert_eq!(relay_dirs(&env), before, "a SIGKILL leaves the relay");

    let out = run("next", "true").output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let left = relay_dirs(&env);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(before.contains(&left[0]), "{left:?}");
    // The one left is the live run's (its lock is held).
    let _ = alive.kill();
    let _ = alive.wait();
    let _ = env.skiff(&["rm", "-f", "killed", "alive", "next"]);
}
