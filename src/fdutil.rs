//! Descriptor hygiene: what a process skiff starts inherits is exactly what skiff means
//! it to have. Every descriptor is close-on-exec except the ones deliberately put on
//! fixed numbers (stdio, a helper's status pipe and spec), and specs travel to helpers in
//! a sealed memfd on [`SPEC_FD`], never on a command line (`/proc/PID/cmdline` is
//! readable by every local user) or in an environment.

use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// The fd on which a helper (`skiffd __exec`, `__unpack`, `__remove`) finds its spec.
pub const SPEC_FD: RawFd = 4;

/// Marks every descriptor from `first` up close-on-exec: `close_range(first, ~0,
/// CLOSE_RANGE_CLOEXEC)`, or on kernels without it (before 5.11) `F_SETFD` on each
/// number below the descriptor limit. Async-signal-safe (no allocation), so it may run
/// between fork and exec.
pub fn cloexec_from(first: RawFd) -> io::Result<()> {
    let first = u32::try_from(first).map_err(|_| io::Error::from_raw_os_error(libc::EBADF))?;
    // SAFETY: close_range only changes flags of our own descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    if r == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if !matches!(err.raw_os_error(), Some(libc::ENOSYS) | Some(libc::EINVAL)) {
        return Err(err);
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(io::Error::last_os_error());
    }
    let end = RawFd::try_from(lim.rlim_cur).unwrap_or(RawFd::MAX);
    for fd in first as RawFd..end {
        // SAFETY: F_SETFD on a number that may not be open fails with EBADF, harmlessly.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

/// Sets close-on-exec on one descriptor (e.g. one received over D-Bus, which zbus takes
/// without `MSG_CMSG_CLOEXEC`).
pub fn set_cloexec(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: F_SETFD changes only the descriptor's flags.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A sealed, close-on-exec memfd holding `data`, positioned at its start: a spec for a
/// helper, readable only through the descriptor (and by our own uid through /proc).
pub fn sealed_memfd(data: &[u8]) -> io::Result<OwnedFd> {
    // SAFETY: a NUL-terminated name and flags; returns a new descriptor or -1.
    let raw = unsafe {
        libc::memfd_create(
            c"skiff-spec".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: memfd_create just returned this descriptor; nothing else owns it.
    let fd = unsafe { OwnedFd::from_raw_fd(raw) };
    let mut file = std::fs::File::from(fd);
    file.write_all(data)?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: F_ADD_SEALS takes an int of seal bits.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, seals) } < 0 {
        return Err(io::Error::last_os_error());
    }
    std::io::Seek::seek(&mut file, std::io::SeekFrom::Start(0))?;
    Ok(file.into())
}

/// In a helper: takes [`SPEC_FD`] and reads it to the end (then it is closed). Fails
/// when the fd is not open: the helper was started by hand or by a different skiffd.
pub fn read_spec() -> io::Result<Vec<u8>> {
    // SAFETY: F_GETFD only inspects the descriptor table.
    if unsafe { libc::fcntl(SPEC_FD, libc::F_GETFD) } < 0 {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("no spec on fd {SPEC_FD}: this helper is started by skiffd, which passes it"),
        ));
    }
    // SAFETY: SPEC_FD is open (checked above), was given to us for this, and nothing
    // else in this process uses it.
    let mut file = unsafe { std::fs::File::from_raw_fd(SPEC_FD) };
    set_cloexec(&file)?;
    let mut data = Vec::new();
    file.read_to_end(&mut data)?;
    Ok(data)
}

/// Gives `fds` to a command's child on fixed numbers (each `(descriptor, target)`, the
/// targets above 2) and makes everything else above 2 close-on-exec there: the child
/// gets its stdio, these, and nothing the parent happened to hold.
pub fn pass_fds(cmd: &mut tokio::process::Command, fds: Vec<(OwnedFd, RawFd)>) {
    let top = fds.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2);
    // SAFETY: only async-signal-safe calls (fcntl, dup2, close_range) between fork and
    // exec; the closure owns the descriptors, which stay open until the command drops.
    unsafe {
        cmd.pre_exec(move || {
            // First move every source above all targets, so no dup2 clobbers another.
            let mut moved = [0 as RawFd; 8];
            if fds.len() > moved.len() {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            for (i, (fd, _)) in fds.iter().enumerate() {
                let m = libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, top + 1);
                if m < 0 {
                    return Err(io::Error::last_os_error());
                }
                moved[i] = m;
            }
            for (i, (_, target)) in fds.iter().enumerate() {
                if libc::dup2(moved[i], *target) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            cloexec_from(top + 1)
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memfd_round_trip_and_sealed() {
        let fd = sealed_memfd(b"{\"a\":1}").unwrap();
        let mut f = std::fs::File::from(fd);
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "{\"a\":1}");
        assert!(f.write_all(b"x").is_err(), "the spec must be sealed");
        // SAFETY: F_GETFD on our own descriptor.
        let flags = unsafe { libc::fcntl(f.as_raw_fd(), libc::F_GETFD) };
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
    }

    #[test]
    fn cloexec_from_marks_higher_descriptors() {
        let (r, w) = nix::unistd::pipe().unwrap();
        let low = r.as_raw_fd().min(w.as_raw_fd());
        cloexec_from(low).unwrap();
        for fd in [&r, &w] {
            // SAFETY: F_GETFD on our own descriptor.
            let flags = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFD) };
            assert_ne!(flags & libc::FD_CLOEXEC, 0);
        }
    }
}
