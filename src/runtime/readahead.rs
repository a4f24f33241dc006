//! The command's program read ahead of its exec.
//!
//! With the `fuse` storage driver each container has a mount of its own, so its page
//! cache starts empty, and the exec faults the program in one read-ahead window
//! (128 KiB) at a time: each a READ round trip to the FUSE server, one after the other
//! (busybox: ~20 of them, 2-3 ms of a `run --rm IMG true` on a 2-CPU machine). Once the
//! root is in place, init asks for the program's first [`MAX`] bytes at once
//! (`POSIX_FADV_WILLNEED`): the kernel queues the READs as background requests, the
//! server's event loops answer them while init finishes its set-up, and the exec finds
//! the pages in the cache. With the kernel overlay the pages are mostly cached already
//! (shared with the image's files) and the hint costs an open and a close.
//!
//! Only a hint: whatever fails is ignored, and the exec resolves the command again (as
//! the process's user, in its working directory) and reports its own errors.

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;

use super::exec;

/// At most this much of the program is asked for: a big program's start touches only
/// part of it, and the rest would only fill the cache.
pub const MAX: u64 = 8 << 20;

/// The kernel's default read-ahead window, the most one `POSIX_FADV_WILLNEED` reads.
const WINDOW: u64 = 128 << 10;

/// Asks the kernel to read `args[0]`'s program (resolved through `env`'s `PATH`, as the
/// exec will) into the page cache, without waiting for it. Returns how many bytes were
/// asked for (0 when nothing was).
pub fn program(args: &[String], env: &[String]) -> u64 {
    let Some(cmd) = args.first() else { return 0 };
    let path_var = exec::path_of_env(env).unwrap_or(exec::DEFAULT_PATH);
    let Ok(path) = exec::resolve(cmd, path_var, exec::is_executable_file) else {
        return 0;
    };
    // A relative name is resolved by the exec in the working directory, which is not
    // this process's yet.
    if !path.is_absolute() {
        return 0;
    }
    // Non-blocking and no controlling tty: whatever the name turns out to be, opening
    // it must not wait nor change anything; only a regular file is read.
    let Ok(file) = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&path)
    else {
        return 0;
    };
    let Ok(meta) = file.metadata() else { return 0 };
    if !meta.is_file() {
        return 0;
    }
    let len = meta.len().min(MAX);
    if len == 0 {
        return 0;
    }
    // The kernel reads at most one read-ahead window per call (`force_page_cache_ra`
    // caps it at the device's read-ahead size), so ask window by window: each call only
    // queues its READs, none waits for them.
    let mut off = 0;
    while off < len {
        let n = WINDOW.min(len - off);
        // SAFETY: fadvise only reads its arguments; the fd is open for the call.
        let r = unsafe {
            libc::posix_fadvise(
                file.as_raw_fd(),
                off as libc::off_t,
                n as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if r != 0 {
            tracing::debug!(
                "read-ahead of {:?}: errno {r}",
                OsStr::from_bytes(path.as_os_str().as_bytes())
            );
            return off;
        }
        off += n;
    }
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_program_on_the_path_is_read_ahead_up_to_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, vec![7u8; 5000]).unwrap();
        std::fs::set_permissions(&prog, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let env = vec![format!("PATH=/nonexistent:{}", dir.path().display())];
        assert_eq!(program(&["prog".into()], &env), 5000);
    }

    #[test]
    fn what_is_not_a_regular_program_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![format!("PATH={}", dir.path().display())];
        // Not found, not executable, a directory, a fifo (opening one must not block).
        assert_eq!(program(&["nosuch".into()], &env), 0);
        std::fs::write(dir.path().join("data"), b"x").unwrap();
        assert_eq!(program(&["data".into()], &env), 0);
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        assert_eq!(program(&[fifo.display().to_string()], &env), 0);
        assert_eq!(program(&[dir.path().display().to_string()], &env), 0);
        assert_eq!(program(&[], &env), 0);
        // A relative name: the exec resolves it in the working directory, not here.
        let rel = vec!["PATH=.".to_string()];
        std::fs::write(dir.path().join("prog"), vec![7u8; 10]).unwrap();
        std::fs::set_permissions(
            dir.path().join("prog"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert_eq!(program(&["prog".into()], &rel), 0);
    }
}
