//! Helpers shared by the networking end-to-end tests (included with `#[path]`, so no
//! shared harness file changes): free ports, an HTTP client, the httpd command with a
//! client-address CGI, and the checks that no network helper is left behind.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
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
pub const HTTPD: &str = "mkdir -p /www/cgi-bin && echo hello-from-container > /www/index.html && \
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
        .filter(|p| p.contains("slirp4netns") || p.contains("pasta") || p.contains("passt"))
        .collect::<Vec<_>>();
    left.extend(files_named(&env.runtime(), "slirp4netns"));
    left.extend(files_named(&env.runtime(), "pasta"));
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
