//! `pause` and `unpause`: freezing a running container's cgroup (`cgroup.freeze`, see
//! `crate::cgroup`) and thawing it. Only a container with a cgroup of its own can be
//! frozen: one started while skiffd ran under a systemd user manager. A paused container
//! is thawed before `stop` sends its stop signal (a frozen process cannot act on it).

use std::path::PathBuf;
use std::time::Duration;

use super::container::{Container, Status};
use super::events::Event;
use super::{Daemon, Error};
use crate::cgroup;

/// How long the kernel gets to freeze or thaw every process.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

impl Daemon {
    /// The running container's cgroup, or why it has none.
    fn freezable(&self, c: &Container) -> Result<PathBuf, Error> {
        let rec = c.snapshot();
        if c.is_removed() {
            return Err(Error::NoSuchContainer(rec.name));
        }
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        cgroup::container_cgroup(&rec.id, rec.state.pid).ok_or_else(|| {
            Error::NotSupported(format!(
                "cannot pause {}: it has no cgroup of its own to freeze (cgroup v2's \
                 cgroup.freeze). Containers get one (skiff-<id>.scope) when skiffd runs as a \
                 systemd user service on a host with cgroup v2: systemctl --user start skiffd \
                 (see systemd/README.md), then start the container again",
                rec.name
            ))
        })
    }

    async fn set_frozen(&self, dir: PathBuf, frozen: bool) -> Result<(), Error> {
        tokio::task::spawn_blocking(move || cgroup::freeze(&dir, frozen, FREEZE_TIMEOUT))
            .await
            .map_err(|e| Error::Internal(format!("freeze task: {e}")))?
            .map_err(|e| Error::Runtime(e.to_string()))
    }

    /// Freezes every process of a running container (`pause` event).
    pub async fn pause(&self, name_or_id: &str) -> Result<(), Error> {
        self.set_paused(name_or_id, true).await
    }

    /// Thaws a paused container (`unpause` event).
    pub async fn unpause(&self, name_or_id: &str) -> Result<(), Error> {
        self.set_paused(name_or_id, false).await
    }

    /// Pause (`pause` true) or unpause: freezes or thaws the container's cgroup, records
    /// it, emits the event. An unpause also thaws a cgroup frozen behind skiff's back.
    async fn set_paused(&self, name_or_id: &str, pause: bool) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let _op = c.lock_op().await?;
        let dir = self.freezable(&c)?;
        let rec = c.snapshot();
        let nothing_to_do = if pause {
            rec.state.paused
        } else {
            !rec.state.paused && !cgroup::is_frozen(&dir)
        };
        if nothing_to_do {
            let state = if pause {
                "already paused"
            } else {
                "not paused"
            };
            return Err(Error::InvalidArgument(format!(
                "container {} is {state}",
                rec.name
            )));
        }
        self.set_frozen(dir, pause).await?;
        let rec = c.update(|r| r.state.paused = pause)?;
        let action = if pause { "pause" } else { "unpause" };
        self.emit(Event::new(
            "container",
            action,
            &rec.id,
            &[("name", rec.name)],
        ));
        Ok(())
    }

    /// Before a stop: thaws a paused container so that it can act on its stop signal.
    pub(crate) async fn thaw_for_stop(&self, c: &Container) -> Result<(), Error> {
        if !c.snapshot().state.paused {
            return Ok(());
        }
        if let Ok(dir) = self.freezable(c) {
            self.set_frozen(dir, false).await?;
        }
        let rec = c.update(|r| r.state.paused = false)?;
        self.emit(Event::new(
            "container",
            "unpause",
            &rec.id,
            &[("name", rec.name)],
        ));
        Ok(())
    }
}
