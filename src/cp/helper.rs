//! skiffd's `__cp` helper: one copy inside a container, by the [`CpSpec`] on fd 4. The
//! tar comes on stdin (`To`) or goes to stdout (`From`); the [`Outcome`] goes to stderr
//! as one JSON object.
//!
//! The helper first makes the container's root its own root (`chroot`), inside the
//! container's user namespace, so no path or symlink can lead out of the container:
//! - running: it joins the user and mount namespaces of the container's init and
//!   chroots into that process's root (as `exec` does);
//! - stopped: it forks into a new user namespace with the container's id maps and a
//!   private mount namespace, mounts the rootfs with the container's storage driver
//!   (the FUSE overlay, the kernel overlay or the vfs copy) on the container's rootfs
//!   directory and chroots there; the mount goes away with the helper.
//!
//! Single-threaded until it is inside (it forks and joins namespaces).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::{setresgid, setresuid, Gid, Uid};

use super::rules::{self, Source};
use super::stream::{extract_placed, top_name, write_tree};
use super::{CpSpec, Direction, Error, Mode, Outcome, Target};
use crate::image::{unpack_layer, UnpackOptions};
use crate::runtime::{self, RootfsDriver};

/// `__cp`: returns the process exit code.
pub fn main() -> i32 {
    let spec: CpSpec = match crate::fdutil::read_spec()
        .map_err(|e| e.to_string())
        .and_then(|d| serde_json::from_slice(&d).map_err(|e| format!("bad copy spec: {e}")))
    {
        Ok(s) => s,
        Err(e) => return report(Outcome::Failed(e)),
    };
    match &spec.target {
        Target::Running { pid } => match enter_running(*pid) {
            Ok(()) => report(run(&spec.direction)),
            Err(e) => report(Outcome::Gone(e.to_string())),
        },
        Target::Stopped { plan, mountpoint } => {
            let (plan, mountpoint, direction) = (plan.clone(), mountpoint.clone(), &spec.direction);
            let forked =
                runtime::nsproc::fork_into_userns(&spec.maps, |chan| {
                    match enter_stopped(&chan, &plan, &mountpoint) {
                        Ok(()) => report(run(direction)),
                        Err(e) => report(Outcome::Failed(e.to_string())),
                    }
                });
            match forked.and_then(|(pid, chan)| {
                drop(chan);
                runtime::wait_exit_code(pid)
            }) {
                Ok(code) => code,
                Err(e) => report(Outcome::Failed(e.to_string())),
            }
        }
    }
}

/// Writes the outcome on stderr; returns the exit code that goes with it.
fn report(outcome: Outcome) -> i32 {
    let code = i32::from(!matches!(outcome, Outcome::Ok { .. }));
    let mut err = std::io::stderr().lock();
    let _ = serde_json::to_writer(&mut err, &outcome);
    let _ = err.flush();
    code
}

/// Joins the running container of `pid` (user, then mount namespace) and its root.
fn enter_running(pid: i32) -> Result<(), runtime::Error> {
    let open = |what: &str| {
        let p = format!("/proc/{pid}/{what}");
        let mut o = std::fs::OpenOptions::new();
        o.read(true);
        if what == "root" {
            // O_PATH: a FUSE rootfs refuses a real open from outside its user namespace.
            o.custom_flags(libc::O_PATH | libc::O_DIRECTORY);
        }
        o.open(&p).map_err(|e| {
            runtime::Error::io(format!("open {p}: is the container still running?"), e)
        })
    };
    // Everything opened first: joining the mount namespace changes what /proc shows.
    let root = open("root")?;
    let mut ns: Vec<(File, CloneFlags, &str)> = Vec::new();
    for (name, flag) in [
        ("user", CloneFlags::CLONE_NEWUSER),
        ("mnt", CloneFlags::CLONE_NEWNS),
    ] {
        let own = std::fs::read_link(format!("/proc/self/ns/{name}")).ok();
        let theirs = std::fs::read_link(format!("/proc/{pid}/ns/{name}")).ok();
        if own.is_none() || own != theirs {
            ns.push((open(&format!("ns/{name}"))?, flag, name));
        }
    }
    for (fd, flag, name) in &ns {
        setns(fd.as_fd(), *flag).map_err(|e| runtime::Error::sys(format!("setns({name})"), e))?;
    }
    become_root()?;
    nix::unistd::fchdir(&root)
        .map_err(|e| runtime::Error::sys("fchdir to the container's root", e))?;
    chroot_here()
}

/// Mounts a stopped container's rootfs in a private mount namespace and enters it. A
/// FUSE server serving it watches this process and ends with it.
fn enter_stopped(
    chan: &runtime::sync::Channel,
    plan: &runtime::RootfsPlan,
    mountpoint: &Path,
) -> Result<(), runtime::Error> {
    if plan.driver == RootfsDriver::Fuse {
        let server = runtime::fuse_server::start(chan, plan, mountpoint)?.mounted()?;
        server.watch(nix::unistd::Pid::this());
    } else {
        unshare(CloneFlags::CLONE_NEWNS)
            .map_err(|e| runtime::Error::sys("unshare(CLONE_NEWNS)", e))?;
        runtime::rootfs::prepare_rootfs(plan, mountpoint)?;
    }
    nix::unistd::chdir(mountpoint)
        .map_err(|e| runtime::Error::sys("chdir to the container's rootfs", e))?;
    chroot_here()
}

fn become_root() -> Result<(), runtime::Error> {
    setresgid(Gid::from_raw(0), Gid::from_raw(0), Gid::from_raw(0))
        .map_err(|e| runtime::Error::sys("setresgid(0)", e))?;
    setresuid(Uid::from_raw(0), Uid::from_raw(0), Uid::from_raw(0))
        .map_err(|e| runtime::Error::sys("setresuid(0)", e))
}

/// Makes the current directory the root, and `/` the current directory: container paths
/// are relative to its `/`, as docker's.
fn chroot_here() -> Result<(), runtime::Error> {
    nix::unistd::chroot(".").map_err(|e| runtime::Error::sys("chroot into the container", e))?;
    nix::unistd::chdir("/").map_err(|e| runtime::Error::sys("chdir /", e))
}

/// The copy itself, inside the container's root.
fn run(direction: &Direction) -> Outcome {
    let result = match direction {
        Direction::To { path, mode } => copy_in(path, *mode),
        Direction::From { path, follow } => copy_out(path, *follow).map(|()| Vec::new()),
    };
    match result {
        Ok(warnings) => Outcome::Ok { warnings },
        Err(e @ Error::Path(_)) => Outcome::Refused(e.to_string()),
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

fn copy_in(path: &str, mode: Mode) -> Result<Vec<String>, Error> {
    let opts = UnpackOptions {
        preserve_ownership: true,
        whiteouts: false,
        ..UnpackOptions::from_env(|k| std::env::var(k).ok())?
    };
    let stats = match mode {
        Mode::Extract => {
            let (dir, _) = rules::split_dir_suffix(path);
            match std::fs::metadata(dir) {
                Ok(m) if m.is_dir() => {}
                _ => {
                    return Err(Error::Path(format!(
                        "destination {path:?} must be an existing directory in the container \
                         to extract an archive into"
                    )))
                }
            }
            unpack_layer(std::io::stdin(), Path::new(dir), &opts)?
        }
        Mode::Tree | Mode::Contents => {
            let path = path.to_string();
            let state = rules::dest_state(&path);
            extract_placed(
                std::io::stdin(),
                move |is_dir| {
                    let src = Source {
                        is_dir,
                        contents: mode == Mode::Contents,
                    };
                    let p = rules::place(&src, &path, state).map_err(Error::Path)?;
                    Ok((p.dir, p.rename))
                },
                &opts,
            )?
        }
    };
    Ok(stats.warnings)
}

fn copy_out(path: &str, follow: bool) -> Result<(), Error> {
    let (trimmed, must_be_dir) = rules::split_dir_suffix(path);
    let follow = follow || must_be_dir;
    let meta = match follow {
        true => std::fs::metadata(trimmed),
        false => std::fs::symlink_metadata(trimmed),
    };
    match meta {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Path(format!(
                "no such file or directory in the container: {path}"
            )))
        }
        Err(e) => return Err(Error::io(format!("{path} in the container"), e)),
        Ok(m) if must_be_dir && !m.is_dir() => {
            return Err(Error::Path(format!(
                "{path} in the container is not a directory"
            )))
        }
        Ok(_) => {}
    }
    let out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut out = write_tree(out, Path::new(trimmed), &top_name(path), follow, None)?;
    out.flush().map_err(|e| Error::io("writing the archive", e))
}
