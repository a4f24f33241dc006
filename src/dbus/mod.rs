//! The D-Bus API, `org.skiff.skiff1` (see docs/dbus-api.md). This layer only decodes a
//! request, calls the backend (`crate::daemon`) and encodes the reply;
//! the caller is checked once for every message, in
//! `gate`; it also turns the backend's events into signals and keeps one object per container,
//! image and job.

pub mod build;
pub mod caller;
pub mod container;
pub mod convert;
pub mod error;
pub mod exec;
pub mod gate;
pub mod image;
pub mod job;
pub mod manager;
mod options;
pub mod proxy;
pub mod server;
pub mod session;
pub mod socket;
pub mod stdio;
pub mod volume;

pub use error::SkiffError;

/// The well-known bus name.
pub const BUS_NAME: &str = "org.skiff.skiff1";
/// The manager's object path.
pub const MANAGER_PATH: &str = "/org/skiff/skiff1";
/// The API version: bumped on every compatible addition.
pub const API_VERSION: u32 = 6;

/// The object path of a container (64 hex digits need no escaping).
pub fn container_path(id: &str) -> String {
    format!("{MANAGER_PATH}/container/{id}")
}

/// The object path of an image.
pub fn image_path(id: &str) -> String {
    format!("{MANAGER_PATH}/image/{id}")
}

/// The object path of a job.
pub fn job_path(id: u32) -> String {
    format!("{MANAGER_PATH}/job/{id}")
}

/// Flag of `RunContainer`: remove the container when it exits.
pub const RUN_AUTO_REMOVE: u64 = 1;
/// Flag of `RunContainer`: kill the container when the calling client leaves the bus.
pub const RUN_KILL_ON_DISCONNECT: u64 = 2;
/// `RunContainer`/`Start` flag: the caller attaches right after (no fds): the monitor
/// keeps the output and exit code for it even if the command ends first.
pub const RUN_ATTACH: u64 = 4;
/// Flag of `ListContainers`: include stopped containers.
pub const LIST_ALL: u64 = 1;
/// Flag of `Remove`: kill a running container first.
pub const REMOVE_FORCE: u64 = 1;
/// Flag of `Remove`: remove the container's anonymous volumes too (`rm -v`).
pub const REMOVE_VOLUMES: u64 = 2;

/// Refuses unknown flag bits, naming them.
pub fn check_flags(flags: u64, known: u64) -> Result<(), SkiffError> {
    let unknown = flags & !known;
    if unknown == 0 {
        Ok(())
    } else {
        Err(SkiffError::invalid_args(format!(
            "unknown flag bits {unknown:#x}"
        )))
    }
}
