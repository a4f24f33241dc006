//! End to end: the monitors are forked by skiffd's monitor zygote (issue 18, memory),
//! share the pages it relocated, and everything a monitor did when exec'd still holds
//! when the zygote dies, when skiffd is killed, and when a run fails early.

mod common;
mod zygote_support;

use std::collections::BTreeMap;

use common::{entries, stderr, Env};
use zygote_support::*;

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
