//! skiffd's own socket to the bus: a unix stream that passes fds (SCM_RIGHTS), for zbus to
//! run its connection over. It exists so that skiffd can put the gate (`super::gate`) in
//! front of zbus's dispatch: zbus 6 has no hook between reading a message and dispatching
//! it, and its own socket type is private, but it takes any `Socket` through
//! `connection::Builder::socket`.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use nix::sys::socket::{self, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixStream;
use zbus::address::transport::{Transport, UnixSocket};
use zbus::connection::socket::{ReadHalf, Socket, Split, WriteHalf};
use zbus::export::async_trait::async_trait;
use zbus::Address;

/// The most fds one message may carry (dbus-daemon's default limit is 16).
const MAX_FDS: usize = 64;

/// Errors of connecting to the bus.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The address is not a unix socket path or abstract name.
    #[error("the bus address {0} is not supported: skiffd connects to unix:path= or unix:abstract= addresses")]
    Unsupported(String),
    /// Connecting failed.
    #[error("cannot connect to the bus at {address}: {source}")]
    Connect {
        /// The address.
        address: String,
        /// Why.
        source: io::Error,
    },
}

/// Connects to the bus at `address` (a unix socket path or abstract name).
pub async fn connect(address: &Address) -> Result<BusStream, Error> {
    let Transport::Unix(unix) = address.transport() else {
        return Err(Error::Unsupported(address.to_string()));
    };
    let fail = |source| Error::Connect {
        address: address.to_string(),
        source,
    };
    let stream = match unix.path() {
        UnixSocket::File(path) => UnixStream::connect(path).await.map_err(fail)?,
        UnixSocket::Abstract(name) => {
            use std::os::linux::net::SocketAddrExt;
            use std::os::unix::ffi::OsStrExt;
            let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
                .map_err(fail)?;
            // A local connect does not block for long; std has no async form for this.
            let std = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(fail)?;
            std.set_nonblocking(true).map_err(fail)?;
            UnixStream::from_std(std).map_err(fail)?
        }
        _ => return Err(Error::Unsupported(address.to_string())),
    };
    Ok(BusStream(Arc::new(stream)))
}

/// A connected stream to the bus (close-on-exec, as std and tokio make every socket).
#[derive(Debug)]
pub struct BusStream(Arc<UnixStream>);

impl Socket for BusStream {
    type ReadHalf = Reader;
    type WriteHalf = Writer;

    fn split(self) -> Split<Reader, Writer> {
        Split::new(Reader(self.0.clone()), Writer(self.0))
    }
}

/// The half zbus reads through.
#[derive(Debug)]
pub struct Reader(Arc<UnixStream>);

#[async_trait]
impl ReadHalf for Reader {
    async fn recvmsg(&mut self, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
        let fd = self.0.as_raw_fd();
        self.0
            .async_io(Interest::READABLE, || recv_with_fds(fd, buf))
            .await
    }

    fn can_pass_unix_fd(&self) -> bool {
        true
    }
}

/// One non-blocking `recvmsg`, taking the fds that came with the bytes (close-on-exec).
fn recv_with_fds(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let got = crate::fdpass::recv(fd, buf, MAX_FDS, MsgFlags::MSG_DONTWAIT)?;
    if got.fds_truncated {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "a message from the bus carried more file descriptors than skiffd takes",
        ));
    }
    Ok((got.len, got.fds))
}

/// The half zbus writes through.
#[derive(Debug)]
pub struct Writer(Arc<UnixStream>);

#[async_trait]
impl WriteHalf for Writer {
    async fn sendmsg(&mut self, buf: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<usize> {
        let fd = self.0.as_raw_fd();
        let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
        self.0
            .async_io(Interest::WRITABLE, || {
                Ok(crate::fdpass::send(fd, buf, &raw, MsgFlags::MSG_DONTWAIT)?)
            })
            .await
    }

    async fn close(&mut self) -> io::Result<()> {
        match socket::shutdown(self.0.as_raw_fd(), socket::Shutdown::Both) {
            Ok(()) | Err(nix::errno::Errno::ENOTCONN) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    fn can_pass_unix_fd(&self) -> bool {
        true
    }
}
