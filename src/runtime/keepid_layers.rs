//! `--userns keep-id` on the kernel `overlay` driver: the kernel shows the layers' owners
//! as they are on disk, so a keep-id container gets its own copy of each image layer with
//! the owners it must see (what podman does), made once per layer and mapping and shared
//! by every keep-id container of that mapping.
//!
//! The copy of the layer `layers/<hex>/diff` is `layers/<hex>/keepid/<key>` (`key`: a
//! hash of the two mappings), so removing the layer (`rmi`, `image prune`, the store's
//! garbage collection) removes its copies with it. It is made inside the container's
//! user namespace (as its root, so any owner can be given), each owner translated with
//! [`IdRemap::present`], under a lock, into `keepid/.tmp-<key>` first and renamed into
//! place once complete and synced: a crash leaves only the temporary directory, which
//! the next copy removes, never a half copy that is used.
//!
//! Unlike the vfs driver's merged copy, a layer is copied as it is: whiteouts (0/0
//! character devices) and opaque-directory xattrs stay, so the kernel overlay applies
//! them as it does to the originals; hard links, FIFOs and sockets, xattrs, modes and
//! times are kept.

use std::collections::HashMap;
use std::ffi::{CString, OsStr};
use std::fs;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{lchown, DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};

use super::Error;
use crate::userns::keepid::IdRemap;

/// The name of the directory beside a layer's `diff` that holds its keep-id copies.
pub const COPIES_DIR: &str = "keepid";

/// The marker (beside the container's upper directory) saying its root directory got
/// the keep-id owner of the image's root.
const UPPER_MARKER: &str = "keepid-upper";

/// The cache key of a mapping: the same disk and container mappings give the same copy.
pub fn mapping_key(remap: &IdRemap) -> String {
    let text = serde_json::to_string(remap).unwrap_or_default();
    let digest = Sha256::digest(text.as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// Where the keep-id copy of the layer tree `diff` (`layers/<hex>/diff`) is kept.
pub fn copy_path(diff: &Path, key: &str) -> PathBuf {
    diff.parent().unwrap_or(diff).join(COPIES_DIR).join(key)
}

/// The overlay lower directories (top first) for a keep-id container: the keep-id copy
/// of each of `lower`, made now where it is missing. Runs in the container's user
/// namespace, as its root.
pub fn lower_dirs(lower: &[PathBuf], remap: &IdRemap) -> Result<Vec<PathBuf>, Error> {
    let key = mapping_key(remap);
    lower
        .iter()
        .map(|diff| {
            let copy = copy_path(diff, &key);
            if !copy.is_dir() {
                make_copy(diff, &copy, remap)?;
            }
            Ok(copy)
        })
        .collect()
}

fn io<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::io(format!("{what} {}", p.display()), e)
}

fn sys<'a>(what: &str, p: &'a Path) -> impl FnOnce(nix::errno::Errno) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::sys(format!("{what} {}", p.display()), e)
}

/// Makes `copy` from `diff` under the lock `<copy>.lock`: one copier at a time, the
/// others find the copy made when they get the lock.
fn make_copy(diff: &Path, copy: &Path, remap: &IdRemap) -> Result<(), Error> {
    let dir = copy.parent().unwrap_or(copy);
    let name = copy.file_name().unwrap_or_default().to_string_lossy();
    // Searchable, as the layer's own `diff`: the layer directory above is private.
    match fs::DirBuilder::new().mode(0o755).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io("create", dir)(e)),
    }
    let lock_path = dir.join(format!("{name}.lock"));
    let lock = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(io("open", &lock_path))?;
    // SAFETY: flock on a descriptor we own; it is released when `lock` is closed.
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io("lock", &lock_path)(std::io::Error::last_os_error()));
    }
    if copy.is_dir() {
        return Ok(());
    }
    let tmp = dir.join(format!(".tmp-{name}"));
    if fs::symlink_metadata(&tmp).is_ok() {
        tracing::info!("removing an interrupted keep-id copy {}", tmp.display());
        fs::remove_dir_all(&tmp).map_err(io("remove", &tmp))?;
    }
    tracing::info!(
        "making the keep-id copy of the layer {} (once per layer and mapping)",
        diff.display()
    );
    let mut c = Copier {
        links: HashMap::new(),
        remap,
    };
    c.copy_dir(diff, &tmp)?;
    // Everything on disk before the name appears: a crash never leaves a copy with
    // missing contents under its final name.
    let fd = fs::File::open(&tmp).map_err(io("open", &tmp))?;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(fd.as_raw_fd()) } != 0 {
        return Err(io("sync", &tmp)(std::io::Error::last_os_error()));
    }
    fs::rename(&tmp, copy).map_err(io("rename", &tmp))?;
    crate::fsutil::sync_dir(dir).map_err(io("sync", dir))
}

/// Gives the container's upper directory (the overlay's root) the keep-id owner of the
/// image's root `top` (the top lower copy), once: the daemon made it with the default
/// mapping's root as owner.
pub fn own_upper(upper: &Path, top: &Path) -> Result<(), Error> {
    let marker = upper.parent().unwrap_or(upper).join(UPPER_MARKER);
    if marker.exists() {
        return Ok(());
    }
    let md = fs::symlink_metadata(top).map_err(io("stat", top))?;
    lchown(upper, Some(md.uid()), Some(md.gid())).map_err(io("chown", upper))?;
    fs::write(&marker, b"").map_err(io("create", &marker))
}

struct Copier<'r> {
    /// Files with several links already copied: (dev, ino) -> the copy.
    links: HashMap<(u64, u64), PathBuf>,
    remap: &'r IdRemap,
}

impl Copier<'_> {
    fn copy_dir(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        let md = fs::symlink_metadata(src).map_err(io("stat", src))?;
        fs::DirBuilder::new()
            .mode(0o700)
            .create(dst)
            .map_err(io("mkdir", dst))?;
        for entry in fs::read_dir(src).map_err(io("read", src))? {
            let entry = entry.map_err(io("read", src))?;
            let (from, to) = (entry.path(), dst.join(entry.file_name()));
            let emd = fs::symlink_metadata(&from).map_err(io("stat", &from))?;
            if emd.is_dir() {
                self.copy_dir(&from, &to)?;
            } else {
                self.copy_other(&from, &to, &emd)?;
            }
        }
        self.finish(src, dst, &md)
    }

    fn copy_other(&mut self, from: &Path, to: &Path, md: &fs::Metadata) -> Result<(), Error> {
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&key) {
                return fs::hard_link(first, to).map_err(io("link", to));
            }
        }
        let ft = md.file_type();
        if ft.is_symlink() {
            let target = fs::read_link(from).map_err(io("readlink", from))?;
            std::os::unix::fs::symlink(&target, to).map_err(io("symlink", to))?;
        } else if ft.is_file() {
            fs::copy(from, to).map_err(io("copy", from))?;
        } else {
            let kind = if ft.is_char_device() {
                SFlag::S_IFCHR
            } else if ft.is_block_device() {
                SFlag::S_IFBLK
            } else if ft.is_fifo() {
                SFlag::S_IFIFO
            } else {
                SFlag::S_IFSOCK
            };
            // Whiteouts (0/0 character devices), FIFOs and sockets; other device nodes
            // cannot be made in a user namespace (and the unpacker never writes them).
            if let Err(e) = mknod(to, kind, Mode::from_bits_truncate(0o600), md.rdev()) {
                tracing::warn!("keep-id copy: skipping {}: {e}", from.display());
                return Ok(());
            }
        }
        if md.nlink() > 1 {
            self.links.insert(key, to.to_path_buf());
        }
        self.finish(from, to, md)
    }

    /// Owner (translated), mode, xattrs and times of `dst`, in the order that keeps
    /// them: chown clears set-id bits and file capabilities, writes change mtimes.
    fn finish(&self, src: &Path, dst: &Path, md: &fs::Metadata) -> Result<(), Error> {
        let (u, g) = self.remap.present(md.uid(), md.gid());
        lchown(dst, Some(u), Some(g)).map_err(io("chown", dst))?;
        if !md.file_type().is_symlink() {
            fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
                .map_err(io("chmod", dst))?;
        }
        copy_xattrs(src, dst, Some(self.remap), true);
        let at = TimeSpec::new(md.atime(), md.atime_nsec());
        let mt = TimeSpec::new(md.mtime(), md.mtime_nsec());
        utimensat(
            nix::fcntl::AT_FDCWD,
            dst,
            &at,
            &mt,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(sys("set the times of", dst))
    }
}

fn cpath(p: &Path) -> Option<CString> {
    CString::new(p.as_os_str().as_bytes()).ok()
}

/// `security.capability` revisions (the top byte of its first little-endian word).
const VFS_CAP_REVISION_MASK: u32 = 0xFF00_0000;
const VFS_CAP_REVISION_2: u32 = 0x0200_0000;
const VFS_CAP_REVISION_3: u32 = 0x0300_0000;

/// A file capability of the layer, as this namespace reads it: revision 3 with the root
/// id of the mapping the layer was unpacked in (the user, seen here as the user's own
/// id). Written back as is, the kernel refuses it (that id is no root here). The
/// capability is meant for the container's root, so it is written as revision 2: the
/// kernel then stores this namespace's root, and the keep-id container honours it.
/// Other values are returned unchanged.
fn capability_for_this_root(value: Vec<u8>, remap: &IdRemap) -> Vec<u8> {
    let word = |i: usize| {
        value
            .get(i..i + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_le_bytes)
    };
    let (Some(magic), Some(rootid)) = (word(0), word(20)) else {
        return value;
    };
    if value.len() != 24
        || magic & VFS_CAP_REVISION_MASK != VFS_CAP_REVISION_3
        || remap.present(rootid, 0).0 != 0
    {
        return value;
    }
    let mut v2 = value[..20].to_vec();
    v2[..4].copy_from_slice(&((magic & !VFS_CAP_REVISION_MASK) | VFS_CAP_REVISION_2).to_le_bytes());
    v2
}

/// Copies every xattr of `src` this namespace can read onto `dst` (the overlay's
/// `user.overlay.*` only with `overlay_own`; with `remap`, a file capability given to
/// this namespace's root); one that cannot be set is logged and skipped.
pub(super) fn copy_xattrs(src: &Path, dst: &Path, remap: Option<&IdRemap>, overlay_own: bool) {
    let (Some(s), Some(d)) = (cpath(src), cpath(dst)) else {
        return;
    };
    let Some(names) = xattr_call(|buf, len| {
        // SAFETY: `s` is NUL-terminated and `buf` is valid for `len` bytes (or null, 0).
        unsafe { libc::llistxattr(s.as_ptr(), buf.cast(), len) }
    }) else {
        return;
    };
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if !overlay_own
            && (name.starts_with(b"user.overlay.") || name.starts_with(b"trusted.overlay."))
        {
            continue;
        }
        let Ok(cname) = CString::new(name) else {
            continue;
        };
        let Some(value) = xattr_call(|buf, len| {
            // SAFETY: both strings are NUL-terminated; `buf` is valid for `len` bytes.
            unsafe { libc::lgetxattr(s.as_ptr(), cname.as_ptr(), buf.cast(), len) }
        }) else {
            continue;
        };
        let value = match remap {
            Some(r) if name == b"security.capability" => capability_for_this_root(value, r),
            _ => value,
        };
        // SAFETY: NUL-terminated strings and a value valid for its length.
        let rc = unsafe {
            libc::lsetxattr(
                d.as_ptr(),
                cname.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            tracing::warn!(
                "copy: xattr {} of {} not copied: {}",
                OsStr::from_bytes(name).to_string_lossy(),
                src.display(),
                std::io::Error::last_os_error()
            );
        }
    }
}

/// Runs a size-then-fill xattr call; None on an error (logged at debug level).
fn xattr_call(mut f: impl FnMut(*mut u8, usize) -> isize) -> Option<Vec<u8>> {
    for _ in 0..4 {
        let n = f(std::ptr::null_mut(), 0);
        if n < 0 {
            tracing::debug!("xattr: {}", std::io::Error::last_os_error());
            return None;
        }
        let mut buf = vec![0u8; n as usize];
        if buf.is_empty() {
            return Some(buf);
        }
        let m = f(buf.as_mut_ptr(), buf.len());
        if m >= 0 {
            buf.truncate(m as usize);
            return Some(buf);
        }
        // ERANGE: it grew between the calls; ask again.
        if std::io::Error::last_os_error().raw_os_error() != Some(libc::ERANGE) {
            return None;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::userns::{IdMapEntry, IdMaps};

    fn remap() -> IdRemap {
        // An identity pair: owners are kept, so the copy can be checked unprivileged.
        let me = nix::unistd::getuid().as_raw();
        let m = vec![IdMapEntry {
            container_id: me,
            host_id: me,
            size: 1,
        }];
        let maps = IdMaps {
            uid: m.clone(),
            gid: vec![IdMapEntry {
                container_id: nix::unistd::getgid().as_raw(),
                host_id: nix::unistd::getgid().as_raw(),
                size: 1,
            }],
        };
        IdRemap {
            disk: maps.clone(),
            inner: maps,
        }
    }

    #[test]
    fn a_layer_is_copied_as_it_is_and_the_copy_appears_whole() {
        let t = tempfile::tempdir().unwrap();
        let diff = t.path().join("layer/diff");
        fs::create_dir_all(diff.join("opq/sub")).unwrap();
        fs::write(diff.join("opq/sub/f"), b"data").unwrap();
        fs::set_permissions(diff.join("opq/sub/f"), fs::Permissions::from_mode(0o4750)).unwrap();
        fs::hard_link(diff.join("opq/sub/f"), diff.join("link")).unwrap();
        std::os::unix::fs::symlink("opq/sub/f", diff.join("sym")).unwrap();
        nix::unistd::mkfifo(&diff.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        // A whiteout, as the unpacker writes it (unprivileged since Linux 5.8).
        mknod(&diff.join("gone"), SFlag::S_IFCHR, Mode::empty(), 0).unwrap();
        let opq = cpath(&diff.join("opq")).unwrap();
        // SAFETY: NUL-terminated strings and a 1-byte value.
        let rc = unsafe {
            libc::lsetxattr(
                opq.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "user xattrs unsupported on the test filesystem");
        let old = TimeSpec::new(1_000_000, 5);
        utimensat(
            nix::fcntl::AT_FDCWD,
            &diff.join("opq/sub"),
            &old,
            &old,
            UtimensatFlags::NoFollowSymlink,
        )
        .unwrap();
        // A leftover of an interrupted copy is replaced.
        let key = mapping_key(&remap());
        let copy = copy_path(&diff, &key);
        fs::create_dir_all(copy.parent().unwrap().join(format!(".tmp-{key}/junk"))).unwrap();

        let got = lower_dirs(std::slice::from_ref(&diff), &remap()).unwrap();
        assert_eq!(got, vec![copy.clone()]);
        let f = fs::metadata(copy.join("opq/sub/f")).unwrap();
        assert_eq!(f.mode() & 0o7777, 0o4750);
        assert_eq!(f.nlink(), 2);
        assert_eq!(f.ino(), fs::metadata(copy.join("link")).unwrap().ino());
        assert_eq!(fs::read(copy.join("link")).unwrap(), b"data");
        assert_eq!(
            fs::read_link(copy.join("sym")).unwrap(),
            Path::new("opq/sub/f")
        );
        assert!(fs::symlink_metadata(copy.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        let w = fs::symlink_metadata(copy.join("gone")).unwrap();
        assert!(w.file_type().is_char_device() && w.rdev() == 0);
        let sub = fs::metadata(copy.join("opq/sub")).unwrap();
        assert_eq!((sub.mtime(), sub.mtime_nsec()), (1_000_000, 5));
        let c = cpath(&copy.join("opq")).unwrap();
        let mut buf = [0u8; 4];
        // SAFETY: NUL-terminated strings and a buffer valid for its length.
        let n = unsafe {
            libc::lgetxattr(
                c.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(&buf[..n.max(0) as usize], b"y");
        assert!(!copy.parent().unwrap().join(format!(".tmp-{key}")).exists());
        // Made once: a second call reuses it.
        let ino = fs::metadata(copy.join("opq/sub/f")).unwrap().ino();
        lower_dirs(std::slice::from_ref(&diff), &remap()).unwrap();
        assert_eq!(fs::metadata(copy.join("opq/sub/f")).unwrap().ino(), ino);
    }

    #[test]
    fn a_file_capability_of_the_disk_root_goes_to_this_root() {
        // Disk: 0 is the user; here: the user is its own id (keep-id's shape).
        let me = nix::unistd::getuid().as_raw().max(1);
        let one = |container_id| {
            vec![IdMapEntry {
                container_id,
                host_id: me,
                size: 1,
            }]
        };
        let keep = IdRemap {
            disk: IdMaps {
                uid: one(0),
                gid: one(0),
            },
            inner: IdMaps {
                uid: one(me),
                gid: one(me),
            },
        };
        let mut v3 = Vec::new();
        v3.extend_from_slice(&(VFS_CAP_REVISION_3 | 1).to_le_bytes());
        v3.extend_from_slice(&(1u32 << 13).to_le_bytes());
        v3.extend_from_slice(&[0u8; 12]);
        v3.extend_from_slice(&me.to_le_bytes());
        let v2 = capability_for_this_root(v3.clone(), &keep);
        assert_eq!(v2.len(), 20);
        assert_eq!(&v2[..4], &(VFS_CAP_REVISION_2 | 1).to_le_bytes());
        assert_eq!(&v2[4..20], &v3[4..20]);
        // Another root id, or another revision: unchanged.
        let mut other = v3.clone();
        other[20..].copy_from_slice(&(me + 1).to_le_bytes());
        assert_eq!(capability_for_this_root(other.clone(), &keep), other);
        assert_eq!(capability_for_this_root(v2.clone(), &keep), v2);
    }

    #[test]
    fn keys_differ_by_mapping() {
        let a = remap();
        let mut b = remap();
        b.inner.uid[0].size = 2;
        assert_ne!(mapping_key(&a), mapping_key(&b));
        assert_eq!(mapping_key(&a), mapping_key(&remap()));
    }
}
