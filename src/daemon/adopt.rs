//! After a daemon start: the containers on disk loaded, and each one's monitor found
//! again through the lock it holds on its bundle ([`crate::monitor::lock`]; a holder
//! that the record does not name is ended, see [`super::strays`]) and waited for on a
//! pidfd; the exit is read from the bundle's exit file, also when the container ended
//! while no daemon was running.

use std::os::fd::OwnedFd;
use std::sync::Arc;

use super::container::{Container, Status};
use super::Daemon;

impl Daemon {
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
                    // Files made ahead for a start an earlier skiffd did not see through
                    // (nothing writes the record yet): none is kept.
                    c.drop_premade();
                    let c = Arc::new(c);
                    let (id, name) = c.id_and_name();
                    self.lock().insert(&id, &name, c.clone());
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
