//! Directory listings: the snapshot an open directory handle serves, and the READDIR and
//! READDIRPLUS replies built from it. Entries carry the inode numbers `stat` gives (the
//! stable ones, see [`Overlay::entry_ino`]); `.` and `..` come first with the
//! directory's and its parent's numbers (the root is its own parent, as `/..` is `/`).

use std::ffi::OsStr;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use fuser::{
    FileAttr, FileHandle, FileType, Generation, INodeNo, ReplyDirectory, ReplyDirectoryPlus,
};

use super::node::{attr_of, kind_of_dtype, DirSnapshot, Overlay, TTL};
use super::sys::SysResult;

/// Offsets: 1 is after `.`, 2 after `..`, and 3 + i after snapshot entry i.
const FIRST_ENTRY: usize = 2;

impl Overlay {
    /// Takes the snapshot of a directory's merged listing for a new handle.
    pub(super) fn snapshot_dir(&self, ino: INodeNo) -> SysResult<u64> {
        let _g = self.read_ns();
        let node = self.node(ino)?;
        let snap = self.with_listing(&node, |l, _| l.snapshot())?;
        let dh = self.next_dh.fetch_add(1, Ordering::Relaxed);
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(dh, Arc::new(snap));
        Ok(dh)
    }

    /// The snapshot behind a directory handle.
    pub(super) fn dir_snapshot(&self, fh: FileHandle) -> SysResult<DirSnapshot> {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&fh.0)
            .cloned()
            .ok_or(libc::EBADF)
    }

    /// The inode numbers of `.` and `..` of directory `ino`.
    fn dot_inos(&self, ino: INodeNo) -> SysResult<[u64; 2]> {
        let node = self.node(ino)?;
        let parent = node.lock().parent;
        Ok([ino.0, parent])
    }

    /// READDIR from `offset`: fills `reply` until it is full.
    pub(super) fn do_readdir(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectory,
    ) -> SysResult<()> {
        let snap = self.dir_snapshot(fh)?;
        let _g = self.read_ns();
        let dots = self.dot_inos(ino)?;
        let fds = self.node(ino)?.lock().fds.clone();
        let mut off = offset as usize;
        while off < FIRST_ENTRY {
            let name = if off == 0 { "." } else { ".." };
            if reply.add(
                INodeNo(dots[off]),
                off as u64 + 1,
                FileType::Directory,
                name,
            ) {
                return Ok(());
            }
            off += 1;
        }
        for (i, (name, e)) in snap.iter().enumerate().skip(off - FIRST_ENTRY) {
            let dir = fds.iter().find(|(l, _)| *l == e.layer).map(|(_, fd)| fd);
            let ino = match dir {
                Some(d) => self.entry_ino(d.as_raw_fd(), name, e),
                // The layer is gone from the merge (e.g. copied up since): a
                // lookup-free number is still better than none.
                None => e.dino,
            };
            let next = (i + FIRST_ENTRY + 1) as u64;
            if reply.add(INodeNo(ino), next, kind_of_dtype(e.dtype), name) {
                break;
            }
        }
        Ok(())
    }

    /// READDIRPLUS from `offset`: each entry with its attributes, counted as a lookup.
    pub(super) fn do_readdirplus(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> SysResult<()> {
        self.readdirplus_entries(ino, fh, offset, |ino, off, name, ttl, attr| {
            reply.add(ino, off, name, ttl, attr, Generation(0))
        })
    }

    /// The entries of a READDIRPLUS from `offset`, given to `add` (node id, offset of
    /// the next entry, name, TTL, attributes) until it answers that the reply is full.
    /// Each entry given is counted as a kernel lookup unless `add` refused it.
    pub(super) fn readdirplus_entries(
        &self,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut add: impl FnMut(INodeNo, u64, &OsStr, &Duration, &FileAttr) -> bool,
    ) -> SysResult<()> {
        let snap = self.dir_snapshot(fh)?;
        let _g = self.read_ns();
        let node = self.node(ino)?;
        let dots = self.dot_inos(ino)?;
        let mut off = offset as usize;
        while off < FIRST_ENTRY {
            // The kernel links no inode for `.` and `..`: the attributes only carry the
            // inode number and type of the entry.
            // SAFETY: an all-zero stat is a valid value.
            let mut st: libc::stat = unsafe { std::mem::zeroed() };
            st.st_mode = libc::S_IFDIR;
            let attr = attr_of(dots[off], &st, 0);
            let name = if off == 0 { "." } else { ".." };
            if add(attr.ino, off as u64 + 1, OsStr::new(name), &TTL, &attr) {
                return Ok(());
            }
            off += 1;
        }
        for (i, (name, _)) in snap.iter().enumerate().skip(off - FIRST_ENTRY) {
            // Counted before the reply can reach the kernel (which may forget it at once).
            let Ok((child, attr)) = self.lookup(&node, name, true) else {
                continue;
            };
            let next = (i + FIRST_ENTRY + 1) as u64;
            // One TTL for entry and attributes here: 0 for a name of a hard-linked lower
            // file (see `Overlay::entry_attr_ttl`), whose next use then looks it up.
            let ttl = Overlay::entry_attr_ttl(&child);
            if add(attr.ino, next, name, &ttl, &attr) {
                // It did not fit: the kernel will not know it (the next READDIRPLUS,
                // if any, looks it up again).
                self.forget(child.ino, 1);
                break;
            }
        }
        Ok(())
    }
}
