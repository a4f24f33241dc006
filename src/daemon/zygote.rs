//! skiffd's side of the monitor zygote ([`crate::monitor::zygote`]): one
//! `skiff-monitor __zygote` per skiffd, started at the first monitor's spawn, asked for
//! each monitor after that. Its forks are skiffd's children (`CLONE_PARENT`), followed
//! through the pidfd it answers with, exactly as an exec'd monitor is.
//!
//! A zygote that died, or does not answer within [`ANSWER_TIMEOUT`], is replaced (one
//! try per spawn; a new one that fails at once is not tried again for
//! [`RETRY_AFTER`]); a spawn it cannot serve falls back to the exec (see
//! [`super::spawn::Spawn::spawn`]): a monitor's start never fails because of the
//! zygote.
//!
//! A fork waits for a go-ahead on a pipe of its own request before it runs the monitor;
//! skiffd writes it once it has the fork's pid and pidfd. A zygote given up on is not
//! killed at once: skiffd closes its side of the socket, so the zygote ends once through
//! what it was sent, and a thread reads its late answers meanwhile (for at most
//! [`ANSWER_TIMEOUT`] more): each late fork finds its go-ahead pipe closed and exits
//! having done nothing, and is killed and reaped by its pidfd. Only then is the zygote
//! killed (if it is still there) and reaped. A fork whose answer never came (the
//! zygote stopped between the fork and its answer past that time) is found among
//! skiffd's children once the zygote is reaped (it is still in the zygote's session,
//! which a fork leaves first thing after its go-ahead) and reaped too
//! ([`reap_unanswered_forks`]). So a late answer never leaves a second monitor of a
//! container running unfollowed, nor a zombie.
//!
//! A monitor the zygote cannot fork (a command line too long for it, a zygote that
//! fails) is exec'd; that is said once per skiffd run as a warning, then at debug level
//! ([`Client::log_fallback`]).
//!
//! It ends with skiffd: the end of its socket ends it ([`Client::stop`] waits
//! for that at a clean shutdown); a task reaps it.
//!
//! The zygote is part of the daemon's state ([`Client`], held by the daemon). A round trip
//! to it blocks (up to [`ANSWER_TIMEOUT`]): [`Client::fork_monitor`] is called on a
//! blocking thread only (the monitor's spawns run in `spawn_blocking`), never on one of
//! tokio's workers.

use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::socket::{setsockopt, socketpair, sockopt, AddressFamily, SockFlag, SockType};

use crate::monitor::zygote::{self as proto, Request};

/// How long skiffd waits for the zygote's answer (a fork takes well under a
/// millisecond): longer, it is killed and replaced.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long monitors are exec'd after a zygote failed at its first request (e.g. a
/// `skiff-monitor` without the zygote's mode installed beside a newer skiffd), before
/// a zygote is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

/// skiffd's monitor zygote, once started: one per daemon, shared by its clones (the
/// spawns of monitors take turns).
#[derive(Clone, Default)]
pub struct Client {
    slot: Arc<Mutex<Slot>>,
    /// A fallback to the exec was logged as a warning (see [`Client::log_fallback`]).
    fallback_told: Arc<AtomicBool>,
}

#[derive(Default)]
struct Slot {
    zygote: Option<Zygote>,
    /// No zygote is started before then (see [`RETRY_AFTER`]).
    retry_at: Option<std::time::Instant>,
}

struct Zygote {
    exe: PathBuf,
    sock: OwnedFd,
    pid: u32,
    /// Its reaper task: a message (or this end's drop) makes it kill the zygote first.
    kill: Option<tokio::sync::oneshot::Sender<()>>,
    /// Told when the reaper has reaped it.
    reaped: Option<tokio::sync::oneshot::Receiver<()>>,
}

/// Why a request failed.
enum Failure {
    /// The zygote is gone or stuck: start another.
    Broken(io::Error),
    /// The zygote answered that it cannot serve this request.
    Refused(io::Error),
}

impl Zygote {
    /// Spawns `exe __zygote` (with room for its forks' command lines) on one end of a
    /// new socketpair; a task reaps it when it ends.
    fn start(exe: &Path) -> io::Result<Zygote> {
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        let timeout = nix::sys::time::TimeVal::new(ANSWER_TIMEOUT.as_secs() as _, 0);
        setsockopt(&ours, sockopt::ReceiveTimeout, &timeout)?;
        setsockopt(&ours, sockopt::SendTimeout, &timeout)?;
        let mut args = vec![OsStr::new(proto::ZYGOTE_ARG)];
        args.extend(std::iter::repeat_n(OsStr::new(""), proto::ARGV_ROOM));
        let mut child = super::spawn::Spawn {
            exe,
            arg0: Some(OsStr::new(crate::monitor::PROCESS_NAME)),
            args: &args,
            // glibc reads its tunables at a program's start only: the zygote's are its
            // forks' (see `monitor::heap`).
            env: vec![(
                crate::monitor::heap::TUNABLES_ENV.into(),
                crate::monitor::heap::monitor_tunables(),
            )],
            env_remove: &["RUST_LOG"],
            stdio: [None, None, None],
            fds: vec![(theirs, proto::ZYGOTE_FD)],
            zygote: None,
        }
        .spawn()?;
        let pid = child.id();
        let (kill, killed) = tokio::sync::oneshot::channel::<()>();
        let (reaped_tx, reaped) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            tokio::select! {
                status = child.wait() => {
                    tracing::info!("the monitor zygote (pid {pid}) ended: {status:?}");
                }
                _ = killed => {
                    let _ = child.start_kill();
                    let _ = child.wait().await;
                }
            }
            let _ = reaped_tx.send(());
        });
        tracing::debug!("monitor zygote started (pid {pid})");
        Ok(Zygote {
            exe: exe.to_path_buf(),
            sock: ours,
            pid,
            kill: Some(kill),
            reaped: Some(reaped),
        })
    }

    /// One request: the fork's pid and pidfd. The fork has its go-ahead when this
    /// returns them; on an error it never gets one.
    fn ask(&self, bytes: &[u8], fds: &[RawFd]) -> Result<(i32, OwnedFd), Failure> {
        let sock = self.sock.as_raw_fd();
        // The go-ahead pipe: its write end stays here, closed when this returns.
        let (go_r, go_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Failure::Broken(e.into()))?;
        let mut with_go = fds.to_vec();
        with_go.push(go_r.as_raw_fd());
        proto::send_with_fds(sock, bytes, &with_go).map_err(Failure::Broken)?;
        drop(go_r);
        let mut buf = [0u8; 512];
        let (n, mut got) = match proto::recv_with_fds(sock, &mut buf) {
            Ok(Some(m)) => m,
            Ok(None) => return Err(Failure::Broken(io::ErrorKind::UnexpectedEof.into())),
            Err(e) => return Err(Failure::Broken(e)),
        };
        let pid = proto::decode_reply(&buf[..n]).map_err(Failure::Refused)?;
        match (got.pop(), got.is_empty()) {
            (Some(pidfd), true) => {
                // Taken: the fork goes on (if it died meanwhile, its pidfd says so).
                let _ = nix::unistd::write(&go_w, b"g");
                Ok((pid, pidfd))
            }
            _ => Err(Failure::Broken(io::Error::other(
                "the zygote's answer did not carry one pidfd",
            ))),
        }
    }

    /// Gives up on this zygote (it did not answer in time, or broke): closes our side of
    /// the socket, so it ends once through what it was sent, and reads its late answers
    /// on a thread of its own, killing and reaping each late fork (which had no
    /// go-ahead), until the zygote ends or stays silent for [`ANSWER_TIMEOUT`]; then it is
    /// killed and reaped.
    fn abandon(self) {
        let _ =
            nix::sys::socket::shutdown(self.sock.as_raw_fd(), nix::sys::socket::Shutdown::Write);
        let pid = self.pid;
        // (If the thread cannot start, the zygote is dropped with the closure: killed.)
        let started = std::thread::Builder::new()
            .name("zygote-drain".into())
            .spawn(move || {
                self.drain();
                self.end();
            });
        if let Err(e) = started {
            tracing::warn!("the monitor zygote (pid {pid}) is killed at once: {e}");
        }
    }

    /// Reads the answers a zygote given up on still sends (the socket's receive timeout
    /// is [`ANSWER_TIMEOUT`]) until its end; kills and reaps each fork they name.
    fn drain(&self) {
        let sock = self.sock.as_raw_fd();
        let mut buf = [0u8; 512];
        loop {
            let (n, mut got) = match proto::recv_with_fds(sock, &mut buf) {
                Ok(Some(m)) => m,
                // Its end, or silence: it is killed (if still there) on the drop.
                Ok(None) => return,
                Err(e) => {
                    tracing::debug!("the monitor zygote (pid {}) given up on: {e}", self.pid);
                    return;
                }
            };
            let (Ok(pid), Some(pidfd)) = (proto::decode_reply(&buf[..n]), got.pop()) else {
                continue;
            };
            tracing::info!(
                "the monitor zygote (pid {}) answered after skiffd's timeout: its fork {pid} \
                 is killed (it never ran the monitor)",
                self.pid
            );
            kill_and_reap(pid, &pidfd);
        }
    }
}

impl Zygote {
    /// After the drain: kills the zygote (if it is still there), waits until it is
    /// reaped — from then on it forks nothing — and reaps the forks it left.
    fn end(mut self) {
        let pid = self.pid;
        let reaped = self.reaped.take();
        drop(self);
        if let Some(r) = reaped {
            // (An error: the reaper is gone with the runtime, at skiffd's end.)
            let _ = r.blocking_recv();
        }
        reap_unanswered_forks(pid);
    }
}

/// Reaps the forks the reaped zygote `zygote` left (see the module documentation): a
/// fork whose answer never reached skiffd never had its go-ahead, so it exits at once
/// (or is killed here), as skiffd's child (`CLONE_PARENT`) that no one waits for. It is
/// told from skiffd's other children by its session: the zygote's (a fork that had its
/// go-ahead starts a session of its own first thing; skiffd's other children are in
/// their own or skiffd's, and the zygote is its session's leader, the one process whose
/// id it is). Only a fork stopped for the whole give-up time
/// exactly between its go-ahead and that `setsid` could be taken for one.
fn reap_unanswered_forks(zygote: u32) {
    let me = std::process::id();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in entries.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == zygote || crate::procstat::parent_and_session(pid) != Some((me, zygote)) {
            continue;
        }
        // SAFETY: pidfd_open with a pid and no flags; a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        let Ok(fd) = RawFd::try_from(fd) else {
            continue;
        };
        if fd < 0 {
            continue;
        }
        // SAFETY: pidfd_open returned this new descriptor, ours alone.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        tracing::info!(
            "the monitor zygote (pid {zygote}) given up on left its fork {pid}, which never \
             ran the monitor: reaped"
        );
        // Our unreaped child: its pid names it until this reaps it.
        kill_and_reap(pid as i32, &pidfd);
    }
}

/// Kills our child `pid` by its `pidfd` and reaps it (a late fork: it exits by itself
/// at once, having had no go-ahead).
fn kill_and_reap(pid: i32, pidfd: &OwnedFd) {
    // SAFETY: pidfd_send_signal on a pidfd of ours, no siginfo, no flags.
    unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            libc::SIGKILL,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    let mut status = 0;
    // SAFETY: waitpid on our own unreaped child (a fork with CLONE_PARENT is ours; its
    // pid cannot be reused before this reaps it, and nothing else knows it).
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

impl Drop for Zygote {
    /// A zygote given up on is killed (its socket's end would end it too, unless stuck).
    fn drop(&mut self) {
        if let Some(k) = self.kill.take() {
            let _ = k.send(());
        }
    }
}

/// Whether monitors of `exe` come from a zygote: only the `skiff-monitor` binary has the
/// zygote's mode (skiffd running itself as the monitor execs it each time).
pub(crate) fn serves(exe: &Path) -> bool {
    exe.file_name() == Some(OsStr::new(crate::monitor::PROCESS_NAME))
}

impl Client {
    /// Forks a monitor from the zygote of `exe` (started, or replaced, here): `argv`, the
    /// whole environment `envp`, and each descriptor `(fd, number)` on its number.
    /// Returns the monitor's pid and pidfd; an error means the caller execs the monitor
    /// instead. Blocks (a round trip to the zygote, or its start): call it on a blocking
    /// thread, never on one of tokio's workers.
    pub(crate) fn fork_monitor(
        &self,
        exe: &Path,
        argv: &[CString],
        envp: &[CString],
        fds: &[(RawFd, RawFd)],
    ) -> io::Result<(i32, OwnedFd)> {
        let req = Request {
            argv: argv.iter().map(|a| a.as_bytes().to_vec()).collect(),
            env: envp.iter().map(|e| e.as_bytes().to_vec()).collect(),
            targets: fds.iter().map(|(_, t)| *t).collect(),
        };
        let bytes = proto::encode_request(&req)?;
        let sources: Vec<RawFd> = fds.iter().map(|(f, _)| *f).collect();
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.retry_at.is_some_and(|t| std::time::Instant::now() < t) {
            // (WouldBlock: the caller execs without a warning each time.)
            return Err(io::Error::new(
                io::ErrorKind::WouldBlock,
                "a zygote failed recently",
            ));
        }
        let mut last = None;
        for _ in 0..2 {
            let fresh = slot.zygote.as_ref().is_none_or(|z| z.exe != exe);
            if fresh {
                slot.zygote = Some(Zygote::start(exe)?);
            }
            let Some(z) = slot.zygote.as_ref() else {
                break;
            };
            let e = match z.ask(&bytes, &sources) {
                Ok(r) => return Ok(r),
                Err(Failure::Refused(e)) => return Err(e),
                Err(Failure::Broken(e)) => e,
            };
            if fresh {
                tracing::warn!(
                    "a new monitor zygote ({}) failed ({e}): monitors are exec'd for {}s",
                    exe.display(),
                    RETRY_AFTER.as_secs()
                );
            } else {
                tracing::info!(
                    "the monitor zygote (pid {}) cannot serve ({e}): starting another",
                    z.pid
                );
            }
            if let Some(z) = slot.zygote.take() {
                z.abandon();
            }
            if fresh {
                slot.retry_at = Some(std::time::Instant::now() + RETRY_AFTER);
                return Err(e);
            }
            last = Some(e);
        }
        Err(last.unwrap_or_else(|| io::Error::other("no zygote")))
    }

    /// Logs why the monitor of `exe` is exec'd rather than forked (`e`, from
    /// [`Client::fork_monitor`]): a warning the first time in this skiffd's run, at debug
    /// level after that (a command line too long for the zygote is every start's).
    pub(crate) fn log_fallback(&self, exe: &Path, e: &io::Error) {
        if self.fallback_told.swap(true, Ordering::Relaxed) {
            tracing::debug!(
                "the monitor zygote cannot fork {}: {e}; starting it by exec",
                exe.display()
            );
        } else {
            tracing::warn!(
                "the monitor zygote cannot fork {}: {e}; starting it by exec (said once: \
                 later monitors it cannot fork are logged at debug level)",
                exe.display()
            );
        }
    }

    /// At skiffd's clean shutdown: closes the zygote's socket and waits (at most `limit`)
    /// until it has ended and been reaped, so it does not outlive skiffd. Its monitors go
    /// on.
    pub async fn stop(&self, limit: Duration) {
        // The lock is held through a spawn's round trip: taken off the async workers.
        let slot = self.slot.clone();
        let taken = tokio::task::spawn_blocking(move || {
            slot.lock().unwrap_or_else(|p| p.into_inner()).zygote.take()
        })
        .await;
        let Ok(Some(mut z)) = taken else {
            return;
        };
        let reaped = z.reaped.take();
        // The socket's end ends it; the kill sender stays until then (a drop would kill).
        let kill = z.kill.take();
        drop(z);
        if let Some(r) = reaped {
            if tokio::time::timeout(limit, r).await.is_err() {
                tracing::debug!("the monitor zygote did not end in time: killing it");
                drop(kill);
            }
        }
    }
}

impl super::Daemon {
    /// The monitor zygote's client, for a monitor's spawn (see [`Client::fork_monitor`]).
    pub(crate) fn zygote(&self) -> &Client {
        &self.inner.zygote
    }

    /// At a clean shutdown: ends the monitor zygote (see [`Client::stop`]).
    pub async fn stop_zygote(&self, limit: Duration) {
        self.inner.zygote.stop(limit).await;
    }
}
