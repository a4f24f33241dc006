//! skiff's FUSE overlay filesystem (the `fuse` storage driver): N read-only lower layers,
//! one writable upper layer and a work directory, merged like kernel overlayfs, served
//! with `fuser` from inside the container's user and mount namespaces.
//!
//! * Layout on disk is kernel overlayfs's with `userxattr` (see [`layers`]): 0/0
//!   character-device whiteouts, `user.overlay.opaque=y`; so an upper dir written by this
//!   driver is readable by the `overlay` driver and the other way round. OCI `.wh.` forms
//!   are honoured when reading.
//! * Speed comes from sending the kernel fewer requests: long entry/attr TTLs, negative
//!   entries, readdirplus, `FOPEN_CACHE_DIR` listings, writeback cache, `FOPEN_KEEP_CACHE`,
//!   cached xattr names, 1 MiB requests, and several event loops on cloned fds.
//!   Passthrough is never negotiated (it needs CAP_SYS_ADMIN in the initial namespace).
//! * Limits: renaming a directory that has lower-layer parts gives EXDEV (`mv` then
//!   copies), as kernel overlay does with `userxattr`; copy-up always copies data
//!   (no metadata-only copy-up yet); hard links between lower-layer files are broken
//!   by copy-up (as kernel overlay without `index`).

pub mod layers;
mod mutate;
pub mod node;
mod ops;
pub mod sys;

use std::io::Write;
use std::os::fd::FromRawFd;
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
    /// Event-loop threads (0 = one per CPU, at least 2).
    pub threads: usize,
}

/// Mounts the overlay on `target` and serves it until it is unmounted. `ready` is
/// called once the mount is live (before any server thread exists). Must run in a
/// process that may mount (root of a user namespace owning its mount namespace).
pub fn mount_and_serve(spec: &MountSpec, target: &Path, ready: impl FnOnce()) -> Result<(), Error> {
    sys::raise_nofile();
    let fs = Overlay::new(&spec.lower, &spec.upper, &spec.work).map_err(Error::Layers)?;
    let threads = if spec.threads == 0 {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2)
            .max(2)
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
    let mount_err = |source| Error::Mount {
        target: target.display().to_string(),
        source,
    };
    let session = fuser::Session::new(fs, target, &config).map_err(mount_err)?;
    ready();
    session.run().map_err(mount_err)
}

/// `skiffd __fuse-mount`: mounts in the current namespaces and serves in the foreground;
/// writes one byte to `ready_fd` once mounted. Returns the exit code.
pub fn mount_main(spec: &MountSpec, target: &Path, ready_fd: Option<i32>) -> i32 {
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
