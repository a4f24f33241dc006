//! Container networking. `bridge` (the default of containers in the shared user
//! namespace) puts the container on a network shared by them all, with one slirp4netns
//! ([`shared`], [`bridge`]). Every mode but `host` gives the container a network namespace
//! of its own, with loopback brought up by the container's init. `pasta` (the default
//! where it works, see [`choose`]) and `slirp4netns` connect that namespace to the host
//! in userspace: the monitor
//! starts the helper from outside, after the namespaces exist and before the container's
//! command runs ([`connect`]), adds the published ports, and stops it when the container
//! ends. [`files`] generates resolv.conf, hosts and hostname; [`ports`] parses and checks
//! published ports; [`forward`] and [`connector`] relay slirp4netns's TCP ports into
//! the namespace, keeping the client's address with the routing of [`rtnl`].

pub mod bridge;
pub mod choose;
pub mod connector;
pub mod files;
pub mod forward;
pub mod hostfwds;
pub mod link;
pub mod pasta;
pub mod ports;
pub mod rtnl;
pub mod shared;
pub mod slirp;

use std::fmt;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use ports::{PortMapping, Proto};

/// Errors of container networking.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A published port is malformed or cannot be bound.
    #[error("{0}")]
    Port(String),
    /// A host port is taken.
    #[error("{0}")]
    PortInUse(String),
    /// The helper (slirp4netns, pasta) failed.
    #[error("{0}")]
    Helper(String),
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
        source: io::Error,
    },
}

impl Error {
    fn sys(what: &str, source: nix::errno::Errno) -> Error {
        Error::Sys {
            what: what.into(),
            source,
        }
    }

    fn io(path: &Path, source: io::Error) -> Error {
        Error::Io {
            what: path.display().to_string(),
            source,
        }
    }
}

/// How a container is networked (`--network`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// A namespace connected by slirp4netns (the fallback default: see [`choose`]).
    #[default]
    Slirp4netns,
    /// A namespace connected by pasta (the default with `network = "auto"` where it
    /// works: see [`choose`]).
    Pasta,
    /// A namespace with loopback only.
    None,
    /// The host's network namespace.
    Host,
    /// A namespace on the network shared by the containers of the shared user
    /// namespace, connected by one slirp4netns (see [`shared`]).
    Bridge,
}

impl Mode {
    /// The mode's name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Slirp4netns => "slirp4netns",
            Mode::Pasta => "pasta",
            Mode::None => "none",
            Mode::Host => "host",
            Mode::Bridge => "bridge",
        }
    }

    /// Whether a userspace helper connects the namespace (and ports can be published).
    pub fn has_helper(self) -> bool {
        matches!(self, Mode::Slirp4netns | Mode::Pasta | Mode::Bridge)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mode {
    type Err = String;
    fn from_str(s: &str) -> Result<Mode, String> {
        match s {
            "slirp4netns" => Ok(Mode::Slirp4netns),
            "pasta" => Ok(Mode::Pasta),
            "none" => Ok(Mode::None),
            "host" => Ok(Mode::Host),
            "bridge" => Ok(Mode::Bridge),
            other => Err(format!(
                "unknown network mode {other:?}: use bridge, slirp4netns, pasta, none or host"
            )),
        }
    }
}

/// What the monitor needs to connect a container's namespace (part of `monitor.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NetPlan {
    /// The mode.
    pub mode: Mode,
    /// Published ports, host ports resolved.
    #[serde(default)]
    pub ports: Vec<PortMapping>,
    /// Let the container reach the host's loopback.
    #[serde(default)]
    pub host_loopback: bool,
    /// Where the helper's socket, pid file and log go (the runtime bundle).
    pub run_dir: PathBuf,
    /// The mode is skiffd's default, not the container's choice: when pasta cannot
    /// start, connect with slirp4netns instead (and say why, [`Connection::fallback`]).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
    /// The optional flags slirp4netns understands, found by skiffd once (None: the
    /// monitor asks slirp4netns itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slirp_flags: Option<Vec<String>>,
    /// The shared network to join (mode `bridge`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<bridge::BridgePlan>,
}

/// The file in the bundle that says why a container's default pasta was replaced by
/// slirp4netns (written by the monitor before it reports the start).
pub const FALLBACK_FILE: &str = "network-fallback";

/// A connected namespace.
pub struct Connection {
    /// The helper (None for modes without one); dropping it stops it.
    pub helper: Option<Box<dyn Helper>>,
    /// Why slirp4netns connects it in place of the default pasta, when it does.
    pub fallback: Option<String>,
}

/// A running network helper; stopped (process ended, files removed) on drop.
pub trait Helper {
    /// Stops the helper and removes its files.
    fn stop(&mut self);

    /// Tells the helper to end and removes its files, without waiting for its end when
    /// that end frees nothing anyone waits for: when it publishes no port. Its exit then
    /// takes ~15-25 ms in the kernel (the TAP device's unregistration waits for RCU grace
    /// periods) that would delay the container's recorded exit for no one's benefit; it
    /// holds no host resource besides itself. Returns the pid of the helper still ending
    /// (the caller must not wait for it before the exit is reported: the monitor reaps it
    /// after the report), or None when it stopped as [`Helper::stop`] does — with published
    /// ports, whose host sockets must be free before the exit is reported (a restart or
    /// the next `run -p` binds them at once).
    fn begin_stop(&mut self) -> Option<nix::unistd::Pid> {
        self.stop();
        None
    }
}

/// A helper started on the container's namespaces before its init exists ([`start_early`]),
/// which [`connect`] finishes.
pub struct Early(slirp::Slirp);

/// Whether `plan`'s helper starts early (while the container's root filesystem is set
/// up): slirp4netns does. A default pasta may fall back to slirp4netns once it failed,
/// so pasta starts once init exists, as before.
pub fn starts_early(plan: &NetPlan) -> bool {
    plan.mode == Mode::Slirp4netns
}

/// Starts `plan`'s helper (see [`starts_early`]) on the namespaces of `pid` (which must
/// stay until [`connect`] returns), without waiting for it to get ready.
pub fn start_early(plan: &NetPlan, pid: i32) -> Result<Early, Error> {
    slirp::spawn(plan, pid).map(Early)
}

/// Connects the network namespace of `pid` as `plan` says: starts the helper (or takes
/// the one started `early`), waits until it is ready and publishes the ports. A default
/// pasta that fails is replaced by slirp4netns (`plan.fallback`); the failure is logged
/// and returned.
pub fn connect(plan: &NetPlan, pid: i32, early: Option<Early>) -> Result<Connection, Error> {
    if let Some(Early(slirp)) = early {
        return Ok(Connection {
            helper: Some(Box::new(slirp.finish(&plan.ports, pid)?)),
            fallback: None,
        });
    }
    let helper: Box<dyn Helper> = match plan.mode {
        Mode::Slirp4netns => Box::new(slirp::start(plan, pid)?),
        Mode::Pasta => match pasta::start(plan, pid) {
            Ok(p) => Box::new(p),
            Err(e) if plan.fallback => {
                let why = format!("pasta failed ({e}), slirp4netns used instead");
                tracing::warn!("network: {why}");
                let helper = Box::new(slirp::start(plan, pid)?);
                return Ok(Connection {
                    helper: Some(helper),
                    fallback: Some(why),
                });
            }
            Err(e) => return Err(e),
        },
        Mode::Bridge => match &plan.bridge {
            Some(b) => Box::new(bridge::attach(b, &plan.ports, pid)?),
            None => return Err(Error::Helper("no shared network in the plan".into())),
        },
        Mode::None | Mode::Host => {
            return Ok(Connection {
                helper: None,
                fallback: None,
            })
        }
    };
    Ok(Connection {
        helper: Some(helper),
        fallback: None,
    })
}

/// Waits until process `pid` has ended (and reaps it when it is our child); false when
/// it still runs after `timeout`. Woken by the process's end (a pidfd), not by polling.
pub fn wait_gone(pid: nix::unistd::Pid, timeout: Duration) -> bool {
    use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
    let reaped = |pid| match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::StillAlive) => false,
        Ok(_) => true,
        // Not our child: gone when it cannot be signalled.
        Err(_) => nix::sys::signal::kill(pid, None).is_err(),
    };
    if reaped(pid) {
        return true;
    }
    // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
    let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if raw < 0 {
        // No pidfds (old kernel) or the process is gone already.
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if reaped(pid) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        return reaped(pid);
    }
    // SAFETY: a fresh descriptor from pidfd_open that we own (close-on-exec by default).
    let fd = unsafe { OwnedFd::from_raw_fd(raw as i32) };
    wait_readable(&fd, timeout);
    reaped(pid)
}

/// Waits until `fd` is readable (or closed); false on timeout.
fn wait_readable(fd: &impl AsFd, timeout: Duration) -> bool {
    let mut fds = [nix::poll::PollFd::new(
        fd.as_fd(),
        nix::poll::PollFlags::POLLIN,
    )];
    let ms = u16::try_from(timeout.as_millis()).unwrap_or(u16::MAX);
    loop {
        match nix::poll::poll(&mut fds, nix::poll::PollTimeout::from(ms)) {
            Ok(n) => return n > 0,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

/// The last lines of a helper's log, for an error message.
fn read_log(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with("WARNING: Support for seccomp"))
        .collect();
    // Errors first (slirp4netns prints its banner after a child's failure), else the tail.
    let errors: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            l.contains("error")
                || l.contains("fail")
                || l.contains("denied")
                || l.contains("cannot")
        })
        .collect();
    let pick = if errors.is_empty() { &lines } else { &errors };
    let tail = pick[pick.len().saturating_sub(5)..].join("; ");
    if tail.is_empty() {
        "no output".into()
    } else {
        tail
    }
}

/// Sets `lo` up in the current network namespace (a new namespace starts with it down).
pub fn bring_up_loopback() -> io::Result<()> {
    // SAFETY: plain socket(2); the fd is owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh, valid descriptor we own.
    let sock = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write the ifreq we pass.
    unsafe {
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn wait_gone_wakes_at_the_end_and_times_out_while_it_runs() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        assert!(
            !wait_gone(pid, Duration::from_millis(50)),
            "cat ended early"
        );
        drop(child.stdin.take()); // end-of-file: cat exits
        assert!(
            wait_gone(pid, Duration::from_secs(10)),
            "cat's end not seen"
        );
        // Reaped by wait_gone: nothing is left to wait for.
        assert!(nix::sys::wait::waitpid(pid, None).is_err());
        assert!(child.wait().is_err(), "cat was not reaped");
    }
}
