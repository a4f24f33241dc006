//! Small filesystem helpers shared by the stores: atomic writes and fsyncs.
//!
//! Every piece of state skiff keeps is written with [`atomic_write`]: a temporary file in
//! the same directory, fsync, rename over the target, then fsync of the directory. A crash
//! at any point leaves either the old or the new content, never a torn file. Each write
//! has a temporary file of its own (pid and a per-process sequence number, created
//! exclusively), so threads writing the same file at once do not collide: the last
//! rename wins, whole.
//!
//! A record's runtime-state changes (a container started or ended) use
//! [`atomic_replace`]: temporary file, fsync of it, rename, but no fsync of the
//! directory. After a crash of the machine the file holds the old or the new content,
//! whole (the data was synced before the rename), and only the rename may be lost:
//! the old state comes back, which is what a crash of skiffd before the write leaves
//! too, and which start-up handles (nothing runs after a reboot).
//!
//! Files of the runtime directory (`$XDG_RUNTIME_DIR`: a container's bundle, its exit
//! file, its /etc files), which by definition do not outlive a reboot, are written with
//! [`replace_file`]: the same temporary file and rename, without the fsyncs. A crash of
//! a process (`kill -9` of skiffd or a monitor) still leaves the old or the new content;
//! only a crash of the machine, which ends every container, could lose the write.
//!
//! The `_premade` variants write into an empty temporary file made ahead, when there is
//! one (see [`premade`]): no inode is made on the writer's path.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

mod premade;
pub use premade::{make_premade, premade_names, remove_premade};

/// Writes `data` to `path` atomically (temp file + fsync + rename + fsync of the directory).
pub fn atomic_write(path: &Path, data: &[u8]) -> io::Result<()> {
    write_via_rename(path, data, Sync::FileAndDir)
}

/// Which fsyncs [`write_via_rename`] makes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Sync {
    None,
    File,
    FileAndDir,
}

/// Writes `data` to `path` atomically (temp file + fsync + rename), without the fsync
/// of the directory: the rename may be lost in a crash of the machine, never the
/// content torn (see the module documentation for when that is enough).
pub fn atomic_replace(path: &Path, data: &[u8]) -> io::Result<()> {
    write_via_rename(path, data, Sync::File)
}

/// Writes `data` to `path` atomically against a crash of the process, not of the
/// machine (temp file + rename, no fsync): for files of the runtime directory only (see
/// the module documentation).
pub fn replace_file(path: &Path, data: &[u8]) -> io::Result<()> {
    write_via_rename(path, data, Sync::None)
}

/// [`atomic_write`] into a temporary file made ahead, if there is one ([`premade`]).
pub fn atomic_write_premade(path: &Path, data: &[u8]) -> io::Result<()> {
    premade::write_via_premade(path, data, Sync::FileAndDir)
}

/// [`atomic_replace`] into a temporary file made ahead, if there is one ([`premade`]).
pub fn atomic_replace_premade(path: &Path, data: &[u8]) -> io::Result<()> {
    premade::write_via_premade(path, data, Sync::File)
}

/// [`replace_file`] into a temporary file made ahead, if there is one ([`premade`]).
pub fn replace_file_premade(path: &Path, data: &[u8]) -> io::Result<()> {
    premade::write_via_premade(path, data, Sync::None)
}

/// Serialises `value` as pretty JSON and writes it with [`replace_file_premade`].
pub fn replace_file_premade_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace_file_premade(path, &data)
}

/// Serialises `value` as pretty JSON and writes it with [`replace_file`].
pub fn replace_file_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    replace_file(path, &data)
}

/// Tells the temporary files of one process apart: with the pid, a temporary name is
/// unique to one write, so two threads writing the same file at once each rename their
/// own whole file.
static TMP_SEQ: AtomicU64 = AtomicU64::new(0);

/// Creates a temporary file for `name` in `dir` that no other write uses
/// (`.tmp-PID-SEQ-NAME`, created exclusively: a leftover of a crashed process with the
/// same pid is skipped, not reused).
fn create_temp(dir: &Path, name: &std::ffi::OsStr) -> io::Result<(PathBuf, File)> {
    let mut tries = 0;
    loop {
        let tmp = temp_name(dir, name);
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
        {
            Ok(f) => return Ok((tmp, f)),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && tries < 100 => tries += 1,
            Err(e) => return Err(e),
        }
    }
}

/// The next temporary name for `name` in `dir` (`.tmp-PID-SEQ-NAME`).
fn temp_name(dir: &Path, name: &std::ffi::OsStr) -> PathBuf {
    let seq = TMP_SEQ.fetch_add(1, Ordering::Relaxed);
    dir.join(format!(
        ".tmp-{}-{seq}-{}",
        std::process::id(),
        name.to_string_lossy()
    ))
}

fn write_via_rename(path: &Path, data: &[u8], sync: Sync) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, "path has no parent directory")
    })?;
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    let (tmp, mut f) = create_temp(dir, name)?;
    let result = (|| {
        f.write_all(data)?;
        if sync != Sync::None {
            f.sync_all()?;
        }
        drop(f);
        fs::rename(&tmp, path)?;
        if sync == Sync::FileAndDir {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Serialises `value` as pretty JSON and writes it with [`atomic_write`].
pub fn atomic_write_json<T: serde::Serialize>(path: &Path, value: &T) -> io::Result<()> {
    let data = serde_json::to_vec_pretty(value).map_err(io::Error::other)?;
    atomic_write(path, &data)
}

/// fsyncs a directory so that renames and creations inside it are durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Flushes every dirty page and inode of the filesystem holding `path` to the disk
/// (`syncfs(2)`): one call makes a whole tree just written durable, where an fsync of
/// each of its files would cost a disk flush per file. Reports the filesystem's
/// write-back errors (Linux 5.8 and later).
pub fn syncfs(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let f = File::open(path)?;
    // SAFETY: syncfs only reads the descriptor, which `f` owns for the whole call.
    if unsafe { libc::syncfs(f.as_raw_fd()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Creates `dir` (and parents) with mode 0700 if it does not exist.
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the private directory `dir` (its parents as needed); true when this call made
/// it (a new, empty directory nobody else writes to), false when it was there already.
pub fn create_private_dir(dir: &Path) -> io::Result<bool> {
    match create_private_dir_once(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => match dir.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => {
                ensure_private_dir(parent)?;
                create_private_dir_once(dir)
            }
            _ => Err(e),
        },
        other => other,
    }
}

/// [`create_private_dir`] once its parent exists.
fn create_private_dir_once(dir: &Path) -> io::Result<bool> {
    use std::os::unix::fs::DirBuilderExt;
    match fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes a runtime-directory file: in a directory [`create_private_dir`] just made, or
/// one made ahead with its files empty (`fresh`), directly under its name (nothing else
/// opens it before the writer is done: no temporary file and rename; a symlink there is
/// not followed, a file with content not replaced); else with [`replace_file`]. `mode` (if any) is set on the file
/// whatever the umask.
pub fn put_runtime_file(
    path: &Path,
    data: &[u8],
    fresh: bool,
    mode: Option<u32>,
) -> io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if !fresh {
        replace_file(path, data)?;
        if let Some(m) = mode {
            fs::set_permissions(path, fs::Permissions::from_mode(m))?;
        }
        return Ok(());
    }
    // The file may exist, empty, made ahead with its directory (skiffd's spare
    // bundle): written in place, no new inode. One with content is not replaced.
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(mode.unwrap_or(0o600))
        .open(path)?;
    if f.metadata()?.len() != 0 {
        return Err(io::Error::new(
            io::ErrorKind::AlreadyExists,
            "a new file was expected, it exists with content",
        ));
    }
    if let Some(m) = mode {
        f.set_permissions(fs::Permissions::from_mode(m))?;
    }
    f.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runtime_files_fresh_or_replaced_have_content_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let bundle = dir.path().join("a/b");
        assert!(create_private_dir(&bundle).unwrap(), "made");
        assert!(!create_private_dir(&bundle).unwrap(), "there already");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&bundle), 0o700);
        let hosts = bundle.join("hosts");
        put_runtime_file(&hosts, b"one", true, Some(0o644)).unwrap();
        assert_eq!(
            (fs::read(&hosts).unwrap(), mode(&hosts)),
            (b"one".to_vec(), 0o644)
        );
        // A fresh write never replaces a file (a bundle said fresh is new), but writes
        // into an empty one made ahead.
        assert!(put_runtime_file(&hosts, b"two", true, Some(0o644)).is_err());
        let ahead = bundle.join("hostname");
        fs::write(&ahead, b"").unwrap();
        put_runtime_file(&ahead, b"h", true, Some(0o644)).unwrap();
        assert_eq!(
            (fs::read(&ahead).unwrap(), mode(&ahead)),
            (b"h".to_vec(), 0o644)
        );
        fs::remove_file(&ahead).unwrap();
        put_runtime_file(&hosts, b"two", false, Some(0o644)).unwrap();
        assert_eq!(
            (fs::read(&hosts).unwrap(), mode(&hosts)),
            (b"two".to_vec(), 0o644)
        );
        let spec = bundle.join("config.json");
        put_runtime_file(&spec, b"{}", true, None).unwrap();
        assert_eq!(mode(&spec), 0o600);
        assert_eq!(
            entries_of(&bundle),
            ["config.json", "hosts"],
            "no temporary file left"
        );
    }

    /// The names in `dir`, sorted (also for [`super::premade`]'s tests).
    pub(super) fn entries_of(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
    }

    #[test]
    fn replace_file_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        replace_file(&p, b"one").unwrap();
        replace_file_json(&p, &serde_json::json!({"exit_code": 2})).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&fs::read(&p).unwrap()).unwrap();
        assert_eq!(v["exit_code"], 2);
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
    }

    #[test]
    fn atomic_replace_replaces_content_and_leaves_no_temp() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.json");
        atomic_replace(&p, b"one").unwrap();
        atomic_replace(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "temporary files left behind");
        // A missing directory is an error, not a panic or a stray file.
        let missing = dir.path().join("gone").join("container.json");
        assert!(atomic_replace(&missing, b"x").is_err());
    }

    /// Threads of one process writing the same file at once: each write succeeds, the
    /// file ends whole (one writer's content), and no temporary file is left.
    #[test]
    fn concurrent_writers_of_one_file_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("build-cache.json");
        let writers = 8;
        let rounds = 200;
        let barrier = std::sync::Barrier::new(writers);
        let failures = std::sync::Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for w in 0..writers {
                let (p, barrier, failures) = (&p, &barrier, &failures);
                s.spawn(move || {
                    // Each writer's content is its number repeated: a torn or mixed
                    // file is seen.
                    let data = vec![b'a' + w as u8; 64 * 1024];
                    barrier.wait();
                    for r in 0..rounds {
                        let res = match r % 3 {
                            0 => atomic_write(p, &data),
                            1 => atomic_replace(p, &data),
                            _ => replace_file(p, &data),
                        };
                        if let Err(e) = res {
                            failures
                                .lock()
                                .unwrap()
                                .push(format!("writer {w} round {r}: {e}"));
                        }
                    }
                });
            }
        });
        let failures = failures.into_inner().unwrap();
        assert!(failures.is_empty(), "writes failed: {failures:?}");
        let got = fs::read(&p).unwrap();
        assert_eq!(got.len(), 64 * 1024, "the file is not one whole write");
        assert!(
            got.iter().all(|b| *b == got[0]),
            "the file mixes two writers' data"
        );
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary files left behind: {names:?}");
    }

    /// A leftover temporary file (a crashed process that had the same pid) is neither
    /// reused nor in the way.
    #[test]
    fn a_stale_temp_file_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("state.json");
        let next = TMP_SEQ.load(Ordering::Relaxed);
        for seq in next..next + 3 {
            let stale = dir
                .path()
                .join(format!(".tmp-{}-{seq}-state.json", std::process::id()));
            fs::write(&stale, b"stale").unwrap();
        }
        atomic_write(&p, b"fresh").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"fresh");
    }
}
