//! The monitor of a `RunContainer` spawned while the container is created.
//!
//! A run's monitor used to be spawned once the bundle was written; its spawn (a fork
//! from the monitor zygote, or a vfork and exec of the monitor's binary, its dynamic
//! loader and relocations)
//! were on the start's path, after the create. Now `RunContainer` picks the container's
//! id first and spawns the monitor on its bundle's path (the same command line as ever),
//! on a blocking thread, while the create runs on ours; the monitor waits on a pipe
//! ([`crate::monitor::handoff`]) until the start says the bundle is written.
//! Everything after that is as for any start.
//!
//! If the run fails before (a name in use, a bad config, no image), the pipe closes
//! without a path and the monitor exits having touched nothing; dropping the
//! [`HelperRun`] also kills and reaps it. Under a user manager (the monitor must be
//! placed in its container's scope, named by the id) and for attached runs the monitor
//! is spawned at the start as before.

use std::ffi::OsStr;
use std::io::Write;
use std::os::fd::OwnedFd;

use super::config::ContainerConfig;
use super::helper::{HelperRun, HelperStdio};
use super::lifecycle::Stdio;
use super::{Daemon, Error};
use crate::monitor;

/// How a start gets its monitor.
pub enum Launch {
    /// Spawned by the start, with the client's fds (if any).
    Now(Option<Stdio>),
    /// Spawned ahead (see [`Daemon::prespawn_monitor`]).
    Early(Early),
}

/// A monitor being spawned or spawned, waiting for its bundle.
pub struct Early {
    spawned: tokio::task::JoinHandle<Result<Waiting, Error>>,
    /// The client's fds were given to the monitor.
    pub(crate) client_stdio: bool,
    /// The monitor holds the shared user namespace.
    pub(crate) shared_userns: bool,
}

struct Waiting {
    run: HelperRun,
    go: OwnedFd,
}

impl Early {
    /// Tells the monitor its bundle is written: it starts the container from there.
    pub(crate) async fn go(self) -> Result<HelperRun, Error> {
        let w = self
            .spawned
            .await
            .map_err(|e| Error::Internal(format!("the monitor's spawn: {e}")))??;
        let mut pipe = std::fs::File::from(w.go);
        pipe.write_all(b"g")
            .map_err(|e| Error::Runtime(format!("cannot tell the monitor to start: {e}")))?;
        drop(pipe);
        Ok(w.run)
    }
}

impl Daemon {
    /// Spawns the monitor of container `id`, which `cfg` is about to create and start, on a
    /// blocking thread. Gives `stdio` back when the monitor is better spawned by the
    /// start (under a user manager, without id maps, or when the shared user namespace
    /// cannot be had: the start then reports or handles that as ever).
    pub(crate) async fn prespawn_monitor(
        &self,
        id: &str,
        cfg: &ContainerConfig,
        stdio: Option<Stdio>,
    ) -> Result<Early, Option<Stdio>> {
        if self.inner.preflight.is_err() || super::scope::gate().await.is_some() {
            return Err(stdio);
        }
        let shared_userns = crate::userns::shared::shares(cfg.userns.as_deref());
        let userns = if shared_userns {
            match self.shared_userns().await {
                Ok(fd) => Some(fd),
                Err(_) => return Err(stdio),
            }
        } else {
            None
        };
        let client_stdio = stdio.is_some();
        let exe = self.inner.opts.monitor_exe.clone();
        let bundle = self.bundle_dir(id);
        let tag = format!("container {id}");
        let zygote = self.zygote().clone();
        let spawned = tokio::task::spawn_blocking(move || {
            let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
            let stdio: HelperStdio = match stdio {
                Some(s) => [Some(s.stdin), Some(s.stdout), Some(s.stderr)],
                None => [None, None, None],
            };
            let args = [OsStr::new("__monitor"), bundle.as_os_str()];
            let run = HelperRun::spawn_as(
                &exe,
                Some(OsStr::new(monitor::PROCESS_NAME)),
                &args,
                stdio,
                None,
                &tag,
                None,
                userns,
                Some(r),
                Some(&zygote),
            )?;
            Ok(Waiting { run, go: w })
        });
        Ok(Early {
            spawned,
            client_stdio,
            shared_userns,
        })
    }
}
