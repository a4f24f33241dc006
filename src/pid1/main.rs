//! `skiff-init`: the minimal init `--init` puts in a container as PID 1 (docker's
//! `docker-init`, i.e. tini, made part of skiff). It runs the command as its child,
//! reaps every zombie that is re-parented to it, forwards every signal it can catch to
//! the child, and exits with the child's status (128+N when a signal N killed it).
//!
//! build.rs compiles this file on its own with `rustc -C target-feature=+crt-static`:
//! the binary is bind-mounted into containers whose images may have no C library at
//! all, so it must be static, which a crate's own binaries cannot be one by one. Hence
//! std only, and the few C functions std does not wrap declared here.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::{exit, Command};

/// `sigset_t` of glibc and musl on Linux (1024 bits).
#[repr(C)]
struct SigSet([u64; 16]);

/// `siginfo_t` (128 bytes); only the signal number (returned by sigwaitinfo) is used.
#[repr(C)]
struct SigInfo([u64; 16]);

const SIG_SETMASK: i32 = 2;
const SIGCHLD: i32 = 17;
const SIGTTOU: i32 = 22;
const WNOHANG: i32 = 1;
const EINTR: i32 = 4;
const SIG_DFL: usize = 0;
const SIG_IGN: usize = 1;

extern "C" {
    fn sigfillset(set: *mut SigSet) -> i32;
    fn sigemptyset(set: *mut SigSet) -> i32;
    fn sigprocmask(how: i32, set: *const SigSet, old: *mut SigSet) -> i32;
    fn sigwaitinfo(set: *const SigSet, info: *mut SigInfo) -> i32;
    fn waitpid(pid: i32, status: *mut i32, options: i32) -> i32;
    fn kill(pid: i32, sig: i32) -> i32;
    fn isatty(fd: i32) -> i32;
    fn tcsetpgrp(fd: i32, pgrp: i32) -> i32;
    fn getpid() -> i32;
    fn signal(sig: i32, handler: usize) -> usize;
}

/// The exit code for a wait status: the exit code, or 128+N for signal N.
fn exit_code(status: i32) -> i32 {
    let sig = status & 0x7f;
    if sig == 0 {
        (status >> 8) & 0xff
    } else {
        128 + sig
    }
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

fn main() {
    let mut args: Vec<OsString> = std::env::args_os().skip(1).collect();
    if args.first().is_some_and(|a| a == "--") {
        args.remove(0);
    }
    if args.is_empty() {
        eprintln!("skiff-init: usage: skiff-init [--] COMMAND [ARG...]");
        exit(125);
    }
    let mut all = SigSet([0; 16]);
    // SAFETY: sigfillset and sigprocmask write and read the sigset_t-sized buffer we own.
    unsafe {
        sigfillset(&mut all);
        sigprocmask(SIG_SETMASK, &all, std::ptr::null_mut());
    }
    let tty = {
        // SAFETY: isatty only inspects fd 0.
        unsafe { isatty(0) == 1 }
    };
    let mut cmd = Command::new(&args[0]);
    cmd.args(&args[1..]);
    if tty {
        // Its own process group in the terminal's foreground (as tini): Ctrl-C reaches
        // the command once, not through us as well.
        cmd.process_group(0);
    }
    // SAFETY: the closure calls only async-signal-safe functions (signal, tcsetpgrp,
    // getpid, sigemptyset, sigprocmask) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if tty {
                signal(SIGTTOU, SIG_IGN);
                tcsetpgrp(0, getpid());
                signal(SIGTTOU, SIG_DFL);
            }
            let mut none = SigSet([0; 16]);
            sigemptyset(&mut none);
            sigprocmask(SIG_SETMASK, &none, std::ptr::null_mut());
            Ok(())
        });
    }
    let child = match cmd.spawn() {
        Ok(c) => c.id() as i32,
        Err(e) => {
            let shown = args[0].to_string_lossy();
            eprintln!("skiff-init: exec \"{shown}\": {e}");
            exit(match e.kind() {
                std::io::ErrorKind::NotFound => 127,
                _ => 126,
            });
        }
    };
    loop {
        let mut info = SigInfo([0; 16]);
        // SAFETY: sigwaitinfo reads our set and writes the siginfo_t-sized buffer.
        let sig = unsafe { sigwaitinfo(&all, &mut info) };
        if sig < 0 {
            if errno() == EINTR {
                continue;
            }
            eprintln!("skiff-init: sigwaitinfo: {}", std::io::Error::last_os_error());
            exit(125);
        }
        if sig != SIGCHLD {
            // SAFETY: kill sends a signal to our child.
            unsafe { kill(child, sig) };
            continue;
        }
        // Reap everything that ended: our child and any orphan re-parented to PID 1.
        loop {
            let mut status = 0;
            // SAFETY: waitpid writes the status int we own.
            let pid = unsafe { waitpid(-1, &mut status, WNOHANG) };
            if pid <= 0 {
                break;
            }
            if pid == child {
                exit(exit_code(status));
            }
        }
    }
}
