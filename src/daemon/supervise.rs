//! Starting containers under their monitors: the monitor (`skiff-monitor __monitor
//! BUNDLE`, see [`super::Options`]) runs in its own session, so a daemon that dies or
//! restarts leaves it and its container running. While the daemon lives it follows the
//! monitor through its status pipe. The container's init dies with its monitor
//! (PR_SET_PDEATHSIG).
//!
//! The end of a run (recording it, auto-remove, restarts by policy) is in
//! [`super::ended`]; finding containers and their monitors again after a daemon restart
//! in [`super::adopt`]; a client's way to a running container's monitor (attach,
//! resize) in [`super::attach`].

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::container::{Container, Status};
use super::events::Event;
use super::helper::HelperRun;
use super::lifecycle::Stdio;
use super::prespawn::Launch;
use super::{Daemon, Error};
use crate::monitor::{self, LogConfig};
use crate::timefmt::now_us;

/// How long the daemon waits for a monitor to report that the container started.
const START_TIMEOUT: Duration = Duration::from_secs(120);

impl Daemon {
    /// Starts a created or exited container. With `stdio`, the client's stdin is the
    /// container's and its output is copied to the client's stdout/stderr; without,
    /// stdin is /dev/null. The output always goes to the json-file log too. Returns once
    /// the command runs, or with the reason it could not start.
    pub async fn start(&self, name_or_id: &str, stdio: Option<Stdio>) -> Result<(), Error> {
        self.start_by_user(name_or_id, Launch::Now(stdio), false)
            .await
    }

    /// [`Daemon::start`] with the monitor spawned ahead (see [`super::prespawn`]).
    pub(crate) async fn start_launched(
        &self,
        name_or_id: &str,
        launch: Launch,
    ) -> Result<(), Error> {
        self.start_by_user(name_or_id, launch, false).await
    }

    /// Starts a container with logged output for a client that attaches right after:
    /// its monitor keeps the output and the exit code for that first client a while
    /// even when the command ends before the client is there.
    pub async fn start_for_attach(&self, name_or_id: &str) -> Result<(), Error> {
        self.start_by_user(name_or_id, Launch::Now(None), true)
            .await
    }

    /// A start a user asked for: it clears a stop by the user and the restart count.
    async fn start_by_user(
        &self,
        name_or_id: &str,
        launch: Launch,
        wait_attach: bool,
    ) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let _op = c.lock_op().await?;
        let s = c.snapshot().state;
        if s.stopped_by_user || s.restart_count != 0 {
            // Only when it changes: every update is an fsync'd write.
            c.update(|r| {
                r.state.stopped_by_user = false;
                r.state.restart_count = 0;
            })?;
        }
        self.start_locked_with(&c, launch, wait_attach).await
    }

    /// The start itself; the caller holds the container's op lock.
    pub(crate) async fn start_locked(
        &self,
        c: &Arc<Container>,
        stdio: Option<Stdio>,
    ) -> Result<(), Error> {
        self.start_locked_with(c, Launch::Now(stdio), false).await
    }

    async fn start_locked_with(
        &self,
        c: &Arc<Container>,
        launch: Launch,
        wait_attach: bool,
    ) -> Result<(), Error> {
        let started = self.start_attempt(c, launch, wait_attach).await;
        if started.is_err() && c.snapshot().state.status != Status::Running {
            // A start refused before it wrote the record (a `run` whose container
            // stays created) leaves no record file made ahead for it.
            c.drop_premade();
        }
        started
    }

    async fn start_attempt(
        &self,
        c: &Arc<Container>,
        launch: Launch,
        wait_attach: bool,
    ) -> Result<(), Error> {
        let (stdio, early) = match launch {
            Launch::Now(stdio) => (stdio, None),
            Launch::Early(e) => (None, Some(e)),
        };
        let client_stdio = match &early {
            Some(e) => e.client_stdio,
            None => stdio.is_some(),
        };
        crate::phase::mark("start");
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let rec = c.snapshot();
        if rec.state.status == Status::Running {
            return Err(Error::ContainerRunning(rec.name));
        }
        if rec.config.tty && client_stdio {
            return Err(Error::InvalidArgument(format!(
                "{} has a tty: start it without fds and use Attach",
                rec.name
            )));
        }
        // Always logged: a foreground run's output is also copied to the client's fds by
        // the monitor, so `logs` has it as docker's does.
        let (max_size, max_file) = rec.config.log_limits()?;
        let log = LogConfig {
            path: log_path(&c.dir),
            max_size,
            max_file,
        };
        // The default mapping joins the shared user namespace: no newuidmap per start.
        // (A monitor spawned ahead holds it already, or not.)
        let userns = if early.is_some() {
            None
        } else if crate::userns::shared::shares(rec.config.userns.as_deref()) {
            match self.shared_userns().await {
                Ok(fd) => Some(fd),
                Err(e) => {
                    tracing::warn!("{e}; {} gets a user namespace of its own", rec.name);
                    None
                }
            }
        } else {
            None
        };
        let shared = match &early {
            Some(e) => e.shared_userns,
            None => userns.is_some(),
        };
        // The shared network (`bridge`): its holder started on first use, an address
        // taken for this run (free again if the start fails); a container outside the
        // shared user namespace (skiffd could not make it) cannot join it.
        let lease = self.bridge_lease(c);
        let bridge = if super::network::mode_of(&rec) == crate::netns::Mode::Bridge {
            Some(if shared {
                self.shared_net_plan(c, &rec).await
            } else {
                Err("the container is not in the shared user namespace".into())
            })
        } else {
            None
        };
        let (bundle, ports) =
            match self.write_bundle(c, &rec, log, client_stdio, wait_attach, shared, bridge) {
                Ok(b) => b,
                // E.g. a published port in use: nothing ran; record why (and honour --rm,
                // in a task: we hold the op lock that remove takes).
                Err(e) => {
                    let _ = c.update(|r| r.state.error = e.to_string());
                    if rec.config.auto_remove {
                        let daemon = self.clone();
                        let id = rec.id.clone();
                        tokio::spawn(async move {
                            let _ = daemon.remove_with(&id, true, true).await;
                        });
                    }
                    return Err(e);
                }
            };
        crate::phase::mark("bundle-written");
        super::strays::crash_point("bundle-written");
        let (mut run, gate) = match early {
            Some(e) => (e.go().await?, None),
            None => {
                let stdio: super::helper::HelperStdio = match stdio {
                    Some(s) => [Some(s.stdin), Some(s.stdout), Some(s.stderr)],
                    None => [None, None, None],
                };
                // Under a user manager the monitor waits until it is in a scope of its own.
                let gate = super::scope::gate().await;
                let (child_end, gate) = match gate {
                    Some(g) => (Some(g.child_end), Some(g.open_end)),
                    None => (None, None),
                };
                let tag = format!("container {}", rec.id);
                let exe = self.inner.opts.monitor_exe.clone();
                let zygote = self.zygote().clone();
                let bundle = bundle.clone();
                // On a blocking thread: the zygote's round trip blocks.
                let run = tokio::task::spawn_blocking(move || {
                    let args = [std::ffi::OsStr::new("__monitor"), bundle.as_os_str()];
                    HelperRun::spawn_as(
                        &exe,
                        Some(std::ffi::OsStr::new(monitor::PROCESS_NAME)),
                        &args,
                        stdio,
                        None,
                        &tag,
                        child_end,
                        userns,
                        None,
                        Some(&zygote),
                    )
                })
                .await
                .map_err(|e| Error::Internal(format!("the monitor's spawn: {e}")))??;
                (run, gate)
            }
        };
        let monitor_pid = run.pid();
        crate::phase::mark("monitor-spawned");
        super::strays::crash_point("monitor-spawned");
        if let Some(open_end) = gate {
            super::scope::place(open_end, monitor_pid, &rec.id).await;
            crate::phase::mark("scope-placed");
        }
        let status = tokio::time::timeout(START_TIMEOUT, run.first())
            .await
            .ok()
            .flatten();
        match status {
            Some(monitor::Status::Started { pid }) => {
                crate::phase::mark("started-reported");
                super::strays::crash_point("container-started");
                self.mark_volumes_seeded(&rec);
                let fallback = super::network::fallback_of(&bundle);
                let rec = c.update_state(|r| {
                    r.state.status = Status::Running;
                    r.state.network_fallback = fallback;
                    r.state.pid = pid as u32;
                    r.state.monitor_pid = monitor_pid;
                    r.state.ports = ports;
                    r.state.started_at = now_us();
                    // As docker: a (re)start clears the last run's exit code.
                    r.state.exit_code = 0;
                    r.state.error.clear();
                })?;
                crate::phase::mark("running-recorded");
                lease.keep();
                // The next create's directory and bundle, once the client has its answer
                // (see `spare`): a detached start's now; one whose client waits for the
                // run's end at that end (`run_ended`), a `--rm` run's after its removal:
                // no inode is made while the command runs.
                if !(rec.config.auto_remove || client_stdio || wait_attach) {
                    self.refill_spares_after_answer();
                }
                self.emit(Event::new(
                    "container",
                    "start",
                    &rec.id,
                    &[("name", rec.name.clone())],
                ));
                let daemon = self.clone();
                let c = c.clone();
                tokio::spawn(async move {
                    let (code, status) = run.finish_with_status().await;
                    daemon.run_ended(c, code, monitor_death(status)).await;
                });
                Ok(())
            }
            Some(monitor::Status::Failed { code, message }) => {
                run.finish().await;
                self.run_ended(c.clone(), Some(code), message.clone()).await;
                Err(match code {
                    127 => Error::CommandNotFound(message),
                    126 => Error::CommandNotExecutable(message),
                    _ => Error::Runtime(message),
                })
            }
            _ => {
                run.abort().await;
                let msg = "the container monitor ended before the container started".to_string();
                self.run_ended(c.clone(), None, msg.clone()).await;
                Err(Error::Runtime(msg))
            }
        }
    }
}

/// Where a container's json-file log lives.
pub fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("container.log")
}

/// Why a monitor ended without reporting an exit code (empty when it ended normally).
fn monitor_death(status: Option<std::process::ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status.and_then(|s| s.signal()) {
        Some(signo) => {
            let name = nix::sys::signal::Signal::try_from(signo)
                .map(|s| s.as_str().to_string())
                .unwrap_or_else(|_| format!("signal {signo}"));
            format!(
                "the container's monitor was killed by {name}: the container was killed with it"
            )
        }
        None => String::new(),
    }
}
