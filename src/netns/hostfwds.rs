//! The forwards of the shared slirp4netns (`--network bridge`, see [`super::shared`]),
//! written down so that a new slirp4netns gets them again. Each container's monitor
//! records the ports it published through slirp4netns's `add_hostfwd` (UDP ports, and
//! TCP ports when its relay cannot keep client addresses) in `DIR/forwards/ADDR.json`
//! ([`record`]), and forgets them as it stops ([`forget`]). When slirp4netns dies and
//! the holder starts another, the holder adds every recorded forward of a monitor that
//! still runs to the new one ([`restore`]); entries of monitors that are gone are
//! dropped.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::ports::PortMapping;
use super::{shared, Error};

/// The registry's directory in the holder's directory.
pub const DIR_NAME: &str = "forwards";

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

/// Records that this process (a monitor) forwarded `ports` to `guest` through the
/// shared slirp4netns whose holder's directory is `dir`.
pub fn record(dir: &Path, guest: Ipv4Addr, ports: &[PortMapping]) -> Result<(), Error> {
    let me = std::process::id() as i32;
    let entry = Entry {
        pid: me,
        start_time: shared::start_time(me).unwrap_or(0),
        ports: ports.to_vec(),
    };
    let reg = dir.join(DIR_NAME);
    crate::fsutil::ensure_private_dir(&reg).map_err(|e| Error::io(&reg, e))?;
    let file = path(dir, guest);
    crate::fsutil::replace_file_json(&file, &entry).map_err(|e| Error::io(&file, e))
}

/// Drops the record of the forwards to `guest` (its monitor stops, or died).
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
/// `api` (a new one); drops the records of those that are gone. Returns how many
/// forwards were added.
pub fn restore(dir: &Path, api: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir.join(DIR_NAME)) else {
        return 0;
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
        for m in &entry.ports {
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
        record(dir.path(), guest, &ports).unwrap();
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
}
