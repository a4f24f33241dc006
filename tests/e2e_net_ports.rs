//! End to end: published ports beyond the basics — the client's real address, `-P`,
//! port ranges and IPv6 host addresses — with the real slirp4netns and pasta, as the
//! unprivileged user. Clients connect to addresses of this machine only (loopback, or
//! the machine's own non-loopback address, which the kernel routes locally): no packet
//! leaves the machine.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::net::{IpAddr, Ipv6Addr, TcpStream};

use common::{stderr, Env};
use net_helpers::*;

const NETWORKS: [&str; 2] = ["slirp4netns", "pasta"];

/// Runs `demo/busybox sh -c script` detached as `name` with `--network network` (none
/// for `default`: skiffd's default), `extra`.
fn run_server(env: &Env, name: &str, network: &str, extra: &[&str], script: &str) {
    let mut args = vec!["run", "-d", "--name", name];
    if network != "default" {
        args.extend(["--network", network]);
    }
    args.extend(extra);
    args.extend(["demo/busybox", "sh", "-c", script]);
    run_ok(env, &args);
}

#[test]
fn the_server_sees_the_clients_real_address() {
    let Some(addr) = host_address(false) else {
        eprintln!("SKIPPED: this machine has no non-loopback IPv4 address to connect from");
        return;
    };
    let env = Env::new();
    // skiffd's default (pasta where it works) first: `-p HOST:CTR`, the default form.
    for network in ["default", "slirp4netns", "pasta"] {
        let port = free_port_on(addr);
        let publish = format!("{port}:80");
        run_server(&env, "web", network, &["-p", &publish], HTTPD);
        // The kernel gives a connection to one of the machine's own addresses that
        // address as its source: the client is `addr`, not loopback.
        let cgi = http_get_at(addr, port, "/cgi-bin/ip");
        assert_eq!(
            client_seen(&cgi),
            addr.to_string(),
            "{network}: the server did not see the client's address {addr}: {cgi}"
        );
        run_ok(&env, &["rm", "-f", "web"]);
        assert_no_helpers_left(&env);
    }
}

#[test]
fn slirp4netns_relays_tcp_ports_and_keeps_the_clients_address() {
    let env = Env::new();
    let all = free_port();
    let lo = free_port();
    let host = host_service();
    let (p_all, p_lo) = (format!("{all}:80"), format!("127.0.0.1:{lo}:80"));
    let extra = ["--host-loopback", "-p", &p_all, "-p", &p_lo];
    run_server(&env, "web", "slirp4netns", &extra, HTTPD);
    // Both go through the monitor's splice relay, not slirp4netns's userspace stack.
    for port in [all, lo] {
        let page = http_get(port, "/");
        assert!(page.contains("hello-from-container"), "{page}");
        assert_eq!(
            tcp_listener_owners(port),
            ["skiff-monitor"],
            "who listens on port {port}"
        );
    }
    // A loopback client appears as the gateway (as slirp4netns shows the host), never
    // as a loopback address (services trust those) nor as the container's own.
    for port in [all, lo] {
        let cgi = http_get(port, "/cgi-bin/ip");
        assert_eq!(client_seen(&cgi), "10.0.2.2", "port {port}: {cgi}");
    }
    if let Some(addr) = host_address(false) {
        let cgi = http_get_at(addr, all, "/cgi-bin/ip");
        assert_eq!(client_seen(&cgi), addr.to_string(), "{cgi}");
    } else {
        eprintln!("no non-loopback IPv4 address here: only loopback clients were tested");
    }
    // The container's own outgoing connections still work (to the host's loopback
    // through the gateway, allowed by --host-loopback).
    let ask = format!("echo GET / | timeout 5 nc -w 3 10.0.2.2 {host}");
    let out = run_ok(&env, &["exec", "web", "sh", "-c", &ask]);
    assert!(out.contains("host-secret"), "{out}");
    run_ok(&env, &["rm", "-f", "web"]);
    assert_no_helpers_left(&env);
}

/// The relay's fallback, made to happen for real: the kernel refuses a policy rule whose
/// source port range ends at 65535 (a fib rule's port range must end below 0xffff), so
/// publishing container port 65535 makes the routing that keeps clients' addresses
/// fail (see `netns::rtnl`). The port on all addresses then goes through slirp4netns's
/// `add_hostfwd`, with a warning, and still works; the loopback one stays with the
/// monitor's relay (it needs no routing).
#[test]
fn ports_fall_back_to_slirp4netns_when_the_answers_routing_fails() {
    let env = Env::new();
    let (all, lo) = (free_port(), free_port());
    let (p_all, p_lo) = (format!("{all}:65535"), format!("127.0.0.1:{lo}:65535"));
    let server = HTTPD.replace("-p 80", "-p 65535");
    run_server(
        &env,
        "web",
        "slirp4netns",
        &["-p", &p_all, "-p", &p_lo],
        &server,
    );
    for port in [all, lo] {
        let page = http_get(port, "/");
        assert!(page.contains("hello-from-container"), "port {port}: {page}");
    }
    assert_eq!(
        tcp_listener_owners(all),
        ["slirp4netns"],
        "who listens on {all}"
    );
    assert_eq!(
        tcp_listener_owners(lo),
        ["skiff-monitor"],
        "who listens on {lo}"
    );
    let log = env.daemon_log();
    assert!(
        log.contains("published ports: adding the routing of the answers")
            && log.contains("slirp4netns forwards them (slower)"),
        "no warning about the fallback:\n{log}"
    );
    run_ok(&env, &["rm", "-f", "web"]);
    assert_no_helpers_left(&env);
}

/// A one-line HTTP service on the host's loopback; returns its port.
fn host_service() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            use std::io::{Read, Write};
            let mut buf = [0u8; 1024];
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"HTTP/1.0 200 OK\r\n\r\nhost-secret\n");
        }
    });
    port
}

#[test]
fn every_port_form_works_with_the_default_network() {
    let env = Env::new();
    let all = free_port();
    let lo = free_port();
    let range = free_port_run(2);
    let mut args = vec![
        format!("{all}:80"),                    // all addresses, the default form
        format!("127.0.0.1:{lo}:81"),           // a loopback host address
        "127.0.0.1::80".to_string(),            // a loopback address, the port chosen
        "81".to_string(),                       // all addresses, the port chosen
        format!("{range}-{}:80-81", range + 1), // a range, one forward per port
    ];
    let v6 = has_ipv6_loopback();
    let lo6 = free_port();
    if v6 {
        args.push(format!("[::1]:{lo6}:80")); // an IPv6 host address
    }
    let mut extra = Vec::new();
    for a in &args {
        extra.extend(["-p", a.as_str()]);
    }
    run_server(&env, "forms", "default", &extra, HTTPD_80_81);
    let listed = run_ok(&env, &["port", "forms"]);
    let chosen = |ctr: &str, ip: &str, not: &[u16]| -> u16 {
        listed
            .lines()
            .filter_map(|l| l.strip_prefix(&format!("{ctr} -> {ip}:")))
            .filter_map(|p| p.trim().parse::<u16>().ok())
            .find(|p| !not.contains(p))
            .unwrap_or_else(|| panic!("no {ctr} on {ip} in `skiff port`: {listed}"))
    };
    let lo_chosen = chosen("80/tcp", "127.0.0.1", &[]);
    let all_chosen = chosen("81/tcp", "0.0.0.0", &[range + 1]);
    let body80 = "hello-from-container";
    let body81 = "hello-from-81";
    let mut cases = vec![
        (IpAddr::from([127, 0, 0, 1]), all, body80),
        (IpAddr::from([127, 0, 0, 1]), lo, body81),
        (IpAddr::from([127, 0, 0, 1]), lo_chosen, body80),
        (IpAddr::from([127, 0, 0, 1]), all_chosen, body81),
        (IpAddr::from([127, 0, 0, 1]), range, body80),
        (IpAddr::from([127, 0, 0, 1]), range + 1, body81),
    ];
    if v6 {
        cases.push((IpAddr::V6(Ipv6Addr::LOCALHOST), lo6, body80));
    }
    if let Some(addr) = host_address(false) {
        // The all-addresses forms answer on the machine's own address too.
        cases.push((addr, all, body80));
        cases.push((addr, all_chosen, body81));
    }
    for (ip, port, body) in cases {
        let page = http_get_at(ip, port, "/");
        assert!(page.contains(body), "{ip} port {port}: {page}\n{listed}");
    }
    let v = env.inspect("forms");
    assert_eq!(
        v["HostConfig"]["PortBindings"]["80/tcp"]
            .as_array()
            .map(Vec::len),
        Some(if v6 { 4 } else { 3 }),
        "{v}"
    );
    run_ok(&env, &["rm", "-f", "forms"]);
    assert_no_helpers_left(&env);
    for port in [all, lo, range] {
        assert!(
            TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers after rm"
        );
    }
}

#[test]
fn publish_all_puts_exposed_ports_on_free_host_ports() {
    let env = Env::new();
    for network in NETWORKS {
        run_server(
            &env,
            "all",
            network,
            &["-P", "--expose", "80", "--expose", "81/tcp"],
            HTTPD_80_81,
        );
        let listed = run_ok(&env, &["port", "all"]);
        let mut found = Vec::new();
        for (ctr, body) in [
            ("80/tcp", "hello-from-container"),
            ("81/tcp", "hello-from-81"),
        ] {
            let line = listed
                .lines()
                .find(|l| l.starts_with(&format!("{ctr} -> 0.0.0.0:")))
                .unwrap_or_else(|| panic!("{network}: no {ctr} in `skiff port`: {listed}"));
            let port: u16 = line.rsplit(':').next().unwrap().parse().unwrap();
            assert_ne!(port, 0, "{line}");
            assert!(
                http_get(port, "/").contains(body),
                "{network}: {ctr} on host port {port}"
            );
            found.push(port);
        }
        assert_ne!(found[0], found[1], "{listed}");
        let v = env.inspect("all");
        assert_eq!(v["HostConfig"]["PublishAllPorts"], true, "{v}");
        assert_eq!(
            v["NetworkSettings"]["Ports"]["81/tcp"][0]["HostPort"],
            found[1].to_string()
        );
        run_ok(&env, &["rm", "-f", "all"]);
        assert_no_helpers_left(&env);
        assert!(
            TcpStream::connect(("127.0.0.1", found[0])).is_err(),
            "{network}: port {} still answers after rm",
            found[0]
        );
    }
}

#[test]
fn port_ranges_publish_one_port_each() {
    let env = Env::new();
    for network in NETWORKS {
        let p = free_port_run(2);
        let publish = format!("127.0.0.1:{p}-{}:80-81", p + 1);
        run_server(&env, "range", network, &["-p", &publish], HTTPD_80_81);
        assert!(
            http_get(p, "/").contains("hello-from-container"),
            "{network}"
        );
        assert!(http_get(p + 1, "/").contains("hello-from-81"), "{network}");
        assert_eq!(
            run_ok(&env, &["port", "range"]),
            format!("80/tcp -> 127.0.0.1:{p}\n81/tcp -> 127.0.0.1:{}\n", p + 1),
            "{network}"
        );
        let ps = run_ok(&env, &["ps"]);
        assert!(
            ps.contains(&format!("127.0.0.1:{p}->80/tcp"))
                && ps.contains(&format!("127.0.0.1:{}->81/tcp", p + 1)),
            "{ps}"
        );
        run_ok(&env, &["rm", "-f", "range"]);
        assert_no_helpers_left(&env);
    }
    // A host range for one container port takes its first free port.
    let holder = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = holder.local_addr().unwrap().port();
    let publish = format!("127.0.0.1:{busy}-{}:80", busy + 1);
    run_server(&env, "first-free", "slirp4netns", &["-p", &publish], HTTPD);
    assert_eq!(
        run_ok(&env, &["port", "first-free", "80"]).trim(),
        format!("127.0.0.1:{}", busy + 1)
    );
    assert!(http_get(busy + 1, "/").contains("hello-from-container"));
    run_ok(&env, &["rm", "-f", "first-free"]);
    // Ranges of different lengths are refused before anything runs.
    let out = env.skiff(&[
        "run",
        "--rm",
        "-p",
        "8000-8001:80-82",
        "demo/busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("differ in length") && err.contains("8000-8001"),
        "{err}"
    );
    let out = env.skiff(&["run", "--rm", "-p", "82-80", "demo/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("must not exceed"), "{}", stderr(&out));
    assert_no_helpers_left(&env);
}

/// `-p [ip]:port:80` for an IPv6 `ip` serves a real client; returns what the server saw.
fn published_on_ipv6(env: &Env, network: &str, ip: IpAddr) -> String {
    let port = free_port_on(ip);
    let publish = format!("[{ip}]:{port}:80");
    run_server(env, "v6", network, &["-p", &publish], HTTPD);
    let page = http_get_at(ip, port, "/");
    assert!(page.contains("hello-from-container"), "{network}: {page}");
    assert_eq!(
        run_ok(env, &["port", "v6"]).trim(),
        format!("80/tcp -> [{ip}]:{port}"),
        "{network}"
    );
    let seen = client_seen(&http_get_at(ip, port, "/cgi-bin/ip"));
    run_ok(env, &["rm", "-f", "v6"]);
    assert_no_helpers_left(env);
    assert!(
        TcpStream::connect((ip, port)).is_err(),
        "{network}: [{ip}]:{port} still answers after rm"
    );
    seen
}

#[test]
fn ipv6_host_addresses_are_published() {
    if !has_ipv6_loopback() {
        eprintln!("SKIPPED: this machine has no IPv6 loopback (::1)");
        return;
    }
    let env = Env::new();
    let lo = IpAddr::V6(Ipv6Addr::LOCALHOST);
    // slirp4netns forwards IPv4 only: skiff's monitor relays the IPv6 address into the
    // container's IPv4 namespace, which shows an IPv6 client as the gateway.
    assert_eq!(published_on_ipv6(&env, "slirp4netns", lo), "10.0.2.2");
    // pasta forwards IPv6 itself; a loopback client is spliced to the container's own
    // loopback.
    assert_eq!(published_on_ipv6(&env, "pasta", lo), "::1");
    if let Some(addr) = host_address(true) {
        // A non-loopback IPv6 client keeps its address through pasta.
        assert_eq!(published_on_ipv6(&env, "pasta", addr), addr.to_string());
        assert_eq!(published_on_ipv6(&env, "slirp4netns", addr), "10.0.2.2");
    } else {
        eprintln!("no non-loopback IPv6 address here: only ::1 was tested");
    }
    // IPv6 UDP through slirp4netns is refused with the way out.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "slirp4netns",
        "-p",
        "[::1]:9999:53/udp",
        "demo/busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("--network pasta"), "{}", stderr(&out));
    assert_no_helpers_left(&env);
}
