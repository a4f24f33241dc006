//! The channel between the runtime's processes: an `AF_UNIX SOCK_SEQPACKET` socket pair
//! carrying one small JSON message per packet. Packet boundaries are kept by the kernel,
//! and a closed peer reads as end-of-file, which is how the monitor learns that the
//! container's init has exec'd (its end of the socket is close-on-exec).

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType};
use serde::{Deserialize, Serialize};

use super::Error;

/// The messages that pass between monitor, intermediate and init.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum Msg {
    /// Intermediate → monitor: I have unshared the user namespace; write my id maps.
    UsernsReady,
    /// Monitor → intermediate: the maps are written, go on.
    MapsWritten,
    /// Monitor → intermediate: writing the maps failed; give up.
    Abort,
    /// Intermediate → monitor: the container's init has this pid (in the monitor's pid namespace).
    InitPid(i32),
    /// Monitor → init: the network is connected (or needs nothing); exec the command.
    Proceed,
    /// Intermediate → monitor: the FUSE rootfs server runs with this pid (it exits by
    /// itself when init does).
    FuseServer(i32),
    /// Intermediate → monitor: the container's network namespace exists (the
    /// intermediate's own), so the network helper can start on it while the rest is
    /// set up; the intermediate then stays until the monitor lets it go.
    NetnsReady,
    /// Init → monitor (or `__exec` → daemon): the pty master rides along with this
    /// message (SCM_RIGHTS); the slave, at this path inside the container, is the
    /// process's controlling terminal.
    Pty(String),
    /// Init → monitor: setting up the container failed before exec.
    Failed {
        /// The exit code the container gets: 125 (setup), 126 (not executable), 127 (not found).
        code: i32,
        /// What went wrong, for the user.
        message: String,
    },
}

/// One end of the socket pair.
pub struct Channel {
    fd: OwnedFd,
}

impl From<Channel> for OwnedFd {
    fn from(c: Channel) -> OwnedFd {
        c.fd
    }
}

impl std::os::fd::AsFd for Channel {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl Channel {
    /// Makes a connected pair; both ends are close-on-exec.
    pub fn pair() -> Result<(Channel, Channel), Error> {
        let (a, b) = socket::socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("socketpair", e))?;
        Ok((Channel { fd: a }, Channel { fd: b }))
    }

    /// Sends one message.
    pub fn send(&self, msg: &Msg) -> Result<(), Error> {
        let data = serde_json::to_vec(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        loop {
            match socket::send(self.fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
                Ok(_) => return Ok(()),
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("send on the sync socket", e)),
            }
        }
    }

    /// Wraps an fd that is one end of a SEQPACKET socket pair (e.g. a helper's stdin).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel { fd }
    }

    /// Sends one message with `fd` attached (SCM_RIGHTS).
    pub fn send_fd(&self, msg: &Msg, fd: BorrowedFd<'_>) -> Result<(), Error> {
        let data = serde_json::to_vec(msg).map_err(|e| Error::Protocol(e.to_string()))?;
        crate::fdpass::send(
            self.fd.as_raw_fd(),
            &data,
            &[fd.as_raw_fd()],
            MsgFlags::empty(),
        )
        .map_err(|e| Error::sys("sendmsg on the sync socket", e))?;
        Ok(())
    }

    /// Receives one message and the fd that came with it, if any; `None` at end-of-file.
    /// `nonblocking`: return `Ok((None, None))` instead of waiting when nothing is queued.
    pub fn recv_fd(&self, nonblocking: bool) -> Result<(Option<Msg>, Option<OwnedFd>), Error> {
        let mut buf = vec![0u8; 64 * 1024];
        let flags = if nonblocking {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::empty()
        };
        let got = match crate::fdpass::recv(self.fd.as_raw_fd(), &mut buf, 4, flags) {
            Ok(g) => g,
            Err(nix::errno::Errno::EAGAIN) if nonblocking => return Ok((None, None)),
            Err(e) => return Err(Error::sys("recvmsg on the sync socket", e)),
        };
        // The first fd is the message's; any other is closed here.
        let fd = got.fds.into_iter().next();
        if got.len == 0 {
            return Ok((None, fd));
        }
        let msg =
            serde_json::from_slice(&buf[..got.len]).map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((Some(msg), fd))
    }

    /// Receives one message; `None` when the peer closed its end.
    pub fn recv(&self) -> Result<Option<Msg>, Error> {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match socket::recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(0) => return Ok(None),
                Ok(n) => {
                    return serde_json::from_slice(&buf[..n])
                        .map(Some)
                        .map_err(|e| Error::Protocol(e.to_string()))
                }
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(Error::sys("recv on the sync socket", e)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_eof_is_none() {
        let (a, b) = Channel::pair().unwrap();
        a.send(&Msg::InitPid(42)).unwrap();
        a.send(&Msg::Failed {
            code: 127,
            message: "not found".into(),
        })
        .unwrap();
        assert_eq!(b.recv().unwrap(), Some(Msg::InitPid(42)));
        assert!(matches!(
            b.recv().unwrap(),
            Some(Msg::Failed { code: 127, .. })
        ));
        drop(a);
        assert_eq!(b.recv().unwrap(), None);
    }

    #[test]
    fn fds_ride_along() {
        let (a, b) = Channel::pair().unwrap();
        assert!(matches!(b.recv_fd(true).unwrap(), (None, None)));
        let (r, w) = nix::unistd::pipe().unwrap();
        a.send_fd(&Msg::Pty("/dev/pts/0".into()), std::os::fd::AsFd::as_fd(&w))
            .unwrap();
        drop(w);
        let (msg, fd) = b.recv_fd(false).unwrap();
        assert_eq!(msg, Some(Msg::Pty("/dev/pts/0".into())));
        nix::unistd::write(fd.unwrap(), b"x").unwrap();
        let mut buf = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut buf).unwrap(), 1);
    }
}
