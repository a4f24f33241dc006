//! The overlay's state-changing operations behind the FUSE handlers: new entries,
//! unlink and rmdir with whiteouts, rename, link, setattr, open with copy-up, xattrs.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use fuser::{FileAttr, FileHandle, FopenFlags, INodeNo, RenameFlags, TimeOrNow};

use super::layers::{self, Ent};
use super::node::{Node, Overlay};
use super::sys::{self, SysResult};

impl Overlay {
    pub(super) fn read_ns(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.ns.read().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn write_ns(&self) -> std::sync::RwLockWriteGuard<'_, ()> {
        self.ns.write().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn do_unlink(&self, parent: INodeNo, name: &OsStr, dir: bool) -> SysResult<()> {
        let _g = self.write_ns();
        let parent = self.node(parent)?;
        if name.len() > self.name_max {
            return Err(libc::ENAMETOOLONG);
        }
        let ent = self.with_listing(&parent, |l, _| l.map.get(name).copied())?;
        let ent = ent.ok_or(libc::ENOENT)?;
        if !dir && ent.layer == 0 && ent.dtype != libc::DT_DIR {
            // An upper-only non-directory: its node (if the kernel still has one) keeps
            // its O_PATH fd, so nothing about it changes; no stat needed.
            let pfds = parent.lock().fds.clone();
            if !layers::lower_has(&pfds, name) {
                let pfd = pfds.first().map(|(_, f)| f.clone()).ok_or(libc::EIO)?;
                sys::unlinkat(pfd.as_raw_fd(), name, 0)?;
                self.forget_upper(ent.dino);
                self.with_listing(&parent, |l, _| l.remove(name))?;
                return Ok(());
            }
        }
        let (child, _) = self.lookup(&parent, name, false)?;
        let r = self.unlink_node(&parent, name, &child, dir);
        self.release(&child);
        if r.is_ok() && ent.layer == 0 {
            // The upper inode lost this name (a whiteout made in its place is a new one).
            self.forget_upper(ent.dino);
        }
        r
    }

    /// Unlinks `child`, found at `name` in `parent` by [`Overlay::do_unlink`].
    fn unlink_node(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        child: &Arc<Node>,
        dir: bool,
    ) -> SysResult<()> {
        if child.is_dir != dir {
            return Err(if dir { libc::ENOTDIR } else { libc::EISDIR });
        }
        if dir {
            let (listing, fds) = {
                let fds = child.lock().fds.clone();
                (layers::merge_listing(&fds)?, fds)
            };
            if !listing.map.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
            if let Some((0, fd)) = fds.first() {
                layers::clear_whiteouts_in(fd.as_raw_fd())?;
            }
        }
        let pfds = parent.lock().fds.clone();
        let lower = layers::lower_has(&pfds, name);
        let layer = child.lock().layer;
        let upper_present = if dir {
            matches!(child.lock().fds.first(), Some((0, _)))
        } else {
            layer == 0
        };
        let pfd = if lower {
            self.copy_up_dir(parent)?
        } else {
            pfds.first().map(|(_, f)| f.clone()).ok_or(libc::EIO)?
        };
        if upper_present {
            sys::unlinkat(
                pfd.as_raw_fd(),
                name,
                if dir { libc::AT_REMOVEDIR } else { 0 },
            )?;
        }
        if lower {
            self.with_listing(parent, |l, _| l.note_whiteout())?;
            layers::make_whiteout(pfd.as_raw_fd(), name)?;
        }
        if layer != 0 && !dir {
            child.lock().unlinked = true;
        }
        self.with_listing(parent, |l, _| l.remove(name))?;
        Ok(())
    }

    pub(super) fn do_rename(
        &self,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
    ) -> SysResult<()> {
        if flags.contains(RenameFlags::RENAME_EXCHANGE)
            || flags.contains(RenameFlags::RENAME_WHITEOUT)
        {
            return Err(libc::EINVAL);
        }
        let _g = self.write_ns();
        let parent = self.node(parent)?;
        let newparent = self.node(newparent)?;
        let (src, _) = self.lookup(&parent, name, false)?;
        let dst = match self.lookup(&newparent, newname, false) {
            Ok((n, _)) => Some(n),
            Err(libc::ENOENT) => None,
            Err(e) => {
                self.release(&src);
                return Err(e);
            }
        };
        let r = self.rename_node(
            &parent,
            name,
            &src,
            &newparent,
            newname,
            dst.as_ref(),
            flags,
        );
        self.release(&src);
        if let Some(dst) = &dst {
            self.release(dst);
        }
        r
    }

    /// Renames `src` (found at `name` in `parent`) to `newname` in `newparent`, over
    /// `dst` if that name exists: the rest of [`Overlay::do_rename`].
    #[allow(clippy::too_many_arguments)]
    fn rename_node(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        src: &Arc<Node>,
        newparent: &Arc<Node>,
        newname: &OsStr,
        dst: Option<&Arc<Node>>,
        flags: RenameFlags,
    ) -> SysResult<()> {
        if let Some(dst) = dst {
            if Arc::ptr_eq(dst, src) {
                return Ok(());
            }
            if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                return Err(libc::EEXIST);
            }
            match (src.is_dir, dst.is_dir) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) => {
                    let fds = dst.lock().fds.clone();
                    if !layers::merge_listing(&fds)?.map.is_empty() {
                        return Err(libc::ENOTEMPTY);
                    }
                }
                _ => {}
            }
        }
        if src.is_dir && src.lock().fds.iter().any(|(l, _)| *l != 0) {
            // Like kernel overlayfs with userxattr (no redirect_dir): mv copies instead.
            return Err(libc::EXDEV);
        }
        // An entry already in the upper layer keeps its inode across the rename: its
        // listing entry serves the new name as it is (no stat after the rename).
        let known = self
            .with_listing(parent, |l, _| l.map.get(name).copied())?
            .filter(|e| e.layer == 0 && !src.is_dir);
        self.copy_up(src, true)?;
        let spfd = self.copy_up_dir(parent)?;
        let dpfd = self.copy_up_dir(newparent)?;
        let d = dpfd.as_raw_fd();
        let dst_lower = {
            let fds = newparent.lock().fds.clone();
            layers::lower_has(&fds, newname)
        };
        if let Some(dst) = dst {
            if dst.is_dir {
                if let Some((0, fd)) = dst.lock().fds.first() {
                    layers::clear_whiteouts_in(fd.as_raw_fd())?;
                }
            }
        }
        let src_lower = {
            let fds = parent.lock().fds.clone();
            layers::lower_has(&fds, name)
        };
        let s = spfd.as_raw_fd();
        if src.is_dir && dst_lower {
            // Opaque before it moves: the lower dir it lands on must never show through.
            let p = sys::xpath(s, name)?;
            sys::setxattr(&p, OsStr::new(layers::OPAQUE_XATTR), b"y", 0)?;
        }
        // One rename does it all, so that a failure (ENOSPC for the whiteout's inode,
        // say) changes nothing: it replaces a whiteout at the new name and, with
        // RENAME_WHITEOUT, leaves one at the old name when a lower layer has it.
        let dst_may_wh = self.with_listing(newparent, |l, _| l.may_hold_whiteouts())?;
        let dst_whiteout =
            dst_may_wh && sys::statat(d, newname).is_ok_and(|st| layers::is_whiteout_stat(&st));
        if src_lower {
            // A whiteout is left at the old name (below).
            self.with_listing(parent, |l, _| l.note_whiteout())?;
        }
        if src.is_dir && dst_whiteout {
            // A directory cannot replace the whiteout (a non-directory): swap them.
            sys::renameat(s, name, d, newname, libc::RENAME_EXCHANGE)?;
            if !src_lower {
                let _ = sys::unlinkat(s, name, 0);
            }
        } else if src_lower {
            match sys::renameat(s, name, d, newname, libc::RENAME_WHITEOUT) {
                Ok(()) => {}
                Err(libc::EINVAL) | Err(libc::EPERM) | Err(libc::EOPNOTSUPP) => {
                    // No RENAME_WHITEOUT on this filesystem: two steps.
                    sys::renameat(s, name, d, newname, 0)?;
                    layers::make_whiteout(s, name)?;
                }
                Err(e) => return Err(e),
            }
        } else {
            sys::renameat(s, name, d, newname, 0)?;
        }
        if dst_may_wh {
            layers::clear_oci_whiteout(d, newname);
        }
        let ent = match known {
            Some(e) => e,
            None => {
                let st = sys::statat(d, newname)?;
                Ent {
                    layer: 0,
                    dtype: layers::dtype_of_mode(st.st_mode),
                    dino: st.st_ino,
                }
            }
        };
        self.with_listing(parent, |l, _| l.remove(name))?;
        self.with_listing(newparent, |l, _| l.insert(newname.to_os_string(), ent))?;
        let mut s = src.lock();
        s.parent = newparent.ino;
        s.name = newname.to_os_string();
        s.dirfd = dpfd.clone();
        s.layer = 0;
        if src.is_dir {
            s.fds = vec![(0, Arc::new(sys::open_dir_path(d, newname)?))];
            if let Some(listing) = s.listing.as_mut() {
                for e in listing.map.values_mut() {
                    e.layer = 0;
                }
            }
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn do_setattr(
        &self,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        fh: Option<FileHandle>,
        kill_suidgid: bool,
    ) -> SysResult<FileAttr> {
        let node = self.node(ino)?;
        let changes = mode.is_some()
            || uid.is_some()
            || gid.is_some()
            || size.is_some()
            || atime.is_some()
            || mtime.is_some();
        if !changes {
            // e.g. a SETATTR carrying only ctime: nothing to do on disk.
            let _g = self.read_ns();
            return self.getattr(&node, fh.map(|f| f.0 as i32));
        }
        {
            let _g = self.write_ns();
            // A truncation to zero needs no data copy.
            self.copy_up(&node, size != Some(0))?;
        }
        let _g = self.read_ns();
        if uid.is_some() || gid.is_some() || size.is_some() {
            self.forget_caps(ino);
        }
        let (dir, name) = self.location(&node)?;
        let d = dir.as_raw_fd();
        if uid.is_some() || gid.is_some() {
            let (uid, gid) = super::stored_owner(uid.unwrap_or(u32::MAX), gid.unwrap_or(u32::MAX))?;
            sys::chownat(d, &name, uid, gid)?;
        }
        if let Some(mode) = mode {
            sys::chmodat(d, &name, mode & 0o7777)?;
        }
        if let Some(size) = size {
            let truncate = |fd: i32| {
                // SAFETY: fd is open (ours until release, or opened just here).
                let r = unsafe { libc::ftruncate(fd, size as libc::off_t) };
                if r == 0 && kill_suidgid {
                    return sys::kill_suidgid(fd).map(|()| 0);
                }
                Ok(r)
            };
            let r = match fh {
                Some(fh) => truncate(fh.0 as i32)?,
                None => {
                    let f = sys::open_at(d, &name, libc::O_WRONLY, 0)?;
                    truncate(f.as_raw_fd())?
                }
            };
            if r < 0 {
                return Err(std::io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EIO));
            }
        }
        if atime.is_some() || mtime.is_some() {
            let conv = |t: Option<TimeOrNow>| match t {
                None => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_OMIT,
                },
                Some(TimeOrNow::Now) => libc::timespec {
                    tv_sec: 0,
                    tv_nsec: libc::UTIME_NOW,
                },
                Some(TimeOrNow::SpecificTime(t)) => {
                    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
                    libc::timespec {
                        tv_sec: d.as_secs() as i64,
                        tv_nsec: d.subsec_nanos() as i64,
                    }
                }
            };
            sys::utimensat(d, &name, &[conv(atime), conv(mtime)])?;
        }
        self.getattr(&node, fh.map(|f| f.0 as i32))
    }

    pub(super) fn do_open(&self, ino: INodeNo, flags: i32) -> SysResult<(u64, FopenFlags)> {
        let node = self.node(ino)?;
        let acc = flags & libc::O_ACCMODE;
        let writes = acc != libc::O_RDONLY || flags & libc::O_TRUNC != 0;
        if writes && node.lock().layer != 0 {
            let _g = self.write_ns();
            self.copy_up(&node, flags & libc::O_TRUNC == 0)?;
        }
        let _g = self.read_ns();
        let (dir, name) = self.location(&node)?;
        // The kernel may read pages through any handle of the file, and it passes
        // O_APPEND writes with the end offset (pwrite on an O_APPEND fd ignores it).
        let mut f = flags & !(libc::O_CREAT | libc::O_EXCL | libc::O_NOCTTY | libc::O_APPEND);
        if acc == libc::O_WRONLY {
            f = (f & !libc::O_ACCMODE) | libc::O_RDWR;
        }
        let fd = sys::open_at(dir.as_raw_fd(), &name, f, 0)?.into_raw_fd();
        if node.lock().layer != 0 {
            self.lower_handles.add(node.ino, fd, f);
        }
        Ok((fd as u64, FopenFlags::FOPEN_KEEP_CACHE))
    }

    /// After a write: the backing filesystem drops `security.capability` from a file
    /// written to (or chowned, or truncated); forget the cached names if it had one.
    pub(super) fn forget_caps(&self, ino: INodeNo) {
        if let Ok(node) = self.node(ino) {
            let mut s = node.lock();
            if s.xattrs
                .as_ref()
                .is_some_and(|x| x.iter().any(|n| n == "security.capability"))
            {
                s.xattrs = None;
            }
        }
    }

    /// Fills the xattr-name cache of `ino` from `fd`, an open fd of its upper file.
    pub(super) fn note_xattr_names(&self, ino: INodeNo, fd: RawFd) {
        if let (Ok(node), Ok(names)) = (self.node(ino), sys::flistxattr(fd)) {
            let names = names
                .into_iter()
                .filter(|n| !layers::is_private_xattr(n))
                .collect();
            node.lock().xattrs = Some(Arc::new(names));
        }
    }

    pub(super) fn xattr_names(&self, node: &Node) -> SysResult<Arc<Vec<OsString>>> {
        if let Some(x) = node.lock().xattrs.clone() {
            return Ok(x);
        }
        let (dir, name) = self.location(node)?;
        tracing::trace!(ino = node.ino, "listing xattr names");
        let p = sys::xpath(dir.as_raw_fd(), &name)?;
        let names: Vec<OsString> = sys::listxattr(&p)?
            .into_iter()
            .filter(|n| !layers::is_private_xattr(n))
            .collect();
        let names = Arc::new(names);
        node.lock().xattrs = Some(names.clone());
        Ok(names)
    }

    pub(super) fn do_setxattr(
        &self,
        ino: INodeNo,
        name: &OsStr,
        value: Option<&[u8]>,
        flags: i32,
    ) -> SysResult<()> {
        if layers::is_private_xattr(name) {
            return Err(libc::EPERM);
        }
        let node = self.node(ino)?;
        let _g = self.write_ns();
        self.copy_up(&node, true)?;
        let (dir, n) = self.location(&node)?;
        let p = sys::xpath(dir.as_raw_fd(), &n)?;
        node.lock().xattrs = None;
        match value {
            Some(v) => sys::setxattr(&p, name, v, flags),
            None => sys::removexattr(&p, name),
        }
    }
}
