//! Starting the FUSE rootfs server for the `fuse` storage driver.
//!
//! The intermediate (root of the container's user namespace) unshares the mount
//! namespace, and forks the server, which mounts `crate::fuse` on the rootfs directory
//! and reports over a pipe. Meanwhile the intermediate unshares the other namespaces and
//! forks init; it then waits for the server's report and only after it lets init go on
//! (init finds the mount in the shared mount namespace and pivots into it). The
//! intermediate hands the server init's pid; the server watches it with a pidfd and exits
//! when init does, which ends the mount namespace and the mount with it: after the
//! container is gone no mount, thread or process remains. The server is a child of the
//! monitor (a subreaper) once the intermediate exits, so the monitor reaps it.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::exit;

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{fork, pipe2, ForkResult, Pid};

use super::sync::Channel;
use super::{Error, RootfsPlan};

/// A forked server that has not reported its mount yet. Dropping it closes both of our
/// pipe ends: the server, finding no one to serve, exits.
#[derive(Debug)]
pub struct Pending {
    /// The server's pid.
    pub pid: Pid,
    ready_r: OwnedFd,
    init_w: OwnedFd,
}

impl Pending {
    /// Waits for the server's report: the mount is there, or why it is not (the server
    /// is then killed and reaped).
    pub fn mounted(self) -> Result<Server, Error> {
        let Pending {
            pid,
            ready_r,
            init_w,
        } = self;
        let mut msg = String::new();
        let _ = File::from(ready_r).read_to_string(&mut msg);
        if msg == "1" {
            return Ok(Server { pid, init_w });
        }
        let _ = kill(pid, Signal::SIGKILL);
        let _ = nix::sys::wait::waitpid(pid, None);
        let why = msg.strip_prefix('E').unwrap_or("the server exited");
        Err(Error::Setup(format!(
            "the FUSE rootfs could not be mounted: {why}"
        )))
    }
}

/// A started server, waiting for init's pid.
#[derive(Debug)]
pub struct Server {
    /// The server's pid.
    pub pid: Pid,
    init_w: OwnedFd,
}

impl Server {
    /// Tells the server which process to outlive no longer than.
    pub fn watch(self, init: Pid) {
        let mut f = File::from(self.init_w);
        if let Err(e) = f.write_all(&init.as_raw().to_le_bytes()) {
            tracing::warn!("cannot tell the FUSE server init's pid: {e}");
        }
    }
}

/// Unshares the mount namespace and forks the server (named `skiff-fuse`), which mounts
/// on `root` while the caller goes on; [`Pending::mounted`] waits for its report. The
/// caller is the single-threaded intermediate; `chan` is closed in the server.
pub fn start(_chan: &Channel, plan: &RootfsPlan, root: &Path) -> Result<Pending, Error> {
    unshare(CloneFlags::CLONE_NEWNS).map_err(|e| Error::sys("unshare(CLONE_NEWNS)", e))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(|e| Error::sys("make / private", e))?;
    std::fs::create_dir_all(root)
        .map_err(|e| Error::io(format!("create {}", root.display()), e))?;
    let (ready_r, ready_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (init_r, init_w) =
        pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let spec = crate::fuse::MountSpec {
        lower: plan.lower.clone(),
        upper: plan.upper.clone(),
        work: plan.work.clone(),
        threads: 0,
        remap: plan.remap.clone(),
    };
    // SAFETY: the intermediate is single-threaded; the child only runs the server.
    match unsafe { fork() }.map_err(|e| Error::sys("fork the FUSE server", e))? {
        ForkResult::Child => {
            // Its own name in `ps` (and in bench/memory-bench.sh), apart from the monitor.
            // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
            unsafe { libc::prctl(libc::PR_SET_NAME, c"skiff-fuse".as_ptr(), 0, 0, 0) };
            // The log stays: the server's lines go to the daemon's log as the monitor's.
            let mut keep = vec![ready_w.as_raw_fd(), init_r.as_raw_fd()];
            keep.extend(crate::logging::helper_log_fd());
            crate::fuse::detach_stdio_and_fds(&keep);
            exit(crate::fuse::serve_container(&spec, root, ready_w, init_r))
        }
        ForkResult::Parent { child } => {
            drop(ready_w);
            drop(init_r);
            Ok(Pending {
                pid: child,
                ready_r,
                init_w,
            })
        }
    }
}
