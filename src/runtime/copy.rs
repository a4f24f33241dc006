//! The `vfs` storage driver's copy: a tree copied with owners, modes, symlinks and hard
//! links kept. It runs as root inside the container's user namespace, so subordinate ids
//! are preserved.
//!
//! Layers are merged bottom to top with the storage drivers' whiteout conventions (the
//! ones kernel overlayfs with `userxattr` and the FUSE overlay read): a 0/0 character
//! device (or an OCI `.wh.NAME` file) deletes `NAME` from the layers below, and a
//! directory with `user.overlay.opaque=y` (or a `.wh..wh..opq` entry) hides everything
//! the layers below had in it. Neither marker appears in the copy.
//!
//! xattrs are copied (but the overlays' own markers, already applied). FIFOs and
//! sockets are made anew; device nodes too where the kernel allows it (never in a user
//! namespace: they are skipped with a warning, as podman's vfs driver does rootless).
//!
//! With `--userns keep-id` the copy runs in the keep-id namespace while the layers keep
//! the default mapping's owners: each owner is translated as it is copied
//! ([`IdRemap::present`]), so the copy shows the image's owners in that namespace.

use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{chown, lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use nix::sys::stat::{mknod, Mode, SFlag};

use super::Error;
use crate::userns::keepid::IdRemap;

/// Copies the contents of `src` into `dst` (which may exist); later calls overwrite files,
/// so copying the layers bottom to top yields the merged tree.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    copy_tree_remapped(src, dst, None)
}

/// [`copy_tree`], giving each copy the owner `remap` presents for the source's owner
/// (the source written with the default mapping, the copy made in the container's).
pub fn copy_tree_remapped(src: &Path, dst: &Path, remap: Option<&IdRemap>) -> Result<(), Error> {
    let mut c = Copier {
        links: HashMap::new(),
        remap,
    };
    c.copy_dir(src, dst)
}

struct Copier<'r> {
    links: HashMap<(u64, u64), std::path::PathBuf>,
    remap: Option<&'r IdRemap>,
}

fn io<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::io(format!("{what} {}", p.display()), e)
}

impl Copier<'_> {
    /// The owner a copy of a file with `md` gets.
    fn owner(&self, md: &fs::Metadata) -> (u32, u32) {
        match self.remap {
            Some(r) => r.present(md.uid(), md.gid()),
            None => (md.uid(), md.gid()),
        }
    }

    fn copy_dir(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        let md = fs::symlink_metadata(src).map_err(io("stat", src))?;
        match fs::symlink_metadata(dst) {
            Ok(m) if m.is_dir() => {
                if is_opaque(src) {
                    for e in fs::read_dir(dst).map_err(io("read", dst))? {
                        remove_any(&e.map_err(io("read", dst))?.path())?;
                    }
                }
            }
            Ok(_) => {
                remove_any(dst)?;
                fs::create_dir(dst).map_err(io("mkdir", dst))?;
            }
            Err(_) => fs::create_dir(dst).map_err(io("mkdir", dst))?,
        }
        for entry in fs::read_dir(src).map_err(io("read", src))? {
            let entry = entry.map_err(io("read", src))?;
            let from = entry.path();
            let fname = entry.file_name();
            let to = dst.join(&fname);
            let emd = fs::symlink_metadata(&from).map_err(io("stat", &from))?;
            let ft = emd.file_type();
            if let Some(target) = fname.as_bytes().strip_prefix(b".wh.") {
                // The OCI forms: `.wh..wh..opq` was handled by `is_opaque`.
                if target != b".wh..opq" {
                    remove_any(&dst.join(std::ffi::OsStr::from_bytes(target)))?;
                }
                continue;
            }
            if ft.is_char_device() && emd.rdev() == 0 {
                remove_any(&to)?;
                continue;
            }
            if ft.is_dir() {
                self.copy_dir(&from, &to)?;
                continue;
            }
            remove_any(&to)?;
            if ft.is_symlink() {
                let target = fs::read_link(&from).map_err(io("readlink", &from))?;
                symlink(&target, &to).map_err(io("symlink", &to))?;
                let (u, g) = self.owner(&emd);
                lchown(&to, Some(u), Some(g)).map_err(io("chown", &to))?;
            } else if ft.is_file() {
                let key = (emd.dev(), emd.ino());
                if emd.nlink() > 1 {
                    if let Some(first) = self.links.get(&key) {
                        fs::hard_link(first, &to).map_err(io("link", &to))?;
                        continue;
                    }
                    self.links.insert(key, to.clone());
                }
                fs::copy(&from, &to).map_err(io("copy", &from))?;
                let (u, g) = self.owner(&emd);
                chown(&to, Some(u), Some(g)).map_err(io("chown", &to))?;
                fs::set_permissions(&to, fs::Permissions::from_mode(emd.mode() & 0o7777))
                    .map_err(io("chmod", &to))?;
                // After chown, which clears a file capability.
                super::keepid_layers::copy_xattrs(&from, &to, self.remap, false);
            } else {
                self.copy_special(&from, &to, &emd)?;
            }
        }
        let (u, g) = self.owner(&md);
        chown(dst, Some(u), Some(g)).map_err(io("chown", dst))?;
        fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io("chmod", dst))?;
        super::keepid_layers::copy_xattrs(src, dst, self.remap, false);
        Ok(())
    }
}

impl Copier<'_> {
    /// A FIFO, socket or device node, made anew with its owner, mode and xattrs (a
    /// FIFO's hard links kept). A device node cannot be made in a user namespace: it is
    /// skipped with a warning, as podman's vfs driver does rootless.
    fn copy_special(&mut self, from: &Path, to: &Path, md: &fs::Metadata) -> Result<(), Error> {
        let key = (md.dev(), md.ino());
        if md.nlink() > 1 {
            if let Some(first) = self.links.get(&key) {
                return fs::hard_link(first, to).map_err(io("link", to));
            }
        }
        let ft = md.file_type();
        let kind = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_socket() {
            SFlag::S_IFSOCK
        } else if ft.is_char_device() {
            SFlag::S_IFCHR
        } else {
            SFlag::S_IFBLK
        };
        if let Err(e) = mknod(to, kind, Mode::from_bits_truncate(0o600), md.rdev()) {
            tracing::warn!("vfs copy: skipping {}: {e}", from.display());
            return Ok(());
        }
        if md.nlink() > 1 {
            self.links.insert(key, to.to_path_buf());
        }
        let (u, g) = self.owner(md);
        chown(to, Some(u), Some(g)).map_err(io("chown", to))?;
        fs::set_permissions(to, fs::Permissions::from_mode(md.mode() & 0o7777))
            .map_err(io("chmod", to))?;
        super::keepid_layers::copy_xattrs(from, to, self.remap, false);
        Ok(())
    }
}

/// Removes whatever is at `p` (a whole tree for a directory); absent is fine.
fn remove_any(p: &Path) -> Result<(), Error> {
    let result = match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(_) => return Ok(()),
    };
    result.map_err(io("remove", p))
}

/// Whether the layer directory `dir` hides the lower layers' contents.
fn is_opaque(dir: &Path) -> bool {
    if dir.join(".wh..wh..opq").exists() {
        return true;
    }
    let Ok(path) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    let mut buf = [0u8; 4];
    for name in [c"user.overlay.opaque", c"trusted.overlay.opaque"] {
        // SAFETY: both strings are NUL-terminated and `buf` is valid for its length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        if n == 1 && buf[0] == b'y' {
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_files_symlinks_hardlinks_and_modes() {
        let s = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(s.path().join("bin")).unwrap();
        fs::write(s.path().join("bin/tool"), b"x").unwrap();
        fs::set_permissions(
            s.path().join("bin/tool"),
            fs::Permissions::from_mode(0o4755),
        )
        .unwrap();
        fs::hard_link(s.path().join("bin/tool"), s.path().join("bin/alias")).unwrap();
        symlink("tool", s.path().join("bin/sym")).unwrap();
        copy_tree(s.path(), &d.path().join("root")).unwrap();
        let t = fs::metadata(d.path().join("root/bin/tool")).unwrap();
        assert_eq!(t.mode() & 0o7777, 0o4755);
        assert_eq!(t.nlink(), 2);
        assert_eq!(
            fs::read_link(d.path().join("root/bin/sym")).unwrap(),
            Path::new("tool")
        );
    }

    #[test]
    fn whiteouts_and_opaque_dirs_apply_when_merging() {
        let lower = tempfile::tempdir().unwrap();
        let upper = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        let (l, u) = (lower.path(), upper.path());
        for dir in ["gone-dir/sub", "opq", "keep"] {
            fs::create_dir_all(l.join(dir)).unwrap();
        }
        fs::write(l.join("gone-file"), b"x").unwrap();
        fs::write(l.join("gone-dir/sub/f"), b"x").unwrap();
        fs::write(l.join("opq/old"), b"x").unwrap();
        fs::write(l.join("keep/a"), b"x").unwrap();
        fs::write(l.join("oci-gone"), b"x").unwrap();
        fs::write(l.join("becomes-dir"), b"x").unwrap();
        // Upper: 0/0 char devices (as __unpack writes them), an opaque dir, OCI forms.
        for w in ["gone-file", "gone-dir"] {
            nix::sys::stat::mknod(
                &u.join(w),
                nix::sys::stat::SFlag::S_IFCHR,
                nix::sys::stat::Mode::empty(),
                0,
            )
            .unwrap();
        }
        fs::create_dir(u.join("opq")).unwrap();
        fs::write(u.join("opq/new"), b"y").unwrap();
        let p = CString::new(u.join("opq").as_os_str().as_bytes()).unwrap();
        // SAFETY: valid NUL-terminated strings and a 1-byte value.
        let rc = unsafe {
            libc::lsetxattr(
                p.as_ptr(),
                c"user.overlay.opaque".as_ptr(),
                b"y".as_ptr().cast(),
                1,
                0,
            )
        };
        assert_eq!(rc, 0, "user xattrs unsupported on the test filesystem");
        fs::write(u.join(".wh.oci-gone"), b"").unwrap();
        fs::create_dir(u.join("becomes-dir")).unwrap();
        fs::create_dir(u.join("keep")).unwrap();
        fs::write(u.join("keep/b"), b"y").unwrap();

        let root = d.path().join("root");
        copy_tree(l, &root).unwrap();
        copy_tree(u, &root).unwrap();
        let mut names: Vec<String> = fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["becomes-dir", "keep", "opq"]);
        assert!(root.join("becomes-dir").is_dir());
        assert_eq!(
            fs::read_dir(root.join("opq")).unwrap().count(),
            1,
            "opaque dir keeps only the upper's entries"
        );
        assert!(root.join("opq/new").exists());
        assert!(root.join("keep/a").exists() && root.join("keep/b").exists());
    }

    #[test]
    fn fifos_and_sockets_are_copied_with_their_modes() {
        let s = tempfile::tempdir().unwrap();
        let d = tempfile::tempdir().unwrap();
        fs::create_dir(s.path().join("run")).unwrap();
        nix::unistd::mkfifo(&s.path().join("run/fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        fs::set_permissions(s.path().join("run/fifo"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::hard_link(s.path().join("run/fifo"), s.path().join("run/fifo2")).unwrap();
        let sock = std::os::unix::net::UnixListener::bind(s.path().join("run/sock")).unwrap();
        drop(sock);
        copy_tree(s.path(), &d.path().join("root")).unwrap();
        let f = fs::symlink_metadata(d.path().join("root/run/fifo")).unwrap();
        assert!(f.file_type().is_fifo(), "the FIFO was not copied");
        assert_eq!(f.mode() & 0o7777, 0o640);
        assert_eq!(f.nlink(), 2, "the FIFO's hard link was not kept");
        let k = fs::symlink_metadata(d.path().join("root/run/sock")).unwrap();
        assert!(k.file_type().is_socket(), "the socket was not copied");
    }
}
