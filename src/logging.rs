//! Where skiffd's processes log. The daemon logs to its stderr (with ANSI colours only
//! on a terminal). Its helpers — the per-container monitor (with the runtime, FUSE
//! server and network helpers it runs), `__exec`, `__unpack`, `__remove` — have other
//! uses for their stdio, so the daemon hands them a duplicate of its stderr as fd
//! [`LOG_FD`] (close-on-exec in the helper: nothing they start gets it), with the
//! filter in `SKIFF_LOG_FILTER` and a tag in `SKIFF_LOG_TAG` (`container <id>`, …)
//! that starts every line they write. A monitor outlives the daemon that started it
//! and keeps writing to that daemon's log (a file, the journal, a terminal).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, IsTerminal};
use std::os::fd::{FromRawFd, OwnedFd};
use std::sync::{Arc, Mutex, OnceLock};

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

mod lines;

/// The fd on which a helper finds the daemon's log.
pub const LOG_FD: i32 = 5;
const FD_ENV: &str = "SKIFF_LOG_FD";
const FILTER_ENV: &str = "SKIFF_LOG_FILTER";
const TAG_ENV: &str = "SKIFF_LOG_TAG";

/// The daemon's stderr, kept (close-on-exec, above the standard fds) for helpers.
static DAEMON_LOG: OnceLock<OwnedFd> = OnceLock::new();
/// The daemon's filter spec (helpers started later get the current one).
static DAEMON_FILTER: Mutex<String> = Mutex::new(String::new());
/// Swaps the daemon's filter ([`set_daemon_filter`]).
static RELOAD: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

fn filter(spec: &str) -> EnvFilter {
    EnvFilter::try_new(spec).unwrap_or_else(|_| EnvFilter::new("info"))
}

/// Installs the daemon's logger: stderr, filtered by `spec` (EnvFilter syntax), colours
/// only on a terminal; keeps a duplicate of stderr for [`for_helper`].
pub fn init_daemon(spec: &str) {
    let stderr = io::stderr();
    if let Ok(fd) = nix::fcntl::fcntl(&stderr, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10)) {
        // SAFETY: a fresh descriptor that we own.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let _ = DAEMON_LOG.set(fd);
    }
    set_spec(spec);
    let (layer, handle) = reload::Layer::new(filter(spec));
    let _ = RELOAD.set(handle);
    let _ = tracing_subscriber::registry()
        .with(layer)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(stderr.is_terminal())
                .with_writer(io::stderr),
        )
        .try_init();
}

fn set_spec(spec: &str) {
    let mut cur = DAEMON_FILTER.lock().unwrap_or_else(|p| p.into_inner());
    *cur = spec.to_string();
}

/// Replaces the daemon's log filter (a reload of skiffd's configuration); helpers
/// started from now on get it too. `Err` when `spec` is not a filter.
pub fn set_daemon_filter(spec: &str) -> Result<(), String> {
    let f = EnvFilter::try_new(spec).map_err(|e| e.to_string())?;
    if let Some(h) = RELOAD.get() {
        h.reload(f).map_err(|e| e.to_string())?;
    }
    set_spec(spec);
    Ok(())
}

/// Hands the daemon's log to the helper `cmd` will start, its lines tagged with `tag`
/// (e.g. `container 0123456789ab`): sets the helper's logging variables and returns a
/// duplicate of the log to pass on fd [`LOG_FD`] (with [`crate::fdutil::pass_fds`]).
/// `None` when the daemon has no log fd.
pub fn for_helper(cmd: &mut std::process::Command, tag: &str) -> Option<(OwnedFd, i32)> {
    let (vars, log) = helper_log(tag)?;
    cmd.envs(vars);
    Some(log)
}

/// Environment variables for a helper: (name, value).
pub type HelperVars = Vec<(OsString, OsString)>;

/// [`for_helper`] for a helper started without a `Command`: the logging variables to
/// set and the duplicate of the log to pass on fd [`LOG_FD`].
pub fn helper_log(tag: &str) -> Option<(HelperVars, (OwnedFd, i32))> {
    let fd = DAEMON_LOG.get()?;
    let dup = fd.try_clone().ok()?;
    let spec = DAEMON_FILTER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone();
    let vars = vec![
        (FD_ENV.into(), LOG_FD.to_string().into()),
        (FILTER_ENV.into(), spec.into()),
        (TAG_ENV.into(), tag.into()),
    ];
    Some((vars, (dup, LOG_FD)))
}

/// In a helper: installs a logger writing to the log fd the daemon passed (see the
/// module documentation), made close-on-exec first. Without one, nothing is logged
/// (the helper's stdio are not ours to write to), unless `stderr_fallback`.
pub fn init_helper(stderr_fallback: bool) {
    let fd = std::env::var(FD_ENV)
        .ok()
        .and_then(|v| v.parse::<i32>().ok())
        .filter(|fd| *fd > 2);
    let spec = std::env::var(FILTER_ENV).unwrap_or_else(|_| "info".into());
    let tag = std::env::var(TAG_ENV).unwrap_or_default();
    for var in [FD_ENV, FILTER_ENV, TAG_ENV] {
        // SAFETY: the helper is single-threaded at this point.
        unsafe { std::env::remove_var(var) };
    }
    // SAFETY: F_SETFD on a descriptor number only changes its flag (or fails if closed).
    let file = fd.filter(|fd| unsafe { libc::fcntl(*fd, libc::F_SETFD, libc::FD_CLOEXEC) } == 0);
    let Some(fd) = file else {
        if stderr_fallback {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(filter(&spec))
                .with_ansi(io::stderr().is_terminal())
                .with_writer(io::stderr)
                .try_init();
        }
        return;
    };
    // SAFETY: the daemon passed this descriptor to us for our log; nothing else uses it.
    let file = unsafe { File::from_raw_fd(fd) };
    let tag = if tag.is_empty() {
        String::new()
    } else {
        format!("[{tag}] ")
    };
    let _ = lines::Lines::new(Arc::new(file), tag)
        .with(filter(&spec))
        .try_init();
}
