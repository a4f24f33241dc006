//! Finding a container's live monitor, and ending one its record does not account for.
//!
//! A monitor holds the lock of its bundle for its whole life ([`crate::monitor::lock`]),
//! so the lock's holder is the one live monitor of a container, whatever the record
//! says: a record that says `running` names it by pid (re-adopted when the pids agree);
//! any other holder is a stray — a monitor spawned by a daemon that died before it
//! recorded the start — and is ended, its container with it (the container's init dies
//! with its monitor, the FUSE server with init, the network helper with the monitor).

use std::os::fd::OwnedFd;
use std::path::Path;

use super::Daemon;
use crate::monitor::{self, lock};

/// What runs of a container.
pub(crate) enum Found {
    /// Its recorded monitor, as a pidfd.
    Ours(OwnedFd),
    /// A monitor the record does not name.
    Stray(i32),
    /// No monitor.
    None,
}

/// Finds the live monitor of `bundle`; `recorded` is the record's monitor pid, which
/// counts only when the record says the container runs.
pub(crate) fn find_monitor(bundle: &Path, recorded: u32, running: bool) -> Found {
    let holder = match lock::holder(bundle) {
        Ok(h) => h,
        Err(e) => {
            tracing::warn!("{}: {e}", lock::lock_path(bundle).display());
            None
        }
    };
    let recorded = recorded as i32;
    match holder {
        Some(pid) if running && pid == recorded => {
            let Ok(fd) = crate::procutil::pidfd_open(pid) else {
                return Found::None; // it just ended
            };
            // The pidfd is the monitor's unless it ended and the pid was reused between
            // the two looks: then the lock has no holder any more.
            match lock::holder(bundle) {
                Ok(Some(p)) if p == pid => Found::Ours(fd),
                _ => Found::None,
            }
        }
        Some(pid) => Found::Stray(pid),
        None if running && !lock::lock_path(bundle).exists() => legacy_monitor(bundle, recorded),
        None => Found::None,
    }
}

/// A monitor of a skiffd from before the lock: recognised by its command line.
fn legacy_monitor(bundle: &Path, pid: i32) -> Found {
    let ours = pid > 0
        && crate::procutil::cmdline(pid).is_some_and(|args| {
            args.iter().any(|a| a == "__monitor") && args.iter().any(|a| Path::new(a) == bundle)
        });
    match ours
        .then(|| crate::procutil::pidfd_open(pid).ok())
        .flatten()
    {
        Some(fd) => Found::Ours(fd),
        None => Found::None,
    }
}

/// Kills a bundle's live monitor, if any, and waits until it is gone; then removes its
/// instructions, so a monitor that was spawned but had not read them yet never starts
/// anything. Returns the pid it killed.
fn end_monitor(bundle: &Path) -> Option<i32> {
    let pid = lock::holder(bundle).ok().flatten()?;
    // The container's init has PR_SET_PDEATHSIG: it dies with its monitor.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    );
    match lock::acquire(bundle) {
        Ok(_held) => {
            let _ = std::fs::remove_file(monitor::config_path(bundle));
        }
        Err(e) => tracing::warn!("{}: {e}", lock::lock_path(bundle).display()),
    }
    Some(pid)
}

/// Where a test asks skiffd to die (`skiffd --crash-at POINT`, hidden): the points of a
/// start at which a crash once left a container the record did not account for.
static CRASH_AT: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// The crash points of a start, in order.
pub const CRASH_POINTS: [&str; 3] = ["bundle-written", "monitor-spawned", "container-started"];

/// The crash points of a run's end: the exit is known (for `--rm`, in memory only) and
/// the removal has not begun.
pub const END_CRASH_POINTS: [&str; 1] = ["exit-recorded"];

/// Sets the crash point (once, at start-up).
pub fn set_crash_point(point: &str) -> Result<(), String> {
    if !CRASH_POINTS.contains(&point) && !END_CRASH_POINTS.contains(&point) {
        return Err(format!(
            "unknown crash point {point:?}: use one of {}, {}",
            CRASH_POINTS.join(", "),
            END_CRASH_POINTS.join(", ")
        ));
    }
    let _ = CRASH_AT.set(point.to_string());
    Ok(())
}

/// Dies as `kill -9` would, if the test asked for it at `point`.
pub(crate) fn crash_point(point: &str) {
    if CRASH_AT.get().is_some_and(|p| p == point) {
        tracing::warn!("crashing at {point}, as asked (--crash-at)");
        let _ = nix::sys::signal::kill(nix::unistd::getpid(), nix::sys::signal::Signal::SIGKILL);
    }
}

impl Daemon {
    /// Ends whatever monitor of container `id` is alive (see [`end_monitor`]).
    pub(crate) async fn end_strays(&self, id: &str) {
        let bundle = self.bundle_dir(id);
        if !lock::lock_path(&bundle).exists() {
            return;
        }
        if let Ok(Some(pid)) = tokio::task::spawn_blocking(move || end_monitor(&bundle)).await {
            tracing::info!(
                "ended monitor {pid} of container {}",
                &id[..id.len().min(12)]
            );
        }
    }
}
