//! The monitor's standard streams around a container's start: a client's stdout and
//! stderr kept aside, and the pipes the container's output goes through.

use std::os::fd::{AsRawFd, OwnedFd};

use super::io;
use crate::runtime;

/// Duplicates of a client's stdout and stderr (our fds 1 and 2 when we start).
pub(super) struct ClientStdio {
    pub(super) out: OwnedFd,
    pub(super) err: OwnedFd,
}

impl ClientStdio {
    pub(super) fn take() -> Result<ClientStdio, runtime::Error> {
        let dup = |fd: i32| {
            nix::fcntl::fcntl(
                // SAFETY: fds 1 and 2 are open for the monitor's whole life.
                unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
                nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(3),
            )
            .map(|raw| {
                // SAFETY: a fresh descriptor we own.
                unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) }
            })
            .map_err(|e| runtime::Error::sys("dup the client's stdio", e))
        };
        Ok(ClientStdio {
            out: dup(1)?,
            err: dup(2)?,
        })
    }
}

/// The container's ends of its stdio pipes are our fds 0-2 while it is created; we keep
/// the other ends.
pub(super) struct OutputPipes {
    out: OwnedFd,
    err: OwnedFd,
    stdin: Option<OwnedFd>,
}

impl OutputPipes {
    /// Makes pipes and puts their container ends on our fds 0-2, which the container
    /// inherits; our ends are close-on-exec, so only we hold them.
    pub(super) fn install(stdin: bool) -> Result<OutputPipes, runtime::Error> {
        let mk = || {
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| runtime::Error::sys("pipe", e))
        };
        let (out, out_w) = mk()?;
        let (err, err_w) = mk()?;
        let mut targets = vec![(out_w, 1), (err_w, 2)];
        let stdin = if stdin {
            let (r, w) = mk()?;
            targets.push((r, 0));
            Some(w)
        } else {
            None
        };
        for (fd, target) in &targets {
            // SAFETY: dup2 onto a standard descriptor we own; the old one is replaced.
            if unsafe { libc::dup2(fd.as_raw_fd(), *target) } < 0 {
                return Err(runtime::Error::sys("dup2", nix::errno::Errno::last()));
            }
        }
        Ok(OutputPipes { out, err, stdin })
    }

    /// Once the container runs: lets only the container hold its ends (so its exit
    /// shows as end-of-file) and hands ours to the I/O loop.
    pub(super) fn into_streams(self) -> io::Streams {
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for target in 0..3 {
                // SAFETY: as above.
                unsafe { libc::dup2(null.as_raw_fd(), target) };
            }
        }
        io::Streams {
            tty: None,
            out: Some(self.out),
            err: Some(self.err),
            stdin: self.stdin,
        }
    }
}
