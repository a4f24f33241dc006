//! The client's terminal: raw mode restored on every exit path (drop, panic, and the
//! signals the sessions handle), window sizes, and docker's detach keys.

use std::io::IsTerminal;
use std::os::fd::{AsFd, AsRawFd};
use std::sync::{Mutex, Once};

use nix::sys::termios::{self, SetArg, Termios};

use super::Failure;

/// The terminal settings to put back (also used by the panic hook).
static SAVED: Mutex<Option<Termios>> = Mutex::new(None);
static HOOK: Once = Once::new();

fn restore_saved() {
    let saved = match SAVED.lock() {
        Ok(mut g) => g.take(),
        Err(p) => p.into_inner().take(),
    };
    if let Some(t) = saved {
        let _ = termios::tcsetattr(std::io::stdin().as_fd(), SetArg::TCSADRAIN, &t);
    }
}

/// Raw mode on stdin while it lives; the previous settings come back on drop, and on a
/// panic (a hook installed once).
pub struct RawMode(());

impl RawMode {
    /// Puts stdin (a terminal) in raw mode; None when stdin is not a terminal.
    pub fn enter() -> Result<Option<RawMode>, Failure> {
        let stdin = std::io::stdin();
        if !stdin.is_terminal() {
            return Ok(None);
        }
        let orig = termios::tcgetattr(stdin.as_fd())
            .map_err(|e| Failure::msg(format!("reading the terminal's settings: {e}")))?;
        let mut raw = orig.clone();
        termios::cfmakeraw(&mut raw);
        HOOK.call_once(|| {
            let previous = std::panic::take_hook();
            std::panic::set_hook(Box::new(move |info| {
                restore_saved();
                previous(info);
            }));
        });
        match SAVED.lock() {
            Ok(mut g) => *g = Some(orig),
            Err(p) => *p.into_inner() = Some(orig),
        }
        termios::tcsetattr(stdin.as_fd(), SetArg::TCSADRAIN, &raw).map_err(|e| {
            restore_saved();
            Failure::msg(format!("setting the terminal to raw mode: {e}"))
        })?;
        Ok(Some(RawMode(())))
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        restore_saved();
    }
}

/// The window size of our terminal (stdout, else stdin), as (rows, cols).
pub fn window_size() -> Option<(u16, u16)> {
    let try_fd = |fd: i32| {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCGWINSZ writes a struct winsize.
        let r = unsafe { libc::ioctl(fd, libc::TIOCGWINSZ, &mut ws) };
        (r == 0 && ws.ws_row > 0 && ws.ws_col > 0).then_some((ws.ws_row, ws.ws_col))
    };
    try_fd(std::io::stdout().as_raw_fd()).or_else(|| try_fd(std::io::stdin().as_raw_fd()))
}

/// docker's default detach keys.
pub const DEFAULT_DETACH_KEYS: &str = "ctrl-p,ctrl-q";

/// Parses docker's `--detach-keys` grammar: comma-separated keys, each a single
/// character or `ctrl-X` with X one of `a`-`z`, `@`, `[`, `\`, `]`, `^`, `_`. An empty
/// string disables detaching.
pub fn parse_detach_keys(s: &str) -> Result<Vec<u8>, String> {
    if s.is_empty() {
        return Ok(Vec::new());
    }
    s.split(',')
        .map(|k| {
            let lower = k.to_ascii_lowercase();
            if let Some(c) = lower.strip_prefix("ctrl-") {
                match c.as_bytes() {
                    [b @ b'a'..=b'z'] => Ok(b - b'a' + 1),
                    [b'@'] => Ok(0),
                    [b'['] => Ok(27),
                    [b'\\'] => Ok(28),
                    [b']'] => Ok(29),
                    [b'^'] => Ok(30),
                    [b'_'] => Ok(31),
                    _ => Err(format!(
                        "invalid detach key {k:?}: use ctrl-a … ctrl-z, ctrl-@, ctrl-[, ctrl-\\, ctrl-], ctrl-^, ctrl-_ or a single character"
                    )),
                }
            } else if k.len() == 1 {
                Ok(k.as_bytes()[0])
            } else {
                Err(format!(
                    "invalid detach key {k:?}: use a single character or ctrl-<value>, e.g. --detach-keys ctrl-p,ctrl-q"
                ))
            }
        })
        .collect()
}

/// Watches typed input for the detach sequence: bytes that could start it are held
/// back until it completes (detach) or breaks (they are passed on).
#[derive(Debug, Default)]
pub struct DetachMatcher {
    keys: Vec<u8>,
    matched: usize,
}

impl DetachMatcher {
    /// A matcher for `keys` (empty: never detaches).
    pub fn new(keys: Vec<u8>) -> DetachMatcher {
        DetachMatcher { keys, matched: 0 }
    }

    /// Feeds input; returns the bytes to forward, and whether the sequence completed
    /// (the bytes before it are still forwarded).
    pub fn feed(&mut self, input: &[u8]) -> (Vec<u8>, bool) {
        let mut out = Vec::with_capacity(input.len());
        if self.keys.is_empty() {
            out.extend_from_slice(input);
            return (out, false);
        }
        for &b in input {
            if b == self.keys[self.matched] {
                self.matched += 1;
                if self.matched == self.keys.len() {
                    self.matched = 0;
                    return (out, true);
                }
                continue;
            }
            // The sequence broke: pass on what was held, then see whether this byte
            // starts it anew.
            out.extend_from_slice(&self.keys[..self.matched]);
            self.matched = 0;
            if b == self.keys[0] {
                self.matched = 1;
                if self.keys.len() == 1 {
                    self.matched = 0;
                    return (out, true);
                }
            } else {
                out.push(b);
            }
        }
        (out, false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detach_keys_grammar() {
        assert_eq!(parse_detach_keys("ctrl-p,ctrl-q").unwrap(), vec![16, 17]);
        assert_eq!(
            parse_detach_keys("ctrl-@,ctrl-[,a").unwrap(),
            vec![0, 27, b'a']
        );
        assert_eq!(parse_detach_keys("").unwrap(), Vec::<u8>::new());
        assert!(parse_detach_keys("ctrl-1").is_err());
        assert!(parse_detach_keys("ab")
            .unwrap_err()
            .contains("--detach-keys"));
    }

    #[test]
    fn matcher_holds_and_releases() {
        let mut m = DetachMatcher::new(vec![16, 17]);
        assert_eq!(m.feed(b"ls\r"), (b"ls\r".to_vec(), false));
        // A prefix is held back…
        assert_eq!(m.feed(&[16]), (vec![], false));
        // …and released when the sequence breaks.
        assert_eq!(m.feed(b"x"), (vec![16, b'x'], false));
        assert_eq!(m.feed(&[b'a', 16, 16]), (vec![b'a', 16], false));
        assert_eq!(m.feed(&[17, b'z']), (vec![], true));
        let mut none = DetachMatcher::new(vec![]);
        assert_eq!(none.feed(&[16, 17]), (vec![16, 17], false));
    }
}
