//! `skiff cp` in the backend: runs the `__cp` helper (see `crate::cp`) on the client's
//! stream, for a running container in its namespaces, for a stopped one on its rootfs
//! mounted for the copy. Nothing of the tree is stored in the daemon: the helper reads
//! or writes the client's descriptor itself.

use std::os::fd::OwnedFd;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::container::Status;
use super::{Daemon, Error};
use crate::cp::{CpSpec, Direction, Mode, Outcome, Target};
use crate::fdutil;
use crate::runtime::RootfsPlan;

/// The most the helper may say on stderr (its outcome, or a panic message).
const MAX_REPORT: u64 = 1 << 20;

/// How long a container that could not be entered may take to be seen stopped.
const GONE_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

impl Daemon {
    /// Extracts the tar read from `input` at `path` in the container, placed as `mode`
    /// says. Returns the warnings (entries skipped).
    pub async fn copy_to(
        &self,
        name_or_id: &str,
        input: OwnedFd,
        path: &str,
        mode: Mode,
    ) -> Result<Vec<String>, Error> {
        let direction = Direction::To {
            path: path.to_string(),
            mode,
        };
        self.copy(name_or_id, direction, Some(input), None).await
    }

    /// Writes a tar of `path` in the container to `out`; a symlink named by `path` is
    /// followed only with `follow`.
    pub async fn copy_from(
        &self,
        name_or_id: &str,
        path: &str,
        out: OwnedFd,
        follow: bool,
    ) -> Result<(), Error> {
        let direction = Direction::From {
            path: path.to_string(),
            follow,
        };
        self.copy(name_or_id, direction, None, Some(out))
            .await
            .map(drop)
    }

    async fn copy(
        &self,
        name_or_id: &str,
        direction: Direction,
        stdin: Option<OwnedFd>,
        stdout: Option<OwnedFd>,
    ) -> Result<Vec<String>, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let path = match &direction {
            Direction::To { path, .. } | Direction::From { path, .. } => path,
        };
        if path.is_empty() || path.contains('\0') {
            return Err(Error::InvalidArgument(format!(
                "invalid path {path:?} in the container: give a non-empty path"
            )));
        }
        let c = self.lookup(name_or_id)?;
        // A running container that ends as the copy starts is copied as a stopped one.
        for attempt in 0..2 {
            let dup = |fd: &Option<OwnedFd>| -> Result<Stdio, Error> {
                match fd {
                    Some(fd) => fd
                        .try_clone()
                        .map(Stdio::from)
                        .map_err(|e| Error::Internal(format!("dup the client's stream: {e}"))),
                    None => Ok(Stdio::null()),
                }
            };
            // A stopped container stays stopped while its rootfs is mounted for the copy.
            let mut _op = None;
            let mut rec = c.snapshot();
            if rec.state.status != Status::Running {
                _op = Some(c.lock_op().await?);
                rec = c.snapshot();
            }
            // The container's own mapping (`--userns keep-id` differs from the default).
            let (maps, remap) = self.container_maps(&rec)?;
            let target = match rec.state.status {
                Status::Running if rec.state.pid != 0 => Target::Running {
                    pid: rec.state.pid as i32,
                },
                Status::Removing => return Err(Error::NoSuchContainer(name_or_id.to_string())),
                _ => self.stopped_target(&c.dir, &rec.image_id, remap)?,
            };
            let running = matches!(target, Target::Running { .. });
            let spec = CpSpec {
                maps,
                target,
                direction: direction.clone(),
            };
            match self.run_helper(&spec, dup(&stdin)?, dup(&stdout)?).await? {
                Outcome::Ok { warnings } => return Ok(warnings),
                Outcome::Refused(msg) => return Err(Error::InvalidArgument(msg)),
                Outcome::Gone(msg) if running && attempt == 0 => {
                    tracing::debug!("copy: {msg}; waiting for the container to stop");
                    let stopped =
                        super::container::wait_for(c.watch(), super::WaitCondition::NotRunning);
                    if tokio::time::timeout(GONE_WAIT, stopped).await.is_err() {
                        return Err(Error::Runtime(format!("copy failed: {msg}")));
                    }
                }
                Outcome::Gone(msg) | Outcome::Failed(msg) => {
                    return Err(Error::Runtime(format!("copy failed: {msg}")))
                }
            }
        }
        Err(Error::Runtime(
            "copy failed: the container kept changing state".into(),
        ))
    }

    fn stopped_target(
        &self,
        dir: &std::path::Path,
        image_id: &str,
        remap: Option<crate::userns::keepid::IdRemap>,
    ) -> Result<Target, Error> {
        let image = self.inner.images.resolve(image_id)?;
        Ok(Target::Stopped {
            plan: RootfsPlan {
                driver: self.inner.opts.driver,
                lower: self.inner.images.layer_dirs(&image),
                upper: dir.join("upper"),
                work: dir.join("work"),
                remap,
            },
            mountpoint: dir.join("rootfs"),
        })
    }

    /// Runs `__cp` with `spec` and the client's stream; returns what it reported.
    async fn run_helper(
        &self,
        spec: &CpSpec,
        stdin: Stdio,
        stdout: Stdio,
    ) -> Result<Outcome, Error> {
        let json = serde_json::to_vec(spec).map_err(|e| Error::Internal(e.to_string()))?;
        let memfd = fdutil::sealed_memfd(&json)
            .map_err(|e| Error::Internal(format!("the copy helper's spec: {e}")))?;
        let mut cmd = tokio::process::Command::new(&self.inner.opts.exe);
        cmd.arg("__cp")
            .stdin(stdin)
            .stdout(stdout)
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .envs(self.settings().layer_limit_envs())
            .kill_on_drop(true);
        let mut fds = vec![(memfd, fdutil::SPEC_FD)];
        // Its log (skipped entries, its own errors) goes to ours, tagged.
        if let Some(log) = crate::logging::for_helper(cmd.as_std_mut(), "cp") {
            fds.push(log);
        }
        fdutil::pass_fds(&mut cmd, fds);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("cannot start skiffd's copy helper: {e}")))?;
        // The client's descriptor is the helper's alone now.
        drop(cmd);
        let mut report = Vec::new();
        if let Some(err) = child.stderr.take() {
            let _ = err.take(MAX_REPORT).read_to_end(&mut report).await;
        }
        let status = child
            .wait()
            .await
            .map_err(|e| Error::Internal(format!("waiting for the copy helper: {e}")))?;
        match serde_json::from_slice::<Outcome>(&report) {
            Ok(Outcome::Ok { .. }) if !status.success() => Ok(Outcome::Failed(format!(
                "the copy helper reported success but ended with {status}"
            ))),
            Ok(outcome) => Ok(outcome),
            Err(_) => Ok(Outcome::Failed(format!(
                "the copy helper failed ({status}): {}",
                String::from_utf8_lossy(&report).trim()
            ))),
        }
    }
}
