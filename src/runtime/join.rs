//! Running a new process inside a running container (`exec`): join the container's user
//! namespace first, then its mount, uts, ipc, network, cgroup and pid namespaces, enter
//! its root, fork (the pid namespace applies to children), take the user and working
//! directory, and exec. Exec failures come back as docker's 126/127 like the container's
//! own command.

use std::fs::File;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::exit;

use nix::sched::{setns, CloneFlags};
use nix::unistd::{fork, setresgid, setresuid, ForkResult, Gid, Pid, Uid};
use serde::{Deserialize, Serialize};

use super::exec::{self, ExecFailure, EXIT_SETUP_FAILED};
use super::security::Prepared;
use super::sync::{Channel, Msg};
use super::user::ExecUser;
use super::Error;

/// What to run inside the container.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct JoinSpec {
    /// Host pid of the container's init, whose namespaces are joined.
    pub pid: i32,
    /// The command.
    pub args: Vec<String>,
    /// The full environment.
    pub env: Vec<String>,
    /// Working directory inside the container.
    pub cwd: PathBuf,
    /// uid inside the container.
    pub uid: u32,
    /// gid inside the container.
    pub gid: u32,
    /// The user as given (`NAME[:GROUP]`, `UID[:GID]`, empty for root), resolved from
    /// the container's passwd and group files, replacing `uid` and `gid` (see
    /// [`super::user`]). None: exactly `uid`:`gid`, no supplementary groups.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// `--group-add` groups (names or numbers), with `user`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// Give the process a pty from the container's devpts as its controlling terminal.
    #[serde(default)]
    pub tty: bool,
    /// The pty's window size (rows, cols), set before the command starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<(u16, u16)>,
    /// The container's OCI spec: the process gets its capabilities, limits,
    /// no_new_privs and seccomp filter (none of them when absent).
    #[serde(default)]
    pub confine_as: Option<PathBuf>,
    /// Every capability instead of the container's (`exec --privileged`).
    #[serde(default)]
    pub privileged: bool,
}

/// A started process.
pub struct Joined {
    /// Its host pid.
    pub pid: Pid,
    /// The pty master and the slave's path in the container (with `tty`).
    pub pty: Option<(std::os::fd::OwnedFd, String)>,
}

/// The namespaces joined, user first (joining it gives the rights to join the rest).
const NAMESPACES: [(&str, CloneFlags); 7] = [
    ("user", CloneFlags::CLONE_NEWUSER),
    ("mnt", CloneFlags::CLONE_NEWNS),
    ("uts", CloneFlags::CLONE_NEWUTS),
    ("ipc", CloneFlags::CLONE_NEWIPC),
    ("net", CloneFlags::CLONE_NEWNET),
    ("cgroup", CloneFlags::CLONE_NEWCGROUP),
    ("pid", CloneFlags::CLONE_NEWPID),
];

/// Joins the container of `spec.pid` and starts the command; returns the new process's
/// host pid once it runs, or [`Error::Exec`] with docker's code. Single-threaded callers
/// only.
pub fn spawn(spec: &JoinSpec) -> Result<Joined, Error> {
    let sec = prepare(spec)?;
    let open = |what: &str| {
        let p = format!("/proc/{}/{what}", spec.pid);
        File::open(&p).map_err(|e| Error::io(format!("open {p}: is the container running?"), e))
    };
    // Open everything first: joining the mount namespace changes what /proc shows. The
    // root with O_PATH: a FUSE rootfs (allow_other within its user namespace) refuses a
    // real open from outside that namespace; fchdir to an O_PATH fd needs no such access.
    let root = {
        let p = format!("/proc/{}/root", spec.pid);
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open(&p)
            .map_err(|e| Error::io(format!("open {p}: is the container running?"), e))?
    };
    // The container's own cgroup, when it has one (crate::cgroup): the process joins it
    // too, so that pause freezes and teardown kills it with the container. Opened now,
    // with our credentials and cgroup namespace (the kernel checks the opener's).
    let cgroup_procs = crate::cgroup::cgroup_of(&spec.pid.to_string())
        .filter(|cg| {
            let leaf = cg
                .file_name()
                .is_some_and(|n| n == crate::cgroup::CONTAINER_LEAF);
            let scope = cg
                .parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("skiff-") && n.ends_with(".scope"));
            leaf && scope
        })
        .and_then(|cg| {
            std::fs::OpenOptions::new()
                .write(true)
                .open(cg.join("cgroup.procs"))
                .ok()
        });
    let mut ns = Vec::new();
    for (name, flag) in NAMESPACES {
        let own = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        let theirs = std::fs::read_link(format!("/proc/{}/ns/{name}", spec.pid)).ok();
        // Already in it (e.g. host networking): joining would fail with EINVAL for user.
        if own.is_some() && own == theirs {
            continue;
        }
        ns.push((open(&format!("ns/{name}"))?, flag, name));
    }
    for (fd, flag, name) in &ns {
        setns(fd.as_fd(), *flag).map_err(|e| Error::sys(format!("setns({name})"), e))?;
    }
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| Error::sys("setresgid(0)", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| Error::sys("setresuid(0)", e))?;
    nix::unistd::fchdir(&root).map_err(|e| Error::sys("fchdir to the container's root", e))?;
    nix::unistd::chroot(".").map_err(|e| Error::sys("chroot into the container", e))?;
    // The container's /dev/ptmx, now that we see its mounts and root.
    let pty = if spec.tty {
        let pty = super::pty::open("/dev/ptmx")?;
        if let Some((rows, cols)) = spec.console_size {
            super::pty::set_size(&pty.master, rows, cols)?;
        }
        Some(pty)
    } else {
        None
    };
    let (parent, child) = Channel::pair()?;
    // SAFETY: single-threaded caller (see above).
    match unsafe { fork() }.map_err(|e| Error::sys("fork", e))? {
        ForkResult::Child => {
            drop(parent);
            if let Some(procs) = &cgroup_procs {
                // "0": the writer. Best effort: without it the process is still in
                // every namespace of the container, as without a cgroup.
                // SAFETY: write(2) of a constant buffer on an fd we own.
                unsafe { libc::write(procs.as_raw_fd(), b"0".as_ptr().cast(), 1) };
            }
            // A session and process group of its own (as docker and podman do): `kill 0`
            // in it must not reach the helper that waits for it.
            let f = match resolve_user(spec) {
                Ok((user, env)) => {
                    let setup = nix::unistd::setsid()
                        .map_err(|e| Error::sys("setsid", e))
                        .and_then(|_| match &pty {
                            Some(p) => take_terminal(&user, &p.slave),
                            None => Ok(()),
                        });
                    match setup {
                        Ok(()) => child_main(spec, &user, &env, &sec),
                        Err(e) => ExecFailure {
                            code: EXIT_SETUP_FAILED,
                            message: e.to_string(),
                        },
                    }
                }
                Err(f) => f,
            };
            let _ = child.send(&Msg::Failed {
                code: f.code,
                message: f.message,
            });
            exit(f.code)
        }
        ForkResult::Parent { child: pid } => {
            drop(child);
            let pty = pty.map(|p| (p.master, p.path));
            match parent.recv()? {
                None => Ok(Joined { pid, pty }),
                Some(Msg::Failed { code, message }) => {
                    let _ = super::wait_exit_code(pid);
                    Err(Error::Exec { code, message })
                }
                Some(other) => Err(Error::Protocol(format!("unexpected {other:?}"))),
            }
        }
    }
}

/// In the child, once it leads a new session: the pty as controlling terminal and stdio.
fn take_terminal(user: &ExecUser, slave: &std::os::fd::OwnedFd) -> Result<(), Error> {
    let _ = nix::unistd::fchown(
        slave,
        Some(Uid::from_raw(user.uid)),
        Some(Gid::from_raw(user.gid)),
    );
    super::pty::make_controlling(slave)
}

/// The container's confinement, read from its spec before any namespace is joined.
fn prepare(spec: &JoinSpec) -> Result<Prepared, Error> {
    let sec = match &spec.confine_as {
        Some(path) => {
            let oci = oci_spec::runtime::Spec::load(path)
                .map_err(|e| Error::Spec(format!("{}: {e}", path.display())))?;
            Prepared::of_spec(&oci, Some(&super::security::seccomp_cache_dir()))?
        }
        None => Prepared::default(),
    };
    Ok(if spec.privileged {
        sec.with_all_caps()
    } else {
        sec
    })
}

/// The user the process runs as and its environment (with `HOME` from passwd when it
/// has none), resolved in the container's root.
fn resolve_user(spec: &JoinSpec) -> Result<(ExecUser, Vec<String>), ExecFailure> {
    let mut env = spec.env.clone();
    let user = match &spec.user {
        Some(u) => {
            let user =
                super::user::resolve_in_root(u, &spec.group_add).map_err(|e| ExecFailure {
                    code: EXIT_SETUP_FAILED,
                    message: e.to_string(),
                })?;
            super::user::add_home(&mut env, &user);
            user
        }
        None => ExecUser {
            uid: spec.uid,
            gid: spec.gid,
            sgids: Vec::new(),
            home: None,
        },
    };
    Ok((user, env))
}

fn child_main(spec: &JoinSpec, user: &ExecUser, env: &[String], sec: &Prepared) -> ExecFailure {
    let fail = |message: String| ExecFailure {
        code: EXIT_SETUP_FAILED,
        message,
    };
    if let Err(e) = sec.before_user_switch() {
        return fail(e.to_string());
    }
    // Supplementary groups exactly the resolved ones (never the host's or the container
    // creator's).
    let gids: Vec<Gid> = user.sgids.iter().map(|g| Gid::from_raw(*g)).collect();
    if let Err(e) = super::init::set_supplementary_groups(&gids) {
        return fail(e.to_string());
    }
    if let Err(e) = setresgid(
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
        Gid::from_raw(user.gid),
    ) {
        return fail(format!("setgid({}): {e}: is the gid mapped?", user.gid));
    }
    if let Err(e) = setresuid(
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
        Uid::from_raw(user.uid),
    ) {
        return fail(format!("setuid({}): {e}: is the uid mapped?", user.uid));
    }
    if let Err(e) = nix::unistd::chdir(spec.cwd.as_path()) {
        return fail(format!("chdir to {}: {e}", spec.cwd.display()));
    }
    super::init::reset_signals();
    if let Err(e) = sec.after_user_switch() {
        return fail(e.to_string());
    }
    exec::exec(&spec.args, env)
}
