//! Pseudo-terminals for containers: allocated from the container's own devpts instance
//! (its `/dev/ptmx`, a symlink to `pts/ptmx` of the `newinstance` mount), so the slave
//! is a `/dev/pts/N` that exists inside the container, and made the controlling terminal
//! of the container's process.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::Error;

/// A freshly allocated pty.
pub struct Pty {
    /// The master (close-on-exec), for the monitor or the client.
    pub master: OwnedFd,
    /// The slave (close-on-exec until dup'd onto 0-2).
    pub slave: OwnedFd,
    /// The slave's path as the container sees it, e.g. `/dev/pts/0`.
    pub path: String,
}

/// Opens a new pty through `ptmx` (in the caller's mount namespace and root), unlocks it
/// and opens its slave through the master (TIOCGPTPEER), so no path is looked up twice.
pub fn open(ptmx: &str) -> Result<Pty, Error> {
    let c = CString::new(ptmx).map_err(|_| Error::Setup("ptmx path contains NUL".into()))?;
    // SAFETY: plain open(2) of a NUL-terminated path.
    let raw = unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
    if raw < 0 {
        return Err(Error::sys(
            format!("open {ptmx} (is devpts mounted with ptmxmode=0666?)"),
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: open just returned this descriptor.
    let master = unsafe { OwnedFd::from_raw_fd(raw) };
    let unlock: libc::c_int = 0;
    // SAFETY: TIOCSPTLCK takes a pointer to an int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSPTLCK, &unlock) } < 0 {
        return Err(Error::sys("unlock the pty", nix::errno::Errno::last()));
    }
    let mut n: libc::c_uint = 0;
    // SAFETY: TIOCGPTN writes an unsigned int.
    if unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCGPTN, &mut n) } < 0 {
        return Err(Error::sys("get the pty number", nix::errno::Errno::last()));
    }
    // SAFETY: TIOCGPTPEER returns a new descriptor for the slave.
    let raw = unsafe {
        libc::ioctl(
            master.as_raw_fd(),
            libc::TIOCGPTPEER,
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        )
    };
    if raw < 0 {
        return Err(Error::sys(
            "open the pty's slave",
            nix::errno::Errno::last(),
        ));
    }
    // SAFETY: the ioctl just returned this descriptor.
    let slave = unsafe { OwnedFd::from_raw_fd(raw) };
    Ok(Pty {
        master,
        slave,
        path: format!("/dev/pts/{n}"),
    })
}

/// Makes `slave` the controlling terminal of the calling process (which must lead a
/// session without one: call after setsid) and its stdin, stdout and stderr.
pub fn make_controlling(slave: &OwnedFd) -> Result<(), Error> {
    // SAFETY: TIOCSCTTY takes an int argument (0: do not steal).
    if unsafe { libc::ioctl(slave.as_raw_fd(), libc::TIOCSCTTY, 0) } < 0 {
        return Err(Error::sys(
            "make the pty the controlling terminal",
            nix::errno::Errno::last(),
        ));
    }
    for target in 0..3 {
        // SAFETY: dup2 onto a standard descriptor; the new one is not close-on-exec.
        if unsafe { libc::dup2(slave.as_raw_fd(), target) } < 0 {
            return Err(Error::sys("dup2 the pty", nix::errno::Errno::last()));
        }
    }
    Ok(())
}

/// Sets the window size of a pty (through either side).
pub fn set_size(fd: &impl AsRawFd, rows: u16, cols: u16) -> Result<(), Error> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads a struct winsize.
    if unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, &ws) } < 0 {
        return Err(Error::sys("set the window size", nix::errno::Errno::last()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_pty_round_trip_and_size() {
        let p = match open("/dev/ptmx") {
            Ok(p) => p,
            // Some build sandboxes have no usable devpts.
            Err(_) => return,
        };
        assert!(p.path.starts_with("/dev/pts/"));
        set_size(&p.master, 33, 101).unwrap();
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        assert_eq!(
            unsafe { libc::ioctl(p.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) },
            0
        );
        assert_eq!((ws.ws_row, ws.ws_col), (33, 101));
        nix::unistd::write(&p.slave, b"hi\n").unwrap();
        let mut buf = [0u8; 16];
        let n = nix::unistd::read(&p.master, &mut buf).unwrap();
        assert_eq!(&buf[..n], b"hi\r\n");
    }
}
