//! Building the container's filesystem view inside its mount namespace: the rootfs (kernel
//! overlay or a plain copy), the spec's mounts, the default devices and symlinks, masked
//! and read-only paths, and finally `pivot_root`.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};

use super::{mountopts, Error, RootfsDriver, RootfsPlan};

/// Device nodes every container gets, bind-mounted from the host (an unprivileged user
/// namespace cannot mknod).
const DEFAULT_DEVICES: [&str; 6] = ["null", "zero", "full", "tty", "random", "urandom"];

/// The standard `/dev` symlinks.
const DEV_SYMLINKS: [(&str, &str); 6] = [
    ("/proc/self/fd", "fd"),
    ("/proc/self/fd/0", "stdin"),
    ("/proc/self/fd/1", "stdout"),
    ("/proc/self/fd/2", "stderr"),
    ("pts/ptmx", "ptmx"),
    ("/proc/kcore", "core"),
];

/// Joins `unsafe_path` to `root` resolving every symlink *inside* root, so that a hostile
/// image cannot make a mount land outside its rootfs (`/proc -> /etc` stays in the rootfs).
/// Missing components are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> PathBuf {
    let mut resolved = PathBuf::from("/");
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut hops = 0;
    while let Some(p) = pending.pop() {
        let mut comps: Vec<Component> = p.components().collect();
        comps.reverse();
        while let Some(c) = comps.pop() {
            match c {
                Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let candidate = resolved.join(name);
                    let host = root.join(candidate.strip_prefix("/").unwrap_or(&candidate));
                    match fs::read_link(&host) {
                        Ok(target) if hops < 255 => {
                            hops += 1;
                            let rest: PathBuf = comps.iter().rev().collect();
                            if target.is_absolute() {
                                resolved = PathBuf::from("/");
                            }
                            pending.push(rest);
                            pending.push(target);
                            break;
                        }
                        _ => resolved = candidate,
                    }
                }
            }
        }
    }
    root.join(resolved.strip_prefix("/").unwrap_or(&resolved))
}

fn mkdir_all(p: &Path) -> Result<(), Error> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(p)
        .map_err(|e| Error::io(format!("create {}", p.display()), e))
}

fn touch(p: &Path) -> Result<(), Error> {
    if let Some(parent) = p.parent() {
        mkdir_all(parent)?;
    }
    fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o644)
        .open(p)
        .map(drop)
        .map_err(|e| Error::io(format!("create {}", p.display()), e))
}

fn do_mount(
    src: Option<&Path>,
    target: &Path,
    fstype: Option<&str>,
    flags: MsFlags,
    data: Option<&str>,
) -> Result<(), Error> {
    mount(src, target, fstype, flags, data).map_err(|e| Error::Mount {
        target: target.display().to_string(),
        fstype: fstype.unwrap_or("bind").to_string(),
        source: e,
    })
}

/// Mounts the container's root filesystem on `target` per the storage plan.
pub fn prepare_rootfs(plan: &RootfsPlan, target: &Path) -> Result<(), Error> {
    // Nothing we mount may propagate back to the host's namespace.
    do_mount(
        None,
        Path::new("/"),
        None,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None,
    )?;
    mkdir_all(target)?;
    match plan.driver {
        RootfsDriver::Overlay => {
            let lower: Vec<String> = plan.lower.iter().map(|p| escape_overlay_path(p)).collect();
            let data = format!(
                "lowerdir={},upperdir={},workdir={},userxattr",
                lower.join(":"),
                escape_overlay_path(&plan.upper),
                escape_overlay_path(&plan.work)
            );
            do_mount(
                Some(Path::new("overlay")),
                target,
                Some("overlay"),
                MsFlags::empty(),
                Some(&data),
            )
            .map_err(|e| Error::Overlay(e.to_string()))?;
        }
        // Already mounted on `target` by the FUSE server (see `create`).
        RootfsDriver::Fuse => {}
        RootfsDriver::Vfs => {
            let marker = plan.work.join("copied");
            if !marker.exists() {
                for layer in plan.lower.iter().rev() {
                    super::copy::copy_tree(layer, &plan.upper)?;
                }
                touch(&marker)?;
            }
            do_mount(
                Some(&plan.upper),
                target,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
        }
    }
    Ok(())
}

/// Overlay option values cannot contain `,` or `:` unescaped.
fn escape_overlay_path(p: &Path) -> String {
    p.display()
        .to_string()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

/// Performs the spec's mounts below `root`, in order, with the rootless fallbacks runc uses.
pub fn mount_spec(spec: &Spec, root: &Path, gid5_mapped: bool) -> Result<(), Error> {
    for m in spec.mounts().iter().flatten() {
        mount_one(m, root, gid5_mapped)?;
    }
    let dev = root.join("dev");
    if spec
        .mounts()
        .iter()
        .flatten()
        .any(|m| m.destination() == Path::new("/dev"))
    {
        populate_dev(&dev)?;
    }
    Ok(())
}

fn mount_one(m: &Mount, root: &Path, gid5_mapped: bool) -> Result<(), Error> {
    let dest = secure_join(root, m.destination());
    let opts = mountopts::parse(m.options().as_deref().unwrap_or(&[]));
    let fstype = m.typ().as_deref();
    let source = m.source().as_deref();
    if opts.is_bind() {
        match source.map(fs::metadata) {
            Some(Ok(md)) if !md.is_dir() => touch(&dest)?,
            _ => mkdir_all(&dest)?,
        }
    } else {
        mkdir_all(&dest)?;
    }
    let data = if opts.data.is_empty() {
        None
    } else {
        Some(opts.data.as_str())
    };
    let first_flags = opts.flags
        & !(if opts.is_bind() {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        });
    let result = do_mount(source, &dest, fstype, first_flags, data);
    match (result, fstype) {
        (Ok(()), _) => {}
        (Err(_), Some("sysfs")) => {
            // Without our own network namespace's ownership sysfs refuses; bind the host's.
            do_mount(
                Some(Path::new("/sys")),
                &dest,
                None,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None,
            )?;
            remount_ro(
                &dest,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            )?;
        }
        (Err(_), Some("devpts")) if !gid5_mapped || opts.data.contains("gid=") => {
            let data: Vec<&str> = opts
                .data
                .split(',')
                .filter(|o| !o.starts_with("gid="))
                .collect();
            do_mount(source, &dest, fstype, first_flags, Some(&data.join(",")))?;
        }
        (Err(_), Some("mqueue")) => {
            tracing::warn!("could not mount mqueue on {}; skipping", dest.display());
        }
        (Err(e), _) => return Err(e),
    }
    if opts.is_bind() && opts.flags.contains(MsFlags::MS_RDONLY) {
        remount_ro(&dest, opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC))?;
    }
    if !opts.propagation.is_empty() {
        do_mount(None, &dest, None, opts.propagation, None)?;
    }
    Ok(())
}

fn remount_ro(dest: &Path, extra: MsFlags) -> Result<(), Error> {
    do_mount(
        None,
        dest,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra,
        None,
    )
}

fn populate_dev(dev: &Path) -> Result<(), Error> {
    for name in DEFAULT_DEVICES {
        let target = dev.join(name);
        touch(&target)?;
        do_mount(
            Some(&Path::new("/dev").join(name)),
            &target,
            None,
            MsFlags::MS_BIND,
            None,
        )?;
    }
    for (src, name) in DEV_SYMLINKS {
        let link = dev.join(name);
        if name == "ptmx" {
            let _ = fs::remove_file(&link);
        }
        if let Err(e) = symlink(src, &link) {
            if e.kind() != std::io::ErrorKind::AlreadyExists {
                return Err(Error::io(format!("symlink {}", link.display()), e));
            }
        }
    }
    Ok(())
}

/// Switches the root to `root` with pivot_root and detaches the old root.
pub fn pivot(root: &Path) -> Result<(), Error> {
    nix::unistd::chdir(root).map_err(|e| Error::sys("chdir to rootfs", e))?;
    nix::unistd::pivot_root(".", ".").map_err(|e| Error::sys("pivot_root", e))?;
    // The old root is now stacked under "."; make it private and detach it.
    do_mount(
        None,
        Path::new("."),
        None,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None,
    )?;
    umount2(".", MntFlags::MNT_DETACH).map_err(|e| Error::sys("detach the old root", e))?;
    nix::unistd::chdir("/").map_err(|e| Error::sys("chdir /", e))
}

/// Applies the spec's masked paths (hidden) and read-only paths, after pivot_root.
pub fn mask_and_protect(spec: &Spec) -> Result<(), Error> {
    let Some(linux) = spec.linux() else {
        return Ok(());
    };
    for p in linux.masked_paths().iter().flatten() {
        let path = Path::new(p);
        let result = match fs::metadata(path) {
            Ok(md) if md.is_dir() => do_mount(
                Some(Path::new("tmpfs")),
                path,
                Some("tmpfs"),
                MsFlags::MS_RDONLY,
                None,
            ),
            Ok(_) => do_mount(
                Some(Path::new("/dev/null")),
                path,
                None,
                MsFlags::MS_BIND,
                None,
            ),
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            tracing::debug!("masking {p}: {e}");
        }
    }
    for p in linux.readonly_paths().iter().flatten() {
        let path = Path::new(p);
        if !path.exists() {
            continue;
        }
        let r = do_mount(
            Some(path),
            path,
            None,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None,
        )
        .and_then(|_| {
            remount_ro(
                path,
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            )
        });
        if let Err(e) = r {
            tracing::debug!("making {p} read-only: {e}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secure_join_keeps_symlinks_inside_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/etc", root.join("proc")).unwrap();
        symlink("../../../../outside", root.join("up")).unwrap();
        assert_eq!(secure_join(root, Path::new("/proc")), root.join("etc"));
        assert_eq!(
            secure_join(root, Path::new("/up/x")),
            root.join("outside/x")
        );
        assert_eq!(secure_join(root, Path::new("/a/../b")), root.join("b"));
    }

    #[test]
    fn secure_join_survives_symlink_loops() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        symlink("/loop", root.join("loop")).unwrap();
        let p = secure_join(root, Path::new("/loop/x"));
        assert!(p.starts_with(root));
    }

    #[test]
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay_path(Path::new("/a:b,c")), "/a\\:b\\,c");
    }
}
