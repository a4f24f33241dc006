//! A socket factory inside a container's network namespace: a child of the monitor,
//! forked before any thread exists, joins the container's user and network namespaces
//! and answers each one-byte request on a socketpair with a new, unconnected TCP socket
//! (passed as SCM_RIGHTS): a plain one, or a transparent one (`IP_TRANSPARENT`, which
//! needs CAP_NET_ADMIN in the namespace: the child has it there, the monitor may not)
//! that the relay binds to a client's address. Before serving, the child adds the
//! policy routing that loops the server's answers to such sockets back ([`super::rtnl`])
//! and reports whether that worked. A socket belongs to the namespace it was created in, so the
//! monitor's relay connects it to the container's server from outside: the data then
//! flows host socket -> relay -> container's own loopback, not through slirp4netns's
//! userspace TCP/IP stack (which is what limits its throughput). The child has nothing
//! but that socketpair open and ends when the monitor closes it (or dies).

use std::fs::File;
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use nix::sys::socket::{
    recvmsg, socketpair, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType,
};
use nix::unistd::Pid;

use super::Error;

/// For tests (tests/e2e_net_shared_races.rs; debug builds only): in a monitor's
/// environment, the routing that keeps TCP clients' addresses counts as failed, so its
/// TCP ports go through slirp4netns's `add_hostfwd`, as on a host where that routing
/// cannot be set up.
pub const NO_TRANSPARENT_ENV: &str = "SKIFF_TEST_NO_TRANSPARENT";

/// The monitor's end of a running socket factory.
pub struct Connector {
    sock: Mutex<OwnedFd>,
    pid: Pid,
    /// Why transparent sockets cannot be used (the routing set-up failed), if so.
    no_transparent: Option<String>,
}

impl Connector {
    /// Forks the factory into the user and network namespaces of `pid`, and has it add
    /// the routing that transparent sockets need for the TCP container ports
    /// `tcp_ports` (none: no routing, no transparent socket). Call it while the process
    /// has a single thread (the child only makes system calls anyway).
    pub fn start(pid: i32, tcp_ports: &[u16]) -> Result<Connector, Error> {
        let routing = super::rtnl::loop_back_requests(tcp_ports);
        let open = |ns: &str| {
            let path = format!("/proc/{pid}/ns/{ns}");
            File::open(&path).map_err(|e| Error::Io {
                what: path,
                source: e,
            })
        };
        let userns = open("user")?;
        let netns = open("net")?;
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| Error::sys("socketpair", e))?;
        let (u, n, s) = (userns.as_raw_fd(), netns.as_raw_fd(), theirs.as_raw_fd());
        // SAFETY: the child only makes async-signal-safe system calls and leaves with
        // _exit; the parent goes on as usual.
        let child = unsafe { libc::fork() };
        if child < 0 {
            return Err(Error::sys("fork", nix::errno::Errno::last()));
        }
        if child == 0 {
            // SAFETY: see above.
            unsafe { serve(u, n, s, routing.bytes(), routing.count()) }
        }
        drop(theirs);
        let mut c = Connector {
            sock: Mutex::new(ours),
            pid: Pid::from_raw(child),
            no_transparent: None,
        };
        // The child's first message: the routing set-up's errno (0: done).
        let mut status = [0u8; 4];
        let got = c
            .sock
            .get_mut()
            .map_err(|_| Error::Helper("the socket factory's lock is poisoned".into()))
            .and_then(|s| {
                nix::unistd::read(&*s, &mut status)
                    .map_err(|e| Error::sys("reading the socket factory's status", e))
            })?;
        if got != status.len() {
            return Err(Error::Helper(
                "the socket factory could not join the container's namespaces".into(),
            ));
        }
        let errno = i32::from_ne_bytes(status);
        if tcp_ports.is_empty() {
            c.no_transparent = Some("no TCP port".into());
        } else if errno != 0 {
            c.no_transparent = Some(format!(
                "adding the routing of the answers in the container's namespace failed: {}",
                nix::errno::Errno::from_raw(errno)
            ));
        } else if cfg!(debug_assertions) && std::env::var_os(NO_TRANSPARENT_ENV).is_some() {
            c.no_transparent = Some(format!("{NO_TRANSPARENT_ENV} is set"));
        }
        Ok(c)
    }

    /// Whether [`Connector::transparent_socket`] can be used, or why not.
    pub fn transparent(&self) -> Result<(), String> {
        match &self.no_transparent {
            None => Ok(()),
            Some(why) => Err(why.clone()),
        }
    }

    /// A new TCP socket of the container's network namespace (IPv4, or IPv6 with `v6`).
    pub fn socket(&self, v6: bool) -> Result<OwnedFd, Error> {
        self.request(if v6 { b'6' } else { b'4' })
    }

    /// A new transparent IPv4 TCP socket of the container's network namespace: it may
    /// be bound to any address (see [`super::rtnl`] for how the answers reach it).
    pub fn transparent_socket(&self) -> Result<OwnedFd, Error> {
        self.request(b'T')
    }

    fn request(&self, kind: u8) -> Result<OwnedFd, Error> {
        let sock = self
            .sock
            .lock()
            .map_err(|_| Error::Helper("the socket factory's lock is poisoned".into()))?;
        let req = [kind];
        nix::unistd::write(&*sock, &req).map_err(|e| Error::sys("asking for a socket", e))?;
        let mut byte = [0u8; 1];
        let mut iov = [IoSliceMut::new(&mut byte)];
        let mut cmsg = nix::cmsg_space!([RawFd; 1]);
        let msg = recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut cmsg),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )
        .map_err(|e| Error::sys("receiving a socket", e))?;
        for c in msg
            .cmsgs()
            .map_err(|e| Error::sys("receiving a socket", e))?
        {
            if let ControlMessageOwned::ScmRights(fds) = c {
                if let Some(&fd) = fds.first() {
                    // SAFETY: the kernel just gave us this descriptor; we own it.
                    return Ok(unsafe { OwnedFd::from_raw_fd(fd) });
                }
            }
        }
        Err(Error::Helper(
            "the socket factory in the container's namespace is gone".into(),
        ))
    }

    /// Ends the factory and reaps it.
    pub fn stop(&mut self) {
        if let Ok(sock) = self.sock.get_mut() {
            let _ = nix::sys::socket::shutdown(sock.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        }
        let _ = nix::sys::wait::waitpid(self.pid, None);
    }
}

impl Drop for Connector {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The child: joins the namespaces, adds the routing (`routing`: `count` netlink
/// requests, if any) and writes its errno (0: done) as its first message, then serves
/// socket requests on `sock` until EOF.
///
/// # Safety
/// Runs right after fork in a possibly multi-threaded parent's copy: raw system calls
/// only, no allocation.
unsafe fn serve(userns: RawFd, netns: RawFd, sock: RawFd, routing: &[u8], count: usize) -> ! {
    libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
    // Nothing but our three descriptors: no pipe of the monitor stays open through us.
    for fd in 0..4096 {
        if fd != userns && fd != netns && fd != sock {
            libc::close(fd);
        }
    }
    if libc::setns(userns, libc::CLONE_NEWUSER) != 0 || libc::setns(netns, libc::CLONE_NEWNET) != 0
    {
        libc::_exit(1);
    }
    libc::close(userns);
    libc::close(netns);
    let status: i32 = if count == 0 {
        0
    } else {
        // The loopback must be up for the looped-back answers (the container's init
        // brings it up too; whichever comes first).
        let _ = super::bring_up_loopback();
        super::rtnl::send(routing, count)
    };
    let bytes = status.to_ne_bytes();
    if libc::write(sock, bytes.as_ptr().cast(), bytes.len()) != bytes.len() as isize {
        libc::_exit(1);
    }
    loop {
        let mut req = 0u8;
        let n = libc::read(sock, (&mut req as *mut u8).cast(), 1);
        if n <= 0 {
            libc::_exit(0);
        }
        let family = if req == b'6' {
            libc::AF_INET6
        } else {
            libc::AF_INET
        };
        let mut s = libc::socket(family, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if s >= 0 && req == b'T' {
            let one: libc::c_int = 1;
            let r = libc::setsockopt(
                s,
                libc::SOL_IP,
                libc::IP_TRANSPARENT,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
            if r != 0 {
                libc::close(s);
                s = -1;
            }
        }
        let mut byte = 0u8;
        let mut iov = libc::iovec {
            iov_base: (&mut byte as *mut u8).cast(),
            iov_len: 1,
        };
        // Room for one descriptor (CMSG_SPACE of an int is 24 bytes on 64-bit Linux).
        let mut space = [0u64; 4];
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        if s >= 0 {
            msg.msg_control = space.as_mut_ptr().cast();
            msg.msg_controllen = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as _;
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
            std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), s);
        }
        // Without a descriptor (socket failed) the monitor sees an error.
        let sent = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
        if s >= 0 {
            libc::close(s);
        }
        if sent < 0 {
            libc::_exit(1);
        }
    }
}
