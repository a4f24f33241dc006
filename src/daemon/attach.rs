//! A client's way to a running container's monitor: a connection to its attach socket
//! (the daemon stays out of the data path), and the pty's window size.

use std::os::fd::OwnedFd;

use super::container::Status;
use super::{Daemon, Error};
use crate::monitor;

impl Daemon {
    /// A connection to the running container's attach socket (served by its monitor),
    /// for the client to use directly: the daemon stays out of the data path.
    pub fn attach(&self, name_or_id: &str) -> Result<OwnedFd, Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if rec.state.status != Status::Running {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        let path = monitor::attach::socket_path(&self.bundle_dir(&rec.id));
        monitor::attach::connect(&path).map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED => {
                Error::InvalidArgument(format!(
                    "{} has no attach socket (its monitor is gone or older than this skiffd)",
                    rec.name
                ))
            }
            e => Error::Runtime(format!("connect to the monitor of {}: {e}", rec.name)),
        })
    }

    /// Sets the window size of a tty container's pty: now when it runs, else as the size
    /// its next start gives the pty before the command runs (docker's ConsoleSize).
    pub fn resize(&self, name_or_id: &str, rows: u16, cols: u16) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if !rec.config.tty {
            return Err(Error::InvalidArgument(format!(
                "{} has no tty to resize (create it with -t)",
                rec.name
            )));
        }
        if rec.state.status != Status::Running {
            if rec.config.console_size != Some([rows, cols]) {
                c.update(|r| r.config.console_size = Some([rows, cols]))?;
            }
            return Ok(());
        }
        let fd = self.attach(name_or_id)?;
        let send = |p: &monitor::attach::Packet| {
            monitor::attach::send(&fd, p).map_err(|e| Error::Runtime(format!("resize: {e}")))
        };
        send(&monitor::attach::Packet::Hello { flags: 0 })?;
        send(&monitor::attach::Packet::Resize { rows, cols })?;
        // Read the monitor's answer to the Hello before closing: closing a SEQPACKET
        // socket with unread data resets the peer (ECONNRESET), and the monitor's next
        // recv then fails before it reads the Resize, which was lost that way.
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Ok(n) = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(2000u16)) {
            if n > 0 {
                let _ = monitor::attach::recv(&fd, nix::sys::socket::MsgFlags::MSG_DONTWAIT);
            }
        }
        Ok(())
    }
}
