//! The FUSE request handlers (fuser's low-level `Filesystem`) on top of [`Overlay`].

use std::ffi::OsStr;
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::SystemTime;

use fuser::{
    Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, ReplyXattr,
    Request, TimeOrNow,
};

use super::layers;
use super::node::{attr_of, Overlay, TTL};
use super::sys::{self, SysResult};

fn err(e: i32) -> Errno {
    Errno::from_i32(e)
}

/// A negative entry: node id 0 with a TTL makes the kernel cache the absence.
fn negative() -> FileAttr {
    attr_of(0, &unsafe_zero_stat(), 0)
}

fn unsafe_zero_stat() -> libc::stat {
    // SAFETY: an all-zero stat is a valid value.
    unsafe { std::mem::zeroed() }
}

/// The mode of a new node of type `kind`: the caller's `mode` less the caller's `umask`.
/// (Without FUSE_POSIX_ACL the kernel has applied the umask already and masking again
/// changes nothing; the server's own umask is 0, see `fuse::serve`.)
fn creation_mode(kind: u32, mode: u32, umask: u32) -> u32 {
    kind | (mode & 0o7777 & !umask)
}

/// The open flags of a CREATE reply (`flags` the creator's open flags, `mode` the new
/// file's). A file created write-only without set-id bits is written directly
/// (`FOPEN_DIRECT_IO`): through a cached handle the kernel's write path asks whether
/// privileges must be dropped (`file_remove_privs`: a GETXATTR of `security.capability`
/// at each new inode's first write, one round trip per created file), while a direct
/// write leaves that to the server, which gets the kill flag with the WRITE and drops
/// set-id bits itself (and the backing filesystem drops `security.capability` on any
/// write). Nothing is lost by it: a write-only handle never reads nor maps pages
/// (mmap needs read access), and a direct write drops the cached pages it overwrites, so
/// readers on other handles see the new data. A new file with set-id bits keeps the
/// cached path, where the kernel drops them with a SETATTR and keeps its mode right.
pub(super) fn create_open_flags(flags: i32, mode: u32) -> FopenFlags {
    if flags & libc::O_ACCMODE == libc::O_WRONLY && mode & (libc::S_ISUID | libc::S_ISGID) == 0 {
        FopenFlags::FOPEN_KEEP_CACHE | FopenFlags::FOPEN_DIRECT_IO
    } else {
        FopenFlags::FOPEN_KEEP_CACHE
    }
}

fn reply_entry(reply: ReplyEntry, r: SysResult<FileAttr>) {
    match r {
        Ok(attr) => reply.entry(&TTL, &attr, Generation(0)),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_empty(reply: ReplyEmpty, r: SysResult<()>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(err(e)),
    }
}

fn reply_xattr(reply: ReplyXattr, size: u32, data: &[u8]) {
    if size == 0 {
        reply.size(data.len() as u32);
    } else if (size as usize) < data.len() {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// The answer to a GETXATTR of a name the file does not have. For `security.selinux`
/// it is ENOTSUP rather than ENODATA: `ls -l` (coreutils' `getfilecon_cache`) and
/// libselinux take ENOTSUP as "this filesystem has no labels" and stop asking for the
/// rest of the device, which saves one round trip per listed file (FUSE has no xattr
/// cache in the kernel). A file that has a label still gets it; with SELinux enabled the
/// kernel answers the name itself and never asks us.
fn absent_xattr_errno(name: &OsStr) -> Errno {
    if name.as_bytes() == b"security.selinux" {
        Errno::ENOTSUP
    } else {
        Errno::NO_XATTR
    }
}

impl Filesystem for Overlay {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Never PASSTHROUGH: it needs CAP_SYS_ADMIN in the initial namespace.
        // Never WRITEBACK_CACHE: the kernel would take writes into its page cache and
        // report success before we write them; a write the backing filesystem then
        // refuses (ENOSPC, EDQUOT, EIO, EFBIG) would reach nobody, and the kernel keeps
        // its own file size (it ignores ours in that mode) for data never stored.
        // Written through, every write(2) gets the backing filesystem's answer.
        let wanted = InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_READDIRPLUS_AUTO
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_ATOMIC_O_TRUNC
            | InitFlags::FUSE_MAX_PAGES
            // The kernel then skips its own kill-priv checks, each a GETXATTR of
            // security.capability per write(2); we drop set-id bits ourselves (see write).
            | InitFlags::FUSE_HANDLE_KILLPRIV_V2;
        let supported = config.capabilities() & wanted;
        let _ = config.add_capabilities(supported);
        let _ = config.set_max_write(1 << 20);
        // The kernel offers its bdi's read-ahead (128 KiB by default) as the maximum.
        if let Err(max) = config.set_max_readahead(1 << 20) {
            let _ = config.set_max_readahead(max);
        }
        let _ = config.set_max_background(64);
        let _ = config.set_congestion_threshold(48);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let _g = self.read_ns();
        let r = self.node(parent).and_then(|p| self.lookup(&p, name, true));
        match r {
            Ok((node, attr)) => {
                let attr_ttl = Overlay::entry_attr_ttl(&node);
                reply.entry_with_ttls(&attr_ttl, &TTL, &attr, Generation(0))
            }
            Err(libc::ENOENT) => reply.entry(&TTL, &negative(), Generation(0)),
            Err(e) => reply.error(err(e)),
        }
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        Overlay::forget(self, ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let _g = self.read_ns();
        let node = self.node(ino);
        match node.and_then(|n| Overlay::getattr(self, &n, fh.map(|f| f.0 as i32))) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(err(e)),
        }
    }

    fn setattr(
        &self,
        req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        // With HANDLE_KILLPRIV_V2 a truncation by a writer without CAP_FSETID drops the
        // set-id bits; fuser 0.18 does not pass the kernel's flag, so a non-root caller
        // stands for it.
        let kill = size.is_some() && mode.is_none() && req.uid() != 0;
        match self.do_setattr(ino, mode, uid, gid, size, atime, mtime, fh, kill) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let _g = self.read_ns();
        let r = self
            .node(ino)
            .and_then(|n| self.location(&n))
            .and_then(|(d, n)| sys::readlinkat(d.as_raw_fd(), &n));
        match r {
            Ok(t) => reply.data(&t),
            Err(e) => reply.error(err(e)),
        }
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        rdev: u32,
        reply: ReplyEntry,
    ) {
        // A 0/0 character device is the whiteout marker: it would read back as "no such
        // file". Refused as kernel overlayfs refuses it.
        if mode & libc::S_IFMT == libc::S_IFCHR && rdev == 0 {
            return reply.error(Errno::EPERM);
        }
        let mode = creation_mode(mode & libc::S_IFMT, mode, umask);
        reply_entry(reply, self.do_mknod(req, parent, name, mode, rdev, None));
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let mode = creation_mode(libc::S_IFDIR, mode, umask);
        reply_entry(reply, self.do_mknod(req, parent, name, mode, 0, None));
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, false));
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_unlink(parent, name, true));
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        reply_entry(
            reply,
            self.do_mknod(req, parent, link_name, libc::S_IFLNK, 0, Some(target)),
        );
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        reply_empty(
            reply,
            self.do_rename(parent, name, newparent, newname, flags),
        );
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        reply_entry(reply, self.do_link(ino, newparent, newname));
    }

    fn open(&self, req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        match self.do_open(ino, flags.0) {
            Ok((fh, f)) => {
                if flags.0 & libc::O_TRUNC != 0 && req.uid() != 0 {
                    // See setattr: a truncating open by a non-root caller drops set-id bits.
                    let _ = sys::kill_suidgid(fh as i32);
                }
                reply.opened(FileHandle(fh), f)
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        let mut buf = vec![0u8; size as usize];
        match sys::pread(fh.0 as i32, &mut buf, offset) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => reply.error(err(e)),
        }
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        wf: fuser::WriteFlags,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        reply: ReplyWrite,
    ) {
        // HANDLE_KILLPRIV_V2: the kernel asks us to drop set-id bits when the writer may
        // not keep them (we write with CAP_FSETID, so the backing fs would keep them).
        // security.capability is dropped by the backing fs on any write.
        if wf.contains(fuser::WriteFlags::FUSE_WRITE_KILL_SUIDGID) {
            if let Err(e) = sys::kill_suidgid(fh.0 as i32) {
                return reply.error(err(e));
            }
        }
        // A short count (the disk filled up part way) is answered as such: the kernel
        // reports it to the writer, whose next write gets the error.
        match sys::pwrite(fh.0 as i32, data, offset) {
            Ok(n) => {
                reply.written(n as u32);
                self.forget_caps(ino);
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock: fuser::LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing to do at close: writes are written through, locks are the kernel's own,
        // and the kernel still writes back dirty mmap pages before it would send FLUSH.
        // ENOSYS makes it stop sending FLUSH for good: one round trip less per close(2).
        reply.error(Errno::ENOSYS);
    }

    fn release(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock: Option<fuser::LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lower_handles.remove(ino.0, fh.0 as i32);
        // SAFETY: fh is an fd we opened in open/create and nobody else closes.
        drop(unsafe { OwnedFd::from_raw_fd(fh.0 as i32) });
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        // SAFETY: plain syscalls on our fd.
        let r = unsafe {
            if datasync {
                libc::fdatasync(fh.0 as i32)
            } else {
                libc::fsync(fh.0 as i32)
            }
        };
        if r < 0 {
            reply.error(Errno::from(std::io::Error::last_os_error()));
        } else {
            reply.ok();
        }
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.snapshot_dir(ino) {
            Ok(dh) => reply.opened(
                FileHandle(dh),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        match self.do_readdir(ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        match self.do_readdirplus(ino, fh, offset, &mut reply) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(err(e)),
        }
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.dirs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        // SAFETY: zeroed statvfs is a valid out-buffer.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: valid fd and pointer.
        if unsafe { libc::fstatvfs(self.layers[0].as_raw_fd(), &mut s) } < 0 {
            return reply.error(Errno::from(std::io::Error::last_os_error()));
        }
        reply.statfs(
            s.f_blocks,
            s.f_bfree,
            s.f_bavail,
            s.f_files,
            s.f_ffree,
            s.f_bsize as u32,
            s.f_namemax as u32,
            s.f_frsize as u32,
        );
    }

    fn setxattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        name: &OsStr,
        value: &[u8],
        flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply_empty(reply, self.do_setxattr(ino, name, Some(value), flags));
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        tracing::trace!(ino = ino.0, ?name, "getxattr asked");
        if layers::is_private_xattr(name) {
            return reply.error(Errno::NO_XATTR);
        }
        let _g = self.read_ns();
        let node = match self.node(ino) {
            Ok(n) => n,
            Err(e) => return reply.error(err(e)),
        };
        match self.xattr_names(&node) {
            Ok(names) if !names.iter().any(|n| n == name) => {
                return reply.error(absent_xattr_errno(name))
            }
            Ok(_) => {}
            Err(e) => return reply.error(err(e)),
        }
        let r = self
            .location(&node)
            .and_then(|(d, n)| sys::xpath(d.as_raw_fd(), &n))
            .and_then(|p| sys::getxattr(&p, name));
        match r {
            Ok(Some(v)) => reply_xattr(reply, size, &v),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(err(e)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        let _g = self.read_ns();
        match self.node(ino).and_then(|n| self.xattr_names(&n)) {
            Ok(names) => {
                let mut buf = Vec::new();
                for n in names.iter() {
                    buf.extend_from_slice(n.as_bytes());
                    buf.push(0);
                }
                reply_xattr(reply, size, &buf);
            }
            Err(e) => reply.error(err(e)),
        }
    }

    fn removexattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        reply_empty(reply, self.do_setxattr(ino, name, None, 0));
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mode = creation_mode(libc::S_IFREG, mode, umask);
        let open_flags = create_open_flags(flags, mode);
        let r = self
            .do_create(req, parent, name, mode, flags)
            .map(|(attr, fd)| {
                let fh = fd.into_raw_fd();
                // Through a cached handle the kernel asks for security.capability at the
                // new file's first write (kill-priv): its xattr names, read now from the
                // open fd, answer that without a lookup through /proc.
                if !open_flags.contains(FopenFlags::FOPEN_DIRECT_IO) {
                    self.note_xattr_names(attr.ino, fh);
                }
                (attr, fh as u64, open_flags)
            });
        match r {
            Ok((attr, fh, f)) => reply.created(&TTL, &attr, Generation(0), FileHandle(fh), f),
            Err(e) => reply.error(err(e)),
        }
    }

    fn fallocate(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // SAFETY: plain syscall on our fd.
        let r = unsafe {
            libc::fallocate(
                fh.0 as i32,
                mode,
                offset as libc::off_t,
                length as libc::off_t,
            )
        };
        if r < 0 {
            reply.error(Errno::from(std::io::Error::last_os_error()));
        } else {
            reply.ok();
        }
    }
}
