//! The tar streams of `skiff cp`: [`write_tree`] archives one path (its top entry first,
//! under the given name), [`extract_placed`] renames a stream's top entry as
//! [`super::rules`] decides and extracts it with the layer unpacker.

use std::ffi::OsStr;
use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use tar::{Builder, EntryType, Header, HeaderMode};

use super::rules::Rename;
use super::Error;
use crate::image::{unpack_layer, UnpackOptions, UnpackStats};

/// Writes a tar of `path` to `out`, its top entry named `name`. Symlinks are archived as
/// links (never followed below `path`; `path` itself only with `follow`). With `owner`,
/// every entry gets that uid/gid instead of the file's. Sockets are skipped.
pub fn write_tree<W: Write>(
    out: W,
    path: &Path,
    name: &Path,
    follow: bool,
    owner: Option<(u64, u64)>,
) -> Result<W, Error> {
    let meta = if follow {
        fs::metadata(path)
    } else {
        fs::symlink_metadata(path)
    }
    .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut b = Builder::new(out);
    b.follow_symlinks(false);
    append(&mut b, path, name, &meta, owner)?;
    if meta.is_dir() && !is_kernel_fs(path) {
        walk(&mut b, path, name, meta.dev(), owner)?;
    }
    b.into_inner()
        .map_err(|e| Error::io("finishing the archive", e))
}

/// Whether `path` is on a kernel filesystem that shows the system rather than files
/// (`/proc`, `/sys`, `/dev/pts`, cgroups, …): a copy keeps such mount points as empty
/// directories, as docker's copy of a container's root filesystem does.
fn is_kernel_fs(path: &Path) -> bool {
    use nix::sys::statfs as st;
    let Ok(fs) = st::statfs(path) else {
        return false;
    };
    [
        st::PROC_SUPER_MAGIC,
        st::SYSFS_MAGIC,
        st::DEVPTS_SUPER_MAGIC,
        st::CGROUP_SUPER_MAGIC,
        st::CGROUP2_SUPER_MAGIC,
        st::SECURITYFS_MAGIC,
        st::DEBUGFS_MAGIC,
        st::TRACEFS_MAGIC,
        st::BPF_FS_MAGIC,
    ]
    .contains(&fs.filesystem_type())
}

fn walk<W: Write>(
    b: &mut Builder<W>,
    dir: &Path,
    name: &Path,
    dev: u64,
    owner: Option<(u64, u64)>,
) -> Result<(), Error> {
    let mut children: Vec<_> = fs::read_dir(dir)
        .map_err(|e| Error::io(format!("reading the directory {}", dir.display()), e))?
        .filter_map(|e| e.ok().map(|e| e.file_name()))
        .collect();
    children.sort();
    for child in children {
        let p = dir.join(&child);
        let n = name.join(&child);
        // Vanished since the listing: skipped, as tar does.
        let Ok(meta) = fs::symlink_metadata(&p) else {
            continue;
        };
        append(b, &p, &n, &meta, owner)?;
        if meta.is_dir() && (meta.dev() == dev || !is_kernel_fs(&p)) {
            walk(b, &p, &n, meta.dev(), owner)?;
        }
    }
    Ok(())
}

fn append<W: Write>(
    b: &mut Builder<W>,
    path: &Path,
    name: &Path,
    meta: &fs::Metadata,
    owner: Option<(u64, u64)>,
) -> Result<(), Error> {
    let ft = meta.file_type();
    if ft.is_socket() {
        return Ok(());
    }
    let mut h = Header::new_gnu();
    h.set_metadata_in_mode(meta, HeaderMode::Complete);
    if let Some((uid, gid)) = owner {
        h.set_uid(uid);
        h.set_gid(gid);
    }
    let ctx = |e: io::Error| Error::io(format!("archiving {}", path.display()), e);
    if ft.is_symlink() {
        let target = fs::read_link(path).map_err(ctx)?;
        h.set_size(0);
        b.append_link(&mut h, name, target).map_err(ctx)
    } else if ft.is_file() {
        let f = File::open(path).map_err(ctx)?;
        // The size read now: a file growing while archived is cut to it.
        b.append_data(&mut h, name, f.take(meta.len())).map_err(ctx)
    } else {
        if ft.is_char_device() || ft.is_block_device() {
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)
                .and_then(|()| h.set_device_minor(nix::sys::stat::minor(rdev) as u32))
                .map_err(ctx)?;
        }
        h.set_size(0);
        b.append_data(&mut h, name, io::empty()).map_err(ctx)
    }
}

/// Renames the top entry of the tar read from `input` as `decide` says (it gets whether
/// that entry is a directory and returns the directory to extract into and the
/// rename), and extracts the result there with `opts`.
pub fn extract_placed<R: Read + Send + 'static>(
    input: R,
    decide: impl FnOnce(bool) -> Result<(PathBuf, Rename), Error> + Send + 'static,
    opts: &UnpackOptions,
) -> Result<UnpackStats, Error> {
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| Error::io("pipe", e.into()))?;
    let (tx, rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        block_sigpipe();
        rebase(input, File::from(w), decide, tx)
    });
    let extracted = match rx.recv() {
        Ok(dir) => Some(unpack_layer(File::from(r), &dir, opts)),
        Err(_) => {
            drop(r);
            None
        }
    };
    let rebased = writer
        .join()
        .unwrap_or_else(|_| Err(Error::Path("the archive reader panicked".into())));
    match (rebased, extracted) {
        (Err(e), _) => Err(e),
        (Ok(()), Some(r)) => Ok(r?),
        (Ok(()), None) => Err(Error::Path("the archive holds no entry".into())),
    }
}

/// Blocks SIGPIPE in the calling thread: a write to a pipe whose reader is gone then
/// fails with EPIPE in this thread and never kills the process, even where SIGPIPE's
/// default action is restored (Rust ignores it at start-up, and the CLI restores it
/// only to end after a failed write to its stdout).
pub fn block_sigpipe() {
    let mut set = nix::sys::signal::SigSet::empty();
    set.add(nix::sys::signal::Signal::SIGPIPE);
    if let Err(e) = set.thread_block() {
        tracing::warn!("cannot block SIGPIPE in the archive thread: {e}");
    }
}

/// Rewrites `input` into `out` with its top entry renamed; sends the extraction
/// directory on `tx` once the first entry has been seen.
fn rebase<R: Read>(
    input: R,
    out: File,
    decide: impl FnOnce(bool) -> Result<(PathBuf, Rename), Error>,
    tx: std::sync::mpsc::Sender<PathBuf>,
) -> Result<(), Error> {
    let bad = |e: io::Error| Error::Path(format!("not a valid tar archive: {e}"));
    let mut archive = tar::Archive::new(input);
    let mut builder = Builder::new(io::BufWriter::new(out));
    let mut top: Option<(PathBuf, Rename)> = None;
    let mut decide = Some(decide);
    for entry in archive.entries().map_err(bad)? {
        let mut entry = entry.map_err(bad)?;
        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            continue;
        }
        let path = entry.path().map_err(bad)?.into_owned();
        let (top_name, rename) = match &top {
            Some(t) => t,
            None => {
                let name = crate::image::relative_path(&path).map_err(Error::Path)?;
                let decide = decide
                    .take()
                    .ok_or_else(|| Error::Path("the archive holds no entry".into()))?;
                let (dir, rename) = decide(kind == EntryType::Directory)?;
                if tx.send(dir).is_err() {
                    return Ok(());
                }
                top.insert((name, rename))
            }
        };
        let Some(new) = renamed(&path, top_name, rename) else {
            return Err(Error::Path(format!(
                "the archive holds {} besides its top entry {}: one tree only",
                path.display(),
                top_name.display()
            )));
        };
        if new.as_os_str().is_empty() {
            continue; // The top entry itself, when only its contents are copied.
        }
        let mut h = entry.header().clone();
        let res = if kind.is_hard_link() || kind.is_symlink() {
            let target = entry
                .link_name()
                .map_err(bad)?
                .unwrap_or_default()
                .into_owned();
            let target = match kind.is_hard_link() {
                true => renamed(&target, top_name, rename).unwrap_or(target),
                false => target,
            };
            builder.append_link(&mut h, &new, &target)
        } else {
            builder.append_data(&mut h, &new, &mut entry)
        };
        if let Err(e) = res {
            // The extractor stopped reading (it refused the archive): its error tells why.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Ok(());
            }
            return Err(Error::io("passing the archive on", e));
        }
    }
    if top.is_none() {
        return Err(Error::Path("the archive holds no entry".into()));
    }
    match builder.into_inner().and_then(|mut w| w.flush()) {
        Err(e) if e.kind() != io::ErrorKind::BrokenPipe => {
            Err(Error::io("passing the archive on", e))
        }
        _ => Ok(()),
    }
}

/// `path` with its first components `top` replaced as `rename` says; None when `path`
/// is not under `top`.
fn renamed(path: &Path, top: &Path, rename: &Rename) -> Option<PathBuf> {
    let rel = crate::image::relative_path(path).ok()?;
    let rest = rel.strip_prefix(top).ok()?;
    let base = match rename {
        Rename::Keep => top.to_path_buf(),
        Rename::To(name) => PathBuf::from(name),
        Rename::Contents => PathBuf::new(),
    };
    // `join("")` would add a trailing `/`, which makes a file entry a directory.
    Some(match rest.as_os_str().is_empty() {
        true => base,
        false => base.join(rest),
    })
}

/// The base name a copied path's top entry gets (`root` for `/`).
pub fn top_name(path: &str) -> PathBuf {
    let (trimmed, _) = super::rules::split_dir_suffix(path);
    Path::new(trimmed)
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(OsStr::new("root")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renames_under_the_top_only() {
        let t = Path::new("d");
        assert_eq!(
            renamed(Path::new("d/a"), t, &Rename::Keep),
            Some("d/a".into())
        );
        let top = renamed(Path::new("d"), t, &Rename::To("n".into())).unwrap();
        assert_eq!(
            top.as_os_str(),
            "n",
            "no trailing slash: it would make a directory"
        );
        assert_eq!(
            renamed(Path::new("./d/a"), t, &Rename::To("n".into())),
            Some("n/a".into())
        );
        assert_eq!(
            renamed(Path::new("d"), t, &Rename::Contents),
            Some("".into())
        );
        assert_eq!(renamed(Path::new("e/a"), t, &Rename::Keep), None);
        assert_eq!(renamed(Path::new("d/../x"), t, &Rename::Keep), None);
    }

    #[test]
    fn a_tree_round_trips_renamed() {
        let src = tempfile::tempdir().unwrap();
        fs::create_dir(src.path().join("d")).unwrap();
        fs::write(src.path().join("d/f"), b"data").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", src.path().join("d/l")).unwrap();
        let tar = write_tree(
            Vec::new(),
            &src.path().join("d"),
            Path::new("d"),
            false,
            None,
        )
        .unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dir = dest.path().to_path_buf();
        let opts = UnpackOptions {
            preserve_ownership: false,
            whiteouts: false,
            ..UnpackOptions::default()
        };
        extract_placed(
            io::Cursor::new(tar),
            move |is_dir| {
                assert!(is_dir);
                Ok((dir, Rename::To("n".into())))
            },
            &opts,
        )
        .unwrap();
        assert_eq!(fs::read(dest.path().join("n/f")).unwrap(), b"data");
        assert_eq!(
            fs::read_link(dest.path().join("n/l")).unwrap(),
            Path::new("/etc/passwd")
        );
    }

    #[test]
    fn two_trees_are_refused() {
        let mut b = Builder::new(Vec::new());
        for n in ["a", "b"] {
            let mut h = Header::new_gnu();
            h.set_size(0);
            h.set_mode(0o644);
            b.append_data(&mut h, n, io::empty()).unwrap();
        }
        let tar = b.into_inner().unwrap();
        let dest = tempfile::tempdir().unwrap();
        let dir = dest.path().to_path_buf();
        let e = extract_placed(
            io::Cursor::new(tar),
            move |_| Ok((dir, Rename::Keep)),
            &UnpackOptions {
                preserve_ownership: false,
                ..UnpackOptions::default()
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("one tree only"), "{e}");
    }
}
