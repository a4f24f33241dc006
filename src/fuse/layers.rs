//! The on-disk conventions of the layers, shared with the kernel overlay driver
//! (`userxattr`): whiteouts, opaque directories, the merged listing of a directory and
//! the xattrs the overlay keeps to itself.
//!
//! * A **whiteout** is a 0/0 character device in the upper layer, exactly as kernel
//!   overlayfs writes it (Linux ≥ 5.8 lets the root of a user namespace create one). If
//!   the filesystem refuses, an empty `.wh.NAME` file is written instead. Both forms are
//!   honoured when reading any layer, so OCI-style layers work too.
//! * An **opaque directory** carries `user.overlay.opaque=y` (what kernel overlay with
//!   `userxattr` reads); `trusted.overlay.opaque=y` and a `.wh..wh..opq` entry are also
//!   honoured when reading.
//! * `user.skiff.ino` on an upper file records the inode number the file had before it was
//!   copied up, so st_ino stays stable across copy-up and remounts.

use std::collections::{HashMap, HashSet};
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::Arc;

use super::sys::{self, SysResult};

/// The xattr that marks an opaque directory.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";
/// The xattr that keeps a copied-up file's original inode number.
pub const INO_XATTR: &str = "user.skiff.ino";
/// The OCI opaque marker.
pub const OCI_OPAQUE: &str = ".wh..wh..opq";
/// The OCI whiteout prefix.
pub const OCI_WH_PREFIX: &[u8] = b".wh.";

/// Whether an xattr is the overlay's own and hidden from the merged view.
pub fn is_private_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"user.overlay.")
        || b.starts_with(b"trusted.overlay.")
        || b.starts_with(b"user.skiff.")
}

/// One entry of a merged directory.
#[derive(Debug, Clone, Copy)]
pub struct Ent {
    /// The layer the entry comes from (0 = upper).
    pub layer: usize,
    /// `DT_*` type.
    pub dtype: u8,
    /// The inode number in its layer (for readdir).
    pub dino: u64,
}

/// The merged listing of one directory.
#[derive(Debug, Default)]
pub struct Listing {
    /// Visible names.
    pub map: HashMap<OsString, Ent>,
    /// Names in readdir order (may hold removed or repeated names; filtered on snapshot).
    order: Vec<OsString>,
    /// Whether the directory's upper part may hold a whiteout (either form): one was
    /// listed there, or this server made one since. When false, a new name needs no
    /// look for a whiteout to replace (two failing stats per create or rename saved).
    upper_whiteouts: bool,
}

impl Listing {
    /// Adds or replaces a name.
    pub fn insert(&mut self, name: OsString, ent: Ent) {
        if self.map.insert(name.clone(), ent).is_none() {
            self.order.push(name);
        }
    }

    /// Removes a name.
    pub fn remove(&mut self, name: &OsStr) {
        self.map.remove(name);
        if self.order.len() > 64 && self.order.len() > 2 * self.map.len() {
            let map = &self.map;
            let mut seen = HashSet::new();
            self.order
                .retain(|n| map.contains_key(n) && seen.insert(n.clone()));
        }
    }

    /// Notes that the upper part of the directory now holds a whiteout.
    pub fn note_whiteout(&mut self) {
        self.upper_whiteouts = true;
    }

    /// Whether the upper part of the directory may hold a whiteout.
    pub fn may_hold_whiteouts(&self) -> bool {
        self.upper_whiteouts
    }

    /// The visible entries in order.
    pub fn snapshot(&self) -> Vec<(OsString, Ent)> {
        let mut seen = HashSet::with_capacity(self.map.len());
        self.order
            .iter()
            .filter_map(|n| {
                let e = self.map.get(n)?;
                seen.insert(n.as_os_str()).then(|| (n.clone(), *e))
            })
            .collect()
    }
}

/// Whether `name` in `dir` is a whiteout (0/0 char device or a `.wh.NAME` sibling).
pub fn is_whiteout_at(dir: RawFd, name: &OsStr) -> bool {
    if let Ok(st) = sys::statat(dir, name) {
        if is_whiteout_stat(&st) {
            return true;
        }
    }
    let mut wh = OCI_WH_PREFIX.to_vec();
    wh.extend_from_slice(name.as_bytes());
    sys::statat(dir, OsStr::from_bytes(&wh)).is_ok()
}

/// Whether a stat result is a 0/0 character device.
pub fn is_whiteout_stat(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFCHR && st.st_rdev == 0
}

/// Whether the directory behind `fd` is opaque.
pub fn is_opaque(fd: RawFd) -> bool {
    if let Ok(p) = sys::xpath(fd, OsStr::new("")) {
        for attr in [OPAQUE_XATTR, "trusted.overlay.opaque"] {
            if let Ok(Some(v)) = sys::getxattr(&p, OsStr::new(attr)) {
                if v == b"y" {
                    return true;
                }
            }
        }
    }
    sys::statat(fd, OsStr::new(OCI_OPAQUE)).is_ok()
}

/// Builds the merged listing of a directory present in `fds` (top layer first, already
/// cut at the first opaque layer).
pub fn merge_listing(fds: &[(usize, Arc<OwnedFd>)]) -> SysResult<Listing> {
    let mut listing = Listing::default();
    let mut hidden: HashSet<OsString> = HashSet::new();
    for (layer, fd) in fds {
        let entries = sys::read_dir(fd.as_raw_fd())?;
        let mut new_hidden = Vec::new();
        for (name, dtype, dino) in entries {
            let b = name.as_bytes();
            if b == OCI_OPAQUE.as_bytes() {
                continue;
            }
            if let Some(rest) = b.strip_prefix(OCI_WH_PREFIX) {
                new_hidden.push(OsStr::from_bytes(rest).to_os_string());
                listing.upper_whiteouts |= *layer == 0;
                continue;
            }
            if dtype == libc::DT_CHR || dtype == libc::DT_UNKNOWN {
                if let Ok(st) = sys::statat(fd.as_raw_fd(), &name) {
                    if is_whiteout_stat(&st) {
                        listing.upper_whiteouts |= *layer == 0;
                        new_hidden.push(name);
                        continue;
                    }
                }
            }
            if hidden.contains(&name) || listing.map.contains_key(&name) {
                continue;
            }
            let dtype = if dtype == libc::DT_UNKNOWN {
                sys::statat(fd.as_raw_fd(), &name)
                    .map(|st| dtype_of_mode(st.st_mode))
                    .unwrap_or(libc::DT_REG)
            } else {
                dtype
            };
            listing.insert(
                name,
                Ent {
                    layer: *layer,
                    dtype,
                    dino,
                },
            );
        }
        hidden.extend(new_hidden);
    }
    Ok(listing)
}

/// The layers from `top` down in which directory `name` continues a merged
/// directory found in layer `top`: skips layers without the name, stops at an opaque dir,
/// a whiteout or a non-directory.
pub fn dir_layers(
    parent_fds: &[(usize, Arc<OwnedFd>)],
    top: usize,
    name: &OsStr,
) -> Vec<(usize, Arc<OwnedFd>)> {
    let mut out = Vec::new();
    for (layer, pfd) in parent_fds {
        if *layer < top {
            continue;
        }
        if *layer > top && is_whiteout_at(pfd.as_raw_fd(), name) {
            break;
        }
        match sys::open_dir_path(pfd.as_raw_fd(), name) {
            Ok(fd) => {
                let opaque = is_opaque(fd.as_raw_fd());
                out.push((*layer, Arc::new(fd)));
                if opaque {
                    break;
                }
            }
            // Absent from this layer: the merge goes on below, as in kernel overlayfs.
            Err(libc::ENOENT) => continue,
            // A non-directory (or an error): nothing below is merged.
            Err(_) => break,
        }
    }
    out
}

/// Whether any layer below the upper one (in the parent's merged dirs) has `name`.
pub fn lower_has(parent_fds: &[(usize, Arc<OwnedFd>)], name: &OsStr) -> bool {
    for (layer, pfd) in parent_fds {
        if *layer == 0 {
            continue;
        }
        if is_whiteout_at(pfd.as_raw_fd(), name) {
            return false;
        }
        if sys::statat(pfd.as_raw_fd(), name).is_ok() {
            return true;
        }
    }
    false
}

/// The `DT_*` type of a mode.
pub fn dtype_of_mode(mode: u32) -> u8 {
    match mode & libc::S_IFMT {
        libc::S_IFDIR => libc::DT_DIR,
        libc::S_IFLNK => libc::DT_LNK,
        libc::S_IFIFO => libc::DT_FIFO,
        libc::S_IFSOCK => libc::DT_SOCK,
        libc::S_IFCHR => libc::DT_CHR,
        libc::S_IFBLK => libc::DT_BLK,
        _ => libc::DT_REG,
    }
}

/// Writes a whiteout for `name` in the upper dir `dir`.
pub fn make_whiteout(dir: RawFd, name: &OsStr) -> SysResult<()> {
    match sys::mknodat(dir, name, libc::S_IFCHR, 0) {
        Ok(()) => Ok(()),
        Err(libc::EPERM) | Err(libc::EOPNOTSUPP) => {
            let mut wh = OCI_WH_PREFIX.to_vec();
            wh.extend_from_slice(name.as_bytes());
            sys::openat(
                dir,
                OsStr::from_bytes(&wh),
                libc::O_CREAT | libc::O_WRONLY,
                0o600,
            )
            .map(drop)
        }
        Err(e) => Err(e),
    }
}

/// The OCI whiteout name for `name`.
fn oci_whiteout(name: &OsStr) -> OsString {
    let mut wh = OCI_WH_PREFIX.to_vec();
    wh.extend_from_slice(name.as_bytes());
    OsString::from_vec(wh)
}

/// Moves the complete new node `src_dir`/`src` to `dir`/`name`, where the upper layer
/// has a whiteout: one rename replaces a 0/0 whiteout (an exchange and an unlink for a
/// directory), so the name is never left without both. A `.wh.NAME` marker is
/// removed afterwards.
pub fn replace_whiteout(
    src_dir: RawFd,
    src: &OsStr,
    dir: RawFd,
    name: &OsStr,
    is_dir: bool,
) -> SysResult<()> {
    let char_wh = sys::statat(dir, name).is_ok_and(|st| is_whiteout_stat(&st));
    if !char_wh {
        sys::renameat(src_dir, src, dir, name, libc::RENAME_NOREPLACE)?;
    } else if !is_dir {
        sys::renameat(src_dir, src, dir, name, 0)?;
    } else {
        match sys::renameat(src_dir, src, dir, name, libc::RENAME_EXCHANGE) {
            Ok(()) => {
                // The whiteout is now where the new directory was built.
                let _ = sys::unlinkat(src_dir, src, 0);
            }
            Err(libc::EINVAL) | Err(libc::ENOSYS) | Err(libc::EOPNOTSUPP) => {
                sys::unlinkat(dir, name, 0)?;
                sys::renameat(src_dir, src, dir, name, 0)?;
            }
            Err(e) => return Err(e),
        }
    }
    clear_oci_whiteout(dir, name);
    Ok(())
}

/// Removes a `.wh.NAME` marker for `name` from the upper dir `dir`, if any.
pub fn clear_oci_whiteout(dir: RawFd, name: &OsStr) {
    let _ = sys::unlinkat(dir, &oci_whiteout(name), 0);
}

/// Empties an upper directory that is empty in the merged view (it may only hold
/// whiteouts and the OCI opaque marker).
pub fn clear_whiteouts_in(dir: RawFd) -> SysResult<()> {
    for (name, _, _) in sys::read_dir(dir)? {
        sys::unlinkat(dir, &name, 0)?;
    }
    Ok(())
}
