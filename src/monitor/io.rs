//! The monitor's I/O loop for containers whose stdio the daemon does not hand to a
//! client: it reads the container's output (the pty master, or the stdout/stderr
//! pipes), writes it to the json-file log and to the clients attached through the
//! attach socket, and feeds their input to the pty or to the container's stdin pipe.
//!
//! Single-threaded and poll(2)-driven; every fd is non-blocking, and each client has its
//! own bounded queue, so a slow or stuck client never blocks the container or the log.
//! Output produced before the first client asked for output is kept (up to
//! [`REPLAY_MAX`]) and replayed to it, so `run -it` and `start -a` lose nothing.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, MsgFlags, SockFlag};
use nix::unistd::Pid;

use super::attach::{self, Packet, MAX_DATA, WANT_OUTPUT};
use super::logger::{LogConfig, Logger};

/// Output kept for the first client.
pub const REPLAY_MAX: usize = 1024 * 1024;
/// A client whose queue grows past this is disconnected.
const CLIENT_QUEUE_MAX: usize = 8 * 1024 * 1024;
/// Input waiting for the container, at most.
const INPUT_MAX: usize = 1024 * 1024;
/// How long the exit code and the last output wait for slow clients.
const FINISH_TIMEOUT: Duration = Duration::from_secs(5);

/// The container's side of the I/O.
pub struct Streams {
    /// The pty master (tty containers).
    pub tty: Option<OwnedFd>,
    /// Read ends of stdout and stderr (other containers).
    pub out: Option<OwnedFd>,
    /// See `out`.
    pub err: Option<OwnedFd>,
    /// Write end of the container's stdin pipe (created with -i, no tty).
    pub stdin: Option<OwnedFd>,
}

struct Client {
    fd: OwnedFd,
    output: bool,
    queue: VecDeque<Vec<u8>>,
    queued: usize,
    dead: bool,
}

impl Client {
    fn push(&mut self, p: &Packet) {
        let data = p.encode();
        self.queued += data.len();
        self.queue.push_back(data);
        if self.queued > CLIENT_QUEUE_MAX {
            tracing::warn!("an attached client does not read its output: disconnecting it");
            self.dead = true;
        }
    }

    fn flush(&mut self) {
        while let Some(front) = self.queue.front() {
            match socket::send(
                self.fd.as_raw_fd(),
                front,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            ) {
                Ok(_) => {
                    self.queued -= front.len();
                    self.queue.pop_front();
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return,
                Err(_) => {
                    self.dead = true;
                    return;
                }
            }
        }
    }
}

/// The loop's state.
pub struct Io {
    tty: Option<OwnedFd>,
    tty_open: bool,
    outs: [Option<OwnedFd>; 2],
    stdin: Option<OwnedFd>,
    stdin_done: bool,
    input: VecDeque<u8>,
    listener: Option<OwnedFd>,
    clients: Vec<Client>,
    logger: Option<Logger>,
    replay: Option<(VecDeque<Packet>, usize)>,
    /// A foreground client's stdout and stderr, written to as output comes (blocking:
    /// a slow reader slows the container, as a pipe would).
    sinks: [Option<std::fs::File>; 2],
}

#[derive(Clone, Copy)]
enum Slot {
    Tty,
    Out(usize),
    Stdin,
    Listener,
    Client(usize),
    Init,
}

fn set_nonblocking(fd: &OwnedFd) {
    if let Ok(flags) = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL) {
        let flags = nix::fcntl::OFlag::from_bits_retain(flags) | nix::fcntl::OFlag::O_NONBLOCK;
        let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags));
    }
}

impl Io {
    /// Takes the streams, the attach listener and the log configuration.
    pub fn new(streams: Streams, listener: Option<OwnedFd>, log: Option<LogConfig>) -> Io {
        let Streams {
            tty,
            out,
            err,
            stdin,
        } = streams;
        for fd in [&tty, &out, &err, &stdin].into_iter().flatten() {
            set_nonblocking(fd);
        }
        let logger = log.map(Logger::open_or_retry);
        Io {
            tty_open: tty.is_some(),
            tty,
            outs: [out, err],
            stdin,
            stdin_done: false,
            input: VecDeque::new(),
            listener,
            clients: Vec::new(),
            logger,
            replay: Some((VecDeque::new(), 0)),
            sinks: [None, None],
        }
    }

    /// Copies the container's stdout and stderr to `out` and `err` too (a foreground
    /// client's). Their file status flags are the client's: they are left as they are.
    pub fn copy_output_to(&mut self, out: OwnedFd, err: OwnedFd) {
        self.sinks = [Some(out.into()), Some(err.into())];
    }

    /// Serves until `init` has exited and its output is drained.
    pub fn run(&mut self, init: Pid) {
        let pidfd = crate::procutil::pidfd_open(init.as_raw()).ok();
        let mut buf = vec![0u8; MAX_DATA];
        loop {
            let mut slots = Vec::new();
            let mut fds = Vec::new();
            if let (Some(t), true) = (&self.tty, self.tty_open) {
                let mut ev = PollFlags::POLLIN;
                if !self.input.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(t.as_fd(), ev));
                slots.push(Slot::Tty);
            }
            for (i, o) in self.outs.iter().enumerate() {
                if let Some(o) = o {
                    fds.push(PollFd::new(o.as_fd(), PollFlags::POLLIN));
                    slots.push(Slot::Out(i));
                }
            }
            if let (Some(s), false) = (&self.stdin, self.input.is_empty()) {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLOUT));
                slots.push(Slot::Stdin);
            }
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Listener);
            }
            for (i, c) in self.clients.iter().enumerate() {
                let mut ev = PollFlags::POLLIN;
                if !c.queue.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(c.fd.as_fd(), ev));
                slots.push(Slot::Client(i));
            }
            if let Some(p) = &pidfd {
                fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
                slots.push(Slot::Init);
            }
            // Without a pidfd (old kernels), poll the process every 100 ms.
            let timeout = if pidfd.is_some() {
                PollTimeout::NONE
            } else {
                PollTimeout::from(100u16)
            };
            match poll(&mut fds, timeout) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(e) => {
                    tracing::error!("poll: {e}");
                    break;
                }
            }
            let ready: Vec<PollFlags> = fds
                .iter()
                .map(|f| f.revents().unwrap_or(PollFlags::empty()))
                .collect();
            drop(fds);
            let mut init_done = pidfd.is_none() && !process_alive(init);
            for (slot, rev) in slots.into_iter().zip(ready) {
                if rev.is_empty() {
                    continue;
                }
                match slot {
                    Slot::Tty => {
                        if rev.contains(PollFlags::POLLOUT) {
                            self.write_input();
                        }
                        if rev
                            .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                        {
                            self.read_source(None, &mut buf);
                        }
                    }
                    Slot::Out(i) => {
                        self.read_source(Some(i), &mut buf);
                    }
                    Slot::Stdin => self.write_input(),
                    Slot::Listener => self.accept(),
                    Slot::Client(i) => {
                        if rev.contains(PollFlags::POLLOUT) {
                            self.clients[i].flush();
                        }
                        if rev
                            .intersects(PollFlags::POLLIN | PollFlags::POLLHUP | PollFlags::POLLERR)
                        {
                            self.client_input(i);
                        }
                    }
                    Slot::Init => init_done = true,
                }
            }
            self.clients.retain(|c| !c.dead);
            if init_done {
                break;
            }
        }
        self.drain(&mut buf);
    }

    /// After init's end: reads what is left in the streams (the pid namespace is gone,
    /// but a helper may still hold a pipe's write end: never wait for end-of-file).
    fn drain(&mut self, buf: &mut [u8]) {
        for _ in 0..1024 {
            let mut got = false;
            if self.tty_open {
                got |= self.read_source(None, buf);
            }
            for i in 0..2 {
                if self.outs[i].is_some() {
                    got |= self.read_source(Some(i), buf);
                }
            }
            if !got {
                break;
            }
        }
        if let Some(l) = self.logger.as_mut() {
            let _ = l.flush();
        }
    }

    /// After the end, when no client has asked for output yet: serves the attach socket
    /// until one does (it gets the replay; [`Io::finish`] then sends the exit code) or
    /// `wait` passes.
    pub fn await_first_client(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        while self.replay.is_some() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            let mut fds = Vec::new();
            if let Some(l) = &self.listener {
                fds.push(PollFd::new(l.as_fd(), PollFlags::POLLIN));
            }
            for c in &self.clients {
                fds.push(PollFd::new(c.fd.as_fd(), PollFlags::POLLIN));
            }
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            match poll(&mut fds, PollTimeout::from(ms)) {
                Ok(_) | Err(Errno::EINTR) => {}
                Err(_) => return,
            }
            drop(fds);
            self.accept();
            for i in 0..self.clients.len() {
                self.client_input(i);
            }
            self.clients.retain(|c| !c.dead);
        }
    }

    /// Sends the exit code to the clients and waits (a bounded time) until they have
    /// everything.
    pub fn finish(mut self, code: i32) {
        for c in self.clients.iter_mut().filter(|c| c.output) {
            c.push(&Packet::Exit(code));
        }
        let deadline = Instant::now() + FINISH_TIMEOUT;
        loop {
            self.clients.iter_mut().for_each(Client::flush);
            self.clients.retain(|c| !c.dead && !c.queue.is_empty());
            let left = deadline.saturating_duration_since(Instant::now());
            if self.clients.is_empty() || left.is_zero() {
                break;
            }
            let mut fds: Vec<PollFd> = self
                .clients
                .iter()
                .map(|c| PollFd::new(c.fd.as_fd(), PollFlags::POLLOUT))
                .collect();
            let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
            let _ = poll(&mut fds, PollTimeout::from(ms));
        }
    }

    /// Reads one chunk from the tty (`None`) or pipe `i`; false when nothing came.
    fn read_source(&mut self, pipe: Option<usize>, buf: &mut [u8]) -> bool {
        let (fd, stream) = match pipe {
            None => match &self.tty {
                Some(t) => (t, 1u8),
                None => return false,
            },
            Some(i) => match &self.outs[i] {
                Some(o) => (o, i as u8 + 1),
                None => return false,
            },
        };
        match nix::unistd::read(fd, buf) {
            Ok(0) | Err(Errno::EIO) | Err(Errno::EBADF) => {
                // End of file (a pipe), or no slave left open (a pty: EIO).
                match pipe {
                    None => self.tty_open = false,
                    Some(i) => self.outs[i] = None,
                }
                false
            }
            Ok(n) => {
                let data = buf[..n].to_vec();
                self.broadcast(stream, data);
                true
            }
            Err(_) => false,
        }
    }

    fn broadcast(&mut self, stream: u8, data: Vec<u8>) {
        let sink = usize::from(stream)
            .checked_sub(1)
            .and_then(|i| self.sinks.get_mut(i));
        if let Some(slot) = sink {
            if let Some(f) = slot.as_mut() {
                if let Err(e) = std::io::Write::write_all(f, &data) {
                    // The client went away (its run is then killed by the daemon).
                    tracing::debug!("the client's stream {stream} is gone: {e}");
                    *slot = None;
                }
            }
        }
        if let Some(l) = self.logger.as_mut() {
            l.write(stream as usize, &data);
        }
        let p = Packet::Output { stream, data };
        if let Some((q, size)) = self.replay.as_mut() {
            if let Packet::Output { data, .. } = &p {
                *size += data.len();
            }
            q.push_back(p.clone());
            while *size > REPLAY_MAX {
                match q.pop_front() {
                    Some(Packet::Output { data, .. }) => *size -= data.len(),
                    Some(_) => {}
                    None => break,
                }
            }
        }
        for c in self.clients.iter_mut().filter(|c| c.output && !c.dead) {
            c.push(&p);
            c.flush();
        }
    }

    fn write_input(&mut self) {
        let fd = match (&self.tty, &self.stdin) {
            (Some(t), _) => t,
            (None, Some(s)) => s,
            (None, None) => {
                self.input.clear();
                return;
            }
        };
        while !self.input.is_empty() {
            let (front, _) = self.input.as_slices();
            match nix::unistd::write(fd, front) {
                Ok(n) => {
                    self.input.drain(..n);
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => {
                    // The container closed its stdin: drop what it will never read.
                    self.input.clear();
                    if self.tty.is_none() {
                        self.stdin = None;
                    }
                    break;
                }
            }
        }
        if self.input.is_empty() && self.stdin_done && self.tty.is_none() {
            self.stdin = None;
        }
    }

    fn accept(&mut self) {
        let Some(l) = &self.listener else { return };
        loop {
            match socket::accept4(l, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK) {
                Ok(fd) => {
                    let ours = socket::getsockopt(&fd, sockopt::PeerCredentials)
                        .is_ok_and(|c| c.uid() == nix::unistd::getuid().as_raw());
                    if !ours {
                        tracing::warn!("refused an attach connection from another user");
                        continue;
                    }
                    self.clients.push(Client {
                        fd,
                        output: false,
                        queue: VecDeque::new(),
                        queued: 0,
                        dead: false,
                    });
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
    }

    fn client_input(&mut self, i: usize) {
        loop {
            let p = match attach::recv(&self.clients[i].fd, MsgFlags::MSG_DONTWAIT) {
                Ok(Some(p)) => p,
                Ok(None) => {
                    self.clients[i].dead = true;
                    return;
                }
                Err(Errno::EAGAIN) => return,
                // The client closed with our answer unread: the kernel reports the reset
                // once, before the packets it sent last, which are still to be read.
                Err(Errno::ECONNRESET) => {
                    self.clients[i].dead = true;
                    continue;
                }
                Err(_) => {
                    self.clients[i].dead = true;
                    return;
                }
            };
            match p {
                Packet::Hello { flags } => {
                    let stdin = self.tty.is_some() || self.stdin.is_some();
                    let c = &mut self.clients[i];
                    c.push(&Packet::Info {
                        tty: self.tty.is_some(),
                        stdin,
                    });
                    if flags & WANT_OUTPUT != 0 {
                        c.output = true;
                        if let Some((q, _)) = self.replay.take() {
                            for p in q {
                                c.push(&p);
                            }
                        }
                    }
                    c.flush();
                }
                Packet::Input(d) => {
                    if (self.tty.is_some() || self.stdin.is_some())
                        && !self.stdin_done
                        && self.input.len() + d.len() <= INPUT_MAX
                    {
                        self.input.extend(d);
                        self.write_input();
                    }
                }
                Packet::InputDone => {
                    if self.tty.is_none() {
                        self.stdin_done = true;
                        self.write_input();
                    }
                }
                Packet::Resize { rows, cols } => {
                    if let Some(t) = &self.tty {
                        if let Err(e) = crate::runtime::pty::set_size(t, rows, cols) {
                            tracing::warn!("resize: {e}");
                        }
                    }
                }
                // Monitor-to-client packets from a client: ignore.
                Packet::Info { .. } | Packet::Output { .. } | Packet::Exit(_) => {}
            }
        }
    }
}

fn process_alive(pid: Pid) -> bool {
    nix::sys::wait::waitid(
        nix::sys::wait::Id::Pid(pid),
        nix::sys::wait::WaitPidFlag::WEXITED
            | nix::sys::wait::WaitPidFlag::WNOHANG
            | nix::sys::wait::WaitPidFlag::WNOWAIT,
    )
    .is_ok_and(|s| matches!(s, nix::sys::wait::WaitStatus::StillAlive))
}

#[cfg(test)]
#[path = "io_tests.rs"]
mod tests;
