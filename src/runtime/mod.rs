//! The OCI runtime: takes an `oci_spec::runtime::Spec` and a rootfs plan and runs the
//! container — user namespace first (maps written by newuidmap/newgidmap from outside),
//! then mount, pid, uts, ipc and network namespaces, the rootfs and its mounts,
//! `pivot_root`, hostname, user, working directory, environment and exec.
//!
//! Everything here forks, so it is only called from single-threaded processes: the
//! per-container monitor and the daemon's helper subcommands, never the daemon itself.

pub mod caps;
pub mod copy;
pub mod create;
pub mod elfdeps;
pub mod exec;
pub mod fuse_server;
pub mod init;
pub mod inroot;
pub mod join;
pub mod keepid_layers;
pub mod mountopts;
pub mod nsproc;
pub mod pty;
pub mod readahead;
pub mod rlimits;
pub mod rootfs;
pub mod seccomp;
pub mod security;
pub mod sync;
pub mod user;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use create::create_and_start;
pub use nsproc::{run_in_userns, wait_exit_code};

/// How the container's root filesystem is assembled from the image's layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum RootfsDriver {
    /// The kernel's overlayfs, mounted inside the container's user namespace (`userxattr`).
    #[default]
    Overlay,
    /// A full copy of the layers into the container's directory.
    Vfs,
    /// skiff's own FUSE overlay (`crate::fuse`), served from inside the container's user
    /// and mount namespaces by a helper process that lives as long as the container.
    Fuse,
}

impl RootfsDriver {
    /// The driver to use when none is configured, and why: skiff's FUSE overlay where
    /// `/dev/fuse` can be opened, else the kernel's overlayfs in the user namespace.
    pub fn choose_default() -> (RootfsDriver, String) {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
        {
            Ok(_) => (
                RootfsDriver::Fuse,
                "the default: skiff's FUSE overlay (/dev/fuse is usable); \
                 --storage-driver overlay or vfs to change"
                    .into(),
            ),
            Err(e) => (
                RootfsDriver::Overlay,
                format!(
                    "the kernel's overlayfs in the user namespace, because /dev/fuse cannot \
                     be opened ({e}); install fuse3 or make /dev/fuse mode 0666 (as distros \
                     ship it) to get skiff's FUSE overlay, or choose with --storage-driver"
                ),
            ),
        }
    }
}

impl RootfsDriver {
    /// Every driver, for `info`.
    pub const ALL: [RootfsDriver; 3] =
        [RootfsDriver::Fuse, RootfsDriver::Overlay, RootfsDriver::Vfs];

    /// Whether this driver runs `--userns keep-id` containers, and what it costs (for
    /// `info` and the docs).
    pub fn keep_id_support(self) -> &'static str {
        match self {
            RootfsDriver::Fuse => {
                "supported, no cost: the FUSE server translates owners in its replies; \
                 the layers are shared with default containers, never copied or chowned"
            }
            RootfsDriver::Vfs => {
                "supported: the container's copy of the image (made by vfs for every \
                 container anyway) is made with the keep-id owners; no extra copy"
            }
            RootfsDriver::Overlay => {
                "supported, one copy per layer and mapping: the first keep-id start of an \
                 image copies its layers with the keep-id owners (as podman does; disk and \
                 time in proportion to the image), later keep-id containers share that \
                 copy; it goes with the layer (rmi, image prune)"
            }
        }
    }
}

impl std::fmt::Display for RootfsDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RootfsDriver::Overlay => "overlay",
            RootfsDriver::Vfs => "vfs",
            RootfsDriver::Fuse => "fuse",
        })
    }
}

impl std::str::FromStr for RootfsDriver {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "overlay" => Ok(RootfsDriver::Overlay),
            "vfs" => Ok(RootfsDriver::Vfs),
            "fuse" => Ok(RootfsDriver::Fuse),
            other => Err(format!(
                "unknown storage driver {other:?}: use \"overlay\", \"fuse\" or \"vfs\""
            )),
        }
    }
}

/// Where the rootfs comes from: read-only layers (top first), a writable upper directory
/// and overlayfs's work directory (the vfs driver keeps its "copied" marker there).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootfsPlan {
    /// The storage driver.
    pub driver: RootfsDriver,
    /// Image layer directories, top layer first.
    pub lower: Vec<PathBuf>,
    /// The container's writable layer.
    pub upper: PathBuf,
    /// overlayfs's work directory (same filesystem as `upper`).
    pub work: PathBuf,
    /// Owners to translate (`--userns keep-id`): the layers keep the default mapping's
    /// owners. The FUSE server translates them in its replies (its upper directory keeps
    /// the default mapping's owners too); the vfs copy is made with translated owners.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remap: Option<crate::userns::keepid::IdRemap>,
}

/// Errors of the runtime.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A system call failed.
    #[error("{what}: {source}")]
    Sys {
        /// The operation.
        what: String,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// A file operation failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation and path.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A mount failed.
    #[error("mount {fstype} on {target}: {source}")]
    Mount {
        /// Where.
        target: String,
        /// Filesystem type (or "bind").
        fstype: String,
        /// The errno.
        source: nix::errno::Errno,
    },
    /// The kernel overlay could not be mounted.
    #[error("{0}: the kernel's overlayfs is not usable in a user namespace here (it needs Linux 5.11 or newer and a filesystem that supports it for the upper layer); start skiffd with --storage-driver vfs")]
    Overlay(String),
    /// The id maps could not be applied.
    #[error("{0}")]
    IdMap(#[from] crate::userns::Error),
    /// The spec asks for something we cannot do.
    #[error("invalid runtime spec: {0}")]
    Spec(String),
    /// Setting up the container failed.
    #[error("{0}")]
    Setup(String),
    /// The command could not be executed (code 125, 126 or 127).
    #[error("{message}")]
    Exec {
        /// Docker's exit code for the failure.
        code: i32,
        /// What went wrong.
        message: String,
    },
    /// The processes' sync protocol broke.
    #[error("runtime sync protocol: {0}")]
    Protocol(String),
}

impl Error {
    pub(crate) fn sys(what: impl Into<String>, source: nix::errno::Errno) -> Error {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }

    /// The exit code a container gets when this error stops it from starting.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Exec { code, .. } => *code,
            _ => exec::EXIT_SETUP_FAILED,
        }
    }
}
