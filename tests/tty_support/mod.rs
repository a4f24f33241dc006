//! A pseudo-terminal driven by the test: the child (a `skiff` command) gets the slave as
//! its controlling terminal and stdio; the test types into the master and reads what the
//! child writes, with timeouts.
#![allow(dead_code)]

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::pty::{openpty, Winsize};
use nix::sys::termios::{tcgetattr, Termios};

/// Numbers the markers of [`PtyChild::sync_output`].
static SYNC_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A child on a pty.
pub struct PtyChild {
    master: OwnedFd,
    /// Our copy of the slave: for tcgetattr after the child is gone.
    slave: OwnedFd,
    child: Child,
    out: Arc<Mutex<Vec<u8>>>,
    /// The terminal settings before the child started.
    pub termios_before: Termios,
}

impl PtyChild {
    /// Starts `cmd` on a new pty of `rows` x `cols`.
    pub fn spawn(mut cmd: Command, rows: u16, cols: u16) -> PtyChild {
        let ws = Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = openpty(Some(&ws), None).expect("openpty");
        let termios_before = tcgetattr(pty.slave.as_fd()).expect("tcgetattr");
        let s = |fd: &OwnedFd| Stdio::from(fd.try_clone().expect("dup"));
        cmd.stdin(s(&pty.slave))
            .stdout(s(&pty.slave))
            .stderr(s(&pty.slave));
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().expect("spawn on the pty");
        let out = Arc::new(Mutex::new(Vec::new()));
        let reader = pty.master.try_clone().expect("dup master");
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            loop {
                match nix::unistd::read(&reader, &mut buf) {
                    Ok(0) | Err(nix::errno::Errno::EIO) => {
                        // No slave open right now (before the child opens it, or after
                        // it is gone): our own copy keeps it from ending; retry.
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Ok(n) => sink.lock().unwrap().extend_from_slice(&buf[..n]),
                    Err(nix::errno::Errno::EINTR) => {}
                    Err(_) => return,
                }
            }
        });
        PtyChild {
            master: pty.master,
            slave: pty.slave,
            child,
            out,
            termios_before,
        }
    }

    /// Types `bytes`.
    pub fn send(&self, bytes: &[u8]) {
        let mut rest = bytes;
        while !rest.is_empty() {
            let n = nix::unistd::write(&self.master, rest).expect("write to the pty");
            rest = &rest[n..];
        }
    }

    /// Everything the child wrote so far, lossy UTF-8.
    pub fn output(&self) -> String {
        String::from_utf8_lossy(&self.out.lock().unwrap()).into_owned()
    }

    /// Waits until the output after byte offset `from` contains `needle`; returns the
    /// offset just past it. Panics with the output on timeout.
    pub fn expect_from(&self, from: usize, needle: &str, secs: u64) -> usize {
        match self.find_from(from, needle, Duration::from_secs(secs)) {
            Some(at) => at,
            None => panic!(
                "timed out waiting for {needle:?}; output so far:\n{}",
                self.output()
            ),
        }
    }

    /// Types `command` until the output shows `needle` (for effects that arrive
    /// asynchronously, like a SIGWINCH); returns the offset past it.
    pub fn retry_until(&self, from: usize, command: &[u8], needle: &str) -> usize {
        for _ in 0..20 {
            let at = self.mark().max(from);
            self.send(command);
            if let Some(end) = self.find_from(at, needle, Duration::from_secs(1)) {
                return end;
            }
        }
        panic!("{needle:?} never showed; output:\n{}", self.output());
    }

    /// Waits until the child has put the terminal in raw mode (skiff does so once the
    /// container's monitor answered, i.e. the client is being served).
    pub fn wait_raw(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while same_modes(&self.termios_before, &self.termios_now()) {
            assert!(
                Instant::now() < deadline,
                "never went raw: {}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn find_from(&self, from: usize, needle: &str, wait: Duration) -> Option<usize> {
        let deadline = Instant::now() + wait;
        loop {
            {
                let out = self.out.lock().unwrap();
                let hay = String::from_utf8_lossy(&out[from.min(out.len())..]).into_owned();
                if let Some(i) = hay.find(needle) {
                    // Offsets in the lossy string equal byte offsets for ASCII needles.
                    return Some(from + i + needle.len());
                }
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The current length of the output.
    pub fn mark(&self) -> usize {
        self.out.lock().unwrap().len()
    }

    /// Resizes the terminal: the kernel sends SIGWINCH to the child's process group.
    pub fn resize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a struct winsize.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0, "TIOCSWINSZ");
    }

    /// The terminal settings now.
    pub fn termios_now(&self) -> Termios {
        tcgetattr(self.slave.as_fd()).expect("tcgetattr")
    }

    /// Waits for the child to exit, then until everything it wrote has been read (see
    /// [`PtyChild::sync_output`]); panics with its output after `secs`.
    pub fn wait(&mut self, secs: u64) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.sync_output();
                return st;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the child did not exit; output:\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Returns once the reader thread has read everything written to the terminal so
    /// far. A write to the slave is queued in the kernel and reaches the master's reader
    /// later (a worker moves it), so a child can exit before its last output is read:
    /// on a loaded machine `output()` right after the exit missed it. We write a marker
    /// through our own slave copy, behind whatever the child wrote; when the reader has
    /// it, it has everything before it. The marker is then cut out of the output.
    pub fn sync_output(&self) {
        let n = SYNC_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let marker = format!("[pty-sync-{}-{n}]", std::process::id()).into_bytes();
        let mut rest = &marker[..];
        while !rest.is_empty() {
            match nix::unistd::write(&self.slave, rest) {
                Ok(k) => rest = &rest[k..],
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => panic!("write the sync marker to the pty: {e}"),
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            {
                let mut out = self.out.lock().unwrap();
                if let Some(i) = out.windows(marker.len()).position(|w| w == marker) {
                    out.drain(i..i + marker.len());
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "the pty never delivered the sync marker; output:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The child's pid.
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Is the child still running?
    pub fn running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }
}

impl Drop for PtyChild {
    fn drop(&mut self) {
        if self.running() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Are two terminal settings the same (the fields raw mode changes)?
pub fn same_modes(a: &Termios, b: &Termios) -> bool {
    a.input_flags == b.input_flags
        && a.output_flags == b.output_flags
        && a.control_flags == b.control_flags
        && a.local_flags == b.local_flags
        && a.control_chars == b.control_chars
}
