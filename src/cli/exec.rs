//! `skiff exec`: a command in a running container, with the caller's stdio.

use std::collections::HashMap;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};

use nix::errno::Errno;
use tokio::io::unix::AsyncFd;

use futures_util::StreamExt;
use zbus::{Connection, OwnedVariant, Variant};

use super::attach::{async_fd, stdin_reader, Signals};
use super::connect::{error_name, fail};
use super::containers::container;
use super::tty::{window_size, RawMode};
use super::Failure;
use crate::dbus::proxy::ExecProxy;
use crate::runtime::pty::set_size;

/// Flags of `skiff exec`.
pub struct ExecArgs {
    /// -i
    pub interactive: bool,
    /// -t
    pub tty: bool,
    /// -d
    pub detach: bool,
    /// -e
    pub env: Vec<String>,
    /// -w
    pub workdir: Option<String>,
    /// -u
    pub user: Option<String>,
    /// --privileged
    pub privileged: bool,
}

fn exec_failure(e: zbus::Error) -> Failure {
    let code = match error_name(&e).as_deref() {
        Some("org.skiff.Error.CommandNotFound") => 127,
        Some("org.skiff.Error.CommandNotExecutable") => 126,
        _ => 125,
    };
    fail(e, code)
}

/// Runs the command; returns its exit code.
pub async fn exec(
    conn: &Connection,
    name: &str,
    command: &[String],
    a: ExecArgs,
) -> Result<i32, Failure> {
    let ov = |v: Variant<'_>| OwnedVariant::try_from(v).map_err(|e| Failure::msg(e.to_string()));
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !a.env.is_empty() {
        options.insert("env", ov(Variant::from(a.env.clone()))?);
    }
    if let Some(w) = &a.workdir {
        options.insert("workdir", ov(Variant::from(w.as_str()))?);
    }
    if let Some(u) = &a.user {
        options.insert("user", ov(Variant::from(u.as_str()))?);
    }
    let tty = a.tty && !a.detach;
    if tty {
        options.insert("tty", ov(Variant::from(true))?);
        // The pty starts with our terminal's size, before the command runs.
        if let Some((rows, cols)) = window_size() {
            let size = vec![u32::from(rows), u32::from(cols)];
            options.insert("console-size", ov(Variant::from(size))?);
        }
    }
    if a.privileged {
        options.insert("privileged", ov(Variant::from(true))?);
    }
    let c = container(conn, name).await.map_err(exec_failure)?;
    let mgr = super::connect::manager(conn).await.map_err(exec_failure)?;
    // Subscribe first: a quick command may end before Exec's reply.
    let mut events = mgr.receive_event().await.map_err(exec_failure)?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Failure::msg(format!("/dev/null: {e}")))?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let mut fds: HashMap<u32, zbus::Fd<'_>> = HashMap::new();
    if !a.detach && !tty {
        fds.insert(
            0,
            if a.interactive {
                stdin.as_fd().into()
            } else {
                null.as_fd().into()
            },
        );
        fds.insert(1, stdout.as_fd().into());
        fds.insert(2, stderr.as_fd().into());
    }
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    let (id, path) = c.exec(&argv, options, fds).await.map_err(exec_failure)?;
    if a.detach {
        return Ok(0);
    }
    if tty {
        let e = ExecProxy::builder(conn)
            .path(path)
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| fail(e, 125))?;
        // The exec may already have ended (its pty gone): the exit code still comes.
        if let Ok((master, _)) = e.open_pty().await {
            pty_session(master.into(), a.interactive).await?;
        }
    }
    while let Some(sig) = events.next().await {
        let Ok(ev) = sig.args() else { continue };
        if *ev.action() == "exec_die" && ev.attributes().get("execID") == Some(&id) {
            return Ok(ev
                .attributes()
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(125));
        }
    }
    Err(Failure {
        message: "lost the connection to skiffd before the command ended".into(),
        code: 125,
    })
}

/// Copies between our terminal and the exec's pty master (handed to us by skiffd; the
/// exec has no other client) until the process's side of the pty closes. SIGWINCH
/// resizes the pty directly.
async fn pty_session(master: OwnedFd, interactive: bool) -> Result<(), Failure> {
    let master = async_fd(master)?;
    let mut signals = Signals::new()?;
    if let Some((rows, cols)) = window_size() {
        let _ = set_size(master.get_ref(), rows, cols);
    }
    let raw = if interactive { RawMode::enter()? } else { None };
    let mut input = interactive.then(stdin_reader);
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        tokio::select! {
            r = master.readable() => {
                let mut g = r.map_err(|e| Failure::msg(format!("pty: {e}")))?;
                match nix::unistd::read(g.get_inner(), &mut buf) {
                    Ok(0) | Err(Errno::EIO) => break,
                    Ok(n) => {
                        let mut o = std::io::stdout().lock();
                        let _ = o.write_all(&buf[..n]);
                        let _ = o.flush();
                    }
                    Err(Errno::EAGAIN) => g.clear_ready(),
                    Err(Errno::EINTR) => {}
                    Err(e) => return Err(Failure::msg(format!("reading the pty: {e}"))),
                }
            }
            data = async {
                match &mut input {
                    Some(rx) => rx.recv().await.flatten(),
                    None => std::future::pending().await,
                }
            } => match data {
                Some(bytes) => write_all_async(&master, &bytes).await,
                None => input = None,
            },
            n = signals.next() => {
                if n == libc::SIGWINCH {
                    if let Some((rows, cols)) = window_size() {
                        let _ = set_size(master.get_ref(), rows, cols);
                    }
                } else {
                    drop(raw);
                    return Err(Failure { message: format!("skiff exec: signal {n}"), code: 128 + n });
                }
            }
        }
    }
    drop(raw);
    Ok(())
}

async fn write_all_async(master: &AsyncFd<OwnedFd>, mut data: &[u8]) {
    while !data.is_empty() {
        match nix::unistd::write(master.get_ref(), data) {
            Ok(n) => data = &data[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) => match master.writable().await {
                Ok(mut g) => g.clear_ready(),
                Err(_) => return,
            },
            Err(_) => return,
        }
    }
}
