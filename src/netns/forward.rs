//! A userspace TCP relay, a thread of the monitor, for slirp4netns's published TCP
//! ports. Each connection is copied with splice(2) to the container's port through a
//! socket of the container's own network namespace ([`super::connector`]), bypassing
//! slirp4netns's userspace TCP/IP stack (several times faster than its `add_hostfwd`).
//! That socket is transparent and bound to the client's address ([`Target::AsClient`],
//! with the routing of [`super::rtnl`]), so the container's server sees the real
//! client; a loopback client (or an IPv6 one: the container's side is IPv4) appears as
//! the gateway, as slirp4netns shows it, never as a loopback address.

use std::io;
use std::net::{Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
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
    /// there by the connector (the container sees its own address as the client's).
    Inside(Arc<Connector>, SocketAddr),
    /// An IPv4 address in the container's network namespace, reached through a
    /// transparent socket made there by the connector and bound to the client's address
    /// (see [`shown_source`]).
    AsClient {
        /// The connector (its routing set up: [`Connector::transparent`]).
        connector: Arc<Connector>,
        /// The container's address and port.
        addr: SocketAddrV4,
        /// The address shown for clients whose own cannot be (loopback, IPv6).
        stand_in: Ipv4Addr,
    },
}

/// The source address the container sees for a client at `from`: the client's own
/// IPv4 address and port (an IPv4-mapped IPv6 client's too), or `stand_in` (port 0:
/// any) for a loopback client — services trust loopback clients, and the container's
/// loopback is not the host's — and for an IPv6 one (the container's side is IPv4).
pub fn shown_source(from: SocketAddr, stand_in: Ipv4Addr) -> SocketAddrV4 {
    let v4 = match from {
        SocketAddr::V4(a) => Some(*a.ip()),
        SocketAddr::V6(a) => a.ip().to_ipv4_mapped(),
    };
    match v4 {
        Some(ip) if !ip.is_loopback() && !ip.is_unspecified() => SocketAddrV4::new(ip, from.port()),
        _ => SocketAddrV4::new(stand_in, 0),
    }
}

impl Target {
    fn connect(&self, from: SocketAddr) -> Result<TcpStream, Error> {
        match self {
            Target::Outside(a) => TcpStream::connect(a).map_err(|e| Error::Io {
                what: format!("connecting to {a}"),
                source: e,
            }),
            Target::Inside(c, a) => {
                let fd = c.socket(a.is_ipv6())?;
                raw_addr_call(&fd, a, Call::Connect).map_err(|e| Error::Io {
                    what: format!("connecting to {a} in the container"),
                    source: e,
                })?;
                Ok(TcpStream::from(fd))
            }
            Target::AsClient {
                connector,
                addr,
                stand_in,
            } => {
                let src = shown_source(from, *stand_in);
                let to = SocketAddr::V4(*addr);
                let mut last = None;
                // The client's own port first; if that one is taken in the container
                // (an earlier connection from it still in TIME_WAIT), any port.
                let ports: &[u16] = if src.port() == 0 {
                    &[0]
                } else {
                    &[src.port(), 0]
                };
                for &port in ports {
                    let fd = connector.transparent_socket()?;
                    let bound = SocketAddr::V4(SocketAddrV4::new(*src.ip(), port));
                    match raw_addr_call(&fd, &bound, Call::Bind)
                        .and_then(|()| raw_addr_call(&fd, &to, Call::Connect))
                    {
                        Ok(()) => return Ok(TcpStream::from(fd)),
                        Err(e) => last = Some(e),
                    }
                }
                Err(Error::Io {
                    what: format!("connecting to {to} in the container as {src}"),
                    source: last.unwrap_or_else(|| io::Error::other("no attempt")),
                })
            }
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            Target::Outside(a) | Target::Inside(_, a) => *a,
            Target::AsClient { addr, .. } => SocketAddr::V4(*addr),
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
                        .spawn(move || relay(client, from, target));
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

/// The system call [`raw_addr_call`] makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Bind,
    Connect,
}

/// bind(2) or connect(2) (`call`) of a raw socket to `a`: a bind interrupted by a signal
/// is retried, a connect waited for ([`wait_connected`]).
fn raw_addr_call(fd: &OwnedFd, a: &SocketAddr, call: Call) -> io::Result<()> {
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
        let addr = &storage as *const _ as *const libc::sockaddr;
        // SAFETY: `storage` holds a valid address of `len` bytes, which bind and connect
        // only read.
        let r = unsafe {
            match call {
                Call::Bind => libc::bind(fd.as_raw_fd(), addr, len as libc::socklen_t),
                Call::Connect => libc::connect(fd.as_raw_fd(), addr, len as libc::socklen_t),
            }
        };
        if r == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
        if call == Call::Connect {
            // The connection goes on: a new connect(2) is not how to wait for it.
            return wait_connected(fd);
        }
    }
}

/// Waits for a connect(2) that a signal interrupted (the connection goes on in the
/// kernel) to end: until the socket is writable, then its `SO_ERROR` is the outcome.
fn wait_connected(fd: &OwnedFd) -> io::Result<()> {
    let mut pfd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLOUT,
        revents: 0,
    };
    loop {
        // SAFETY: one valid pollfd.
        let n = unsafe { libc::poll(&mut pfd, 1, -1) };
        if n > 0 {
            break;
        }
        let e = io::Error::last_os_error();
        if n < 0 && e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: SO_ERROR writes one int into `err`, whose size `len` gives.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            (&mut err as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if r != 0 {
        return Err(io::Error::last_os_error());
    }
    if err != 0 {
        return Err(io::Error::from_raw_os_error(err));
    }
    Ok(())
}

/// Copies both directions between `client` (at `from`) and a new connection to `target`.
fn relay(client: TcpStream, from: SocketAddr, target: Target) {
    let up = match target.connect(from) {
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
    use std::os::fd::FromRawFd;

    #[test]
    fn clients_keep_their_address_but_loopback_and_ipv6_ones_show_the_stand_in() {
        let gw = Ipv4Addr::new(10, 0, 2, 2);
        let shown = |a: &str| shown_source(a.parse().unwrap(), gw).to_string();
        assert_eq!(shown("192.0.2.7:4567"), "192.0.2.7:4567");
        assert_eq!(shown("[::ffff:192.0.2.7]:4567"), "192.0.2.7:4567");
        assert_eq!(shown("127.0.0.1:4567"), "10.0.2.2:0");
        assert_eq!(shown("127.1.2.3:4567"), "10.0.2.2:0");
        assert_eq!(shown("[::ffff:127.0.0.1]:4567"), "10.0.2.2:0");
        assert_eq!(shown("[::1]:4567"), "10.0.2.2:0");
        assert_eq!(shown("[2001:db8::1]:4567"), "10.0.2.2:0");
    }

    /// A blocking connect(2) that signals interrupt still connects (waited for, not
    /// issued again). The listener's queue is full (backlog 0, one connection not
    /// accepted), so the kernel drops the SYN and sends it again a second later: the
    /// connect blocks while the signals come; then the queue is emptied.
    #[test]
    fn a_connect_interrupted_by_signals_still_connects() {
        extern "C" fn nothing(_: libc::c_int) {}
        // SAFETY: a handler that does nothing, without SA_RESTART (so connect(2)
        // returns EINTR); the sigaction struct is zeroed then filled.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = nothing as *const () as usize;
            assert_eq!(libc::sigaction(libc::SIGUSR1, &sa, std::ptr::null_mut()), 0);
        }
        let sock = socket2_listener();
        let addr = sock.local_addr().unwrap();
        let first = TcpStream::connect(addr).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let connecting = std::thread::spawn(move || {
            // SAFETY: socket(2) returns a new descriptor or -1.
            let raw =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
            assert!(raw >= 0);
            // SAFETY: the descriptor is new and ours.
            let fd = unsafe { OwnedFd::from_raw_fd(raw) };
            tx.send(raw_addr_call(&fd, &addr, Call::Connect)).unwrap();
        });
        let thread = std::os::unix::thread::JoinHandleExt::as_pthread_t(&connecting);
        for _ in 0..10 {
            // SAFETY: the thread runs until it has sent its result (received below).
            unsafe { libc::pthread_kill(thread, libc::SIGUSR1) };
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        assert!(rx.try_recv().is_err(), "connect did not block");
        // Room in the queue: the SYN sent again gets through.
        let (a, _) = sock.accept().unwrap();
        drop((a, first));
        let got = rx.recv().unwrap();
        assert!(got.is_ok(), "{got:?}");
        connecting.join().unwrap();
        sock.accept().unwrap();
    }

    /// A listener on 127.0.0.1 with a backlog of 0.
    fn socket2_listener() -> TcpListener {
        // SAFETY: socket, bind and listen on a new descriptor we own; the sockaddr_in
        // is zeroed then filled.
        unsafe {
            let raw = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
            assert!(raw >= 0);
            let fd = OwnedFd::from_raw_fd(raw);
            let mut sin: libc::sockaddr_in = std::mem::zeroed();
            sin.sin_family = libc::AF_INET as libc::sa_family_t;
            sin.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
            let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            assert_eq!(
                libc::bind(raw, (&sin as *const libc::sockaddr_in).cast(), len),
                0
            );
            assert_eq!(libc::listen(raw, 0), 0);
            TcpListener::from(fd)
        }
    }

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
