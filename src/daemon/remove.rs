//! Removing a container (`rm`, `rm -f -v`, `run --rm`'s removal after the run) and the
//! trees it leaves, which may hold files owned by subordinate ids.

use std::path::Path;
use std::process::Stdio as StdStdio;

use super::container::Status;
use super::events::Event;
use super::{Daemon, Error};
use crate::fsutil;

impl Daemon {
    /// Removes a container; a running one only with `force` (it is killed first).
    ///
    /// Under the container's operation lock, the container is first marked removed (so
    /// every operation that waited for the lock answers `NoSuchContainer`, and nothing
    /// writes its record again), then taken out of the table and its directory out of the
    /// store, then torn down.
    pub async fn remove(&self, name_or_id: &str, force: bool) -> Result<(), Error> {
        self.remove_with(name_or_id, force, false).await
    }

    /// [`Daemon::remove`], and with `volumes` its anonymous volumes too (`rm -v`).
    pub async fn remove_with(
        &self,
        name_or_id: &str,
        force: bool,
        volumes: bool,
    ) -> Result<(), Error> {
        self.remove_inner(name_or_id, force, volumes, false).await
    }

    /// `run --rm`'s removal after the run: as `rm -f -v`, but once the container is out
    /// of the table and its directory in the trash (`.rm-ID`, swept at start-up) and its
    /// anonymous volumes are gone, waiters (`Wait("removed")`, the CLI) are answered;
    /// the files go in the background, and `destroy` is sent when they are gone.
    pub(crate) async fn auto_remove(&self, id: &str) -> Result<(), Error> {
        self.remove_inner(id, true, true, true).await
    }

    async fn remove_inner(
        &self,
        name_or_id: &str,
        force: bool,
        volumes: bool,
        background: bool,
    ) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let _op = c.lock_op().await?;
        let rec = c.snapshot();
        if rec.state.status == Status::Running {
            if !force {
                return Err(Error::ContainerRunning(rec.name));
            }
            let _ = self.send_signal(&c, libc::SIGKILL);
            super::container::wait_for(c.watch(), super::WaitCondition::NotRunning).await;
        }
        // Whatever still runs of it (a start the daemon did not see through): ended.
        self.end_strays(&rec.id).await;
        // Its address on the shared network, should a start have left it (its end frees it).
        self.release_bridge_addr(&c, false);
        c.begin_removal();
        self.lock().remove(&rec.id, &rec.name);
        // Take the directory out of the store first: a crash after this leaves a `.rm-`
        // leftover, collected at start-up, never a half-removed container.
        let root = self.inner.opts.paths.containers();
        let doomed = root.join(format!(".rm-{}", rec.id));
        let renamed = std::fs::rename(&c.dir, &doomed).is_ok();
        if background {
            if volumes {
                self.remove_anonymous_volumes(&rec).await;
            }
            c.mark_removed();
            let daemon = self.clone();
            let bundle = self.bundle_dir(&rec.id);
            let rt = tokio::runtime::Handle::current();
            // At a low priority: the client answered next (the CLI) exits first.
            super::spare::run_in_background("removal", move || {
                let _ = fsutil::sync_dir(&root);
                // Its files become the next first start's (no inode made on its path).
                daemon.give_back_bundle(&bundle);
                // Files of subordinate ids need the user namespace: `remove_tree`.
                if renamed && std::fs::remove_dir_all(&doomed).is_err() {
                    rt.block_on(daemon.remove_tree(&doomed));
                }
                daemon.emit(Event::new(
                    "container",
                    "destroy",
                    &rec.id,
                    &[("name", rec.name.clone())],
                ));
                // The next create's directory, if this one took the spare (see `spare`).
                daemon.inner.spare.refill();
            });
            return Ok(());
        }
        let _ = fsutil::sync_dir(&root);
        let _ = std::fs::remove_dir_all(self.bundle_dir(&rec.id));
        if renamed {
            self.remove_tree(&doomed).await;
        }
        c.mark_removed();
        self.emit(Event::new(
            "container",
            "destroy",
            &rec.id,
            &[("name", rec.name.clone())],
        ));
        if volumes {
            self.remove_anonymous_volumes(&rec).await;
        }
        Ok(())
    }

    /// Removes a directory tree that may hold files owned by subordinate ids: first as
    /// ourselves (fast, and enough when the container wrote nothing), else from inside
    /// the user namespace.
    pub(crate) async fn remove_tree(&self, path: &Path) {
        let p = path.to_path_buf();
        let direct = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&p)).await;
        if matches!(direct, Ok(Ok(()))) {
            return;
        }
        let mut cmd = match super::helper::maps_command(
            &self.inner.opts.exe,
            "__remove",
            &self.inner.maps_json,
            "remove",
        ) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("removing {}: {e}", path.display());
                return;
            }
        };
        let out = cmd.arg(path).stdin(StdStdio::null()).output().await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::error!(
                "removing {}: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::error!("removing {}: {e}", path.display()),
        }
    }
}
