//! Resolving a mount target inside the container's rootfs without ever leaving it.
//!
//! Every lookup is an `openat2(rootfd, path, O_PATH, RESOLVE_IN_ROOT)`: the kernel resolves
//! `..` and symlinks (absolute ones too) as if the rootfs were `/`, atomically, so an image
//! whose `/data` is a symlink to `/` or `../../..` gets its mount on the rootfs's own root,
//! never on the host's. Missing components are created one by one (each parent resolved
//! the same way first). The mount then goes on `/proc/self/fd/N` of the O_PATH descriptor:
//! the path is never resolved again.

use std::ffi::{CString, OsStr};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use nix::errno::Errno;

use super::Error;

/// What to create when the target is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A directory (mode 0755).
    Dir,
    /// An empty regular file (mode 0644), for a bind mount of a file.
    File,
}

fn cstr(p: &OsStr) -> Result<CString, Error> {
    CString::new(p.as_bytes()).map_err(|_| Error::Spec(format!("{p:?} contains a NUL byte")))
}

/// `openat2(dirfd, path, flags | O_CLOEXEC, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`.
fn openat2_in_root(dirfd: BorrowedFd<'_>, path: &Path, flags: i32) -> Result<OwnedFd, Errno> {
    let c = CString::new(path.as_os_str().as_bytes()).map_err(|_| Errno::EINVAL)?;
    // SAFETY: open_how is plain integers, for which all zeroes is a valid value (and
    // what the kernel expects of the fields we do not set).
    let mut how: libc::open_how = unsafe { std::mem::zeroed() };
    how.flags = (flags | libc::O_CLOEXEC) as u64;
    how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
    loop {
        // SAFETY: `c` is NUL-terminated, `how` is a valid open_how of the size passed, and
        // the returned descriptor (if any) is owned by nobody else.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dirfd.as_raw_fd(),
                c.as_ptr(),
                &how as *const libc::open_how,
                std::mem::size_of::<libc::open_how>(),
            )
        };
        if fd >= 0 {
            // SAFETY: a fresh descriptor returned by the kernel, owned by nobody else.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        match Errno::last() {
            // The kernel asks for a retry when a rename raced with the lookup.
            Errno::EAGAIN | Errno::EINTR => continue,
            e => return Err(e),
        }
    }
}

/// Opens the rootfs directory itself (the anchor of every lookup).
pub fn open_root(root: &Path) -> Result<OwnedFd, Error> {
    nix::fcntl::open(
        root,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_DIRECTORY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| Error::sys(format!("open the rootfs {}", root.display()), e))
}

/// The path components of `p` below `/` (`.` dropped; `..` kept: the kernel clamps it).
fn components(p: &Path) -> Vec<&OsStr> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n),
            Component::ParentDir => Some(OsStr::new("..")),
            _ => None,
        })
        .collect()
}

/// An O_PATH descriptor of `path` inside the rootfs `root` (an O_PATH directory fd),
/// creating missing components: directories, and the last one as `kind`.
pub fn open_or_create(root: BorrowedFd<'_>, path: &Path, kind: Kind) -> Result<OwnedFd, Error> {
    let comps = components(path);
    let mut prefix = PathBuf::from(".");
    for (i, name) in comps.iter().enumerate() {
        let parent = prefix.clone();
        prefix.push(name);
        let last = i + 1 == comps.len();
        match openat2_in_root(root, &prefix, libc::O_PATH) {
            Ok(fd) if last => return Ok(fd),
            Ok(_) => continue,
            Err(Errno::ENOENT) => {}
            Err(e) => {
                return Err(Error::sys(
                    format!("resolve {} in the rootfs", prefix.display()),
                    e,
                ))
            }
        }
        // Missing: create it in its (resolved) parent. A dangling symlink is refused
        // rather than followed: its name exists, so creating it fails with EEXIST.
        let pfd = openat2_in_root(root, &parent, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| Error::sys(format!("resolve {} in the rootfs", parent.display()), e))?;
        let cname = cstr(name)?;
        let created = if last && kind == Kind::File {
            // SAFETY: a valid dirfd and NUL-terminated name; the fd is closed at once.
            let fd = unsafe {
                libc::openat(
                    pfd.as_raw_fd(),
                    cname.as_ptr(),
                    libc::O_CREAT
                        | libc::O_EXCL
                        | libc::O_WRONLY
                        | libc::O_NOFOLLOW
                        | libc::O_CLOEXEC,
                    0o644,
                )
            };
            if fd >= 0 {
                // SAFETY: the descriptor just opened, owned by nobody else.
                drop(unsafe { OwnedFd::from_raw_fd(fd) });
                Ok(())
            } else {
                Err(Errno::last())
            }
        } else {
            nix::sys::stat::mkdirat(
                &pfd,
                cname.as_c_str(),
                nix::sys::stat::Mode::from_bits_truncate(0o755),
            )
        };
        match created {
            Ok(()) => {}
            Err(Errno::EEXIST) => {
                return Err(Error::Setup(format!(
                    "mount target {}: {} is a symlink to a path missing in the image: \
                     the mount target must exist or be creatable",
                    path.display(),
                    prefix.display()
                )))
            }
            Err(e) => {
                return Err(Error::sys(
                    format!("create {} in the rootfs", prefix.display()),
                    e,
                ))
            }
        }
        if last {
            return openat2_in_root(root, &prefix, libc::O_PATH)
                .map_err(|e| Error::sys(format!("resolve {} in the rootfs", prefix.display()), e));
        }
    }
    // The path names the root itself.
    openat2_in_root(root, Path::new("."), libc::O_PATH)
        .map_err(|e| Error::sys("reopen the rootfs", e))
}

/// The `/proc/self/fd/N` path of a descriptor: what mount(2) and the copy-up are given,
/// so the resolved object is used and its path never looked up again.
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::fs::symlink;

    fn real(fd: &OwnedFd) -> PathBuf {
        std::fs::read_link(fd_path(fd)).unwrap()
    }

    #[test]
    fn symlinks_pointing_out_stay_inside() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/", root.join("slash")).unwrap();
        symlink("../../..", root.join("up")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        let rfd = open_root(&root).unwrap();
        let root = root.canonicalize().unwrap();
        assert_eq!(
            real(&open_or_create(rfd.as_fd(), Path::new("/slash"), Kind::Dir).unwrap()),
            root
        );
        assert_eq!(
            real(&open_or_create(rfd.as_fd(), Path::new("/up"), Kind::Dir).unwrap()),
            root
        );
        assert_eq!(
            real(&open_or_create(rfd.as_fd(), Path::new("/up/new/x"), Kind::File).unwrap()),
            root.join("new/x")
        );
        assert!(root.join("new/x").is_file());
        assert_eq!(
            real(&open_or_create(rfd.as_fd(), Path::new("/abs/sub"), Kind::Dir).unwrap()),
            root.join("etc/sub")
        );
        assert_eq!(
            real(&open_or_create(rfd.as_fd(), Path::new("/../../a"), Kind::Dir).unwrap()),
            root.join("a")
        );
    }

    #[test]
    fn dangling_symlinks_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        symlink("/nowhere", dir.path().join("d")).unwrap();
        let rfd = open_root(dir.path()).unwrap();
        let e = open_or_create(rfd.as_fd(), Path::new("/d"), Kind::Dir).unwrap_err();
        assert!(e.to_string().contains("symlink"), "{e}");
    }
}
