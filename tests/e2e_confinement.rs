//! End to end: what a container's and an exec's process get from skiff and nothing more —
//! only their own descriptors (none of the daemon's, the monitor's or the client's),
//! no secrets on helpers' command lines or environments, no supplementary groups they
//! did not ask for, and a session of their own.

mod common;

use std::collections::BTreeMap;

use common::{stderr, stdout, Env};

fn running(env: &Env, name: &str, args: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name];
    a.extend_from_slice(args);
    let out = env.skiff(&a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(5, || env.inspect(name)["State"]["Status"] == "running"));
}

/// The descriptors in an `ls -l /proc/self/fd` listing, with their targets, except the
/// one `ls` opened itself to read that directory.
fn fds_of_listing(listing: &str) -> BTreeMap<u32, String> {
    let mut fds = BTreeMap::new();
    for line in listing.lines() {
        let Some((left, target)) = line.split_once(" -> ") else {
            continue;
        };
        let Some(n) = left.split_whitespace().last().and_then(|n| n.parse().ok()) else {
            continue;
        };
        if target.starts_with("/proc/") && target.ends_with("/fd") {
            continue;
        }
        fds.insert(n, target.to_string());
    }
    fds
}

fn assert_only_stdio(what: &str, listing: &str) {
    let fds = fds_of_listing(listing);
    assert!(
        fds.keys().copied().eq([0, 1, 2]),
        "{what}: the process must hold exactly fds 0, 1 and 2, it holds {fds:?}:\n{listing}"
    );
}

#[test]
fn containers_and_execs_hold_only_their_own_descriptors() {
    let mut env = Env::bus_only();
    // skiffd inherits a stray fd 9 (open on a file), as from a shell that had one.
    let stray = std::fs::File::create(env.dir.path().join("stray")).unwrap();
    env.inherit_fd9(stray.into());
    env.start_daemon();
    let tar = env.busybox_tar();
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Foreground, without -i: the client's stdin, stdout and stderr are not handed over
    // as raw descriptors besides the container's own 0-2.
    let out = env.skiff(&["run", "--rm", "demo/busybox", "ls", "-l", "/proc/self/fd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_only_stdio("run in the foreground", &stdout(&out));
    // With -i.
    let out = env.skiff(&[
        "run",
        "-i",
        "--rm",
        "demo/busybox",
        "ls",
        "-l",
        "/proc/self/fd",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_only_stdio("run -i", &stdout(&out));

    // Detached: the output is logged.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "det",
        "demo/busybox",
        "ls",
        "-l",
        "/proc/self/fd",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(10, || env.inspect("det")["State"]["Status"] == "exited"));
    assert_only_stdio("run -d", &stdout(&env.skiff(&["logs", "det"])));

    // exec, foreground and with -i, in a running container.
    running(&env, "box", &["demo/busybox", "sleep", "1000"]);
    let out = env.skiff(&["exec", "box", "ls", "-l", "/proc/self/fd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_only_stdio("exec", &stdout(&out));
    let out = env.skiff(&["exec", "-i", "box", "ls", "-l", "/proc/self/fd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_only_stdio("exec -i", &stdout(&out));
    // The container's main process too (pid 1 in its namespace).
    let out = env.skiff(&["exec", "box", "ls", "-l", "/proc/1/fd"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_only_stdio("the container's init", &stdout(&out));

    // Nor do skiff's own helpers hold the daemon's stray fd: the monitor, an exec's
    // helper (while `exec -d` runs), the FUSE server, the network helper.
    let out = env.skiff(&["exec", "-d", "box", "sleep", "998"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(10, || readable_proc_files()
        .iter()
        .any(|(_, argv, _, _)| argv == &["sleep", "998"])));
    let stray = env.dir.path().join("stray");
    let me = std::process::id();
    let mut holders = Vec::new();
    for (pid, argv, file, _) in readable_proc_files() {
        if file != "cmdline" || pid == me {
            continue;
        }
        // The daemon itself inherited it; it may keep it.
        let daemon = argv.first().is_some_and(|a| a.ends_with("/skiffd")) && argv.len() == 1;
        let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            if std::fs::read_link(fd.path()).is_ok_and(|t| t == stray) && !daemon {
                holders.push(format!("{pid} {argv:?} (fd {:?})", fd.file_name()));
            }
        }
    }
    assert!(
        holders.is_empty(),
        "skiffd's stray fd leaked into {holders:?}"
    );
}

/// Every `/proc/PID/{cmdline,environ}` we can read, with the pid and the process's argv.
fn readable_proc_files() -> Vec<(u32, Vec<String>, String, Vec<u8>)> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        found.push((pid, argv.clone(), "cmdline".to_string(), cmdline));
        if let Ok(environ) = std::fs::read(e.path().join("environ")) {
            found.push((pid, argv, "environ".to_string(), environ));
        }
    }
    found
}

#[test]
fn secrets_are_not_on_helper_command_lines_or_environments() {
    let env = Env::new();
    running(&env, "box", &["demo/busybox", "sleep", "1000"]);
    let secret = "s3cr3t-9f41c2e7";
    let out = env.skiff(&[
        "exec",
        "-d",
        "-e",
        &format!("SECRET={secret}"),
        "box",
        "sleep",
        "997",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // A container's environment too (its monitor, network helper, FUSE server).
    let out = env.skiff(&[
        "run",
        "-d",
        "-e",
        &format!("SECRET={secret}"),
        "demo/busybox",
        "sleep",
        "996",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Wait until both run: their environments have the secret (they legitimately may).
    assert!(env.eventually(10, || {
        let procs = readable_proc_files();
        ["997", "996"]
            .iter()
            .all(|n| procs.iter().any(|(_, argv, _, _)| argv == &["sleep", n]))
    }));
    let needle = secret.as_bytes();
    let mut leaks = Vec::new();
    for (pid, argv, file, data) in readable_proc_files() {
        let is_the_process = argv == ["sleep", "997"] || argv == ["sleep", "996"];
        if file == "environ" && is_the_process {
            continue;
        }
        if data.windows(needle.len()).any(|w| w == needle) {
            leaks.push(format!("/proc/{pid}/{file} of {argv:?}"));
        }
    }
    assert!(leaks.is_empty(), "the secret is readable in {leaks:?}");
}

fn groups_line(status: &str) -> String {
    status
        .lines()
        .find(|l| l.starts_with("Groups:"))
        .unwrap_or("no Groups line")
        .trim_end()
        .to_string()
}

#[test]
fn users_get_no_supplementary_groups_they_did_not_ask_for() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "-u",
        "1000:1000",
        "demo/busybox",
        "cat",
        "/proc/self/status",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(groups_line(&stdout(&out)), "Groups:", "run -u 1000:1000");
    let out = env.skiff(&["run", "--rm", "demo/busybox", "cat", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(groups_line(&stdout(&out)), "Groups:", "run as root");

    running(
        &env,
        "box",
        &["-u", "1000:1000", "demo/busybox", "sleep", "1000"],
    );
    let out = env.skiff(&["exec", "box", "cat", "/proc/1/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(groups_line(&stdout(&out)), "Groups:", "run -d -u 1000:1000");
    for user in [None, Some("1000:1000"), Some("0:0"), Some("2000")] {
        let mut args = vec!["exec"];
        if let Some(u) = user {
            args.extend(["-u", u]);
        }
        args.extend(["box", "cat", "/proc/self/status"]);
        let out = env.skiff(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        assert_eq!(groups_line(&stdout(&out)), "Groups:", "exec -u {user:?}");
    }
}

#[test]
fn an_exec_is_a_session_leader_and_kill_0_ends_only_it() {
    let env = Env::new();
    running(&env, "box", &["demo/busybox", "sleep", "1000"]);
    // Its own session and process group: pid == sid == pgid (fields 1, 5 and 6 of stat).
    let out = env.skiff(&["exec", "box", "cat", "/proc/self/stat"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stat = stdout(&out);
    let after_comm = stat.rsplit_once(") ").map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after_comm.split_whitespace().collect();
    let pid = stat.split_whitespace().next().unwrap_or("");
    assert_eq!(
        (f.get(2).copied(), f.get(3).copied()),
        (Some(pid), Some(pid)),
        "pgid and sid must be the exec'd process's own pid: {stat}"
    );
    // kill 0 signals its own group only: the shell dies of SIGTERM.
    let out = env.skiff(&["exec", "box", "sh", "-c", "kill -TERM 0"]);
    assert_eq!(out.status.code(), Some(143), "{}", stderr(&out));
    // The container lives on.
    assert_eq!(env.inspect("box")["State"]["Status"], "running");
}
