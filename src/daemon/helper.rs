//! A skiffd helper process (the monitor, `__exec`) followed through its status pipe:
//! spawned in its own session with the pipe on fd 3 (and its spec, if any, on fd 4:
//! never on its command line), it reports `Started`/`Failed`
//! first and `Exited` last, one JSON object per line.

use std::ffi::{OsStr, OsString};
use std::os::fd::OwnedFd;
use std::path::Path;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use super::Error;
use crate::fdutil;
use crate::monitor::{Status, STATUS_FD};

/// A running helper.
pub struct HelperRun {
    child: super::spawn::Child,
    lines: Lines<BufReader<pipe::Receiver>>,
}

/// A helper's fd 0, 1, 2 (None: /dev/null).
pub type HelperStdio = [Option<OwnedFd>; 3];

impl HelperRun {
    /// Spawns `exe args…` in a new session with `stdio`, the status pipe on fd 3 and
    /// `spec` (if any) in a sealed memfd on fd 4 ([`crate::fdutil::SPEC_FD`]), the
    /// daemon's log on fd 5 (its lines tagged `log_tag`, see [`crate::logging`]); no
    /// other descriptor of ours is open in the child (see [`super::spawn`]).
    pub fn spawn(
        exe: &Path,
        args: &[&OsStr],
        stdio: HelperStdio,
        spec: Option<&[u8]>,
        log_tag: &str,
    ) -> Result<HelperRun, Error> {
        Self::spawn_as(
            exe, None, args, stdio, spec, log_tag, None, None, None, None,
        )
    }

    /// [`HelperRun::spawn`] with `arg0` as the helper's argv[0] (its name in `ps`; a
    /// named helper — the monitor — also gets our pid in
    /// [`crate::monitor::PARENT_ENV`]), and `gate` (if any) on the child's fd 6: the
    /// monitor waits there before it starts anything, until the gate is opened (see
    /// [`super::scope`]), `userns` (if any) on the child's
    /// [`crate::userns::shared::USERNS_FD`], and `go` (if any) on the monitor's
    /// [`crate::monitor::handoff::GO_FD`]: it waits there until its bundle is written.
    /// The monitor is forked by `zygote` (if any) when `exe` is `skiff-monitor` (see
    /// [`super::zygote`]), with the same descriptors and environment: that blocks (a
    /// round trip to the zygote), so such a spawn runs on a blocking thread.
    #[allow(clippy::too_many_arguments)]
    pub fn spawn_as(
        exe: &Path,
        arg0: Option<&OsStr>,
        args: &[&OsStr],
        stdio: HelperStdio,
        spec: Option<&[u8]>,
        log_tag: &str,
        gate: Option<OwnedFd>,
        userns: Option<OwnedFd>,
        go: Option<OwnedFd>,
        zygote: Option<&super::zygote::Client>,
    ) -> Result<HelperRun, Error> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let mut env: Vec<(OsString, OsString)> = Vec::new();
        if arg0.is_some() {
            env.push((
                crate::monitor::PARENT_ENV.into(),
                std::process::id().to_string().into(),
            ));
            // Read by glibc at the monitor's start only (see the constant).
            env.push((
                crate::monitor::heap::TUNABLES_ENV.into(),
                crate::monitor::heap::monitor_tunables(),
            ));
        }
        let mut fds = vec![(write_end, STATUS_FD)];
        if let Some(spec) = spec {
            let memfd = fdutil::sealed_memfd(spec)
                .map_err(|e| Error::Internal(format!("the helper's spec: {e}")))?;
            fds.push((memfd, fdutil::SPEC_FD));
        }
        if let Some((vars, log)) = crate::logging::helper_log(log_tag) {
            env.extend(vars);
            fds.push(log);
        }
        if let Some(gate) = gate {
            fds.push((gate, super::scope::GATE_FD));
            env.push((
                super::scope::GATE_ENV.into(),
                super::scope::GATE_FD.to_string().into(),
            ));
        }
        if let Some(ns) = userns {
            fds.push((ns, crate::userns::shared::USERNS_FD));
        }
        if let Some(go) = go {
            fds.push((go, crate::monitor::handoff::GO_FD));
            env.push((
                crate::monitor::handoff::GO_FD_ENV.into(),
                crate::monitor::handoff::GO_FD.to_string().into(),
            ));
        }
        // Our copies of the status pipe's write end and the spec go when this returns.
        let child = super::spawn::Spawn {
            exe,
            arg0,
            args,
            env,
            env_remove: &["RUST_LOG"],
            stdio,
            fds,
            // The monitor comes from the zygote when it can.
            zygote,
        }
        .spawn()
        .map_err(|e| Error::Runtime(format!("cannot start skiffd's helper: {e}")))?;
        let receiver = pipe::Receiver::from_owned_fd(read_end)
            .map_err(|e| Error::Internal(format!("status pipe: {e}")))?;
        Ok(HelperRun {
            child,
            lines: BufReader::new(receiver).lines(),
        })
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The first status line: `Started` or `Failed` (None if the helper died first).
    pub async fn first(&mut self) -> Option<Status> {
        let line = self.lines.next_line().await.ok().flatten()?;
        serde_json::from_str(&line).ok()
    }

    /// Reads to the end, reaps the helper and returns the reported exit code (or, when
    /// it reported none, the helper's own exit code).
    pub async fn finish(self) -> Option<i32> {
        let (code, own) = self.finish_with_status().await;
        code.or(own.and_then(|s| s.code()))
    }

    /// Reads to the end: the reported exit code, if any, and — when none was reported —
    /// the helper's own wait status. A helper that reported its exit and closed the pipe
    /// may still be finishing (a monitor reaps its network helper after reporting: see
    /// `monitor::main`); it is reaped in the background, its status adds nothing.
    pub async fn finish_with_status(mut self) -> (Option<i32>, Option<std::process::ExitStatus>) {
        let mut code = None;
        while let Ok(Some(line)) = self.lines.next_line().await {
            if let Ok(Status::Exited { code: c }) = serde_json::from_str(&line) {
                code = Some(c);
            }
        }
        if code.is_some() {
            let mut child = self.child;
            ENDING.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let _ = child.wait().await;
                ENDING.fetch_sub(1, Ordering::SeqCst);
                ENDED.notify_waiters();
            });
            return (code, None);
        }
        (code, self.child.wait().await.ok())
    }

    /// Kills and reaps the helper (it did not report in time).
    pub async fn abort(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// A command for a helper that works in the user namespace (`__unpack`, `__remove`):
/// the id maps `maps_json` on its fd 4, every other descriptor above 2 close-on-exec.
pub fn maps_command(
    exe: &Path,
    helper: &str,
    maps_json: &str,
    log_tag: &str,
) -> Result<tokio::process::Command, Error> {
    let memfd = fdutil::sealed_memfd(maps_json.as_bytes())
        .map_err(|e| Error::Internal(format!("the {helper} helper's id maps: {e}")))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(helper);
    let mut fds = vec![(memfd, fdutil::SPEC_FD)];
    if let Some(log) = crate::logging::for_helper(cmd.as_std_mut(), log_tag) {
        fds.push(log);
    }
    fdutil::pass_fds(&mut cmd, fds);
    Ok(cmd)
}

/// Helpers that reported their end and are being reaped in the background (see
/// [`HelperRun::finish_with_status`]).
static ENDING: AtomicUsize = AtomicUsize::new(0);
/// Told when one of them is reaped.
static ENDED: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// Waits (at most `limit`) until every helper that reported its end has been reaped: a
/// skiffd that stops right after a container's exit (a monitor finishes within
/// milliseconds of its report) leaves no zombie to an init that may reap late.
pub async fn reap_ending(limit: Duration) {
    let all = async {
        loop {
            // Created before the check: a reap between the two still wakes it.
            let reaped = ENDED.notified();
            if ENDING.load(Ordering::SeqCst) == 0 {
                return;
            }
            reaped.await;
        }
    };
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::debug!(
            "{} helper(s) still ending at shutdown",
            ENDING.load(Ordering::SeqCst)
        );
    }
}
