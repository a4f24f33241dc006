//! Forking a child into a new user namespace whose id maps are written by the parent —
//! the first step of every rootless operation (container creation, layer extraction,
//! removing files owned by subordinate ids).
//!
//! The parent must be single-threaded (the monitor and the helper subcommands are freshly
//! exec'd processes), so `fork` is safe.

use std::os::fd::{AsRawFd, BorrowedFd};
use std::process::exit;

use nix::sched::{setns, unshare, CloneFlags};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::{fork, setresgid, setresuid, ForkResult, Gid, Pid, Uid};

use super::sync::{Channel, Msg};
use super::Error;
use crate::userns::IdMaps;

/// The forked child's end: runs `child` once it is in its user namespace (`entered`),
/// else reports the failure to the parent as `Failed`; exits with the code.
fn run_child(
    entered: Result<(), Error>,
    child_end: Channel,
    child: impl FnOnce(Channel) -> i32,
) -> ! {
    let code = match entered {
        Ok(()) => child(child_end),
        Err(e) => {
            let _ = child_end.send(&Msg::Failed {
                code: super::exec::EXIT_SETUP_FAILED,
                message: e.to_string(),
            });
            super::exec::EXIT_SETUP_FAILED
        }
    };
    exit(code)
}

/// Forks a child that unshares a user namespace, waits for the parent to write `maps`,
/// becomes uid/gid 0 in it and runs `child` (whose return value is its exit code).
/// Returns the child's pid and the parent's end of the channel.
pub fn fork_into_userns(
    maps: &IdMaps,
    child: impl FnOnce(Channel) -> i32,
) -> Result<(Pid, Channel), Error> {
    let (parent_end, child_end) = Channel::pair()?;
    // SAFETY: callers are single-threaded processes (see the module docs).
    match unsafe { fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(parent_end);
            let entered = enter_userns(&child_end);
            run_child(entered, child_end, child)
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            match parent_end.recv()? {
                Some(Msg::UsernsReady) => crate::phase::mark("userns-unshared"),
                Some(Msg::Failed { message, .. }) => {
                    let _ = waitpid(child, None);
                    return Err(Error::Setup(message));
                }
                other => {
                    let _ = waitpid(child, None);
                    return Err(Error::Protocol(format!("unexpected {other:?}")));
                }
            }
            if let Err(e) = maps.apply(child.as_raw()) {
                let _ = parent_end.send(&Msg::Abort);
                let _ = waitpid(child, None);
                return Err(Error::IdMap(e));
            }
            crate::phase::mark("id-maps-written");
            parent_end.send(&Msg::MapsWritten)?;
            Ok((child, parent_end))
        }
    }
}

/// Forks a child that joins the existing user namespace `userns` (whose maps are
/// written: the shared namespace of [`crate::userns::shared`]), closes its copy of the
/// descriptor, becomes uid/gid 0 in it and runs `child`. No id-map helper runs. Returns
/// the child's pid and the parent's end of the channel; a failure to join reaches the
/// parent as the child's `Failed` message.
pub fn fork_joining_userns(
    userns: BorrowedFd<'_>,
    child: impl FnOnce(Channel) -> i32,
) -> Result<(Pid, Channel), Error> {
    let (parent_end, child_end) = Channel::pair()?;
    // SAFETY: callers are single-threaded processes (see the module docs).
    match unsafe { fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(parent_end);
            let joined = join_userns(userns);
            run_child(joined, child_end, child)
        }
        ForkResult::Parent { child } => {
            drop(child_end);
            crate::phase::mark("userns-joined");
            Ok((child, parent_end))
        }
    }
}

fn join_userns(userns: BorrowedFd<'_>) -> Result<(), Error> {
    let raw = userns.as_raw_fd();
    let joined = setns(userns, CloneFlags::CLONE_NEWUSER);
    // Our copy goes at once, joined or not: nothing we fork or exec may hold it.
    let _ = nix::unistd::close(raw);
    joined.map_err(|e| {
        Error::Setup(format!(
            "cannot join skiffd's shared user namespace: setns: {e}; \
             run the container with --userns=private to give it a namespace of its own"
        ))
    })?;
    become_root()
}

fn enter_userns(chan: &Channel) -> Result<(), Error> {
    unshare(CloneFlags::CLONE_NEWUSER).map_err(|e| Error::sys("unshare(CLONE_NEWUSER)", e))?;
    chan.send(&Msg::UsernsReady)?;
    match chan.recv()? {
        Some(Msg::MapsWritten) => {}
        _ => return Err(Error::Setup("the id maps were not written".into())),
    }
    become_root()
}

fn become_root() -> Result<(), Error> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| Error::sys("setresgid(0)", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| Error::sys("setresuid(0)", e))?;
    // When root inside is not our own uid (`--userns keep-id`), the switch made us
    // non-dumpable, and the monitor's helpers (slirp4netns, pasta) could no longer open
    // init's /proc/PID/ns/*: be as dumpable as with the default mapping, where root
    // inside is our uid. The container's command is exec'd after its own setuid, which
    // decides its dumpability afresh.
    nix::sys::prctl::set_dumpable(true).map_err(|e| Error::sys("prctl(PR_SET_DUMPABLE)", e))?;
    Ok(())
}

/// Waits for `pid` and converts its status to a shell-style exit code (signal N → 128+N).
pub fn wait_exit_code(pid: Pid) -> Result<i32, Error> {
    loop {
        match waitpid(pid, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(128 + sig as i32),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(Error::sys("waitpid", e)),
        }
    }
}

/// Runs `f` as uid 0 in a new user namespace with `maps` and returns its exit code.
pub fn run_in_userns(maps: &IdMaps, f: impl FnOnce() -> i32) -> Result<i32, Error> {
    let (pid, chan) = fork_into_userns(maps, |_chan| f())?;
    drop(chan);
    wait_exit_code(pid)
}
