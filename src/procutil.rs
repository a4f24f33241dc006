//! Process helpers: pidfds (a handle on a process that cannot be confused with a later
//! process of the same pid), reading a process's command line, and signal names.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// Opens a pidfd for `pid` (Linux 5.3+). It becomes readable when the process exits.
pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just gave us this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// The NUL-separated arguments of a live process, or None.
pub fn cmdline(pid: i32) -> Option<Vec<String>> {
    let data = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        data.split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect(),
    )
}

/// A signal's number from a name (`SIGQUIT`, `QUIT`, any case) or a number; `None` if it
/// names no signal. The one parser of signals a user gives (`run --stop-signal`, `kill -s`,
/// an image's STOPSIGNAL).
pub fn signal_number(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return nix::sys::signal::Signal::try_from(n).ok().map(|s| s as i32);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    name.parse::<nix::sys::signal::Signal>()
        .ok()
        .map(|s| s as i32)
}

/// What a bad signal is told: how to write a good one.
pub const SIGNAL_HINT: &str = "use a signal name (SIGTERM, TERM) or number (15)";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_is_visible() {
        let me = std::process::id() as i32;
        assert!(pidfd_open(me).is_ok());
        assert!(cmdline(me).is_some_and(|a| !a.is_empty()));
        assert!(cmdline(i32::MAX).is_none());
    }
}
