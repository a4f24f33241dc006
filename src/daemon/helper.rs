//! A skiffd helper process (the monitor, `__exec`) followed through its status pipe:
//! spawned in its own session with the pipe on fd 3, it reports `Started`/`Failed`
//! first and `Exited` last, one JSON object per line.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::net::unix::pipe;

use super::Error;
use crate::monitor::{Status, STATUS_FD};

/// A running helper.
pub struct HelperRun {
    child: tokio::process::Child,
    lines: Lines<BufReader<pipe::Receiver>>,
}

impl HelperRun {
    /// Spawns `exe args…` in a new session with `stdio`, the status pipe on fd 3 and
    /// the daemon's log on fd 4 (its lines tagged `log_tag`, see [`crate::logging`]).
    pub fn spawn(
        exe: &Path,
        args: &[&OsStr],
        stdio: (Stdio, Stdio, Stdio),
        log_tag: &str,
    ) -> Result<HelperRun, Error> {
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let mut cmd = tokio::process::Command::new(exe);
        cmd.args(args)
            .stdin(stdio.0)
            .stdout(stdio.1)
            .stderr(stdio.2)
            .env_remove("RUST_LOG");
        let status_fd = write_end.as_raw_fd();
        // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if status_fd == STATUS_FD {
                    libc::fcntl(status_fd, libc::F_SETFD, 0);
                } else if libc::dup2(status_fd, STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        crate::logging::pass_to(cmd.as_std_mut(), log_tag);
        let child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("cannot start skiffd's helper: {e}")))?;
        drop(write_end);
        let receiver = pipe::Receiver::from_owned_fd(read_end)
            .map_err(|e| Error::Internal(format!("status pipe: {e}")))?;
        Ok(HelperRun {
            child,
            lines: BufReader::new(receiver).lines(),
        })
    }

    /// The helper's pid.
    pub fn pid(&self) -> u32 {
        self.child.id().unwrap_or(0)
    }

    /// The first status line: `Started` or `Failed` (None if the helper died first).
    pub async fn first(&mut self) -> Option<Status> {
        let line = self.lines.next_line().await.ok().flatten()?;
        serde_json::from_str(&line).ok()
    }

    /// Reads to the end, reaps the helper and returns the reported exit code (or, when
    /// it reported none, the helper's own exit code).
    pub async fn finish(mut self) -> Option<i32> {
        let mut code = None;
        while let Ok(Some(line)) = self.lines.next_line().await {
            if let Ok(Status::Exited { code: c }) = serde_json::from_str(&line) {
                code = Some(c);
            }
        }
        let own = self.child.wait().await.ok().and_then(|s| s.code());
        code.or(own)
    }

    /// Kills and reaps the helper (it did not report in time).
    pub async fn abort(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}
