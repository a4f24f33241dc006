//! New names in the merged tree: mknod, mkdir, create, symlink and link.
//!
//! * Owner and mode are the kernel's: the caller's uid, the caller's gid or the parent's
//!   when the parent is set-group-ID (a new directory then is set-group-ID too), and the
//!   mode asked for less the umask, set-id bits included (the kernel has already
//!   stripped S_ISGID where the creator may not have it). The node is created without
//!   set-id bits and they are set after the chown (which would clear them).
//! * Nothing is half-done on failure (ENOSPC, EDQUOT, EIO...): over a whiteout, the node
//!   is built complete in the work dir and then swapped with the whiteout, as kernel
//!   overlayfs does, so a failure leaves the lower entry hidden; elsewhere it is created
//!   in place and removed again if a later step fails.

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::sync::Arc;

use fuser::{FileAttr, INodeNo, Request};

use super::layers::{self, Ent};
use super::node::{attr_of, Node, Overlay};
use super::sys::{self, SysResult};

/// Set-id bits, which the backing filesystem drops on chown.
const SETID: u32 = libc::S_ISUID | libc::S_ISGID;

/// Where a new name goes.
struct Slot {
    /// The parent's upper directory.
    pfd: Arc<OwnedFd>,
    /// Whether the upper layer holds a whiteout (either form) for the name.
    whiteout: bool,
    /// Whether the name hides lower entries (a new directory must be opaque).
    hides: bool,
}

impl Overlay {
    /// Prepares `name` in directory `parent` for a new entry: it must not exist, and the
    /// parent is copied up.
    fn prepare_new(&self, parent: &Arc<Node>, name: &OsStr) -> SysResult<Slot> {
        if name.len() > self.name_max {
            return Err(libc::ENAMETOOLONG);
        }
        let (exists, may_wh) = self.with_listing(parent, |l, _| {
            (l.map.contains_key(name), l.may_hold_whiteouts())
        })?;
        if exists {
            return Err(libc::EEXIST);
        }
        let pfd = self.copy_up_dir(parent)?;
        let whiteout = may_wh && layers::is_whiteout_at(pfd.as_raw_fd(), name);
        let hides = whiteout || {
            let fds = parent.lock().fds.clone();
            layers::lower_has(&fds, name)
        };
        Ok(Slot {
            pfd,
            whiteout,
            hides,
        })
    }

    /// Records a new upper entry (`st` is its stat, for its type and inode; `pfd` the
    /// parent's upper directory) in the parent's listing and gives it its node, from
    /// `st` (not stat'ed again).
    fn finish_new(
        &self,
        parent: &Arc<Node>,
        name: &OsStr,
        pfd: &Arc<OwnedFd>,
        st: &libc::stat,
    ) -> SysResult<FileAttr> {
        let pfds = self.with_listing(parent, |l, fds| {
            l.insert(
                name.to_os_string(),
                Ent {
                    layer: 0,
                    dtype: layers::dtype_of_mode(st.st_mode),
                    dino: st.st_ino,
                },
            );
            fds.to_vec()
        })?;
        let (_, attr) = self.attach(parent, name, 0, pfd.clone(), &pfds, st, true)?;
        Ok(attr)
    }

    /// Creates a node: `mode` holds the type and the permissions (umask applied);
    /// `target` makes a symlink.
    pub(super) fn do_mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        target: Option<&Path>,
    ) -> SysResult<FileAttr> {
        Ok(self
            .make_node(req, parent, name, mode, rdev, target, None)?
            .0)
    }

    /// CREATE: a regular file made and opened at once (`flags` the kernel's open flags),
    /// so no second open through `/proc`; returns the open fd with the attributes.
    pub(super) fn do_create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        flags: i32,
    ) -> SysResult<(FileAttr, OwnedFd)> {
        // As `do_open`: the kernel may read pages through any handle, and it passes
        // O_APPEND writes with the end offset.
        let mut f = flags
            & !(libc::O_CREAT
                | libc::O_EXCL
                | libc::O_NOCTTY
                | libc::O_APPEND
                | libc::O_TRUNC
                | libc::O_ACCMODE);
        f |= libc::O_RDWR | libc::O_CREAT | libc::O_EXCL;
        let (attr, fd) = self.make_node(req, parent, name, mode, 0, None, Some(f))?;
        Ok((attr, fd.ok_or(libc::EIO)?))
    }

    /// [`Overlay::do_mknod`]; with `open` (flags for `openat`, O_CREAT|O_EXCL included)
    /// a regular file is made by that open and its fd returned.
    #[allow(clippy::too_many_arguments)]
    fn make_node(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        rdev: u32,
        target: Option<&Path>,
        open: Option<i32>,
    ) -> SysResult<(FileAttr, Option<OwnedFd>)> {
        let _g = self.write_ns();
        let parent = self.node(parent)?;
        let slot = self.prepare_new(&parent, name)?;
        let p = slot.pfd.as_raw_fd();
        let pst = sys::fstat(p)?;
        let sgid_parent = pst.st_mode & libc::S_ISGID != 0;
        // Owners as the files store them (`--userns keep-id` translates the caller's);
        // a setgid parent's gid is already stored so.
        let (uid, _) = super::stored_owner(req.uid(), u32::MAX)?;
        let gid = if sgid_parent {
            pst.st_gid
        } else {
            super::stored_owner(u32::MAX, req.gid())?.1
        };
        let kind = if target.is_some() {
            libc::S_IFLNK
        } else {
            mode & libc::S_IFMT
        };
        let mut perm = mode & 0o7777;
        if kind == libc::S_IFDIR && sgid_parent {
            perm |= libc::S_ISGID;
        }
        let tmp = if slot.whiteout {
            self.tmp_name()
        } else {
            Default::default()
        };
        let (dir, n): (RawFd, &OsStr) = if slot.whiteout {
            (self.work.as_raw_fd(), &tmp)
        } else {
            (p, name)
        };
        let mut file = None;
        match (target, kind, open) {
            (Some(t), _, _) => sys::symlinkat(t.as_os_str(), dir, n)?,
            (None, libc::S_IFDIR, _) => sys::mkdirat(dir, n, perm & !SETID)?,
            (None, libc::S_IFREG, Some(flags)) => {
                file = Some(sys::openat(dir, n, flags, perm & !SETID)?);
            }
            (None, _, _) => sys::mknodat(dir, n, kind | (perm & !SETID), rdev as u64)?,
        }
        let done = (|| {
            // The new node is the server's (or has the setgid parent's group): the chown
            // is needed only when the caller is someone else.
            let st = match &file {
                Some(f) => sys::fstat(f.as_raw_fd())?,
                None => sys::statat(dir, n)?,
            };
            // The reply is built from this stat unless a step below changes the node
            // (owner, mode, ctime): then it is stat'ed again.
            let mut changed = slot.whiteout;
            if st.st_uid != uid || st.st_gid != gid {
                sys::chownat(dir, n, uid, gid)?;
                changed = true;
            }
            if kind != libc::S_IFLNK && st.st_mode & 0o7777 != perm {
                sys::chmodat(dir, n, perm)?;
                changed = true;
            }
            self.note_new_upper(&st);
            if kind == libc::S_IFDIR && slot.hides {
                let path = sys::xpath(dir, n)?;
                sys::setxattr(&path, OsStr::new(layers::OPAQUE_XATTR), b"y", 0)?;
                changed = true;
            }
            if slot.whiteout {
                layers::replace_whiteout(dir, n, p, name, kind == libc::S_IFDIR)?;
            }
            if !changed {
                return Ok(st);
            }
            match &file {
                Some(f) => sys::fstat(f.as_raw_fd()),
                None => sys::statat(
                    if slot.whiteout { p } else { dir },
                    if slot.whiteout { name } else { n },
                ),
            }
        })();
        let st = match done {
            Ok(st) => st,
            Err(e) => {
                let flags = if kind == libc::S_IFDIR {
                    libc::AT_REMOVEDIR
                } else {
                    0
                };
                let _ = sys::unlinkat(dir, n, flags);
                return Err(e);
            }
        };
        Ok((self.finish_new(&parent, name, &slot.pfd, &st)?, file))
    }

    /// Links the file `ino` as `newname` in `newparent` (copying it up first).
    pub(super) fn do_link(
        &self,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
    ) -> SysResult<FileAttr> {
        let _g = self.write_ns();
        let node = self.node(ino)?;
        let newparent = self.node(newparent)?;
        if node.is_dir {
            return Err(libc::EPERM);
        }
        self.copy_up(&node, true)?;
        let slot = self.prepare_new(&newparent, newname)?;
        let p = slot.pfd.as_raw_fd();
        let (sdir, sname) = self.location(&node)?;
        if slot.whiteout {
            let w = self.work.as_raw_fd();
            let tmp = self.tmp_name();
            sys::linkat(sdir.as_raw_fd(), &sname, w, &tmp)?;
            if let Err(e) = layers::replace_whiteout(w, &tmp, p, newname, false) {
                let _ = sys::unlinkat(w, &tmp, 0);
                return Err(e);
            }
        } else {
            sys::linkat(sdir.as_raw_fd(), &sname, p, newname)?;
        }
        let st = sys::statat(p, newname)?;
        self.with_listing(&newparent, |l, _| {
            l.insert(
                newname.to_os_string(),
                Ent {
                    layer: 0,
                    dtype: layers::dtype_of_mode(st.st_mode),
                    dino: st.st_ino,
                },
            )
        })?;
        node.lock().nlookup += 1;
        Ok(attr_of(node.ino, &st, 0))
    }
}
