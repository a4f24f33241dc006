//! Low-level filesystem helpers of the layer unpacker: path checks and the syscalls the
//! tar crate does not make for us (xattrs on any file type, mtimes without following
//! symlinks).

use std::ffi::CString;
use std::fs;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;

use super::Error;

/// The path's normal components, or why it is unsafe (absolute, `..`).
pub(crate) fn relative(path: &Path) -> Result<PathBuf, String> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(p) => rel.push(p),
            Component::CurDir => {}
            Component::RootDir | Component::Prefix(_) => {
                return Err(format!("{path:?} is an absolute path"));
            }
            Component::ParentDir => {
                return Err(format!("{path:?} contains a '..' component"));
            }
        }
    }
    Ok(rel)
}

/// Walks the existing prefix of `dest/rel`; fails if a symlink on the way leads outside
/// `dest` or nowhere. Components that do not exist yet are created later as directories
/// inside an already checked one.
pub(crate) fn check_no_escape(dest: &Path, dest_canon: &Path, rel: &Path) -> Result<(), String> {
    let mut cur = dest.to_path_buf();
    let mut shown = PathBuf::new();
    for c in rel.components() {
        cur.push(c);
        shown.push(c);
        match fs::symlink_metadata(&cur) {
            Err(_) => return Ok(()),
            Ok(m) if m.file_type().is_symlink() => match cur.canonicalize() {
                Ok(canon) if canon.starts_with(dest_canon) => cur = canon,
                Ok(_) => {
                    return Err(format!(
                        "goes through {shown:?}, a symlink that leads outside the layer"
                    ))
                }
                Err(e) => {
                    return Err(format!(
                        "goes through {shown:?}, a symlink that cannot be resolved ({e})"
                    ))
                }
            },
            Ok(_) => {}
        }
    }
    Ok(())
}

/// `lsetxattr(2)`: sets an extended attribute without following a final symlink.
pub(crate) fn lsetxattr(path: &Path, key: &[u8], value: &[u8]) -> io::Result<()> {
    let p = CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    let k = CString::new(key).map_err(io::Error::other)?;
    // SAFETY: `p` and `k` are NUL-terminated and `value` is valid for `value.len()` bytes;
    // all outlive the call, which does not retain them.
    let rc = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            k.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Sets atime and mtime of `path` (not following a final symlink) to `mtime`.
pub(crate) fn set_mtime(path: &Path, mtime: u64) -> Result<(), Error> {
    let secs = i64::try_from(mtime).unwrap_or(i64::MAX);
    let t = TimeSpec::new(secs, 0);
    utimensat(
        nix::fcntl::AT_FDCWD,
        path,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| Error::io(format!("setting the mtime of {path:?}"), e.into()))
}

/// Regular files of a layer at least this big have their write-back started as soon as
/// they are extracted (see [`start_writeback`]); smaller ones are left to the sync.
pub(crate) const WRITEBACK_MIN: u64 = 32 << 10;

/// Starts writing `path`'s dirty pages to the disk, without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). The store syncs a layer before naming it
/// (`ImageStore::install_layer`): data already on its way to the disk while the rest of
/// the layer is extracted is data that sync does not wait for. A hint: failures are
/// ignored (the sync still writes everything).
pub(crate) fn start_writeback(path: &Path) {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let Ok(f) = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
    else {
        return;
    };
    // SAFETY: sync_file_range only reads the descriptor, which `f` owns for the call.
    unsafe { libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE) };
}
