//! What each running container costs in memory outside itself (issue 18,
//! docs/benchmarks.md "Memory per idle container"): the FUSE rootfs server's event
//! loops share one malloc arena, whose free pages go back to the kernel once the server
//! is idle, while what it served was right.

mod common;

use common::{stderr, stdout, write_busybox_tar, Env};
use sha2::Digest;

/// Files of this many bytes in the test image's /data, read in parallel.
const FILE_SIZE: usize = 1 << 20;
const FILES: usize = 16;

/// A busybox image with [`FILES`] files of distinct content in /data, imported as
/// demo/busybox into a daemon with the fuse storage driver.
fn fuse_env_with_data() -> (Env, Vec<Vec<u8>>) {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "fuse"]);
    let blobs: Vec<Vec<u8>> = (0..FILES)
        .map(|i| {
            let mut state = 0x9e37_79b9_7f4a_7c15_u64 ^ i as u64;
            (0..FILE_SIZE)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect()
        })
        .collect();
    let names: Vec<String> = (0..FILES).map(|i| format!("data/f{i:02}")).collect();
    let extra: Vec<common::Extra<'_>> = names
        .iter()
        .zip(&blobs)
        .map(|(n, b)| (n.as_str(), 0, 0, 0o644, b.as_slice()))
        .collect();
    let tar = env.dir.path().join("data.tar");
    write_busybox_tar(&tar, &extra);
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import: {}", stderr(&out));
    (env, blobs)
}

/// Runs an idle container; returns (monitor pid, FUSE server pid).
fn idle_container(env: &Env, name: &str) -> (u32, u32) {
    let out = env.skiff(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        name,
        "demo/busybox",
        "sleep",
        "100000",
    ]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    let monitor = env.inspect(name)["State"]["MonitorPid"]
        .as_u64()
        .expect("MonitorPid") as u32;
    let mut fuse = None;
    assert!(
        env.eventually(10, || {
            fuse = fuse_server_of(monitor);
            fuse.is_some()
        }),
        "no skiff-fuse below monitor {monitor}"
    );
    (monitor, fuse.unwrap_or_default())
}

/// The `skiff-fuse` child of `monitor`.
fn fuse_server_of(monitor: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let (comm, rest) = stat.split_once(" (")?.1.rsplit_once(") ")?;
        let ppid: u32 = rest.split_whitespace().nth(1)?.parse().ok()?;
        (comm == "skiff-fuse" && ppid == monitor).then_some(pid)
    })
}

/// glibc's per-thread malloc arenas in `pid`: an anonymous read-write mapping at a
/// 64 MiB boundary followed right away by the inaccessible rest of its reservation.
fn malloc_arenas(pid: u32) -> usize {
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    // (start, end, perms, anonymous)
    let maps: Vec<(u64, u64, String, bool)> = maps
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let (start, end) = w.next()?.split_once('-')?;
            let perms = w.next()?.to_string();
            let anonymous = w.nth(3).is_none();
            let hex = |s| u64::from_str_radix(s, 16).ok();
            Some((hex(start)?, hex(end)?, perms, anonymous))
        })
        .collect();
    maps.windows(2)
        .filter(|w| {
            let (a, b) = (&w[0], &w[1]);
            a.3 && b.3
                && a.2 == "rw-p"
                && b.2 == "---p"
                && a.0 % (64 << 20) == 0
                && a.1 == b.0
                && b.1 - a.0 <= 64 << 20
        })
        .count()
}

/// Anonymous memory of `pid` (KiB), from smaps_rollup.
fn anonymous_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Anonymous:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("Anonymous in smaps_rollup")
}

#[test]
fn fuse_event_loops_share_one_arena_and_serve_parallel_reads_right() {
    let (env, blobs) = fuse_env_with_data();
    let (_, fuse) = idle_container(&env, "mm2");
    let before = anonymous_kib(fuse);
    // Every file read at once (the server's event loops serve them in parallel, with
    // reads of up to 1 MiB), then its checksum.
    let script = format!(
        "for f in /data/f*; do cat $f >/dev/null & done; wait; \
         for i in $(seq -w 0 {}); do sha256sum /data/f$i; done",
        FILES - 1
    );
    let out = env.skiff(&["exec", "mm2", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let sums: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    let want: Vec<String> = blobs
        .iter()
        .map(|b| {
            sha2::Sha256::digest(b)
                .iter()
                .map(|x| format!("{x:02x}"))
                .collect()
        })
        .collect();
    assert_eq!(sums, want, "the files read through the FUSE rootfs");
    // Every event loop allocated in the one arena (M_ARENA_MAX=1): none has an arena of
    // its own, where what it freed stayed resident (~220 KiB each before).
    assert_eq!(
        malloc_arenas(fuse),
        0,
        "the FUSE server has per-thread malloc arenas"
    );
    // Once idle, the server's anonymous memory is back to what it was (give or take
    // the few nodes the reads added and its threads' stacks).
    let mut now = 0;
    let back = env.eventually(30, || {
        now = anonymous_kib(fuse);
        now <= before + 128
    });
    assert!(
        back,
        "the idle FUSE server keeps {now} KiB anonymous, {before} KiB before the reads"
    );
    // Gone idle, the server dropped its directories' listings (fuse::idle): the files
    // are found and read again from the listings it reads anew.
    let out = env.skiff(&["exec", "mm2", "sh", "-c", &script]);
    assert!(out.status.success(), "{}", stderr(&out));
    let again: Vec<String> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        again, want,
        "the files read again after the server went idle"
    );
    assert!(env.skiff(&["rm", "-f", "mm2"]).status.success());
}

/// The NUL-separated environment `pid` was started with.
fn start_environment(pid: u32) -> Vec<String> {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|b| *b == 0)
        .map(|v| String::from_utf8_lossy(v).into_owned())
        .collect()
}

#[test]
fn the_monitor_starts_without_glibc_s_per_thread_cache_and_the_container_never_sees_it() {
    let (env, _) = fuse_env_with_data();
    let (monitor, _) = idle_container(&env, "mm3");
    // Freed blocks kept per thread pin pages malloc_trim cannot give back
    // (monitor::heap::TCACHE_TUNABLE): skiffd starts the monitor without that cache.
    let menv = start_environment(monitor);
    assert!(
        menv.iter()
            .any(|v| v == "GLIBC_TUNABLES=glibc.malloc.tcache_count=0"),
        "the monitor's environment: {menv:?}"
    );
    let init = env.inspect("mm3")["State"]["Pid"].as_u64().expect("Pid") as u32;
    let ienv = start_environment(init);
    assert!(
        !ienv.iter().any(|v| v.starts_with("GLIBC_TUNABLES=")),
        "the container's environment: {ienv:?}"
    );
    assert!(env.skiff(&["rm", "-f", "mm3"]).status.success());
}
