//! The monitor's attach socket: `attach.sock` in the container's bundle directory, an
//! `AF_UNIX SOCK_SEQPACKET` listener (mode 0600, the caller's uid checked with
//! SO_PEERCRED) through which clients reach the container's terminal or stdio without
//! the daemon in the data path. skiffd connects and hands the connection to the client
//! over D-Bus (`Container.Attach`).
//!
//! One packet is one message, a type byte and a payload:
//!
//! | type | direction | payload |
//! |------|-----------|---------|
//! | `H` hello | client → monitor, first | flags u8: 1 = wants output, 2 = sends stdin |
//! | `I` input | client → monitor | bytes for the container's stdin / the pty |
//! | `D` stdin done | client → monitor | — (closes a non-tty container's stdin) |
//! | `R` resize | client → monitor | rows u16 LE, cols u16 LE |
//! | `T` info | monitor → client, after hello | tty u8, stdin u8 |
//! | `1`/`2` output | monitor → client | stdout / stderr bytes (a tty is all `1`) |
//! | `X` exit | monitor → client, last | exit code i32 LE |

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};

/// The socket's name in the bundle directory.
pub const SOCKET_NAME: &str = "attach.sock";

/// Largest data payload in one packet.
pub const MAX_DATA: usize = 32 * 1024;

/// Hello flag: send me the container's output (and the exit code).
pub const WANT_OUTPUT: u8 = 1;
/// Hello flag: I will send stdin.
pub const SEND_STDIN: u8 = 2;

/// The socket's path for a bundle.
pub fn socket_path(bundle: &Path) -> PathBuf {
    bundle.join(SOCKET_NAME)
}

/// One message of the attach protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    /// The client's first message.
    Hello {
        /// [`WANT_OUTPUT`] | [`SEND_STDIN`].
        flags: u8,
    },
    /// Input for the container.
    Input(Vec<u8>),
    /// The client's stdin ended.
    InputDone,
    /// New window size.
    Resize {
        /// Rows.
        rows: u16,
        /// Columns.
        cols: u16,
    },
    /// What the container has: a tty, an open stdin.
    Info {
        /// The container has a pty.
        tty: bool,
        /// Input is accepted (tty, or created with -i).
        stdin: bool,
    },
    /// Output of stream 1 (stdout) or 2 (stderr).
    Output {
        /// 1 or 2.
        stream: u8,
        /// The bytes.
        data: Vec<u8>,
    },
    /// The container's init ended with this code.
    Exit(i32),
}

impl Packet {
    /// The wire form.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        match self {
            Packet::Hello { flags } => out.extend([b'H', *flags]),
            Packet::Input(d) => {
                out.push(b'I');
                out.extend_from_slice(d);
            }
            Packet::InputDone => out.push(b'D'),
            Packet::Resize { rows, cols } => {
                out.push(b'R');
                out.extend(rows.to_le_bytes());
                out.extend(cols.to_le_bytes());
            }
            Packet::Info { tty, stdin } => out.extend([b'T', *tty as u8, *stdin as u8]),
            Packet::Output { stream, data } => {
                out.push(if *stream == 2 { b'2' } else { b'1' });
                out.extend_from_slice(data);
            }
            Packet::Exit(code) => {
                out.push(b'X');
                out.extend(code.to_le_bytes());
            }
        }
        out
    }

    /// Parses a packet; None for anything malformed.
    pub fn decode(p: &[u8]) -> Option<Packet> {
        let (&t, rest) = p.split_first()?;
        Some(match (t, rest.len()) {
            (b'H', 1) => Packet::Hello { flags: rest[0] },
            (b'I', _) => Packet::Input(rest.to_vec()),
            (b'D', 0) => Packet::InputDone,
            (b'R', 4) => Packet::Resize {
                rows: u16::from_le_bytes([rest[0], rest[1]]),
                cols: u16::from_le_bytes([rest[2], rest[3]]),
            },
            (b'T', 2) => Packet::Info {
                tty: rest[0] != 0,
                stdin: rest[1] != 0,
            },
            (b'1' | b'2', _) => Packet::Output {
                stream: t - b'0',
                data: rest.to_vec(),
            },
            (b'X', 4) => Packet::Exit(i32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]])),
            _ => return None,
        })
    }
}

/// An address for `path` short enough for `sun_path` (108 bytes): the directory is
/// reached through `/proc/self/fd/N` of `dir`, which must stay open while it is used.
fn short_addr(dir: &File, path: &Path) -> nix::Result<UnixAddr> {
    let name = path.file_name().ok_or(nix::errno::Errno::EINVAL)?;
    let short = Path::new("/proc/self/fd")
        .join(dir.as_raw_fd().to_string())
        .join(name);
    UnixAddr::new(&short)
}

fn open_dir(path: &Path) -> nix::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let dir = path.parent().ok_or(nix::errno::Errno::EINVAL)?;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY | libc::O_CLOEXEC)
        .open(dir)
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
}

fn seqpacket() -> nix::Result<OwnedFd> {
    socket::socket(
        AddressFamily::Unix,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
}

/// Creates the listening socket at `path` (replacing a stale one), mode 0600.
pub fn listen(path: &Path) -> nix::Result<OwnedFd> {
    let dir = open_dir(path)?;
    let _ = std::fs::remove_file(path);
    let fd = seqpacket()?;
    socket::bind(fd.as_raw_fd(), &short_addr(&dir, path)?)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))?;
    socket::listen(&fd, socket::Backlog::new(16)?)?;
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )?;
    Ok(fd)
}

/// Connects to the attach socket at `path` (blocking socket).
pub fn connect(path: &Path) -> nix::Result<OwnedFd> {
    let dir = open_dir(path)?;
    let fd = seqpacket()?;
    socket::connect(fd.as_raw_fd(), &short_addr(&dir, path)?)?;
    Ok(fd)
}

/// Sends one packet (blocking).
pub fn send(fd: &impl AsRawFd, p: &Packet) -> nix::Result<()> {
    let data = p.encode();
    loop {
        match socket::send(fd.as_raw_fd(), &data, MsgFlags::MSG_NOSIGNAL) {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Receives one packet: Ok(None) at end-of-file; malformed packets are skipped.
pub fn recv(fd: &impl AsRawFd, flags: MsgFlags) -> nix::Result<Option<Packet>> {
    let mut buf = vec![0u8; MAX_DATA + 16];
    loop {
        match socket::recv(fd.as_raw_fd(), &mut buf, flags) {
            Ok(0) => return Ok(None),
            Ok(n) => {
                if let Some(p) = Packet::decode(&buf[..n]) {
                    return Ok(Some(p));
                }
            }
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packets_round_trip() {
        let all = [
            Packet::Hello {
                flags: WANT_OUTPUT | SEND_STDIN,
            },
            Packet::Input(b"ls\r".to_vec()),
            Packet::InputDone,
            Packet::Resize {
                rows: 40,
                cols: 132,
            },
            Packet::Info {
                tty: true,
                stdin: false,
            },
            Packet::Output {
                stream: 2,
                data: b"oops".to_vec(),
            },
            Packet::Output {
                stream: 1,
                data: vec![],
            },
            Packet::Exit(-3),
        ];
        for p in all {
            assert_eq!(Packet::decode(&p.encode()), Some(p));
        }
        assert_eq!(Packet::decode(b""), None);
        assert_eq!(Packet::decode(b"R12"), None);
        assert_eq!(Packet::decode(b"Z"), None);
    }

    #[test]
    fn long_paths_connect_through_proc() {
        let d = tempfile::tempdir().unwrap();
        let deep = d.path().join("x".repeat(100));
        std::fs::create_dir(&deep).unwrap();
        let path = socket_path(&deep);
        let l = listen(&path).unwrap();
        let c = connect(&path).unwrap();
        let s = loop {
            match socket::accept(&l) {
                Ok(fd) => break fd,
                Err(nix::errno::Errno::EAGAIN) => std::thread::yield_now(),
                Err(e) => panic!("{e}"),
            }
        };
        send(&c, &Packet::Hello { flags: 1 }).unwrap();
        assert_eq!(
            recv(&s, MsgFlags::empty()).unwrap(),
            Some(Packet::Hello { flags: 1 })
        );
    }
}
