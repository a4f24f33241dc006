//! The backend's error type. Each variant is one failure a client can act on; the D-Bus
//! layer maps them to `org.skiff.Error.*` names.

use std::path::Path;

/// Errors of the backend.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No container with that name or id.
    #[error("no such container: {0}")]
    NoSuchContainer(String),
    /// An id prefix matches several containers.
    #[error("container id prefix {prefix:?} is ambiguous: it matches {}", candidates.join(", "))]
    AmbiguousContainer {
        /// The prefix given.
        prefix: String,
        /// The short ids it matches.
        candidates: Vec<String>,
    },
    /// The name is taken (docker's conflict message).
    #[error(
        "Conflict. The container name \"/{name}\" is already in use by container \"{holder}\". \
         You have to remove (or rename) that container to be able to reuse that name."
    )]
    NameInUse {
        /// The name asked for.
        name: String,
        /// The id of the container that has it.
        holder: String,
    },
    /// The container configuration is invalid (the message names the key).
    #[error("invalid container config: {0}")]
    InvalidConfig(String),
    /// Another argument is invalid.
    #[error("{0}")]
    InvalidArgument(String),
    /// A feature that is not implemented yet.
    #[error("{0}")]
    NotSupported(String),
    /// No volume of that name.
    #[error("no such volume: {0}")]
    NoSuchVolume(String),
    /// The volume is used by containers (and the request was not forced).
    #[error("{0}")]
    VolumeInUse(String),
    /// The container runs (and must not, for this request).
    #[error("container {0} is running: stop it first, or remove it with force")]
    ContainerRunning(String),
    /// The container does not run (and must, for this request).
    #[error("container {0} is not running")]
    ContainerNotRunning(String),
    /// The command does not exist in the container (exit code 127).
    #[error("{0}")]
    CommandNotFound(String),
    /// The command cannot be executed (exit code 126).
    #[error("{0}")]
    CommandNotExecutable(String),
    /// Setting up the container failed (exit code 125).
    #[error("{0}")]
    Runtime(String),
    /// User namespace setup: subordinate ids, newuidmap/newgidmap.
    #[error("{0}")]
    IdMapping(String),
    /// The image is used by a container (and the request was not forced).
    #[error("{0}")]
    ImageInUse(String),
    /// An image store error (unknown image, bad reference, corrupt store).
    #[error(transparent)]
    Image(#[from] crate::image::Error),
    /// Pulling from a registry failed (unknown image, credentials, transport, content).
    #[error(transparent)]
    Pull(#[from] crate::image::registry::Error),
    /// Pushing to a registry failed (credentials, transport, a refused upload).
    #[error(transparent)]
    Push(crate::image::registry::Error),
    /// Importing or loading an image failed (e.g. a hostile or broken tar); the
    /// client names its input.
    #[error("{0}")]
    ImportFailed(String),
    /// A stored record is corrupt.
    #[error("corrupt state: {0}")]
    Corrupt(String),
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// A client cancelled the job.
    #[error("cancelled")]
    Cancelled,
    /// A bug or an unexpected condition.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An I/O error on `path`.
    pub fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            path: path.display().to_string(),
            source,
        }
    }

    /// The exit code `skiff run` uses when this error prevents the container's command
    /// from running (docker's convention).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::CommandNotFound(_) => 127,
            Error::CommandNotExecutable(_) => 126,
            _ => 125,
        }
    }
}
