//! `skiff run --sdnotify=conmon|container|ignore`, for `skiff run` as the main process
//! of a `Type=notify` service (the NOTIFY_SOCKET in its environment):
//! - `conmon` (the default there): skiff sends READY=1 once the container has started;
//! - `container`: the container's process gets NOTIFY_SOCKET, a socket of skiff's
//!   bind-mounted at /run/notify/notify.sock, and what it sends (READY=1, STATUS=…) is
//!   passed on to the service manager, from skiff — the service's main process, so
//!   `NotifyAccess=main` is enough and MAINPID stays skiff's (the container's processes
//!   are in a scope of their own, not in the service);
//! - `ignore`: nothing is sent; the container does not get the socket.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use super::{CreateArgs, Failure};
use crate::daemon::notify::Notifier;

/// Where the container finds the socket.
pub const CONTAINER_SOCKET: &str = "/run/notify/notify.sock";

/// What a container may tell the service manager through skiff (not MAINPID, file
/// descriptor stores or anything else that speaks for skiff's own process).
const PASSED_ON: &[&str] = &[
    "READY",
    "STATUS",
    "STOPPING",
    "RELOADING",
    "ERRNO",
    "BUSERROR",
    "EXTEND_TIMEOUT_USEC",
    "WATCHDOG",
    "WATCHDOG_USEC",
    "MONOTONIC_USEC",
];

/// The relay directories' names start with this (in `$XDG_RUNTIME_DIR`).
const DIR_PREFIX: &str = "skiff-sdnotify-";
/// The file in a relay directory its `skiff run` holds locked while it lives.
const LOCK_NAME: &str = "lock";
/// A relay directory without a lock file (made by an older skiff) is a leftover once
/// this old: its `skiff run` would have passed it on by then.
const UNLOCKED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// The notification set-up of one `skiff run`.
pub struct SdNotify {
    upstream: std::sync::Arc<Notifier>,
    container_mode: bool,
    dir: Option<PathBuf>,
    /// Held while we live: a relay directory whose lock can be taken is a leftover.
    _lock: Option<nix::fcntl::Flock<std::fs::File>>,
}

fn fail(message: String) -> Failure {
    Failure { message, code: 125 }
}

impl SdNotify {
    /// Reads `--sdnotify` and `$NOTIFY_SOCKET` (taken out of skiff's environment);
    /// for `container` mode, makes the socket and adds its mount and NOTIFY_SOCKET to
    /// `args`. None: nothing to notify.
    pub fn prepare(args: &mut CreateArgs, detach: bool) -> Result<Option<SdNotify>, Failure> {
        let mode = args.units.sdnotify.clone();
        let container_mode = match mode.as_deref() {
            None | Some("conmon") => false,
            Some("container") => true,
            Some("ignore") => return Ok(None),
            Some(other) => {
                return Err(fail(format!(
                    "--sdnotify={other:?}: use conmon, container or ignore"
                )))
            }
        };
        if container_mode && detach {
            return Err(fail(
                "--sdnotify=container passes the container's messages on while skiff run \
                 stays in the foreground: drop -d"
                    .into(),
            ));
        }
        if args.tty {
            if mode.is_some() {
                return Err(fail(
                    "--sdnotify is for services, whose skiff run has no terminal: drop -t".into(),
                ));
            }
            return Ok(None);
        }
        // (Read, not taken out of the environment: skiff starts no process that could
        // inherit it, and the CLI's threads already run.)
        let Some(name) = std::env::var_os("NOTIFY_SOCKET").filter(|n| !n.is_empty()) else {
            // Not under a service manager: nothing to tell.
            return Ok(None);
        };
        let upstream = Notifier::open(&name.to_string_lossy())
            .map_err(|e| fail(format!("--sdnotify: {e}")))?;
        let upstream = std::sync::Arc::new(upstream);
        let mut me = SdNotify {
            upstream,
            container_mode,
            dir: None,
            _lock: None,
        };
        if container_mode {
            me.proxy(args)?;
        }
        Ok(Some(me))
    }

    /// Makes the container's socket and a thread that passes its messages on.
    fn proxy(&mut self, args: &mut CreateArgs) -> Result<(), Failure> {
        let base = std::env::var_os("XDG_RUNTIME_DIR")
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir);
        sweep(&base);
        let rnd = crate::daemon::names::new_id().map_err(|e| fail(format!("random: {e}")))?;
        // Made under a hidden name and locked before it gets its real one, so a sweep
        // never sees a live relay unlocked.
        let tmp = base.join(format!(".{DIR_PREFIX}{}", &rnd[..12]));
        let dir = base.join(format!("{DIR_PREFIX}{}", &rnd[..12]));
        std::fs::create_dir(&tmp).map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        self.dir = Some(tmp.clone());
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        let lock = std::fs::File::create(tmp.join(LOCK_NAME))
            .map_err(|e| fail(format!("{}: {e}", tmp.display())))?;
        let lock = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| fail(format!("lock {}: {e}", tmp.display())))?;
        self._lock = Some(lock);
        std::fs::rename(&tmp, &dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
        self.dir = Some(dir.clone());
        let path = dir.join("notify.sock");
        let sock =
            UnixDatagram::bind(&path).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        // Any user of the container may notify (the directory keeps others out on the
        // host).
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
            .map_err(|e| fail(format!("{}: {e}", path.display())))?;
        args.volumes
            .push(format!("{}:{CONTAINER_SOCKET}", path.display()));
        args.env.push(format!("NOTIFY_SOCKET={CONTAINER_SOCKET}"));
        let upstream = self.upstream.clone();
        std::thread::Builder::new()
            .name("sdnotify".into())
            .spawn(move || pass_on(sock, &upstream))
            .map_err(|e| fail(format!("sdnotify thread: {e}")))?;
        Ok(())
    }

    /// The container has started: READY=1 in `conmon` mode.
    pub fn started(&self) {
        if !self.container_mode {
            if let Err(e) = self.upstream.send("READY=1") {
                tracing::warn!("{e}");
            }
        }
    }
}

/// `create --sdnotify`: only `ignore` means something there (a created container
/// notifies no one); the others are refused rather than silently dropped.
pub fn refuse_for_create(args: &CreateArgs) -> Result<(), Failure> {
    match args.units.sdnotify.as_deref() {
        None | Some("ignore") => Ok(()),
        Some(mode) => Err(fail(format!(
            "--sdnotify={mode} takes effect in skiff run, the service's main process: \
             run the container with `skiff run --sdnotify={mode}` in the unit (see `skiff \
             generate systemd` for a unit that starts a created container)"
        ))),
    }
}

impl Drop for SdNotify {
    fn drop(&mut self) {
        if let Some(d) = &self.dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// Removes the relay directories in `base` whose `skiff run` is gone (killed by SIGKILL,
/// which leaves no time to clean up): their lock is free (or, made by an older skiff
/// that had none, the directory is old). Errors are only logged: this is housekeeping.
fn sweep(base: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(base) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        if !name.to_string_lossy().starts_with(DIR_PREFIX) {
            continue;
        }
        let dir = e.path();
        // Not following a symlink somewhere else: only our own real directories.
        if !e.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let stale = match std::fs::File::open(dir.join(LOCK_NAME)) {
            Ok(f) => {
                nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_ok()
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => e
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > UNLOCKED_GRACE),
            Err(_) => false,
        };
        if stale {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => tracing::debug!("removed the stale relay {}", dir.display()),
                Err(err) => tracing::debug!("removing the stale relay {}: {err}", dir.display()),
            }
        }
    }
}

/// The assignments of `msg` that a container may send on.
fn filter(msg: &str) -> String {
    msg.lines()
        .filter(|l| {
            l.split_once('=')
                .is_some_and(|(k, _)| PASSED_ON.contains(&k))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn pass_on(sock: UnixDatagram, upstream: &Notifier) {
    let mut buf = vec![0u8; 4096];
    while let Ok(n) = sock.recv(&mut buf) {
        let msg = filter(&String::from_utf8_lossy(&buf[..n]));
        if !msg.is_empty() {
            if let Err(e) = upstream.send(&msg) {
                tracing::warn!("{e}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_readiness_and_status_pass() {
        assert_eq!(
            filter("READY=1\nMAINPID=1\nSTATUS=up\nFDSTORE=1\nbogus"),
            "READY=1\nSTATUS=up"
        );
        assert_eq!(filter("MAINPID=7"), "");
    }
}
