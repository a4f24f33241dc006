//! The per-user monitor zygote: `skiff-monitor __zygote` started by skiffd, which forks
//! the monitors.
//!
//! skiff-monitor is a position-independent executable: each process that starts it
//! applies ~15,000 relocations, which dirty ~300 KiB of `.data.rel.ro`, `.got` and
//! `.data`, private to that process (docs/benchmarks.md, "Memory per idle container").
//! The zygote does that once; the monitors it forks share those pages with it (RELRO
//! makes most of them read-only: never copied). The address-space layout is randomised
//! once per zygote and shared by the monitors it forks, as a monitor's FUSE server
//! shares its monitor's.
//!
//! The zygote is single-threaded (a process that joins user namespaces must be) and
//! holds nothing container-specific or secret (a request's bytes are wiped once
//! served, so no fork gets an earlier one's): it waits on a `SOCK_SEQPACKET` socket on
//! [`ZYGOTE_FD`] (one end of skiffd's socketpair: no path, only skiffd holds the other
//! end). A request ([`encode_request`]) carries the monitor's argv and environment as
//! bytes and its descriptors by `SCM_RIGHTS`, each with the number it must have, and
//! last the read end of a go-ahead pipe of its own. The zygote forks with `clone3(CLONE_PARENT | CLONE_PIDFD)`: the monitor is skiffd's child
//! exactly as an exec'd one (skiffd waits for it, reaps it, kills it through its pidfd;
//! the zygote never has children, so it leaves no zombie), and the zygote answers with
//! the pid and the pidfd. The fork waits on the go-ahead pipe before it does anything:
//! skiffd writes there once it has taken the answer and follows the fork. An answer
//! that comes after skiffd's timeout (skiffd has started the monitor otherwise by then)
//! finds the pipe's write end closed: the fork reads its end and exits having done
//! nothing, and skiffd, which reads the late answer, kills and reaps it by its pidfd
//! (see `daemon::zygote`); an answer that never comes (the zygote given up on and
//! killed first), by its session: the zygote's, which a fork leaves first thing after
//! its go-ahead. The end of the socket (skiffd ended) ends the zygote; its
//! monitors go on. (No `PR_SET_PDEATHSIG` as well: it fires when the *thread* that
//! spawned the zygote ends, and skiffd spawns it from tokio's threads, which end when
//! idle. skiffd's end of the socket is close-on-exec and held by skiffd alone, so
//! skiffd's exit, even by SIGKILL, closes it.)
//!
//! The fork starts a session, puts its descriptors on their numbers and closes every
//! other one (as `posix_spawn`'s file actions do for an exec'd monitor), replaces
//! its environment with the request's, rewrites its command line (the zygote is started
//! with room for it) and runs the monitor's entry as an exec'd monitor does.

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStringExt;

use nix::sys::socket::MsgFlags;

/// The zygote's end of skiffd's socketpair.
pub const ZYGOTE_FD: RawFd = 3;
/// The zygote's first argument.
pub const ZYGOTE_ARG: &str = "__zygote";
/// The zygote's process name (`comm`); its forks rename themselves the monitor.
pub const ZYGOTE_NAME: &str = "skiff-zygote";
/// How many empty arguments follow [`ZYGOTE_ARG`]: the room a fork rewrites its command
/// line into (one byte each).
pub const ARGV_ROOM: usize = 2048;
/// At most this many descriptors per request (the go-ahead pipe's among them).
pub const MAX_FDS: usize = 16;
/// A request's largest size (argv and environment).
pub const MAX_REQUEST: usize = 128 << 10;

/// For tests (tests/e2e_zygote.rs): the path of a file in the zygote's environment.
/// When the zygote can remove that file after a fork, it stops itself (SIGSTOP) before
/// it answers: a zygote slow to answer, once, for real.
pub const STALL_ENV: &str = "SKIFF_TEST_ZYGOTE_STALL";

/// (`SKZ2`: a request carries the go-ahead pipe.)
const MAGIC: &[u8; 4] = b"SKZ2";

/// A request: what the monitor gets (and the go-ahead pipe, passed last, beside
/// `targets`' descriptors).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Request {
    /// argv, argv\[0\] first.
    pub argv: Vec<Vec<u8>>,
    /// The whole environment, `NAME=VALUE` each.
    pub env: Vec<Vec<u8>>,
    /// The number each passed descriptor gets, in the order they are passed.
    pub targets: Vec<RawFd>,
}

impl Drop for Request {
    /// The zygote keeps nothing of a monitor's request for the next fork.
    fn drop(&mut self) {
        for v in self.argv.iter_mut().chain(self.env.iter_mut()) {
            wipe(v);
        }
    }
}

/// Overwrites `b` with zeros (volatile writes: not optimised away before a free).
fn wipe(b: &mut [u8]) {
    for x in b.iter_mut() {
        // SAFETY: a valid, exclusive reference to one of our bytes.
        unsafe { std::ptr::write_volatile(x, 0) };
    }
    std::sync::atomic::compiler_fence(std::sync::atomic::Ordering::SeqCst);
}

fn put_u32(out: &mut Vec<u8>, n: usize) -> io::Result<()> {
    let n = u32::try_from(n).map_err(|_| invalid("a request field is too large"))?;
    out.extend_from_slice(&n.to_le_bytes());
    Ok(())
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, what.to_string())
}

/// The bytes of a request (its descriptors go beside them).
pub fn encode_request(req: &Request) -> io::Result<Vec<u8>> {
    if req.targets.len() >= MAX_FDS {
        return Err(invalid("too many descriptors for the zygote"));
    }
    let mut out = MAGIC.to_vec();
    put_u32(&mut out, req.targets.len())?;
    for t in &req.targets {
        out.extend_from_slice(&t.to_le_bytes());
    }
    for list in [&req.argv, &req.env] {
        put_u32(&mut out, list.len())?;
        for item in list {
            put_u32(&mut out, item.len())?;
            out.extend_from_slice(item);
        }
    }
    if out.len() > MAX_REQUEST {
        return Err(invalid("the monitor's argv and environment are too large"));
    }
    Ok(out)
}

/// Reads a request's bytes.
pub fn decode_request(mut b: &[u8]) -> io::Result<Request> {
    fn take<'a>(b: &mut &'a [u8], n: usize) -> io::Result<&'a [u8]> {
        if b.len() < n {
            return Err(invalid("a truncated request"));
        }
        let (head, rest) = b.split_at(n);
        *b = rest;
        Ok(head)
    }
    fn u32_of(b: &mut &[u8]) -> io::Result<usize> {
        let raw = take(b, 4)?;
        Ok(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]) as usize)
    }
    if take(&mut b, 4)? != MAGIC {
        return Err(invalid("not a zygote request"));
    }
    let mut req = Request::default();
    let n = u32_of(&mut b)?;
    if n >= MAX_FDS {
        return Err(invalid("too many descriptors"));
    }
    for _ in 0..n {
        let raw = take(&mut b, 4)?;
        req.targets
            .push(RawFd::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]));
    }
    for list in [&mut req.argv, &mut req.env] {
        let n = u32_of(&mut b)?;
        for _ in 0..n {
            let len = u32_of(&mut b)?;
            list.push(take(&mut b, len)?.to_vec());
        }
    }
    if !b.is_empty() {
        return Err(invalid("trailing bytes in a request"));
    }
    if req.argv.is_empty() || req.argv.iter().chain(&req.env).any(|s| s.contains(&0)) {
        return Err(invalid("an empty argv or a NUL in an argument"));
    }
    let mut sorted = req.targets.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != req.targets.len() || sorted.first().is_some_and(|t| *t < 0) {
        return Err(invalid("a negative or repeated descriptor number"));
    }
    Ok(req)
}

/// The zygote's answer: 0 and the pid (the pidfd beside it), or an errno and why.
pub fn encode_reply(result: Result<i32, (i32, &str)>) -> Vec<u8> {
    let mut out = MAGIC.to_vec();
    match result {
        Ok(pid) => {
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(&pid.to_le_bytes());
        }
        Err((errno, why)) => {
            out.extend_from_slice(&errno.max(1).to_le_bytes());
            out.extend_from_slice(&0i32.to_le_bytes());
            out.extend_from_slice(why.as_bytes());
        }
    }
    out
}

/// Reads a reply: the pid, or the zygote's error.
pub fn decode_reply(b: &[u8]) -> io::Result<i32> {
    if b.len() < 12 || &b[..4] != MAGIC {
        return Err(invalid("a malformed reply from the zygote"));
    }
    let errno = i32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let pid = i32::from_le_bytes([b[8], b[9], b[10], b[11]]);
    match errno {
        0 if pid > 0 => Ok(pid),
        0 => Err(invalid("the zygote answered pid 0")),
        e => Err(io::Error::new(
            io::Error::from_raw_os_error(e).kind(),
            format!(
                "the zygote: {} ({})",
                String::from_utf8_lossy(&b[12..]),
                io::Error::from_raw_os_error(e)
            ),
        )),
    }
}

/// Sends one message with `fds` beside it (no SIGPIPE: a closed peer is an error).
pub fn send_with_fds(sock: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<()> {
    match crate::fdpass::send(sock, bytes, fds, MsgFlags::empty())? {
        n if n == bytes.len() => Ok(()),
        _ => Err(invalid("a short send on a SOCK_SEQPACKET socket")),
    }
}

/// Receives one message (None at the end of the socket) and its descriptors, which are
/// close-on-exec. A message or descriptor list cut short is an error.
pub fn recv_with_fds(sock: RawFd, buf: &mut [u8]) -> io::Result<Option<(usize, Vec<OwnedFd>)>> {
    let got = crate::fdpass::recv(sock, buf, MAX_FDS, MsgFlags::empty())?;
    if got.truncated || got.fds_truncated {
        return Err(invalid("a message or its descriptors were cut short"));
    }
    if got.len == 0 && got.fds.is_empty() {
        return Ok(None);
    }
    Ok(Some((got.len, got.fds)))
}

/// The range of our command line's bytes (`arg_start`, `arg_end` of /proc/self/stat).
fn argv_area() -> io::Result<(usize, usize)> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    let after = stat
        .rfind(')')
        .map(|i| &stat[i + 1..])
        .ok_or_else(|| invalid("/proc/self/stat"))?;
    // Fields 48 and 49 (1-based) are arg_start and arg_end; `after` starts at field 3.
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| -> io::Result<usize> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .ok_or_else(|| invalid("/proc/self/stat has no argv range"))
    };
    let (start, end) = (field(48)?, field(49)?);
    if end <= start {
        return Err(invalid("an empty argv range"));
    }
    Ok((start, end))
}

/// The command line `argv` as /proc/PID/cmdline shows it, if it fits in `room` bytes.
fn cmdline_bytes(argv: &[Vec<u8>], room: usize) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    for a in argv {
        line.extend_from_slice(a);
        line.push(0);
    }
    (line.len() <= room).then(|| {
        line.resize(room, 0);
        line
    })
}

/// What runs in a fork: the monitor's entry, given its argv (after argv\[0\]); returns
/// its exit code.
pub type Entry = fn(Vec<OsString>) -> i32;

/// The raw `clone3` arguments (`struct clone_args`, version 0).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
}

/// Forks a sibling (our parent's child) and returns (pid, pidfd) in the zygote, or
/// `Ok(None)` in the fork.
fn fork_sibling() -> io::Result<Option<(i32, OwnedFd)>> {
    let mut pidfd: RawFd = -1;
    let args = CloneArgs {
        flags: (libc::CLONE_PARENT | libc::CLONE_PIDFD) as u64,
        pidfd: &mut pidfd as *mut RawFd as u64,
        // Must be 0 with CLONE_PARENT: the fork gets our own exit signal (SIGCHLD, as
        // skiffd's posix_spawn gave us), so skiffd is told of its end as of any child.
        exit_signal: 0,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM, no new stack): the child goes on with a
    // copy of our memory from this call, as after fork(2). We are single-threaded, so no
    // lock is held by another thread at the copy; the kernel writes the pidfd into our
    // int.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match r {
        r if r < 0 => Err(io::Error::last_os_error()),
        0 => Ok(None),
        // SAFETY: CLONE_PIDFD stored a new descriptor (close-on-exec) that we own.
        pid => Ok(Some((pid as i32, unsafe { OwnedFd::from_raw_fd(pidfd) }))),
    }
}

/// In the fork: starts a session, puts the passed descriptors on their numbers and
/// closes every other one (the zygote's socket among them), takes the request's
/// environment and command line. Errors leave the fork unusable: it exits.
fn become_monitor(req: &Request, fds: Vec<OwnedFd>, area: (usize, usize)) -> io::Result<()> {
    // First: a fork still in the zygote's session is one that never had its go-ahead,
    // which skiffd reaps by that mark once the zygote is gone (see `daemon::zygote`).
    nix::unistd::setsid()?;
    let highest = fds
        .iter()
        .map(|f| f.as_raw_fd())
        .chain(req.targets.iter().copied())
        .max()
        .unwrap_or(2)
        .max(2);
    // Every source above every target and source first, so no dup2 clobbers another.
    let mut moved = Vec::new();
    for fd in &fds {
        // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor of ours or fails.
        let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, highest + 1) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        moved.push(n);
    }
    let top = req.targets.iter().copied().max().unwrap_or(2).max(2);
    for (src, target) in moved.iter().zip(&req.targets) {
        // SAFETY: dup2 between descriptor numbers of ours (the target is inheritable
        // afterwards, as posix_spawn's dup2 file action leaves it).
        if unsafe { libc::dup2(*src, *target) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // Ours are forgotten, not closed one by one: what is not a target is closed below.
    for fd in fds {
        std::mem::forget(fd);
    }
    // Below the highest target: every number that is not a target (where the request's
    // descriptors arrived, the zygote's socket), then everything above. (An exec'd
    // monitor loses those by close-on-exec; a fork must close them.)
    for fd in 3..top {
        if !req.targets.contains(&fd) {
            // SAFETY: closes a descriptor of ours that nothing in this process uses
            // any more (EBADF when it is not open, harmlessly).
            unsafe { libc::close(fd) };
        }
    }
    // SAFETY: as above, for every descriptor above the targets.
    if unsafe { libc::syscall(libc::SYS_close_range, (top + 1) as u32, u32::MAX, 0) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: an empty set, made by sigemptyset, as our new mask.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
    }
    // The environment is the request's alone: nothing of the zygote's stays.
    for (k, _) in std::env::vars_os() {
        // SAFETY: single-threaded.
        unsafe { std::env::remove_var(k) };
    }
    for kv in &req.env {
        let Some(eq) = kv.iter().position(|b| *b == b'=').filter(|i| *i > 0) else {
            continue;
        };
        let k = OsString::from_vec(kv[..eq].to_vec());
        let v = OsString::from_vec(kv[eq + 1..].to_vec());
        // SAFETY: single-threaded.
        unsafe { std::env::set_var(k, v) };
    }
    let (start, end) = area;
    if let Some(line) = cmdline_bytes(&req.argv, end - start) {
        // SAFETY: [start, end) is our own command line's bytes, in our stack's mapping
        // (the kernel's arg_start/arg_end); nothing reads them as Rust data.
        unsafe { std::ptr::copy_nonoverlapping(line.as_ptr(), start as *mut u8, line.len()) };
    }
    if let Ok(name) = std::ffi::CString::new(super::PROCESS_NAME) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
    Ok(())
}

/// The zygote's life: serves requests on [`ZYGOTE_FD`] until its end; returns the exit
/// code. `entry` runs in each fork.
pub fn serve(entry: Entry) -> i32 {
    // Nothing we inherited reaches a fork (the socket is closed there explicitly).
    if crate::fdutil::cloexec_from(ZYGOTE_FD).is_err() {
        return 1;
    }
    // Only skiffd's socketpair: run by hand (nothing on fd 3), there is nothing to do.
    let seqpacket = nix::sys::socket::getsockopt(
        // SAFETY: a descriptor number only borrowed for the call (fails if not open).
        &unsafe { std::os::fd::BorrowedFd::borrow_raw(ZYGOTE_FD) },
        nix::sys::socket::sockopt::SockType,
    );
    if !matches!(seqpacket, Ok(nix::sys::socket::SockType::SeqPacket)) {
        return 2;
    }
    let area = match argv_area() {
        Ok(a) => a,
        Err(_) => return 1,
    };
    if let Ok(name) = std::ffi::CString::new(ZYGOTE_NAME) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
    // The shared set-up: what every monitor does first, done once (its forks keep it).
    super::heap::tune_monitor();
    let stall = std::env::var_os(STALL_ENV);
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        let (n, fds) = match recv_with_fds(ZYGOTE_FD, &mut buf) {
            Ok(Some(m)) => m,
            // skiffd ended (or closed its end): so do we; the monitors go on.
            Ok(None) => return 0,
            // A message cut short: refused, the socket still serves.
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                reply_error(&e);
                continue;
            }
            Err(_) => return 1,
        };
        let decoded = decode_request(&buf[..n]);
        // Nothing of this request stays in the buffer for a later fork.
        wipe(&mut buf[..n]);
        let checked = decoded.and_then(|r| {
            if r.targets.len() + 1 == fds.len() {
                Ok(r)
            } else {
                Err(invalid("the descriptors do not match their numbers"))
            }
        });
        let req = match checked {
            Ok(r) => r,
            Err(e) => {
                reply_error(&e);
                continue;
            }
        };
        if cmdline_bytes(&req.argv, area.1 - area.0).is_none() {
            reply_error(&io::Error::new(
                io::ErrorKind::InvalidInput,
                "the command line does not fit in the zygote's",
            ));
            continue;
        }
        match fork_sibling() {
            Ok(None) => {
                // The fork keeps none of the zygote's buffer.
                drop(std::mem::take(&mut buf));
                let mut fds = fds;
                // Nothing before skiffd has taken the answer (it may have given up).
                if !fds.pop().is_some_and(go_ahead) {
                    std::process::exit(0);
                }
                let code = match become_monitor(&req, fds, area) {
                    Ok(()) => {
                        let args = req.argv[1..]
                            .iter()
                            .map(|a| OsString::from_vec(a.clone()))
                            .collect();
                        drop(req);
                        entry(args)
                    }
                    Err(_) => 1,
                };
                std::process::exit(code)
            }
            Ok(Some((pid, pidfd))) => {
                drop(fds);
                if stall
                    .as_ref()
                    .is_some_and(|p| std::fs::remove_file(p).is_ok())
                {
                    let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGSTOP);
                }
                let _ = send_with_fds(ZYGOTE_FD, &encode_reply(Ok(pid)), &[pidfd.as_raw_fd()]);
            }
            Err(e) => reply_error(&e),
        }
    }
}

/// In a fork: waits for skiffd's go-ahead (one byte) on `go`; false when skiffd closed
/// the pipe without it (it did not take the zygote's answer).
fn go_ahead(go: OwnedFd) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match nix::unistd::read(&go, &mut byte) {
            Ok(n) => return n == 1,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn reply_error(e: &io::Error) {
    let _ = send_with_fds(
        ZYGOTE_FD,
        &encode_reply(Err((
            e.raw_os_error().unwrap_or(libc::EINVAL),
            &e.to_string(),
        ))),
        &[],
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_and_replies_round_trip_and_bad_ones_are_refused() {
        let req = Request {
            argv: vec![
                b"skiff-monitor".to_vec(),
                b"__monitor".to_vec(),
                b"/b".to_vec(),
            ],
            env: vec![b"A=1".to_vec(), b"B=x=y".to_vec()],
            targets: vec![0, 1, 2, 3, 5],
        };
        let bytes = encode_request(&req).unwrap();
        assert_eq!(decode_request(&bytes).unwrap(), req);
        // Cut short anywhere: refused.
        for cut in 0..bytes.len() {
            assert!(decode_request(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        // The same number twice: refused.
        let twice = Request {
            argv: vec![b"m".to_vec()],
            env: Vec::new(),
            targets: vec![0, 1, 2, 3, 3],
        };
        assert!(decode_request(&encode_request(&twice).unwrap()).is_err());
        let mut nul = req;
        nul.argv[2] = b"/b\0c".to_vec();
        assert!(decode_request(&encode_request(&nul).unwrap()).is_err());
        assert_eq!(decode_reply(&encode_reply(Ok(42))).unwrap(), 42);
        let e = decode_reply(&encode_reply(Err((libc::E2BIG, "too long")))).unwrap_err();
        assert!(e.to_string().contains("too long"), "{e}");
    }

    #[test]
    fn a_command_line_fits_or_is_refused() {
        let argv = vec![b"ab".to_vec(), b"c".to_vec()];
        assert_eq!(cmdline_bytes(&argv, 6).unwrap(), b"ab\0c\0\0");
        assert!(cmdline_bytes(&argv, 4).is_none());
    }
}
