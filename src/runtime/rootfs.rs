//! Building the container's filesystem view inside its mount namespace: the rootfs (kernel
//! overlay or a plain copy), the spec's mounts, the default devices and symlinks, masked
//! and read-only paths, and finally `pivot_root`.

use std::fs;
use std::os::unix::fs::{symlink, DirBuilderExt, OpenOptionsExt};
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use oci_spec::runtime::{Mount, Spec};

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};

use super::inroot::{self, Kind};
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
            // keep-id: the layers' copies with the owners this namespace must see.
            let lower = match &plan.remap {
                Some(remap) => {
                    let copies = super::keepid_layers::lower_dirs(&plan.lower, remap)?;
                    if let Some(top) = copies.first() {
                        super::keepid_layers::own_upper(&plan.upper, top)?;
                    }
                    copies
                }
                None => plan.lower.clone(),
            };
            let lower: Vec<String> = lower.iter().map(|p| escape_overlay_path(p)).collect();
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
                    // keep-id: the copy gets this namespace's view of the image's owners.
                    super::copy::copy_tree_remapped(layer, &plan.upper, plan.remap.as_ref())?;
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

/// The spec's mount option (like crun's `tmpcopyup`) that seeds an empty bind source
/// with what the image has at the mount point before the mount hides it: docker's
/// copy-up of a volume on its first use.
pub const COPY_UP: &str = "copyup";

/// Performs the spec's mounts below `root`, in order, with the rootless fallbacks runc uses.
/// Every target is resolved inside `root` ([`inroot`]): no symlink of the image can place
/// a mount outside it.
pub fn mount_spec(spec: &Spec, root: &Path, gid5_mapped: bool) -> Result<(), Error> {
    let rootfd = inroot::open_root(root)?;
    let mut dev = false;
    for m in spec.mounts().iter().flatten() {
        mount_one(m, rootfd.as_fd(), gid5_mapped)?;
        dev |= m.destination() == Path::new("/dev");
    }
    if dev {
        // Opened after the tmpfs is mounted: the descriptor names the tmpfs's root.
        let dev = inroot::open_or_create(rootfd.as_fd(), Path::new("/dev"), Kind::Dir)?;
        populate_dev(&inroot::fd_path(&dev))?;
    }
    Ok(())
}

fn mount_one(m: &Mount, root: BorrowedFd<'_>, gid5_mapped: bool) -> Result<(), Error> {
    let all = m.options().clone().unwrap_or_default();
    let copy_up = all.iter().any(|o| o == COPY_UP);
    let rest: Vec<String> = all.into_iter().filter(|o| o != COPY_UP).collect();
    let opts = mountopts::parse(&rest);
    let fstype = m.typ().as_deref();
    let source = m.source().as_deref();
    let kind = match source.map(fs::metadata) {
        Some(Ok(md)) if opts.is_bind() && !md.is_dir() => Kind::File,
        _ => Kind::Dir,
    };
    let fd = inroot::open_or_create(root, m.destination(), kind)?;
    let dest = inroot::fd_path(&fd);
    if copy_up && opts.is_bind() {
        if let Some(src) = source {
            copy_up_into(root, &fd, src, m.destination())?;
        }
    }
    let shown = m.destination().display().to_string();
    let named = |e: Error| match e {
        Error::Mount { fstype, source, .. } => Error::Mount {
            target: shown.clone(),
            fstype,
            source,
        },
        other => other,
    };
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
            )
            .map_err(named)?;
            // Resolved again: the remount is of the bind just made, not what it covers.
            let bound = inroot::open_or_create(root, m.destination(), kind)?;
            remount_ro(
                &inroot::fd_path(&bound),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            )
            .map_err(named)?;
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
            tracing::warn!("could not mount mqueue on {shown}; skipping");
        }
        (Err(e), _) => return Err(named(e)),
    }
    // The descriptor names what is now under the mount: the mount itself is reached by
    // resolving the target again (inside the rootfs, as before).
    drop(fd);
    let ro = opts.is_bind() && opts.flags.contains(MsFlags::MS_RDONLY);
    if ro || !opts.propagation.is_empty() {
        let fd = inroot::open_or_create(root, m.destination(), kind)?;
        let dest = inroot::fd_path(&fd);
        if ro {
            remount_ro(&dest, opts.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC)).map_err(named)?;
        }
        if !opts.propagation.is_empty() {
            do_mount(None, &dest, None, opts.propagation, None).map_err(named)?;
        }
    }
    Ok(())
}

/// Docker's copy-up: when the volume directory `source` is empty, what the image has at
/// the mount point (`target`, already resolved inside the rootfs) is copied into it with
/// owners and modes, the mount point's own owner and mode included. Only a directory of
/// the rootfs's own filesystem below its root is copied: never the root itself (a
/// symlink to `/`) nor what another mount (`/proc`, `/dev`) shows.
fn copy_up_into(
    root: BorrowedFd<'_>,
    target: &OwnedFd,
    source: &Path,
    shown: &Path,
) -> Result<(), Error> {
    let (Ok(r), Ok(t)) = (nix::sys::stat::fstat(root), nix::sys::stat::fstat(target)) else {
        return Ok(());
    };
    let is_dir = t.st_mode & libc::S_IFMT == libc::S_IFDIR;
    if !is_dir || r.st_dev != t.st_dev || r.st_ino == t.st_ino {
        if is_dir {
            tracing::warn!(
                "no copy-up into the volume at {}: not a directory of the image",
                shown.display()
            );
        }
        return Ok(());
    }
    let empty = fs::read_dir(source)
        .map_err(|e| Error::io(format!("read the volume {}", source.display()), e))?
        .next()
        .is_none();
    if !empty {
        return Ok(());
    }
    super::copy::copy_tree(&inroot::fd_path(target).join("."), source).map_err(|e| {
        Error::Setup(format!(
            "copying the image's {} into its volume: {e}",
            shown.display()
        ))
    })
}

fn remount_ro(dest: &Path, extra: MsFlags) -> Result<(), Error> {
    do_mount(
        None,
        dest,
        None,
        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | extra | locked_flags(dest),
        None,
    )
}

/// The flags of the mount at `dest` that a user namespace may not clear (a bind of a host
/// directory on a `nosuid,nodev` filesystem): a remount must repeat them or gets EPERM.
fn locked_flags(dest: &Path) -> MsFlags {
    use nix::sys::statvfs::FsFlags;
    let Ok(st) = nix::sys::statvfs::statvfs(dest) else {
        return MsFlags::empty();
    };
    let f = st.flags();
    let mut out = MsFlags::empty();
    for (have, set) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
        (FsFlags::ST_NOATIME, MsFlags::MS_NOATIME),
        (FsFlags::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
        (FsFlags::ST_RELATIME, MsFlags::MS_RELATIME),
    ] {
        if f.contains(have) {
            out.insert(set);
        }
    }
    out
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
    fn overlay_paths_are_escaped() {
        assert_eq!(escape_overlay_path(Path::new("/a:b,c")), "/a\\:b\\,c");
    }
}
