//! The service manager's readiness protocol (sd_notify(3)): `READY=1`, `STATUS=…`,
//! `STOPPING=1` as datagrams to the socket in `$NOTIFY_SOCKET` (a path, or an abstract
//! name written with a leading `@`).
//!
//! A few lines over a `UnixDatagram` rather than a crate: the protocol is one
//! `sendto` per message, and the crates that offer it (sd-notify, libsystemd) either
//! keep `NOTIFY_SOCKET` in the environment, where every helper and container process
//! would inherit it, or bring a large dependency for this one call.

use std::os::unix::net::{SocketAddr, UnixDatagram};

/// Errors talking to the service manager.
#[derive(Debug, thiserror::Error)]
pub enum NotifyError {
    /// `$NOTIFY_SOCKET` is not a usable address.
    #[error("NOTIFY_SOCKET={0:?} is not a socket path or @abstract name")]
    BadAddress(String),
    /// The datagram socket could not be made or the message not sent.
    #[error("cannot notify the service manager at {0}: {1}")]
    Io(String, #[source] std::io::Error),
}

/// A connection to the service manager's notification socket.
#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    name: String,
}

impl Notifier {
    /// Takes `$NOTIFY_SOCKET` out of the environment (nothing we start may notify in
    /// our name) and opens it. `None` when we do not run under a service manager that
    /// wants notifications. Call it before any thread starts (it changes the environment).
    pub fn take_from_env() -> Option<Result<Notifier, NotifyError>> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        std::env::remove_var("NOTIFY_SOCKET");
        let name = name.to_string_lossy().into_owned();
        Some(Notifier::open(&name))
    }

    /// Opens the notification socket `name` (a path or `@abstract`).
    pub fn open(name: &str) -> Result<Notifier, NotifyError> {
        let addr = if let Some(abs) = name.strip_prefix('@') {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(abs.as_bytes())
        } else if name.starts_with('/') {
            SocketAddr::from_pathname(name)
        } else {
            return Err(NotifyError::BadAddress(name.to_string()));
        }
        .map_err(|_| NotifyError::BadAddress(name.to_string()))?;
        let sock = UnixDatagram::unbound().map_err(|e| NotifyError::Io(name.to_string(), e))?;
        Ok(Notifier {
            sock,
            addr,
            name: name.to_string(),
        })
    }

    /// Sends one message (newline-separated `KEY=VALUE` assignments).
    pub fn send(&self, msg: &str) -> Result<(), NotifyError> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
            .map_err(|e| NotifyError::Io(self.name.clone(), e))
    }

    /// `READY=1` with a status line.
    pub fn ready(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)))
    }

    /// A new status line (`systemctl status` shows it).
    pub fn status(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("STATUS={}", one_line(status)))
    }

    /// `STOPPING=1` with a status line.
    pub fn stopping(&self, status: &str) -> Result<(), NotifyError> {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)))
    }
}

/// A status has to stay one assignment: no newlines.
fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}

/// skiffd's status line: how many containers there are and how many run.
pub fn containers_status(daemon: &super::Daemon) -> String {
    let all = daemon.list(true);
    let running = all
        .iter()
        .filter(|r| r.state.status == super::Status::Running)
        .count();
    format!(
        "{} container{}, {running} running",
        all.len(),
        if all.len() == 1 { "" } else { "s" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_reach_a_path_socket() {
        let dir = std::env::temp_dir().join(format!("skiff-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let server = UnixDatagram::bind(&path).unwrap();
        let n = Notifier::open(path.to_str().unwrap()).unwrap();
        n.ready("2 containers,\n1 running").unwrap();
        n.stopping("bye").unwrap();
        let mut buf = [0u8; 256];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(
            &buf[..len],
            b"READY=1\nSTATUS=2 containers, 1 running".as_slice()
        );
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STOPPING=1\nSTATUS=bye".as_slice());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn abstract_names_and_bad_addresses() {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("skiff-notify-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        Notifier::open(&format!("@{name}"))
            .unwrap()
            .status("x")
            .unwrap();
        let mut buf = [0u8; 64];
        let len = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..len], b"STATUS=x".as_slice());
        assert!(matches!(
            Notifier::open("relative/path"),
            Err(NotifyError::BadAddress(_))
        ));
    }
}
