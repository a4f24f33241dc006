//! End to end: container networking with the real slirp4netns and pasta, as the
//! unprivileged user. Traffic only goes to 127.0.0.1 on the host or into the container's
//! own namespaces; no name is resolved and no packet leaves the machine.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use common::{stderr, stdout, Env};

/// A port that is free on 127.0.0.1 right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port that is free on 127.0.0.1 right now.
fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET to 127.0.0.1:port, retried until the server answers (or 15 s pass).
fn http_get(port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
            )?;
            let mut out = String::new();
            s.read_to_string(&mut out)?;
            if out.is_empty() {
                return Err(std::io::Error::other("empty answer"));
            }
            Ok(out)
        })();
        match attempt {
            Ok(body) => return body,
            Err(e) if Instant::now() > deadline => panic!("GET 127.0.0.1:{port}{path}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The shell command that serves /www with busybox httpd, with a CGI printing the
/// client address the server sees.
const HTTPD: &str = "mkdir -p /www/cgi-bin && echo hello-from-container > /www/index.html && \
    printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho client=$REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
    chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www";

/// Command lines of live processes that mention `needle` (helpers started for this
/// test's containers carry its temp dir in their arguments).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = e.file_name().to_string_lossy().to_string();
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let mut cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
        // slirp4netns runs in the bundle directory (its socket path is relative).
        if let Ok(cwd) = std::fs::read_link(e.path().join("cwd")) {
            cmd.push_str(&format!(" (in {})", cwd.display()));
        }
        let state = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'));
        if cmd.contains(needle) && !zombie {
            out.push(format!("{name}: {cmd}"));
        }
    }
    out
}

/// Files below `dir` whose names contain `part`.
fn files_named(dir: &Path, part: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.file_name().to_string_lossy().contains(part) {
                out.push(p.display().to_string());
            }
        }
    }
    out
}

fn helpers_left(env: &Env) -> Vec<String> {
    let dir = env.dir.path().to_string_lossy().to_string();
    let mut left = processes_mentioning(&dir)
        .into_iter()
        .filter(|p| p.contains("slirp4netns") || p.contains("pasta") || p.contains("passt"))
        .collect::<Vec<_>>();
    left.extend(files_named(&env.runtime(), "slirp4netns"));
    left.extend(files_named(&env.runtime(), "pasta"));
    left
}

/// Waits (up to 10 s) until no helper process or file of this test is left.
fn assert_no_helpers_left(env: &Env) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left = helpers_left(env);
        if left.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "left behind: {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn run_ok(env: &Env, args: &[&str]) -> String {
    let out = env.skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed ({}): {}{}\n{}",
        out.status,
        stdout(&out),
        stderr(&out),
        env.daemon_log()
    );
    stdout(&out)
}

/// A published TCP port reaches the container's server from a real host client;
/// `port`, `ps` and `inspect` show it; stopping leaves no helper behind.
fn published_tcp_port(network: &str, expected_client: &str) {
    let env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            network,
            "-p",
            &publish,
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let page = http_get(port, "/");
    assert!(page.contains("hello-from-container"), "{page}");
    let cgi = http_get(port, "/cgi-bin/ip");
    // busybox httpd listens on IPv6: an IPv4 client shows as [::ffff:A.B.C.D].
    let seen = cgi
        .lines()
        .find_map(|l| l.strip_prefix("client="))
        .unwrap_or_default();
    assert!(
        seen.trim_end_matches(']').ends_with(expected_client),
        "the server saw {seen:?}: {cgi}"
    );
    assert_eq!(
        run_ok(&env, &["port", "web"]).trim(),
        format!("80/tcp -> 127.0.0.1:{port}")
    );
    assert_eq!(
        run_ok(&env, &["port", "web", "80"]).trim(),
        format!("127.0.0.1:{port}")
    );
    let ps = run_ok(&env, &["ps"]);
    assert!(ps.contains("PORTS"), "{ps}");
    assert!(ps.contains(&format!("127.0.0.1:{port}->80/tcp")), "{ps}");
    let v: serde_json::Value = serde_json::from_str(&run_ok(&env, &["inspect", "web"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["NetworkMode"], network);
    assert_eq!(
        v[0]["NetworkSettings"]["Ports"]["80/tcp"][0]["HostPort"],
        port.to_string()
    );
    assert_eq!(
        v[0]["HostConfig"]["PortBindings"]["80/tcp"][0]["HostIp"],
        "127.0.0.1"
    );
    assert!(
        !helpers_left(&env).is_empty(),
        "no {network} helper is running"
    );
    run_ok(&env, &["rm", "-f", "web"]);
    assert_no_helpers_left(&env);
    assert!(
        TcpStream::connect(("127.0.0.1", port)).is_err(),
        "port {port} still answers after the container stopped"
    );
}

#[test]
fn slirp4netns_publishes_tcp_ports() {
    // libslirp shows a client on the host's loopback as the host's alias 10.0.2.2 (a
    // non-loopback client keeps its address: see slirp4netns_keeps_client_address).
    published_tcp_port("slirp4netns", "10.0.2.2");
}

#[test]
fn pasta_publishes_tcp_ports() {
    published_tcp_port("pasta", "127.0.0.1");
}

#[test]
fn slirp4netns_is_the_default_and_none_has_only_loopback() {
    let env = Env::new();
    let out = run_ok(&env, &["run", "--rm", "demo/busybox", "ip", "-o", "link"]);
    assert!(out.contains("tap0"), "{out}");
    let out = run_ok(
        &env,
        &["run", "--rm", "demo/busybox", "ip", "-o", "-4", "addr"],
    );
    assert!(out.contains("10.0.2.100/24"), "{out}");
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "demo/busybox",
            "ip",
            "-o",
            "link",
        ],
    );
    let links: Vec<&str> = out
        .lines()
        .filter_map(|l| l.split(':').nth(1))
        .map(str::trim)
        .collect();
    assert_eq!(links, vec!["lo"], "{out}");
    assert!(out.contains("UP") || out.contains("LOOPBACK,UP"), "{out}");
    assert_no_helpers_left(&env);
}

#[test]
fn daemon_flag_sets_the_default_network() {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--network", "none"]);
    let tar = env.busybox_tar();
    run_ok(
        &env,
        &["image", "import", tar.to_str().unwrap(), "demo/busybox"],
    );
    let out = run_ok(&env, &["run", "--rm", "demo/busybox", "ip", "-o", "link"]);
    assert!(!out.contains("tap0"), "{out}");
    let out = env.skiff(&["run", "--rm", "-p", "80", "demo/busybox", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("network mode"), "{}", stderr(&out));
}

#[test]
fn host_mode_sees_the_host_interfaces() {
    let env = Env::new();
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "host",
            "demo/busybox",
            "ls",
            "/sys/class/net",
        ],
    );
    let mut inside: Vec<&str> = out.split_whitespace().collect();
    inside.sort();
    let mut host: Vec<String> = std::fs::read_dir("/sys/class/net")
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().to_string())
        .collect();
    host.sort();
    assert_eq!(inside, host);
}

#[test]
fn a_host_port_in_use_fails_the_start_cleanly() {
    let env = Env::new();
    let holder = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    for network in ["slirp4netns", "pasta"] {
        let publish = format!("127.0.0.1:{port}:80");
        let out = env.skiff(&[
            "run",
            "--network",
            network,
            "-p",
            &publish,
            "demo/busybox",
            "true",
        ]);
        assert_eq!(out.status.code(), Some(125), "{network}: {}", stderr(&out));
        let err = stderr(&out);
        assert!(
            err.contains("already in use") && err.contains(&port.to_string()),
            "{network}: {err}"
        );
        assert_no_helpers_left(&env);
    }
    // Ports below net.ipv4.ip_unprivileged_port_start say how to allow them.
    let start: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if start > 1 && unsafe { libc::geteuid() } != 0 {
        let publish = format!("127.0.0.1:{}:80", start - 1);
        let out = env.skiff(&["run", "--rm", "-p", &publish, "demo/busybox", "true"]);
        assert_eq!(out.status.code(), Some(125));
        assert!(
            stderr(&out).contains("ip_unprivileged_port_start"),
            "{}",
            stderr(&out)
        );
    }
    drop(holder);
}

#[test]
fn free_host_ports_are_chosen_for_container_only_ports() {
    let env = Env::new();
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            "127.0.0.1::80",
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    let line = run_ok(&env, &["port", "web", "80/tcp"]);
    let port: u16 = line.trim().rsplit(':').next().unwrap().parse().unwrap();
    assert!(port > 0, "{line}");
    assert!(http_get(port, "/").contains("hello-from-container"));
    run_ok(&env, &["rm", "-f", "web"]);
    assert_no_helpers_left(&env);
}

/// Serves one fixed HTTP answer per connection on 127.0.0.1 (a "host service").
fn host_service() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\n\r\nhost-secret\n");
        }
    });
    port
}

#[test]
fn host_loopback_is_closed_by_default_and_opens_with_the_option() {
    let env = Env::new();
    let port = host_service();
    // busybox's static wget crashes without NSS modules; nc speaks the one request.
    let ask = |host: &str| format!("echo GET / | nc -w 3 {host} {port}; echo nc-exit=$?");
    let out = run_ok(
        &env,
        &["run", "--rm", "demo/busybox", "sh", "-c", &ask("10.0.2.2")],
    );
    assert!(!out.contains("host-secret"), "reached the host: {out}");
    assert!(!out.contains("nc-exit=0"), "{out}");
    // With the option: 10.0.2.2 is the host's loopback, named in /etc/hosts.
    let script = format!(
        "grep host.containers.internal /etc/hosts; {}",
        ask("10.0.2.2")
    );
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--host-loopback",
            "demo/busybox",
            "sh",
            "-c",
            &script,
        ],
    );
    assert!(out.contains("10.0.2.2\thost.containers.internal"), "{out}");
    assert!(out.contains("host-secret"), "{out}");
    // pasta: without the option the host's bound ports are not forwarded into the
    // container's loopback (pasta's default would).
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "pasta",
            "demo/busybox",
            "sh",
            "-c",
            &ask("127.0.0.1"),
        ],
    );
    assert!(!out.contains("host-secret"), "reached the host: {out}");
    assert_no_helpers_left(&env);
}

#[test]
fn resolv_conf_hosts_and_hostname_are_generated() {
    let env = Env::new();
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "-h",
            "box1",
            "--add-host",
            "db:192.0.2.7",
            "demo/busybox",
            "cat",
            "/etc/resolv.conf",
            "/etc/hosts",
            "/etc/hostname",
        ],
    );
    assert!(out.contains("nameserver 10.0.2.3\n"), "{out}");
    assert!(out.contains("127.0.0.1\tlocalhost\n"), "{out}");
    assert!(out.contains("10.0.2.100\tbox1\n"), "{out}");
    assert!(out.contains("192.0.2.7\tdb\n"), "{out}");
    assert!(out.ends_with("box1\n"), "{out}");
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--dns",
            "192.0.2.53",
            "--dns-search",
            "example.test",
            "--dns-option",
            "ndots:3",
            "demo/busybox",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    assert!(out.contains("nameserver 192.0.2.53\n"), "{out}");
    assert!(!out.contains("10.0.2.3"), "{out}");
    assert!(out.contains("search example.test\n"), "{out}");
    assert!(out.contains("options ndots:3\n"), "{out}");
    // pasta: the host's (non-loopback) servers.
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    let out = run_ok(
        &env,
        &[
            "run",
            "--rm",
            "--network",
            "pasta",
            "demo/busybox",
            "cat",
            "/etc/resolv.conf",
        ],
    );
    for line in host.lines().filter(|l| l.starts_with("nameserver")) {
        let addr = line.split_whitespace().nth(1).unwrap_or("");
        if !addr.starts_with("127.") && addr != "::1" {
            assert!(out.contains(line), "{line} missing: {out}");
        }
    }
    // Bad values are refused before anything runs.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--add-host",
        "nocolon",
        "demo/busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(stderr(&out).contains("add-host"), "{}", stderr(&out));
}

/// A tiny UDP echo server in C, linked statically (the busybox image has no UDP server):
/// it answers each datagram with `from=ADDR data=PAYLOAD`.
const UDP_ECHO_C: &str = r#"
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    int s = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in a = {0};
    a.sin_family = AF_INET;
    a.sin_port = htons(argc > 1 ? atoi(argv[1]) : 5353);
    if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
    for (;;) {
        char in[2048], out[2200];
        struct sockaddr_in from;
        socklen_t len = sizeof from;
        ssize_t n = recvfrom(s, in, sizeof in - 1, 0, (struct sockaddr *)&from, &len);
        if (n < 0) continue;
        in[n] = 0;
        int m = snprintf(out, sizeof out, "from=%s data=%s", inet_ntoa(from.sin_addr), in);
        sendto(s, out, m, 0, (struct sockaddr *)&from, len);
    }
}
"#;

/// Imports `demo/udp`: the busybox image plus /bin/udpecho, built with the host's cc.
fn import_udp_image(env: &Env) {
    let dir = env.dir.path();
    std::fs::write(dir.join("udpecho.c"), UDP_ECHO_C).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("udpecho"))
        .arg(dir.join("udpecho.c"))
        .output()
        .expect("cc (needed by cargo anyway) runs");
    assert!(cc.status.success(), "cc: {}", stderr(&cc));
    let bin = std::fs::read(dir.join("udpecho")).unwrap();
    let tar = dir.join("udp.tar");
    common::write_busybox_tar(&tar, &[("bin/udpecho", 0, 0, 0o755, &bin)]);
    run_ok(env, &["image", "import", tar.to_str().unwrap(), "demo/udp"]);
}

/// Sends datagrams to 127.0.0.1:port until one is answered (or 15 s pass).
fn udp_ask(port: u16, payload: &str) -> String {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    sock.connect(("127.0.0.1", port)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut buf = [0u8; 2048];
    while Instant::now() < deadline {
        let _ = sock.send(payload.as_bytes());
        if let Ok(n) = sock.recv(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).to_string();
        }
    }
    panic!("no answer from 127.0.0.1:{port}/udp");
}

/// A published UDP port answers a host client. `same_port`: the container listens on the
/// host port's number; `extra`: more `run` flags.
fn published_udp_port(network: &str, extra: &[&str], same_port: bool, expected_client: &str) {
    let env = Env::new();
    import_udp_image(&env);
    let port = free_udp_port();
    let ctr_port = if same_port { port } else { 5353 };
    let publish = format!("127.0.0.1:{port}:{ctr_port}/udp");
    let ctr = ctr_port.to_string();
    let mut args = vec![
        "run",
        "-d",
        "--name",
        "echo",
        "--network",
        network,
        "-p",
        &publish,
    ];
    args.extend(extra);
    args.extend(["demo/udp", "udpecho", &ctr]);
    run_ok(&env, &args);
    let answer = udp_ask(port, "ping");
    assert!(answer.contains("data=ping"), "{answer}");
    assert!(
        answer.starts_with(&format!("from={expected_client} ")),
        "the server saw: {answer}"
    );
    assert_eq!(
        run_ok(&env, &["port", "echo"]).trim(),
        format!("{ctr_port}/udp -> 127.0.0.1:{port}")
    );
    run_ok(&env, &["rm", "-f", "echo"]);
    assert_no_helpers_left(&env);
}

#[test]
fn slirp4netns_publishes_udp_ports() {
    // libslirp shows a loopback client as 10.0.2.2 and, under --disable-host-loopback,
    // drops the datagrams the container sends back to that address: UDP answers reach a
    // loopback client only with host loopback allowed (TCP is not affected).
    published_udp_port("slirp4netns", &["--host-loopback"], false, "10.0.2.2");
}

#[test]
fn pasta_publishes_udp_ports() {
    // pasta 2023.03 (Debian 12) loses UDP answers to loopback clients when the host and
    // container ports differ, so this test keeps them equal.
    published_udp_port("pasta", &[], true, "127.0.0.1");
}

#[test]
fn the_helper_survives_a_daemon_restart_and_ends_with_its_container() {
    let mut env = Env::new();
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &publish,
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    assert!(http_get(port, "/").contains("hello-from-container"));
    let v: serde_json::Value = serde_json::from_str(&run_ok(&env, &["inspect", "web"])).unwrap();
    let pid = v[0]["State"]["Pid"].as_i64().unwrap() as i32;
    // The helper is the monitor's child, not the daemon's.
    env.stop_daemon();
    assert!(http_get(port, "/").contains("hello-from-container"));
    env.start_daemon();
    assert!(http_get(port, "/").contains("hello-from-container"));
    // When the container ends, so does the helper, with its socket and log.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert_no_helpers_left(&env);
}
