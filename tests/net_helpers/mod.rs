//! Helpers shared by the networking end-to-end tests (included with `#[path]`, so no
//! shared harness file changes): free ports, an HTTP client, the httpd command with a
//! client-address CGI, and the checks that no network helper is left behind.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{stderr, stdout, Env};

/// A port that is free on 127.0.0.1 right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A UDP port that is free on 127.0.0.1 right now.
pub fn free_udp_port() -> u16 {
    UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// One HTTP GET to 127.0.0.1:port, retried until the server answers (or 15 s pass).
pub fn http_get(port: u16, path: &str) -> String {
    http_get_at(IpAddr::V4(Ipv4Addr::LOCALHOST), port, path)
}

/// One HTTP GET to ip:port, retried until the server answers (or 15 s pass). Connecting
/// to an address of this machine makes it the client's address too.
pub fn http_get_at(ip: IpAddr, port: u16, path: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(15);
    let addr = SocketAddr::new(ip, port);
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(addr)?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            write!(
                s,
                "GET {path} HTTP/1.0\r\nHost: localhost\r\nConnection: close\r\n\r\n"
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
            Err(e) if Instant::now() > deadline => panic!("GET {addr}{path}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

/// The client address the container's httpd saw (from its CGI), without the
/// `[::ffff:...]` of an IPv4 client on its dual-stack socket.
pub fn client_seen(cgi: &str) -> String {
    let seen = cgi
        .lines()
        .find_map(|l| l.strip_prefix("client="))
        .unwrap_or_default()
        .trim();
    let seen = seen.trim_start_matches('[').trim_end_matches(']');
    seen.strip_prefix("::ffff:").unwrap_or(seen).to_string()
}

/// An address of this machine that is not a loopback or link-local one (IPv4 or IPv6),
/// e.g. the default route interface's: traffic to it stays on the machine.
pub fn host_address(v6: bool) -> Option<IpAddr> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list freed below.
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cur = head;
    while !cur.is_null() && found.is_none() {
        // SAFETY: a node of the list, not yet freed.
        let ifa = unsafe { &*cur };
        cur = ifa.ifa_next;
        if ifa.ifa_addr.is_null() {
            continue;
        }
        // SAFETY: ifa_addr points to a sockaddr of the family it names.
        let family = i32::from(unsafe { (*ifa.ifa_addr).sa_family });
        let ip = if family == libc::AF_INET && !v6 {
            // SAFETY: an AF_INET address is a sockaddr_in.
            let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
            IpAddr::V4(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)))
        } else if family == libc::AF_INET6 && v6 {
            // SAFETY: an AF_INET6 address is a sockaddr_in6.
            let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
            IpAddr::V6(std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr))
        } else {
            continue;
        };
        let link_local = matches!(ip, IpAddr::V6(a) if (a.segments()[0] & 0xffc0) == 0xfe80)
            || matches!(ip, IpAddr::V4(a) if a.is_link_local());
        // It must be bindable (an IPv6 address still in DAD is not).
        if !ip.is_loopback() && !link_local && TcpListener::bind((ip, 0)).is_ok() {
            found = Some(ip);
        }
    }
    // SAFETY: `head` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(head) };
    found
}

/// Whether the host has IPv6 loopback (`::1`).
pub fn has_ipv6_loopback() -> bool {
    TcpListener::bind("[::1]:0").is_ok()
}

/// A port that is free for TCP on `ip` right now.
pub fn free_port_on(ip: IpAddr) -> u16 {
    TcpListener::bind((ip, 0))
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A first port `p` such that `p..p+n` are all free for TCP and UDP on 127.0.0.1.
pub fn free_port_run(n: u16) -> u16 {
    for _ in 0..200 {
        let p = free_port();
        if p.checked_add(n).is_none() {
            continue;
        }
        let all_free = (p..p + n).all(|q| {
            TcpListener::bind(("127.0.0.1", q)).is_ok() && UdpSocket::bind(("127.0.0.1", q)).is_ok()
        });
        if all_free {
            return p;
        }
    }
    panic!("no run of {n} free ports");
}

/// The shell command that serves /www with busybox httpd, with a CGI printing the
/// client address the server sees.
pub const HTTPD: &str = "mkdir -p /www/cgi-bin && echo hello-from-container > /www/index.html && \
    printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho client=$REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
    chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www";

/// [`HTTPD`] on port 80, plus a second server on port 81 answering `hello-from-81`.
pub const HTTPD_80_81: &str = "mkdir -p /www81 && echo hello-from-81 > /www81/index.html && \
    httpd -p 81 -h /www81 && mkdir -p /www/cgi-bin && echo hello-from-container > /www/index.html && \
    printf '#!/bin/sh\\necho Content-Type: text/plain\\necho\\necho client=$REMOTE_ADDR\\n' > /www/cgi-bin/ip && \
    chmod +x /www/cgi-bin/ip && exec httpd -f -p 80 -h /www";

/// Command lines of live processes that mention `needle` (helpers started for this
/// test's containers carry its temp dir in their arguments).
pub fn processes_mentioning(needle: &str) -> Vec<String> {
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
pub fn files_named(dir: &Path, part: &str) -> Vec<String> {
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

pub fn helpers_left(env: &Env) -> Vec<String> {
    let dir = env.dir.path().to_string_lossy().to_string();
    let mut left = processes_mentioning(&dir)
        .into_iter()
        .filter(|p| {
            // The monitor's children too (its socket factory in the container's
            // namespace has the monitor's command line).
            p.contains("slirp4netns")
                || p.contains("pasta")
                || p.contains("passt")
                || p.contains("__monitor")
        })
        .collect::<Vec<_>>();
    // The shared network's slirp4netns (`bridge`) is skiffd's, not a container's: it
    // stays while skiffd runs (tests/e2e_net_shared.rs checks that it ends with it).
    let shared = env.runtime().join("network").display().to_string();
    left.retain(|p| !p.contains(&shared));
    left.extend(files_named(&env.runtime(), "slirp4netns"));
    left.extend(files_named(&env.runtime(), "pasta"));
    left.retain(|p| !p.starts_with(&shared));
    left
}

/// Waits (up to 10 s) until no helper process or file of this test is left.
pub fn assert_no_helpers_left(env: &Env) {
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

pub fn run_ok(env: &Env, args: &[&str]) -> String {
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

/// The names (`comm`) of the processes holding a TCP socket that listens on `port` on
/// the host (any address), from /proc/net/tcp{,6} and the processes' descriptors.
pub fn tcp_listener_owners(port: u16) -> Vec<String> {
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let text = std::fs::read_to_string(table).unwrap_or_default();
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let Some(local_port) = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
            else {
                continue;
            };
            // State 0A: LISTEN.
            if local_port == port && f.get(3) == Some(&"0A") {
                if let Some(inode) = f.get(9) {
                    inodes.push(format!("socket:[{inode}]"));
                }
            }
        }
    }
    let mut owners = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(fds) = std::fs::read_dir(e.path().join("fd")) else {
            continue;
        };
        let holds = fds.flatten().any(|fd| {
            std::fs::read_link(fd.path())
                .is_ok_and(|l| inodes.iter().any(|i| l.as_os_str() == i.as_str()))
        });
        if holds {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            owners.push(comm.trim().to_string());
        }
    }
    owners.sort();
    owners.dedup();
    owners
}

/// A tiny UDP echo server in C, linked statically (the busybox image has no UDP server):
/// it answers each datagram with `from=ADDR data=PAYLOAD`, on a dual-stack socket (an
/// IPv4 client shows as plain IPv4). Each argument is a port to serve.
pub const UDP_ECHO_C: &str = r#"
#include <arpa/inet.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
int main(int argc, char **argv) {
    struct pollfd fds[8];
    int n = 0;
    for (int i = 1; i < argc && n < 8; i++) {
        int s = socket(AF_INET6, SOCK_DGRAM, 0), off = 0;
        struct sockaddr_in6 a;
        memset(&a, 0, sizeof a);
        a.sin6_family = AF_INET6;
        a.sin6_addr = in6addr_any;
        a.sin6_port = htons(atoi(argv[i]));
        setsockopt(s, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof off);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0) { perror("bind"); return 1; }
        fds[n].fd = s;
        fds[n].events = POLLIN;
        n++;
    }
    for (;;) {
        if (poll(fds, n, -1) < 0) continue;
        for (int i = 0; i < n; i++) {
            if (!(fds[i].revents & POLLIN)) continue;
            char in[2048], out[2200], addr[INET6_ADDRSTRLEN];
            struct sockaddr_in6 from;
            socklen_t len = sizeof from;
            ssize_t got = recvfrom(fds[i].fd, in, sizeof in - 1, 0, (struct sockaddr *)&from, &len);
            if (got < 0) continue;
            in[got] = 0;
            inet_ntop(AF_INET6, &from.sin6_addr, addr, sizeof addr);
            const char *shown = strncmp(addr, "::ffff:", 7) == 0 ? addr + 7 : addr;
            int m = snprintf(out, sizeof out, "from=%s data=%s", shown, in);
            sendto(fds[i].fd, out, m, 0, (struct sockaddr *)&from, len);
        }
    }
}
"#;

/// Imports `demo/udp`: the busybox image plus /bin/udpecho, built with the host's cc.
pub fn import_udp_image(env: &Env) {
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
    crate::common::write_busybox_tar(&tar, &[("bin/udpecho", 0, 0, 0o755, &bin)]);
    run_ok(env, &["image", "import", tar.to_str().unwrap(), "demo/udp"]);
}

/// (pid, parent pid, command line) of every process.
pub fn processes() -> Vec<(i32, i32, String)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if f.first() == Some(&"Z") {
            continue;
        }
        let ppid = f.get(1).and_then(|p| p.parse().ok()).unwrap_or(0);
        let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        out.push((pid, ppid, String::from_utf8_lossy(&cmd).replace('\0', " ")));
    }
    out
}

/// The slirp4netns processes started for this test (by its holder or its monitors).
pub fn slirps(env: &Env) -> Vec<String> {
    let dir = env.dir.path().to_string_lossy().to_string();
    let all = processes();
    all.iter()
        .filter(|(_, ppid, cmd)| {
            cmd.starts_with("slirp4netns ")
                && all.iter().any(|(p, _, c)| p == ppid && c.contains(&dir))
        })
        .map(|(pid, _, cmd)| format!("{pid}: {cmd}"))
        .collect()
}

/// The answer of the UDP echo server at `host`:`port` to a datagram from `sock`
/// (within 20 tries of 2 s), "" if none.
pub fn udp_answer(sock: &UdpSocket, host: std::net::IpAddr, port: u16) -> String {
    sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    for _ in 0..20 {
        let _ = sock.send_to(b"hi\n", (host, port));
        let mut buf = [0u8; 256];
        if let Ok((n, _)) = sock.recv_from(&mut buf) {
            return String::from_utf8_lossy(&buf[..n]).to_string();
        }
    }
    String::new()
}

/// Kills the monitor of container `name` with SIGKILL (a monitor's crash: it removes
/// nothing it set up); returns its pid.
pub fn kill_monitor_of(env: &Env, name: &str) -> i32 {
    let monitor = env.inspect(name)["State"]["MonitorPid"].as_i64().unwrap() as i32;
    // SAFETY: kill(2) of the monitor of this test's container.
    unsafe { libc::kill(monitor, libc::SIGKILL) };
    monitor
}
