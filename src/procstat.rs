//! A running container's processes and resource use, read from /proc and, where the
//! container has a cgroup v2 directory of its own, from its files (read only: skiff never
//! writes into a cgroup here). Used by `top` and `stats`.
//!
//! The container's processes are those in its init's pid namespace. Numbers come from
//! the cgroup where it has them (`cpu.stat`, `memory.current`, `memory.max`,
//! `pids.current`, `io.stat`: each only when its controller is enabled), else from the
//! sum over those processes (`/proc/PID/stat`, `/proc/PID/io`, `/proc/PID/status`).

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// The inode of a namespace of a process (`pid`, `net`, ...).
fn ns_inode(pid: u32, ns: &str) -> io::Result<u64> {
    Ok(std::fs::metadata(format!("/proc/{pid}/ns/{ns}"))?.ino())
}

/// The host pids of every process in the pid namespace of `init`, sorted. Fails when
/// `init` is gone; a namespace shared with skiffd itself is refused (that would be every
/// process of the host).
pub fn container_pids(init: u32) -> io::Result<Vec<u32>> {
    let ns = ns_inode(init, "pid")?;
    if ns_inode(std::process::id(), "pid").ok() == Some(ns) {
        return Err(io::Error::other(
            "the container shares skiffd's pid namespace: its processes cannot be told apart",
        ));
    }
    let mut pids = Vec::new();
    for e in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if ns_inode(pid, "pid").ok() == Some(ns) {
            pids.push(pid);
        }
    }
    pids.sort_unstable();
    Ok(pids)
}

/// One reading of a container's resource use; `None` where a number is unavailable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sample {
    /// CPU time used, nanoseconds.
    pub cpu_ns: Option<u64>,
    /// Memory in use, bytes.
    pub memory: Option<u64>,
    /// The memory limit, bytes (the host's memory when there is none).
    pub memory_limit: Option<u64>,
    /// Bytes received and sent on the container's interfaces but `lo`.
    pub net: Option<(u64, u64)>,
    /// Bytes read from and written to storage.
    pub block: Option<(u64, u64)>,
    /// Tasks (processes and threads).
    pub pids: Option<u64>,
    /// Where each number came from, e.g. `cpu=cgroup memory=proc`.
    pub sources: String,
    /// When it was read: CLOCK_MONOTONIC, nanoseconds.
    pub read_ns: u64,
}

/// CLOCK_MONOTONIC now, nanoseconds.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    u64::try_from(ts.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(ts.tv_nsec).unwrap_or(0)
}

/// The cgroup v2 directory of `pid`, if it has one of its own (not skiffd's).
fn own_cgroup(pid: u32) -> Option<PathBuf> {
    let v2 = |p: &str| -> Option<String> {
        std::fs::read_to_string(p)
            .ok()?
            .lines()
            .find_map(|l| l.strip_prefix("0::").map(str::to_string))
    };
    let theirs = v2(&format!("/proc/{pid}/cgroup"))?;
    if theirs == "/" || v2("/proc/self/cgroup").as_deref() == Some(theirs.as_str()) {
        return None;
    }
    let base = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(Path::new)
        .find(|b| b.join("cgroup.controllers").exists())?;
    let dir = base.join(theirs.trim_start_matches('/'));
    dir.is_dir().then_some(dir)
}

/// `key value` lines (cpu.stat).
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok()).flatten()
    })
}

/// Sums `rbytes=`/`wbytes=` over the devices of an io.stat.
fn io_stat(text: &str) -> (u64, u64) {
    let (mut r, mut w) = (0, 0);
    for field in text.split_whitespace() {
        if let Some(v) = field.strip_prefix("rbytes=") {
            r += v.parse::<u64>().unwrap_or(0);
        } else if let Some(v) = field.strip_prefix("wbytes=") {
            w += v.parse::<u64>().unwrap_or(0);
        }
    }
    (r, w)
}

/// Received and sent bytes of /proc/PID/net/dev, `lo` left out.
pub fn net_dev(text: &str) -> (u64, u64) {
    let (mut rx, mut tx) = (0, 0);
    for line in text.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            rx += f[0];
            tx += f[8];
        }
    }
    (rx, tx)
}

/// The start time of process `pid` (clock ticks after boot: /proc/PID/stat's field 22),
/// if it exists. With its pid, it names one process for good.
pub fn start_time(pid: u32) -> Option<u64> {
    stat_fields(pid)?.get(19).copied()
}

/// The parent and the session of process `pid` (/proc/PID/stat's fields 4 and 6; a
/// zombie has them too), if it exists.
pub fn parent_and_session(pid: u32) -> Option<(u32, u32)> {
    let f = stat_fields(pid)?;
    let field = |i: usize| f.get(i).and_then(|v| u32::try_from(*v).ok());
    Some((field(1)?, field(3)?))
}

/// The fields of /proc/PID/stat after the command name (field 3 is index 0).
fn stat_fields(pid: u32) -> Option<Vec<u64>> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &s[s.rfind(')')? + 1..];
    Some(
        rest.split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect(),
    )
}

fn page_size() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(v).unwrap_or(4096)
}

fn clock_ticks() -> u64 {
    // SAFETY: sysconf only reads a constant of the system.
    let v = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(v).ok().filter(|v| *v > 0).unwrap_or(100)
}

/// The host's memory (MemTotal), bytes.
fn host_memory() -> Option<u64> {
    let m = std::fs::read_to_string("/proc/meminfo").ok()?;
    let kb: u64 = m
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// Reads the resource use of the container whose init is `init`.
pub fn sample(init: u32) -> io::Result<Sample> {
    let pids = container_pids(init)?;
    let cg = own_cgroup(init);
    let read = |name: &str| -> Option<String> {
        cg.as_ref()
            .and_then(|d| std::fs::read_to_string(d.join(name)).ok())
    };
    let mut sources = Vec::new();
    let mut s = Sample {
        read_ns: monotonic_ns(),
        ..Sample::default()
    };

    // Sums over the processes (what the cgroup lacks).
    let (mut ticks, mut rss, mut threads) = (0u64, 0u64, 0u64);
    let (mut rd, mut wr, mut io_seen) = (0u64, 0u64, false);
    for &pid in &pids {
        if let Some(f) = stat_fields(pid) {
            // utime, stime, cutime, cstime (fields 14-17), num_threads (20), rss (24).
            ticks += f.get(11..15).map(|x| x.iter().sum()).unwrap_or(0);
            threads += f.get(17).copied().unwrap_or(0);
            rss += f.get(21).copied().unwrap_or(0);
        }
        if let Ok(io) = std::fs::read_to_string(format!("/proc/{pid}/io")) {
            io_seen = true;
            rd += keyed(&io.replace(": ", " "), "read_bytes").unwrap_or(0);
            wr += keyed(&io.replace(": ", " "), "write_bytes").unwrap_or(0);
        }
    }

    match read("cpu.stat").and_then(|t| keyed(&t, "usage_usec")) {
        Some(us) => {
            s.cpu_ns = Some(us * 1000);
            sources.push("cpu=cgroup");
        }
        None => {
            s.cpu_ns = Some(ticks * 1_000_000_000 / clock_ticks());
            sources.push("cpu=proc");
        }
    }
    match read("memory.current").and_then(|t| t.trim().parse().ok()) {
        Some(m) => {
            s.memory = Some(m);
            sources.push("memory=cgroup");
        }
        None => {
            s.memory = Some(rss * page_size());
            sources.push("memory=proc");
        }
    }
    s.memory_limit = read("memory.max")
        .and_then(|t| t.trim().parse().ok())
        .or_else(host_memory);
    match read("pids.current").and_then(|t| t.trim().parse().ok()) {
        Some(n) => {
            s.pids = Some(n);
            sources.push("pids=cgroup");
        }
        None => {
            s.pids = Some(threads);
            sources.push("pids=proc");
        }
    }
    if let Some(t) = read("io.stat") {
        s.block = Some(io_stat(&t));
        sources.push("block=cgroup");
    } else if io_seen {
        s.block = Some((rd, wr));
        sources.push("block=proc");
    }
    // The host's network (--network host) is not the container's to count.
    if ns_inode(init, "net").ok() != ns_inode(std::process::id(), "net").ok() {
        if let Ok(t) = std::fs::read_to_string(format!("/proc/{init}/net/dev")) {
            s.net = Some(net_dev(&t));
            sources.push("net=netns");
        }
    }
    s.sources = sources.join(" ");
    Ok(s)
}

/// The output of `ps` cut to the rows of `pids`: the titles and each row's fields (the
/// last title takes the rest of the line, as the command has spaces). `extra_pid`: the
/// last column is a PID column skiff added (`-o pid`), dropped from the result.
pub fn filter_ps(
    output: &str,
    pids: &[u32],
    extra_pid: bool,
) -> Option<(Vec<String>, Vec<Vec<String>>)> {
    let mut lines = output.lines();
    let titles: Vec<String> = lines
        .next()?
        .split_whitespace()
        .map(str::to_string)
        .collect();
    let col = titles.iter().rposition(|t| t == "PID")?;
    let n = titles.len();
    let mut rows = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < n {
            continue;
        }
        let mut row: Vec<String> = fields[..n - 1].iter().map(|s| s.to_string()).collect();
        row.push(fields[n - 1..].join(" "));
        let Ok(pid) = row[col].parse::<u32>() else {
            continue;
        };
        if pids.binary_search(&pid).is_ok() {
            if extra_pid {
                row.pop();
            }
            rows.push(row);
        }
    }
    let mut titles = titles;
    if extra_pid {
        titles.pop();
    }
    Some((titles, rows))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn net_dev_leaves_out_lo() {
        let t = "Inter-|   Receive  |  Transmit\n face |bytes packets errs drop fifo frame compressed multicast|bytes\n    lo: 100 1 0 0 0 0 0 0 100 1 0 0 0 0 0 0\n  tap0: 2000 10 0 0 0 0 0 0 300 3 0 0 0 0 0 0\n";
        assert_eq!(net_dev(t), (2000, 300));
    }

    #[test]
    fn io_stat_sums_devices() {
        let t = "8:0 rbytes=100 wbytes=20 rios=1 wios=1\n8:16 rbytes=5 wbytes=1 rios=1\n";
        assert_eq!(io_stat(t), (105, 21));
    }

    #[test]
    fn ps_rows_are_filtered_by_pid() {
        let out = "UID PID PPID C STIME TTY TIME CMD\nroot 1 0 0 10:00 ? 00:00:01 /sbin/init splash\nu 42 1 0 10:01 ? 00:00:00 sleep 100\n";
        let (t, rows) = filter_ps(out, &[42], false).unwrap();
        assert_eq!(t.len(), 8);
        assert_eq!(
            rows,
            vec![vec![
                "u",
                "42",
                "1",
                "0",
                "10:01",
                "?",
                "00:00:00",
                "sleep 100"
            ]]
        );
        let out = "COMMAND PID\nsleep 42\ninit 1\n";
        let (t, rows) = filter_ps(out, &[42], true).unwrap();
        assert_eq!(t, vec!["COMMAND"]);
        assert_eq!(rows, vec![vec!["sleep"]]);
        assert!(filter_ps("COMMAND\nsleep\n", &[42], false).is_none());
    }

    #[test]
    fn own_pid_namespace_is_refused() {
        assert!(container_pids(std::process::id()).is_err());
    }
}
