//! The monitor's reaping: before it reports the exit, the container's processes that were
//! re-parented to it, without waiting for a network helper that ends on its own; after
//! the report, that helper.

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Collects the processes re-parented to us: when init (pid 1 of the container's pid
/// namespace) ends, the kernel kills the rest of the namespace and, as we are the child
/// subreaper, they become ours to reap. Returns when no child is left but `ending` (a
/// network helper told to end, whose end is not waited for: see
/// [`crate::netns::Helper::begin_stop`]; the monitor reaps it once the exit is
/// reported).
pub(super) fn reap_orphans(mut ending: Option<Pid>) {
    loop {
        if let Some(pid) = ending {
            // Look before blocking: with the helper our only child, we are done.
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) if only_child_is(pid) => return,
                Ok(WaitStatus::StillAlive) => {}
                Ok(status) => {
                    if status.pid() == Some(pid) {
                        ending = None;
                    }
                    continue;
                }
                Err(Errno::EINTR) => continue,
                Err(_) => return,
            }
        }
        // Others are still ending: wait for the next one (which may be the helper).
        match waitpid(Pid::from_raw(-1), None::<WaitPidFlag>) {
            Ok(status) => {
                if ending.is_some() && status.pid() == ending {
                    ending = None;
                }
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return,
        }
    }
}

/// Whether `pid` is our only child (from every thread's `/proc/self/task/*/children`);
/// false when that cannot be read (the caller then waits for every child, as without
/// the list).
fn only_child_is(pid: Pid) -> bool {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return false;
    };
    let mut seen = false;
    for task in tasks.flatten() {
        let Ok(list) = std::fs::read_to_string(task.path().join("children")) else {
            return false;
        };
        for child in list.split_whitespace() {
            if child.parse::<i32>().ok() != Some(pid.as_raw()) {
                return false;
            }
            seen = true;
        }
    }
    seen
}

/// Waits for the network helper `pid` that was told to end (0: none), once the exit has been
/// reported: left to whoever inherits it, it would stay a zombie under an init that does
/// not reap. Our standard streams (a client's terminal or pipes, when it runs attached)
/// are let go first, so that no reader waits for their end meanwhile.
pub(super) fn reap_ending_helper(pid: i32) {
    if pid <= 0 {
        return;
    }
    if let Ok(null) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        for fd in 0..=2 {
            // SAFETY: dup2 onto our own standard descriptors; nothing else in this
            // process uses them any more.
            unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) };
        }
    }
    loop {
        match nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Err(nix::errno::Errno::EINTR) => continue,
            _ => return,
        }
    }
}
