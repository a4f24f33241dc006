//! Atomic writes into a temporary file made ahead (`.next-NAME`, `.next2-NAME`): the
//! same temporary file, writes and rename as [`super::write_via_rename`], without making
//! an inode on the writer's path. On a disk filesystem a new inode is an allocation that
//! scans for recently deleted ones (ext4 without a journal): ~0.1-1 ms on a busy machine,
//! which the start of a container paid for its running record and its exit file
//! (docs/benchmarks.md, session 10). skiffd's spare container directory and spare bundle
//! hold such empty files, made off the start's path.
//!
//! A write first claims the file made ahead by renaming it to a temporary name of its
//! own (`.tmp-PID-SEQ-NAME`): of two writers at once only one gets it, the other makes
//! its temporary file as ever. The claimed file must be a regular file of ours with one
//! link (else it is removed and the write falls back); it is emptied, written, synced as
//! asked and renamed over the target. A crash at any point leaves the old or the new
//! target and at most a `.tmp-` leftover, as [`super::write_via_rename`] does.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::{sync_dir, temp_name, write_via_rename, Sync};

/// The names of the files made ahead for the writes of `name`, in the order they are
/// used.
pub fn premade_names(name: &str) -> [String; 2] {
    [format!(".next-{name}"), format!(".next2-{name}")]
}

/// Makes the `count` (at most 2) empty files of `dir` for the next writes of `name`
/// (mode 0600). Made ahead, off a writer's path.
pub fn make_premade(dir: &Path, name: &str, count: usize) -> io::Result<()> {
    for n in premade_names(name).iter().take(count) {
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(n))?;
    }
    Ok(())
}

/// Removes the files of `dir` made ahead for the writes of `name` (those there): for a
/// writer that will not come soon (a container created but not started keeps none).
/// A writer that claimed one meanwhile keeps it; its write is whole either way.
pub fn remove_premade(dir: &Path, name: &str) -> io::Result<()> {
    for n in premade_names(name) {
        match fs::remove_file(dir.join(n)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
    }
    Ok(())
}

/// Writes `data` to `path` as [`write_via_rename`] with `sync`, in a file made ahead
/// when one is there.
pub(super) fn write_via_premade(path: &Path, data: &[u8], sync: Sync) -> io::Result<()> {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return write_via_rename(path, data, sync);
    };
    let name = name.to_string_lossy();
    for premade in premade_names(&name) {
        let tmp = temp_name(dir, path.file_name().unwrap_or_default());
        // The claim: one writer renames it; the others find it gone.
        if fs::rename(dir.join(&premade), &tmp).is_err() {
            continue;
        }
        match write_claimed(&tmp, path, dir, data, sync) {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::debug!("{} made ahead not used: {e}", dir.join(&premade).display());
                let _ = fs::remove_file(&tmp);
                break;
            }
        }
    }
    write_via_rename(path, data, sync)
}

fn write_claimed(tmp: &Path, path: &Path, dir: &Path, data: &[u8], sync: Sync) -> io::Result<()> {
    // Not followed if a symlink; a FIFO does not block the open.
    let mut f = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(tmp)?;
    let m = f.metadata()?;
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    if !m.is_file() || m.nlink() != 1 || m.uid() != me {
        return Err(io::Error::other("not an empty file of ours"));
    }
    if m.len() != 0 {
        f.set_len(0)?;
    }
    f.write_all(data)?;
    if sync != Sync::None {
        f.sync_all()?;
    }
    drop(f);
    fs::rename(tmp, path)?;
    if sync == Sync::FileAndDir {
        sync_dir(dir)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{atomic_replace, atomic_write_premade, replace_file_premade};
    use super::*;

    use super::super::tests::entries_of as names;

    #[test]
    fn the_files_made_ahead_are_used_in_turn_then_a_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.json");
        make_premade(dir.path(), "container.json", 2).unwrap();
        let ino = |n: &str| fs::metadata(dir.path().join(n)).unwrap().ino();
        let (first, second) = (ino(".next-container.json"), ino(".next2-container.json"));
        atomic_write_premade(&p, b"one").unwrap();
        assert_eq!(
            (ino("container.json"), fs::read(&p).unwrap()),
            (first, b"one".to_vec())
        );
        replace_file_premade(&p, b"two").unwrap();
        assert_eq!(
            (ino("container.json"), fs::read(&p).unwrap()),
            (second, b"two".to_vec())
        );
        assert_eq!(names(dir.path()), ["container.json"]);
        // None left: a temporary file of its own, as ever.
        replace_file_premade(&p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        assert_eq!(names(dir.path()), ["container.json"]);
    }

    #[test]
    fn the_files_made_ahead_are_removed_and_the_writes_go_on_without() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.json");
        make_premade(dir.path(), "container.json", 2).unwrap();
        atomic_write_premade(&p, b"one").unwrap();
        assert_eq!(
            names(dir.path()),
            [".next2-container.json", "container.json"]
        );
        remove_premade(dir.path(), "container.json").unwrap();
        assert_eq!(names(dir.path()), ["container.json"]);
        // None there: nothing to do.
        remove_premade(dir.path(), "container.json").unwrap();
        replace_file_premade(&p, b"two").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"two");
        assert_eq!(names(dir.path()), ["container.json"]);
    }

    #[test]
    fn a_file_made_ahead_that_is_not_a_plain_file_of_ours_is_not_written() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("exit.json");
        // A symlink where the file made ahead goes: not followed, not written through.
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"keep").unwrap();
        std::os::unix::fs::symlink(&target, dir.path().join(".next-exit.json")).unwrap();
        replace_file_premade(&p, b"{}").unwrap();
        assert_eq!(fs::read(&target).unwrap(), b"keep");
        assert_eq!(fs::read(&p).unwrap(), b"{}");
        // A hard link (two names): not truncated.
        let linked = dir.path().join("linked");
        fs::write(&linked, b"keep too").unwrap();
        fs::hard_link(&linked, dir.path().join(".next-exit.json")).unwrap();
        atomic_replace(&p, b"x").unwrap();
        replace_file_premade(&p, b"y").unwrap();
        assert_eq!(fs::read(&linked).unwrap(), b"keep too");
        assert_eq!(fs::read(&p).unwrap(), b"y");
        assert_eq!(names(dir.path()), ["elsewhere", "exit.json", "linked"]);
        // With content (a crash mid-write left it): emptied, then written whole.
        fs::write(
            dir.path().join(".next-exit.json"),
            b"a longer stale content",
        )
        .unwrap();
        replace_file_premade(&p, b"z").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"z");
    }

    /// Writers at once: one claims the file made ahead, the others make their own; the
    /// file ends whole and no temporary file is left.
    #[test]
    fn writers_at_once_do_not_share_the_file_made_ahead() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("container.json");
        for round in 0..50 {
            make_premade(dir.path(), "container.json", 2).unwrap();
            let barrier = std::sync::Barrier::new(4);
            std::thread::scope(|s| {
                for w in 0..4u8 {
                    let (p, barrier) = (&p, &barrier);
                    s.spawn(move || {
                        let data = vec![b'a' + w; 32 * 1024];
                        barrier.wait();
                        replace_file_premade(p, &data).unwrap();
                    });
                }
            });
            let got = fs::read(&p).unwrap();
            assert_eq!(got.len(), 32 * 1024, "round {round}: not one whole write");
            assert!(got.iter().all(|b| *b == got[0]), "round {round}: mixed");
            assert_eq!(names(dir.path()), ["container.json"], "round {round}");
        }
    }
}
