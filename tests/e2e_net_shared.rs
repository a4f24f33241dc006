//! End to end: the shared network (`bridge`, the default of containers in the shared
//! user namespace) with the real slirp4netns, as the unprivileged user: containers reach
//! each other by address, go out through ONE slirp4netns, publish TCP and UDP ports with
//! the client's address kept, keep their network across a SIGKILLed skiffd (a new
//! container still reaches an old one), and get their own slirp4netns outside the shared
//! user namespace. Traffic stays on this machine.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::io::{Read, Write};
use std::net::{TcpListener, UdpSocket};
use std::time::Duration;

use common::{stdout, Env};
use net_helpers::*;

/// The shared network's holder and its slirp4netns end (within 10 s).
fn assert_shared_network_ended(env: &Env) {
    assert!(
        env.eventually(10, || holders(env).is_empty() && slirps(env).is_empty()),
        "left: {:?} {:?}",
        holders(env),
        slirps(env)
    );
}

/// The shared network's holder processes of this test (not their namespace keeper).
fn holders(env: &Env) -> Vec<String> {
    let dir = env.dir.path().to_string_lossy().to_string();
    let all = processes();
    let is_holder = |c: &str| c.contains("__netns") && c.contains(&dir);
    all.iter()
        .filter(|(_, ppid, cmd)| {
            is_holder(cmd) && !all.iter().any(|(p, _, c)| p == ppid && is_holder(c))
        })
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

fn inspect(env: &Env, name: &str) -> serde_json::Value {
    let v: serde_json::Value = serde_json::from_str(&run_ok(env, &["inspect", name])).unwrap();
    v[0].clone()
}

fn addr_of(env: &Env, name: &str) -> String {
    let v = inspect(env, name);
    assert_eq!(v["HostConfig"]["NetworkMode"], "bridge", "{v}");
    let ip = v["NetworkSettings"]["IPAddress"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(ip.starts_with("10.0.2."), "{v}");
    assert_eq!(
        v["NetworkSettings"]["Networks"]["bridge"]["Gateway"],
        "10.0.2.2"
    );
    ip
}

/// A TCP server on a host address that is not loopback (the default network reaches
/// the host that way, as with slirp4netns); its port.
fn host_service(ip: std::net::IpAddr) -> u16 {
    let l = TcpListener::bind((ip, 0)).unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nfrom-the-host\n");
        }
    });
    port
}

#[test]
fn containers_share_one_slirp4netns_reach_each_other_and_the_host() {
    let env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "idle",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let web = addr_of(&env, "web");
    let idle = addr_of(&env, "idle");
    assert_ne!(web, idle, "two containers got one address");
    // One slirp4netns for both (and for a third, short-lived one).
    assert_eq!(slirps(&env).len(), 1, "{:?}", slirps(&env));
    // By address, from a third container: its own address is a third one, the server
    // sees it as the client.
    let get = format!(
        "ip route; cat /etc/resolv.conf; \
         printf 'GET /cgi-bin/ip HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc {web} 80"
    );
    let out = run_ok(&env, &["run", "--rm", "demo/busybox", "sh", "-c", &get]);
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    assert!(out.contains("nameserver 10.0.2.3"), "{out}");
    let own = out
        .lines()
        .find_map(|l| l.split_once(" src "))
        .map(|(_, a)| a.trim().to_string())
        .unwrap_or_default();
    assert!(
        own.starts_with("10.0.2.") && own != web && own != idle,
        "{out}"
    );
    let client = out
        .lines()
        .find_map(|l| l.strip_prefix("client="))
        .unwrap_or_default();
    assert!(client.trim_end_matches(']').ends_with(&own), "{out}");
    // The third container's address is free again after its removal.
    assert_eq!(slirps(&env).len(), 1, "{:?}", slirps(&env));
    // Out to a service of the host (a non-loopback address: loopback needs
    // --host-loopback, a slirp4netns of its own).
    if let Some(ip) = host_address(false) {
        let port = host_service(ip);
        let ask = format!("echo GET / | timeout 10 nc {ip} {port}");
        let out = run_ok(&env, &["exec", "idle", "sh", "-c", &ask]);
        assert!(out.contains("from-the-host"), "{out}");
    }
    // The idle container reaches the web one too (both ways on the bridge).
    let ask = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc {web} 80");
    let out = run_ok(&env, &["exec", "idle", "sh", "-c", &ask]);
    assert!(out.contains("hello-from-container"), "{out}");
    run_ok(&env, &["rm", "-f", "web", "idle"]);
    // A new container takes the first free address again.
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "again",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(addr_of(&env, "again"), web);
    run_ok(&env, &["rm", "-f", "again"]);
}

#[test]
fn published_tcp_and_udp_ports_keep_the_client_address() {
    let env = Env::new();
    let tcp = free_port();
    let udp = free_udp_port();
    let Some(host) = host_address(false) else {
        eprintln!("no non-loopback address: skipped");
        return;
    };
    let p_tcp = format!("{tcp}:80");
    let p_udp = format!("{udp}:5353/udp");
    // The UDP server answers each datagram with the sender's address.
    import_udp_image(&env);
    let script = format!("{HTTPD_BG}; exec udpecho 5353");
    run_ok(
        &env,
        &[
            "run", "-d", "--name", "srv", "-p", &p_tcp, "-p", &p_udp, "demo/udp", "sh", "-c",
            &script,
        ],
    );
    let ip = addr_of(&env, "srv");
    assert_eq!(slirps(&env).len(), 1);
    let cgi = net_helpers::http_get_at(host, tcp, "/cgi-bin/ip");
    let seen = client_seen(&cgi);
    assert!(
        seen.trim_end_matches(']').ends_with(&host.to_string()),
        "the server saw {seen:?} (container {ip}): {cgi}"
    );
    let sock = UdpSocket::bind((host, 0)).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut answer = String::new();
    for _ in 0..20 {
        let _ = sock.send_to(b"hi\n", (host, udp));
        let mut buf = [0u8; 256];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            answer = String::from_utf8_lossy(&buf[..n]).to_string();
            break;
        }
    }
    assert!(
        answer.starts_with(&format!("from={host} ")),
        "UDP answer {answer:?} (container {ip})"
    );
    run_ok(&env, &["rm", "-f", "srv"]);
    // Its UDP forward went with it: the host port is free again.
    assert!(
        UdpSocket::bind(("0.0.0.0", udp)).is_ok(),
        "UDP port {udp} still taken after the container went"
    );
}

/// HTTPD in the background (the UDP server runs in the foreground).
const HTTPD_BG: &str = "mkdir -p /www/cgi-bin && echo hello-from-container > /www/index.html && \
    printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho client=$REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
    chmod +x /www/cgi-bin/ip && httpd -p 80 -h /www";

#[test]
fn a_sigkilled_skiffd_is_replaced_and_new_containers_reach_old_ones() {
    let mut env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "old",
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let old = addr_of(&env, "old");
    let holder = holders(&env);
    assert_eq!(holder.len(), 1, "{holder:?}");
    env.kill_daemon();
    env.start_daemon();
    // The same holder (re-adopted, not a second one) and its one slirp4netns.
    assert_eq!(holders(&env), holder);
    let ask = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | timeout 10 nc {old} 80");
    let out = run_ok(&env, &["run", "--rm", "demo/busybox", "sh", "-c", &ask]);
    assert!(out.contains("hello-from-container"), "{out}");
    // The old one still goes out (through the shared slirp4netns's DNS forwarder's
    // network: its gateway answers).
    let out = run_ok(
        &env,
        &[
            "exec",
            "old",
            "sh",
            "-c",
            "ip route; ping -c1 -W5 10.0.2.2 >/dev/null; echo rc=$?",
        ],
    );
    assert!(out.contains("default via 10.0.2.2"), "{out}");
    assert_eq!(slirps(&env).len(), 1, "{:?}", slirps(&env));
    // A new container does not take the old one's address.
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "new",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    assert_ne!(addr_of(&env, "new"), old);
    // The holder ends with skiffd once no container uses it.
    run_ok(&env, &["rm", "-f", "old", "new"]);
    env.stop_daemon();
    assert_shared_network_ended(&env);
}

#[test]
fn a_holder_left_by_a_killed_skiffd_ends_with_the_next_one_once_unused() {
    let mut env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "old",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    assert_eq!(holders(&env).len(), 1);
    env.kill_daemon();
    env.start_daemon();
    // The new skiffd starts nothing on the shared network (so does not re-adopt it for
    // a start), the last container on it goes, skiffd stops: so does the holder.
    run_ok(&env, &["rm", "-f", "old"]);
    assert_eq!(
        holders(&env).len(),
        1,
        "the holder went with its last container"
    );
    env.stop_daemon();
    assert_shared_network_ended(&env);
}

#[test]
fn a_dead_shared_slirp4netns_is_restarted() {
    let env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "aa",
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let Some(host) = host_address(false) else {
        eprintln!("no non-loopback address: skipped");
        return;
    };
    let port = host_service(host);
    let first = slirps(&env);
    assert_eq!(first.len(), 1, "{first:?}");
    let pid: i32 = first[0].split(':').next().unwrap().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        env.eventually(20, || {
            let now = slirps(&env);
            now.len() == 1 && now != first
        }),
        "no new slirp4netns: {:?}",
        slirps(&env)
    );
    // The container goes out again through the new one.
    let ask = format!("echo GET / | timeout 10 nc {host} {port}");
    let ok = env.eventually(20, || {
        stdout(&env.skiff(&["exec", "aa", "sh", "-c", &ask])).contains("from-the-host")
    });
    assert!(ok, "no way out after the restart: {}", env.daemon_log());
    run_ok(&env, &["rm", "-f", "aa"]);
}

#[test]
fn published_udp_ports_come_back_after_a_restart_of_the_shared_slirp4netns() {
    let env = Env::new();
    let Some(host) = host_address(false) else {
        eprintln!("no non-loopback address: skipped");
        return;
    };
    import_udp_image(&env);
    let (u1, u2) = (free_udp_port(), free_udp_port());
    let (p1, p2) = (format!("{u1}:5353/udp"), format!("{u2}:5353/udp"));
    for (name, p) in [("echo1", &p1), ("echo2", &p2)] {
        run_ok(
            &env,
            &[
                "run", "-d", "--name", name, "-p", p, "demo/udp", "udpecho", "5353",
            ],
        );
    }
    let sock = UdpSocket::bind((host, 0)).unwrap();
    for port in [u1, u2] {
        let answer = udp_answer(&sock, host, port);
        assert!(answer.starts_with("from="), "UDP port {port}: {answer:?}");
    }
    let first = slirps(&env);
    assert_eq!(first.len(), 1, "{first:?}");
    let pid: i32 = first[0].split(':').next().unwrap().parse().unwrap();
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        env.eventually(20, || {
            let now = slirps(&env);
            now.len() == 1 && now != first
        }),
        "no new slirp4netns: {:?}",
        slirps(&env)
    );
    // Both containers' ports answer through the new one.
    for port in [u1, u2] {
        let answer = udp_answer(&sock, host, port);
        assert!(
            answer.starts_with(&format!("from={host} ")),
            "UDP port {port} after the restart: {answer:?}: {}",
            env.daemon_log()
        );
    }
    // A container that stops takes its forward along (none of the other's).
    run_ok(&env, &["stop", "-t", "1", "echo1"]);
    assert!(
        UdpSocket::bind(("0.0.0.0", u1)).is_ok(),
        "UDP port {u1} still taken after its container stopped"
    );
    assert!(udp_answer(&sock, host, u2).starts_with("from="));
    run_ok(&env, &["rm", "-f", "echo1", "echo2"]);
    assert!(
        UdpSocket::bind(("0.0.0.0", u2)).is_ok(),
        "UDP port {u2} still taken after its container went"
    );
}

#[test]
fn outside_the_shared_user_namespace_a_container_gets_its_own_slirp4netns() {
    let env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "shared",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "private",
            "--userns",
            "private",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let v = inspect(&env, "private");
    assert_eq!(v["HostConfig"]["NetworkMode"], "slirp4netns", "{v}");
    assert_eq!(v["NetworkSettings"]["IPAddress"], "10.0.2.100", "{v}");
    let why = v["NetworkSettings"]["NetworkReason"]
        .as_str()
        .unwrap_or_default();
    assert!(why.contains("--userns private"), "{v}");
    // The shared one plus the private container's own.
    assert_eq!(slirps(&env).len(), 2, "{:?}", slirps(&env));
    // --host-loopback is a per-container option: a slirp4netns of its own too.
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "lo",
            "--host-loopback",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let v = inspect(&env, "lo");
    assert_eq!(v["HostConfig"]["NetworkMode"], "slirp4netns", "{v}");
    // Asked for explicitly, bridge with --userns private is refused with the fix.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "bridge",
        "--userns",
        "private",
        "demo/busybox",
        "true",
    ]);
    assert!(!out.status.success());
    let err = common::stderr(&out);
    assert!(err.contains("--network slirp4netns"), "{err}");
    run_ok(&env, &["rm", "-f", "shared", "private", "lo"]);
}

#[test]
fn a_dead_monitors_udp_forwards_are_dropped_by_skiffd() {
    let env = Env::new();
    import_udp_image(&env);
    let udp = free_udp_port();
    let publish = format!("127.0.0.1:{udp}:5353/udp");
    run_ok(
        &env,
        &[
            "run", "-d", "--name", "echo", "-p", &publish, "demo/udp", "udpecho", "5353",
        ],
    );
    addr_of(&env, "echo");
    let taken = || UdpSocket::bind(("127.0.0.1", udp)).is_err();
    assert!(
        taken(),
        "the shared slirp4netns does not hold UDP port {udp}"
    );
    // The monitor dies without removing its forward from the shared slirp4netns.
    kill_monitor_of(&env, "echo");
    assert!(
        env.eventually(20, || inspect(&env, "echo")["State"]["Running"] == false),
        "the container still runs after its monitor died"
    );
    assert!(
        env.eventually(10, || !taken()),
        "UDP port {udp} is still forwarded after the container's end: {}",
        env.daemon_log()
    );
    run_ok(&env, &["rm", "-f", "echo"]);
}
