//! Creating and starting a container: monitor → intermediate → init.
//!
//! 1. The monitor forks the intermediate, which unshares the user namespace; the monitor
//!    writes its id maps (newuidmap/newgidmap) — see [`super::nsproc`]. With the default
//!    mapping the intermediate joins skiffd's shared user namespace instead (see
//!    [`crate::userns::shared`]): no id-map helper runs.
//! 2. The intermediate, now uid 0 in the namespace, unshares mount, uts, ipc, network and
//!    pid namespaces and forks init (pid 1 of the new pid namespace), reports init's pid
//!    and exits. The monitor is a child subreaper, so init is re-parented to it.
//! 3. Init builds the rootfs and execs the command; its end of the channel is
//!    close-on-exec, so the monitor reads end-of-file when the exec succeeded, or a
//!    `Failed` message with the exit code and reason when it did not.

use std::os::fd::BorrowedFd;
use std::process::exit;

use nix::sched::{unshare, CloneFlags};
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::nsproc::{fork_into_userns, fork_joining_userns, wait_exit_code};
use super::security::{self, Prepared};
use super::sync::{Channel, Msg};
use super::{fuse_server, init, Error, RootfsDriver, RootfsPlan};
use crate::userns::{IdMapEntry, IdMaps};

/// The id maps of a spec's `linux.uidMappings`/`gidMappings`.
pub fn maps_of_spec(spec: &Spec) -> Result<IdMaps, Error> {
    let linux = spec
        .linux()
        .as_ref()
        .ok_or_else(|| Error::Spec("linux section is missing".into()))?;
    let conv = |v: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| -> Vec<IdMapEntry> {
        v.iter()
            .flatten()
            .map(|m| IdMapEntry {
                container_id: m.container_id(),
                host_id: m.host_id(),
                size: m.size(),
            })
            .collect()
    };
    let maps = IdMaps {
        uid: conv(linux.uid_mappings()),
        gid: conv(linux.gid_mappings()),
    };
    if maps.uid.is_empty() || maps.gid.is_empty() {
        return Err(Error::Spec(
            "linux.uidMappings and linux.gidMappings are required for a rootless container".into(),
        ));
    }
    Ok(maps)
}

/// The clone flags for the namespaces the spec asks to create (all but user, which comes
/// first and separately). Joining existing namespaces (`path`) is not supported yet.
pub fn namespace_flags(spec: &Spec) -> Result<CloneFlags, Error> {
    let mut flags = CloneFlags::empty();
    let namespaces = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    for ns in namespaces {
        if ns.path().is_some() {
            return Err(Error::Spec(format!(
                "joining an existing {:?} namespace is not supported yet",
                ns.typ()
            )));
        }
        flags |= match ns.typ() {
            LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
            LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
            LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
            LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
            LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
            LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
            LinuxNamespaceType::User => CloneFlags::empty(),
            other => return Err(Error::Spec(format!("namespace {other:?} is not supported"))),
        };
    }
    Ok(flags)
}

/// Creates the container and execs its command. Returns init's pid once the command runs;
/// a command that cannot be started gives [`Error::Exec`] with docker's exit code. The
/// caller must be single-threaded and should be a child subreaper.
pub fn create_and_start(spec: &Spec, plan: &RootfsPlan) -> Result<Pid, Error> {
    create_and_start_with(spec, plan, &mut |_| Ok(())).map(|s| s.pid)
}

/// A started container.
pub struct Started {
    /// Init's pid on the host.
    pub pid: Pid,
    /// The pty master when the spec asks for a terminal (`process.terminal`).
    pub pty: Option<std::os::fd::OwnedFd>,
}

/// [`create_and_start`], running `before_exec` with init's pid once the namespaces exist
/// and before the command runs (init waits for it): networking is connected there. If it
/// fails, init is killed and its error returned.
pub fn create_and_start_with(
    spec: &Spec,
    plan: &RootfsPlan,
    before_exec: &mut dyn FnMut(Pid) -> Result<(), Error>,
) -> Result<Started, Error> {
    create_and_start_in(spec, plan, None, before_exec)
}

/// [`create_and_start_with`] in the existing user namespace `userns` when given (it must
/// have the spec's maps: skiffd's shared namespace), else in a new one whose maps are
/// written from the spec.
pub fn create_and_start_in(
    spec: &Spec,
    plan: &RootfsPlan,
    userns: Option<BorrowedFd<'_>>,
    before_exec: &mut dyn FnMut(Pid) -> Result<(), Error>,
) -> Result<Started, Error> {
    let maps = maps_of_spec(spec)?;
    let flags = namespace_flags(spec)?;
    // Checked and compiled before anything starts (the filter once per profile).
    let sec = Prepared::of_spec(spec, Some(&security::seccomp_cache_dir()))?;
    crate::phase::mark("security-prepared");
    let (intermediate, chan) = match userns {
        Some(ns) => fork_joining_userns(ns, |chan| intermediate(chan, flags, spec, plan, &sec))?,
        None => fork_into_userns(&maps, |chan| intermediate(chan, flags, spec, plan, &sec))?,
    };
    let mut msg = chan.recv()?;
    if let Some(Msg::FuseServer(pid)) = msg {
        tracing::debug!(pid, "FUSE rootfs server started");
        msg = chan.recv()?;
    }
    let init_pid = match msg {
        Some(Msg::InitPid(pid)) => Pid::from_raw(pid),
        Some(Msg::Failed { code, message }) => {
            let _ = wait_exit_code(intermediate);
            return Err(Error::Exec { code, message });
        }
        other => {
            let _ = wait_exit_code(intermediate);
            return Err(Error::Protocol(format!(
                "expected init's pid, got {other:?}"
            )));
        }
    };
    let _ = wait_exit_code(intermediate);
    crate::phase::mark("init-forked");
    if let Err(e) = before_exec(init_pid) {
        let _ = nix::sys::signal::kill(init_pid, nix::sys::signal::Signal::SIGKILL);
        let _ = wait_exit_code(init_pid);
        return Err(e);
    }
    // Init may already have failed (its message is queued): the reply below tells.
    let _ = chan.send(&Msg::Proceed);
    crate::phase::mark("proceed-sent");
    let mut pty = None;
    loop {
        match chan.recv_fd(false)? {
            (None, _) => return Ok(Started { pid: init_pid, pty }),
            (Some(Msg::Pty(_)), Some(fd)) => pty = Some(fd),
            (Some(Msg::Failed { code, message }), _) => {
                let _ = wait_exit_code(init_pid);
                return Err(Error::Exec { code, message });
            }
            (Some(other), _) => {
                return Err(Error::Protocol(format!("unexpected {other:?} from init")))
            }
        }
    }
}

fn intermediate(
    chan: Channel,
    flags: CloneFlags,
    spec: &Spec,
    plan: &RootfsPlan,
    sec: &Prepared,
) -> i32 {
    let fail = |chan: &Channel, e: Error| {
        let _ = chan.send(&Msg::Failed {
            code: super::exec::EXIT_SETUP_FAILED,
            message: e.to_string(),
        });
        super::exec::EXIT_SETUP_FAILED
    };
    let mut flags = flags;
    let mut fuse = None;
    if plan.driver == RootfsDriver::Fuse {
        // The FUSE server must mount the rootfs in the container's mount namespace, and
        // must start before the pid namespace is unshared (threads cannot be created
        // after unshare(CLONE_NEWPID)).
        if !flags.contains(CloneFlags::CLONE_NEWNS) {
            return fail(
                &chan,
                Error::Spec("the fuse storage driver needs a mount namespace".into()),
            );
        }
        let root = match spec.root().as_ref() {
            Some(r) => r.path().clone(),
            None => return fail(&chan, Error::Spec("root.path is missing".into())),
        };
        match fuse_server::start(&chan, plan, &root) {
            Ok(server) => {
                crate::phase::mark("fuse-mounted");
                if chan.send(&Msg::FuseServer(server.pid.as_raw())).is_err() {
                    return 1;
                }
                fuse = Some(server);
            }
            Err(e) => return fail(&chan, e),
        }
        flags.remove(CloneFlags::CLONE_NEWNS);
    }
    if let Err(e) = unshare(flags) {
        return fail(&chan, Error::sys("unshare namespaces", e));
    }
    crate::phase::mark("namespaces-unshared");
    // SAFETY: this process is single-threaded (forked from a single-threaded monitor).
    match unsafe { fork() } {
        Err(e) => fail(&chan, Error::sys("fork init", e)),
        Ok(ForkResult::Child) => {
            drop(fuse);
            exit(init::main(chan, spec, plan, sec))
        }
        Ok(ForkResult::Parent { child }) => {
            if let Some(server) = fuse {
                server.watch(child);
            }
            match chan.send(&Msg::InitPid(child.as_raw())) {
                Ok(()) => 0,
                Err(_) => 1,
            }
        }
    }
}
