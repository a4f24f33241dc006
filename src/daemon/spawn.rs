//! Starting skiffd's helpers with `posix_spawn`: glibc runs the child on the parent's
//! memory until it execs (`clone(CLONE_VM | CLONE_VFORK)`), so no page table of the
//! multi-threaded daemon is copied, which a fork (std's `Command` with a `pre_exec`
//! closure) does: 2.5-5.5 ms per start on a loaded machine. What the `pre_exec` closure
//! did is done by spawn attributes and file actions: a new session
//! (`POSIX_SPAWN_SETSID`), the signal mask emptied and SIGPIPE back to its default (as
//! std does), each passed descriptor `dup2`ed onto its number, and every descriptor above
//! the highest of those closed in the child (`posix_spawn_file_actions_addclosefrom_np`):
//! the child holds its stdio, its passed descriptors and nothing else of ours.
//!
//! The child is followed through a pidfd: waited for without a SIGCHLD handler, killed
//! without a pid-reuse race, and reaped in a task if dropped unwaited.
//!
//! A monitor (`skiff-monitor`) is forked by the monitor zygote instead, with the same
//! argv, environment and descriptors, when the zygote can serve ([`super::zygote`]):
//! it is our child all the same, followed through the pidfd the zygote sends.

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::ExitStatus;

use tokio::io::unix::AsyncFd;

/// What to start.
pub struct Spawn<'a> {
    /// The executable (a path: no `PATH` search).
    pub exe: &'a Path,
    /// argv\[0\] (default: `exe`).
    pub arg0: Option<&'a OsStr>,
    /// The arguments after argv\[0\].
    pub args: &'a [&'a OsStr],
    /// Variables added to (or replacing in) our environment.
    pub env: Vec<(OsString, OsString)>,
    /// Variables of ours the child does not get.
    pub env_remove: &'a [&'a str],
    /// The child's fd 0, 1, 2 (None: /dev/null).
    pub stdio: [Option<OwnedFd>; 3],
    /// Descriptors given to the child on fixed numbers above 2.
    pub fds: Vec<(OwnedFd, RawFd)>,
    /// Fork the child from this monitor zygote rather than exec it, when `exe` has one
    /// (see [`super::zygote`]); exec'd when the zygote cannot serve. Its round trip
    /// blocks: a spawn with a zygote runs on a blocking thread.
    pub zygote: Option<&'a super::zygote::Client>,
}

/// A spawned child, followed through its pidfd.
pub struct Child {
    pid: libc::pid_t,
    pidfd: Option<AsyncFd<OwnedFd>>,
    status: Option<ExitStatus>,
}

/// A C string from bytes that must not hold NUL.
fn cstring(b: &[u8]) -> io::Result<CString> {
    CString::new(b).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in an argument"))
}

/// The child's environment: ours, without `remove`, with `set` on top.
fn environment(set: &[(OsString, OsString)], remove: &[&str]) -> io::Result<Vec<CString>> {
    let mut out = Vec::new();
    for (k, v) in std::env::vars_os() {
        let name = k.as_bytes();
        if remove.iter().any(|r| r.as_bytes() == name) || set.iter().any(|(s, _)| s == &k) {
            continue;
        }
        out.push(cstring(&[name, b"=", v.as_bytes()].concat())?);
    }
    for (k, v) in set {
        out.push(cstring(&[k.as_bytes(), b"=", v.as_bytes()].concat())?);
    }
    Ok(out)
}

/// A libc call's result as io::Result (posix_spawn's family returns the error number).
fn check(r: libc::c_int) -> io::Result<()> {
    match r {
        0 => Ok(()),
        e => Err(io::Error::from_raw_os_error(e)),
    }
}

/// posix_spawn's attribute and file-action objects, destroyed on drop.
struct Objects {
    attr: libc::posix_spawnattr_t,
    actions: libc::posix_spawn_file_actions_t,
}

impl Objects {
    fn new() -> io::Result<Box<Objects>> {
        // SAFETY: both are plain C structs, initialised by the init calls below before use.
        let mut o: Box<Objects> = Box::new(unsafe { std::mem::zeroed() });
        // SAFETY: init on a zeroed object we own.
        check(unsafe { libc::posix_spawnattr_init(&mut o.attr) })?;
        // SAFETY: as above.
        if let Err(e) = check(unsafe { libc::posix_spawn_file_actions_init(&mut o.actions) }) {
            // SAFETY: attr was initialised above.
            unsafe { libc::posix_spawnattr_destroy(&mut o.attr) };
            return Err(e);
        }
        Ok(o)
    }
}

impl Drop for Objects {
    fn drop(&mut self) {
        // SAFETY: both were initialised in `new` and are destroyed once.
        unsafe {
            libc::posix_spawn_file_actions_destroy(&mut self.actions);
            libc::posix_spawnattr_destroy(&mut self.attr);
        }
    }
}

/// Duplicates `fd` close-on-exec onto a number above `top`.
fn dup_above(fd: RawFd, top: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: F_DUPFD_CLOEXEC makes a new descriptor or fails.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, top + 1) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fcntl just returned this new descriptor; we own it.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

impl Spawn<'_> {
    /// Starts the child (in a new session) and opens its pidfd. Needs a tokio runtime.
    pub fn spawn(self) -> io::Result<Child> {
        let top = self.fds.iter().map(|(_, t)| *t).max().unwrap_or(2).max(2);
        if self.fds.iter().any(|(_, t)| *t <= 2) {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        let null = std::fs::File::open("/dev/null")?;
        // Every source above every target first, so no dup2 in the child clobbers
        // another source; ours are closed when this returns.
        let mut moves = Vec::new();
        for (i, fd) in self.stdio.iter().enumerate() {
            let raw = fd.as_ref().map_or(null.as_raw_fd(), |f| f.as_raw_fd());
            moves.push((dup_above(raw, top)?, i as RawFd));
        }
        for (fd, target) in &self.fds {
            moves.push((dup_above(fd.as_raw_fd(), top)?, *target));
        }
        let mut o = Objects::new()?;
        for (fd, target) in &moves {
            // SAFETY: an initialised file-actions object; the numbers are ours.
            check(unsafe {
                libc::posix_spawn_file_actions_adddup2(&mut o.actions, fd.as_raw_fd(), *target)
            })?;
        }
        // SAFETY: as above (glibc ≥ 2.34).
        check(unsafe { libc::posix_spawn_file_actions_addclosefrom_np(&mut o.actions, top + 1) })?;
        // SAFETY: sigset_t is a plain C struct that sigemptyset initialises.
        let mut empty: libc::sigset_t = unsafe { std::mem::zeroed() };
        // SAFETY: sigemptyset/sigaddset on our own set; the attr calls on an
        // initialised attribute object.
        unsafe {
            libc::sigemptyset(&mut empty);
            check(libc::posix_spawnattr_setsigmask(&mut o.attr, &empty))?;
            let mut pipe: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut pipe);
            libc::sigaddset(&mut pipe, libc::SIGPIPE);
            check(libc::posix_spawnattr_setsigdefault(&mut o.attr, &pipe))?;
            let flags = libc::POSIX_SPAWN_SETSID
                | (libc::POSIX_SPAWN_SETSIGMASK | libc::POSIX_SPAWN_SETSIGDEF) as libc::c_short;
            check(libc::posix_spawnattr_setflags(&mut o.attr, flags))?;
        }
        let path = cstring(self.exe.as_os_str().as_bytes())?;
        let mut argv = vec![cstring(
            self.arg0.unwrap_or(self.exe.as_os_str()).as_bytes(),
        )?];
        for a in self.args {
            argv.push(cstring(a.as_bytes())?);
        }
        let envp = environment(&self.env, self.env_remove)?;
        if let Some(zygote) = self.zygote.filter(|_| super::zygote::serves(self.exe)) {
            let fds: Vec<(RawFd, RawFd)> = moves
                .iter()
                .map(|(fd, target)| (fd.as_raw_fd(), *target))
                .collect();
            match zygote.fork_monitor(self.exe, &argv, &envp, &fds) {
                Ok((pid, pidfd)) => return Child::follow(pid, pidfd),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    tracing::debug!("{e}: the monitor is exec'd")
                }
                Err(e) => zygote.log_fallback(self.exe, &e),
            }
        }
        let mut argv_p: Vec<*mut libc::c_char> = argv
            .iter()
            .map(|s| s.as_ptr() as *mut libc::c_char)
            .collect();
        argv_p.push(std::ptr::null_mut());
        let mut envp_p: Vec<*mut libc::c_char> = envp
            .iter()
            .map(|s| s.as_ptr() as *mut libc::c_char)
            .collect();
        envp_p.push(std::ptr::null_mut());
        let mut pid: libc::pid_t = 0;
        // SAFETY: NUL-terminated path, NULL-terminated argv and envp whose strings live
        // until the call returns; initialised attribute and file-action objects.
        check(unsafe {
            libc::posix_spawn(
                &mut pid,
                path.as_ptr(),
                &o.actions,
                &o.attr,
                argv_p.as_ptr(),
                envp_p.as_ptr(),
            )
        })?;
        drop(moves);
        // SAFETY: pidfd_open on our own unreaped child (its pid cannot be reused).
        let raw = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if raw < 0 {
            let e = io::Error::last_os_error();
            Child::unfollowed(pid).kill_and_reap();
            return Err(e);
        }
        // SAFETY: pidfd_open returned a new descriptor (close-on-exec by the kernel).
        let pidfd = unsafe { OwnedFd::from_raw_fd(raw as RawFd) };
        Child::follow(pid, pidfd)
    }
}

impl Child {
    fn unfollowed(pid: libc::pid_t) -> Child {
        Child {
            pid,
            pidfd: None,
            status: None,
        }
    }

    /// Follows our child `pid` through its `pidfd` (killed and reaped if that fails).
    fn follow(pid: libc::pid_t, pidfd: OwnedFd) -> io::Result<Child> {
        let mut child = Child::unfollowed(pid);
        // SAFETY: the AsyncFd owns the OwnedFd, which stays open and the same until the
        // AsyncFd is dropped.
        match unsafe { AsyncFd::register_with_interest(pidfd, tokio::io::Interest::READABLE) } {
            Ok(fd) => child.pidfd = Some(fd),
            Err(e) => {
                child.kill_and_reap();
                return Err(e.into());
            }
        }
        Ok(child)
    }

    /// The child's pid.
    pub fn id(&self) -> u32 {
        self.pid as u32
    }

    /// Reaps the child if it has ended (`waitpid(WNOHANG)`).
    fn try_reap(&mut self) -> io::Result<Option<ExitStatus>> {
        if let Some(s) = self.status {
            return Ok(Some(s));
        }
        let s = reap_if_ended(self.pid)?;
        self.status = s;
        Ok(s)
    }

    /// Waits for the child's end and reaps it.
    pub async fn wait(&mut self) -> io::Result<ExitStatus> {
        loop {
            if let Some(s) = self.try_reap()? {
                return Ok(s);
            }
            let Some(fd) = &self.pidfd else {
                return Err(io::Error::other("no pidfd"));
            };
            // A pidfd is readable once the process has ended; the readiness is cleared
            // here and the process reaped on the next turn (an exit after the clear
            // makes it ready again).
            fd.readable().await?.clear_ready();
        }
    }

    /// Sends SIGKILL (through the pidfd: never to another process that got the pid).
    pub fn start_kill(&self) -> io::Result<()> {
        if self.status.is_some() {
            return Ok(());
        }
        let Some(fd) = &self.pidfd else {
            return Err(io::Error::other("no pidfd"));
        };
        // SAFETY: pidfd_send_signal on our pidfd, no siginfo, no flags.
        let r = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                fd.get_ref().as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            )
        };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Kills and reaps synchronously (spawn's own failure paths, before any wait).
    fn kill_and_reap(&mut self) {
        // SAFETY: our unreaped child: its pid is still ours.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut st = 0;
        // SAFETY: waitpid on our own child.
        unsafe { libc::waitpid(self.pid, &mut st, 0) };
        self.status = Some(ExitStatus::from_raw(st));
    }
}

/// Reaps our child `pid` if it has ended (`waitpid(WNOHANG)`).
fn reap_if_ended(pid: libc::pid_t) -> io::Result<Option<ExitStatus>> {
    let mut st = 0;
    // SAFETY: waitpid on our own child, writing into our int.
    let r = unsafe { libc::waitpid(pid, &mut st, libc::WNOHANG) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((r != 0).then(|| ExitStatus::from_raw(st)))
}

impl Drop for Child {
    /// A child dropped unwaited is reaped in a task when it ends (no zombie is left).
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        let Some(pidfd) = self.pidfd.take() else {
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let pid = self.pid;
        // The task holds the pid and its pidfd, not a Child: while the runtime shuts
        // down, a new task is dropped as soon as it is spawned, and a Child in it would
        // come back here and spawn another without end (a stack overflow at every
        // skiffd stop with a container running). Dropped unrun, it leaves the process
        // to whoever reaps skiffd's children after it.
        handle.spawn(async move {
            while let Ok(None) = reap_if_ended(pid) {
                match pidfd.readable().await {
                    Ok(mut ready) => ready.clear_ready(),
                    Err(_) => break,
                }
            }
        });
        // This one no longer owns the child.
        self.status = Some(ExitStatus::from_raw(0));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// The child gets its stdio and the passed descriptors on their numbers, nothing
    /// else of ours (not even one left inheritable by mistake), a session of its own,
    /// no blocked signal and SIGPIPE at its default; its exit status comes back.
    #[tokio::test]
    async fn child_gets_only_its_fds_a_session_and_a_clean_signal_state() {
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let (_pr, pw) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        // An inheritable descriptor the child must not get.
        let leak = std::fs::File::open("/dev/null").unwrap();
        // SAFETY: F_SETFD on our own descriptor.
        unsafe { libc::fcntl(leak.as_raw_fd(), libc::F_SETFD, 0) };
        // `[ -e ]` opens nothing (a glob of /proc/$$/fd would hold the directory open).
        // The status is read by the shell itself: dash blocks every signal while it
        // vforks a command, so a `grep` of /proc/$$/status could see that mask.
        let script = format!(
            "printf fds:; for n in $(seq 0 {top}); do [ -e /proc/$$/fd/$n ] && printf \" $n\"; \
             done; echo; read -r _ _ _ _ _ sid _ < /proc/$$/stat; echo sid: $sid pid: $$; \
             while read -r k v; do case $k in SigBlk:|SigIgn:) printf '%s\\t%s\\n' $k $v;; \
             esac; done < /proc/$$/status; exit 7",
            top = leak.as_raw_fd().max(20)
        );
        let args = [OsStr::new("-c"), OsStr::new(&script)];
        let mut child = Spawn {
            exe: Path::new("/bin/sh"),
            arg0: Some(OsStr::new("spawn-test")),
            args: &args,
            env: vec![("SPAWN_TEST".into(), "1".into())],
            env_remove: &["PATH"],
            stdio: [None, Some(w), None],
            fds: vec![(pw, 5)],
            zygote: None,
        }
        .spawn()
        .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.code(), Some(7));
        let mut out = String::new();
        std::fs::File::from(r).read_to_string(&mut out).unwrap();
        assert!(out.contains("fds: 0 1 2 5\n"), "{out}");
        let pid = child.id();
        assert!(out.contains(&format!("sid: {pid} pid: {pid}\n")), "{out}");
        assert!(out.contains("SigBlk:\t0000000000000000"), "{out}");
        // SIGPIPE (bit 13) is ignored in a Rust test process; the child has it default.
        let ign = out.lines().find(|l| l.starts_with("SigIgn:")).unwrap();
        let bits = u64::from_str_radix(ign.trim_start_matches("SigIgn:").trim(), 16).unwrap();
        assert_eq!(bits & (1 << (libc::SIGPIPE - 1)), 0, "{out}");
        drop(leak);
    }

    /// `sleep 1000`, spawned (in a runtime: its pidfd is registered with it).
    fn spawn_sleeper() -> Child {
        let args = [OsStr::new("1000")];
        Spawn {
            exe: Path::new("/bin/sleep"),
            arg0: None,
            args: &args,
            env: Vec::new(),
            env_remove: &[],
            stdio: [None, None, None],
            fds: Vec::new(),
            zygote: None,
        }
        .spawn()
        .unwrap()
    }

    /// A child killed through its pidfd is reaped with its signal.
    #[tokio::test]
    async fn kill_ends_and_reaps_the_child() {
        let mut child = spawn_sleeper();
        child.start_kill().unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    /// A child left unwaited in a task when the runtime shuts down (skiffd stopping
    /// while a container runs: its monitor's Child sits in a waiting task) is let go.
    /// Before, its drop spawned a reaper task holding a new Child, which the shutting
    /// runtime dropped at once, whose drop spawned another, until the stack overflowed
    /// and the process aborted.
    #[test]
    fn a_child_in_a_task_dropped_at_runtime_shutdown_is_let_go() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let child = rt.block_on(async { spawn_sleeper() });
        let pid = child.pid;
        let (waiting_tx, waiting_rx) = std::sync::mpsc::channel();
        rt.spawn(async move {
            let mut child = child;
            let _ = waiting_tx.send(());
            let _ = child.wait().await;
        });
        waiting_rx.recv().unwrap();
        // Shuts down: the waiting task (and its Child) is dropped on the runtime.
        drop(rt);
        // The process was let go, not killed or reaped: end it here.
        // SAFETY: our own unreaped child.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
        let mut st = 0;
        // SAFETY: waitpid on our own child.
        assert_eq!(unsafe { libc::waitpid(pid, &mut st, 0) }, pid);
    }
}
