//! End to end: containers with the default mapping share one user namespace made by
//! skiffd (podman's pause process; see `userns::shared`); `--userns=private` and
//! `--userns keep-id` get namespaces of their own; a daemon restart leaves running
//! containers alone and the next start makes a new shared namespace.

mod common;

use common::{stderr, stdout, Env};

/// The `user:[INODE]` of a host pid's user namespace.
fn userns_of(pid: u64) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/user"))
        .unwrap_or_else(|e| panic!("readlink /proc/{pid}/ns/user: {e}"))
        .display()
        .to_string()
}

/// Starts a detached `sleep` container; returns init's host pid.
fn sleeper(env: &Env, name: &str, extra: &[&str]) -> u64 {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["demo/busybox", "sleep", "1000"]);
    let out = env.skiff(&args);
    assert!(out.status.success(), "run {name}: {}", stderr(&out));
    let pid = env.inspect(name)["State"]["Pid"].as_u64().unwrap_or(0);
    assert!(pid > 0, "{name} has no pid: {}", env.inspect(name));
    pid
}

/// Every descriptor of `pid` that refers to a user namespace.
fn userns_fds(pid: u64) -> Vec<String> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .map(|l| l.display().to_string())
        .filter(|l| l.starts_with("user:["))
        .collect()
}

/// Host pids of the processes whose command line contains all of `words`.
fn pids_with(words: &[&str]) -> Vec<u64> {
    let mut found = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u64>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        if words.iter().all(|w| cmd.contains(w)) {
            found.push(pid);
        }
    }
    found
}

#[test]
fn default_containers_share_one_user_namespace_private_and_keep_id_do_not() {
    let env = Env::new();
    let a = sleeper(&env, "ca", &[]);
    let b = sleeper(&env, "cb", &[]);
    let private = sleeper(&env, "cp", &["--userns=private"]);
    let keep = sleeper(&env, "ck", &["--userns", "keep-id"]);
    let own = std::fs::read_link("/proc/self/ns/user")
        .unwrap()
        .display()
        .to_string();
    let shared = userns_of(a);
    assert_ne!(shared, own, "a runs in the host's user namespace");
    assert_eq!(
        userns_of(b),
        shared,
        "a and b do not share a user namespace"
    );
    assert_ne!(
        userns_of(private),
        shared,
        "--userns=private joined the shared namespace"
    );
    assert_ne!(
        userns_of(keep),
        shared,
        "keep-id joined the shared namespace"
    );
    assert_ne!(userns_of(private), userns_of(keep));
    // The shared namespace and a private one have the same (default) maps.
    let map = |pid: u64| std::fs::read_to_string(format!("/proc/{pid}/uid_map")).unwrap();
    assert_eq!(map(a), map(private));
    assert_ne!(map(a), map(keep));
    // A start with the default mapping ran no newuidmap: skiffd's log has one shared
    // namespace made for both.
    assert_eq!(
        env.daemon_log()
            .matches("made the shared user namespace")
            .count(),
        1,
        "{}",
        env.daemon_log()
    );
    // No process holds it but the containers': no helper is left, and neither the
    // monitors nor the containers keep a descriptor of it.
    let tmp = env.dir.path().display().to_string();
    assert!(
        pids_with(&["__userns"]).is_empty(),
        "a __userns helper is left"
    );
    for pid in [a, b, private, keep] {
        assert!(userns_fds(pid).is_empty(), "{pid}: {:?}", userns_fds(pid));
    }
    // The monitors and the FUSE servers they forked (same command line).
    let monitors = pids_with(&["__monitor", &tmp]);
    assert!(monitors.len() >= 4, "monitors: {monitors:?}");
    for m in monitors {
        assert!(userns_fds(m).is_empty(), "monitor {m}: {:?}", userns_fds(m));
    }
    // In the shared namespace: root inside, only the container's own fds, and only its
    // own processes in /proc (not the other containers', not skiffd).
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "id -u; ls /proc/self/fd | wc -l; ls /proc | grep -c '^[0-9]'",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<String> = stdout(&out).lines().map(|l| l.trim().to_string()).collect();
    assert_eq!(lines[0], "0", "{lines:?}");
    // 0, 1, 2 and ls's own directory.
    assert_eq!(lines[1], "4", "{lines:?}");
    // sh, and the ls or grep alive at the time (never other containers' processes).
    assert!(lines[2].parse::<u32>().unwrap() <= 3, "{lines:?}");
    // exec and cp join a shared-namespace container by its pid as before.
    let ex = env.skiff(&[
        "exec",
        "ca",
        "sh",
        "-c",
        "id -u; cat /proc/self/uid_map | wc -l",
    ]);
    assert!(ex.status.success(), "{}", stderr(&ex));
    assert!(stdout(&ex).starts_with("0\n"), "{}", stdout(&ex));
    let file = env.dir.path().join("in.txt");
    std::fs::write(&file, "shared\n").unwrap();
    let cp = env.skiff(&["cp", file.to_str().unwrap(), "ca:/tmp/in.txt"]);
    assert!(cp.status.success(), "{}", stderr(&cp));
    let cat = env.skiff(&["exec", "cb", "cat", "/tmp/in.txt"]);
    assert!(
        !cat.status.success(),
        "b sees a's file: the mount namespaces are shared"
    );
    let cat = env.skiff(&["exec", "ca", "stat", "-c", "%u", "/tmp/in.txt"]);
    assert_eq!(stdout(&cat).trim(), "0", "{}", stderr(&cat));
    assert!(env
        .skiff(&["rm", "-f", "ca", "cb", "cp", "ck"])
        .status
        .success());
}

#[test]
fn a_daemon_crash_leaves_running_containers_alone_and_the_next_start_makes_a_new_one() {
    let mut env = Env::new();
    // With a slirp4netns per container no shared network's holder keeps the namespace
    // (see the next test for the default network).
    let own = ["--network", "slirp4netns"];
    let a = sleeper(&env, "ca", &own);
    let before = userns_of(a);
    env.kill_daemon();
    env.start_daemon();
    // Re-adopted, still in its namespace, and exec still joins it.
    assert_eq!(env.inspect("ca")["State"]["Status"], "running");
    assert_eq!(userns_of(a), before);
    let ex = env.skiff(&["exec", "ca", "id", "-u"]);
    assert!(ex.status.success(), "{}", stderr(&ex));
    assert_eq!(stdout(&ex).trim(), "0");
    // The new daemon makes a namespace of its own for its first start.
    let b = sleeper(&env, "cb", &own);
    assert_ne!(userns_of(b), before);
    let out = env.skiff(&["run", "--rm", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.skiff(&["stop", "-t", "0", "ca"]).status.success());
    assert_eq!(env.inspect("ca")["State"]["Status"], "exited");
    // A stopped default container started again joins the shared namespace.
    assert!(env.skiff(&["start", "ca"]).status.success());
    let a2 = env.inspect("ca")["State"]["Pid"].as_u64().unwrap();
    assert_eq!(userns_of(a2), userns_of(b));
    assert!(env.skiff(&["rm", "-f", "ca", "cb"]).status.success());
}

#[test]
fn with_the_shared_network_the_next_daemon_re_adopts_the_namespace() {
    let mut env = Env::new();
    let a = sleeper(&env, "ca", &[]);
    let before = userns_of(a);
    env.kill_daemon();
    env.start_daemon();
    // The shared network's holder outlived skiffd and keeps the namespace: new
    // containers join the old ones' namespace (and network).
    let b = sleeper(&env, "cb", &[]);
    assert_eq!(userns_of(b), before);
    assert!(env.skiff(&["rm", "-f", "ca", "cb"]).status.success());
}

#[test]
fn an_unknown_userns_mode_is_refused_with_the_choices() {
    let env = Env::new();
    let out = env.skiff(&["run", "--rm", "--userns", "auto", "demo/busybox", "true"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("private") && err.contains("keep-id"), "{err}");
}
