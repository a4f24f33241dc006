//! Open files of lower-layer files. A file opened read-only on a lower layer keeps a
//! fd of the lower file; when the file is then copied up (another process writes it),
//! that handle must read the copy, as with kernel overlayfs: written through, the
//! kernel fills pages around a partial-page write by reading through any open handle,
//! and a stale one would put the lower data back into the page cache. Each such handle
//! is recorded here, and copy-up reopens the copy onto the same fd number (dup3).

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Mutex;

use super::sys::{self, SysResult};

/// Handles open on lower-layer files: inode → (fd, open flags).
#[derive(Debug, Default)]
pub struct LowerHandles {
    map: Mutex<HashMap<u64, Vec<(RawFd, i32)>>>,
}

impl LowerHandles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Vec<(RawFd, i32)>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records handle `fd` (opened with `flags`) on the lower file of `ino`.
    pub fn add(&self, ino: u64, fd: RawFd, flags: i32) {
        self.lock().entry(ino).or_default().push((fd, flags));
    }

    /// Forgets handle `fd` of `ino` (at release).
    pub fn remove(&self, ino: u64, fd: RawFd) {
        let mut map = self.lock();
        if let Some(v) = map.get_mut(&ino) {
            v.retain(|(f, _)| *f != fd);
            if v.is_empty() {
                map.remove(&ino);
            }
        }
    }

    /// After the copy-up of `ino`: points each of its lower handles at the copy, opened
    /// by `open(flags)`.
    /// The lock is held throughout: a release of one of them (which removes it here
    /// before closing the fd) cannot let its fd number be reused under us.
    pub fn retarget(&self, ino: u64, open: impl Fn(i32) -> SysResult<OwnedFd>) -> SysResult<()> {
        let mut map = self.lock();
        let Some(handles) = map.remove(&ino) else {
            return Ok(());
        };
        for (fd, flags) in handles {
            let new = open(flags)?;
            sys::dup3_cloexec(new.as_raw_fd(), fd)?;
        }
        Ok(())
    }
}
