//! skiff's FUSE overlay filesystem (the `fuse` storage driver): N read-only lower layers,
//! one writable upper layer and a work directory, merged like kernel overlayfs, served
//! with `fuser` from inside the container's user and mount namespaces.
//!
//! * Layout on disk is kernel overlayfs's with `userxattr` (see [`layers`]): 0/0
//!   character-device whiteouts, `user.overlay.opaque=y`; so an upper dir written by this
//!   driver is readable by the `overlay` driver and the other way round. OCI `.wh.` forms
//!   are honoured when reading.
//! * Speed comes from sending the kernel fewer requests: long entry/attr TTLs, negative
//!   entries, readdirplus, `FOPEN_CACHE_DIR` listings, `FOPEN_KEEP_CACHE`,
//!   `FUSE_CACHE_SYMLINKS`, parallel dirops, cached xattr names (and ENOTSUP for an
//!   absent `security.selinux`, so `ls -l` stops asking per file), no FLUSH (ENOSYS
//!   once: one round trip less per close), HANDLE_KILLPRIV_V2 (the kernel asks for
//!   security.capability once per inode and attribute refresh, not per write(2)), 1 MiB
//!   writes, `FOPEN_DIRECT_IO` for a file created write-only (its first write then asks
//!   no GETXATTR of security.capability: the server drops privileges itself, see
//!   `ops::create_open_flags`), and one event loop per CPU (2 to [`MAX_AUTO_LOOPS`]), each on its own cloned
//!   /dev/fuse fd. (Server-side read-ahead with FUSE_NOTIFY_STORE was tried and dropped: on a busy
//!   machine it duplicated the kernel's own read-ahead and made cold reads slower; so was a
//!   store of each file an exec opens, see docs/benchmarks.md: instead the container's init
//!   asks the kernel to read the command's program ahead, `runtime::readahead`.)
//!   Passthrough is never negotiated (`FUSE_DEV_IOC_BACKING_OPEN` checks
//!   `capable(CAP_SYS_ADMIN)`, the initial namespace's, so it is EPERM rootless).
//! * Each request costs few system calls: an upper file's recorded inode number is read
//!   once (see `Overlay::note_upper`), a new file's xattr names come from the fd create
//!   opened, and create stats the new node once.
//! * What the server cannot change (Linux 6.18): a warm read is a page-cache hit that
//!   never reaches us, but FUSE's page cache holds only order-0 folios (the backing
//!   ext4/xfs file has up to 1 MiB ones), so the same read walks 256 times as many
//!   folios; and per created file the kernel sends LOOKUP, CREATE, WRITE and RELEASE
//!   (and GETXATTR of security.capability at the first write through a cached handle,
//!   i.e. unless the file was created write-only), plus a GETATTR of the parent (its attributes are invalidated by each change and
//!   `default_permissions` needs them). docs/benchmarks.md has the measurements.
//! * The parent's GETATTR after each change is the kernel's too: on 6.18
//!   `fuse_dir_changed` marks all of a directory's attributes stale (mode included),
//!   and `default_permissions` needs the mode for the next path walk through it (later
//!   kernels mark only size, times and link count stale, which ends this GETATTR). A
//!   negative entry is always looked up again for O_EXCL and rename targets
//!   (`fuse_dentry_revalidate`), whatever its timeout.
//! * The node table follows the kernel's references: a node stays while the kernel
//!   holds a lookup of it (FORGET drops them); one made by a lookup that counts none
//!   (rename's and unlink's, a READDIRPLUS entry that did not fit in the reply) is
//!   dropped when the request ends (see `Overlay::release`).
//! * Writes go through to the upper layer (no writeback cache): the backing
//!   filesystem's errors (ENOSPC, EDQUOT, EIO, EFBIG) reach the writer and the size the
//!   kernel keeps is what is stored. (It would not save the WRITE of a small new file
//!   either: with the writeback cache the kernel writes dirty pages back at close, and
//!   it adds SETATTRs for the times: 2.2 per file of the churn workload, measured.)
//! * Limits: renaming a directory that has lower-layer parts gives EXDEV (`mv` then
//!   copies), as kernel overlay does with `userxattr`; copy-up always copies data
//!   (no metadata-only copy-up yet); hard links between lower-layer files are broken
//!   by copy-up (as kernel overlay without `index`): each name of a hard-linked lower
//!   file is a node of its own (a FUSE open names no file name, so one node could not
//!   tell which name a write goes through), all showing the lower file's inode number
//!   and link count until that name is copied up; the copy then shows a number of its
//!   own and its own link count, as the kernel overlay's does. (An entry reply's
//!   inode number is the node id in fuser, so those names' attributes are not cached
//!   from LOOKUP/READDIRPLUS: the first `stat` asks GETATTR once. A plain readdir's
//!   `d_ino` is the shared number, a readdirplus one the node id.)

pub mod attr;
mod copyup;
mod create;
mod dirs;
mod handles;
pub mod idle;
#[cfg(test)]
mod idle_tests;
pub mod layers;
mod mutate;
pub mod node;
mod ops;
pub mod sys;
#[cfg(test)]
mod tests;

use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

pub use node::Overlay;

/// Errors of the FUSE overlay.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A layer directory could not be opened.
    #[error("cannot open the layers: {0}")]
    Layers(std::io::Error),
    /// Mounting or serving failed.
    #[error("FUSE mount on {target}: {source}")]
    Mount {
        /// The mount point.
        target: String,
        /// The cause.
        source: std::io::Error,
    },
}

/// What to mount.
#[derive(Debug, Clone)]
pub struct MountSpec {
    /// Lower layers, top first.
    pub lower: Vec<PathBuf>,
    /// The writable layer.
    pub upper: PathBuf,
    /// The work dir (same filesystem as `upper`).
    pub work: PathBuf,
    /// Event-loop threads (0 = one per CPU, at least 2 and at most [`MAX_AUTO_LOOPS`]).
    pub threads: usize,
    /// Owners translated between the files' mapping and the server's (`--userns
    /// keep-id`); None: shown as they are.
    pub remap: Option<crate::userns::keepid::IdRemap>,
}

/// The most event loops a server gets by default: each keeps its stack and the touched
/// part of its 16 MiB request buffer resident for the container's whole life, so one
/// per CPU on a large machine would make every idle container cost more there.
pub const MAX_AUTO_LOOPS: usize = 4;

/// The server's owner translation (one mount per server process, set before serving).
static REMAP: std::sync::OnceLock<crate::userns::keepid::IdRemap> = std::sync::OnceLock::new();

/// The owner to show for a file the server sees owned by `uid`/`gid`.
pub(crate) fn shown_owner(uid: u32, gid: u32) -> (u32, u32) {
    match REMAP.get() {
        Some(r) => r.present(uid, gid),
        None => (uid, gid),
    }
}

/// The owner to give a file so that it shows as `uid`/`gid` (`u32::MAX`: unchanged);
/// EINVAL for an id the files' mapping does not have.
pub(crate) fn stored_owner(uid: u32, gid: u32) -> sys::SysResult<(u32, u32)> {
    match REMAP.get() {
        Some(r) => r.store(uid, gid).ok_or(libc::EINVAL),
        None => Ok((uid, gid)),
    }
}

/// Mounts and starts serving: the event loops run on their own thread (each on its own
/// cloned /dev/fuse fd), and once they answer a first request the process's root becomes
/// /proc (see [`sys::confine_to_proc`]). The clones must be opened before that: they are
/// opened by path. Returns the thread running the loops, and the handle that sheds the
/// overlay's caches when it goes idle.
fn serve(spec: &MountSpec, target: &Path) -> Result<(Serving, idle::Shedder), Error> {
    sys::raise_nofile();
    // New nodes get exactly the mode the caller asked for less the caller's umask
    // (applied in `ops`); the umask this process inherited must not mask them again.
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(0) };
    if let Some(r) = &spec.remap {
        let _ = REMAP.set(r.clone());
    }
    let mount_err = |source: std::io::Error| Error::Mount {
        target: target.display().to_string(),
        source,
    };
    let fs = Overlay::new(&spec.lower, &spec.upper, &spec.work).map_err(Error::Layers)?;
    let notifier = fs.notifier.clone();
    let shedder = fs.shedder();
    let threads = if spec.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .clamp(2, MAX_AUTO_LOOPS)
    } else {
        spec.threads
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        fuser::MountOption::FSName("skiff-overlay".into()),
        fuser::MountOption::Subtype("skiff".into()),
        fuser::MountOption::DefaultPermissions,
        fuser::MountOption::Suid,
    ];
    config.acl = fuser::SessionACL::All;
    config.n_threads = Some(threads);
    config.clone_fd = true;
    let session = fuser::Session::new(fs, target, &config).map_err(mount_err)?;
    let _ = notifier.set(session.notifier());
    let thread = std::thread::Builder::new()
        .name("fuse-serve".into())
        .spawn(move || session.run())
        .map_err(mount_err)?;
    // statfs is answered by an event loop, and the loops start only after every clone is
    // open: from then on nothing is opened by path any more. (If the loops fail to start,
    // the session is dropped, the connection aborts and statfs fails.)
    nix::sys::statfs::statfs(target).map_err(|e| mount_err(e.into()))?;
    sys::confine_to_proc().map_err(|e| mount_err(std::io::Error::from_raw_os_error(e)))?;
    Ok((thread, shedder))
}

/// The thread running the event loops.
type Serving = std::thread::JoinHandle<std::io::Result<()>>;

fn join(serving: Serving, target: &Path) -> Result<(), Error> {
    let err = |source| Error::Mount {
        target: target.display().to_string(),
        source,
    };
    match serving.join() {
        Ok(r) => r.map_err(err),
        Err(_) => Err(err(std::io::Error::other("the FUSE event loops panicked"))),
    }
}

/// Mounts the overlay on `target` and serves it until it is unmounted. `ready` is
/// called once the mount is live. Must run in a process that may mount (root of a user
/// namespace owning its mount namespace).
pub fn mount_and_serve(spec: &MountSpec, target: &Path, ready: impl FnOnce()) -> Result<(), Error> {
    let (serving, _) = serve(spec, target)?;
    ready();
    join(serving, target)
}

/// The container's rootfs server (see `runtime::fuse_server`): mounts, writes `1` (or
/// `E` and the error) to `ready`, reads init's pid from `init` and serves until init
/// exits. Returns the exit code.
pub fn serve_container(spec: &MountSpec, target: &Path, ready: OwnedFd, init: OwnedFd) -> i32 {
    crate::monitor::heap::tune_fuse_server();
    let mut ready = std::fs::File::from(ready);
    let (serving, shedder) = match serve(spec, target) {
        Ok(s) => s,
        Err(e) => {
            let _ = ready.write_all(format!("E{e}").as_bytes());
            return 1;
        }
    };
    if ready.write_all(b"1").is_err() {
        return 1;
    }
    drop(ready);
    tracing::debug!("FUSE server: serving the container's rootfs");
    // From here on the server leaves with _exit: its mount namespace, and the mount with
    // it, ends with it, and fuser's unmount-on-drop would look for the mount point by a
    // path that does not resolve from our /proc root (and fall back to fusermount).
    // SAFETY: _exit ends the process at once.
    let leave = |code: i32| -> ! { unsafe { libc::_exit(code) } };
    let mut pid = [0u8; 4];
    if std::fs::File::from(init).read_exact(&mut pid).is_err() {
        leave(1); // no container
    }
    let pid = i32::from_le_bytes(pid);
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) } as i32;
    if pidfd < 0 {
        leave(0); // init is already gone (a short-lived container)
    }
    // Idle most of its life: the directory listings a burst of requests cached, and what
    // it left in the allocator's arena, go back when the event loops have been quiet for
    // a while (see `idle`).
    crate::monitor::heap::wait_readable_trimming(pidfd, || {
        shedder.shed();
    });
    drop(serving);
    // Init exited: leaving ends the mount namespace and the mount with it.
    tracing::debug!("FUSE server: the container's init exited; the server leaves");
    leave(0)
}

/// In a freshly forked server: stdin, stdout and stderr to /dev/null (they may be the
/// container's and must not be held open), every other fd but `keep` closed.
pub fn detach_stdio_and_fds(keep: &[RawFd]) {
    let null = CString::new("/dev/null").unwrap_or_default();
    // SAFETY: plain fd syscalls in a single-threaded child.
    unsafe {
        let fd = libc::open(null.as_ptr(), libc::O_RDWR);
        if fd >= 0 {
            for target in 0..3 {
                libc::dup2(fd, target);
            }
            if fd > 2 {
                libc::close(fd);
            }
        }
        let mut keep: Vec<RawFd> = keep.to_vec();
        keep.sort_unstable();
        let mut lo: u32 = 3;
        for k in keep {
            let k = k as u32;
            if k > lo {
                libc::syscall(libc::SYS_close_range, lo, k - 1, 0);
            }
            lo = lo.max(k + 1);
        }
        libc::syscall(libc::SYS_close_range, lo, u32::MAX, 0);
    }
}

/// `skiffd __fuse-mount`: mounts in the current namespaces and serves in the foreground;
/// writes one byte to `ready_fd` once mounted. Returns the exit code.
pub fn mount_main(spec: &MountSpec, target: &Path, ready_fd: Option<i32>) -> i32 {
    // As a container's server does (and bench/fuse-bench.sh measures this one).
    crate::monitor::heap::tune_fuse_server();
    let r = mount_and_serve(spec, target, || {
        if let Some(fd) = ready_fd {
            // SAFETY: the caller handed us this fd for our use only.
            let mut f = unsafe { std::fs::File::from_raw_fd(fd) };
            let _ = f.write_all(b"1");
        }
    });
    match r {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("skiffd __fuse-mount: {e}");
            1
        }
    }
}
