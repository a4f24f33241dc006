//! Server-side read-ahead for files of the lower layers: while a reader goes through a
//! big lower file sequentially, a prefetch thread pushes the data that comes next into
//! the kernel's page cache with `FUSE_NOTIFY_STORE`. The reader then finds it cached and
//! sends no READ (each READ is a round trip, and the kernel's own read-ahead asks for at
//! most 128 KiB at a time).
//!
//! Only files that never change are prefetched: regular files of a lower layer, opened
//! read-only. Their data can change only after a copy-up, and every path that can change
//! a file's data first calls [`Prefetch::retire`], which stops prefetching that inode for
//! good and waits for a store in progress, so a store never overwrites newer data.
//! `retire` is called before any lock of the overlay is taken, so a store waiting on a
//! page the kernel is reading (a READ being served by another event loop) always ends.

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use fuser::{INodeNo, Notifier};

use super::sys;

/// Files smaller than this are not prefetched (the kernel's read-ahead does fine).
const MIN_SIZE: u64 = 4 << 20;
/// The first window ahead of the reader; it doubles at each extension up to [`MAX_WINDOW`].
const FIRST_WINDOW: u64 = 8 << 20;
/// The largest window ahead of the reader.
const MAX_WINDOW: u64 = 256 << 20;
/// One store.
const CHUNK: usize = 1 << 20;
/// How long `retire` waits for a store in progress before giving up on it.
const RETIRE_WAIT: Duration = Duration::from_secs(5);

#[derive(Debug, Default)]
struct File {
    /// Open read-only lower handles of this inode.
    handles: u32,
    /// Stored (or read by the kernel) up to here.
    until: u64,
    /// Prefetch up to here.
    target: u64,
    /// The next extension of `target`.
    window: u64,
    /// A job is queued or running for this inode.
    busy: bool,
    /// Data may change: never prefetch again.
    retired: bool,
    /// The file size.
    size: u64,
}

#[derive(Debug, Default)]
struct State {
    files: HashMap<u64, File>,
    /// The handles counted in `File::handles`.
    fhs: HashSet<u64>,
    queue: Vec<(u64, Arc<OwnedFd>)>,
    thread: bool,
}

/// The prefetcher of one mount.
#[derive(Debug, Default)]
pub struct Prefetch {
    notifier: OnceLock<Notifier>,
    state: Mutex<State>,
    /// Signalled when work is queued and when a job ends.
    cv: Condvar,
}

impl Prefetch {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Gives the prefetcher the session's notifier (prefetching starts with it).
    pub fn set_notifier(&self, n: Notifier) {
        let _ = self.notifier.set(n);
    }

    /// Handle `fh` of a lower-layer regular file of `size` bytes was opened read-only.
    /// The caller holds the overlay's namespace lock (shared), so no copy-up runs.
    pub fn opened(&self, fh: u64, ino: u64, size: u64) {
        if size < MIN_SIZE {
            return;
        }
        let mut s = self.lock();
        let f = s.files.entry(ino).or_default();
        if f.retired {
            return;
        }
        f.handles += 1;
        f.size = size;
        s.fhs.insert(fh);
    }

    /// Handle `fh` of `ino` was released.
    pub fn released(&self, fh: u64, ino: u64) {
        let mut s = self.lock();
        if !s.fhs.remove(&fh) {
            return;
        }
        if let Some(f) = s.files.get_mut(&ino) {
            f.handles = f.handles.saturating_sub(1);
            if f.handles == 0 && !f.busy && !f.retired {
                s.files.remove(&ino);
            }
        }
    }

    /// The kernel read `[offset, end)` of `ino` through handle `fd`.
    pub fn read(self: &Arc<Self>, ino: u64, fd: RawFd, offset: u64, end: u64) {
        if self.notifier.get().is_none() {
            return;
        }
        let mut s = self.lock();
        if !s.fhs.contains(&(fd as u64)) {
            return;
        }
        let Some(f) = s.files.get_mut(&ino) else {
            return;
        };
        if f.retired || f.handles == 0 {
            return;
        }
        if f.window == 0 {
            // Only a read from the start counts as sequential.
            if offset != 0 {
                return;
            }
            f.window = FIRST_WINDOW;
        }
        if end > f.until {
            f.until = end;
        }
        if end + f.window / 2 <= f.target {
            return;
        }
        f.target = (end + f.window).min(f.size);
        f.window = (f.window * 2).min(MAX_WINDOW);
        if f.busy || f.until >= f.target {
            return;
        }
        // Our own fd: the kernel may release the handle while we work.
        // SAFETY: dup of an fd we hold open for this request.
        let dup = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 0) };
        if dup < 0 {
            return;
        }
        // SAFETY: dup was just returned and is owned by nobody else.
        let dup = Arc::new(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(dup) });
        f.busy = true;
        s.queue.push((ino, dup));
        if !s.thread {
            let me = self.clone();
            if std::thread::Builder::new()
                .name("fuse-prefetch".into())
                .spawn(move || me.work())
                .is_ok()
            {
                s.thread = true;
            } else {
                s.queue.clear();
                if let Some(f) = s.files.get_mut(&ino) {
                    f.busy = false;
                }
                return;
            }
        }
        self.cv.notify_all();
    }

    /// Stops prefetching `ino` for good (its data is about to change) and waits for a
    /// store in progress. Call it without holding any overlay lock. `lower`: the inode
    /// is still in a lower layer (it will be copied up: make sure it is never
    /// prefetched later by a handle opened before the copy-up).
    pub fn retire(&self, ino: u64, lower: bool) {
        let mut s = self.lock();
        let Some(f) = s.files.get_mut(&ino) else {
            if !lower {
                return;
            }
            s.files.insert(
                ino,
                File {
                    retired: true,
                    ..File::default()
                },
            );
            return;
        };
        f.retired = true;
        let mut waited = Duration::ZERO;
        while s.files.get(&ino).is_some_and(|f| f.busy) && waited < RETIRE_WAIT {
            let step = Duration::from_millis(100);
            s = self
                .cv
                .wait_timeout(s, step)
                .unwrap_or_else(|p| p.into_inner())
                .0;
            waited += step;
        }
        if waited >= RETIRE_WAIT {
            tracing::warn!("prefetch of inode {ino} did not stop in time");
        }
    }

    /// The prefetch thread: runs queued jobs.
    fn work(self: Arc<Self>) {
        let mut buf = vec![0u8; CHUNK];
        loop {
            let (ino, fd) = {
                let mut s = self.lock();
                loop {
                    if let Some(job) = s.queue.pop() {
                        break job;
                    }
                    s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            };
            self.job(ino, fd.as_raw_fd(), &mut buf);
            self.cv.notify_all();
        }
    }

    /// Stores `ino` up to its target; clears `busy` (under the same lock as the last
    /// check, so a target extended meanwhile is never missed).
    fn job(&self, ino: u64, fd: RawFd, buf: &mut [u8]) {
        let mut failed = false;
        loop {
            let (from, to) = {
                let mut s = self.lock();
                let Some(f) = s.files.get_mut(&ino) else {
                    return;
                };
                let go = !failed && !f.retired && f.handles > 0 && f.until < f.target;
                if !go {
                    f.busy = false;
                    if f.handles == 0 && !f.retired {
                        s.files.remove(&ino);
                    }
                    return;
                }
                (f.until, f.target)
            };
            let len = ((to - from) as usize).min(buf.len());
            let n = sys::pread(fd, &mut buf[..len], from).unwrap_or(0);
            // The store runs while `busy` is set, so `retire` waits for it.
            let stored = n > 0
                && self
                    .notifier
                    .get()
                    .is_some_and(|nt| nt.store(INodeNo(ino), from, &buf[..n]).is_ok());
            let mut s = self.lock();
            match s.files.get_mut(&ino) {
                Some(f) if stored => f.until = f.until.max(from + n as u64),
                _ => failed = true,
            }
        }
    }
}
