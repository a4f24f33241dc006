//! Reading a container's json-file log for a client: history (with `tail`, `since`,
//! `until`), optionally timestamps, and `follow`, streamed into pipes whose read ends go
//! to the client. Following ends when the container stops and the log is drained, or
//! when the client closes its ends.

use std::io::{Read, Seek, SeekFrom};
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::unix::pipe;

use super::container::Status;
use super::supervise::log_path;
use super::{Daemon, Error};
use crate::monitor::logger::{self, Entry, LogConfig};
use crate::timefmt::parse_rfc3339;

/// What the client wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogOptions {
    /// Keep streaming new output until the container stops.
    pub follow: bool,
    /// Only entries at or after this time (µs since the epoch; 0 = all).
    pub since: u64,
    /// Only entries before this time (µs; 0 = no limit).
    pub until: u64,
    /// Only the last N entries of the history (None = all).
    pub tail: Option<usize>,
    /// Prefix each line with its RFC 3339 time.
    pub timestamps: bool,
}

/// Selects the history entries the options ask for.
pub fn select(entries: Vec<Entry>, opts: &LogOptions) -> Vec<Entry> {
    let mut v: Vec<Entry> = entries
        .into_iter()
        .filter(|e| {
            let t = parse_rfc3339(&e.time).unwrap_or(0);
            t >= opts.since && (opts.until == 0 || t < opts.until)
        })
        .collect();
    if let Some(n) = opts.tail {
        let skip = v.len().saturating_sub(n);
        v.drain(..skip);
    }
    v
}

fn render(e: &Entry, timestamps: bool) -> Vec<u8> {
    if timestamps {
        format!("{} {}", e.time, e.log).into_bytes()
    } else {
        e.log.clone().into_bytes()
    }
}

impl Daemon {
    /// Opens a container's logs: returns the read ends of (stdout, stderr) pipes that a
    /// task fills.
    pub fn open_logs(
        &self,
        name_or_id: &str,
        opts: LogOptions,
    ) -> Result<(OwnedFd, OwnedFd), Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        let (_, max_file) = rec.config.log_limits()?;
        let cfg = LogConfig {
            path: log_path(&c.dir),
            max_size: 0,
            max_file,
        };
        let mk = || pipe::pipe().map_err(|e| Error::Internal(format!("pipe: {e}")));
        let (out_w, out_r) = mk()?;
        let (err_w, err_r) = mk()?;
        let out_r = out_r
            .into_blocking_fd()
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let err_r = err_r
            .into_blocking_fd()
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let watch = c.watch();
        tokio::spawn(async move {
            if let Err(e) = stream(cfg, opts, watch, out_w, err_w).await {
                tracing::debug!("log stream ended: {e}");
            }
        });
        Ok((out_r, err_r))
    }
}

async fn write_entry(
    e: &Entry,
    timestamps: bool,
    out: &mut pipe::Sender,
    err: &mut pipe::Sender,
) -> std::io::Result<()> {
    let data = render(e, timestamps);
    if e.stream == "stderr" {
        err.write_all(&data).await
    } else {
        out.write_all(&data).await
    }
}

async fn stream(
    cfg: LogConfig,
    opts: LogOptions,
    mut state: tokio::sync::watch::Receiver<super::container::State>,
    mut out: pipe::Sender,
    mut err: pipe::Sender,
) -> std::io::Result<()> {
    let history = {
        let cfg = cfg.clone();
        tokio::task::spawn_blocking(move || logger::read_all(&cfg))
            .await
            .unwrap_or_default()
    };
    for e in select(history, &opts) {
        write_entry(&e, opts.timestamps, &mut out, &mut err).await?;
    }
    if !opts.follow {
        return Ok(());
    }
    // Follow the current file from its end; a shrinking file means it was rotated.
    let path: PathBuf = cfg.path.clone();
    let mut pos = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let mut pending: Vec<u8> = Vec::new();
    loop {
        let running = state.borrow_and_update().status == Status::Running;
        let (chunk, new_pos) = {
            let path = path.clone();
            tokio::task::spawn_blocking(move || read_from(&path, pos))
                .await
                .unwrap_or((Vec::new(), pos))
        };
        pos = new_pos;
        pending.extend_from_slice(&chunk);
        if let Some(end) = pending.iter().rposition(|b| *b == b'\n') {
            let complete: Vec<u8> = pending.drain(..=end).collect();
            for e in logger::parse(&complete) {
                if opts.until == 0 || parse_rfc3339(&e.time).unwrap_or(0) < opts.until {
                    write_entry(&e, opts.timestamps, &mut out, &mut err).await?;
                }
            }
        }
        if !running && chunk.is_empty() {
            return Ok(());
        }
        // A client that went away is noticed at the next write (EPIPE).
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            _ = state.changed() => {}
        }
    }
}

/// Reads what was appended to `path` after `pos`; starts over when the file shrank.
fn read_from(path: &std::path::Path, pos: u64) -> (Vec<u8>, u64) {
    let Ok(mut f) = std::fs::File::open(path) else {
        return (Vec::new(), 0);
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if len < pos { 0 } else { pos };
    if f.seek(SeekFrom::Start(start)).is_err() {
        return (Vec::new(), pos);
    }
    let mut buf = Vec::new();
    let _ = f.read_to_end(&mut buf);
    let end = start + buf.len() as u64;
    (buf, end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(t: &str, log: &str) -> Entry {
        Entry {
            log: log.into(),
            stream: "stdout".into(),
            time: t.into(),
        }
    }

    #[test]
    fn tail_since_and_until() {
        let all = vec![
            e("2026-01-01T00:00:01Z", "a\n"),
            e("2026-01-01T00:00:02Z", "b\n"),
            e("2026-01-01T00:00:03Z", "c\n"),
        ];
        let tail = select(
            all.clone(),
            &LogOptions {
                tail: Some(2),
                ..Default::default()
            },
        );
        assert_eq!(
            tail.iter().map(|e| e.log.as_str()).collect::<String>(),
            "b\nc\n"
        );
        let since = parse_rfc3339("2026-01-01T00:00:02Z").unwrap();
        let s = select(
            all.clone(),
            &LogOptions {
                since,
                ..Default::default()
            },
        );
        assert_eq!(s.len(), 2);
        let u = select(
            all,
            &LogOptions {
                until: since,
                ..Default::default()
            },
        );
        assert_eq!(u.len(), 1);
        assert_eq!(render(&e("T", "x\n"), true), b"T x\n");
    }
}
