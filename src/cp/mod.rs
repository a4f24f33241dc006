//! `skiff cp`: files between the host and a container, as tar streams.
//!
//! One side makes a tar of the source (its top entry is the source itself, named by its
//! base name), the other extracts it with the layer unpacker (`crate::image::unpack`, the
//! same refusals of `..`, absolute paths, writes through symlinks or hard links leading
//! out, device nodes), placing the tree by docker's rules ([`rules`]).
//!
//! Inside the container the work is done by skiffd's helper `__cp` ([`helper`]), in the
//! container's user namespace and with the container's root as its own root (`chroot`),
//! so every path — and every symlink on the way — resolves inside the container: a
//! running container's user and mount namespaces are joined; a stopped one's rootfs is
//! mounted by its storage driver in a private mount namespace. The host side (the CLI)
//! extracts as the calling user, so what it copies out is the user's.

pub mod helper;
pub mod rules;
pub mod stream;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::runtime::RootfsPlan;
use crate::userns::IdMaps;

/// Errors of a copy.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A path given by the user is wrong (missing, not a directory, …): the message says
    /// which and why.
    #[error("{0}")]
    Path(String),
    /// The archive could not be extracted (limits, I/O, owners).
    #[error(transparent)]
    Archive(crate::image::Error),
    /// Writing or reading a stream or file failed.
    #[error("{what}: {source}")]
    Io {
        /// The operation.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
    /// Entering the container failed.
    #[error(transparent)]
    Runtime(#[from] crate::runtime::Error),
}

impl From<crate::image::Error> for Error {
    /// The unpacker's refusals in the words of a copy (it speaks of layers).
    fn from(e: crate::image::Error) -> Error {
        match e {
            crate::image::Error::UnsafeEntry { path, reason } => Error::Path(format!(
                "refusing archive entry {path:?}: {reason}; the copy stopped there"
            )),
            crate::image::Error::InvalidLayer { reason } => {
                Error::Path(format!("invalid archive: {reason}"))
            }
            crate::image::Error::UnmappedOwner { path, uid, gid } => Error::Path(format!(
                "cannot give {path:?} the owner {uid}:{gid}: the container's user namespace \
                 does not map that id; copy without -a, or give the archive's files owners \
                 the container has"
            )),
            crate::image::Error::LimitExceeded { what, limit } => Error::Path(format!(
                "the archive exceeds the {what} limit of {limit} (skiffd's layer-max-entries \
                 and layer-max-bytes: skiffd.toml or its flags)"
            )),
            other => Error::Archive(other),
        }
    }
}

impl Error {
    pub(crate) fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// How `CopyTo` places the stream it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The stream's entries are extracted into the destination, an existing directory
    /// (`skiff cp - CTR:DIR`); their owners are kept.
    Extract,
    /// The stream holds one tree (its top entry first), placed by docker's rules.
    Tree,
    /// As `Tree`, but a directory's contents are copied rather than itself (`SRC/.`).
    Contents,
}

impl std::str::FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "extract" => Ok(Mode::Extract),
            "tree" => Ok(Mode::Tree),
            "contents" => Ok(Mode::Contents),
            other => Err(format!(
                "unknown copy mode {other:?} (known: extract, tree, contents)"
            )),
        }
    }
}

/// Where the container's files are.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// A running container: its init's host pid, whose namespaces and root are joined.
    Running {
        /// The pid.
        pid: i32,
    },
    /// A stopped container: its rootfs, mounted on `mountpoint` in a private namespace.
    Stopped {
        /// The storage plan.
        plan: RootfsPlan,
        /// An empty directory of the container's to mount it on.
        mountpoint: PathBuf,
    },
}

/// What to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    /// Read a tar on stdin and place it at `path`.
    To {
        /// The destination in the container.
        path: String,
        /// How to place it.
        mode: Mode,
    },
    /// Write a tar of `path` on stdout.
    From {
        /// The source in the container.
        path: String,
        /// Follow a symlink named by `path` (else the link itself is copied).
        follow: bool,
    },
}

/// The `__cp` helper's spec (on its fd 4).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CpSpec {
    /// The container's id maps.
    pub maps: IdMaps,
    /// The container.
    pub target: Target,
    /// The copy.
    pub direction: Direction,
}

/// What `__cp` reports on its stderr (one JSON object) when it ends.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Done; things skipped (device nodes, refused xattrs).
    Ok {
        /// The warnings.
        warnings: Vec<String>,
    },
    /// A path or the archive was refused: the message is for the user.
    Refused(String),
    /// A running container could not be entered (it has just ended?).
    Gone(String),
    /// Something else failed.
    Failed(String),
}
