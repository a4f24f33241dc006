//! A userspace TCP relay for published ports slirp4netns cannot listen on itself: its
//! API's `add_hostfwd` takes IPv4 host addresses only. For `-p [::1]:8080:80` the
//! container's port is forwarded by slirp4netns from an internal port on 127.0.0.1, and
//! this relay, a thread of the monitor, listens on the IPv6 address and copies each
//! connection to that internal port. The container then sees the connection come from
//! slirp4netns's host address (10.0.2.2), not from the client's own address: keeping it
//! needs pasta, which forwards IPv6 itself.

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::thread::JoinHandle;

use nix::fcntl::OFlag;
use nix::poll::{PollFd, PollFlags, PollTimeout};

use super::Error;

/// A running relay: one thread accepting on its listeners, one per connection direction.
pub struct Relay {
    stop_w: Option<OwnedFd>,
    thread: Option<JoinHandle<()>>,
}

/// One listener and where its connections go.
pub struct Route {
    /// The host socket clients connect to.
    pub listener: TcpListener,
    /// The address the relay connects to for each client.
    pub target: SocketAddr,
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
                    tracing::debug!(%from, target = %route.target, "port relay: connection");
                    let target = route.target;
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

/// Copies both directions between `client` and a new connection to `target`.
fn relay(client: TcpStream, target: SocketAddr) {
    let up = match TcpStream::connect(target) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(%target, "port relay: connect: {e}");
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
    let _ = io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
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
        let mut relay = Relay::start(vec![Route { listener, target }]).unwrap();
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
