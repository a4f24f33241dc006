//! End to end: the addresses of the shared network (`bridge`), as the unprivileged user
//! with the real slirp4netns. As docker does, a container holds an address only while it
//! runs: taken at each start, free again at its end whatever the end (exit, stop, kill,
//! its monitor's crash, a skiffd restart that finds it dead), and `inspect` and the
//! record say so. Parallel starts never share one; a restarted skiffd rebuilds its index
//! from the records. A full pool: the default network falls back to a slirp4netns of the
//! container's own, an explicit `--network bridge` fails its start with what to do.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use common::Env;
use net_helpers::*;

/// The container's address as `inspect` shows it ("" when it has none).
fn ip(env: &Env, name: &str) -> String {
    let v = env.inspect(name);
    let ip = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        v["NetworkSettings"]["Networks"]["bridge"]["IPAddress"], ip,
        "{v}"
    );
    ip
}

/// The address in the container's record on disk, if any.
fn recorded(env: &Env, name: &str) -> Option<String> {
    let id = env.inspect(name)["Id"].as_str().unwrap().to_string();
    let path = env
        .data()
        .join("containers")
        .join(id)
        .join("container.json");
    let rec: serde_json::Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    rec["network_addr"].as_str().map(String::from)
}

/// The address a new container gets: the first free one.
fn next_free(env: &Env) -> String {
    let out = run_ok(
        env,
        &[
            "run",
            "--rm",
            "demo/busybox",
            "sh",
            "-c",
            "ip -4 -o addr show eth0",
        ],
    );
    out.split_whitespace()
        .skip_while(|w| *w != "inet")
        .nth(1)
        .and_then(|a| a.split('/').next())
        .unwrap_or_else(|| panic!("no address in {out:?}"))
        .to_string()
}

fn sleeper(env: &Env, name: &str) -> String {
    run_ok(
        env,
        &["run", "-d", "--name", name, "demo/busybox", "sleep", "1000"],
    );
    let a = ip(env, name);
    assert!(a.starts_with("10.0.2."), "{name}: {a:?}");
    assert_eq!(recorded(env, name).as_deref(), Some(a.as_str()));
    a
}

/// `name` has ended: no address in `inspect` nor in its record, and the first free
/// address is `addr` again.
fn assert_freed(env: &Env, name: &str, addr: &str, how: &str) {
    assert!(
        env.eventually(20, || env.inspect(name)["State"]["Running"] == false),
        "{name} still runs after {how}"
    );
    assert_eq!(ip(env, name), "", "{name} shows an address after {how}");
    assert_eq!(
        recorded(env, name),
        None,
        "{name}'s record keeps its address after {how}"
    );
    assert_eq!(
        next_free(env),
        addr,
        "{name}'s address was not freed by {how}: {}",
        env.daemon_log()
    );
}

#[test]
fn a_container_holds_its_address_only_while_it_runs() {
    let mut env = Env::new();
    // Stop.
    let a = sleeper(&env, "ca");
    run_ok(&env, &["stop", "-t", "1", "ca"]);
    assert_freed(&env, "ca", &a, "stop");
    // Another container takes it; the stopped one gets another at its start, and its
    // network has that one.
    let b = sleeper(&env, "cb");
    assert_eq!(b, a);
    run_ok(&env, &["start", "ca"]);
    let again = ip(&env, "ca");
    assert!(again.starts_with("10.0.2.") && again != b, "{again}");
    assert_eq!(recorded(&env, "ca").as_deref(), Some(again.as_str()));
    let inside = run_ok(
        &env,
        &["exec", "ca", "ip", "-4", "-o", "addr", "show", "eth0"],
    );
    assert!(inside.contains(&format!("inet {again}/24")), "{inside}");
    run_ok(&env, &["rm", "-f", "ca", "cb"]);
    // Its command's exit.
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "ce",
            "demo/busybox",
            "sh",
            "-c",
            "while [ ! -e /tmp/go ]; do sleep 0.1; done",
        ],
    );
    let e = ip(&env, "ce");
    run_ok(&env, &["exec", "ce", "touch", "/tmp/go"]);
    assert_freed(&env, "ce", &e, "its exit");
    // Kill.
    let k = sleeper(&env, "ck");
    run_ok(&env, &["kill", "ck"]);
    assert_freed(&env, "ck", &k, "kill");
    // Its monitor's crash.
    let m = sleeper(&env, "cm");
    kill_monitor_of(&env, "cm");
    assert_freed(&env, "cm", &m, "its monitor's crash");
    // Its end while skiffd was down, found by the next skiffd.
    let d = sleeper(&env, "cd");
    let monitor = env.inspect("cd")["State"]["MonitorPid"].as_i64().unwrap() as i32;
    env.kill_daemon();
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    env.start_daemon();
    assert_freed(&env, "cd", &d, "its end while skiffd was down");
    // A start that fails before the container runs (its published port is taken).
    let taken = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let publish = format!("{port}:80");
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "cf",
        "-p",
        &publish,
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(
        !out.status.success(),
        "the start with port {port} taken ran"
    );
    assert_eq!(ip(&env, "cf"), "");
    assert_eq!(recorded(&env, "cf"), None);
    assert_eq!(next_free(&env), d, "a failed start kept its address");
    run_ok(&env, &["rm", "-f", "ce", "ck", "cm", "cd", "cf"]);
}

/// `n` containers `{prefix}N` run at once, in parallel; their addresses.
fn run_parallel(env: &Env, prefix: &str, n: usize) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    std::thread::scope(|s| {
        for name in &names {
            s.spawn(move || {
                run_ok(
                    env,
                    &["run", "-d", "--name", name, "demo/busybox", "sleep", "1000"],
                )
            });
        }
    });
    names.iter().map(|n| ip(env, n)).collect()
}

#[test]
fn parallel_starts_never_share_an_address_and_a_new_skiffd_knows_the_taken_ones() {
    let mut env = Env::new();
    let mut all = run_parallel(&env, "p", 8);
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
    // A new skiffd (the old one killed) takes the running containers' addresses from
    // their records: new ones get others.
    env.kill_daemon();
    env.start_daemon();
    all.extend(run_parallel(&env, "q", 4));
    let distinct: std::collections::BTreeSet<_> = all.iter().collect();
    assert_eq!(distinct.len(), all.len(), "{all:?}");
    let mut names: Vec<String> = (0..8).map(|i| format!("p{i}")).collect();
    names.extend((0..4).map(|i| format!("q{i}")));
    let mut args = vec!["rm", "-f"];
    args.extend(names.iter().map(String::as_str));
    run_ok(&env, &args);
}

#[test]
fn a_full_pool_falls_back_for_the_default_and_fails_an_explicit_bridge_at_start() {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--bridge-pool", "2"]);
    let tar = env.busybox_tar();
    run_ok(
        &env,
        &["image", "import", tar.to_str().unwrap(), "demo/busybox"],
    );
    let a = sleeper(&env, "ca");
    sleeper(&env, "cb");
    // Created, but its start fails with docker's words and what to do.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "cx",
        "--network",
        "bridge",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("no available IPv4 addresses"), "{err}");
    assert!(err.contains("--network slirp4netns"), "{err}");
    assert!(err.contains("stop or remove a container"), "{err}");
    assert_eq!(env.inspect("cx")["State"]["Running"], false);
    assert_eq!(ip(&env, "cx"), "");
    // The default network: a slirp4netns of its own for this run, and why.
    run_ok(
        &env,
        &["run", "-d", "--name", "cy", "demo/busybox", "sleep", "1000"],
    );
    let v = env.inspect("cy");
    assert_eq!(v["HostConfig"]["NetworkMode"], "slirp4netns", "{v}");
    let why = v["NetworkSettings"]["NetworkReason"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("no available IPv4 addresses"), "{v}");
    // A stopped container holds none: the explicit one starts now, with a's.
    run_ok(&env, &["stop", "-t", "1", "ca"]);
    run_ok(&env, &["start", "cx"]);
    assert_eq!(ip(&env, "cx"), a);
    run_ok(&env, &["rm", "-f", "ca", "cb", "cx", "cy"]);
}
