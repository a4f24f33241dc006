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

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use super::{elfdeps, exec};

/// At most this much of a file is asked for: a big program's start touches only part
/// of it, and the rest would only fill the cache.
pub const MAX: u64 = 8 << 20;

/// The kernel's default read-ahead window, the most one `POSIX_FADV_WILLNEED` reads.
const WINDOW: u64 = 128 << 10;

/// Where a library named without a `/` is looked for: the directories the C libraries'
/// loaders search by default (glibc's multiarch and 64-bit ones first, then musl's).
#[cfg(target_arch = "x86_64")]
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];
#[cfg(target_arch = "aarch64")]
const LIB_DIRS: &[&str] = &[
    "/lib/aarch64-linux-gnu",
    "/usr/lib/aarch64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
    "/usr/local/lib",
];
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const LIB_DIRS: &[&str] = &["/lib64", "/usr/lib64", "/lib", "/usr/lib", "/usr/local/lib"];

/// A file whose read-ahead was asked for.
#[derive(Debug)]
pub struct Ahead {
    file: File,
    /// The bytes asked for.
    pub asked: u64,
}

/// Asks the kernel to read `args[0]`'s program (resolved through `env`'s `PATH`, as the
/// exec will) into the page cache, without waiting for it. None when nothing was asked.
pub fn program(args: &[String], env: &[String]) -> Option<Ahead> {
    let cmd = args.first()?;
    let path_var = exec::path_of_env(env).unwrap_or(exec::DEFAULT_PATH);
    let path = exec::resolve(cmd, path_var, exec::is_executable_file).ok()?;
    // A relative name is resolved by the exec in the working directory, which is not
    // this process's yet.
    if !path.is_absolute() {
        return None;
    }
    file(&path)
}

/// Asks the kernel to read the regular file at `path` into the page cache (its first
/// [`MAX`] bytes), without waiting for it.
fn file(path: &Path) -> Option<Ahead> {
    // The names come from the image (its command, its programs' headers): only a
    // regular file is opened, never a device or a FIFO, whose open could wait or act.
    // (Nothing of the container runs yet to swap it meanwhile; the open below is
    // non-blocking and takes no controlling tty anyway, and the type is checked again.)
    if !std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return None;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let meta = file.metadata().ok()?;
    if !meta.is_file() {
        return None;
    }
    let len = meta.len().min(MAX);
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
            tracing::debug!("read-ahead of {}: errno {r}", path.display());
            break;
        }
        off += n;
    }
    (off > 0).then_some(Ahead { file, asked: off })
}

impl Ahead {
    /// For a dynamically linked program: asks for the read-ahead of its ELF interpreter
    /// and of the libraries it names (found in [`LIB_DIRS`]), which the loader would
    /// otherwise fault in window by window after the exec. The program's headers are
    /// read only from pages already in the cache (its own read-ahead, asked for
    /// earlier): this never waits for them. Returns how many files were asked for.
    pub fn libraries(&self) -> usize {
        let Some(src) = Cached::map(&self.file, self.asked) else {
            return 0;
        };
        let Some(deps) = elfdeps::read(&src) else {
            return 0;
        };
        let mut n = 0;
        if let Some(interp) = deps.interp.filter(|i| i.starts_with('/')) {
            n += usize::from(file(Path::new(&interp)).is_some());
        }
        for name in deps.needed.iter().filter(|n| !n.contains('/')) {
            if LIB_DIRS
                .iter()
                .any(|d| file(&Path::new(d).join(name)).is_some())
            {
                n += 1;
            }
        }
        n
    }
}

/// The part of a file that is in the page cache, read without waiting for the rest: a
/// read-only mapping tells which pages are there (`mincore`), `pread` reads them.
struct Cached<'a> {
    file: &'a File,
    map: *mut libc::c_void,
    len: usize,
    page: usize,
}

impl<'a> Cached<'a> {
    /// Maps the first `len` bytes of `file`.
    fn map(file: &'a File, len: u64) -> Option<Cached<'a>> {
        let len = usize::try_from(len).ok().filter(|&l| l > 0)?;
        // SAFETY: sysconf has no memory effects.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) })
            .ok()
            .filter(|&p| p > 0)?;
        // SAFETY: a new read-only shared mapping of an open file; it is only given to
        // mincore (never dereferenced) and unmapped on drop.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        (map != libc::MAP_FAILED).then_some(Cached {
            file,
            map,
            len,
            page,
        })
    }
}

impl Drop for Cached<'_> {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `map`, of `len` bytes.
        unsafe { libc::munmap(self.map, self.len) };
    }
}

impl elfdeps::Source for Cached<'_> {
    fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(len)?.min(self.len);
        if start >= end {
            return None;
        }
        let first = start / self.page * self.page;
        let mut resident = vec![0u8; (end - first).div_ceil(self.page)];
        // SAFETY: the range lies within the mapping; the vector has one byte per page.
        let r = unsafe {
            libc::mincore(
                self.map.cast::<u8>().add(first).cast(),
                end - first,
                resident.as_mut_ptr(),
            )
        };
        if r != 0 || resident.iter().any(|v| v & 1 == 0) {
            return None;
        }
        let mut buf = vec![0u8; end - start];
        let n = std::os::unix::fs::FileExt::read_at(self.file, &mut buf, offset).ok()?;
        buf.truncate(n);
        Some(buf)
    }
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
        assert_eq!(program(&["prog".into()], &env).unwrap().asked, 5000);
    }

    #[test]
    fn a_dynamic_programs_loader_and_libraries_are_read_ahead_a_static_ones_not() {
        // This machine's coreutils are linked with glibc; its busybox is static. A copy
        // of our own: mincore tells the cached pages of a file only to its owner (or a
        // writer), as init is of the container's files.
        let dir = tempfile::tempdir().unwrap();
        let copy = dir.path().join("true");
        std::fs::copy("/bin/true", &copy).unwrap();
        let prog = file(&copy).unwrap();
        assert_eq!(prog.libraries(), 2, "ld.so and libc");
        if let Ok(b) = std::fs::read("/bin/busybox") {
            if elfdeps::read(&Bytes(b)).is_some_and(|d| d.interp.is_none()) {
                let copy = dir.path().join("busybox");
                std::fs::copy("/bin/busybox", &copy).unwrap();
                assert_eq!(file(&copy).unwrap().libraries(), 0);
            }
        }
    }

    struct Bytes(Vec<u8>);

    impl elfdeps::Source for Bytes {
        fn read(&self, offset: u64, len: usize) -> Option<Vec<u8>> {
            let start = usize::try_from(offset).ok()?;
            self.0
                .get(start..(start + len).min(self.0.len()))
                .map(<[u8]>::to_vec)
        }
    }

    #[test]
    fn what_is_not_a_regular_program_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let env = vec![format!("PATH={}", dir.path().display())];
        // Not found, not executable, a directory, a fifo (opening one must not block).
        let none = |args: &[String], env: &[String]| program(args, env).is_none();
        assert!(none(&["nosuch".into()], &env));
        std::fs::write(dir.path().join("data"), b"x").unwrap();
        assert!(none(&["data".into()], &env));
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o755)).unwrap();
        assert!(none(&[fifo.display().to_string()], &env));
        assert!(none(&[dir.path().display().to_string()], &env));
        assert!(none(&[], &env));
        // A relative name: the exec resolves it in the working directory, not here.
        let rel = vec!["PATH=.".to_string()];
        std::fs::write(dir.path().join("prog"), vec![7u8; 10]).unwrap();
        std::fs::set_permissions(
            dir.path().join("prog"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        assert!(none(&["prog".into()], &rel));
    }
}
