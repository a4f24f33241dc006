//! `exec`: a new process in a running container's namespaces, run by the helper
//! `skiffd __exec` with the client's stdio, followed like a container (status pipe),
//! with docker's `exec_create`, `exec_start` and `exec_die` events.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::config::parse_user;
use super::container::Status;
use super::events::Event;
use super::helper::HelperRun;
use super::lifecycle::{merge_env, Stdio};
use super::{names, Daemon, Error};
use crate::monitor;
use crate::runtime::join::JoinSpec;
use crate::runtime::sync::{Channel, Msg};

/// How long a finished exec stays known (so `Wait` right after the end still answers).
const EXEC_LINGER: Duration = Duration::from_secs(60);

/// What the client asks to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExecConfig {
    /// The command.
    pub argv: Vec<String>,
    /// `K=V` added to the container's environment.
    pub env: Vec<String>,
    /// Working directory (default: the container's).
    pub workdir: Option<String>,
    /// `NAME[:GROUP]` or `UID[:GID]` (default: the container's user).
    pub user: Option<String>,
    /// Allocate a pty in the container (the client takes its master with `open_pty`).
    pub tty: bool,
    /// The pty's window size (rows, cols) when the command starts.
    pub console_size: Option<(u16, u16)>,
    /// Every capability the user namespace holds, not only the container's.
    pub privileged: bool,
}

/// A running or finished exec.
pub struct Exec {
    /// 64 hex digits.
    pub id: String,
    /// The container's id.
    pub container: String,
    /// The command.
    pub argv: Vec<String>,
    /// Host pid of the process (0 once ended).
    pub pid: Mutex<u32>,
    /// None while running, then the exit code.
    pub exit: watch::Receiver<Option<i32>>,
    /// The pty master and the slave's path in the container (tty execs, while running;
    /// after the end too until a client has taken it, so that what a quick command wrote
    /// before the client's `open_pty` is not lost).
    pub pty: Mutex<Option<(OwnedFd, String)>>,
    /// Whether a client has taken a copy of the pty master.
    pub pty_taken: std::sync::atomic::AtomicBool,
}

impl Exec {
    /// A copy of the pty master and the slave's path.
    pub fn open_pty(&self) -> Result<(OwnedFd, String), Error> {
        let guard = match self.pty.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        match guard.as_ref() {
            Some((fd, path)) => {
                let copy = fd
                    .try_clone()
                    .map_err(|e| Error::Internal(format!("dup the pty: {e}")))?;
                self.pty_taken
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                Ok((copy, path.clone()))
            }
            None if self.exit.borrow().is_some() => Err(Error::InvalidArgument(format!(
                "exec {} has ended",
                self.id
            ))),
            None => Err(Error::InvalidArgument(format!(
                "exec {} has no tty (start it with the tty option)",
                self.id
            ))),
        }
    }

    /// Sets the window size of the exec's pty.
    pub fn resize(&self, rows: u16, cols: u16) -> Result<(), Error> {
        let (fd, _) = self.open_pty()?;
        crate::runtime::pty::set_size(&fd, rows, cols).map_err(|e| Error::Runtime(e.to_string()))
    }
}

impl Exec {
    /// Waits for the exit code.
    pub async fn wait(&self) -> i32 {
        let mut rx = self.exit.clone();
        let code = match rx.wait_for(|c| c.is_some()).await {
            Ok(c) => c.unwrap_or(125),
            Err(_) => 125,
        };
        code
    }
}

/// The daemon's execs.
pub type ExecTable = Mutex<HashMap<String, Arc<Exec>>>;

impl Daemon {
    /// Finds an exec by id.
    pub fn exec_by_id(&self, id: &str) -> Result<Arc<Exec>, Error> {
        let map = match self.inner.execs.lock() {
            Ok(m) => m,
            Err(p) => p.into_inner(),
        };
        map.get(id)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no such exec: {id}")))
    }

    /// Runs `cfg` in the running container; returns once the process runs (or with
    /// docker's 126/127 reasons).
    pub async fn exec(
        &self,
        name_or_id: &str,
        cfg: ExecConfig,
        stdio: Stdio,
    ) -> Result<Arc<Exec>, Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        if rec.state.paused {
            // The process would join the frozen cgroup and freeze at once.
            return Err(Error::InvalidArgument(format!(
                "container {} is paused, unpause the container before exec",
                rec.name
            )));
        }
        if cfg.argv.is_empty() {
            return Err(Error::InvalidArgument("exec needs a command".into()));
        }
        let (uid, gid) = match &cfg.user {
            Some(u) => parse_user(u)?,
            None => rec.user,
        };
        // Names are resolved in the container (its passwd and group files); records
        // from before names keep their numeric user exactly.
        let user = cfg.user.clone().or_else(|| rec.user_spec.clone());
        let spec = JoinSpec {
            pid: rec.state.pid as i32,
            args: cfg.argv.clone(),
            env: merge_env(&rec.env, &cfg.env, &rec.hostname),
            cwd: cfg
                .workdir
                .clone()
                .unwrap_or_else(|| rec.workdir.clone())
                .into(),
            uid,
            gid,
            group_add: if user.is_some() {
                rec.config.group_add.clone()
            } else {
                Vec::new()
            },
            user,
            tty: cfg.tty,
            console_size: cfg.console_size.filter(|_| cfg.tty),
            confine_as: Some(crate::monitor::spec_path(&self.bundle_dir(&rec.id))),
            privileged: cfg.privileged,
        };
        let spec_json = serde_json::to_string(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let id = names::new_id().map_err(|e| Error::Internal(format!("random id: {e}")))?;
        let attrs = |extra: Option<(&'static str, String)>| {
            let mut a = vec![("name", rec.name.clone()), ("execID", id.clone())];
            a.extend(extra);
            a
        };
        self.emit(Event::new(
            "container",
            "exec_create",
            &rec.id,
            &attrs(None),
        ));
        // The spec (environment included: it may hold secrets) goes on the helper's fd 4,
        // never on its command line.
        let args = [OsStr::new("__exec")];
        // With a tty the helper's stdin is a socket on which it sends the pty master.
        let (stdio3, pty_chan): (super::helper::HelperStdio, _) = if cfg.tty {
            let (ours, theirs) = Channel::pair().map_err(|e| Error::Internal(e.to_string()))?;
            let theirs: OwnedFd = theirs.into();
            ([Some(theirs), None, None], Some(ours))
        } else {
            (
                [Some(stdio.stdin), Some(stdio.stdout), Some(stdio.stderr)],
                None,
            )
        };
        let tag = format!("container {} exec {id}", rec.id);
        let mut run = HelperRun::spawn(
            &self.inner.opts.exe,
            &args,
            stdio3,
            Some(spec_json.as_bytes()),
            &tag,
        )?;
        let first = run.first().await;
        let pty = match (&first, pty_chan) {
            (Some(monitor::Status::Started { .. }), Some(chan)) => match chan.recv_fd(true) {
                Ok((Some(Msg::Pty(path)), Some(fd))) => Some((fd, path)),
                other => {
                    tracing::warn!("exec {id}: no pty from the helper ({:?})", other.err());
                    None
                }
            },
            _ => None,
        };
        let (tx, rx) = watch::channel(None);
        match first {
            Some(monitor::Status::Started { pid }) => {
                let exec = Arc::new(Exec {
                    id: id.clone(),
                    container: rec.id.clone(),
                    argv: cfg.argv,
                    pid: Mutex::new(pid as u32),
                    exit: rx,
                    pty: Mutex::new(pty),
                    pty_taken: std::sync::atomic::AtomicBool::new(false),
                });
                self.remember_exec(exec.clone());
                self.emit(Event::new("container", "exec_start", &rec.id, &attrs(None)));
                let daemon = self.clone();
                let exec2 = exec.clone();
                tokio::spawn(async move {
                    let code = run.finish().await.unwrap_or(125);
                    if let Ok(mut p) = exec2.pid.lock() {
                        *p = 0;
                    }
                    // An untaken master stays (with what the command wrote) until the
                    // exec is forgotten: the client may ask for it after a quick end.
                    if let Ok(mut p) = exec2.pty.lock() {
                        if exec2.pty_taken.load(std::sync::atomic::Ordering::SeqCst) {
                            *p = None;
                        }
                    }
                    tx.send_replace(Some(code));
                    daemon.emit(Event::new(
                        "container",
                        "exec_die",
                        &exec2.container,
                        &[("execID", exec2.id.clone()), ("exitCode", code.to_string())],
                    ));
                    tokio::time::sleep(EXEC_LINGER).await;
                    daemon.forget_exec(&exec2.id);
                });
                Ok(exec)
            }
            other => {
                run.finish().await;
                let (code, message) = match other {
                    Some(monitor::Status::Failed { code, message }) => (code, message),
                    _ => (
                        125,
                        "the exec helper ended before the process started".to_string(),
                    ),
                };
                self.emit(Event::new(
                    "container",
                    "exec_die",
                    &rec.id,
                    &attrs(Some(("exitCode", code.to_string()))),
                ));
                Err(match code {
                    127 => Error::CommandNotFound(message),
                    126 => Error::CommandNotExecutable(message),
                    _ => Error::Runtime(message),
                })
            }
        }
    }

    fn remember_exec(&self, e: Arc<Exec>) {
        if let Ok(mut m) = self.inner.execs.lock() {
            m.insert(e.id.clone(), e);
        }
    }

    fn forget_exec(&self, id: &str) {
        if let Ok(mut m) = self.inner.execs.lock() {
            m.remove(id);
        }
    }

    /// Sends a signal to an exec'd process.
    pub fn kill_exec(&self, id: &str, signal: i32) -> Result<(), Error> {
        let e = self.exec_by_id(id)?;
        let pid = e.pid.lock().map(|p| *p).unwrap_or(0);
        if pid == 0 {
            return Err(Error::InvalidArgument(format!("exec {id} is not running")));
        }
        let sig = nix::sys::signal::Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal number {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig)
            .map_err(|e| Error::Runtime(format!("kill exec: {e}")))
    }
}
