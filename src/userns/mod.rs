//! User namespace id mapping for rootless containers.
//!
//! A rootless container runs in a new user namespace. Before the container
//! process can do anything useful, its parent must write the namespace's uid
//! and gid maps, which say which host ids the container's ids stand for.
//!
//! * [`subid`] parses `/etc/subuid` and `/etc/subgid`, the files that give
//!   each user a range of subordinate ids it may map.
//! * [`idmap`] turns those ranges into [`IdMaps`]: container id 0 is the
//!   user's own id, and the subordinate ranges follow from container id 1.
//!   A user without subordinate ranges gets a single-id map and a warning
//!   explaining how to add a range.
//! * [`apply`] writes the maps for a process that has just called
//!   `unshare(CLONE_NEWUSER)`, either directly (as root, or for a single-id
//!   map) or through the setuid `newuidmap` / `newgidmap` helpers.
//! * [`shared`] is the one user namespace that containers with the default mapping
//!   share (podman's pause process), so that a start runs no id-map helper.

use std::path::PathBuf;

pub mod apply;
pub mod idmap;
pub mod keepid;
pub mod shared;
pub mod subid;

pub use apply::find_helper;
pub use idmap::{build_map, IdMapEntry, IdMaps};
pub use subid::{Owner, SubIdEntry, SubIdRange};

/// Everything that can go wrong while reading subordinate id files or
/// applying id maps. Each message says what failed and how to fix it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A line of `/etc/subuid` or `/etc/subgid` could not be parsed.
    #[error(
        "{}:{line}: {message}; each line must be NAME_OR_UID:START:COUNT \
         (e.g. \"bob:100000:65536\"): fix or remove this line",
        path.display()
    )]
    Parse {
        /// The file that holds the bad line.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong with the line.
        message: String,
    },

    /// A subordinate id file exists but could not be read.
    #[error(
        "cannot read {}: {source}; make it readable by everyone \
         (it is normally owned by root with mode 644: sudo chmod 644 {})",
        path.display(),
        path.display()
    )]
    Read {
        /// The file that could not be read.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// The name of the current user could not be looked up.
    #[error(
        "cannot look up the user name of uid {uid}: {source}; check that the \
         user exists in /etc/passwd (or that the NSS source, e.g. LDAP or sssd, \
         is reachable)"
    )]
    UserLookup {
        /// The uid whose name was looked up.
        uid: u32,
        /// The error returned by the lookup.
        #[source]
        source: nix::Error,
    },

    /// `newuidmap` or `newgidmap` is not installed.
    #[error(
        "{name} not found in PATH, /usr/bin, /usr/sbin or /bin: install the \
         \"uidmap\" package (apt-get install uidmap / dnf install shadow-utils)"
    )]
    HelperMissing {
        /// The helper's name, `newuidmap` or `newgidmap`.
        name: String,
    },

    /// The helper exists but cannot map other ids because it is neither
    /// setuid root nor carries the needed file capability.
    #[error(
        "{} is neither setuid root nor has the {} file capability, so it cannot \
         map subordinate ids; fix it with: sudo chown root {} && sudo chmod u+s {} \
         (or reinstall the \"uidmap\" / \"shadow-utils\" package)",
        path.display(),
        apply::capability_for(path),
        path.display(),
        path.display()
    )]
    HelperNotPrivileged {
        /// Where the helper was found.
        path: PathBuf,
    },

    /// The helper could not be started at all.
    #[error("cannot run {}: {source}; check that it is an executable file", path.display())]
    HelperSpawn {
        /// Where the helper was found.
        path: PathBuf,
        /// The error from spawning it.
        #[source]
        source: std::io::Error,
    },

    /// The helper ran and reported a failure.
    #[error("{name} failed ({status}): {stderr}; {hint}")]
    HelperFailed {
        /// The helper's name, `newuidmap` or `newgidmap`.
        name: String,
        /// How it exited, e.g. `exit status: 1`.
        status: String,
        /// What it printed on standard error (trimmed).
        stderr: String,
        /// What to check to fix it.
        hint: String,
    },

    /// Writing `/proc/PID/uid_map`, `gid_map` or `setgroups` failed.
    #[error(
        "cannot write {}: {source}; the process must still be alive, in a new \
         user namespace whose map was not written yet, and an unprivileged \
         writer may only map its own id (a larger map needs newuidmap/newgidmap)",
        path.display()
    )]
    WriteMap {
        /// The file that could not be written.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },

    /// An id map cannot be written as it is.
    #[error("invalid {kind} map: {reason}")]
    InvalidMap {
        /// `uid` or `gid`.
        kind: &'static str,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// The process id to apply maps to is not a valid pid.
    #[error(
        "invalid process id {pid}: id maps can only be applied to a process with a positive pid"
    )]
    InvalidPid {
        /// The rejected pid.
        pid: i32,
    },
}
