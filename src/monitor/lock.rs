//! The monitor's lock on its bundle: how skiffd tells, without trusting a pid or a
//! command line, which process (if any) is a container's live monitor.
//!
//! A monitor takes a POSIX record lock (`fcntl(F_SETLKW)`) on `monitor.lock` in its
//! bundle before it reads its instructions, and holds it for its whole life. Such a lock
//! belongs to the process alone (its children do not inherit it) and the kernel drops it
//! when the process ends, however it ends; `F_GETLK` names the holder's pid. So
//! [`holder`] is exactly "the live monitor of this bundle": a daemon that crashed
//! between spawning a monitor and recording it finds it, and a reused pid is never
//! mistaken for it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name in a bundle.
pub const LOCK_FILE: &str = "monitor.lock";

/// The lock file's path in a bundle.
pub fn lock_path(bundle: &Path) -> PathBuf {
    bundle.join(LOCK_FILE)
}

/// A held lock; dropping it (or the process ending) releases it.
#[derive(Debug)]
pub struct MonitorLock {
    _file: File,
}

fn whole_file(kind: libc::c_short) -> libc::flock {
    libc::flock {
        l_type: kind,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    }
}

/// Takes the bundle's lock, waiting while another process holds it.
pub fn acquire(bundle: &Path) -> io::Result<MonitorLock> {
    // std opens with O_CLOEXEC.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(lock_path(bundle))?;
    let fl = whole_file(libc::F_WRLCK as libc::c_short);
    loop {
        // SAFETY: F_SETLKW with a valid flock on a descriptor we own.
        if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLKW, &fl) } == 0 {
            return Ok(MonitorLock { _file: file });
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// The pid of the process holding the bundle's lock — its live monitor — if any. A
/// lock held by the calling process itself does not count.
pub fn holder(bundle: &Path) -> io::Result<Option<i32>> {
    let file = match File::open(lock_path(bundle)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut fl = whole_file(libc::F_WRLCK as libc::c_short);
    // SAFETY: F_GETLK fills the flock we pass; the descriptor is ours.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut fl) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((fl.l_type != libc::F_UNLCK as libc::c_short && fl.l_pid > 0).then_some(fl.l_pid))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_file_no_holder_and_our_own_lock_does_not_count() {
        // Another process's lock is covered end to end (tests/e2e_monitor_life.rs).
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None);
        let _mine = acquire(dir.path()).unwrap();
        assert_eq!(holder(dir.path()).unwrap(), None);
    }
}
