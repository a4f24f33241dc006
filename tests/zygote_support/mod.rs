//! Shared by the zygote's test files (e2e_zygote, e2e_zygote_faults): skiffd's children,
//! its zygotes, a monitor's mappings, a detached sleeper, a skiffd started by hand.
#![allow(dead_code)]

use std::collections::BTreeMap;

use super::common::{self, entries, stderr, Env};

/// `/proc/PID/stat`'s state and parent (None when the process is gone).
pub fn state_and_ppid(pid: u32) -> Option<(char, u32)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let mut rest = stat.rsplit(')').next()?.split_whitespace();
    let state = rest.next()?.chars().next()?;
    Some((state, rest.next()?.parse().ok()?))
}

pub fn comm(pid: u32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .unwrap_or_default()
        .trim_end()
        .to_string()
}

/// The children of `parent`, with their states.
pub fn children(parent: u32) -> Vec<(u32, char)> {
    entries(std::path::Path::new("/proc"))
        .iter()
        .filter_map(|p| p.parse::<u32>().ok())
        .filter_map(|p| match state_and_ppid(p) {
            Some((s, pp)) if pp == parent => Some((p, s)),
            _ => None,
        })
        .collect()
}

/// The live monitor zygotes that are `daemon`'s children.
pub fn zygotes(daemon: u32) -> Vec<u32> {
    children(daemon)
        .into_iter()
        .filter(|(p, s)| *s != 'Z' && comm(*p) == "skiff-zygote")
        .map(|(p, _)| p)
        .collect()
}

/// The one zygote of `daemon`.
pub fn zygote(env: &Env, daemon: u32) -> u32 {
    let z = zygotes(daemon);
    assert_eq!(z.len(), 1, "skiffd's zygotes: {z:?}\n{}", env.daemon_log());
    z[0]
}

/// The one live zygote of the skiffd `daemon` (started by the test itself).
pub fn zygote_of(daemon: u32, log: &str) -> u32 {
    let z = zygotes(daemon);
    assert_eq!(z.len(), 1, "skiffd's zygotes: {z:?}\n{log}");
    z[0]
}

/// A mapping of the skiff-monitor executable: its range and permissions, and its
/// Shared_Dirty and Private_Dirty (kB).
#[derive(Debug, Clone, PartialEq)]
pub struct Mapping {
    pub range: String,
    pub perms: String,
    pub shared_dirty: u64,
    pub private_dirty: u64,
}

/// The mappings of the skiff-monitor executable in `pid`, by range.
pub fn monitor_mappings(pid: u32) -> BTreeMap<String, Mapping> {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut out = BTreeMap::new();
    let mut current: Option<Mapping> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            if let Some(m) = current.take() {
                out.insert(m.range.clone(), m);
            }
            if fields.len() >= 6 && fields[5].ends_with("/skiff-monitor") {
                current = Some(Mapping {
                    range: fields[0].to_string(),
                    perms: fields[1].to_string(),
                    shared_dirty: 0,
                    private_dirty: 0,
                });
            }
            continue;
        }
        if let (Some(m), [key, kb, ..]) = (current.as_mut(), fields.as_slice()) {
            let kb = kb.parse().unwrap_or(0);
            match *key {
                "Shared_Dirty:" => m.shared_dirty = kb,
                "Private_Dirty:" => m.private_dirty = kb,
                _ => {}
            }
        }
    }
    if let Some(m) = current {
        out.insert(m.range.clone(), m);
    }
    out
}

/// A detached run's monitor holds /dev/null (the stdio skiffd gave it) on fds 0-2 only.
pub fn assert_no_stray_null(m: u32, name: &str) {
    for fd in entries(std::path::Path::new(&format!("/proc/{m}/fd"))) {
        let target = std::fs::read_link(format!("/proc/{m}/fd/{fd}")).unwrap_or_default();
        let n: i32 = fd.parse().unwrap();
        assert!(
            n <= 2 || target != std::path::Path::new("/dev/null"),
            "the monitor of {name} holds a stray /dev/null on fd {n}"
        );
    }
}

pub fn run_sleeper(env: &Env, name: &str) -> u32 {
    let out = env.skiff(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.inspect(name)["State"]["MonitorPid"].as_u64().unwrap() as u32
}

/// A skiffd we started ourselves (`exe`, with `extra` in its environment, its log at
/// `log`), killed at the end; returned once it owns its name.
pub struct Daemon(pub std::process::Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}

pub fn start_skiffd(
    env: &Env,
    exe: &std::path::Path,
    extra: &[(&str, &std::ffi::OsStr)],
    log: &std::path::Path,
) -> Daemon {
    let daemon = Daemon(
        std::process::Command::new(exe)
            .envs(env.envs())
            .envs(extra.iter().copied())
            .env("RUST_LOG", "debug")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let owned = env.eventually(20, || env.skiffd_has_its_name());
    assert!(
        owned,
        "skiffd did not take its name: {}",
        std::fs::read_to_string(log).unwrap_or_default()
    );
    daemon
}

/// A skiffd whose zygote stalls (the `SKIFF_TEST_ZYGOTE_STALL` hook) between a fork and
/// its answer for one start: `before` started normally, then `late` started while the
/// zygote `stalled` stalled.
pub struct Stalled {
    /// The skiffd (killed when dropped).
    pub daemon: Daemon,
    /// Its pid.
    pub pid: u32,
    /// Its log.
    pub log_path: std::path::PathBuf,
    /// The zygote that stalled.
    pub stalled: u32,
    /// The monitors of the two sleepers.
    pub before: u32,
    pub late: u32,
}

impl Stalled {
    /// Starts it all in `env` (a bus-only one) and checks the zygote did stall.
    pub fn start(env: &Env) -> Stalled {
        let stall = env.dir.path().join("stall");
        let log_path = env.dir.path().join("skiffd-stall.log");
        let daemon = start_skiffd(
            env,
            &common::bin("skiffd"),
            &[("SKIFF_TEST_ZYGOTE_STALL", stall.as_os_str())],
            &log_path,
        );
        let pid = daemon.0.id();
        let tar = env.busybox_tar();
        let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let before = run_sleeper(env, "before");
        let stalled = zygote_of(pid, &std::fs::read_to_string(&log_path).unwrap_or_default());
        std::fs::write(&stall, b"").unwrap();
        let late = run_sleeper(env, "late");
        let st = Stalled {
            daemon,
            pid,
            log_path,
            stalled,
            before,
            late,
        };
        assert!(!stall.exists(), "the zygote did not stall: {}", st.log());
        st
    }

    /// skiffd's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }
}
