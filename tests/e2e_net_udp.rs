//! End to end: published UDP ports through the real slirp4netns and pasta, as the
//! unprivileged user, with a host client on 127.0.0.1.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::net::UdpSocket;
use std::time::{Duration, Instant};

use common::{stderr, Env};
use net_helpers::*;

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
