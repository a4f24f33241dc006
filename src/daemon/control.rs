//! Controlling running containers: kill, stop (stop signal, then SIGKILL after the
//! timeout), restart, rename.

use std::sync::Arc;
use std::time::Duration;

use nix::sys::signal::Signal;

use super::config::validate_name;
use super::container::{wait_for, Container, Status};
use super::events::Event;
use super::{Daemon, Error, WaitCondition};

/// docker's default stop timeout.
pub const DEFAULT_STOP_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// Sends `signal` to the container's init (no event, no checks of the caller).
    pub(crate) fn signal(&self, c: &Container, signal: i32) -> Result<(), Error> {
        let rec = c.snapshot();
        if c.is_removed() {
            return Err(Error::NoSuchContainer(rec.name));
        }
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal number {signal}")))?;
        if sig == Signal::SIGKILL {
            // The whole container, frozen or not: every process in its cgroup.
            if let Some(dir) = crate::cgroup::container_cgroup(&rec.id, rec.state.pid) {
                if let Err(e) = crate::cgroup::kill(&dir) {
                    tracing::warn!("{}: {e}; killing its init only", rec.name);
                }
            }
        }
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.state.pid as i32), sig) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(Error::Runtime(format!("kill {}: {e}", rec.name))),
        }
    }

    /// Sends `signal` to the container's main process (`kill` event).
    pub fn kill(&self, name_or_id: &str, signal: i32) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        self.send_signal(&c, signal)
    }

    /// SIGKILLs container `id` for a client that left the bus (RunContainer's
    /// kill-on-disconnect). A start under way holds the container's operation lock, so
    /// the kill waits for it; a container still `created` (RunContainer starts it right
    /// after creating it, and the client may be gone before) is killed once that start
    /// has run. A plain kill at the moment the client left could come before the start
    /// and be lost, leaving the container running for nobody.
    pub async fn kill_for_departed_client(&self, id: &str) {
        let Ok(c) = self.lookup(id) else {
            return;
        };
        let mut changes = c.watch();
        loop {
            {
                let Ok(_op) = c.lock_op().await else {
                    return;
                };
                if self.send_signal(&c, libc::SIGKILL).is_ok()
                    || c.snapshot().state.status != Status::Created
                {
                    return;
                }
            }
            // Not started yet: wait for the start (or give up if none comes).
            match tokio::time::timeout(Duration::from_secs(60), changes.changed()).await {
                Ok(Ok(())) => {}
                _ => return,
            }
        }
    }

    /// [`Daemon::signal`] plus the `kill` event docker emits.
    pub(crate) fn send_signal(&self, c: &Container, signal: i32) -> Result<(), Error> {
        self.signal(c, signal)?;
        let rec = c.snapshot();
        self.emit(Event::new(
            "container",
            "kill",
            &rec.id,
            &[("name", rec.name), ("signal", signal.to_string())],
        ));
        Ok(())
    }

    /// Stops a container: its stop signal, then SIGKILL once `timeout` (default: the
    /// container's stop-timeout, else 10 s) has passed. A stopped container is never
    /// restarted by its policy. Stopping a stopped container is not an error.
    pub async fn stop(&self, name_or_id: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let _op = c.lock_op().await?;
        self.stop_locked(&c, timeout).await
    }

    async fn stop_locked(
        &self,
        c: &Arc<Container>,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        let rec = c.update(|r| r.state.stopped_by_user = true)?;
        if rec.state.status != Status::Running {
            return Ok(());
        }
        let timeout = timeout
            .or(rec.config.stop_timeout.map(Duration::from_secs))
            .unwrap_or(DEFAULT_STOP_TIMEOUT);
        let sig = rec.config.stop_signal.unwrap_or(libc::SIGTERM);
        self.thaw_for_stop(c).await?;
        let exited = wait_for(c.watch(), WaitCondition::NotRunning);
        self.send_signal(c, sig)?;
        tokio::pin!(exited);
        if tokio::time::timeout(timeout, &mut exited).await.is_err() {
            tracing::info!("{} did not stop within {timeout:?}: SIGKILL", rec.name);
            let _ = self.send_signal(c, libc::SIGKILL);
            exited.await;
        }
        self.emit(Event::new(
            "container",
            "stop",
            &rec.id,
            &[("name", rec.name)],
        ));
        Ok(())
    }

    /// Stops (if running) and starts a container again (`restart` event).
    pub async fn restart(&self, name_or_id: &str, timeout: Option<Duration>) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let _op = c.lock_op().await?;
        self.stop_locked(&c, timeout).await?;
        c.update(|r| {
            r.state.stopped_by_user = false;
            r.state.restart_count = 0;
        })?;
        self.start_locked(&c, None).await?;
        let rec = c.snapshot();
        self.emit(Event::new(
            "container",
            "restart",
            &rec.id,
            &[("name", rec.name)],
        ));
        Ok(())
    }

    /// Renames a container (`rename` event, with `oldName`).
    pub fn rename(&self, name_or_id: &str, new_name: &str) -> Result<(), Error> {
        validate_name(new_name)?;
        let c = self.lookup(name_or_id)?;
        let old = {
            let mut map = self.lock();
            if let Some(o) = map.by_name(new_name).filter(|o| !Arc::ptr_eq(o, &c)) {
                return Err(Error::NameInUse {
                    name: new_name.to_string(),
                    holder: o.id(),
                });
            }
            let (id, old) = c.id_and_name();
            c.update(|r| r.name = new_name.to_string())?;
            map.rename(&id, &old, new_name);
            old
        };
        self.emit(Event::new(
            "container",
            "rename",
            &c.id(),
            &[("name", new_name.to_string()), ("oldName", old)],
        ));
        Ok(())
    }
}
