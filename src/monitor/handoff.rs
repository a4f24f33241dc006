//! A monitor started before its container's bundle is written.
//!
//! For `RunContainer`, skiffd picks the container's id first and starts the monitor (on
//! its bundle's path, as ever) while it creates the container, so the monitor's exec and
//! start-up overlap that work. Such a monitor finds [`GO_FD_ENV`] in its environment
//! and, first thing, before it logs, locks or reads anything, waits on [`GO_FD`] until
//! skiffd says the bundle is written (a byte). The end of the pipe without one (the
//! create failed, or skiffd died) means there is nothing to run: it exits at once.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

/// The fd on which a monitor started early waits for its bundle.
pub const GO_FD: RawFd = 8;
/// Set (to [`GO_FD`]) in the environment of a monitor started early.
pub const GO_FD_ENV: &str = "SKIFF_MONITOR_GO_FD";

/// In a monitor, first thing: false when it was started early and skiffd gave up on
/// its container (then it must exit without touching anything). Returns at once for a
/// monitor started as usual.
pub fn wait_for_bundle() -> bool {
    if std::env::var_os(GO_FD_ENV).is_none() {
        return true;
    }
    std::env::remove_var(GO_FD_ENV);
    // SAFETY: GO_FD was given to us by skiffd for this alone; we own it from here.
    let fd = unsafe { OwnedFd::from_raw_fd(GO_FD) };
    let mut b = [0u8; 1];
    let mut pipe = std::fs::File::from(fd);
    loop {
        match pipe.read(&mut b) {
            Ok(n) => return n == 1,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}
