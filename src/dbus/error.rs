//! `org.skiff.Error.*`: the backend's errors as D-Bus errors.
//!
//! The reply's error name is the variant's own: `org.skiff.Error.<Variant>`, or the
//! standard `org.freedesktop.DBus.Error.InvalidArgs` / `AccessDenied` for those two (zbus's
//! `DBusError` derive can only name a wrapped standard error `org.freedesktop.zbus.Error`,
//! so the trait is implemented here by hand).

use zbus::message::{Header, Message};
use zbus::names::ErrorName;
use zbus::DBusError;

use crate::daemon;
use crate::image;
use crate::image::registry;

/// The D-Bus errors skiffd replies with.
#[derive(Debug)]
pub enum SkiffError {
    /// A failure of zbus itself; a standard `org.freedesktop.DBus.Error.*` keeps its name,
    /// anything else is `org.freedesktop.DBus.Error.Failed`.
    ZBus(zbus::Error),
    /// `org.freedesktop.DBus.Error.InvalidArgs`.
    InvalidArgs(String),
    /// `org.freedesktop.DBus.Error.AccessDenied`.
    AccessDenied(String),
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
    /// Pushing an image to a registry failed (transport, TLS, a refused upload).
    PushFailed(String),
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
        SkiffError::InvalidArgs(msg.into())
    }

    /// `org.freedesktop.DBus.Error.AccessDenied`.
    pub fn access_denied(msg: impl Into<String>) -> SkiffError {
        SkiffError::AccessDenied(msg.into())
    }

    /// The error name.
    fn error_name(&self) -> ErrorName<'_> {
        let ours = match self {
            SkiffError::ZBus(e) => return zbus_error_name(e),
            other => other.skiff_name(),
        };
        ErrorName::from_static_str_unchecked(ours)
    }

    /// The name of an error that is not zbus's.
    fn skiff_name(&self) -> &'static str {
        use SkiffError::*;
        match self {
            ZBus(_) => "org.freedesktop.DBus.Error.Failed",
            InvalidArgs(_) => "org.freedesktop.DBus.Error.InvalidArgs",
            AccessDenied(_) => "org.freedesktop.DBus.Error.AccessDenied",
            NoSuchContainer(_) => "org.skiff.Error.NoSuchContainer",
            NoSuchImage(_) => "org.skiff.Error.NoSuchImage",
            NoSuchJob(_) => "org.skiff.Error.NoSuchJob",
            NameInUse(_) => "org.skiff.Error.NameInUse",
            ContainerRunning(_) => "org.skiff.Error.ContainerRunning",
            ContainerNotRunning(_) => "org.skiff.Error.ContainerNotRunning",
            ImageInUse(_) => "org.skiff.Error.ImageInUse",
            NoSuchVolume(_) => "org.skiff.Error.NoSuchVolume",
            VolumeInUse(_) => "org.skiff.Error.VolumeInUse",
            InvalidConfig(_) => "org.skiff.Error.InvalidConfig",
            InvalidReference(_) => "org.skiff.Error.InvalidReference",
            Ambiguous(_) => "org.skiff.Error.Ambiguous",
            ImportFailed(_) => "org.skiff.Error.ImportFailed",
            PullFailed(_) => "org.skiff.Error.PullFailed",
            PushFailed(_) => "org.skiff.Error.PushFailed",
            Unauthorized(_) => "org.skiff.Error.Unauthorized",
            CommandNotFound(_) => "org.skiff.Error.CommandNotFound",
            CommandNotExecutable(_) => "org.skiff.Error.CommandNotExecutable",
            RuntimeError(_) => "org.skiff.Error.RuntimeError",
            IdMapping(_) => "org.skiff.Error.IdMapping",
            NotSupported(_) => "org.skiff.Error.NotSupported",
            Cancelled(_) => "org.skiff.Error.Cancelled",
            Failed(_) => "org.skiff.Error.Failed",
        }
    }

    /// The message, with huge inputs it echoes cut (`crate::elide`).
    fn text(&self) -> String {
        crate::elide::long_inputs(&self.full_text()).into_owned()
    }

    fn full_text(&self) -> String {
        match self {
            SkiffError::ZBus(e) => match e {
                zbus::Error::MethodError(_, Some(d), _) => d.clone(),
                zbus::Error::FDO(f) => f.description().unwrap_or_default().to_string(),
                other => other.to_string(),
            },
            other => other.own_message().unwrap_or_default().to_string(),
        }
    }

    /// The message of one of skiff's own errors (None for a wrapped zbus error).
    fn own_message(&self) -> Option<&str> {
        use SkiffError::*;
        match self {
            ZBus(_) => None,
            InvalidArgs(m)
            | AccessDenied(m)
            | NoSuchContainer(m)
            | NoSuchImage(m)
            | NoSuchJob(m)
            | NameInUse(m)
            | ContainerRunning(m)
            | ContainerNotRunning(m)
            | ImageInUse(m)
            | NoSuchVolume(m)
            | VolumeInUse(m)
            | InvalidConfig(m)
            | InvalidReference(m)
            | Ambiguous(m)
            | ImportFailed(m)
            | PullFailed(m)
            | PushFailed(m)
            | Unauthorized(m)
            | CommandNotFound(m)
            | CommandNotExecutable(m)
            | RuntimeError(m)
            | IdMapping(m)
            | NotSupported(m)
            | Cancelled(m)
            | Failed(m) => Some(m),
        }
    }
}

/// The name a zbus failure travels under: a standard error's own, else `Failed`.
fn zbus_error_name(e: &zbus::Error) -> ErrorName<'_> {
    match e {
        zbus::Error::FDO(f) => f.name().to_owned(),
        zbus::Error::MethodError(name, _, _) => name.as_ref(),
        _ => ErrorName::from_static_str_unchecked("org.freedesktop.DBus.Error.Failed"),
    }
}

impl DBusError for SkiffError {
    fn create_reply(&self, call: &Header<'_>) -> zbus::Result<Message> {
        Message::error(call, self.name()).build(&(self.text(),))
    }

    fn name(&self) -> ErrorName<'_> {
        self.error_name()
    }

    fn description(&self) -> Option<&str> {
        match self {
            SkiffError::ZBus(e) => match e {
                zbus::Error::MethodError(_, d, _) => d.as_deref(),
                zbus::Error::FDO(f) => f.description(),
                _ => None,
            },
            other => other.own_message(),
        }
    }
}

impl std::fmt::Display for SkiffError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error_name(), self.text())
    }
}

impl std::error::Error for SkiffError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            SkiffError::ZBus(e) => Some(e),
            _ => None,
        }
    }
}

impl From<zbus::Error> for SkiffError {
    fn from(e: zbus::Error) -> SkiffError {
        SkiffError::ZBus(e)
    }
}

impl From<daemon::Error> for SkiffError {
    fn from(e: daemon::Error) -> SkiffError {
        let msg = e.to_string();
        match e {
            daemon::Error::NoSuchContainer(_) => SkiffError::NoSuchContainer(msg),
            daemon::Error::AmbiguousContainer { .. } => SkiffError::Ambiguous(msg),
            daemon::Error::NameInUse { .. } => SkiffError::NameInUse(msg),
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
            daemon::Error::Push(pe) => match pe {
                registry::Error::Unauthorized { .. } => SkiffError::Unauthorized(msg),
                _ => SkiffError::PushFailed(msg),
            },
            daemon::Error::ImageInUse(_) => SkiffError::ImageInUse(msg),
            daemon::Error::NoSuchVolume(_) => SkiffError::NoSuchVolume(msg),
            daemon::Error::VolumeInUse(_) => SkiffError::VolumeInUse(msg),
            daemon::Error::Image(ie) => match ie {
                image::Error::NoSuchImage { .. } => SkiffError::NoSuchImage(msg),
                image::Error::UsedByBuild { .. } => SkiffError::ImageInUse(msg),
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
