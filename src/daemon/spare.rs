//! A container directory made ahead of its create.
//!
//! A container's directory holds `upper`, `work` and `rootfs` from its create on: four
//! new directories, which on a disk filesystem cost a create ~0.3 ms each in inode
//! allocation (ext4 without a journal scans for recently deleted inodes). skiffd keeps one
//! such empty directory ready under `spare/` (a sibling of `containers/`, on the same
//! filesystem), and a create takes it with one rename. It is made again off the start's
//! path: right after a create that will not be started at once, and for a start (also
//! one whose create found none) once its client has its answer, on a thread at nice 19
//! ([`run_in_background`]):
//! a detached start's (`run -d`, `start`) when the start answers; a start whose client
//! waits for the run's end (a foreground `run`, `start -a`) at that end, once the exit is
//! recorded — for a `--rm` container by its removal's thread, after the removal's answer.
//! Not while the command runs: a thread in ext4's inode allocation is not preempted for
//! the command's own wake-ups, and delayed a short command by 1-3 ms
//! (docs/benchmarks.md, session 10).
//!
//! A spare left by a skiffd that ended is removed at start-up (it is never reused across
//! daemons: nothing vouches for its contents).
//!
//! The same for a container's bundle in the runtime directory ([`BUNDLE_FILES`]): a
//! first start takes a spare bundle (under the runtime directory's `spare/`) whose files
//! exist, empty, and writes into them, instead of making a directory and five new
//! inodes on the start's path (docs/benchmarks.md, session 10). On a tmpfs (a session's
//! `/run/user/UID`) that costs little either way; on a disk filesystem each new inode
//! is an allocation that scans for recently deleted ones. A `--rm` run gives its bundle
//! back at its removal, emptied ([`recycle_bundle`]): no inode is made or freed.
//!
//! Both also hold the empty temporary files of the writes that follow on the start's
//! path ([`fsutil::make_premade`]): two for the container's record (its create's and
//! its start's), one for the monitor's exit file. A `--rm` run's exit file becomes
//! the given-back bundle's one again. A container that is not about to start keeps
//! none: a create not started at once removes the start's, as does a start refused
//! before it was recorded, and skiffd's start-up those of every container.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::fsutil;

/// The subdirectories of a container's directory, all made at its create.
pub(crate) const SUBDIRS: [&str; 3] = ["upper", "work", "rootfs"];

enum Slot {
    Empty,
    Filling,
    Ready(PathBuf),
}

/// The files of a bundle that a spare bundle holds, empty: those every first start
/// writes (the runtime spec, the monitor's configuration, the /etc files of every
/// network mode, the monitor's lock). `resolv.conf` is left out: the modes without it
/// (`none`, `host`) would keep an empty one.
pub(crate) const BUNDLE_FILES: [&str; 5] = [
    crate::monitor::SPEC_FILE,
    crate::monitor::CONFIG_FILE,
    "hosts",
    "hostname",
    crate::monitor::lock::LOCK_FILE,
];

/// The spare directory, if one is ready.
pub(crate) struct Spare {
    root: PathBuf,
    slot: Mutex<Slot>,
    counter: AtomicU64,
    make: fn(&Path) -> std::io::Result<()>,
}

impl Spare {
    /// No spare container directory yet; they are made under `root`.
    pub(crate) fn new(root: PathBuf) -> Spare {
        Spare::of(root, make_spare)
    }

    /// No spare bundle yet; they are made under `root` (see [`BUNDLE_FILES`]).
    pub(crate) fn bundles(root: PathBuf) -> Spare {
        Spare::of(root, make_bundle)
    }

    fn of(root: PathBuf, make: fn(&Path) -> std::io::Result<()>) -> Spare {
        Spare {
            root,
            slot: Mutex::new(Slot::Empty),
            counter: AtomicU64::new(0),
            make,
        }
    }

    /// Where spares are made (for the start-up clean-up).
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Slot> {
        match self.slot.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Renames the spare to `to` (a new container directory or bundle; never over one
    /// that exists); false when there was none or it could not be taken (then the
    /// caller makes the directory itself).
    pub(crate) fn take_into(&self, to: &Path) -> bool {
        let taken = {
            let mut slot = self.lock();
            match std::mem::replace(&mut *slot, Slot::Empty) {
                Slot::Ready(p) => Some(p),
                other => {
                    *slot = other;
                    None
                }
            }
        };
        match taken {
            Some(p) => match rename_noreplace(&p, to) {
                Ok(()) => true,
                Err(e) => {
                    tracing::warn!("taking the spare directory {}: {e}", p.display());
                    let _ = std::fs::remove_dir_all(&p);
                    false
                }
            },
            None => false,
        }
    }

    /// Makes `dir` the spare when there is none ready or being made (a bundle given back
    /// after its run, see [`recycle_bundle`]); false otherwise, or when it could not be
    /// moved (then it is where it was).
    pub(crate) fn give(&self, dir: &Path) -> bool {
        let mut slot = self.lock();
        if !matches!(*slot, Slot::Empty) {
            return false;
        }
        let to = self.next_name();
        let moved =
            fsutil::ensure_private_dir(&self.root).and_then(|()| rename_noreplace(dir, &to));
        match moved {
            Ok(()) => {
                *slot = Slot::Ready(to);
                true
            }
            Err(e) => {
                tracing::debug!("{} not kept as the spare: {e}", dir.display());
                false
            }
        }
    }

    fn next_name(&self) -> PathBuf {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        self.root.join(format!(
            "{}-{}-{n}",
            std::process::id(),
            crate::timefmt::now_us()
        ))
    }

    /// Whether a spare is ready or being made (a refill would do nothing).
    fn is_ready(&self) -> bool {
        !matches!(*self.lock(), Slot::Empty)
    }

    /// Makes a spare if none is ready or being made. Blocking (a few directories).
    pub(crate) fn refill(&self) {
        {
            let mut slot = self.lock();
            if !matches!(*slot, Slot::Empty) {
                return;
            }
            *slot = Slot::Filling;
        }
        let dir = self.next_name();
        let made = (self.make)(&dir);
        let mut slot = self.lock();
        *slot = match made {
            Ok(()) => Slot::Ready(dir),
            Err(e) => {
                tracing::warn!("making a spare container directory {}: {e}", dir.display());
                let _ = std::fs::remove_dir_all(&dir);
                Slot::Empty
            }
        };
    }
}

impl super::Daemon {
    /// Makes the next spare container directory in the background, on a thread of its
    /// own at the idle scheduling class: it takes the CPU only when nothing else wants
    /// it (a start, a client's exit), as it has no one waiting for it.
    pub(crate) fn refill_spare(&self) {
        let daemon = self.clone();
        let spawned = std::thread::Builder::new()
            .name("spare".into())
            .spawn(move || {
                let param = libc::sched_param { sched_priority: 0 };
                // SAFETY: sched_setscheduler on the calling thread (0) with a valid
                // sched_param; lowering our own class needs no privilege.
                if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
                    tracing::debug!(
                        "SCHED_IDLE for the spare's thread: {}",
                        std::io::Error::last_os_error()
                    );
                }
                daemon.inner.spare.refill();
                daemon.inner.spare_bundle.refill();
            });
        if let Err(e) = spawned {
            tracing::warn!("cannot start a thread for the spare container directory: {e}");
        }
    }
}

impl super::Daemon {
    /// Makes the spare container directory and bundle that are missing (a start took
    /// them) on a thread at nice 19 ([`run_in_background`]): for a start whose client
    /// has its answer (see the module documentation). Nothing when both are there.
    pub(crate) fn refill_spares_after_answer(&self) {
        let inner = &self.inner;
        if inner.spare.is_ready() && inner.spare_bundle.is_ready() {
            return;
        }
        let daemon = self.clone();
        run_in_background("spare", move || {
            crate::phase::mark("spares-refill");
            daemon.inner.spare.refill();
            daemon.inner.spare_bundle.refill();
        });
    }
}

/// Runs `work` on a thread of its own at the lowest nice level (19): file-system work
/// no one waits for (a `--rm` container's files after its client was answered), which
/// then takes the CPU after the client's exit rather than before it, yet is not starved
/// on a busy machine as `SCHED_IDLE` can be. Without a thread, runs it here.
pub(crate) fn run_in_background(name: &str, work: impl FnOnce() + Send + 'static) {
    // Shared so that it is still ours to run when no thread could be made.
    let slot = std::sync::Arc::new(Mutex::new(Some(work)));
    let theirs = slot.clone();
    let spawned = std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            // SAFETY: gettid and setpriority take plain integers; raising our own
            // thread's nice value needs no privilege.
            unsafe {
                let tid = libc::gettid() as libc::id_t;
                libc::setpriority(libc::PRIO_PROCESS, tid, 19);
            }
            let job = theirs.lock().ok().and_then(|mut w| w.take());
            if let Some(job) = job {
                job();
            }
        });
    if let Err(e) = spawned {
        tracing::warn!("cannot start a thread for {name}: {e}; done now");
        let job = slot.lock().ok().and_then(|mut w| w.take());
        if let Some(job) = job {
            job();
        }
    }
}

impl super::Daemon {
    /// Makes the directory `dir` of a new container with its [`SUBDIRS`]: the spare
    /// renamed when there is one (else one made now), and the next spare made in the
    /// background — but for a container `started_soon` (`RunContainer`), whether it
    /// found a spare or not: its start makes them once its client has its answer (see
    /// the module documentation), not while its command runs.
    pub(crate) fn new_container_dir(&self, dir: &Path, started_soon: bool) -> std::io::Result<()> {
        if !self.inner.spare.take_into(dir) {
            make(dir)?;
        }
        if !started_soon {
            self.refill_spare();
        }
        Ok(())
    }

    /// The bundle directory `bundle` of a container's first start, with the
    /// [`BUNDLE_FILES`] there, empty: the spare bundle renamed. False when there was
    /// none (the caller makes the directory), or `bundle` exists.
    pub(crate) fn take_spare_bundle(&self, bundle: &Path) -> bool {
        self.inner.spare_bundle.take_into(bundle)
    }

    /// Keeps the bundle of a run that ended (its monitor gone) as the spare bundle, its
    /// files emptied: the next first start writes into them, and no inode is made or
    /// freed (see [`recycle_bundle`]). Else removes it and makes a spare bundle anew.
    /// Blocking; after a `--rm` removal's answer, on its background thread.
    pub(crate) fn give_back_bundle(&self, bundle: &Path) {
        let kept = matches!(crate::monitor::lock::holder(bundle), Ok(None))
            && match recycle_bundle(bundle) {
                Ok(()) => true,
                Err(e) => {
                    tracing::debug!("bundle {} not reused: {e}", bundle.display());
                    false
                }
            }
            && self.inner.spare_bundle.give(bundle);
        if !kept {
            let _ = std::fs::remove_dir_all(bundle);
            self.inner.spare_bundle.refill();
        }
    }

    /// The spares left by an earlier skiffd (removed at start-up).
    pub(crate) fn stale_spares(&self) -> Vec<PathBuf> {
        [self.inner.spare.root(), self.inner.spare_bundle.root()]
            .into_iter()
            .flat_map(|root| match std::fs::read_dir(root) {
                Ok(entries) => entries.flatten().map(|e| e.path()).collect(),
                Err(_) => Vec::new(),
            })
            .collect()
    }
}

/// Renames `from` to `to` unless `to` exists (`renameat2(RENAME_NOREPLACE)`: a plain
/// rename would replace an empty directory).
fn rename_noreplace(from: &Path, to: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    renameat2(AT_FDCWD, from, AT_FDCWD, to, RenameFlags::RENAME_NOREPLACE).map_err(Into::into)
}

/// Turns the bundle `dir` of a run that ended into a spare bundle: the [`BUNDLE_FILES`]
/// emptied (mode 0600), everything else (the exit file, `resolv.conf`, a network
/// helper's files) removed. Refuses — the caller removes the bundle — what is not as
/// skiffd made it: a file not ours (a container's root may have chowned an /etc file
/// bind-mounted from here), a file with extended attributes set in its run, a symlink,
/// a directory, a missing file.
pub(crate) fn recycle_bundle(dir: &Path) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
    let odd = |what: String| std::io::Error::other(what);
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let meta = std::fs::symlink_metadata(dir)?;
    if !meta.is_dir() || meta.uid() != me {
        return Err(odd("not our directory".into()));
    }
    let exit_name = crate::monitor::EXIT_FILE;
    let [exit_premade, _] = fsutil::premade_names(exit_name);
    let mut kept = 0;
    let (mut premade_there, mut exit_there) = (false, false);
    // Listed first: a rename below must not show the same file twice.
    let entries = std::fs::read_dir(dir)?.collect::<Result<Vec<_>, _>>()?;
    for entry in entries {
        let name = entry.file_name();
        let path = entry.path();
        let is_exit = name == exit_name;
        let is_premade = name == exit_premade.as_str();
        if is_exit || is_premade || BUNDLE_FILES.iter().any(|f| std::ffi::OsStr::new(f) == name) {
            let f = std::fs::OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(&path)?;
            let m = f.metadata()?;
            if !m.is_file() || m.uid() != me || m.nlink() != 1 {
                return Err(odd(format!("{}: not a file of ours", path.display())));
            }
            // Extended attributes a container's root set on a bind-mounted /etc file
            // would be the next container's (an SELinux label is the system's own).
            let names = crate::fuse::sys::flistxattr(f.as_raw_fd())
                .map_err(std::io::Error::from_raw_os_error)?;
            if names.iter().any(|n| n != "security.selinux") {
                return Err(odd(format!(
                    "{}: has extended attributes set since it was made",
                    path.display()
                )));
            }
            f.set_len(0)?;
            f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            match (is_exit, is_premade) {
                (true, _) => exit_there = true,
                (_, true) => premade_there = true,
                _ => kept += 1,
            }
        } else if entry.file_type()?.is_dir() {
            return Err(odd(format!("{}: a directory", path.display())));
        } else {
            std::fs::remove_file(&path)?;
        }
    }
    // The exit file, emptied, is the next run's one made ahead (one is enough).
    match (exit_there, premade_there) {
        (true, false) => std::fs::rename(dir.join(exit_name), dir.join(&exit_premade))?,
        (true, true) => std::fs::remove_file(dir.join(exit_name))?,
        _ => {}
    }
    if kept != BUNDLE_FILES.len() {
        return Err(odd("a bundle file is missing".into()));
    }
    Ok(())
}

/// Makes the private directory `dir` with the [`BUNDLE_FILES`], empty (mode 0600; a
/// writer sets its own).
pub(crate) fn make_bundle(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    if !fsutil::create_private_dir(dir)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the directory exists",
        ));
    }
    for name in BUNDLE_FILES {
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))?;
    }
    fsutil::make_premade(dir, crate::monitor::EXIT_FILE, 1)
}

/// Makes a spare container directory: [`make`], and the empty temporary files of its
/// first two record writes ([`fsutil::make_premade`]).
pub(crate) fn make_spare(dir: &Path) -> std::io::Result<()> {
    make(dir)?;
    fsutil::make_premade(dir, super::container::RECORD_FILE, 2)
}

/// Makes the private directory `dir` with the [`SUBDIRS`].
pub(crate) fn make(dir: &Path) -> std::io::Result<()> {
    if !fsutil::create_private_dir(dir)? {
        return Err(std::io::Error::new(
            std::io::ErrorKind::AlreadyExists,
            "the directory exists",
        ));
    }
    for sub in SUBDIRS {
        fsutil::ensure_private_dir(&dir.join(sub))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spare_is_taken_once_and_holds_the_subdirectories() {
        let t = tempfile::tempdir().unwrap();
        let spare = Spare::new(t.path().join("spare"));
        let a = t.path().join("a");
        assert!(!spare.take_into(&a), "no spare before a refill");
        spare.refill();
        assert!(spare.take_into(&a));
        for sub in SUBDIRS {
            assert!(a.join(sub).is_dir(), "{sub} missing");
        }
        let b = t.path().join("b");
        assert!(!spare.take_into(&b), "taken twice");
        assert!(!b.exists());
        spare.refill();
        spare.refill(); // one spare at a time
        assert_eq!(std::fs::read_dir(spare.root()).unwrap().count(), 1);
    }

    #[test]
    fn a_spare_bundle_holds_its_files_and_never_replaces_a_directory() {
        let t = tempfile::tempdir().unwrap();
        let spare = Spare::bundles(t.path().join("spare"));
        spare.refill();
        // An empty directory where the bundle goes: a plain rename would replace it.
        let there = t.path().join("there");
        std::fs::create_dir(&there).unwrap();
        assert!(!spare.take_into(&there));
        assert_eq!(std::fs::read_dir(&there).unwrap().count(), 0);
        spare.refill();
        let b = t.path().join("b");
        assert!(spare.take_into(&b));
        for name in BUNDLE_FILES {
            let m = std::fs::metadata(b.join(name)).unwrap();
            assert!(m.is_file() && m.len() == 0, "{name}: {m:?}");
        }
        // Written in place by the bundle's writer.
        let hosts = b.join("hosts");
        fsutil::put_runtime_file(&hosts, b"h", true, Some(0o644)).unwrap();
        assert_eq!(std::fs::read(&hosts).unwrap(), b"h");
    }

    #[test]
    fn background_work_runs_on_its_own_thread_at_nice_19() {
        let (tx, rx) = std::sync::mpsc::channel();
        run_in_background("test-bg", move || {
            // SAFETY: plain integer arguments.
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as _) };
            let name = std::thread::current().name().map(str::to_string);
            tx.send((nice, name)).unwrap();
        });
        let (nice, name) = rx.recv().unwrap();
        assert_eq!((nice, name.as_deref()), (19, Some("test-bg")));
    }

    /// A bundle file given extended attributes in its run (a container's root can set
    /// `user.*` ones on its bind-mounted /etc/hosts) is not given to the next container.
    #[test]
    fn a_bundle_file_with_extended_attributes_is_not_recycled() {
        let t = tempfile::tempdir().unwrap();
        let (clean, marked) = (t.path().join("clean"), t.path().join("marked"));
        make_bundle(&clean).unwrap();
        make_bundle(&marked).unwrap();
        recycle_bundle(&clean).unwrap();
        let hosts =
            std::ffi::CString::new(marked.join("hosts").as_os_str().as_encoded_bytes().to_vec())
                .unwrap();
        // SAFETY: a NUL-terminated path, name and a value with its length.
        let r = unsafe {
            libc::setxattr(
                hosts.as_ptr(),
                c"user.left-behind".as_ptr(),
                b"x".as_ptr().cast(),
                1,
                0,
            )
        };
        if r != 0 {
            eprintln!("no user xattrs on this filesystem: skipped");
            return;
        }
        let err = recycle_bundle(&marked).unwrap_err();
        assert!(err.to_string().contains("extended attributes"), "{err}");
    }

    #[test]
    fn a_spare_removed_behind_our_back_is_not_taken() {
        let t = tempfile::tempdir().unwrap();
        let spare = Spare::new(t.path().join("spare"));
        spare.refill();
        std::fs::remove_dir_all(spare.root()).unwrap();
        let a = t.path().join("a");
        assert!(!spare.take_into(&a));
        assert!(!a.exists());
    }
}
