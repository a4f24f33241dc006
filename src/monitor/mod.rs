//! The per-container monitor (conmon's role): a process of its own, in its own session,
//! started by skiffd as `skiff-monitor __monitor BUNDLE` (its own small binary, forked by
//! skiffd's monitor [`zygote`] or exec'd, or skiffd itself under that name when the
//! binary is missing, see [`crate::daemon::Options`]).
//! It holds its bundle's lock ([`lock`]) for its whole life; the container's init dies
//! with it (PR_SET_PDEATHSIG), and SIGTERM, SIGINT or SIGHUP make it kill the container
//! and record why. It creates the container through the
//! runtime, holds the container's stdio (its own fds 0-2 are handed down), reaps the
//! container's init, records the exit code atomically in the bundle's exit file and tells
//! the daemon what happened through a status pipe (fd 3, one JSON object per line).
//!
//! The monitor is silent on its own stdio: those belong to the container. When the daemon
//! asks for logging, the container's stdout and stderr are pipes (or its pty, with -t)
//! that the monitor reads and writes to the json-file log, so output is never lost while
//! the daemon is down; clients attach to the container through the monitor's attach
//! socket ([`attach`], served by [`io`]), never through the daemon.

pub mod attach;
pub mod handoff;
pub mod heap;
pub mod io;
pub mod lock;
pub mod logger;
mod reap;
mod stdio;
pub mod zygote;

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use serde::{Deserialize, Serialize};

use crate::fsutil;
use crate::runtime::{self, RootfsPlan};
use crate::timefmt::now_us;
pub use logger::LogConfig;
use stdio::{ClientStdio, OutputPipes};

/// How long a monitor started for an attaching client waits for it after the end.
const FIRST_CLIENT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// The fd on which the monitor writes [`Status`] lines.
pub const STATUS_FD: i32 = 3;

/// The monitor's process name (comm and argv[0]): `pkill skiffd` must not end the
/// monitors, and their containers with them.
pub const PROCESS_NAME: &str = "skiff-monitor";

/// The container's init once it runs (0 before), for the termination handler.
static INIT_PID: AtomicI32 = AtomicI32::new(0);
/// The termination signal the monitor got (0: none).
static TERMINATED_BY: AtomicI32 = AtomicI32::new(0);
/// The container cgroup's `cgroup.kill`, open for writing (-1: the container has no
/// cgroup of its own), for the termination handler.
static KILL_FD: AtomicI32 = AtomicI32::new(-1);
/// A network helper told to end but not waited for before the exit was reported (0:
/// none; see [`crate::netns::Helper::begin_stop`]): reaped after the report.
static HELPER_ENDING: AtomicI32 = AtomicI32::new(0);

/// SIGTERM, SIGINT or SIGHUP to the monitor: the container is killed (it never runs on
/// without its monitor); the monitor then records its end as usual, with the reason.
extern "C" fn on_terminate(signo: libc::c_int) {
    TERMINATED_BY.store(signo, Ordering::SeqCst);
    let kill_fd = KILL_FD.load(Ordering::SeqCst);
    if kill_fd >= 0 {
        // SAFETY: write(2) is async-signal-safe; the fd stays open for our whole life.
        unsafe { libc::write(kill_fd, b"1".as_ptr().cast(), 1) };
    }
    let init = INIT_PID.load(Ordering::SeqCst);
    if init > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe { libc::kill(init, libc::SIGKILL) };
    }
}

/// How long teardown waits for the container's cgroup to empty after `cgroup.kill`.
const CGROUP_DRAIN: std::time::Duration = std::time::Duration::from_secs(10);

/// Puts the monitor in its scope's `monitor/` leaf and makes `container/` (see
/// [`crate::cgroup`]); keeps `container/cgroup.kill` open for the termination handler.
fn set_up_cgroup(
    cfg: &MonitorConfig,
) -> Result<Option<(PathBuf, Option<std::fs::File>)>, runtime::Error> {
    let limits = cfg.limits.clone().unwrap_or_default();
    let Some(dir) = crate::cgroup::set_up(&cfg.id, &limits)
        .map_err(|e| runtime::Error::Setup(format!("cgroup: {e}")))?
    else {
        return Ok(None);
    };
    let kill = dir.join("cgroup.kill");
    // (std opens with O_CLOEXEC: the container never gets it.) Kernels before 5.14 have
    // no cgroup.kill: killing init then ends the container's pid namespace, as ever.
    let f = match std::fs::OpenOptions::new().write(true).open(&kill) {
        Ok(f) => {
            KILL_FD.store(f.as_raw_fd(), Ordering::SeqCst);
            Some(f)
        }
        Err(e) => {
            tracing::warn!("{}: {e}", kill.display());
            None
        }
    };
    Ok(Some((dir, f)))
}

/// Names the process and installs the termination handler.
/// skiffd's shared user namespace, when `monitor.json` says it passed it (on
/// [`crate::userns::shared::USERNS_FD`], close-on-exec since our start).
fn take_shared_userns(cfg: &MonitorConfig) -> Result<Option<OwnedFd>, runtime::Error> {
    if !cfg.shared_userns {
        return Ok(None);
    }
    let fd = crate::userns::shared::USERNS_FD;
    // SAFETY: F_GETFD only reads the flags of a descriptor number.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return Err(runtime::Error::Setup(format!(
            "skiffd did not pass its shared user namespace on fd {fd}"
        )));
    }
    // SAFETY: the descriptor is open (checked above), was passed to us for this use
    // alone, and nothing else in this process owns it.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn set_up_process() {
    if let Ok(name) = std::ffi::CString::new(PROCESS_NAME) {
        // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
        unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr(), 0, 0, 0) };
    }
    for signo in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
        // SAFETY: the handler only does atomic loads and stores, write(2) and kill(2); SA_RESTART
        // keeps the blocking calls of the monitor going.
        unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_terminate as *const () as usize;
            sa.sa_flags = libc::SA_RESTART;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(signo, &sa, std::ptr::null_mut());
        }
    }
}

/// The variable in which skiffd gives a monitor its own pid: the monitor starts nothing
/// unless that daemon is still its parent (not secret; removed before anything runs).
pub const PARENT_ENV: &str = "SKIFF_MONITOR_PARENT";

/// Whether the daemon that spawned us is still our parent: the pid it gave in
/// [`PARENT_ENV`] (taken out of the environment here); without one, a parent with our
/// own name (`comm`), as when skiffd re-runs itself as the monitor.
fn spawned_by_parent(own_comm: &str) -> bool {
    let ppid = nix::unistd::getppid();
    let given = std::env::var(PARENT_ENV).ok();
    if given.is_some() {
        // SAFETY: the monitor is single-threaded.
        unsafe { std::env::remove_var(PARENT_ENV) };
    }
    match given.and_then(|p| p.parse::<i32>().ok()) {
        Some(pid) => pid == ppid.as_raw(),
        None => std::fs::read_to_string(format!("/proc/{ppid}/comm")).is_ok_and(|c| c == own_comm),
    }
}

/// Why the container ended, when the monitor was told to end.
fn termination_reason() -> Option<String> {
    let signo = TERMINATED_BY.load(Ordering::SeqCst);
    (signo != 0).then(|| {
        let name = nix::sys::signal::Signal::try_from(signo)
            .map(|s| s.as_str().to_string())
            .unwrap_or_else(|_| format!("signal {signo}"));
        format!("the container's monitor got {name}: the container was killed with it")
    })
}

/// The monitor's instructions, `monitor.json` in the bundle directory; the OCI runtime
/// spec is `config.json` beside it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MonitorConfig {
    /// The container's id.
    pub id: String,
    /// How to assemble the rootfs.
    pub rootfs: RootfsPlan,
    /// Log the container's stdout/stderr (detached containers); None = the monitor's own
    /// stdio are the container's (the client passed its fds).
    #[serde(default)]
    pub log: Option<LogConfig>,
    /// Give the container a stdin pipe that attached clients write to (created with
    /// -i, output logged, no tty).
    #[serde(default)]
    pub stdin: bool,
    /// Our fds 0-2 are a client's (`skiff run` in the foreground): stdin is the
    /// container's as it is; its output is logged and copied to the client's stdout and
    /// stderr.
    #[serde(default)]
    pub client_stdio: bool,
    /// A client attaches right after the start (`run -t`, `start -a`): if the command
    /// ends before any client asked for output, wait a while for the first one and give
    /// it the output and the exit code.
    #[serde(default)]
    pub wait_attach: bool,
    /// How to connect the container's network namespace (none: nothing to start).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<crate::netns::NetPlan>,
    /// Resource limits for the container's cgroup (none: no limits).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limits: Option<crate::cgroup::Limits>,
    /// skiffd passed its shared user namespace on
    /// [`crate::userns::shared::USERNS_FD`]: the container joins it rather than making
    /// one of its own.
    #[serde(default)]
    pub shared_userns: bool,
}

/// What the monitor tells the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "lowercase")]
pub enum Status {
    /// The command runs; `pid` is the container's init on the host.
    Started {
        /// Host pid of init.
        pid: i32,
    },
    /// The command could not be started.
    Failed {
        /// 125, 126 or 127.
        code: i32,
        /// Why.
        message: String,
    },
    /// The container's init ended.
    Exited {
        /// Exit code, or 128+N for signal N.
        code: i32,
    },
}

/// The exit file, `exit.json` in the bundle: survives the daemon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    /// Exit code, or 128+N for signal N.
    pub exit_code: i32,
    /// When, µs since the epoch.
    pub finished_at: u64,
    /// The start failure, if the command never ran.
    #[serde(default)]
    pub error: String,
}

/// The monitor's configuration's name in the bundle ([`MonitorConfig`]).
pub const CONFIG_FILE: &str = "monitor.json";

/// The OCI spec's name in the bundle.
pub const SPEC_FILE: &str = "config.json";

/// The bundle's files.
pub fn config_path(bundle: &Path) -> PathBuf {
    bundle.join(CONFIG_FILE)
}

/// The OCI spec's path in the bundle.
pub fn spec_path(bundle: &Path) -> PathBuf {
    bundle.join(SPEC_FILE)
}

/// The exit file's name in the bundle.
pub const EXIT_FILE: &str = "exit.json";

/// The exit file's path in the bundle.
pub fn exit_path(bundle: &Path) -> PathBuf {
    bundle.join(EXIT_FILE)
}

/// The status pipe to the daemon (fd 3), if the daemon gave one.
pub(crate) struct StatusPipe(Option<File>);

impl StatusPipe {
    pub(crate) fn open() -> StatusPipe {
        // SAFETY: F_GETFD only inspects the descriptor table.
        if unsafe { libc::fcntl(STATUS_FD, libc::F_GETFD) } < 0 {
            return StatusPipe(None);
        }
        // SAFETY: fd 3 is open (checked above) and handed to us by the daemon.
        unsafe { libc::fcntl(STATUS_FD, libc::F_SETFD, libc::FD_CLOEXEC) };
        // SAFETY: we take ownership of fd 3, which nothing else in this process uses.
        StatusPipe(Some(unsafe { File::from_raw_fd(STATUS_FD) }))
    }

    pub(crate) fn send(&mut self, status: &Status) {
        if let Some(f) = self.0.as_mut() {
            if let Ok(mut line) = serde_json::to_vec(status) {
                line.push(b'\n');
                // The daemon may be gone; the exit file still records the outcome.
                let _ = f.write_all(&line);
            }
        }
    }
}

/// Runs the monitor for the bundle; returns the monitor's own exit code (0 when the
/// container's outcome was recorded).
pub fn main(bundle: &Path) -> i32 {
    crate::phase::mark("monitor-main");
    heap::tune_monitor();
    // Our name as exec gave it (the daemon's, when it re-ran itself as the monitor).
    let exe_name = std::fs::read_to_string("/proc/self/comm").unwrap_or_default();
    set_up_process();
    let mut pipe = StatusPipe::open();
    // Held for our whole life: it is how skiffd finds us (see `lock`). Taken before the
    // instructions are read: a skiffd that undid this start removed them meanwhile.
    let lock = match lock::acquire(bundle) {
        Ok(l) => l,
        Err(e) => {
            pipe.send(&Status::Failed {
                code: runtime::exec::EXIT_SETUP_FAILED,
                message: format!("lock {}: {e}", lock::lock_path(bundle).display()),
            });
            return 1;
        }
    };
    crate::phase::mark("monitor-locked");
    // A daemon that died before we held the lock could not see us, and its successor
    // may already have looked: then we were re-parented, and we start nothing. (Once we
    // hold the lock, a successor finds us through it.)
    if !spawned_by_parent(&exe_name) {
        pipe.send(&Status::Failed {
            code: runtime::exec::EXIT_SETUP_FAILED,
            message: "skiffd ended before the container's monitor started".into(),
        });
        return 1;
    }
    let outcome = run(bundle, &mut pipe);
    let (code, error, orphans) = match outcome {
        Ok((code, ending)) => (code, termination_reason().unwrap_or_default(), Some(ending)),
        Err(e) => {
            let code = e.exit_code();
            pipe.send(&Status::Failed {
                code,
                message: e.to_string(),
            });
            (code, e.to_string(), None)
        }
    };
    let rec = ExitRecord {
        exit_code: code,
        finished_at: now_us(),
        error,
    };
    // In the bundle, in the runtime directory: atomic, no fsyncs (see fsutil). Written
    // while the container's last processes (the FUSE server, with the mount namespace)
    // end: a skiffd that is gone finds it; one that is there hears the exit only once
    // they are reaped (we hold the lock until then, so a successor waits for us too).
    // Into the empty file the spare bundle holds for it, if any: no inode made here.
    let written = fsutil::replace_file_premade_json(&exit_path(bundle), &rec).is_ok();
    crate::phase::mark("exit-file-written");
    if let Some(ending) = orphans {
        reap::reap_orphans(ending);
        if let Some(pid) = ending {
            HELPER_ENDING.store(pid.as_raw(), Ordering::SeqCst);
        }
        crate::phase::mark("orphans-reaped");
    }
    pipe.send(&Status::Exited { code });
    // The exit is reported: what follows delays no one. The lock goes first, then the
    // pipe: its end tells skiffd we are done, and the removal that may follow at once
    // (`--rm`) finds the lock free, so that the bundle is given back (see
    // `Daemon::give_back_bundle`). The exit file is written: a successor that finds the
    // lock free between the two reads it.
    drop(lock);
    drop(pipe);
    reap::reap_ending_helper(HELPER_ENDING.swap(0, Ordering::SeqCst));
    if written {
        0
    } else {
        1
    }
}

/// Runs the container to its end; returns its exit code and the network helper that
/// was told to end, if any. The container's processes re-parented to us (the FUSE
/// server, whatever escaped init's end) are the caller's to reap.
fn run(
    bundle: &Path,
    pipe: &mut StatusPipe,
) -> Result<(i32, Option<nix::unistd::Pid>), runtime::Error> {
    let cfg_path = config_path(bundle);
    let data = std::fs::read(&cfg_path)
        .map_err(|e| runtime::Error::io(format!("read {}", cfg_path.display()), e))?;
    let cfg: MonitorConfig = serde_json::from_slice(&data)
        .map_err(|e| runtime::Error::Spec(format!("{}: {e}", cfg_path.display())))?;
    let mut spec = oci_spec::runtime::Spec::load(spec_path(bundle))
        .map_err(|e| runtime::Error::Spec(e.to_string()))?;
    nix::sys::prctl::set_child_subreaper(true)
        .map_err(|e| runtime::Error::sys("PR_SET_CHILD_SUBREAPER", e))?;
    // Before anything is started: helpers stay in the monitor's leaf.
    let cgroup = set_up_cgroup(&cfg)?;
    let tty = spec
        .process()
        .as_ref()
        .and_then(|p| p.terminal())
        .unwrap_or(false);
    // Logged containers are served through the attach socket; it exists before the
    // daemon hears that the container started.
    let logged = cfg.log.is_some();
    // A client's stdout and stderr, taken before the pipes replace our fds 1 and 2.
    let client_out = if cfg.client_stdio && logged && !tty {
        Some(ClientStdio::take()?)
    } else {
        None
    };
    let pipes = if logged && !tty {
        Some(OutputPipes::install(cfg.stdin)?)
    } else {
        None
    };
    let sock = attach::socket_path(bundle);
    let listener = if logged {
        Some(
            attach::listen(&sock)
                .map_err(|e| runtime::Error::sys("create the attach socket", e))?,
        )
    } else {
        None
    };
    crate::phase::mark("monitor-prepared");
    // The network helper is our child; dropping it stops it and removes its files.
    let mut net: Option<Box<dyn crate::netns::Helper>> = None;
    let userns = take_shared_userns(&cfg)?;
    // slirp4netns starts as soon as the namespaces exist, while init sets up the root
    // filesystem; init waits for it only just before its exec.
    let early: std::cell::Cell<Option<crate::netns::Early>> = std::cell::Cell::new(None);
    let mut start_early = |pid: nix::unistd::Pid| {
        if let Some(plan) = &cfg.network {
            early.set(Some(
                crate::netns::start_early(plan, pid.as_raw())
                    .map_err(|e| runtime::Error::Setup(e.to_string()))?,
            ));
        }
        Ok(())
    };
    let on_netns: Option<runtime::create::OnNetns<'_>> = match &cfg.network {
        Some(plan) if crate::netns::starts_early(plan) => Some(&mut start_early),
        _ => None,
    };
    // Checked and compiled (or found cached) before anything starts. The compiled filter
    // is all the container's processes need of the seccomp profile: its syscall names,
    // most of a default spec, go before the FUSE server is forked, which never frees
    // what it inherits (docs/benchmarks.md, session 9).
    let sec = runtime::create::prepare(&spec)?;
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(None);
    }
    let started = runtime::create::create_and_start_prepared(
        &spec,
        &sec,
        &cfg.rootfs,
        userns.as_ref().map(|f| f.as_fd()),
        on_netns,
        &mut |pid| {
            if let Some((dir, _)) = &cgroup {
                // Before the command runs: everything it starts is born in the cgroup.
                crate::cgroup::add_process(dir, pid.as_raw())
                    .map_err(|e| runtime::Error::Setup(format!("cgroup: {e}")))?;
            }
            if let Some(plan) = &cfg.network {
                let conn = crate::netns::connect(plan, pid.as_raw(), early.take())
                    .map_err(|e| runtime::Error::Setup(e.to_string()))?;
                if let Some(why) = &conn.fallback {
                    // Read by skiffd when the start is reported (inspect shows it).
                    let path = bundle.join(crate::netns::FALLBACK_FILE);
                    if let Err(e) = fsutil::replace_file(&path, why.as_bytes()) {
                        tracing::warn!("{}: {e}", path.display());
                    }
                }
                net = conn.helper;
                crate::phase::mark("network-connected");
            }
            Ok(())
        },
    )?;
    // The container's processes keep the namespace now; we need it no more.
    drop(userns);
    let init = started.pid;
    INIT_PID.store(init.as_raw(), Ordering::SeqCst);
    if TERMINATED_BY.load(Ordering::SeqCst) != 0 {
        // Told to end while the container was being created.
        let _ = nix::sys::signal::kill(init, nix::sys::signal::Signal::SIGKILL);
    }
    crate::phase::mark("container-started");
    pipe.send(&Status::Started { pid: init.as_raw() });
    // From here on the monitor mostly waits: what the start allocated goes back.
    drop(spec);
    drop(sec);
    heap::trim();
    let mut io = None;
    if logged {
        let streams = match pipes {
            Some(p) => p.into_streams(),
            None => io::Streams {
                tty: started.pty,
                out: None,
                err: None,
                stdin: None,
            },
        };
        let mut l = io::Io::new(streams, listener, cfg.log.clone());
        if let Some(c) = client_out {
            l.copy_output_to(c.out, c.err);
        }
        l.run(init);
        io = Some(l);
    }
    let code = runtime::wait_exit_code(init);
    crate::phase::mark("init-exited");
    if let Some((dir, kill_file)) = cgroup {
        // Whatever the container left behind (processes that escaped its pid namespace's
        // end, e.g. in a frozen state) goes with it.
        KILL_FD.store(-1, Ordering::SeqCst);
        drop(kill_file);
        if let Err(e) = crate::cgroup::tear_down(&dir, CGROUP_DRAIN) {
            tracing::warn!("container cgroup: {e}");
        }
        crate::phase::mark("cgroup-removed");
    }
    // A helper without published ports ends on its own, not waited for (see
    // `Helper::begin_stop`).
    let ending = net.as_mut().and_then(|h| h.begin_stop());
    drop(net);
    let code = code?;
    if let Some(mut l) = io {
        if cfg.wait_attach {
            l.await_first_client(FIRST_CLIENT_WAIT);
        }
        l.finish(code);
    }
    crate::phase::mark("output-finished");
    let _ = std::fs::remove_file(&sock);
    Ok((code, ending))
}
