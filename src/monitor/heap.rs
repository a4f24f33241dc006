//! The C allocator's settings for the long-lived per-container processes (the monitor
//! and its fork, the FUSE rootfs server), which sit idle most of their life: what they
//! keep resident is paid once per container (docs/benchmarks.md, "Memory per idle
//! container").
//!
//! glibc's defaults suit neither: each thread that allocates gets its own arena (the
//! FUSE server's event loops each dirtied one, ~220 KiB apiece), and freeing one large
//! block — fuser's 16 MiB handshake buffer — raises the mmap threshold to its size and
//! the trim threshold to twice that, so no freed memory went back to the kernel again.
//! Fixed thresholds keep large buffers (fuser's 16 MiB read buffers, the monitor's I/O
//! buffer) in mappings of their own, whose untouched pages are never resident, and
//! everything smaller in one arena; [`trim`] hands its free pages back once the process
//! goes idle.

use std::os::unix::ffi::OsStrExt;

/// The monitor's blocks at least this large get a mapping of their own: its I/O buffer
/// (32 KiB, zeroed) then costs only the pages its reads fill, where a zeroed block
/// from the arena's free lists is written over in full.
const MONITOR_MMAP_THRESHOLD: libc::c_int = 32 << 10;
/// The FUSE server's blocks at least this large get a mapping of their own (fuser's
/// per-loop 16 MiB request buffers: untouched pages are never resident); smaller ones,
/// up to a FUSE read or write (1 MiB), come from the arena, not a mapping per request.
const FUSE_MMAP_THRESHOLD: libc::c_int = 4 << 20;
/// The FUSE server's free arena top is given back above this: high enough that a
/// stream of 1 MiB reads does not move the break twice per request.
const FUSE_TRIM_THRESHOLD: libc::c_int = 2 << 20;

/// The glibc tunable skiffd starts the monitor with (see [`monitor_tunables`]): no
/// per-thread cache of freed blocks. glibc keeps up to 7 freed blocks of each small size
/// per thread in that cache (tcache), outside the arena's free lists, so `malloc_trim`
/// cannot give their pages back: after a start they were scattered over most of the
/// monitor's heap and pinned ~70 KiB of it, and (in the FUSE server's four threads)
/// ~35 KiB more. The allocator reads tunables only when the process starts, so it is
/// set in the monitor's environment; the FUSE server, a fork, has it too.
pub const TCACHE_TUNABLE: &str = "glibc.malloc.tcache_count=0";
/// glibc's tunables variable.
pub const TUNABLES_ENV: &str = "GLIBC_TUNABLES";

/// The value of [`TUNABLES_ENV`] to start a monitor with: [`TCACHE_TUNABLE`] after the
/// tunables the caller runs with (if any).
pub fn monitor_tunables() -> std::ffi::OsString {
    match std::env::var_os(TUNABLES_ENV) {
        Some(v) if !v.is_empty() => {
            let mut v = v;
            v.push(":");
            v.push(TCACHE_TUNABLE);
            v
        }
        _ => TCACHE_TUNABLE.into(),
    }
}

/// Sets glibc's allocator for the monitor: one arena for all threads and a fixed, low
/// mmap threshold (fixed thresholds also stop glibc from raising them after freeing a
/// large block). Its forks inherit the settings. Takes [`TCACHE_TUNABLE`] back out of
/// the environment (glibc has read it): the processes the monitor starts (the network
/// helper) get the tunables skiffd had. Must run while the process is single-threaded.
pub fn tune_monitor() {
    set(MONITOR_MMAP_THRESHOLD, None);
    if let Some(v) = std::env::var_os(TUNABLES_ENV) {
        let v = v.as_encoded_bytes();
        let ours = TCACHE_TUNABLE.as_bytes();
        if v == ours {
            // SAFETY: the monitor is single-threaded when it tunes its allocator.
            unsafe { std::env::remove_var(TUNABLES_ENV) };
        } else if let Some(rest) = v.strip_suffix(ours).and_then(|r| r.strip_suffix(b":")) {
            let rest = std::ffi::OsStr::from_bytes(rest).to_os_string();
            // SAFETY: as above.
            unsafe { std::env::set_var(TUNABLES_ENV, rest) };
        }
    }
}

/// Sets glibc's allocator for the FUSE rootfs server (a fork of the monitor, before
/// its threads start): one arena, mmap threshold 4 MiB, trim threshold 2 MiB.
pub fn tune_fuse_server() {
    set(FUSE_MMAP_THRESHOLD, Some(FUSE_TRIM_THRESHOLD));
}

fn set(mmap_threshold: libc::c_int, trim_threshold: Option<libc::c_int>) {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes the allocator's parameters; it takes the arena lock.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_threshold);
        if let Some(t) = trim_threshold {
            libc::mallopt(libc::M_TRIM_THRESHOLD, t);
        }
    }
    #[cfg(not(target_env = "gnu"))]
    let _ = (mmap_threshold, trim_threshold);
}

/// Gives the free pages of the allocator's arenas back to the kernel (after the start,
/// and when the FUSE server goes idle), and, called on the main thread, the pages of
/// its stack below the caller's frames (see [`release_stack_below`]).
pub fn trim() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory; it takes the arena locks.
    unsafe {
        libc::malloc_trim(0);
    }
    release_stack_below();
}

/// Pages kept below the caller's frame: the frames of the calls made from here (libc's
/// wrappers, x86-64's 128-byte red zone) stay within them.
const STACK_KEEP_PAGES: usize = 4;

/// The process's main stack, `[start, end)`, from its maps (`/proc/self/maps`, or
/// `/self/maps` in a FUSE server whose root is /proc).
fn main_stack() -> Option<(usize, usize)> {
    let maps = std::fs::read_to_string("/proc/self/maps")
        .or_else(|_| std::fs::read_to_string("/self/maps"))
        .ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (start, end) = line.split_whitespace().next()?.split_once('-')?;
    Some((
        usize::from_str_radix(start, 16).ok()?,
        usize::from_str_radix(end, 16).ok()?,
    ))
}

/// Gives back the pages of the main stack below the caller's frames, which the start's
/// deep call paths (spec parsing, the container's fork, the FUSE mount) touched and
/// which stay resident, private to each monitor and FUSE server, for the container's
/// life. Nothing lives below a thread's stack pointer and only its thread runs on a
/// stack, so the pages are dead: a later deeper call gets fresh zeroed pages. Does
/// nothing unless called on the thread running on the process's main stack.
pub fn release_stack_below() {
    // SAFETY: sysconf only reads a value.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let Some((start, end)) = main_stack() else {
        return;
    };
    let here = 0u8;
    let sp = std::hint::black_box(&here) as *const u8 as usize;
    if !(start..end).contains(&sp) {
        return;
    }
    let top = (sp & !(page - 1)).saturating_sub(STACK_KEEP_PAGES * page);
    if top > start {
        // SAFETY: [start, top) is this thread's own stack below its live frames (see
        // above): dead memory no other thread or frame refers to.
        unsafe {
            libc::madvise(start as *mut libc::c_void, top - start, libc::MADV_DONTNEED);
        }
    }
}

/// The first look for idleness, in ms; doubled while nothing happens, up to
/// [`IDLE_CHECK_MAX_MS`], and back to this after activity.
const IDLE_CHECK_FIRST_MS: i32 = 1000;
/// The longest wait between two looks (one wake-up a minute for an idle server).
const IDLE_CHECK_MAX_MS: i32 = 60_000;

/// Less CPU time than this (ns) between two looks is not work: the two clocks of
/// [`others_cpu_ns`] are read one after the other, so the caller's own time between the
/// reads shows as a little noise.
const WORK_MIN_NS: i128 = 50_000;

/// CPU time of this process's other threads than the calling one, in ns (give or take
/// the few µs between the two reads): it moves only when they work (for the FUSE server:
/// when its event loops serve a request).
fn others_cpu_ns() -> i128 {
    let read = |clock| {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec we own.
        unsafe { libc::clock_gettime(clock, &mut ts) };
        i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
    };
    read(libc::CLOCK_PROCESS_CPUTIME_ID) - read(libc::CLOCK_THREAD_CPUTIME_ID)
}

/// Waits until `fd` is readable (e.g. a pidfd: its process ended), and meanwhile calls
/// `shed` and then [`trim`] whenever the process's other threads have worked and then
/// stayed idle for a while: a FUSE server drops its caches and hands back what serving
/// a burst of requests left in its arena.
pub fn wait_readable_trimming(fd: std::os::fd::RawFd, mut shed: impl FnMut()) {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let mut timeout = IDLE_CHECK_FIRST_MS;
    // The start itself allocated.
    let mut worked = true;
    let mut seen = others_cpu_ns();
    loop {
        // SAFETY: one valid pollfd.
        match unsafe { libc::poll(&mut p, 1, timeout) } {
            0 => {}
            n if n > 0 => return,
            // EINTR (or ENOMEM): ask again.
            _ => continue,
        }
        let now = others_cpu_ns();
        if (now - seen).abs() >= WORK_MIN_NS {
            seen = now;
            worked = true;
            timeout = IDLE_CHECK_FIRST_MS;
            continue;
        }
        if worked {
            shed();
            trim();
            worked = false;
        }
        timeout = (timeout * 2).min(IDLE_CHECK_MAX_MS);
    }
}
