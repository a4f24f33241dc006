//! The container's init: pid 1 of the new pid namespace. It builds the filesystem view,
//! sets the hostname, brings up loopback, pivots into the rootfs, drops to the spec's user
//! and execs the command. Any failure is reported to the monitor over the sync channel
//! with docker's exit code (125 setup, 126 not executable, 127 not found).

use std::path::Path;

use nix::sys::signal::{self, SigHandler, SigSet, SigmaskHow, Signal};
use nix::unistd::{setresgid, setresuid, Gid, Uid};
use oci_spec::runtime::{LinuxNamespaceType, Spec};

use super::exec::{self, ExecFailure, EXIT_SETUP_FAILED};
use super::security::{self, Prepared};
use super::sync::{Channel, Msg};
use super::user::ExecUser;
use super::{pty, readahead, rootfs, Error, RootfsPlan};

/// Runs the init steps; returns the exit code to use if they fail (never returns on a
/// successful exec).
pub fn main(chan: Channel, spec: &Spec, plan: &RootfsPlan, sec: &Prepared) -> i32 {
    let failure = match setup(&chan, spec, plan, sec) {
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
/// a child subreaper, since the intermediate it reaped before `Proceed`) ends. Set
/// after the change of user, which would clear it (dropping capabilities later does
/// not); a monitor that ended before shows as
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
    sec: &Prepared,
) -> Result<(Vec<String>, Vec<String>), Error> {
    crate::phase::mark("init-begin");
    nix::unistd::setsid().map_err(|e| Error::sys("setsid", e))?;
    let root = spec
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .ok_or_else(|| Error::Spec("root.path is missing".into()))?;
    if has_ns(spec, LinuxNamespaceType::Mount) {
        rootfs::prepare_rootfs(plan, &root)?;
        crate::phase::mark("rootfs-prepared");
        rootfs::mount_spec(spec, &root, gid_mapped(spec, 5))?;
        crate::phase::mark("spec-mounted");
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
    crate::phase::mark("pivoted");
    let program = spec.process().as_ref().and_then(|p| {
        let args = p.args().as_deref().unwrap_or_default();
        let env = p.env().as_deref().unwrap_or_default();
        readahead::program(args, env)
    });
    if program.is_some() {
        crate::phase::mark("program-read-ahead");
    }
    security::apply_sysctls(spec)?;
    rootfs::mask_and_protect(spec)?;
    security::readonly_root(spec)?;
    crate::phase::mark("masked");
    // The monitor connects the network meanwhile (joining our namespaces through
    // /proc/PID, which needs us still dumpable: before the switch to the spec's user).
    match chan.recv()? {
        Some(Msg::Proceed) => {}
        _ => return Err(Error::Setup("the monitor aborted the start".into())),
    }
    crate::phase::mark("proceed-received");

    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("process is missing".into()))?;
    let user = resolve_user(spec)?;
    let mut env = process.env().clone().unwrap_or_default();
    if spec_user_annotation(spec).is_some() {
        super::user::add_home(&mut env, &user);
    }
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
            Some(Uid::from_raw(user.uid)),
            Some(Gid::from_raw(user.gid)),
        );
        chan.send_fd(
            &Msg::Pty(pty.path.clone()),
            std::os::fd::AsFd::as_fd(&pty.master),
        )?;
        drop(pty.master);
        pty::make_controlling(&pty.slave)?;
    }
    let cwd = process.cwd();
    make_workdir(cwd, user.uid, user.gid)?;
    crate::phase::mark("user-resolved");
    // By now the program's headers are in the cache (its read-ahead came first).
    if program.is_some_and(|p| p.libraries() > 0) {
        crate::phase::mark("libraries-read-ahead");
    }
    sec.before_user_switch()?;
    let gids: Vec<Gid> = user.sgids.iter().map(|g| Gid::from_raw(*g)).collect();
    set_supplementary_groups(&gids)?;
    setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    )
    .map_err(|e| Error::Setup(format!("setgid({}): {e}: is the gid mapped?", user.gid)))?;
    setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    )
    .map_err(|e| Error::Setup(format!("setuid({}): {e}: is the uid mapped?", user.uid)))?;
    nix::unistd::chdir(cwd.as_path())
        .map_err(|e| Error::sys("chdir to the working directory", e))?;
    reset_signals();
    let args = process
        .args()
        .clone()
        .filter(|a| !a.is_empty())
        .ok_or_else(|| Error::Spec("no command specified".into()))?;
    crate::phase::mark("user-switched");
    // After the change of user (which clears it), before the seccomp filter.
    die_with_monitor(chan)?;
    // Last: capabilities, no_new_privs and the seccomp filter.
    sec.after_user_switch()?;
    crate::phase::mark("exec");
    Ok((args, env))
}

fn spec_user_annotation(spec: &Spec) -> Option<&String> {
    spec.annotations()
        .as_ref()
        .and_then(|a| a.get(super::user::USER_ANNOTATION))
}

/// The process's user: resolved from the container's passwd and group files when the
/// spec carries skiff's user annotation, else exactly the spec's `process.user`.
fn resolve_user(spec: &Spec) -> Result<ExecUser, Error> {
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| Error::Spec("process is missing".into()))?;
    match spec_user_annotation(spec) {
        Some(name) => {
            let add: Vec<String> = spec
                .annotations()
                .as_ref()
                .and_then(|a| a.get(super::user::GROUP_ADD_ANNOTATION))
                .map(|g| {
                    g.split(',')
                        .filter(|s| !s.is_empty())
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default();
            super::user::resolve_in_root(name, &add).map_err(|e| Error::Setup(e.to_string()))
        }
        None => {
            let u = process.user();
            Ok(ExecUser {
                uid: u.uid(),
                gid: u.gid(),
                sgids: u.additional_gids().clone().unwrap_or_default(),
                home: None,
            })
        }
    }
}

/// Creates the working directory when it is missing, the directories it creates owned
/// by the process's user (podman's rule: a user can write to its own workdir).
pub(crate) fn make_workdir(cwd: &Path, uid: u32, gid: u32) -> Result<(), Error> {
    if cwd.exists() {
        return Ok(());
    }
    let mut missing = Vec::new();
    let mut p = cwd;
    while !p.exists() {
        missing.push(p.to_path_buf());
        match p.parent() {
            Some(parent) => p = parent,
            None => break,
        }
    }
    for dir in missing.iter().rev() {
        match std::fs::create_dir(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(Error::io(
                    format!("create working directory {}", dir.display()),
                    e,
                ))
            }
        }
        std::os::unix::fs::lchown(dir, Some(uid), Some(gid)).map_err(|e| {
            Error::io(
                format!(
                    "give the working directory {} to {uid}:{gid}",
                    dir.display()
                ),
                e,
            )
        })?;
    }
    Ok(())
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
