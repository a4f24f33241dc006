//! Thin `*at()` system-call wrappers on held directory fds, returning raw errnos (what a
//! FUSE reply needs). Extended attributes are reached through `/proc/self/fd/N[/name]`
//! with the `l*xattr` calls, which work for `O_PATH` fds and for symlinks.

use std::ffi::{CString, OsStr, OsString};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, Ordering};

/// A raw errno.
pub type Errno = i32;
/// A result carrying a raw errno.
pub type SysResult<T> = Result<T, Errno>;

fn errno() -> Errno {
    std::io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(r: libc::c_int) -> SysResult<libc::c_int> {
    if r < 0 {
        Err(errno())
    } else {
        Ok(r)
    }
}

/// A C string from a file name (names never contain NUL: the kernel passes C strings).
pub fn cstr(name: &OsStr) -> SysResult<CString> {
    CString::new(name.as_bytes()).map_err(|_| libc::EINVAL)
}

/// `openat(dir, name, flags | O_CLOEXEC | O_NOFOLLOW, mode)`.
pub fn openat(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    let c = cstr(name)?;
    // SAFETY: a valid C string and plain flags; the returned fd is owned by us.
    let fd = unsafe {
        libc::openat(
            dir,
            c.as_ptr(),
            flags | libc::O_CLOEXEC | libc::O_NOFOLLOW,
            mode as libc::c_uint,
        )
    };
    check(fd)?;
    // SAFETY: fd was just returned by openat and is not owned elsewhere.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `O_PATH` fd of the directory `name` in `dir`.
pub fn open_dir_path(dir: RawFd, name: &OsStr) -> SysResult<OwnedFd> {
    openat(dir, name, libc::O_PATH | libc::O_DIRECTORY, 0)
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`; an empty name stats `dir` itself.
pub fn statat(dir: RawFd, name: &OsStr) -> SysResult<libc::stat> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: zeroed stat is a valid out-buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers.
    check(unsafe { libc::fstatat(dir, c.as_ptr(), &mut st, flags) })?;
    Ok(st)
}

/// `fstat(fd)`.
pub fn fstat(fd: RawFd) -> SysResult<libc::stat> {
    // SAFETY: as in statat.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointer.
    check(unsafe { libc::fstat(fd, &mut st) })?;
    Ok(st)
}

/// Where an xattr call goes: `/proc/self/fd/N/name` without following the last
/// component, or, for an empty name, the object behind fd N itself.
#[derive(Debug)]
pub struct XPath {
    path: CString,
    follow: bool,
}

/// Set once the server's root is /proc itself (see [`confine_to_proc`]).
static ROOT_IS_PROC: AtomicBool = AtomicBool::new(false);

/// Makes /proc the server's root directory. The container's init pivots into the FUSE
/// mount, and `pivot_root` moves every process of the mount namespace whose root is the
/// old root, the server included; paths through /proc would then resolve inside the
/// container (whose procfs does not see the server). A root of /proc is left alone.
pub fn confine_to_proc() -> SysResult<()> {
    let p = CString::new("/proc").map_err(|_| libc::EINVAL)?;
    let root = CString::new("/").map_err(|_| libc::EINVAL)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::chroot(p.as_ptr()) })?;
    // SAFETY: valid C string.
    check(unsafe { libc::chdir(root.as_ptr()) })?;
    ROOT_IS_PROC.store(true, Ordering::Relaxed);
    Ok(())
}

/// The path through /proc of `dir`/`name` (or `dir` itself for an empty name).
pub fn proc_path(dir: RawFd, name: &OsStr) -> SysResult<CString> {
    let prefix = if ROOT_IS_PROC.load(Ordering::Relaxed) {
        ""
    } else {
        "/proc"
    };
    let mut p = format!("{prefix}/self/fd/{dir}").into_bytes();
    if !name.is_empty() {
        p.push(b'/');
        p.extend_from_slice(name.as_bytes());
    }
    CString::new(p).map_err(|_| libc::EINVAL)
}

/// The xattr target for `dir`/`name`.
pub fn xpath(dir: RawFd, name: &OsStr) -> SysResult<XPath> {
    Ok(XPath {
        path: proc_path(dir, name)?,
        follow: name.is_empty(),
    })
}

/// `getxattr`, `None` when the attribute is absent.
pub fn getxattr(p: &XPath, attr: &OsStr) -> SysResult<Option<Vec<u8>>> {
    let a = cstr(attr)?;
    let mut buf = vec![0u8; 256];
    loop {
        let (ptr, len) = (buf.as_mut_ptr().cast(), buf.len());
        // SAFETY: buffer and length match.
        let n = unsafe {
            if p.follow {
                libc::getxattr(p.path.as_ptr(), a.as_ptr(), ptr, len)
            } else {
                libc::lgetxattr(p.path.as_ptr(), a.as_ptr(), ptr, len)
            }
        };
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(Some(buf));
        }
        match errno() {
            libc::ENODATA => return Ok(None),
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            e => return Err(e),
        }
    }
}

/// `listxattr`: the attribute names.
pub fn listxattr(p: &XPath) -> SysResult<Vec<OsString>> {
    list_names(|ptr, len| {
        // SAFETY: the caller's buffer and length match.
        unsafe {
            if p.follow {
                libc::listxattr(p.path.as_ptr(), ptr, len)
            } else {
                libc::llistxattr(p.path.as_ptr(), ptr, len)
            }
        }
    })
}

/// `flistxattr` of an open (not `O_PATH`) fd: the attribute names.
pub fn flistxattr(fd: RawFd) -> SysResult<Vec<OsString>> {
    // SAFETY: the caller's buffer and length match.
    list_names(|ptr, len| unsafe { libc::flistxattr(fd, ptr, len) })
}

/// Runs a listxattr-like call with a growing buffer and splits the names.
fn list_names(
    call: impl Fn(*mut libc::c_char, usize) -> libc::ssize_t,
) -> SysResult<Vec<OsString>> {
    let mut buf = vec![0u8; 1024];
    loop {
        let n = call(buf.as_mut_ptr().cast(), buf.len());
        if n >= 0 {
            buf.truncate(n as usize);
            return Ok(buf
                .split(|b| *b == 0)
                .filter(|s| !s.is_empty())
                .map(|s| OsString::from_vec(s.to_vec()))
                .collect());
        }
        match errno() {
            libc::ERANGE if buf.len() < 1 << 20 => buf.resize(buf.len() * 8, 0),
            libc::ENOTSUP => return Ok(Vec::new()),
            e => return Err(e),
        }
    }
}

/// `setxattr`.
pub fn setxattr(p: &XPath, attr: &OsStr, value: &[u8], flags: i32) -> SysResult<()> {
    let a = cstr(attr)?;
    let (ptr, len) = (value.as_ptr().cast(), value.len());
    // SAFETY: buffer and length match.
    check(unsafe {
        if p.follow {
            libc::setxattr(p.path.as_ptr(), a.as_ptr(), ptr, len, flags)
        } else {
            libc::lsetxattr(p.path.as_ptr(), a.as_ptr(), ptr, len, flags)
        }
    })
    .map(drop)
}

/// `removexattr`.
pub fn removexattr(p: &XPath, attr: &OsStr) -> SysResult<()> {
    let a = cstr(attr)?;
    // SAFETY: valid C strings.
    check(unsafe {
        if p.follow {
            libc::removexattr(p.path.as_ptr(), a.as_ptr())
        } else {
            libc::lremovexattr(p.path.as_ptr(), a.as_ptr())
        }
    })
    .map(drop)
}

/// Opens `dir`/`name`, or reopens the object behind `dir` (an `O_PATH` fd) when the
/// name is empty.
pub fn open_at(dir: RawFd, name: &OsStr, flags: i32, mode: u32) -> SysResult<OwnedFd> {
    if !name.is_empty() {
        return openat(dir, name, flags, mode);
    }
    let p = proc_path(dir, name)?;
    // SAFETY: a valid C string; the returned fd is owned by us.
    let flags = (flags & !libc::O_NOFOLLOW) | libc::O_CLOEXEC;
    // SAFETY: as above.
    let fd = unsafe { libc::open(p.as_ptr(), flags, mode as libc::c_uint) };
    check(fd)?;
    // SAFETY: fd was just returned by open.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `mkdirat`.
pub fn mkdirat(dir: RawFd, name: &OsStr, mode: u32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mkdirat(dir, c.as_ptr(), mode) }).map(drop)
}

/// `mknodat`.
pub fn mknodat(dir: RawFd, name: &OsStr, mode: u32, rdev: u64) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::mknodat(dir, c.as_ptr(), mode, rdev) }).map(drop)
}

/// `symlinkat`.
pub fn symlinkat(target: &OsStr, dir: RawFd, name: &OsStr) -> SysResult<()> {
    let t = cstr(target)?;
    let c = cstr(name)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::symlinkat(t.as_ptr(), dir, c.as_ptr()) }).map(drop)
}

/// `readlinkat`.
pub fn readlinkat(dir: RawFd, name: &OsStr) -> SysResult<Vec<u8>> {
    let c = cstr(name)?;
    let mut buf = vec![0u8; libc::PATH_MAX as usize];
    // SAFETY: buffer and length match.
    let n = unsafe { libc::readlinkat(dir, c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(errno());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// `unlinkat`.
pub fn unlinkat(dir: RawFd, name: &OsStr, flags: i32) -> SysResult<()> {
    let c = cstr(name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::unlinkat(dir, c.as_ptr(), flags) }).map(drop)
}

/// `renameat2`.
pub fn renameat(
    olddir: RawFd,
    old: &OsStr,
    newdir: RawFd,
    new: &OsStr,
    flags: u32,
) -> SysResult<()> {
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::renameat2(olddir, o.as_ptr(), newdir, n.as_ptr(), flags) }).map(drop)
}

/// `linkat` (no symlink following); an empty `old` links the file behind `olddir`.
pub fn linkat(olddir: RawFd, old: &OsStr, newdir: RawFd, new: &OsStr) -> SysResult<()> {
    if old.is_empty() {
        let p = proc_path(olddir, old)?;
        let n = cstr(new)?;
        // SAFETY: valid C strings.
        return check(unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                p.as_ptr(),
                newdir,
                n.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        })
        .map(drop);
    }
    let o = cstr(old)?;
    let n = cstr(new)?;
    // SAFETY: valid C strings.
    check(unsafe { libc::linkat(olddir, o.as_ptr(), newdir, n.as_ptr(), 0) }).map(drop)
}

/// `fchownat(AT_SYMLINK_NOFOLLOW)`; `u32::MAX` leaves an id unchanged.
pub fn chownat(dir: RawFd, name: &OsStr, uid: u32, gid: u32) -> SysResult<()> {
    let c = cstr(name)?;
    let flags = if name.is_empty() {
        libc::AT_SYMLINK_NOFOLLOW | libc::AT_EMPTY_PATH
    } else {
        libc::AT_SYMLINK_NOFOLLOW
    };
    // SAFETY: valid C string.
    check(unsafe { libc::fchownat(dir, c.as_ptr(), uid, gid, flags) }).map(drop)
}

/// `fchmodat` (symlinks have no mode of their own; callers skip them).
pub fn chmodat(dir: RawFd, name: &OsStr, mode: u32) -> SysResult<()> {
    let p = proc_path(dir, name)?;
    // SAFETY: valid C string.
    check(unsafe { libc::chmod(p.as_ptr(), mode) }).map(drop)
}

/// `utimensat(AT_SYMLINK_NOFOLLOW)` with two timespecs (`UTIME_OMIT`/`UTIME_NOW` allowed).
pub fn utimensat(dir: RawFd, name: &OsStr, times: &[libc::timespec; 2]) -> SysResult<()> {
    if name.is_empty() {
        let p = proc_path(dir, name)?;
        // SAFETY: valid pointers.
        return check(unsafe { libc::utimensat(libc::AT_FDCWD, p.as_ptr(), times.as_ptr(), 0) })
            .map(drop);
    }
    let c = cstr(name)?;
    // SAFETY: valid pointers.
    check(unsafe { libc::utimensat(dir, c.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW) })
        .map(drop)
}

/// `pread` into `buf`, looping over short reads; returns the bytes read.
pub fn pread(fd: RawFd, buf: &mut [u8], mut off: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < buf.len() {
        // SAFETY: the slice bounds are respected.
        let n = unsafe {
            libc::pread(
                fd,
                buf[done..].as_mut_ptr().cast(),
                buf.len() - done,
                off as libc::off_t,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
        off += n as u64;
    }
    Ok(done)
}

/// Drops the set-user-ID bit, and the set-group-ID bit of a group-executable file, from
/// the file behind `fd` (what the kernel does when an unprivileged writer writes).
pub fn kill_suidgid(fd: RawFd) -> SysResult<()> {
    let st = fstat(fd)?;
    let mut mode = st.st_mode & 0o7777;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode == st.st_mode & 0o7777 {
        return Ok(());
    }
    // SAFETY: plain syscall on a valid fd.
    check(unsafe { libc::fchmod(fd, mode) }).map(drop)
}

/// `pwrite` of `data`, looping over short writes; returns the bytes written. An error
/// after some bytes were written returns the count (as write(2) does); the error comes
/// again at the next call. A write that makes no progress ends the loop.
pub fn pwrite(fd: RawFd, data: &[u8], mut off: u64) -> SysResult<usize> {
    let mut done = 0;
    while done < data.len() {
        // SAFETY: the slice bounds are respected.
        let n = unsafe {
            libc::pwrite(
                fd,
                data[done..].as_ptr().cast(),
                data.len() - done,
                off as libc::off_t,
            )
        };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            if done > 0 {
                break;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        done += n as usize;
        off += n as u64;
    }
    Ok(done)
}

/// `pwrite` of all of `data`: a short write is an error (ENOSPC if the filesystem
/// gave none).
pub fn pwrite_all(fd: RawFd, data: &[u8], off: u64) -> SysResult<()> {
    let mut done = 0;
    while done < data.len() {
        match pwrite(fd, &data[done..], off + done as u64)? {
            0 => return Err(libc::ENOSPC),
            n => done += n,
        }
    }
    Ok(())
}

/// Copies all data of `src` to `dst`: FICLONE, then `copy_file_range`, then read/write.
pub fn copy_data(src: &OwnedFd, dst: &OwnedFd) -> SysResult<()> {
    // SAFETY: FICLONE takes the source fd as its argument.
    if unsafe { libc::ioctl(dst.as_raw_fd(), libc::FICLONE as _, src.as_raw_fd()) } == 0 {
        return Ok(());
    }
    loop {
        // SAFETY: null offsets use and advance the file positions.
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                1 << 30,
                0,
            )
        };
        if n == 0 {
            return Ok(());
        }
        if n < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EXDEV | libc::ENOSYS | libc::EINVAL | libc::EOPNOTSUPP => break,
                e => return Err(e),
            }
        }
    }
    let mut buf = vec![0u8; 1 << 20];
    let mut off = 0u64;
    loop {
        let n = pread(src.as_raw_fd(), &mut buf, off)?;
        if n == 0 {
            return Ok(());
        }
        pwrite_all(dst.as_raw_fd(), &buf[..n], off)?;
        off += n as u64;
    }
}

/// The entries of the directory behind the `O_PATH` fd `dir`: (name, d_type, d_ino),
/// without "." and "..".
pub fn read_dir(dir: RawFd) -> SysResult<Vec<(OsString, u8, u64)>> {
    let fd = openat(dir, OsStr::new("."), libc::O_RDONLY | libc::O_DIRECTORY, 0)?;
    let mut d = nix::dir::Dir::from_fd(fd).map_err(|e| e as i32)?;
    let mut out = Vec::new();
    for ent in d.iter() {
        let ent = ent.map_err(|e| e as i32)?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let dt = match ent.file_type() {
            Some(nix::dir::Type::Directory) => libc::DT_DIR,
            Some(nix::dir::Type::File) => libc::DT_REG,
            Some(nix::dir::Type::Symlink) => libc::DT_LNK,
            Some(nix::dir::Type::Fifo) => libc::DT_FIFO,
            Some(nix::dir::Type::Socket) => libc::DT_SOCK,
            Some(nix::dir::Type::CharacterDevice) => libc::DT_CHR,
            Some(nix::dir::Type::BlockDevice) => libc::DT_BLK,
            None => libc::DT_UNKNOWN,
        };
        out.push((OsString::from_vec(name.to_vec()), dt, ent.ino()));
    }
    Ok(out)
}

/// `dup3(old, new, O_CLOEXEC)`: `new` then refers to what `old` does.
pub fn dup3_cloexec(old: RawFd, new: RawFd) -> SysResult<()> {
    // SAFETY: plain syscall on fds we own; `new` is replaced atomically.
    check(unsafe { libc::dup3(old, new, libc::O_CLOEXEC) }).map(drop)
}

/// The longest file name the filesystem of `fd` takes (`f_namemax`, 255 if unknown).
pub fn name_max(fd: RawFd) -> usize {
    // SAFETY: zeroed statfs is a valid out-buffer.
    let mut s: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a valid fd (O_PATH fds are fine for fstatfs) and pointer.
    if unsafe { libc::fstatfs(fd, &mut s) } < 0 || s.f_namelen <= 0 {
        return libc::NAME_MAX as usize;
    }
    s.f_namelen as usize
}

/// Raises RLIMIT_NOFILE to its hard limit (the server holds one fd per known directory).
pub fn raise_nofile() {
    // SAFETY: plain getrlimit/setrlimit on a local struct.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}
