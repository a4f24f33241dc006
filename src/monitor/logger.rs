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
pub struct Logger {
    cfg: LogConfig,
    file: File,
    size: u64,
    partial: [Vec<u8>; 2],
}

impl Logger {
    /// Opens (appends to) the log file.
    pub fn open(cfg: LogConfig) -> io::Result<Logger> {
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&cfg.path)?;
        let size = file.metadata()?.len();
        Ok(Logger {
            cfg,
            file,
            size,
            partial: [Vec::new(), Vec::new()],
        })
    }

    /// Takes a chunk of output of stream 1 (stdout) or 2 (stderr); complete lines are
    /// written, a trailing partial line waits for more (or for [`Logger::flush`]).
    pub fn write(&mut self, stream: usize, data: &[u8]) -> io::Result<()> {
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
            self.entry(idx, &line)?;
        }
        Ok(())
    }

    /// Writes out partial lines (at the end of the output).
    pub fn flush(&mut self) -> io::Result<()> {
        for idx in 0..2 {
            if !self.partial[idx].is_empty() {
                let line = std::mem::take(&mut self.partial[idx]);
                self.entry(idx, &line)?;
            }
        }
        self.file.sync_data()
    }

    fn entry(&mut self, idx: usize, line: &[u8]) -> io::Result<()> {
        let e = Entry {
            log: String::from_utf8_lossy(line).into_owned(),
            stream: if idx == 1 { "stderr" } else { "stdout" }.into(),
            time: rfc3339(now_us()),
        };
        let mut json = serde_json::to_vec(&e).map_err(io::Error::other)?;
        json.push(b'\n');
        if self.cfg.max_size > 0
            && self.size > 0
            && self.size + json.len() as u64 > self.cfg.max_size
        {
            self.rotate()?;
        }
        self.file.write_all(&json)?;
        self.size += json.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> io::Result<()> {
        let keep = self.cfg.max_file.max(1);
        if keep == 1 {
            self.file.set_len(0)?;
            self.size = 0;
            return Ok(());
        }
        for n in (1..keep - 1).rev() {
            let from = rotated_path(&self.cfg.path, n);
            if from.exists() {
                std::fs::rename(&from, rotated_path(&self.cfg.path, n + 1))?;
            }
        }
        std::fs::rename(&self.cfg.path, rotated_path(&self.cfg.path, 1))?;
        self.file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.cfg.path)?;
        self.size = 0;
        Ok(())
    }
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
        l.write(1, b"hel").unwrap();
        l.write(2, b"oops\n").unwrap();
        l.write(1, b"lo\nwor").unwrap();
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
            l.write(1, format!("line {i}\n").as_bytes()).unwrap();
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
        l.write(1, &vec![b'x'; MAX_LINE + 10]).unwrap();
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
}
