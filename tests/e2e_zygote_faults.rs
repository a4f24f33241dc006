//! End to end: the monitor zygote's failures (stuck, late, a command line too long for
//! it) never cost a container its monitor, leave no second monitor or zombie, and do
//! not stall skiffd.

mod common;
mod zygote_support;

use std::os::unix::ffi::OsStrExt;

use common::{stderr, Env};
use zygote_support::*;

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
    let st = Stalled::start(&env);
    let log = || st.log();
    let (pid, before, late, late_zygote) = (st.pid, st.before, st.late, st.stalled);
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
/// (nothing cut short), without a hang; the zygote goes on. The warning is given once.
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
    // A warning once per skiffd run (every start of this skiffd would say it), then at
    // debug level.
    let warned: Vec<String> = log()
        .lines()
        .filter(|l| l.contains(" WARN ") && l.contains("starting it by exec"))
        .map(str::to_string)
        .collect();
    assert_eq!(warned.len(), 1, "{warned:#?}");
    assert!(warned[0].contains("said once"), "{}", warned[0]);
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

/// A zygote stopped between a fork and its answer for longer than skiffd waits (its
/// answer timeout, then as long again for a late answer) is killed and reaped; the fork
/// it made — skiffd's child, which never had its go-ahead — is reaped too: no zombie of
/// skiffd is left. The start got its monitor from another zygote.
#[test]
fn a_zygote_stopped_past_the_give_up_time_leaves_no_zombie_fork() {
    let env = Env::bus_only();
    let st = Stalled::start(&env);
    let log = || st.log();
    let (pid, before, late, stalled) = (st.pid, st.before, st.late, st.stalled);
    // Never continued: skiffd gives up on it, kills it and reaps it.
    assert!(
        env.eventually(60, || state_and_ppid(stalled)
            .is_none_or(|(_, pp)| pp != pid)),
        "the stalled zygote {stalled} is still skiffd's: {:?}\n{}",
        state_and_ppid(stalled),
        log()
    );
    let zombies = || -> Vec<u32> {
        children(pid)
            .into_iter()
            .filter(|(_, s)| *s == 'Z')
            .map(|(p, _)| p)
            .collect()
    };
    assert!(
        env.eventually(30, || zombies().is_empty()),
        "zombies of skiffd: {:?} ({:?})\n{}",
        zombies(),
        zombies().iter().map(|p| comm(*p)).collect::<Vec<_>>(),
        log()
    );
    let mut monitors: Vec<u32> = children(pid)
        .into_iter()
        .filter(|(p, _)| comm(*p) == "skiff-monitor")
        .map(|(p, _)| p)
        .collect();
    monitors.sort_unstable();
    let mut expected = vec![before, late];
    expected.sort_unstable();
    assert_eq!(monitors, expected, "{}", log());
    assert!(
        log().contains("which never ran the monitor: reaped"),
        "{}",
        log()
    );
    assert_eq!(env.inspect("late")["State"]["Status"], "running");
    for name in ["before", "late"] {
        assert!(env.skiff(&["rm", "-f", name]).status.success());
    }
}
