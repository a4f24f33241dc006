//! The end of a run: its exit recorded (from the monitor's status pipe, else the exit
//! file the monitor wrote), `die` emitted, then the container auto-removed, or restarted
//! by its policy after the backoff ([`super::restart`]).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use super::container::{Container, Status};
use super::events::Event;
use super::restart::next_delay;
use super::{Daemon, Error};
use crate::monitor::{self, ExitRecord};
use crate::timefmt::now_us;

impl Daemon {
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
        self.bridge_run_ended(&c, &before).await;
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
        if !rec.config.auto_remove {
            // Its waiters (a foreground client: `Wait`, the `die` event) have their
            // answer: the spares its start took are made now (see `spare`; nothing when
            // they are there). A `--rm` run's removal makes them.
            self.refill_spares_after_answer();
        }
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
    pub(super) fn start_boxed(
        &self,
        c: Arc<Container>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), Error>> + Send>> {
        let daemon = self.clone();
        Box::pin(async move { daemon.start_locked(&c, None).await })
    }
}

/// Reads a monitor's exit file.
pub(crate) fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}
