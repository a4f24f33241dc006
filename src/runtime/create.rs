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

use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::process::exit;

use nix::fcntl::OFlag;
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
    create_and_start_in(spec, plan, None, None, before_exec)
}

/// Called with the pid of a process in the container's network namespace (and user
/// namespace) as soon as that namespace exists, before init is forked: where the network
/// helper starts, so that it gets ready while the root filesystem is set up. The process
/// stays until `before_exec` has returned (the helper joins the namespaces through its
/// `/proc/PID/ns/*`).
pub type OnNetns<'a> = &'a mut dyn FnMut(Pid) -> Result<(), Error>;

/// The intermediate process, which may be held until the network helper has joined its
/// namespaces (`hold`: the write end of a pipe it reads to its end-of-file).
struct Intermediate {
    pid: Pid,
    hold: Option<OwnedFd>,
    reaped: bool,
}

impl Intermediate {
    /// Lets the intermediate end, and reaps it (init is then re-parented to us).
    fn release(&mut self) {
        self.hold = None;
        if !self.reaped {
            self.reaped = true;
            let _ = wait_exit_code(self.pid);
        }
    }
}

impl Drop for Intermediate {
    fn drop(&mut self) {
        self.release();
    }
}

/// [`create_and_start_with`] in the existing user namespace `userns` when given (it must
/// have the spec's maps: skiffd's shared namespace), else in a new one whose maps are
/// written from the spec. `on_netns`, when given and the spec asks for a network
/// namespace, is called as soon as that namespace exists (see [`OnNetns`]); an error
/// from it fails the start.
pub fn create_and_start_in(
    spec: &Spec,
    plan: &RootfsPlan,
    userns: Option<BorrowedFd<'_>>,
    on_netns: Option<OnNetns<'_>>,
    before_exec: &mut dyn FnMut(Pid) -> Result<(), Error>,
) -> Result<Started, Error> {
    let sec = prepare(spec)?;
    create_and_start_prepared(spec, &sec, plan, userns, on_netns, before_exec)
}

/// The process's security settings of `spec`, checked, and its seccomp filter compiled
/// (once per profile: see [`crate::runtime::seccomp::compile_cached`]).
pub fn prepare(spec: &Spec) -> Result<Prepared, Error> {
    let sec = Prepared::of_spec(spec, Some(&security::seccomp_cache_dir()))?;
    crate::phase::mark("security-prepared");
    Ok(sec)
}

/// [`create_and_start_in`] with the security settings [`prepare`]d from `spec` before:
/// the caller may drop the spec's seccomp profile in between (the monitor does: its
/// syscall names are most of a default spec, and the FUSE rootfs server, a fork that
/// never frees what it inherits, would keep them for the container's life).
pub fn create_and_start_prepared(
    spec: &Spec,
    sec: &Prepared,
    plan: &RootfsPlan,
    userns: Option<BorrowedFd<'_>>,
    mut on_netns: Option<OnNetns<'_>>,
    before_exec: &mut dyn FnMut(Pid) -> Result<(), Error>,
) -> Result<Started, Error> {
    let maps = maps_of_spec(spec)?;
    let flags = namespace_flags(spec)?;
    let early_net = on_netns.is_some() && flags.contains(CloneFlags::CLONE_NEWNET);
    let hold = if early_net {
        Some(nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?)
    } else {
        None
    };
    let held = hold.as_ref().map(|(r, w)| (r.as_raw_fd(), w.as_raw_fd()));
    let run = |chan| intermediate(chan, flags, held, spec, plan, sec);
    let (pid, chan) = match userns {
        Some(ns) => fork_joining_userns(ns, run)?,
        None => fork_into_userns(&maps, run)?,
    };
    let mut intermediate = Intermediate {
        pid,
        hold: hold.map(|(_, w)| w),
        reaped: false,
    };
    // Init (if forked) reads end-of-file on its channel when we return early, and ends.
    let init_pid = loop {
        match chan.recv()? {
            Some(Msg::FuseServer(pid)) => {
                tracing::debug!(pid, "FUSE rootfs server started");
            }
            Some(Msg::NetnsReady) if early_net => {
                if let Some(f) = on_netns.as_mut() {
                    f(intermediate.pid)?;
                }
            }
            Some(Msg::InitPid(pid)) => break Pid::from_raw(pid),
            Some(Msg::Failed { code, message }) => return Err(Error::Exec { code, message }),
            other => {
                return Err(Error::Protocol(format!(
                    "expected init's pid, got {other:?}"
                )))
            }
        }
    };
    if !early_net {
        intermediate.release();
    }
    crate::phase::mark("init-forked");
    if let Err(e) = before_exec(init_pid) {
        let _ = nix::sys::signal::kill(init_pid, nix::sys::signal::Signal::SIGKILL);
        let _ = wait_exit_code(init_pid);
        return Err(e);
    }
    // Before `Proceed`: init must be our child when it asks to die with its parent.
    intermediate.release();
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

/// In init, before anything else: waits until the intermediate says the FUSE mount is
/// there (false: it is not, and will not be).
fn fuse_gate_opened(gate: OwnedFd) -> bool {
    let mut b = [0u8; 1];
    loop {
        match nix::unistd::read(&gate, &mut b) {
            Ok(1) => return b[0] == b'1',
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return false,
        }
    }
}

fn intermediate(
    chan: Channel,
    flags: CloneFlags,
    held: Option<(RawFd, RawFd)>,
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
    if let Some((_, write_end)) = held {
        // Only the monitor may end our wait.
        let _ = nix::unistd::close(write_end);
        // The network namespace first: the monitor starts the network helper on it
        // (through our /proc/PID/ns) while we go on; the FUSE server then lives in the
        // container's network namespace, where it needs nothing.
        if let Err(e) = unshare(CloneFlags::CLONE_NEWNET) {
            return fail(&chan, Error::sys("unshare(CLONE_NEWNET)", e));
        }
        if chan.send(&Msg::NetnsReady).is_err() {
            return 1;
        }
        crate::phase::mark("netns-ready");
        flags.remove(CloneFlags::CLONE_NEWNET);
    }
    let mut fuse = None;
    if plan.driver == RootfsDriver::Fuse {
        // The FUSE server must mount the rootfs in the container's mount namespace, and
        // must start before the pid namespace is unshared (threads cannot be created
        // after unshare(CLONE_NEWPID)). It mounts while we unshare the other namespaces
        // and fork init, which waits for the mount (see `fuse_gate_opened`).
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
            Ok(pending) => fuse = Some(pending),
            Err(e) => return fail(&chan, e),
        }
        flags.remove(CloneFlags::CLONE_NEWNS);
    }
    // Dropped on a failure below: the pending server then exits.
    if let Err(e) = unshare(flags) {
        return fail(&chan, Error::sys("unshare namespaces", e));
    }
    crate::phase::mark("namespaces-unshared");
    // Init waits on this until the FUSE mount is there.
    let gate = match &fuse {
        Some(_) => match nix::unistd::pipe2(OFlag::O_CLOEXEC) {
            Ok(p) => Some(p),
            Err(e) => return fail(&chan, Error::sys("pipe", e)),
        },
        None => None,
    };
    // SAFETY: this process is single-threaded (forked from a single-threaded monitor).
    match unsafe { fork() } {
        Err(e) => fail(&chan, Error::sys("fork init", e)),
        Ok(ForkResult::Child) => {
            // Init holds none of the server's pipes (the server must see their ends).
            drop(fuse);
            if let Some((gate_r, gate_w)) = gate {
                drop(gate_w);
                if !fuse_gate_opened(gate_r) {
                    // The mount failed: the intermediate reports why.
                    exit(super::exec::EXIT_SETUP_FAILED);
                }
            }
            exit(init::main(chan, spec, plan, sec))
        }
        Ok(ForkResult::Parent { child }) => {
            if let (Some(pending), Some((gate_r, gate_w))) = (fuse, gate) {
                drop(gate_r);
                let server = match pending.mounted() {
                    Ok(s) => s,
                    Err(e) => {
                        drop(gate_w);
                        let _ = nix::sys::signal::kill(child, nix::sys::signal::Signal::SIGKILL);
                        let _ = wait_exit_code(child);
                        return fail(&chan, e);
                    }
                };
                crate::phase::mark("fuse-mounted");
                if chan.send(&Msg::FuseServer(server.pid.as_raw())).is_err() {
                    return 1;
                }
                if nix::unistd::write(&gate_w, b"1").is_err() {
                    return 1;
                }
                drop(gate_w);
                server.watch(child);
            }
            if chan.send(&Msg::InitPid(child.as_raw())).is_err() {
                return 1;
            }
            if let Some((read_end, _)) = held {
                // Held until the monitor is done with our namespaces (or ends).
                let mut b = [0u8; 1];
                // SAFETY: the pipe's read end, inherited from the monitor and open.
                let fd = unsafe { BorrowedFd::borrow_raw(read_end) };
                while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(fd, &mut b) {}
            }
            0
        }
    }
}
