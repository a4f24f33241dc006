//! Copy-up: bringing a directory or file of a lower layer to the upper layer, complete
//! (data, owner, mode, xattrs, times, the original inode number) in the work dir first
//! and renamed into place, so a failure (ENOSPC...) leaves nothing behind. Handles
//! opened on the lower file before are moved to the copy (see [`super::handles`]).

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::Arc;

use fuser::INodeNo;

use super::layers::{self, INO_XATTR};
use super::node::{has_pathfd, Node, Overlay};
use super::sys::{self, SysResult};

impl Overlay {
    /// Makes sure directory `node` exists in the upper layer; returns its upper fd.
    /// The caller holds `ns` exclusively.
    pub fn copy_up_dir(&self, node: &Arc<Node>) -> SysResult<Arc<OwnedFd>> {
        let (parent, name, src) = {
            let s = node.lock();
            match s.fds.first() {
                Some((0, fd)) => return Ok(fd.clone()),
                Some((_, fd)) => (s.parent, s.name.clone(), fd.clone()),
                None => return Err(libc::ESTALE),
            }
        };
        let pnode = self.node(INodeNo(parent))?;
        let pfd = self.copy_up_dir(&pnode)?;
        let st = sys::statat(src.as_raw_fd(), OsStr::new(""))?;
        let tmp = self.tmp_name();
        let w = self.work.as_raw_fd();
        sys::mkdirat(w, &tmp, 0o700)?;
        let done = (|| {
            self.copy_meta(src.as_raw_fd(), OsStr::new(""), w, &tmp, &st, node.ino)?;
            sys::renameat(w, &tmp, pfd.as_raw_fd(), &name, 0)
        })();
        if let Err(e) = done {
            let _ = sys::unlinkat(w, &tmp, libc::AT_REMOVEDIR);
            return Err(e);
        }
        let fd = Arc::new(sys::open_dir_path(pfd.as_raw_fd(), &name)?);
        let mut s = node.lock();
        s.fds.insert(0, (0, fd.clone()));
        s.layer = 0;
        s.dirfd = pfd;
        s.xattrs = None;
        drop(s);
        let _ = self.with_listing(&pnode, |l, _| {
            if let Some(e) = l.map.get_mut(&name) {
                e.layer = 0;
            }
        });
        Ok(fd)
    }

    /// Copies a non-directory node to the upper layer (`with_data` false leaves the copy
    /// empty, for an open with O_TRUNC). The caller holds `ns` exclusively.
    pub fn copy_up(&self, node: &Arc<Node>, with_data: bool) -> SysResult<()> {
        if node.is_dir {
            self.copy_up_dir(node)?;
            return Ok(());
        }
        let (parent, name, src_dir) = {
            let s = node.lock();
            if s.layer == 0 {
                return Ok(());
            }
            if s.unlinked {
                return Err(libc::ENOENT);
            }
            (s.parent, s.name.clone(), s.dirfd.clone())
        };
        let pnode = self.node(INodeNo(parent))?;
        let pfd = self.copy_up_dir(&pnode)?;
        let st = sys::statat(src_dir.as_raw_fd(), &name)?;
        let w = self.work.as_raw_fd();
        let tmp = self.tmp_name();
        match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => {
                let dst = sys::openat(
                    w,
                    &tmp,
                    libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
                    0o600,
                )?;
                if with_data && st.st_size > 0 {
                    let src = sys::openat(src_dir.as_raw_fd(), &name, libc::O_RDONLY, 0)?;
                    if let Err(e) = sys::copy_data(&src, &dst) {
                        let _ = sys::unlinkat(w, &tmp, 0);
                        return Err(e);
                    }
                }
            }
            libc::S_IFLNK => {
                let target = sys::readlinkat(src_dir.as_raw_fd(), &name)?;
                sys::symlinkat(std::os::unix::ffi::OsStrExt::from_bytes(&target), w, &tmp)?;
            }
            _ => sys::mknodat(w, &tmp, st.st_mode, st.st_rdev)?,
        }
        let done = (|| {
            self.copy_meta(src_dir.as_raw_fd(), &name, w, &tmp, &st, node.ino)?;
            sys::renameat(w, &tmp, pfd.as_raw_fd(), &name, 0)
        })();
        if let Err(e) = done {
            let _ = sys::unlinkat(w, &tmp, 0);
            return Err(e);
        }
        let was_shared = {
            let mut s = node.lock();
            s.layer = 0;
            let was_shared = s.shared.take().is_some();
            if has_pathfd(&st) {
                s.pathfd = sys::openat(pfd.as_raw_fd(), &name, libc::O_PATH, 0)
                    .ok()
                    .map(Arc::new);
            }
            s.dirfd = pfd;
            s.xattrs = None;
            was_shared
        };
        let _ = self.with_listing(&pnode, |l, _| {
            if let Some(e) = l.map.get_mut(&name) {
                e.layer = 0;
            }
        });
        if was_shared {
            // The copy of one name of a hard-linked lower file is a file of its own: it
            // shows its own number and link count from now on, and the kernel may hold
            // the shared ones. (Attributes only: no lock is taken, so this is safe from
            // within a request; the data is the same or truncated by the kernel itself.)
            if let Some(n) = self.notifier.get() {
                if let Err(e) = n.inval_inode(INodeNo(node.ino), -1, 0) {
                    tracing::debug!("copy-up: attributes not invalidated: {e}");
                }
            }
        }
        let (dir, n) = self.location(node)?;
        let moved = self.lower_handles.retarget(node.ino, |flags| {
            sys::open_at(
                dir.as_raw_fd(),
                &n,
                flags & !(libc::O_CREAT | libc::O_TRUNC),
                0,
            )
        });
        if let Err(e) = moved {
            tracing::warn!("copy-up: a handle still reads the lower file: errno {e}");
        }
        Ok(())
    }

    /// Copies owner, mode, xattrs and times from `src` to `dst` and records the inode.
    fn copy_meta(
        &self,
        sdir: RawFd,
        sname: &OsStr,
        ddir: RawFd,
        dname: &OsStr,
        st: &libc::stat,
        ino: u64,
    ) -> SysResult<()> {
        let is_link = st.st_mode & libc::S_IFMT == libc::S_IFLNK;
        sys::chownat(ddir, dname, st.st_uid, st.st_gid)?;
        if !is_link {
            sys::chmodat(ddir, dname, st.st_mode & 0o7777)?;
        }
        let sp = sys::xpath(sdir, sname)?;
        let dp = sys::xpath(ddir, dname)?;
        for attr in sys::listxattr(&sp)? {
            if layers::is_private_xattr(&attr) {
                continue;
            }
            if let Some(v) = sys::getxattr(&sp, &attr)? {
                if let Err(e) = sys::setxattr(&dp, &attr, &v, 0) {
                    tracing::debug!("copy-up: xattr {attr:?} not copied: errno {e}");
                }
            }
        }
        // user.* xattrs exist only on regular files and directories; other types get a
        // new st_ino when copied up.
        if matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
            sys::setxattr(&dp, OsStr::new(INO_XATTR), ino.to_string().as_bytes(), 0)?;
            self.note_upper(sys::statat(ddir, dname)?.st_ino, ino);
        }
        let times = [
            libc::timespec {
                tv_sec: st.st_atime,
                tv_nsec: st.st_atime_nsec,
            },
            libc::timespec {
                tv_sec: st.st_mtime,
                tv_nsec: st.st_mtime_nsec,
            },
        ];
        sys::utimensat(ddir, dname, &times)
    }
}
