//! `org.skiff.Error.*`: the backend's errors as D-Bus errors.

use zbus::DBusError;

use crate::daemon;
use crate::image;
use crate::image::registry;

/// The D-Bus errors skiffd replies with. Standard errors (`InvalidArgs`, `AccessDenied`)
/// travel in the `ZBus` variant.
#[derive(Debug, DBusError)]
#[zbus(prefix = "org.skiff.Error")]
pub enum SkiffError {
    /// A zbus or standard `org.freedesktop.DBus.Error.*` error.
    #[zbus(error)]
    ZBus(zbus::Error),
    /// No container with that name or id.
    NoSuchContainer(String),
    /// No image with that reference or id.
    NoSuchImage(String),
    /// No job with that id.
    NoSuchJob(String),
    /// The container name is taken.
    NameInUse(String),
    /// The container runs.
    ContainerRunning(String),
    /// The container does not run.
    ContainerNotRunning(String),
    /// The image is used by a container.
    ImageInUse(String),
    /// No volume of that name.
    NoSuchVolume(String),
    /// The volume is used by a container.
    VolumeInUse(String),
    /// The container configuration is invalid; the message names the key.
    InvalidConfig(String),
    /// An image reference is invalid.
    InvalidReference(String),
    /// An id prefix matches several objects.
    Ambiguous(String),
    /// Importing an image failed.
    ImportFailed(String),
    /// Pulling an image from a registry failed (transport, TLS, content).
    PullFailed(String),
    /// The registry refused us: no or wrong credentials (the message says how to log in).
    Unauthorized(String),
    /// The command does not exist in the container (docker's exit code 127).
    CommandNotFound(String),
    /// The command cannot be executed (126).
    CommandNotExecutable(String),
    /// Creating or starting the container failed (125).
    RuntimeError(String),
    /// Subordinate id ranges or newuidmap/newgidmap are missing or broken.
    IdMapping(String),
    /// Not implemented yet.
    NotSupported(String),
    /// The job was cancelled, or can no longer be.
    Cancelled(String),
    /// Anything else.
    Failed(String),
}

impl SkiffError {
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    pub fn invalid_args(msg: impl Into<String>) -> SkiffError {
        SkiffError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::InvalidArgs(
            msg.into(),
        ))))
    }

    /// `org.freedesktop.DBus.Error.AccessDenied`.
    pub fn access_denied(msg: impl Into<String>) -> SkiffError {
        SkiffError::ZBus(zbus::Error::FDO(Box::new(zbus::fdo::Error::AccessDenied(
            msg.into(),
        ))))
    }
}

impl From<daemon::Error> for SkiffError {
    fn from(e: daemon::Error) -> SkiffError {
        let msg = e.to_string();
        match e {
            daemon::Error::NoSuchContainer(_) => SkiffError::NoSuchContainer(msg),
            daemon::Error::AmbiguousContainer { .. } => SkiffError::Ambiguous(msg),
            daemon::Error::NameInUse(_) => SkiffError::NameInUse(msg),
            daemon::Error::InvalidConfig(_) => SkiffError::InvalidConfig(msg),
            daemon::Error::InvalidArgument(_) => SkiffError::invalid_args(msg),
            daemon::Error::NotSupported(_) => SkiffError::NotSupported(msg),
            daemon::Error::ContainerRunning(_) => SkiffError::ContainerRunning(msg),
            daemon::Error::ContainerNotRunning(_) => SkiffError::ContainerNotRunning(msg),
            daemon::Error::CommandNotFound(_) => SkiffError::CommandNotFound(msg),
            daemon::Error::CommandNotExecutable(_) => SkiffError::CommandNotExecutable(msg),
            daemon::Error::Runtime(_) => SkiffError::RuntimeError(msg),
            daemon::Error::IdMapping(_) => SkiffError::IdMapping(msg),
            daemon::Error::ImportFailed(_) => SkiffError::ImportFailed(msg),
            daemon::Error::Pull(pe) => match pe {
                registry::Error::NotFound { .. } => SkiffError::NoSuchImage(msg),
                registry::Error::Unauthorized { .. } => SkiffError::Unauthorized(msg),
                registry::Error::InvalidPlatform { .. } => SkiffError::invalid_args(msg),
                registry::Error::Store(image::Error::InvalidReference { .. }) => {
                    SkiffError::InvalidReference(msg)
                }
                _ => SkiffError::PullFailed(msg),
            },
            daemon::Error::ImageInUse(_) => SkiffError::ImageInUse(msg),
            daemon::Error::NoSuchVolume(_) => SkiffError::NoSuchVolume(msg),
            daemon::Error::VolumeInUse(_) => SkiffError::VolumeInUse(msg),
            daemon::Error::Image(ie) => match ie {
                image::Error::NoSuchImage { .. } => SkiffError::NoSuchImage(msg),
                image::Error::AmbiguousImage { .. } => SkiffError::Ambiguous(msg),
                image::Error::InvalidReference { .. } => SkiffError::InvalidReference(msg),
                image::Error::Unsupported { .. } => SkiffError::NotSupported(msg),
                image::Error::InvalidDigest { .. } => SkiffError::InvalidReference(msg),
                image::Error::DigestMismatch { .. }
                | image::Error::InvalidImage { .. }
                | image::Error::MissingBlob { .. }
                | image::Error::UnsafeEntry { .. }
                | image::Error::InvalidLayer { .. }
                | image::Error::LimitExceeded { .. } => SkiffError::ImportFailed(msg),
                _ => SkiffError::Failed(msg),
            },
            daemon::Error::Cancelled => SkiffError::Cancelled(msg),
            daemon::Error::Corrupt(_) | daemon::Error::Io { .. } | daemon::Error::Internal(_) => {
                SkiffError::Failed(msg)
            }
        }
    }
}
