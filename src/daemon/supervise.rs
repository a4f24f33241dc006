//! Starting containers under their monitors, following them to their end, restarting
//! them by policy, and finding them again after a daemon restart.
//!
//! The monitor (`skiff-monitor __monitor BUNDLE`, see [`super::Options`]) runs in its own
//! session, so a daemon that dies or restarts leaves it and its container running. While
//! the daemon lives it follows the monitor through its status pipe; a new daemon finds the
//! monitor through the lock it holds on its bundle ([`crate::monitor::lock`]; a holder
//! that the record does not name is ended, see [`super::strays`]), waits on a pidfd, and
//! reads the exit from the bundle's exit file — also when the container ended while no
//! daemon was running. The container's init dies with its monitor (PR_SET_PDEATHSIG).

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::container::{Container, Status};
use super::events::Event;
use super::helper::HelperRun;
use super::lifecycle::Stdio;
use super::prespawn::Launch;
use super::restart::next_delay;
use super::{Daemon, Error};
use crate::monitor::{self, ExitRecord, LogConfig};
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
        // The shared network (`bridge`): its holder started on first use; a container
        // outside the shared user namespace (skiffd could not make it) cannot join it.
        let bridge = if super::network::mode_of(&rec) == crate::netns::Mode::Bridge {
            Some(if shared {
                self.shared_net_plan(rec.network_addr).await
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
                let args = [std::ffi::OsStr::new("__monitor"), bundle.as_os_str()];
                // Under a user manager the monitor waits until it is in a scope of its own.
                let gate = super::scope::gate().await;
                let (child_end, gate) = match gate {
                    Some(g) => (Some(g.child_end), Some(g.open_end)),
                    None => (None, None),
                };
                let tag = format!("container {}", rec.id);
                let run = HelperRun::spawn_as(
                    &self.inner.opts.monitor_exe,
                    Some(std::ffi::OsStr::new(monitor::PROCESS_NAME)),
                    &args,
                    stdio,
                    None,
                    &tag,
                    child_end,
                    userns,
                    None,
                )?;
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
                // While the command runs (its client waits): the next create's directory
                // and bundle (see `spare`; nothing when they are there). A `--rm` run's
                // removal makes them, after its client's answer: no inode made meanwhile.
                if !rec.config.auto_remove {
                    self.refill_spare();
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

    /// Records the end of a run: the exit code (from the status pipe, else the exit
    /// file), `die`; then auto-remove, or a restart by policy after the backoff.
    pub(crate) async fn run_ended(&self, c: Arc<Container>, code: Option<i32>, error: String) {
        if c.is_removed() {
            return;
        }
        crate::phase::mark("run-ended");
        let id = c.id();
        let from_file = read_exit_file(&monitor::exit_path(&self.bundle_dir(&id)));
        let (code, error, finished) = match (code, from_file) {
            // The monitor's reason (e.g. it was told to end) unless ours says more.
            (Some(code), Some(f)) if error.is_empty() => (code, f.error, f.finished_at),
            (Some(code), f) => (code, error, f.map(|f| f.finished_at).unwrap_or_else(now_us)),
            (None, Some(f)) => (f.exit_code, f.error, f.finished_at),
            (None, None) if !error.is_empty() => (125, error, now_us()),
            (None, None) => (
                125,
                "the container monitor died without recording an exit".into(),
                now_us(),
            ),
        };
        let before = c.snapshot();
        if super::network::mode_in_use(&before) == crate::netns::Mode::Bridge
            && before
                .state
                .ports
                .iter()
                .any(|m| m.proto == crate::netns::Proto::Udp)
        {
            self.drop_bridge_forwards(before.network_addr).await;
        }
        let ran_for = Duration::from_micros(finished.saturating_sub(before.state.started_at));
        let change = |r: &mut super::container::Record| {
            r.state.status = Status::Exited;
            r.state.paused = false;
            r.state.pid = 0;
            r.state.monitor_pid = 0;
            r.state.exit_code = code;
            r.state.finished_at = finished;
            r.state.error = error;
            r.state.exits += 1;
        };
        // A --rm container's directory goes to the trash next: its record need not be
        // written (see `update_in_memory`).
        let recorded = if before.config.auto_remove {
            c.update_in_memory(change)
        } else {
            c.update_state(change)
        };
        let rec = match recorded {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!("recording the exit of {id}: {e}");
                c.snapshot()
            }
        };
        crate::phase::mark("exit-recorded");
        super::strays::crash_point("exit-recorded");
        self.emit(Event::new(
            "container",
            "die",
            &id,
            &[("name", rec.name.clone()), ("exitCode", code.to_string())],
        ));
        if rec.config.auto_remove {
            // In a task of its own: the start that failed may hold the op lock.
            let daemon = self.clone();
            tokio::spawn(async move {
                crate::phase::mark("auto-remove");
                match daemon.auto_remove(&id).await {
                    Ok(()) => crate::phase::mark("auto-removed"),
                    Err(Error::NoSuchContainer(_)) => {}
                    Err(e) => tracing::error!("auto-removing {id}: {e}"),
                }
            });
            return;
        }
        let policy = rec.config.restart_policy().unwrap_or_default();
        if !policy.should_restart(code, rec.state.restart_count, rec.state.stopped_by_user) {
            return;
        }
        let delay = {
            let mut b = match c.backoff.lock() {
                Ok(g) => g,
                Err(p) => p.into_inner(),
            };
            let d = next_delay(*b, ran_for);
            *b = Some(d);
            d
        };
        let daemon = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let Ok(_op) = c.lock_op().await else {
                return; // removed meanwhile
            };
            let now = c.snapshot();
            // Stopped, removed or started by someone else meanwhile: nothing to do.
            if now.state.stopped_by_user
                || now.state.status != Status::Exited
                || daemon.lookup(&now.id).is_err()
            {
                return;
            }
            if let Err(e) = c.update(|r| r.state.restart_count += 1) {
                tracing::error!("restarting {}: {e}", now.name);
                return;
            }
            tracing::info!(
                "restarting {} (policy {}, after {:?})",
                now.name,
                policy,
                delay
            );
            if let Err(e) = daemon.start_boxed(c.clone()).await {
                tracing::warn!("restart of {} failed: {e}", now.name);
            }
        });
    }

    /// `start_locked` as a boxed future: the restart manager starts containers from the
    /// task that followed their previous run, and the box breaks that type cycle.
    fn start_boxed(
        &self,
        c: Arc<Container>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>> {
        let daemon = self.clone();
        Box::pin(async move { daemon.start_locked(&c, None).await })
    }

    /// After a daemon start: follows containers whose monitors still run, ends what runs
    /// of a container without its record saying so (a start the previous daemon did not
    /// live to record), records the exits that happened while no daemon ran, and starts
    /// `always`/`unless-stopped` containers.
    pub(crate) fn adopt(&self, c: Arc<Container>) {
        let rec = c.snapshot();
        let daemon = self.clone();
        let bundle = self.bundle_dir(&rec.id);
        tokio::spawn(async move {
            let running = rec.state.status == Status::Running;
            match super::strays::find_monitor(&bundle, rec.state.monitor_pid, running) {
                super::strays::Found::Ours(fd) => {
                    tracing::info!(
                        "re-adopted running container {} (monitor {})",
                        rec.name,
                        rec.state.monitor_pid
                    );
                    wait_pidfd(fd).await;
                    daemon.run_ended(c, None, String::new()).await;
                    return;
                }
                super::strays::Found::Stray(pid) => {
                    tracing::warn!(
                        "container {}: monitor {pid} runs but its record does not say so: ending it",
                        rec.name
                    );
                    daemon.end_strays(&rec.id).await;
                    let why = "skiffd stopped while starting the container; the start was undone when skiffd started again";
                    if running {
                        daemon.run_ended(c, Some(125), why.into()).await;
                    } else if let Err(e) = c.update(|r| r.state.error = why.into()) {
                        tracing::error!("recording the undone start of {}: {e}", rec.name);
                    }
                    return;
                }
                super::strays::Found::None if running => {
                    tracing::info!("container {} ended while skiffd was down", rec.name);
                    daemon.run_ended(c, None, String::new()).await;
                    return;
                }
                super::strays::Found::None => {}
            }
            let policy = rec.config.restart_policy().unwrap_or_default();
            if policy.start_on_daemon_start(rec.state.stopped_by_user)
                && rec.state.status != Status::Created
            {
                let Ok(_op) = c.lock_op().await else { return };
                if let Err(e) = daemon.start_boxed(c.clone()).await {
                    tracing::warn!("starting {} (restart policy {policy}): {e}", rec.name);
                }
            }
        });
    }
}

impl Daemon {
    /// A connection to the running container's attach socket (served by its monitor),
    /// for the client to use directly: the daemon stays out of the data path.
    pub fn attach(&self, name_or_id: &str) -> Result<OwnedFd, Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if rec.state.status != Status::Running {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        let path = monitor::attach::socket_path(&self.bundle_dir(&rec.id));
        monitor::attach::connect(&path).map_err(|e| match e {
            nix::errno::Errno::ENOENT | nix::errno::Errno::ECONNREFUSED => {
                Error::InvalidArgument(format!(
                    "{} has no attach socket (its monitor is gone or older than this skiffd)",
                    rec.name
                ))
            }
            e => Error::Runtime(format!("connect to the monitor of {}: {e}", rec.name)),
        })
    }

    /// Sets the window size of a tty container's pty: now when it runs, else as the size
    /// its next start gives the pty before the command runs (docker's ConsoleSize).
    pub fn resize(&self, name_or_id: &str, rows: u16, cols: u16) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if !rec.config.tty {
            return Err(Error::InvalidArgument(format!(
                "{} has no tty to resize (create it with -t)",
                rec.name
            )));
        }
        if rec.state.status != Status::Running {
            if rec.config.console_size != Some([rows, cols]) {
                c.update(|r| r.config.console_size = Some([rows, cols]))?;
            }
            return Ok(());
        }
        let fd = self.attach(name_or_id)?;
        let send = |p: &monitor::attach::Packet| {
            monitor::attach::send(&fd, p).map_err(|e| Error::Runtime(format!("resize: {e}")))
        };
        send(&monitor::attach::Packet::Hello { flags: 0 })?;
        send(&monitor::attach::Packet::Resize { rows, cols })?;
        // Read the monitor's answer to the Hello before closing: closing a SEQPACKET
        // socket with unread data resets the peer (ECONNRESET), and the monitor's next
        // recv then fails before it reads the Resize, which was lost that way.
        let mut pfd = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&fd),
            nix::poll::PollFlags::POLLIN,
        )];
        if let Ok(n) = nix::poll::poll(&mut pfd, nix::poll::PollTimeout::from(2000u16)) {
            if n > 0 {
                let _ = monitor::attach::recv(&fd, nix::sys::socket::MsgFlags::MSG_DONTWAIT);
            }
        }
        Ok(())
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

/// Waits until the process behind a pidfd exits.
async fn wait_pidfd(fd: OwnedFd) {
    // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same descriptor
    // for the AsyncFd's whole life.
    match unsafe {
        tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
    } {
        Ok(afd) => {
            let _ = afd.readable().await;
        }
        Err(e) => {
            tracing::warn!("cannot watch a monitor: {e}");
        }
    }
}

/// Reads a monitor's exit file.
pub(crate) fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

impl Daemon {
    /// Loads the containers on disk; corrupt entries are reported and skipped (their files
    /// stay for the user to look at), leftovers of interrupted creates and removes are
    /// collected, running containers are re-adopted.
    pub(crate) fn load_containers(&self) {
        let root = self.inner.opts.paths.containers();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("reading {}: {e}", root.display());
                return;
            }
        };
        // Before anything makes a new spare (the first create).
        let mut leftovers = self.stale_spares();
        let mut loaded = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with(".tmp-") || name.starts_with(".rm-") {
                leftovers.push(path);
                continue;
            }
            match Container::load(&path) {
                Ok(c) => {
                    let c = Arc::new(c);
                    self.lock().insert(c.id(), c.clone());
                    loaded.push(c);
                }
                // A `--rm` container's records are not all fsync'd: a crash of the
                // machine can tear one, and the container was to be removed anyway.
                Err(e) if Container::is_auto_remove_dir(&path) => {
                    tracing::warn!("collecting --rm container {name}: {e}");
                    leftovers.push(path);
                }
                Err(e) => tracing::error!("skipping container {name}: {e}"),
            }
        }
        for c in loaded {
            self.adopt(c);
        }
        if !leftovers.is_empty() {
            let daemon = self.clone();
            tokio::spawn(async move {
                for p in leftovers {
                    tracing::info!("collecting leftover {}", p.display());
                    daemon.remove_tree(&p).await;
                }
            });
        }
    }
}
