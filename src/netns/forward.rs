//! A userspace TCP relay, a thread of the monitor, for published ports that need no
//! client address kept or that slirp4netns cannot listen on: ports on a loopback host
//! address (their clients are all the host itself, which slirp4netns shows as 10.0.2.2
//! anyway) and IPv6 host addresses (its API's `add_hostfwd` takes IPv4 only). Each
//! connection is copied with splice(2) to the container's port through a socket of the
//! container's own network namespace ([`super::connector`]), bypassing slirp4netns's
//! userspace TCP/IP stack; the container sees the connection come from its own address.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::connector::Connector;
use super::Error;

/// Where a relayed connection goes.
#[derive(Clone)]
pub enum Target {
    /// An address reached from the monitor's own network namespace.
    Outside(SocketAddr),
    /// An address in the container's network namespace, reached through a socket made
    /// there by the connector.
    Inside(Arc<Connector>, SocketAddr),
}

impl Target {
    fn connect(&self) -> Result<TcpStream, Error> {
        match self {
            Target::Outside(a) => TcpStream::connect(a).map_err(|e| Error::Io {
                what: format!("connecting to {a}"),
                source: e,
            }),
            Target::Inside(c, a) => {
                let fd = c.socket(a.is_ipv6())?;
                connect_raw(&fd, a).map_err(|e| Error::Io {
                    what: format!("connecting to {a} in the container"),
                    source: e,
                })?;
                Ok(TcpStream::from(fd))
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Target::Outside(a) | Target::Inside(_, a) => *a,
        }
    }
}

/// A running relay: one thread accepting on its listeners, one per connection direction.
pub struct Relay {
    stop_w: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// One listener and where its connections go.
pub struct Route {
    /// The host socket clients connect to.
    pub listener: TcpListener,
    /// Where the relay connects for each client.
    pub target: Target,
}

impl Relay {
    /// Starts relaying `routes` until [`Relay::stop`].
    pub fn start(routes: Vec<Route>) -> Result<Relay, Error> {
        let (stop_r, stop_w) =
            nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
        for r in &routes {
            r.listener.set_nonblocking(true).map_err(|e| Error::Io {
                what: "setting a listener non-blocking".into(),
                source: e,
            })?;
        }
        let thread = std::thread::Builder::new()
            .name("port-relay".into())
            .spawn(move || accept_loop(&routes, &stop_r))
            .map_err(|e| Error::Io {
                what: "starting the port relay thread".into(),
                source: e,
            })?;
        Ok(Relay {
            stop_w: Some(stop_w),
            thread: Some(thread),
        })
    }

    /// Closes the listeners (the host ports are free again when this returns); open
    /// connections end when either side closes.
    pub fn stop(&mut self) {
        self.stop_w.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop();
    }
}

fn accept_loop(routes: &[Route], stop: &OwnedFd) {
    loop {
        let mut fds: Vec<PollFd> = routes
            .iter()
            .map(|r| PollFd::new(r.listener.as_fd(), PollFlags::POLLIN))
            .collect();
        fds.push(PollFd::new(stop.as_fd(), PollFlags::POLLIN));
        match nix::poll::poll(&mut fds, PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => {
                tracing::error!("port relay: poll: {e}");
                return;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        if ready.last().copied().unwrap_or(true) {
            return; // stop: the write end was closed
        }
        for (route, _) in routes.iter().zip(&ready).filter(|(_, r)| **r) {
            match route.listener.accept() {
                Ok((client, from)) => {
                    tracing::debug!(%from, target = %route.target.addr(), "port relay: connection");
                    let target = route.target.clone();
                    let spawned = std::thread::Builder::new()
                        .name("port-relay-conn".into())
                        .spawn(move || relay(client, target));
                    if let Err(e) = spawned {
                        tracing::warn!("port relay: cannot start a thread: {e}");
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => tracing::warn!("port relay: accept: {e}"),
            }
        }
    }
}

/// connect(2) on a raw socket, retried on EINTR.
fn connect_raw(fd: &OwnedFd, a: &SocketAddr) -> io::Result<()> {
    // SAFETY: zeroed sockaddr structs are valid; we fill the fields connect(2) reads.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(v4) => {
            // SAFETY: sockaddr_storage is large and aligned enough for a sockaddr_in.
            let sin = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in) };
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_port = v4.port().to_be();
            sin.sin_addr.s_addr = u32::from(*v4.ip()).to_be();
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(v6) => {
            // SAFETY: as above, for a sockaddr_in6.
            let sin6 = unsafe { &mut *(&mut storage as *mut _ as *mut libc::sockaddr_in6) };
            sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
            sin6.sin6_port = v6.port().to_be();
            sin6.sin6_addr.s6_addr = v6.ip().octets();
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    loop {
        // SAFETY: `storage` holds a valid address of `len` bytes.
        let r = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                &storage as *const _ as *const libc::sockaddr,
                len as libc::socklen_t,
            )
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Copies both directions between `client` and a new connection to `target`.
fn relay(client: TcpStream, target: Target) {
    let up = match target.connect() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("port relay: {e}");
            return;
        }
    };
    let _ = client.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (Ok(client2), Ok(up2)) = (client.try_clone(), up.try_clone()) else {
        return;
    };
    let back = std::thread::Builder::new()
        .name("port-relay-back".into())
        .spawn(move || copy_half(up2, client2));
    copy_half(client, up);
    if let Ok(t) = back {
        let _ = t.join();
    }
}

/// Copies `from` to `to` until end-of-file, then passes the end-of-file on.
fn copy_half(mut from: TcpStream, mut to: TcpStream) {
    if splice_all(&from, &to).is_err() {
        let _ = io::copy(&mut from, &mut to);
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

/// splice(2) through a pipe: the bytes never enter user space.
fn splice_all(from: &TcpStream, to: &TcpStream) -> io::Result<()> {
    const CHUNK: usize = 1 << 20;
    let (pr, pw) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(io::Error::from)?;
    // SAFETY: F_SETPIPE_SZ on our own pipe; failure leaves the default size.
    unsafe { libc::fcntl(pw.as_raw_fd(), libc::F_SETPIPE_SZ, CHUNK as libc::c_int) };
    let splice = |a: &dyn AsRawFd, b: &dyn AsRawFd, len: usize| -> io::Result<usize> {
        loop {
            // SAFETY: plain splice(2) between descriptors we hold, no offsets.
            let n = unsafe {
                libc::splice(
                    a.as_raw_fd(),
                    std::ptr::null_mut(),
                    b.as_raw_fd(),
                    std::ptr::null_mut(),
                    len,
                    libc::SPLICE_F_MOVE,
                )
            };
            if n >= 0 {
                return Ok(n as usize);
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::Interrupted {
                return Err(e);
            }
        }
    };
    let mut first = true;
    loop {
        let n = match splice(from, &pw, CHUNK) {
            Ok(n) => n,
            // Before any byte moved, the caller may fall back to copying.
            Err(e) if first => return Err(e),
            Err(_) => return Ok(()),
        };
        first = false;
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        while left > 0 {
            match splice(&pr, to, left) {
                Ok(0) | Err(_) => return Ok(()),
                Ok(m) => left -= m,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn relays_both_ways_and_frees_the_port_on_stop() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let target = server.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut s in server.incoming().flatten() {
                let mut buf = Vec::new();
                let _ = s.read_to_end(&mut buf);
                let _ = s.write_all(&buf.to_ascii_uppercase());
            }
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let front = listener.local_addr().unwrap();
        let mut relay = Relay::start(vec![Route {
            listener,
            target: Target::Outside(target),
        }])
        .unwrap();
        for _ in 0..2 {
            let mut c = TcpStream::connect(front).unwrap();
            c.write_all(b"hello").unwrap();
            c.shutdown(Shutdown::Write).unwrap();
            let mut out = String::new();
            c.read_to_string(&mut out).unwrap();
            assert_eq!(out, "HELLO");
        }
        relay.stop();
        assert!(TcpListener::bind(front).is_ok(), "the port is still bound");
    }
}
