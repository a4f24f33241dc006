//! skiffd's side of the shared user namespace (see [`crate::userns::shared`]): made at
//! the first start of a container with the default mapping, kept as a descriptor for the
//! daemon's life, and passed to each such container's monitor.

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::{Daemon, Error};
use crate::fdutil;
use crate::userns::IdMaps;

/// The namespace, once made.
#[derive(Default)]
pub(crate) struct SharedUserns(tokio::sync::Mutex<Option<OwnedFd>>);

impl Daemon {
    /// A copy of the shared user namespace's descriptor (close-on-exec), for a monitor:
    /// made with the daemon's id maps on first use.
    pub(crate) async fn shared_userns(&self) -> Result<OwnedFd, Error> {
        let mut held = self.inner.shared_userns.0.lock().await;
        if held.is_none() {
            // A shared network left by a previous skiffd holds the namespace its
            // containers run in: take that one, so new containers join their network.
            let fd = match self.readopt_shared_net().await {
                Some(fd) => fd,
                None => {
                    let fd = make(&self.inner.opts.exe, &self.inner.maps).await?;
                    tracing::info!("made the shared user namespace for default-mapped containers");
                    fd
                }
            };
            *held = Some(fd);
        }
        match held.as_ref() {
            Some(fd) => fd
                .as_fd()
                .try_clone_to_owned()
                .map_err(|e| Error::Internal(format!("dup of the shared user namespace: {e}"))),
            None => Err(Error::Internal("the shared user namespace vanished".into())),
        }
    }
}

/// Runs `exe __userns`, opens its new user namespace, writes `maps` for it
/// (newuidmap/newgidmap) and lets it exit: the returned descriptor keeps the namespace.
async fn make(exe: &Path, maps: &IdMaps) -> Result<OwnedFd, Error> {
    let fail =
        |what: String| Error::Runtime(format!("cannot make the shared user namespace: {what}"));
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("__userns")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG")
        .kill_on_drop(true);
    let mut fds = Vec::new();
    if let Some(log) = crate::logging::for_helper(cmd.as_std_mut(), "userns") {
        fds.push(log);
    }
    fdutil::pass_fds(&mut cmd, fds);
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("{}: {e}", exe.display())))?;
    let pid = child
        .id()
        .ok_or_else(|| fail("the helper ended at once".into()))?;
    let mut out = child
        .stdout
        .take()
        .ok_or_else(|| fail("no stdout pipe".into()))?;
    let mut ready = [0u8; 1];
    if out.read_exact(&mut ready).await.is_err() {
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        let _ = child.wait().await;
        return Err(fail(format!("the helper failed: {}", err.trim())));
    }
    // The helper waits on its stdin, so `pid` is still it (alive, not reaped).
    let ns_path = format!("/proc/{pid}/ns/user");
    let ns = std::fs::File::open(&ns_path).map_err(|e| fail(format!("{ns_path}: {e}")))?;
    let own = std::fs::metadata("/proc/self/ns/user").map_err(|e| fail(e.to_string()))?;
    let theirs = ns.metadata().map_err(|e| fail(e.to_string()))?;
    if own.ino() == theirs.ino() && own.dev() == theirs.dev() {
        return Err(fail(
            "the helper did not leave skiffd's user namespace".into(),
        ));
    }
    let maps = maps.clone();
    let applied = tokio::task::spawn_blocking(move || maps.apply(pid as i32))
        .await
        .map_err(|e| fail(e.to_string()))?;
    // Closing its stdin ends the helper.
    drop(child.stdin.take());
    let _ = child.wait().await;
    applied.map_err(|e| Error::IdMapping(e.to_string()))?;
    Ok(OwnedFd::from(ns))
}
