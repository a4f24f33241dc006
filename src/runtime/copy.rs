//! The `vfs` storage driver's copy: a tree copied with owners, modes, symlinks and hard
//! links kept. It runs as root inside the container's user namespace, so subordinate ids
//! are preserved.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::{chown, lchown, symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use super::Error;

/// Copies the contents of `src` into `dst` (which may exist); later calls overwrite files,
/// so copying the layers bottom to top yields the merged tree.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<(), Error> {
    let mut links = HashMap::new();
    copy_dir(src, dst, &mut links)
}

fn io<'a>(what: &str, p: &'a Path) -> impl FnOnce(std::io::Error) -> Error + 'a {
    let what = what.to_string();
    move |e| Error::io(format!("{what} {}", p.display()), e)
}

fn copy_dir(
    src: &Path,
    dst: &Path,
    links: &mut HashMap<(u64, u64), std::path::PathBuf>,
) -> Result<(), Error> {
    let md = fs::symlink_metadata(src).map_err(io("stat", src))?;
    if !dst.exists() {
        fs::create_dir(dst).map_err(io("mkdir", dst))?;
    }
    for entry in fs::read_dir(src).map_err(io("read", src))? {
        let entry = entry.map_err(io("read", src))?;
        let from = entry.path();
        let to = dst.join(entry.file_name());
        let emd = fs::symlink_metadata(&from).map_err(io("stat", &from))?;
        let ft = emd.file_type();
        if ft.is_dir() {
            copy_dir(&from, &to, links)?;
            continue;
        }
        if fs::symlink_metadata(&to).is_ok() {
            fs::remove_file(&to).map_err(io("replace", &to))?;
        }
        if ft.is_symlink() {
            let target = fs::read_link(&from).map_err(io("readlink", &from))?;
            symlink(&target, &to).map_err(io("symlink", &to))?;
            lchown(&to, Some(emd.uid()), Some(emd.gid())).map_err(io("chown", &to))?;
        } else if ft.is_file() {
            let key = (emd.dev(), emd.ino());
            if emd.nlink() > 1 {
                if let Some(first) = links.get(&key) {
                    fs::hard_link(first, &to).map_err(io("link", &to))?;
                    continue;
                }
                links.insert(key, to.clone());
            }
            fs::copy(&from, &to).map_err(io("copy", &from))?;
            chown(&to, Some(emd.uid()), Some(emd.gid())).map_err(io("chown", &to))?;
            fs::set_permissions(&to, fs::Permissions::from_mode(emd.mode() & 0o7777))
                .map_err(io("chmod", &to))?;
        } else {
            tracing::warn!("vfs copy: skipping special file {}", from.display());
        }
    }
    chown(dst, Some(md.uid()), Some(md.gid())).map_err(io("chown", dst))?;
    fs::set_permissions(dst, fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(io("chmod", dst))?;
    Ok(())
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
}
