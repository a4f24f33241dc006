//! End to end: the monitors are forked by skiffd's monitor zygote (issue 18, memory),
//! share the pages it relocated, and everything a monitor did when exec'd still holds
//! when the zygote dies, when skiffd is killed, and when a run fails early.

mod common;

use std::collections::BTreeMap;
use std::os::unix::ffi::OsStrExt;

use common::{entries, stderr, Env};

/// `/proc/PID/stat`'s state and parent (None when the process is gone).
fn state_and_ppid(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit(')').next()?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The children of `parent`, with their states.
fn children(parent: u32) -> Vec<(u32, char)> {
    entries(std::path::Path::new("/proc"))
        .iter()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter_map(|p| match state_and_ppid(p) {
            Some((s, pp)) if pp == parent => Some((p, s)),
            _ => None,
        })
        .collect()
}

/// The live monitor zygotes that are `daemon`'s children.
fn zygotes(daemon: u32) -> Vec<u32> {
    children(daemon)
        .into_iter()
        .filter(|(p, s)| *s != 'Z' && comm(*p) == "skiff-zygote")
        .map(|(p, _)| p)
        .collect()
}

/// The one zygote of `daemon`.
fn zygote(env: &Env, daemon: u32) -> u32 {
    let z = zygotes(daemon);
    assert_eq!(z.len(), 1, "skiffd's zygotes: {z:?}\n{}", env.daemon_log());
    z[0]
}

/// The one live zygote of the skiffd `daemon` (started by the test itself).
fn zygote_of(daemon: u32, log: &str) -> u32 {
    let z = zygotes(daemon);
    assert_eq!(z.len(), 1, "skiffd's zygotes: {z:?}\n{log}");
    z[0]
}

/// A mapping of the skiff-monitor executable: its range and permissions, and its
/// Shared_Dirty and Private_Dirty (kB).
#[derive(Debug, Clone, PartialEq)]
struct Mapping {
    range: String,
    perms: String,
    shared_dirty: u64,
    private_dirty: u64,
}

/// The mappings of the skiff-monitor executable in `pid`, by range.
fn monitor_mappings(pid: u32) -> BTreeMap<String, Mapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            if let Some(m) = current.take() {
                out.insert(m.range.clone(), m);
            }
            if fields.len() >= 6 && fields[5].ends_with("/skiff-monitor") {
                current = Some(Mapping {
                    range: fields[0].to_string(),
                    perms: fields[1].to_string(),
                    shared_dirty: 0,
                    private_dirty: 0,
                });
            }
            continue;
        }
        if let (Some(m), [key, kb, ..]) = (current.as_mut(), fields.as_slice()) {
            let kb = kb.parse().unwrap_or(0);
            match *key {
                "Shared_Dirty:" => m.shared_dirty = kb,
                "Private_Dirty:" => m.private_dirty = kb,
                _ => {}
            }
        }
    }
    if let Some(m) = current {
        out.insert(m.range.clone(), m);
    }
    out
}

/// A detached run's monitor holds /dev/null (the stdio skiffd gave it) on fds 0-2 only.
fn assert_no_stray_null(m: u32, name: &str) {
    for fd in entries(std::path::Path::new(&format!("/proc/{m}/fd"))) {
        let target = std::fs::read_link(format!("/proc/{m}/fd/{fd}")).unwrap_or_default();
        let n: i32 = fd.parse().unwrap();
        assert!(
            n <= 2 || target != std::path::Path::new("/dev/null"),
            "the monitor of {name} holds a stray /dev/null on fd {n}"
        );
    }
}

fn run_sleeper(env: &Env, name: &str) -> u32 {
    let out = env.skiff(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.inspect(name)["State"]["MonitorPid"].as_u64().unwrap() as u32
}

/// Each monitor is a fork of the zygote (its layout, the zygote's randomised one; its
/// command line rewritten; skiffd its parent, as an exec'd monitor's) and the pages the
/// zygote relocated are shared with it, not copied: Shared_Dirty in the monitor's
/// read-only relocated mapping (`.data.rel.ro`, `.got`), which an exec'd monitor
/// relocates privately.
#[test]
fn monitors_are_forks_of_the_zygote_and_share_its_relocated_pages() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    let monitors = [run_sleeper(&env, "one"), run_sleeper(&env, "two")];
    let z = zygote(&env, daemon);
    let zmaps = monitor_mappings(z);
    // The zygote's relocated read-only data: the RELRO mapping its loader wrote.
    let relro: Vec<&Mapping> = zmaps
        .values()
        .filter(|m| m.perms == "r--p" && m.shared_dirty + m.private_dirty > 0)
        .collect();
    assert!(
        !relro.is_empty(),
        "no relocated mapping in the zygote: {zmaps:?}"
    );
    for (m, name) in monitors.iter().zip(["one", "two"]) {
        assert_eq!(
            state_and_ppid(*m).map(|s| s.1),
            Some(daemon),
            "the monitor of {name} is not skiffd's child"
        );
        assert_eq!(comm(*m), "skiff-monitor");
        let cmdline = std::fs::read(format!("/proc/{m}/cmdline")).unwrap();
        let id = env.inspect(name)["Id"].as_str().unwrap().to_string();
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        assert_eq!(
            words[..2],
            [&b"skiff-monitor"[..], b"__monitor"],
            "{words:?}"
        );
        assert!(
            String::from_utf8_lossy(words[2]).ends_with(&id),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        // The zygote's socket stays in the zygote, and no stray copy of what skiffd
        // passed (the stdio it gave, /dev/null for a detached run, is on fds 0-2 only,
        // and the monitor has since put /dev/null there itself): a monitor holds only
        // its own fds.
        let socket = std::fs::read_link(format!("/proc/{z}/fd/3")).unwrap();
        for fd in entries(std::path::Path::new(&format!("/proc/{m}/fd"))) {
            let target = std::fs::read_link(format!("/proc/{m}/fd/{fd}")).unwrap_or_default();
            assert_ne!(
                target, socket,
                "the monitor of {name} holds the zygote's socket"
            );
        }
        assert_no_stray_null(*m, name);
        let maps = monitor_mappings(*m);
        let ranges = |x: &BTreeMap<String, Mapping>| x.keys().cloned().collect::<Vec<_>>();
        assert_eq!(
            ranges(&maps),
            ranges(&zmaps),
            "the monitor of {name} does not have the zygote's layout\n{}",
            env.daemon_log()
        );
        for r in &relro {
            let mine = &maps[&r.range];
            eprintln!("{name}: monitor {mine:?}, zygote {r:?}");
            assert!(
                mine.shared_dirty * 2 >= r.shared_dirty + r.private_dirty && mine.shared_dirty > 0,
                "the monitor of {name} does not share the zygote's relocated pages: \
                 monitor {mine:?}, zygote {r:?}"
            );
        }
    }
    for name in ["one", "two"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// A zygote that dies is replaced at the next start; the monitors it forked go on.
#[test]
fn a_killed_zygote_is_replaced_and_its_monitors_go_on() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    let first = run_sleeper(&env, "first");
    let z1 = zygote(&env, daemon);
    // SAFETY: kill(2) of a process of ours.
    assert_eq!(unsafe { libc::kill(z1 as i32, libc::SIGKILL) }, 0);
    // skiffd reaps it (no zombie is left) ...
    assert!(
        env.eventually(20, || state_and_ppid(z1).is_none_or(|(_, pp)| pp != daemon)),
        "the killed zygote was not reaped: {:?}",
        state_and_ppid(z1)
    );
    // ... and the next run is served by another one.
    let second = run_sleeper(&env, "second");
    let z2 = zygote(&env, daemon);
    assert_ne!(z1, z2);
    let ranges = |p| monitor_mappings(p).into_keys().collect::<Vec<_>>();
    assert_eq!(ranges(second), ranges(z2), "not a fork of the new zygote");
    assert_ne!(ranges(first), ranges(z2));
    assert_eq!(env.inspect("first")["State"]["Status"], "running");
    assert!(state_and_ppid(first).is_some_and(|(s, _)| s != 'Z'));
    let out = env.skiff(&["exec", "first", "echo", "still-here"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["first", "second"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// skiffd killed: its zygote ends (the end of its socket), the monitors and containers
/// keep running, and the next skiffd adopts them and forks from a zygote of its own.
#[test]
fn after_a_skiffd_crash_the_zygote_ends_and_monitors_are_adopted() {
    let mut env = Env::new();
    let daemon = env.daemon_pid();
    let monitor = run_sleeper(&env, "kept");
    let init = env.inspect("kept")["State"]["Pid"].as_u64().unwrap() as u32;
    let z = zygote(&env, daemon);
    env.kill_daemon();
    assert!(
        env.eventually(20, || state_and_ppid(z).is_none()),
        "the zygote outlived skiffd: {:?}",
        state_and_ppid(z)
    );
    for p in [monitor, init] {
        assert!(
            state_and_ppid(p).is_some_and(|(s, _)| s != 'Z'),
            "{p} ended"
        );
    }
    env.start_daemon_with(&[]);
    let v = env.inspect("kept");
    assert_eq!(v["State"]["Status"], "running", "{v}");
    assert_eq!(v["State"]["MonitorPid"].as_u64(), Some(monitor as u64));
    let out = env.skiff(&["exec", "kept", "echo", "adopted"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let daemon = env.daemon_pid();
    let next = run_sleeper(&env, "next");
    assert_eq!(state_and_ppid(next).map(|s| s.1), Some(daemon));
    zygote(&env, daemon);
    for name in ["kept", "next"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// Runs that fail early (a name in use: the monitor spawned ahead is given up; a
/// command that does not exist) leave no zombie: skiffd reaps every monitor the zygote
/// forked for it, and the zygote has no child of its own.
#[test]
fn runs_that_fail_early_leave_no_zombie() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    run_sleeper(&env, "taken");
    for _ in 0..3 {
        let out = env.skiff(&["run", "-d", "--name", "taken", "demo/busybox", "true"]);
        assert!(!out.status.success());
        let out = env.skiff(&["run", "--rm", "demo/busybox", "/no/such/command"]);
        assert_eq!(out.status.code(), Some(127), "{}", stderr(&out));
    }
    let z = zygote(&env, daemon);
    assert!(
        env.eventually(20, || children(daemon).iter().all(|(_, s)| *s != 'Z')),
        "zombies left: {:?}",
        children(daemon)
    );
    assert!(
        children(z).is_empty(),
        "the zygote has children: {:?}",
        children(z)
    );
    assert!(env.skiff(&["rm", "-f", "taken"]).status.success());
}

/// A skiffd we started ourselves (`exe`, with `extra` in its environment, its log at
/// `log`), killed at the end; returned once it owns its name.
struct Daemon(std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

fn start_skiffd(
    env: &Env,
    exe: &std::path::Path,
    extra: &[(&str, &std::ffi::OsStr)],
    log: &std::path::Path,
) -> Daemon {
    let daemon = Daemon(
        std::process::Command::new(exe)
            .envs(env.envs())
            .envs(extra.iter().copied())
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let owned = env.eventually(20, || {
        let out = env.gdbus(&[
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            "org.freedesktop.DBus.NameHasOwner",
            "org.skiff.skiff1",
        ]);
        common::stdout(&out).contains("true")
    });
    assert!(
        owned,
        "skiffd did not take its name: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    daemon
}

/// A `skiff-monitor` that cannot be a zygote (here: one that exits at `__zygote`, as a
/// binary older than skiffd would): every monitor is exec'd instead, and a new zygote
/// is not tried for every start (one try, then the exec for a while, said once in the
/// log).
#[test]
fn without_a_working_zygote_monitors_are_execd() {
    let env = Env::bus_only();
    let bin = env.dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let skiffd = bin.join("skiffd");
    if std::fs::hard_link(common::bin("skiffd"), &skiffd).is_err() {
        std::fs::copy(common::bin("skiffd"), &skiffd).unwrap();
    }
    let real = common::bin("skiff-monitor");
    let wrapper = format!(
        "#!/bin/sh\n[ \"$1\" = __zygote ] && exit 2\nexec {} \"$@\"\n",
        real.display()
    );
    let monitor = bin.join("skiff-monitor");
    std::fs::write(&monitor, wrapper).unwrap();
    std::fs::set_permissions(
        &monitor,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let log_path = env.dir.path().join("skiffd-wrapped.log");
    let daemon = start_skiffd(&env, &skiffd, &[], &log_path);
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["first", "second"] {
        let m = run_sleeper(&env, name);
        assert_eq!(comm(m), "skiff-monitor");
        // (The exec'd monitor, as the forked one.)
        assert_no_stray_null(m, name);
        assert_eq!(
            state_and_ppid(m).map(|s| s.1),
            Some(daemon.0.id()),
            "{}",
            log()
        );
        let out = env.skiff(&["exec", name, "echo", "ok"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    assert!(zygotes(daemon.0.id()).is_empty());
    let starts = log().matches("monitor zygote started").count();
    assert_eq!(starts, 1, "zygotes tried: {}", log());
    assert!(log().contains("monitors are exec'd for"), "{}", log());
    // Warned once, not at every start.
    assert_eq!(log().matches("starting it by exec").count(), 1, "{}", log());
    for name in ["first", "second"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// A zygote that does not answer (stopped) is given up on after skiffd's answer timeout
/// and replaced: the start that found it stuck still gets its monitor from a zygote. The
/// stuck one, silent for another timeout, is killed and reaped.
#[test]
fn a_stuck_zygote_is_replaced() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    run_sleeper(&env, "before");
    let stuck = zygote(&env, daemon);
    // SAFETY: kill(2) of a process of ours.
    assert_eq!(unsafe { libc::kill(stuck as i32, libc::SIGSTOP) }, 0);
    let m = run_sleeper(&env, "after");
    let fresh: Vec<u32> = zygotes(daemon)
        .into_iter()
        .filter(|z| *z != stuck)
        .collect();
    assert_eq!(fresh.len(), 1, "{fresh:?}\n{}", env.daemon_log());
    let fresh = fresh[0];
    let ranges = |p| monitor_mappings(p).into_keys().collect::<Vec<_>>();
    assert_eq!(ranges(m), ranges(fresh), "not a fork of the new zygote");
    assert!(
        env.eventually(30, || state_and_ppid(stuck)
            .is_none_or(|(_, pp)| pp != daemon)),
        "the stuck zygote was not killed and reaped: {:?}",
        state_and_ppid(stuck)
    );
    for name in ["before", "after"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// A zygote that answers only after skiffd's timeout (it stops itself between a fork and
/// its answer, once, and is continued after the timeout): the start gets its monitor
/// from another zygote, and the late fork never runs as a second monitor of the
/// container (it would race the followed one for the container's start): skiffd reaps
/// it, and the late zygote ends.
#[test]
fn a_late_answer_leaves_no_second_monitor_and_no_zombie() {
    let env = Env::bus_only();
    let stall = env.dir.path().join("stall");
    let log_path = env.dir.path().join("skiffd-stall.log");
    let daemon = start_skiffd(
        &env,
        &common::bin("skiffd"),
        &[("SKIFF_TEST_ZYGOTE_STALL", stall.as_os_str())],
        &log_path,
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let pid = daemon.0.id();
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let before = run_sleeper(&env, "before");
    let late_zygote = zygote_of(pid, &log());
    std::fs::write(&stall, b"").unwrap();
    let late = run_sleeper(&env, "late");
    assert!(!stall.exists(), "the zygote did not stall: {}", log());
    // The stalled zygote answers now (if skiffd left it alive).
    // SAFETY: kill(2) of a process of ours (ESRCH if it is gone).
    unsafe { libc::kill(late_zygote as i32, libc::SIGCONT) };
    let monitors = |daemon: u32| -> Vec<u32> {
        let mut m: Vec<u32> = children(daemon)
            .into_iter()
            .filter(|(p, s)| *s != 'Z' && comm(*p) == "skiff-monitor")
            .map(|(p, _)| p)
            .collect();
        m.sort_unstable();
        m
    };
    let mut expected = vec![before, late];
    expected.sort_unstable();
    let settled = env.eventually(30, || {
        state_and_ppid(late_zygote).is_none_or(|(_, pp)| pp != pid)
            && children(pid).iter().all(|(_, s)| *s != 'Z')
            && monitors(pid) == expected
    });
    assert!(
        settled,
        "the late zygote {late_zygote}: {:?}; skiffd's children {:?}; monitors {:?}, \
         expected {expected:?}\n{}",
        state_and_ppid(late_zygote),
        children(pid),
        monitors(pid),
        log()
    );
    assert!(
        log().contains("answered after skiffd's timeout"),
        "the late answer was not read: {}",
        log()
    );
    assert_eq!(env.inspect("late")["State"]["Status"], "running");
    let out = env.skiff(&["exec", "late", "echo", "ok"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The next start is served by the zygote that replaced the late one.
    let next = run_sleeper(&env, "next");
    let ranges = |p| monitor_mappings(p).into_keys().collect::<Vec<_>>();
    assert_eq!(ranges(next), ranges(zygote_of(pid, &log())));
    for name in ["before", "late", "next"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// A monitor's command line longer than the room the zygote has for it (here: a bundle
/// path of over 2 KiB, under a deep runtime directory): the zygote refuses it with a
/// clear error, and skiffd starts that monitor by exec, with its whole command line
/// (nothing cut short), without a hang; the zygote goes on.
#[test]
fn a_command_line_too_long_for_the_zygote_is_execd_whole() {
    let env = Env::bus_only();
    let mut runtime = env.dir.path().join("runtime");
    for _ in 0..11 {
        runtime.push("r".repeat(200));
    }
    std::fs::create_dir_all(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let log_path = env.dir.path().join("skiffd-deep.log");
    let daemon = start_skiffd(
        &env,
        &common::bin("skiffd"),
        &[("XDG_RUNTIME_DIR", runtime.as_os_str())],
        &log_path,
    );
    let log = || std::fs::read_to_string(&log_path).unwrap_or_default();
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    for name in ["first", "second"] {
        let m = run_sleeper(&env, name);
        let id = env.inspect(name)["Id"].as_str().unwrap().to_string();
        assert_eq!(state_and_ppid(m).map(|s| s.1), Some(daemon.0.id()));
        let cmdline = std::fs::read(format!("/proc/{m}/cmdline")).unwrap();
        let words: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
        let bundle = std::path::Path::new(std::ffi::OsStr::from_bytes(words[2]));
        assert_eq!(
            (words[0], words[1], words.len()),
            (&b"skiff-monitor"[..], &b"__monitor"[..], 4),
            "{:?}",
            String::from_utf8_lossy(&cmdline)
        );
        assert!(
            bundle.starts_with(&runtime) && bundle.ends_with(&id) && bundle.is_dir(),
            "the monitor's bundle argument is not whole: {}",
            bundle.display()
        );
        assert!(words[2].len() > 2048, "{}", bundle.display());
        let out = env.skiff(&["exec", name, "echo", "ok"]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    // Refused by the zygote, said in the log, each monitor exec'd; the zygote lives on.
    assert_eq!(
        log()
            .matches("the command line does not fit in the zygote's")
            .count(),
        2,
        "{}",
        log()
    );
    assert_eq!(log().matches("starting it by exec").count(), 2, "{}", log());
    assert_eq!(zygotes(daemon.0.id()).len(), 1);
    for name in ["first", "second"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}

/// While a stuck zygote keeps monitor spawns waiting (more of them than skiffd has async
/// workers: 2), skiffd still answers other calls: the round trips wait on blocking
/// threads, not on the workers. (`skiff ps` answers while the stuck zygote has not yet
/// been given up on: before, it waited for the first spawn's 10 s timeout.)
#[test]
fn a_stuck_zygote_does_not_stall_the_daemon() {
    let env = Env::new();
    let daemon = env.daemon_pid();
    run_sleeper(&env, "first");
    let names = ["s1", "s2", "s3"];
    for name in names {
        let out = env.skiff(&[
            "create",
            "--network",
            "none",
            "--name",
            name,
            "demo/busybox",
            "sleep",
            "1000",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let stuck = zygote(&env, daemon);
    let written = || env.daemon_log().matches("phase=\"bundle-written\"").count();
    let before = written();
    // SAFETY: kill(2) of a process of ours.
    assert_eq!(unsafe { libc::kill(stuck as i32, libc::SIGSTOP) }, 0);
    let starts: Vec<std::process::Child> = names
        .iter()
        .map(|n| {
            env.skiff_cmd(&["start", n])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    // Every start is at its monitor's spawn (waiting for the stuck zygote).
    assert!(
        env.eventually(20, || written() >= before + names.len()),
        "{}",
        env.daemon_log()
    );
    let out = env.skiff(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = env.daemon_log();
    assert!(
        !log.contains(&format!("monitor zygote (pid {stuck}) cannot serve")),
        "skiffd answered only once the stuck zygote was given up on:\n{log}"
    );
    assert!(state_and_ppid(stuck).is_some_and(|(s, _)| s == 'T'));
    for mut s in starts {
        assert!(s.wait().unwrap().success());
    }
    for name in names {
        assert_eq!(env.inspect(name)["State"]["Status"], "running");
    }
    for name in ["first", "s1", "s2", "s3"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}
