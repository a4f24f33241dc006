//! The json-file log driver, written by the monitor: one JSON object per line
//! (`{"log":"hello\n","stream":"stdout","time":"2026-…Z"}`, as docker writes), with
//! rotation by size (`max-size`) into `container.log.1 … .N-1` (`max-file`).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::timefmt::{now_us, rfc3339};

/// Longest line kept in one entry; longer output is split (docker uses 16 KiB too).
pub const MAX_LINE: usize = 16 * 1024;

/// How a container's output is logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogConfig {
    /// The current log file.
    pub path: PathBuf,
    /// Rotate when the file grows past this many bytes (0 = never).
    pub max_size: u64,
    /// How many files to keep, the current one included (at least 1).
    pub max_file: u32,
}

/// One log entry, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// The text, with its newline if it had one.
    pub log: String,
    /// `stdout` or `stderr`.
    pub stream: String,
    /// RFC 3339 with nanoseconds.
    pub time: String,
}

/// The path of rotated file number `n` (0 = the current file).
pub fn rotated_path(path: &Path, n: u32) -> PathBuf {
    if n == 0 {
        path.to_path_buf()
    } else {
        let mut s = path.as_os_str().to_owned();
        s.push(format!(".{n}"));
        PathBuf::from(s)
    }
}

/// Writes entries, rotating as configured.
///
/// A log that cannot be written (a full disk: ENOSPC, EDQUOT; EIO) never stops the
/// container's output: the entries that do not fit are dropped and counted, every later
/// entry tries again, and the first one that fits is preceded by a marker entry (on
/// stderr, as docker's json-file lines are) saying how much was lost and when. A line
/// torn by a failed write is ended, so it is skipped by readers and the next entry
/// parses.
pub struct Logger {
    cfg: LogConfig,
    file: Option<File>,
    size: u64,
    partial: [Vec<u8>; 2],
    /// The file ends in the middle of a line (a write failed midway).
    torn: bool,
    /// What could not be written since the last successful write.
    lost: Option<Lost>,
}

/// Output dropped because the log could not be written.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Lost {
    lines: u64,
    bytes: u64,
    since: String,
    error: String,
}

impl Logger {
    /// Opens (appends to) the log file.
    pub fn open(cfg: LogConfig) -> io::Result<Logger> {
        let file = open_append(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(Logger {
            cfg,
            file: Some(file),
            size,
            partial: [Vec::new(), Vec::new()],
            torn: false,
            lost: None,
        })
    }

    /// Opens the log file, or (when it cannot be opened now, e.g. on a full disk)
    /// returns a logger that tries again at every entry, counting what it drops
    /// meanwhile.
    pub fn open_or_retry(cfg: LogConfig) -> Logger {
        match Logger::open(cfg.clone()) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "cannot open the container's log {}: {e}; trying again with the next \
                     output",
                    cfg.path.display()
                );
                Logger {
                    cfg,
                    file: None,
                    size: 0,
                    partial: [Vec::new(), Vec::new()],
                    torn: false,
                    lost: None,
                }
            }
        }
    }

    /// Takes a chunk of output of stream 1 (stdout) or 2 (stderr); complete lines are
    /// written, a trailing partial line waits for more (or for [`Logger::flush`]).
    /// Never fails: what cannot be written is counted (see [`Logger`]).
    pub fn write(&mut self, stream: usize, data: &[u8]) {
        let idx = if stream == 2 { 1 } else { 0 };
        self.partial[idx].extend_from_slice(data);
        loop {
            let buf = &self.partial[idx];
            let cut = match buf.iter().position(|b| *b == b'\n') {
                Some(i) => i + 1,
                None if buf.len() >= MAX_LINE => MAX_LINE,
                None => break,
            };
            let line: Vec<u8> = self.partial[idx].drain(..cut).collect();
            self.entry(idx, &line);
        }
    }

    /// Writes out partial lines (at the end of the output) and syncs the file. Fails
    /// only when output was lost and is still not noted in the log.
    pub fn flush(&mut self) -> io::Result<()> {
        for idx in 0..2 {
            if !self.partial[idx].is_empty() {
                let line = std::mem::take(&mut self.partial[idx]);
                self.entry(idx, &line);
            }
        }
        if let Some(f) = &self.file {
            let _ = f.sync_data();
        }
        match &self.lost {
            Some(l) => Err(io::Error::other(format!(
                "{} lines of output could not be logged: {}",
                l.lines, l.error
            ))),
            None => Ok(()),
        }
    }

    fn entry(&mut self, idx: usize, line: &[u8]) {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if idx == 1 { "stderr" } else { "stdout" }.into(),
            time: rfc3339(now_us()),
        };
        let mut json = match serde_json::to_vec(&e) {
            Ok(j) => j,
            Err(_) => return,
        };
        json.push(b'\n');
        if let Err(err) = self.note_lost().and_then(|()| self.put(&json)) {
            self.drop_entry(line.len(), &e.time, &err);
        }
    }

    /// Writes the marker for lost output, if any is pending.
    fn note_lost(&mut self) -> io::Result<()> {
        let Some(lost) = &self.lost else {
            return Ok(());
        };
        let marker = Entry {
            log: format!(
                "skiff: {} lines ({} bytes) of output were not logged from {} to {}: {}\n",
                lost.lines,
                lost.bytes,
                lost.since,
                rfc3339(now_us()),
                lost.error
            ),
            stream: "stderr".into(),
            time: rfc3339(now_us()),
        };
        let mut json = serde_json::to_vec(&marker).map_err(io::Error::other)?;
        json.push(b'\n');
        let lines = lost.lines;
        self.put(&json)?;
        tracing::info!("the container's log is written again ({lines} lines were lost)");
        self.lost = None;
        Ok(())
    }

    fn drop_entry(&mut self, bytes: usize, time: &str, err: &io::Error) {
        match self.lost.as_mut() {
            Some(l) => {
                l.lines += 1;
                l.bytes += bytes as u64;
            }
            None => {
                tracing::warn!(
                    "cannot write the container's log {}: {err}; dropping output until \
                     it can be written again",
                    self.cfg.path.display()
                );
                self.lost = Some(Lost {
                    lines: 1,
                    bytes: bytes as u64,
                    since: time.to_string(),
                    error: err.to_string(),
                });
            }
        }
    }

    /// Writes one JSON line (rotating first when it would not fit), ending a torn line
    /// first. On failure, what was written is accounted for.
    fn put(&mut self, json: &[u8]) -> io::Result<()> {
        let needed = json.len() as u64 + u64::from(self.torn);
        if self.file.is_none()
            || (self.cfg.max_size > 0 && self.size > 0 && self.size + needed > self.cfg.max_size)
        {
            self.rotate()?;
        }
        let mut data = Vec::with_capacity(json.len() + 1);
        if self.torn {
            data.push(b'\n');
        }
        data.extend_from_slice(json);
        let Some(file) = self.file.as_mut() else {
            return Err(io::Error::other("the log file is not open"));
        };
        let mut done = 0;
        let res = loop {
            if done == data.len() {
                break Ok(());
            }
            match file.write(&data[done..]) {
                Ok(0) => break Err(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Err(e),
            }
        };
        self.size += done as u64;
        if done > 0 {
            self.torn = data[done - 1] != b'\n';
        }
        res
    }

    /// Starts a new current file (or, with `max_file` 1, empties it). Also reopens a
    /// file that a failed rotation left closed.
    fn rotate(&mut self) -> io::Result<()> {
        if self.file.is_none() && self.size == 0 {
            // Never opened (see `open_or_retry`): open, and rotate only when it is due.
            let file = open_append(&self.cfg.path)?;
            self.size = file.metadata()?.len();
            self.file = Some(file);
            if self.cfg.max_size == 0 || self.size < self.cfg.max_size {
                return Ok(());
            }
        }
        let keep = self.cfg.max_file.max(1);
        if keep == 1 {
            if self.file.is_none() {
                self.file = Some(open_append(&self.cfg.path)?);
            }
            if let Some(f) = &self.file {
                f.set_len(0)?;
            }
            self.size = 0;
            self.torn = false;
            return Ok(());
        }
        if self.file.is_some() {
            for n in (1..keep - 1).rev() {
                let from = rotated_path(&self.cfg.path, n);
                if from.exists() {
                    std::fs::rename(&from, rotated_path(&self.cfg.path, n + 1))?;
                }
            }
            std::fs::rename(&self.cfg.path, rotated_path(&self.cfg.path, 1))?;
            self.file = None;
        }
        self.file = Some(open_append(&self.cfg.path)?);
        self.size = 0;
        self.torn = false;
        Ok(())
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

/// Reads every entry of a log (rotated files first, oldest first). Lines that do not parse
/// (a torn last line after a crash) are skipped.
pub fn read_all(cfg: &LogConfig) -> Vec<Entry> {
    let mut out = Vec::new();
    for n in (0..cfg.max_file.max(1)).rev() {
        if let Ok(data) = std::fs::read(rotated_path(&cfg.path, n)) {
            out.extend(parse(&data));
        }
    }
    out
}

/// Parses JSON lines.
pub fn parse(data: &[u8]) -> Vec<Entry> {
    data.split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .filter_map(|l| serde_json::from_slice(l).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(dir: &Path, max_size: u64, max_file: u32) -> LogConfig {
        LogConfig {
            path: dir.join("container.log"),
            max_size,
            max_file,
        }
    }

    #[test]
    fn lines_are_split_and_streams_kept_apart() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), 0, 1);
        let mut l = Logger::open(c.clone()).unwrap();
        l.write(1, b"hel");
        l.write(2, b"oops\n");
        l.write(1, b"lo\nwor");
        l.flush().unwrap();
        let e = read_all(&c);
        let got: Vec<(&str, &str)> = e
            .iter()
            .map(|e| (e.stream.as_str(), e.log.as_str()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("stderr", "oops\n"),
                ("stdout", "hello\n"),
                ("stdout", "wor")
            ]
        );
        assert!(e[0].time.ends_with('Z'));
    }

    #[test]
    fn rotation_keeps_max_file_files() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), 200, 3);
        let mut l = Logger::open(c.clone()).unwrap();
        for i in 0..50 {
            l.write(1, format!("line {i}\n").as_bytes());
        }
        l.flush().unwrap();
        assert!(rotated_path(&c.path, 1).exists());
        assert!(rotated_path(&c.path, 2).exists());
        assert!(!rotated_path(&c.path, 3).exists());
        let e = read_all(&c);
        assert_eq!(e.last().unwrap().log, "line 49\n");
        // Entries come back in order, the oldest ones rotated away.
        let nums: Vec<u32> = e
            .iter()
            .map(|e| e.log[5..].trim().parse().unwrap())
            .collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        for n in 0..3 {
            assert!(std::fs::metadata(rotated_path(&c.path, n)).unwrap().len() <= 200);
        }
    }

    #[test]
    fn long_lines_are_cut_and_torn_lines_skipped() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(d.path(), 0, 1);
        let mut l = Logger::open(c.clone()).unwrap();
        l.write(1, &vec![b'x'; MAX_LINE + 10]);
        l.flush().unwrap();
        std::fs::OpenOptions::new()
            .append(true)
            .open(&c.path)
            .unwrap()
            .write_all(b"{\"log\":\"tor")
            .unwrap();
        let e = read_all(&c);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].log.len(), MAX_LINE);
    }

    /// A real full disk: a 64 KiB tmpfs mounted in a user and mount namespace made for
    /// the test (the test re-runs itself there). Output that does not fit is dropped and
    /// counted, writing resumes when space is back, after a marker naming the loss, and
    /// no entry is torn.
    #[test]
    fn a_full_disk_loses_only_what_did_not_fit_and_writing_resumes() {
        const NAME: &str =
            "monitor::logger::tests::a_full_disk_loses_only_what_did_not_fit_and_writing_resumes";
        let Ok(dir) = std::env::var("SKIFF_TEST_TMPFS") else {
            let d = tempfile::tempdir().unwrap();
            let exe = std::env::current_exe().unwrap();
            let out = std::process::Command::new("unshare")
                .args(["-rm", "sh", "-c"])
                .arg("mount -t tmpfs -o size=64k skifftest \"$1\" && exec \"$0\" --exact \"$2\" --nocapture")
                .arg(&exe)
                .arg(d.path())
                .arg(NAME)
                .env("SKIFF_TEST_TMPFS", d.path())
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success() && text.contains("1 passed"),
                "{text}{}",
                String::from_utf8_lossy(&out.stderr)
            );
            return;
        };
        let dir = Path::new(&dir);
        let c = cfg(dir, 0, 1);
        let mut l = Logger::open(c.clone()).unwrap();
        l.write(1, b"before\n");
        // Fill the file system.
        let filler = dir.join("filler");
        let mut f = File::create(&filler).unwrap();
        let err = loop {
            if let Err(e) = f.write_all(&[0u8; 4096]) {
                break e;
            }
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        const N: usize = 2000;
        for i in 0..N {
            l.write(1, format!("lost {i}\n").as_bytes());
        }
        std::fs::remove_file(&filler).unwrap();
        l.write(2, b"after\n");
        let _ = l.flush();
        let e = read_all(&c);
        assert_eq!(e[0].log, "before\n");
        let last = e.last().unwrap();
        assert_eq!(
            (last.stream.as_str(), last.log.as_str()),
            ("stderr", "after\n")
        );
        let kept = e.iter().filter(|e| e.log.starts_with("lost ")).count();
        let markers: Vec<&Entry> = e.iter().filter(|e| e.log.starts_with("skiff: ")).collect();
        assert_eq!(markers.len(), 1, "{e:?}");
        let m = &markers[0].log;
        assert!(m.contains("No space left on device"), "{m}");
        let lost: usize = m["skiff: ".len()..]
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            lost > 0 && kept + lost == N,
            "kept {kept}, lost {lost}: {m}"
        );
        // What was kept is in order and complete.
        for (n, e) in e.iter().filter(|e| e.log.starts_with("lost ")).enumerate() {
            assert_eq!(e.log, format!("lost {n}\n"));
        }
    }

    #[test]
    fn a_log_that_cannot_be_opened_yet_is_opened_when_it_can() {
        let d = tempfile::tempdir().unwrap();
        let c = cfg(&d.path().join("later"), 0, 1);
        let mut l = Logger::open_or_retry(c.clone());
        l.write(1, b"dropped 1\n");
        l.write(2, b"dropped 2\n");
        std::fs::create_dir(d.path().join("later")).unwrap();
        l.write(1, b"kept\n");
        l.flush().unwrap();
        let e = read_all(&c);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].log.starts_with("skiff: 2 lines (20 bytes)"), "{e:?}");
        assert_eq!(e[1].log, "kept\n");
    }
}
