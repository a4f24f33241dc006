//! Descriptors passed over unix sockets (`SCM_RIGHTS`): the one `sendmsg` and the one
//! `recvmsg` of the runtime's sync channel ([`crate::runtime::sync`]), skiffd's bus
//! socket ([`crate::dbus::socket`]) and the monitor zygote's socket
//! ([`crate::monitor::zygote`]).
//!
//! A send never raises SIGPIPE (`MSG_NOSIGNAL`: a closed peer is an error); a received
//! descriptor is close-on-exec (`MSG_CMSG_CLOEXEC`) and owned at once, so none leaks
//! into a child or stays open unowned; an interrupted call (EINTR) is made again. What
//! a short send or a cut message means is the caller's to say.

use std::io::IoSlice;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};

/// Sends `bytes` on `sock` with `fds` beside them (no control message when there are
/// none), with `flags` and `MSG_NOSIGNAL`. Returns how many bytes were sent.
pub fn send(sock: RawFd, bytes: &[u8], fds: &[RawFd], flags: MsgFlags) -> nix::Result<usize> {
    let iov = [IoSlice::new(bytes)];
    let cmsg = [ControlMessage::ScmRights(fds)];
    let cmsgs: &[ControlMessage] = if fds.is_empty() { &[] } else { &cmsg };
    loop {
        match sendmsg::<()>(sock, &iov, cmsgs, flags | MsgFlags::MSG_NOSIGNAL, None) {
            Err(Errno::EINTR) => continue,
            r => return r,
        }
    }
}

/// One message received by [`recv`].
#[derive(Debug)]
pub struct Received {
    /// How many bytes of the buffer it filled (0 at the end of a stream or socket pair,
    /// when no descriptor came either).
    pub len: usize,
    /// The descriptors that came with it, close-on-exec, in their order.
    pub fds: Vec<OwnedFd>,
    /// The message did not fit in the buffer (`MSG_TRUNC`: the rest is lost).
    pub truncated: bool,
    /// More descriptors came than there was room for (`MSG_CTRUNC`: the kernel closed
    /// the rest).
    pub fds_truncated: bool,
}

/// Receives one message from `sock` into `buf`, with room for `max_fds` descriptors,
/// with `flags` and `MSG_CMSG_CLOEXEC`. Every descriptor that arrived is owned by the
/// result, also when more came than there was room for (nix's `cmsgs` refuses to walk
/// a cut control buffer, which left those that did arrive open and unowned: this walks
/// it itself).
pub fn recv(sock: RawFd, buf: &mut [u8], max_fds: usize, flags: MsgFlags) -> nix::Result<Received> {
    let fd_bytes =
        u32::try_from(max_fds * std::mem::size_of::<RawFd>()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: CMSG_SPACE only computes a size.
    let space_len = unsafe { libc::CMSG_SPACE(fd_bytes) } as usize;
    // (u64s: the control buffer is aligned for `cmsghdr`.)
    let mut space = vec![0u64; space_len.div_ceil(8)];
    loop {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is a valid, empty one.
        let mut mhdr: libc::msghdr = unsafe { std::mem::zeroed() };
        mhdr.msg_iov = &mut iov;
        mhdr.msg_iovlen = 1;
        mhdr.msg_control = space.as_mut_ptr().cast();
        mhdr.msg_controllen = space_len as _;
        let all = (flags | MsgFlags::MSG_CMSG_CLOEXEC).bits();
        // SAFETY: the msghdr points at our buffer and control buffer, both valid and
        // exclusively ours for the call, with their lengths.
        let n = unsafe { libc::recvmsg(sock, &mut mhdr, all) };
        if n < 0 {
            match Errno::last() {
                Errno::EINTR => continue,
                e => return Err(e),
            }
        }
        let mut fds = Vec::new();
        // SAFETY: the CMSG_* walk stays within the msg_controllen bytes the kernel wrote
        // into our control buffer; each SCM_RIGHTS message's data is that many ints,
        // read unaligned.
        unsafe {
            let mut c = libc::CMSG_FIRSTHDR(&mhdr);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c);
                    let len = ((*c).cmsg_len as usize).saturating_sub(data as usize - c as usize);
                    for i in 0..len / std::mem::size_of::<RawFd>() {
                        let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                        // SCM_RIGHTS just installed this descriptor in our table;
                        // nothing else owns it.
                        fds.push(OwnedFd::from_raw_fd(fd));
                    }
                }
                c = libc::CMSG_NXTHDR(&mhdr, c);
            }
        }
        return Ok(Received {
            len: n as usize,
            fds,
            truncated: mhdr.msg_flags & libc::MSG_TRUNC != 0,
            fds_truncated: mhdr.msg_flags & libc::MSG_CTRUNC != 0,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

    fn pair() -> (OwnedFd, OwnedFd) {
        socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .unwrap()
    }

    #[test]
    fn bytes_and_fds_arrive_close_on_exec_and_cuts_are_told() {
        let (a, b) = pair();
        let (r, w) = nix::unistd::pipe().unwrap();
        let sent = send(a.as_raw_fd(), b"hello", &[w.as_raw_fd()], MsgFlags::empty()).unwrap();
        assert_eq!(sent, 5);
        drop(w);
        let mut buf = [0u8; 16];
        let got = recv(b.as_raw_fd(), &mut buf, 4, MsgFlags::empty()).unwrap();
        assert_eq!((&buf[..got.len], got.fds.len()), (&b"hello"[..], 1));
        assert!(!got.truncated && !got.fds_truncated);
        let flags = nix::fcntl::fcntl(&got.fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        nix::unistd::write(&got.fds[0], b"x").unwrap();
        let mut one = [0u8; 1];
        assert_eq!(nix::unistd::read(&r, &mut one).unwrap(), 1);

        // Three fds for room for one, and a message longer than the buffer: both told.
        let fds = [r.as_raw_fd(), r.as_raw_fd(), r.as_raw_fd()];
        send(a.as_raw_fd(), b"longer than four", &fds, MsgFlags::empty()).unwrap();
        let mut small = [0u8; 4];
        let got = recv(b.as_raw_fd(), &mut small, 1, MsgFlags::empty()).unwrap();
        assert!(got.truncated && got.fds_truncated, "{got:?}");
        // Those that fitted (the control buffer's padding may hold two) are ours and
        // open, not left unowned.
        assert!((1..3).contains(&got.fds.len()), "{got:?}");
        for fd in &got.fds {
            nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFD).unwrap();
        }

        // Nothing queued, not waiting: EAGAIN. The peer gone: a send fails (no SIGPIPE),
        // a receive reads the end.
        let none = recv(b.as_raw_fd(), &mut buf, 1, MsgFlags::MSG_DONTWAIT);
        assert_eq!(none.unwrap_err(), Errno::EAGAIN);
        drop(a);
        let end = recv(b.as_raw_fd(), &mut buf, 1, MsgFlags::empty()).unwrap();
        assert_eq!((end.len, end.fds.len()), (0, 0));
        assert!(send(b.as_raw_fd(), b"x", &[], MsgFlags::empty()).is_err());
    }
}
