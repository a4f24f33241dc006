//! The forwards of the shared slirp4netns (`--network bridge`, see [`super::shared`]),
//! written down so that a new slirp4netns gets them again. Each container's monitor
//! records the ports it published through slirp4netns's `add_hostfwd` (UDP ports, and
//! TCP ports when its relay cannot keep client addresses) in `DIR/forwards/ADDR.json`
//! ([`Lock::record`]), and withdraws them as it stops ([`withdraw`]). When slirp4netns
//! dies and the holder starts another, the holder adds every recorded forward of a
//! monitor that still runs to the new one ([`restore`]); entries of monitors that are
//! gone are dropped.
//!
//! The registry's [`Lock`] orders the two sides: a monitor holds it shared from before
//! its first `add_hostfwd` until its record is written, and while it removes its
//! forwards and their record; the holder holds it exclusive while it re-adds. So when
//! the holder reads the records, every forward that a monitor added to the dead
//! slirp4netns is in them, and no monitor removes its forwards in the middle of their
//! re-add (which would leave one in the new slirp4netns after its container's end).

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::ports::PortMapping;
use super::{shared, Error};

/// The registry's directory in the holder's directory.
pub const DIR_NAME: &str = "forwards";

/// For tests (tests/e2e_net_shared_races.rs; debug builds only): a directory in
/// skiffd's environment (its monitors and holder inherit it). At a hold point `NAME`
/// ([`hold`]) a process that finds the file `DIR/NAME` renames it to `DIR/NAME.held`,
/// then waits until the test has opened and closed the FIFO `DIR/NAME.go`: one side of
/// a race held at its critical point, for real.
pub const HOLD_ENV: &str = "SKIFF_TEST_FORWARDS_HOLD";

/// One container's forwards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Its monitor's pid.
    pub pid: i32,
    /// The monitor's start time (against pid reuse).
    pub start_time: u64,
    /// The forwarded ports (host ports resolved).
    pub ports: Vec<PortMapping>,
}

/// The registry's file for the container at `guest`, in the holder's directory `dir`.
pub fn path(dir: &Path, guest: Ipv4Addr) -> PathBuf {
    dir.join(DIR_NAME).join(format!("{guest}.json"))
}

/// The registry's lock (a flock on its directory; see the module's documentation).
pub struct Lock {
    dir: PathBuf,
    _flock: Flock<File>,
}

impl Lock {
    /// Takes the lock of the registry in the holder's directory `dir` shared (making
    /// the registry if it is missing): waits while the holder re-adds forwards.
    pub fn shared(dir: &Path) -> Result<Lock, Error> {
        let reg = dir.join(DIR_NAME);
        crate::fsutil::ensure_private_dir(&reg).map_err(|e| Error::io(&reg, e))?;
        Lock::take(dir, FlockArg::LockShared)
    }

    /// Takes the lock in `mode`; the registry must exist.
    fn take(dir: &Path, mode: FlockArg) -> Result<Lock, Error> {
        let reg = dir.join(DIR_NAME);
        let mut file = File::open(&reg).map_err(|e| Error::io(&reg, e))?;
        loop {
            match Flock::lock(file, mode) {
                Ok(flock) => {
                    return Ok(Lock {
                        dir: dir.to_path_buf(),
                        _flock: flock,
                    })
                }
                Err((back, nix::errno::Errno::EINTR)) => file = back,
                Err((_, e)) => {
                    return Err(Error::Io {
                        what: format!("locking {}", reg.display()),
                        source: e.into(),
                    })
                }
            }
        }
    }

    /// Records that this process (a monitor) forwarded `ports` to `guest` through the
    /// shared slirp4netns, under the lock it took before it added them.
    pub fn record(&self, guest: Ipv4Addr, ports: &[PortMapping]) -> Result<(), Error> {
        let me = std::process::id() as i32;
        let entry = Entry {
            pid: me,
            start_time: shared::start_time(me).unwrap_or(0),
            ports: ports.to_vec(),
        };
        let file = path(&self.dir, guest);
        crate::fsutil::replace_file_json(&file, &entry).map_err(|e| Error::io(&file, e))
    }
}

/// Removes the forwards to `guest` from the shared slirp4netns of the holder's
/// directory `dir`, and their record (a monitor that stops; skiffd after a monitor's
/// death), never in the middle of their re-add to a new slirp4netns. Returns how many
/// forwards there were.
pub fn withdraw(dir: &Path, guest: Ipv4Addr) -> Result<usize, Error> {
    let lock = Lock::shared(dir);
    if let Err(e) = &lock {
        tracing::warn!("the shared network's forwards to {guest}: {e}; removing them unlocked");
    }
    forget(dir, guest);
    super::slirp::remove_forwards_to(&dir.join(shared::API_NAME), guest)
}

/// A test's hold point `point` (see [`HOLD_ENV`]); nothing in release builds or when
/// the variable or the point's file is not there.
pub fn hold(point: &str) {
    if !cfg!(debug_assertions) {
        return;
    }
    let Some(dir) = std::env::var_os(HOLD_ENV).map(PathBuf::from) else {
        return;
    };
    if std::fs::rename(dir.join(point), dir.join(format!("{point}.held"))).is_err() {
        return;
    }
    tracing::info!("test hold point {point}: held");
    // Opening a FIFO to read waits for its writer; reading to the end, for its close.
    if let Ok(mut go) = std::fs::File::open(dir.join(format!("{point}.go"))) {
        let mut sink = Vec::new();
        let _ = std::io::Read::read_to_end(&mut go, &mut sink);
    }
    tracing::info!("test hold point {point}: released");
}

/// Drops the record of the forwards to `guest` (its monitor stopped or died, and the
/// holder it ran with is gone: see [`withdraw`] otherwise).
pub fn forget(dir: &Path, guest: Ipv4Addr) {
    match std::fs::remove_file(path(dir, guest)) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("forgetting the forwards to {guest}: {e}"),
    }
}

/// Drops every record (a new holder: no container is on its network yet).
pub fn clear(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir.join(DIR_NAME));
}

/// Adds the recorded forwards of the monitors that still run to the slirp4netns at
/// `api` (a new one), but those it has already (a monitor added them to it); drops the
/// records of monitors that are gone. Holds the registry's lock exclusive meanwhile.
/// Returns how many forwards were added.
pub fn restore(dir: &Path, api: &Path) -> usize {
    if !dir.join(DIR_NAME).is_dir() {
        // No monitor has added a forward since this holder started.
        return 0;
    }
    let _lock = match Lock::take(dir, FlockArg::LockExclusive) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!("shared network: {e}; re-adding the forwards unlocked");
            None
        }
    };
    let Ok(entries) = std::fs::read_dir(dir.join(DIR_NAME)) else {
        return 0;
    };
    let present = match super::slirp::list_hostfwds(api) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("shared network: the new slirp4netns's forwards: {e}");
            Vec::new()
        }
    };
    let mut added = 0;
    for e in entries.flatten() {
        let file = e.path();
        let Some(guest) = file
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| s.parse::<Ipv4Addr>().ok())
        else {
            continue;
        };
        let entry: Option<Entry> = std::fs::read(&file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok());
        let Some(entry) = entry.filter(|en| shared::start_time(en.pid) == Some(en.start_time))
        else {
            let _ = std::fs::remove_file(&file);
            continue;
        };
        hold("re-add");
        for m in &entry.ports {
            if present.iter().any(|f| f.is(m, guest)) {
                continue;
            }
            match super::slirp::add_hostfwd(api, m, guest) {
                Ok(_) => added += 1,
                Err(e) => tracing::warn!("shared network: re-adding {m} to {guest}: {e}"),
            }
        }
    }
    added
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_of_gone_monitors_are_dropped_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let guest = Ipv4Addr::new(10, 0, 2, 100);
        let ports: Vec<PortMapping> = vec!["127.0.0.1:5353:53/udp".parse().unwrap()];
        let lock = Lock::shared(dir.path()).unwrap();
        lock.record(guest, &ports).unwrap();
        drop(lock);
        let got: Entry =
            serde_json::from_slice(&std::fs::read(path(dir.path(), guest)).unwrap()).unwrap();
        assert_eq!(got.pid, std::process::id() as i32);
        assert_eq!(got.ports, ports);
        // A gone monitor's record goes (no slirp4netns is asked: nothing to add).
        let gone = Ipv4Addr::new(10, 0, 2, 101);
        let stale = Entry {
            start_time: got.start_time + 1,
            ..got.clone()
        };
        std::fs::write(path(dir.path(), gone), serde_json::to_vec(&stale).unwrap()).unwrap();
        forget(dir.path(), guest);
        forget(dir.path(), guest);
        assert_eq!(restore(dir.path(), &dir.path().join("no.sock")), 0);
        assert!(!path(dir.path(), gone).exists());
        clear(dir.path());
        assert!(!dir.path().join(DIR_NAME).exists());
    }

    #[test]
    fn the_holder_waits_for_the_monitors_and_they_wait_for_it() {
        let dir = tempfile::tempdir().unwrap();
        let monitor = Lock::shared(dir.path()).unwrap();
        // Monitors do not wait for each other.
        let other = Lock::shared(dir.path()).unwrap();
        assert!(Lock::take(dir.path(), FlockArg::LockExclusiveNonblock).is_err());
        drop((monitor, other));
        let holder = Lock::take(dir.path(), FlockArg::LockExclusiveNonblock).unwrap();
        assert!(Lock::take(dir.path(), FlockArg::LockSharedNonblock).is_err());
        drop(holder);
        assert!(Lock::take(dir.path(), FlockArg::LockSharedNonblock).is_ok());
    }

    #[test]
    fn a_listed_forward_matches_its_mapping_and_guest() {
        let guest = Ipv4Addr::new(10, 0, 2, 101);
        let m: PortMapping = "8053:53/udp".parse().unwrap();
        let listed: super::super::slirp::HostFwd = serde_json::from_str(
            r#"{"id":3,"proto":"udp","host_addr":"0.0.0.0","host_port":8053,
                "guest_addr":"10.0.2.101","guest_port":53}"#,
        )
        .unwrap();
        assert!(listed.is(&m, guest));
        assert!(!listed.is(&m, Ipv4Addr::new(10, 0, 2, 102)));
        assert!(!listed.is(&"8053:53/tcp".parse().unwrap(), guest));
        assert!(!listed.is(&"127.0.0.1:8053:53/udp".parse().unwrap(), guest));
    }
}
