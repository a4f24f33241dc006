//! A container's changes as an OCI layer tar (what `skiff commit` and each build step
//! record), written by the `__commit` helper inside the user namespace, so that owners
//! are the ones the container sees.
//!
//! Two sources:
//! - [`write_upper`]: an overlay upper directory (the kernel overlay and skiff's FUSE
//!   overlay): a 0/0 character device `NAME` becomes the OCI whiteout `.wh.NAME`, a
//!   directory with `user.overlay.opaque=y` (or `trusted.overlay.opaque`) gets a
//!   `.wh..wh..opq` entry; OCI `.wh.` files already there pass as they are.
//! - [`write_vfs_diff`]: the vfs driver's full copy, compared with the image layers it
//!   was made from: what differs (type, mode, owner, size, content, link target, xattrs)
//!   is written, with the directories above it (as an overlay's upper directory and
//!   podman's vfs diff have them), what is gone becomes a whiteout. The copy does not
//!   keep mtimes, so they are not compared. With `--userns keep-id` the layers' owners
//!   are compared as the container sees them (see [`IdRemap::present`]).
//!
//! Neither writes the empty files the runtime creates as mount points for the generated
//! `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` (docker's commit leaves them
//! out too: what a container writes to them goes to the mounted files, never the layer).
//!
//! Both keep hard links (a second name of an inode already written is a link entry),
//! symlinks as links, xattrs as `SCHILY.xattr.*` PAX records (but the overlays' own
//! `user.overlay.*`, `trusted.overlay.*`, `user.skiff.*`), and write entries in name
//! order, so the same tree gives the same layer digest. Sockets are skipped.
//!
//! A running container may change its upper directory while it is read: the helper
//! walks the overlay drivers' upper directory as its root (`chroot`), and opens files
//! with `O_NOFOLLOW`. (The vfs copy is walked by path: a running vfs container swapping
//! a directory for a symlink mid-walk is not contained; commit it stopped.)

use std::collections::{BTreeSet, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

use super::Error;
use crate::userns::keepid::IdRemap;

/// The OCI opaque-directory marker.
const OCI_OPAQUE: &str = ".wh..wh..opq";

/// The files every container gets bind-mounted from its bundle (`daemon::network`):
/// empty where the runtime had to create their mount points.
const MOUNTED_FILES: [&str; 3] = ["etc/hostname", "etc/hosts", "etc/resolv.conf"];

/// Whether `rel` (meta `m`) is a mount point the runtime made for a generated file.
fn is_mount_placeholder(rel: &Path, m: &fs::Metadata) -> bool {
    m.is_file() && m.len() == 0 && MOUNTED_FILES.iter().any(|f| rel == Path::new(f))
}

/// Writes the overlay upper directory `upper` as an OCI layer to `out`.
pub fn write_upper<W: Write>(out: W, upper: &Path) -> Result<W, Error> {
    let mut w = LayerWriter::new(out);
    w.walk_upper(upper, Path::new(""))?;
    w.finish()
}

/// Writes what the vfs copy `full` changed against `layers` (the image's layer trees,
/// top first) as an OCI layer to `out`. `remap` (a `--userns keep-id` container's, the
/// helper running in its namespace) translates the layers' owners to the ones the
/// container sees, which its copy has.
pub fn write_vfs_diff<W: Write>(
    out: W,
    full: &Path,
    layers: &[PathBuf],
    remap: Option<&IdRemap>,
) -> Result<W, Error> {
    let mut w = LayerWriter::new(out);
    let lower = Lower { layers };
    w.walk_vfs(full, Path::new(""), &lower, remap)?;
    w.finish()
}

struct LayerWriter<W: Write> {
    b: Builder<W>,
    /// (dev, ino) of multiply-linked files written, and the name they were written as.
    links: HashMap<(u64, u64), PathBuf>,
    /// vfs: the unchanged directories above the walk's position not written yet (path,
    /// name): written before the first change below them.
    pending: Vec<(PathBuf, PathBuf)>,
}

fn io_err<'a>(what: &str, p: &'a Path) -> impl FnOnce(io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::io(format!("{what} {}", p.display()), e)
}

/// The sorted names in `dir`.
fn children(dir: &Path) -> Result<Vec<OsString>, Error> {
    let mut out: Vec<OsString> = fs::read_dir(dir)
        .map_err(io_err("listing", dir))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    out.sort();
    Ok(out)
}

/// Whether `m` is an overlay whiteout (a 0/0 character device).
fn is_whiteout(m: &fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

impl<W: Write> LayerWriter<W> {
    fn new(out: W) -> Self {
        let mut b = Builder::new(out);
        b.follow_symlinks(false);
        LayerWriter {
            b,
            links: HashMap::new(),
            pending: Vec::new(),
        }
    }

    fn finish(self) -> Result<W, Error> {
        self.b
            .into_inner()
            .map_err(|e| Error::io("finishing the layer archive", e))
    }

    fn walk_upper(&mut self, dir: &Path, rel: &Path) -> Result<(), Error> {
        for name in children(dir)? {
            let path = dir.join(&name);
            let r = rel.join(&name);
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue; // Vanished since the listing (a running container).
            };
            if is_whiteout(&m) {
                self.whiteout(rel, &name)?;
                continue;
            }
            if is_mount_placeholder(&r, &m) {
                continue;
            }
            self.entry(&path, &r, &m)?;
            if m.is_dir() {
                if is_opaque(&path) {
                    self.marker(&r.join(OCI_OPAQUE))?;
                }
                self.walk_upper(&path, &r)?;
            }
        }
        Ok(())
    }

    fn walk_vfs(
        &mut self,
        dir: &Path,
        rel: &Path,
        lower: &Lower<'_>,
        remap: Option<&IdRemap>,
    ) -> Result<(), Error> {
        let names = children(dir)?;
        for name in &names {
            let path = dir.join(name);
            let r = rel.join(name);
            let Ok(m) = fs::symlink_metadata(&path) else {
                continue;
            };
            let old = lower.lookup(&r);
            if old.is_none() && is_mount_placeholder(&r, &m) {
                continue;
            }
            let changed = match &old {
                None => true,
                Some(o) => differs(&path, &m, o, remap)?,
            };
            if changed {
                self.flush_pending()?;
                self.entry(&path, &r, &m)?;
            } else if m.is_dir() {
                self.pending.push((path.clone(), r.clone()));
            }
            if m.is_dir() {
                self.walk_vfs(&path, &r, lower, remap)?;
                if !changed && self.pending.last().is_some_and(|(_, p)| *p == r) {
                    self.pending.pop();
                }
            }
        }
        // What the image has here and the copy has not.
        let have: BTreeSet<&OsString> = names.iter().collect();
        for gone in lower.children(rel) {
            if !have.contains(&gone) {
                self.flush_pending()?;
                self.whiteout(rel, &gone)?;
            }
        }
        Ok(())
    }

    /// Writes the directories above a change the vfs walk has not written yet.
    fn flush_pending(&mut self) -> Result<(), Error> {
        for (path, name) in std::mem::take(&mut self.pending) {
            let m = fs::symlink_metadata(&path).map_err(io_err("reading", &path))?;
            self.entry(&path, &name, &m)?;
        }
        Ok(())
    }

    fn whiteout(&mut self, rel: &Path, name: &OsStr) -> Result<(), Error> {
        let mut wh = OsString::from(".wh.");
        wh.push(name);
        self.marker(&rel.join(wh))
    }

    /// An empty regular file entry (a whiteout or the opaque marker).
    fn marker(&mut self, name: &Path) -> Result<(), Error> {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Regular);
        h.set_mode(0o644);
        h.set_size(0);
        h.set_mtime(0);
        self.b
            .append_data(&mut h, name, io::empty())
            .map_err(io_err("archiving", name))
    }

    fn entry(&mut self, path: &Path, name: &Path, m: &fs::Metadata) -> Result<(), Error> {
        let ft = m.file_type();
        if ft.is_socket() {
            return Ok(());
        }
        let ctx = io_err("archiving", path);
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(m, HeaderMode::Complete);
        if ft.is_file() && m.nlink() > 1 {
            if let Some(first) = self.links.get(&(m.dev(), m.ino())) {
                let first = first.clone();
                h.set_entry_type(EntryType::Link);
                h.set_size(0);
                return self.b.append_link(&mut h, name, &first).map_err(ctx);
            }
            self.links.insert((m.dev(), m.ino()), name.to_path_buf());
        }
        let xattrs = public_xattrs(path);
        if !xattrs.is_empty() {
            let records: Vec<(String, Vec<u8>)> = xattrs
                .into_iter()
                .map(|(k, v)| (format!("SCHILY.xattr.{}", k.to_string_lossy()), v))
                .collect();
            self.b
                .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), v.as_slice())))
                .map_err(io_err("archiving the xattrs of", path))?;
        }
        if ft.is_symlink() {
            let target = fs::read_link(path).map_err(io_err("reading the link", path))?;
            h.set_size(0);
            self.b.append_link(&mut h, name, target).map_err(ctx)
        } else if ft.is_file() {
            // Not through a symlink put there since the walk saw a file.
            let f = fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(io_err("opening", path))?;
            // The size read now: a file growing while archived is cut to it.
            self.b
                .append_data(&mut h, name, f.take(m.len()))
                .map_err(ctx)
        } else {
            if ft.is_char_device() || ft.is_block_device() {
                let rdev = m.rdev();
                h.set_device_major(nix::sys::stat::major(rdev) as u32)
                    .and_then(|()| h.set_device_minor(nix::sys::stat::minor(rdev) as u32))
                    .map_err(io_err("archiving", path))?;
            }
            h.set_size(0);
            self.b.append_data(&mut h, name, io::empty()).map_err(ctx)
        }
    }
}

/// Whether the files at `path` (meta `m`, the copy) and `old` (an image layer's, its
/// owner translated by `remap`) differ.
fn differs(
    path: &Path,
    m: &fs::Metadata,
    old: &Path,
    remap: Option<&IdRemap>,
) -> Result<bool, Error> {
    let Ok(o) = fs::symlink_metadata(old) else {
        return Ok(true);
    };
    let (ft, oft) = (m.file_type(), o.file_type());
    let same_kind = ft.is_dir() == oft.is_dir()
        && ft.is_file() == oft.is_file()
        && ft.is_symlink() == oft.is_symlink();
    let old_owner = match remap {
        Some(r) => r.present(o.uid(), o.gid()),
        None => (o.uid(), o.gid()),
    };
    if !same_kind
        || (m.mode() & 0o7777) != (o.mode() & 0o7777)
        || (m.uid(), m.gid()) != old_owner
        || public_xattrs(path) != public_xattrs(old)
    {
        return Ok(true);
    }
    if ft.is_symlink() {
        return Ok(fs::read_link(path).ok() != fs::read_link(old).ok());
    }
    if ft.is_file() {
        if m.len() != o.len() {
            return Ok(true);
        }
        return Ok(!same_content(path, old)?);
    }
    if !ft.is_dir() {
        return Ok(m.rdev() != o.rdev());
    }
    Ok(false)
}

fn same_content(a: &Path, b: &Path) -> Result<bool, Error> {
    let mut fa = File::open(a).map_err(io_err("opening", a))?;
    let mut fb = File::open(b).map_err(io_err("opening", b))?;
    let (mut ba, mut bb) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    loop {
        let n = read_full(&mut fa, &mut ba).map_err(io_err("reading", a))?;
        let k = read_full(&mut fb, &mut bb).map_err(io_err("reading", b))?;
        if n != k || ba[..n] != bb[..k] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match f.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// The image's merged tree, read from its layer directories (top first, in the store's
/// form: 0/0 character devices are whiteouts, opaque directories hide what is below).
pub struct Lower<'a> {
    /// The layer trees, top first.
    pub layers: &'a [PathBuf],
}

impl Lower<'_> {
    /// The layer path that holds `rel` in the merged view, if any.
    pub fn lookup(&self, rel: &Path) -> Option<PathBuf> {
        let comps: Vec<_> = rel.components().collect();
        for layer in self.layers {
            let mut cur = layer.clone();
            let mut hidden_below = false;
            for (i, c) in comps.iter().enumerate() {
                cur.push(c);
                let last = i + 1 == comps.len();
                match fs::symlink_metadata(&cur) {
                    Err(_) => break,
                    Ok(m) if is_whiteout(&m) => return None,
                    Ok(_) if last => return Some(cur),
                    Ok(m) if !m.is_dir() => return None,
                    Ok(_) => {
                        if is_opaque(&cur) {
                            hidden_below = true;
                        }
                    }
                }
            }
            if hidden_below {
                return None;
            }
        }
        None
    }

    /// The names the merged view has in directory `rel`.
    pub fn children(&self, rel: &Path) -> Vec<OsString> {
        let mut names = BTreeSet::new();
        for layer in self.layers {
            if let Ok(rd) = fs::read_dir(layer.join(rel)) {
                names.extend(rd.filter_map(|e| e.ok().map(|e| e.file_name())));
            }
        }
        names
            .into_iter()
            .filter(|n| !n.as_bytes().starts_with(b".wh."))
            .filter(|n| self.lookup(&rel.join(n)).is_some())
            .collect()
    }
}

/// Whether the directory `dir` is marked opaque in the overlays' form.
fn is_opaque(dir: &Path) -> bool {
    ["user.overlay.opaque", "trusted.overlay.opaque"]
        .iter()
        .any(|n| get_xattr(dir, OsStr::new(n)).as_deref() == Some(b"y".as_slice()))
}

/// Whether `name` is an xattr of the overlays' own (never part of a layer).
fn is_private_xattr(name: &OsStr) -> bool {
    let b = name.as_bytes();
    b.starts_with(b"user.overlay.")
        || b.starts_with(b"trusted.overlay.")
        || b.starts_with(b"user.skiff.")
}

/// The xattrs of `path` (not followed) but the overlays' own, sorted by name.
fn public_xattrs(path: &Path) -> Vec<(OsString, Vec<u8>)> {
    let mut out: Vec<(OsString, Vec<u8>)> = list_xattrs(path)
        .into_iter()
        .filter(|n| !is_private_xattr(n))
        .filter_map(|n| get_xattr(path, &n).map(|v| (n, v)))
        .collect();
    out.sort();
    out
}

fn list_xattrs(path: &Path) -> Vec<OsString> {
    let Ok(p) = CString::new(path.as_os_str().as_bytes()) else {
        return Vec::new();
    };
    // SAFETY: `p` is NUL-terminated; a null buffer of size 0 asks for the size.
    let size = unsafe { libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0) };
    let Ok(size) = usize::try_from(size) else {
        return Vec::new();
    };
    if size == 0 {
        return Vec::new();
    }
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let n = unsafe { libc::llistxattr(p.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let Ok(n) = usize::try_from(n) else {
        return Vec::new();
    };
    buf[..n.min(buf.len())]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| OsStr::from_bytes(s).to_os_string())
        .collect()
}

fn get_xattr(path: &Path, name: &OsStr) -> Option<Vec<u8>> {
    let p = CString::new(path.as_os_str().as_bytes()).ok()?;
    let n = CString::new(name.as_bytes()).ok()?;
    // SAFETY: both strings are NUL-terminated; size 0 asks for the value's size.
    let size = unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), std::ptr::null_mut(), 0) };
    let size = usize::try_from(size).ok()?;
    let mut buf = vec![0u8; size];
    // SAFETY: `buf` is valid for `buf.len()` bytes.
    let got =
        unsafe { libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    let got = usize::try_from(got).ok()?;
    buf.truncate(got);
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    fn entries(tar: &[u8]) -> Vec<(String, EntryType, Option<String>)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let p = e.path().unwrap().display().to_string();
                let l = e.link_name().unwrap().map(|l| l.display().to_string());
                (p, e.header().entry_type(), l)
            })
            .collect()
    }

    #[test]
    fn upper_dir_with_links_in_name_order() {
        let u = tempfile::tempdir().unwrap();
        fs::create_dir(u.path().join("d")).unwrap();
        fs::write(u.path().join("d/b"), b"x").unwrap();
        fs::hard_link(u.path().join("d/b"), u.path().join("d/c")).unwrap();
        symlink("/etc/passwd", u.path().join("a")).unwrap();
        fs::write(u.path().join(".wh.oci"), b"").unwrap();
        let tar = write_upper(Vec::new(), u.path()).unwrap();
        let e = entries(&tar);
        let names: Vec<&str> = e.iter().map(|x| x.0.as_str()).collect();
        assert_eq!(names, [".wh.oci", "a", "d", "d/b", "d/c"]);
        assert_eq!(e[1].1, EntryType::Symlink);
        assert_eq!(e[1].2.as_deref(), Some("/etc/passwd"));
        assert_eq!(e[4].1, EntryType::Link);
        assert_eq!(e[4].2.as_deref(), Some("d/b"));
        // Deterministic: the same tree gives the same bytes.
        assert_eq!(write_upper(Vec::new(), u.path()).unwrap(), tar);
    }

    #[test]
    fn vfs_diff_has_changes_and_whiteouts_only() {
        let l = tempfile::tempdir().unwrap();
        let c = tempfile::tempdir().unwrap();
        for root in [l.path(), c.path()] {
            fs::create_dir_all(root.join("etc/sub")).unwrap();
            fs::write(root.join("etc/same"), b"1").unwrap();
            fs::write(root.join("etc/edited"), b"old").unwrap();
            fs::write(root.join("etc/gone"), b"1").unwrap();
            fs::write(root.join("etc/sub/f"), b"1").unwrap();
        }
        fs::write(c.path().join("etc/edited"), b"new").unwrap();
        fs::remove_file(c.path().join("etc/gone")).unwrap();
        fs::write(c.path().join("etc/added"), b"a").unwrap();
        let tar = write_vfs_diff(Vec::new(), c.path(), &[l.path().to_path_buf()], None).unwrap();
        let names: Vec<String> = entries(&tar).into_iter().map(|x| x.0).collect();
        // The directory above the changes comes first (as an overlay's upper has it);
        // the unchanged `etc/sub` is not written.
        assert_eq!(names, ["etc", "etc/added", "etc/edited", "etc/.wh.gone"]);
    }

    #[test]
    fn lower_lookup_honours_opaque_dirs_and_whiteouts() {
        let top = tempfile::tempdir().unwrap();
        let bottom = tempfile::tempdir().unwrap();
        fs::create_dir_all(bottom.path().join("d")).unwrap();
        fs::write(bottom.path().join("d/old"), b"").unwrap();
        fs::write(bottom.path().join("f"), b"").unwrap();
        fs::create_dir_all(top.path().join("d")).unwrap();
        fs::write(top.path().join("d/new"), b"").unwrap();
        let layers = [top.path().to_path_buf(), bottom.path().to_path_buf()];
        let lower = Lower { layers: &layers };
        assert!(lower.lookup(Path::new("d/old")).is_some());
        assert!(lower.lookup(Path::new("d/new")).is_some());
        assert!(lower.lookup(Path::new("f")).is_some());
        assert!(lower.lookup(Path::new("nope")).is_none());
        assert_eq!(lower.children(Path::new("d")), ["new", "old"]);
    }
}
