//! The container's init: pid 1 of the new pid namespace. It builds the filesystem view,
//! sets the hostname, brings up loopback, pivots into the rootfs, drops to the spec's user
//! and execs the command. Any failure is reported to the monitor over the sync channel
//! with docker's exit code (125 setup, 126 not executable, 127 not found).

use std::path::Path;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::exec::{self, ExecFailure, EXIT_SETUP_FAILED};
use super::sync::{Channel, Msg};
use super::{pty, rootfs, Error, RootfsPlan};

/// Runs the init steps; returns the exit code to use if they fail (never returns on a
/// successful exec).
pub fn main(chan: Channel, spec: &Spec, plan: &RootfsPlan) -> i32 {
    let failure =
        match setup(&chan, spec, plan).and_then(|cmd| die_with_monitor(&chan).map(|_| cmd)) {
            Ok((args, env)) => exec::exec(&args, &env),
            Err(e) => ExecFailure {
                code: EXIT_SETUP_FAILED,
                message: e.to_string(),
            },
        };
    let _ = chan.send(&Msg::Failed {
        code: failure.code,
        message: failure.message,
    });
    failure.code
}

/// The container must not outlive its monitor: SIGKILL when our parent (the monitor,
/// a child subreaper, since the intermediate it reaped before `Proceed`) ends. Set last,
/// after the change of user, which would clear it; a monitor that ended before shows as
/// the hang-up of the channel.
fn die_with_monitor(chan: &Channel) -> Result<(), Error> {
    // SAFETY: PR_SET_PDEATHSIG takes a signal number.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0) } < 0 {
        return Err(Error::sys("PR_SET_PDEATHSIG", nix::errno::Errno::last()));
    }
    let fd = std::os::fd::AsFd::as_fd(chan);
    let mut p = [nix::poll::PollFd::new(fd, nix::poll::PollFlags::empty())];
    let _ = nix::poll::poll(&mut p, nix::poll::PollTimeout::ZERO);
    if p[0]
        .revents()
        .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLHUP))
    {
        return Err(Error::Setup("the container's monitor ended".into()));
    }
    Ok(())
}

fn has_ns(spec: &Spec, t: LinuxNamespaceType) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .is_some_and(|ns| ns.iter().any(|n| n.typ() == t && n.path().is_none()))
}

fn gid_mapped(spec: &Spec, gid: u32) -> bool {
    spec.linux()
        .as_ref()
        .and_then(|l| l.gid_mappings().as_ref())
        .is_some_and(|maps| {
            maps.iter().any(|m| {
                gid >= m.container_id() && (gid as u64) < m.container_id() as u64 + m.size() as u64
            })
        })
}

fn setup(
    chan: &Channel,
    spec: &Spec,
    plan: &RootfsPlan,
) -> Result<(Vec<String>, Vec<String>), Error> {
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| Error::Spec("root.path is missing".into()))?;
    if has_ns(spec, LinuxNamespaceType::Mount) {
        rootfs::prepare_rootfs(plan, &root)?;
        rootfs::mount_spec(spec, &root, gid_mapped(spec, 5))?;
    }
    if has_ns(spec, LinuxNamespaceType::Uts) {
        if let Some(h) = spec.hostname() {
            nix::unistd::sethostname(h).map_err(|e| Error::sys("sethostname", e))?;
        }
    }
    if has_ns(spec, LinuxNamespaceType::Network) {
        crate::netns::bring_up_loopback().map_err(|e| Error::Setup(e.to_string()))?;
    }
    rootfs::pivot(&root)?;
    rootfs::mask_and_protect(spec)?;
    // The monitor connects the network meanwhile (joining our namespaces through
    // /proc/PID, which needs us still dumpable: before the switch to the spec's user).
    match chan.recv()? {
        Some(Msg::Proceed) => {}
        _ => return Err(Error::Setup("the monitor aborted the start".into())),
    }

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("process is missing".into()))?;
    let user = process.user();
    if process.terminal().unwrap_or(false) {
        // The pty comes from the container's devpts (mounted above, reached through
        // the /dev/ptmx symlink); the monitor keeps the master for the container's life.
        let pty = pty::open("/dev/ptmx")?;
        // The client's window size before the command starts (docker's ConsoleSize).
        if let Some(size) = process.console_size() {
            let clamp = |v: u64| u16::try_from(v).unwrap_or(u16::MAX);
            pty::set_size(&pty.master, clamp(size.height()), clamp(size.width()))?;
        }
        // Owned by the process's user, as a login would leave it (best effort: an
        // unmapped id is reported by setuid below).
        let _ = nix::unistd::fchown(
            &pty.slave,
            Some(Uid::from_raw(user.uid())),
            Some(Gid::from_raw(user.gid())),
        );
        chan.send_fd(
            &Msg::Pty(pty.path.clone()),
            std::os::fd::AsFd::as_fd(&pty.master),
        )?;
        drop(pty.master);
        pty::make_controlling(&pty.slave)?;
    }
    let cwd = process.cwd();
    if !Path::new(cwd).exists() {
        std::fs::create_dir_all(cwd)
            .map_err(|e| Error::io(format!("create working directory {}", cwd.display()), e))?;
    }
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    set_supplementary_groups(&gids)?;
    setresgid(
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
        Gid::from_raw(user.gid()),
    )
    .map_err(|e| Error::Setup(format!("setgid({}): {e}: is the gid mapped?", user.gid())))?;
    setresuid(
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
        Uid::from_raw(user.uid()),
    )
    .map_err(|e| Error::Setup(format!("setuid({}): {e}: is the uid mapped?", user.uid())))?;
    nix::unistd::chdir(cwd.as_path())
        .map_err(|e| Error::sys("chdir to the working directory", e))?;
    reset_signals();
    let args = process
        .args()
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::Spec("no command specified".into()))?;
    Ok((args, process.env().clone().unwrap_or_default()))
}

/// Sets exactly `gids` as the process's supplementary groups — none when the list is
/// empty — so it never keeps the ones of the process that created it (the user's own
/// group shows as gid 0 in the container). Where the user namespace denies setgroups
/// (a gid map written with `setgroups=deny`) an empty list cannot be set and the groups
/// stay as they are; a non-empty one is then an error.
pub(crate) fn set_supplementary_groups(gids: &[Gid]) -> Result<(), Error> {
    match nix::unistd::setgroups(gids) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EPERM) if gids.is_empty() => Ok(()),
        Err(e) => Err(Error::Setup(format!(
            "setgroups({gids:?}): {e}: are the groups mapped in the container's user namespace?"
        ))),
    }
}

/// The command must start with default signal dispositions and an empty mask (Rust's
/// runtime ignores SIGPIPE in the monitor, and dispositions survive exec).
pub(crate) fn reset_signals() {
    for sig in Signal::iterator() {
        if matches!(sig, Signal::SIGKILL | Signal::SIGSTOP) {
            continue;
        }
        // SAFETY: restoring the default disposition installs no handler code.
        let _ = unsafe { signal::signal(sig, SigHandler::SigDfl) };
    }
    let _ = signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
}
