//! Streams clients pass over D-Bus (`h` values): checking them, and the container's
//! stdio made of them.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

use super::SkiffError;
use crate::daemon::lifecycle::Stdio;

/// Takes an fd a client passed: zbus receives fds without `MSG_CMSG_CLOEXEC`, so it is
/// made close-on-exec at once (a helper or container started meanwhile is covered by
/// their own close-on-exec sweep; this keeps it out of everything started later).
pub fn received(fd: zbus::OwnedFd) -> OwnedFd {
    let fd: OwnedFd = fd.into();
    if let Err(e) = crate::fdutil::set_cloexec(&fd) {
        tracing::warn!("cannot make a client's fd close-on-exec: {e}");
    }
    fd
}

/// Checks an fd a client passed: it must be open and not a directory.
pub fn check_fd(fd: &OwnedFd, what: &str) -> Result<(), SkiffError> {
    let st = nix::sys::stat::fstat(fd.as_fd())
        .map_err(|e| SkiffError::invalid_args(format!("{what}: bad file descriptor: {e}")))?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(SkiffError::invalid_args(format!(
            "{what}: a directory cannot be used as a stream"
        )));
    }
    Ok(())
}

fn dev_null() -> Result<OwnedFd, SkiffError> {
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| SkiffError::Failed(format!("/dev/null: {e}")))
}

/// /dev/null for all three streams.
pub fn null_stdio() -> Result<Stdio, SkiffError> {
    Ok(Stdio {
        stdin: dev_null()?,
        stdout: dev_null()?,
        stderr: dev_null()?,
    })
}

/// Turns `a{uh}` into the container's stdio: keys 0, 1, 2; a missing one is /dev/null.
pub fn stdio_of(fds: HashMap<u32, zbus::OwnedFd>) -> Result<Option<Stdio>, SkiffError> {
    if fds.is_empty() {
        return Ok(None);
    }
    let mut slots: [Option<OwnedFd>; 3] = [None, None, None];
    let fds: Vec<(u32, OwnedFd)> = fds.into_iter().map(|(n, fd)| (n, received(fd))).collect();
    for (n, fd) in fds {
        if n > 2 {
            return Err(SkiffError::NotSupported(format!(
                "passing fd {n}: only 0, 1 and 2 can be passed for now"
            )));
        }
        check_fd(&fd, &format!("fd {n}"))?;
        slots[n as usize] = Some(fd);
    }
    let [a, b, c] = slots;
    Ok(Some(Stdio {
        stdin: a.map_or_else(dev_null, Ok)?,
        stdout: b.map_or_else(dev_null, Ok)?,
        stderr: c.map_or_else(dev_null, Ok)?,
    }))
}
