//! The shared network of `--network bridge` (the default of containers in the shared
//! user namespace): ONE slirp4netns per skiffd instead of one per container.
//!
//! `skiff-monitor __netns DIR` (or skiffd's `__netns` helper) ([`holder_main`]) is the holder, podman's pause process for the
//! network: it gets the shared user namespace on fd [`USERNS_FD`], has a short-lived
//! child make a network namespace owned by it (with the bridge [`link::BRIDGE`]) and
//! keeps both as descriptors. It starts slirp4netns on that namespace without
//! `--configure` and enslaves its TAP device to the bridge. Each container's monitor
//! then adds a veth pair between the bridge and the container's own namespace
//! ([`super::bridge`]): the container gets 10.0.2.N/24 in slirp4netns's network, so
//! slirp4netns sees each container's own address (no NAT) and containers reach each
//! other on the bridge.
//!
//! The holder lives in the host's namespaces (slirp4netns must start there), in a
//! session of its own: it outlives a SIGKILLed skiffd, and the next skiffd re-adopts it
//! through its state file ([`State`], checked by the process's start time), taking the
//! shared user namespace from it so new containers join the old ones' network. When
//! slirp4netns dies the holder notices (SIGCHLD) and starts another, whose new TAP
//! device it enslaves again: the containers' links and addresses stay, and the ports
//! their monitors published through the dead one are added to it
//! ([`super::hostfwds`]). It ends on SIGTERM (skiffd's shutdown with no container on
//! the network), stopping slirp4netns.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::fcntl::OFlag;
use serde::{Deserialize, Serialize};

use super::{link, read_log, wait_readable, Error};

/// The hidden argument that runs the holder (`skiff-monitor __netns DIR`, or skiffd's
/// helper of that name when skiff-monitor is not installed).
pub const HOLDER_ARG: &str = "__netns";
/// The holder's process name (and its namespace keeper's, a fork): apart from the
/// monitors in `ps` and in bench/memory-bench.sh.
pub const PROCESS_NAME: &std::ffi::CStr = c"skiff-netns";
/// The descriptor on which the holder gets the shared user namespace.
pub const USERNS_FD: RawFd = 3;
/// The holder's state file in its directory.
pub const STATE_FILE: &str = "holder.json";
/// slirp4netns's API socket in the holder's directory.
pub const API_NAME: &str = "slirp4netns.sock";
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How many times in a row slirp4netns may fail to start before the holder gives up
/// restarting it.
const MAX_RESTARTS: u32 = 5;

/// What the holder publishes for skiffd (its state file) and monitors (in their plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    /// The holder's pid.
    pub pid: i32,
    /// Its start time (field 22 of /proc/PID/stat), against pid reuse.
    pub start_time: u64,
    /// Its descriptor of the shared user namespace.
    pub userns_fd: RawFd,
    /// Its descriptor of the shared network namespace.
    pub netns_fd: RawFd,
}

impl State {
    /// The path of the shared network namespace (through the holder's descriptor).
    pub fn netns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", self.pid, self.netns_fd))
    }

    /// The path of the shared user namespace (through the holder's descriptor).
    pub fn userns_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/{}/fd/{}", self.pid, self.userns_fd))
    }

    /// Whether the holder described still runs (same pid, same start time).
    pub fn alive(&self) -> bool {
        start_time(self.pid) == Some(self.start_time)
    }

    /// Reads the state file in `dir`; None when missing, unreadable or its holder is
    /// gone.
    pub fn load_alive(dir: &Path) -> Option<State> {
        let text = std::fs::read(dir.join(STATE_FILE)).ok()?;
        let s: State = serde_json::from_slice(&text).ok()?;
        s.alive().then_some(s)
    }
}

/// The start time of process `pid` (clock ticks after boot), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    crate::procstat::start_time(u32::try_from(pid).ok()?)
}

/// `skiff-monitor __netns DIR` (or `skiffd __netns DIR`): see the module's documentation. Writes one byte to stdout once
/// the network is up (its state in `DIR/holder.json`), or its error to stderr and
/// exits 1. Returns the exit code.
pub fn holder_main(dir: &Path) -> i32 {
    match run(dir) {
        Ok(()) => 0,
        Err(e) => {
            tracing::error!("shared network: {e}");
            eprintln!("{e}");
            1
        }
    }
}

fn run(dir: &Path) -> Result<(), Error> {
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, PROCESS_NAME.as_ptr(), 0, 0, 0) };
    // Our own session: skiffd's end (or its terminal's) does not signal us.
    let _ = nix::unistd::setsid();
    // Signals are taken with sigwait: blocked before any child exists.
    let mut set = nix::sys::signal::SigSet::empty();
    for s in [
        nix::sys::signal::Signal::SIGCHLD,
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGINT,
        nix::sys::signal::Signal::SIGHUP,
    ] {
        set.add(s);
    }
    set.thread_block()
        .map_err(|e| Error::sys("sigprocmask", e))?;
    let (netns, keeper) = make_netns()?;
    // A new network: no container's ports are on it yet.
    super::hostfwds::clear(dir);
    let me = std::process::id() as i32;
    let state = State {
        pid: me,
        start_time: start_time(me).unwrap_or(0),
        userns_fd: USERNS_FD,
        netns_fd: netns.as_raw_fd(),
    };
    let mut slirp = start_slirp(dir, &state, keeper.pid)?;
    let path = dir.join(STATE_FILE);
    let json = serde_json::to_vec(&state).map_err(|e| Error::Helper(e.to_string()))?;
    crate::fsutil::replace_file(&path, &json).map_err(|e| Error::io(&path, e))?;
    tracing::info!(pid = me, "shared network up");
    // Ready: tell skiffd, then let go of its pipes (it may die; we stay).
    let mut out = std::io::stdout();
    let _ = out.write_all(b"n").and_then(|()| out.flush());
    if let Ok(null) = File::options().read(true).write(true).open("/dev/null") {
        for fd in 0..=2 {
            // SAFETY: dup2 onto our own stdio descriptors.
            unsafe { libc::dup2(null.as_raw_fd(), fd) };
        }
    }
    let mut failures = 0u32;
    loop {
        let sig = match set.wait() {
            Ok(s) => s,
            Err(_) => continue,
        };
        if sig != nix::sys::signal::Signal::SIGCHLD {
            tracing::info!("shared network: {sig}, stopping");
            if let Some(s) = slirp.take() {
                s.stop();
            }
            let _ = std::fs::remove_file(&path);
            let _ = std::fs::remove_file(dir.join(API_NAME));
            return Ok(());
        }
        // Reap every ended child; restart slirp4netns if it was one of them.
        let died = slirp.as_mut().is_none_or(|s| s.ended());
        let keeper_pid = nix::unistd::Pid::from_raw(keeper.pid);
        if !matches!(
            nix::sys::wait::waitpid(keeper_pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)),
            Ok(nix::sys::wait::WaitStatus::StillAlive)
        ) {
            tracing::error!("shared network: its namespace keeper ended; stopping");
            if let Some(s) = slirp.take() {
                s.stop();
            }
            let _ = std::fs::remove_file(&path);
            return Err(Error::Helper("the namespace keeper ended".into()));
        }
        if !died {
            continue;
        }
        let why = slirp
            .take()
            .map(|s| read_log(&s.log))
            .unwrap_or_else(|| "not running".into());
        tracing::warn!("shared network: slirp4netns ended ({why}); starting another");
        while failures < MAX_RESTARTS {
            std::thread::sleep(Duration::from_millis(100 << failures.min(4)));
            match start_slirp(dir, &state, keeper.pid) {
                Ok(s) => {
                    slirp = s;
                    tracing::info!(
                        "shared network: slirp4netns restarted; re-adding the recorded forwards"
                    );
                    let n = super::hostfwds::restore(dir, &dir.join(API_NAME));
                    tracing::info!("shared network: {n} forward(s) re-added");
                    break;
                }
                Err(e) => {
                    failures += 1;
                    tracing::error!("shared network: cannot restart slirp4netns: {e}");
                }
            }
        }
        if slirp.is_some() {
            failures = 0;
        } else {
            tracing::error!(
                "shared network: slirp4netns failed {MAX_RESTARTS} times; containers on the \
                 bridge have no outside network until skiffd restarts with none of them"
            );
        }
    }
}

/// The child that stays in the shared namespaces: slirp4netns joins them by its pid
/// (its sandbox needs that form). It ends when the holder does (end-of-file on `_go`).
struct Keeper {
    pid: i32,
    _go: OwnedFd,
}

/// A child joins the shared user namespace, makes a network namespace with loopback and
/// the bridge up, and stays there ([`Keeper`]); we keep a descriptor of the namespace.
fn make_netns() -> Result<(OwnedFd, Keeper), Error> {
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (go_r, go_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    // SAFETY: we have one thread; the child leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(Error::sys("fork", nix::errno::Errno::last()));
    }
    if pid == 0 {
        drop(ready_r);
        drop(go_w);
        let r = (|| -> Result<(), (u8, i32)> {
            link::join(USERNS_FD, libc::CLONE_NEWUSER).map_err(|e| (1, e))?;
            // SAFETY: unshare in this child only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } < 0 {
                return Err((2, nix::errno::Errno::last() as i32));
            }
            super::bring_up_loopback().map_err(|e| (3, e.raw_os_error().unwrap_or(libc::EIO)))?;
            link::send(&link::new_bridge()).map_err(|e| (4, e))?;
            Ok(())
        })();
        let msg: [u8; 5] = match r {
            Ok(()) => [0; 5],
            Err((step, e)) => {
                let b = e.to_ne_bytes();
                [step, b[0], b[1], b[2], b[3]]
            }
        };
        // SAFETY: writes to our pipe, waits for the holder's end, then ends the child.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            libc::write(ready_w.as_raw_fd(), msg.as_ptr().cast(), 5);
            let mut b = [0u8; 1];
            libc::read(go_r.as_raw_fd(), b.as_mut_ptr().cast(), 1);
            libc::_exit(0);
        }
    }
    drop(ready_w);
    drop(go_r);
    let mut msg = [0u8; 5];
    let got = File::from(ready_r).read_exact(&mut msg);
    let ns = if got.is_err() {
        Err(Error::Helper("the network namespace's child died".into()))
    } else if msg[0] != 0 {
        let errno = i32::from_ne_bytes([msg[1], msg[2], msg[3], msg[4]]);
        Err(Error::Helper(format!(
            "cannot make the shared network namespace (step {}): {}",
            msg[0],
            std::io::Error::from_raw_os_error(errno)
        )))
    } else {
        let path = format!("/proc/{pid}/ns/net");
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| Error::io(Path::new(&path), e))
    };
    match ns {
        Ok(ns) => Ok((ns, Keeper { pid, _go: go_w })),
        Err(e) => {
            drop(go_w);
            let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None);
            Err(e)
        }
    }
}

/// A running slirp4netns of the shared network.
struct SharedSlirp {
    child: Child,
    exit_w: OwnedFd,
    log: PathBuf,
}

impl SharedSlirp {
    fn ended(&mut self) -> bool {
        !matches!(self.child.try_wait(), Ok(None))
    }

    fn stop(mut self) {
        drop(self.exit_w);
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        if !super::wait_gone(pid, Duration::from_secs(2)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts slirp4netns on the shared namespaces (no `--configure`: the TAP device is a
/// port of the bridge, the containers have the addresses), waits until it is ready and
/// enslaves its TAP device.
fn start_slirp(dir: &Path, state: &State, keeper: i32) -> Result<Option<SharedSlirp>, Error> {
    let api = dir.join(API_NAME);
    let log = dir.join("slirp4netns.log");
    let _ = std::fs::remove_file(&api);
    let log_file = File::create(&log).map_err(|e| Error::io(&log, e))?;
    let log_err = log_file.try_clone().map_err(|e| Error::io(&log, e))?;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (exit_r, exit_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let mut cmd = Command::new("slirp4netns");
    cmd.arg(format!("--mtu={}", link::MTU));
    for f in super::slirp::supported_flags() {
        cmd.arg(f);
    }
    cmd.current_dir(dir)
        .args(["--api-socket", API_NAME])
        .args(["--ready-fd=3", "--exit-fd=4"])
        .arg(keeper.to_string())
        .arg(link::TAP)
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let child = super::slirp::spawn_with_pipes(&mut cmd, ready_w, exit_r)?;
    let slirp = SharedSlirp { child, exit_w, log };
    let mut ready = File::from(ready_r);
    let ok = wait_readable(&ready, READY_TIMEOUT) && {
        let mut b = [0u8; 1];
        matches!(ready.read(&mut b), Ok(1))
    };
    if !ok {
        let why = read_log(&slirp.log);
        slirp.stop();
        return Err(Error::Helper(format!(
            "slirp4netns did not get ready: {why}"
        )));
    }
    let (u, n) = (state.userns_fd, state.netns_fd);
    let enslaved = link::in_child("enslaving slirp4netns's TAP device", || {
        link::join(u, libc::CLONE_NEWUSER).map_err(|e| (1, e))?;
        link::join(n, libc::CLONE_NEWNET).map_err(|e| (2, e))?;
        let tap = link::index_of(link::TAP).map_err(|e| (3, e))?;
        let br = link::index_of(link::BRIDGE).map_err(|e| (4, e))?;
        link::send(&link::set_up(tap, Some(br))).map_err(|e| (5, e))
    });
    if let Err(e) = enslaved {
        slirp.stop();
        return Err(e);
    }
    Ok(Some(slirp))
}

/// A descriptor of the namespace at `path` (close-on-exec).
pub fn open_ns(path: &Path) -> Result<OwnedFd, Error> {
    let f = File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: into_raw_fd hands over a descriptor we own.
    Ok(unsafe { OwnedFd::from_raw_fd(std::os::fd::IntoRawFd::into_raw_fd(f)) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_is_stable_and_absent_for_no_process() {
        let me = std::process::id() as i32;
        let a = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(a));
        assert_eq!(start_time(i32::MAX), None);
        let s = State {
            pid: me,
            start_time: a,
            userns_fd: 3,
            netns_fd: 7,
        };
        assert!(s.alive());
        assert!(!State {
            start_time: a + 1,
            ..s.clone()
        }
        .alive());
        assert_eq!(s.netns_path(), PathBuf::from(format!("/proc/{me}/fd/7")));
    }
}
