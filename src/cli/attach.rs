//! Attach sessions: the client side of the monitor's attach socket (`skiff attach`,
//! `skiff run -t`, `skiff start -a`), and the stdin reader and signals shared with
//! `exec -t`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::MsgFlags;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::mpsc;
use zbus::Connection;

use super::connect::fail;
use super::tty::{self, DetachMatcher, RawMode};
use super::Failure;
use crate::dbus::proxy::ContainerProxy;
use crate::monitor::attach::{self as proto, Packet, MAX_DATA, SEND_STDIN, WANT_OUTPUT};

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The container exited with this code.
    Exited(i32),
    /// The user typed the detach keys.
    Detached,
    /// The monitor closed the connection without an exit code.
    Closed,
    /// We received this signal (tty sessions end on SIGTERM, SIGHUP, SIGINT, SIGQUIT).
    Signaled(i32),
}

/// What a session does.
pub struct SessionOpts<'a> {
    /// Send our stdin to the container (if it takes input).
    pub stdin: bool,
    /// Detach sequence (empty: none).
    pub detach_keys: Vec<u8>,
    /// Forward SIGINT/SIGTERM/… to this container when it has no tty (`start -a`,
    /// `attach`); None: those signals end the session.
    pub sig_proxy: Option<&'a ContainerProxy<'a>>,
}

/// Our stdin, read by a thread (a blocking read cannot be cancelled; the thread dies
/// with the process). `None` on the channel = end-of-file.
pub fn stdin_reader() -> mpsc::UnboundedReceiver<Option<Vec<u8>>> {
    let (tx, rx) = mpsc::unbounded_channel();
    std::thread::spawn(move || {
        let mut stdin = std::io::stdin().lock();
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            match stdin.read(&mut buf) {
                Ok(0) | Err(_) => {
                    let _ = tx.send(None);
                    return;
                }
                Ok(n) => {
                    if tx.send(Some(buf[..n].to_vec())).is_err() {
                        return;
                    }
                }
            }
        }
    });
    rx
}

/// The signals a session watches: SIGWINCH, and SIGINT, SIGTERM, SIGHUP, SIGQUIT
/// (handled, so they no longer kill skiff with the terminal left raw).
pub struct Signals {
    rx: mpsc::UnboundedReceiver<i32>,
}

impl Signals {
    /// Installs the handlers.
    pub fn new() -> Result<Signals, Failure> {
        let (tx, rx) = mpsc::unbounded_channel();
        for n in [
            libc::SIGWINCH,
            libc::SIGINT,
            libc::SIGTERM,
            libc::SIGHUP,
            libc::SIGQUIT,
        ] {
            let mut s: Signal = signal(SignalKind::from_raw(n))
                .map_err(|e| Failure::msg(format!("cannot handle signal {n}: {e}")))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while s.recv().await.is_some() {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(Signals { rx })
    }

    /// The next signal.
    pub async fn next(&mut self) -> i32 {
        match self.rx.recv().await {
            Some(n) => n,
            None => std::future::pending().await,
        }
    }
}

/// Registers `fd` with the runtime.
pub fn async_fd(fd: OwnedFd) -> Result<AsyncFd<OwnedFd>, Failure> {
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .map_err(|e| Failure::msg(format!("fcntl: {e}")))?;
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor for
    // the AsyncFd's whole life.
    unsafe { AsyncFd::register(fd) }.map_err(|e| Failure::msg(format!("register fd: {e}")))
}

async fn send(sock: &AsyncFd<OwnedFd>, p: &Packet) -> Result<(), Errno> {
    loop {
        let data = p.encode();
        match nix::sys::socket::send(
            sock.get_ref().as_raw_fd(),
            &data,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => return Ok(()),
            Err(Errno::EINTR) => continue,
            Err(Errno::EAGAIN) => {
                let mut g = sock.writable().await.map_err(|_| Errno::EIO)?;
                g.clear_ready();
            }
            Err(e) => return Err(e),
        }
    }
}

fn write_out(stream: u8, data: &[u8]) {
    if stream == 2 {
        let mut e = std::io::stderr().lock();
        let _ = e.write_all(data);
        let _ = e.flush();
    } else {
        let mut o = std::io::stdout().lock();
        let _ = o.write_all(data);
        let _ = o.flush();
    }
}

/// Runs a session on a connection from `Container.Attach`.
pub async fn session(sock: OwnedFd, opts: SessionOpts<'_>) -> Result<End, Failure> {
    let ioerr = |what: &str, e: Errno| Failure::msg(format!("attach: {what}: {e}"));
    let sock = async_fd(sock)?;
    let flags = WANT_OUTPUT | if opts.stdin { SEND_STDIN } else { 0 };
    send(&sock, &Packet::Hello { flags })
        .await
        .map_err(|e| ioerr("hello", e))?;
    let mut signals = Signals::new()?;
    let mut raw: Option<RawMode> = None;
    let mut tty = false;
    let mut input: Option<mpsc::UnboundedReceiver<Option<Vec<u8>>>> = None;
    let mut matcher = DetachMatcher::new(opts.detach_keys.clone());
    let end = loop {
        tokio::select! {
            r = sock.readable() => {
                let mut guard = r.map_err(|e| Failure::msg(format!("attach: {e}")))?;
                let mut ended = None;
                loop {
                    match proto::recv(guard.get_inner(), MsgFlags::MSG_DONTWAIT) {
                        Ok(Some(Packet::Info { tty: t, stdin })) => {
                            tty = t;
                            if opts.stdin && stdin {
                                if t {
                                    raw = RawMode::enter()?;
                                }
                                input = Some(stdin_reader());
                            }
                            if t {
                                if let Some((rows, cols)) = tty::window_size() {
                                    let _ = send(&sock, &Packet::Resize { rows, cols }).await;
                                }
                            }
                        }
                        Ok(Some(Packet::Output { stream, data })) => write_out(stream, &data),
                        Ok(Some(Packet::Exit(code))) => {
                            ended = Some(End::Exited(code));
                            break;
                        }
                        Ok(Some(_)) => {}
                        Ok(None) => {
                            ended = Some(End::Closed);
                            break;
                        }
                        Err(Errno::EAGAIN) => {
                            guard.clear_ready();
                            break;
                        }
                        Err(Errno::EINTR) => continue,
                        Err(_) => {
                            ended = Some(End::Closed);
                            break;
                        }
                    }
                }
                if let Some(e) = ended {
                    break e;
                }
            }
            data = next_input(&mut input) => match data {
                Some(bytes) => {
                    let (fwd, detach) = matcher.feed(&bytes);
                    if !fwd.is_empty() {
                        for chunk in fwd.chunks(MAX_DATA) {
                            if send(&sock, &Packet::Input(chunk.to_vec())).await.is_err() {
                                break;
                            }
                        }
                    }
                    if detach {
                        break End::Detached;
                    }
                }
                None => {
                    input = None;
                    if !tty {
                        let _ = send(&sock, &Packet::InputDone).await;
                    }
                }
            },
            n = signals.next() => match (n, tty, opts.sig_proxy) {
                (libc::SIGWINCH, true, _) => {
                    if let Some((rows, cols)) = tty::window_size() {
                        let _ = send(&sock, &Packet::Resize { rows, cols }).await;
                    }
                }
                (libc::SIGWINCH, false, _) => {}
                (n, false, Some(c)) => {
                    let _ = c.kill("main", n).await;
                }
                (n, _, _) => break End::Signaled(n),
            },
        }
    };
    drop(raw);
    Ok(end)
}

async fn next_input(rx: &mut Option<mpsc::UnboundedReceiver<Option<Vec<u8>>>>) -> Option<Vec<u8>> {
    match rx {
        Some(r) => r.recv().await.flatten(),
        None => std::future::pending().await,
    }
}

/// When attaching came too late (the container already ended), shows its logged output
/// instead, so nothing is lost.
pub async fn replay_logs(c: &ContainerProxy<'_>) {
    let Ok((out, err)) = c.open_logs(HashMap::new()).await else {
        return;
    };
    for (fd, stream) in [(OwnedFd::from(out), 1u8), (OwnedFd::from(err), 2u8)] {
        let mut f = std::fs::File::from(fd);
        let mut buf = Vec::new();
        if f.read_to_end(&mut buf).is_ok() {
            write_out(stream, &buf);
        }
    }
}

/// After the monitor sent the exit code: waits until skiffd has recorded the exit too (the
/// monitor tells it just after), so a command run after ours sees the container stopped,
/// as after docker's `start -a`. The code is the session's; a failed wait changes nothing.
/// Bounded: a restart policy may have started the container again before we look, and then
/// "not-running" would wait for its next end.
async fn recorded_exit(c: &ContainerProxy<'_>) {
    match tokio::time::timeout(RECORDED_EXIT_WAIT, c.wait("not-running")).await {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => tracing::debug!("waiting for the recorded exit: {e}"),
        Err(_) => tracing::debug!("skiffd did not record the exit in time (restarted?)"),
    }
}

/// How long [`recorded_exit`] waits at most.
const RECORDED_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Attaches to `c` (just started, or running) and returns the container's exit code;
/// detaching returns 0 and leaves it running.
pub async fn attach_to(c: &ContainerProxy<'_>, opts: SessionOpts<'_>) -> Result<i32, Failure> {
    let end = match c.attach(0).await {
        Ok(fd) => session(fd.into(), opts).await?,
        Err(_) => End::Closed,
    };
    match end {
        End::Exited(code) => {
            recorded_exit(c).await;
            Ok(code)
        }
        End::Detached => Ok(0),
        End::Signaled(n) => Ok(128 + n),
        End::Closed => {
            // Ended before we were served: its output is in the log.
            replay_logs(c).await;
            let (code, _) = c.wait("not-running").await.map_err(|e| fail(e, 125))?;
            Ok(code)
        }
    }
}

/// `skiff run -t`: the container's pty is served by its monitor; we attach to it (no
/// fds passed, no kill on disconnect: detaching leaves it running, as docker does).
/// `interruptible`: a pull of a missing image is ended by SIGINT, SIGTERM or SIGHUP.
pub async fn run_tty(
    conn: &Connection,
    mgr: &crate::dbus::proxy::ManagerProxy<'_>,
    mut endings: super::ending::Endings,
    args: &super::CreateArgs,
    rm: bool,
    interruptible: bool,
) -> Result<i32, Failure> {
    let flags = crate::dbus::RUN_ATTACH | if rm { crate::dbus::RUN_AUTO_REMOVE } else { 0 };
    let mut pulled = false;
    let (id, path) = loop {
        let cfg = super::run_config::config(args, rm)?;
        match mgr.run_container(cfg, HashMap::new(), flags).await {
            Ok(r) => break r,
            Err(e) if !pulled => {
                use super::autopull::AfterFailure;
                let failure = super::containers::run_failure;
                match super::containers::pull_after(conn, args, e, interruptible, failure).await? {
                    AfterFailure::Retry => pulled = true,
                    AfterFailure::Exit(code) => return Ok(code),
                }
            }
            Err(e) => return Err(super::containers::run_failure(e)),
        }
    };
    let target = ContainerProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| fail(e, 125))?;
    let opts = SessionOpts {
        stdin: args.interactive,
        detach_keys: super::tty::parse_detach_keys(super::tty::DEFAULT_DETACH_KEYS)
            .map_err(Failure::msg)?,
        sig_proxy: None,
    };
    let end = match target.attach(0).await {
        Ok(fd) => session(fd.into(), opts).await?,
        Err(_) => End::Closed,
    };
    let code = match end {
        End::Detached => return Ok(0),
        End::Signaled(n) => return Ok(128 + n),
        End::Exited(code) => Some(code),
        End::Closed => {
            if !rm {
                replay_logs(&target).await;
            }
            None
        }
    };
    // The exit code (when the session did not bring it) and, with --rm, the removal.
    let mut died = code;
    let waited = super::ending::wait_call(&target, rm);
    tokio::pin!(waited);
    loop {
        let ending = tokio::select! {
            c = &mut waited => return Ok(died.unwrap_or(c)),
            ev = endings.next_for(&id) => match ev { Some(ev) => ev, None => break },
        };
        match ending {
            super::ending::Ending::Died(c) => {
                died.get_or_insert(c);
                if !rm {
                    break;
                }
            }
            super::ending::Ending::Destroyed if rm => break,
            super::ending::Ending::Destroyed => {}
        }
    }
    died.ok_or_else(|| Failure {
        message: "lost the connection to skiffd before the container exited".into(),
        code: 125,
    })
}

/// `skiff attach`.
pub async fn attach(
    conn: &Connection,
    name: &str,
    no_stdin: bool,
    detach_keys: &str,
    sig_proxy: bool,
) -> Result<i32, Failure> {
    let keys = tty::parse_detach_keys(detach_keys).map_err(Failure::msg)?;
    let c = super::containers::container(conn, name)
        .await
        .map_err(|e| fail(e, 1))?;
    let fd = c.attach(0).await.map_err(|e| fail(e, 1))?;
    let opts = SessionOpts {
        stdin: !no_stdin,
        detach_keys: keys,
        sig_proxy: sig_proxy.then_some(&c),
    };
    match session(fd.into(), opts).await? {
        End::Exited(code) => {
            recorded_exit(&c).await;
            Ok(code)
        }
        End::Detached => Ok(0),
        End::Signaled(n) => Ok(128 + n),
        End::Closed => {
            let (code, _) = c.wait("not-running").await.map_err(|e| fail(e, 1))?;
            Ok(code)
        }
    }
}
