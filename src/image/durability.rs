//! Layers made durable off the reply path: the boot-id markers of `unsynced/`.
//!
//! The unpack helper writes a layer's files without fsyncs. Before the layer gets its
//! name (`layers/<hex>`), [`ImageStore::install_layer`] writes `unsynced/<hex>`,
//! holding the machine's boot id (`/proc/sys/kernel/random/boot_id`), and fsyncs it
//! and its directory. Then the layer is renamed into place and the job goes on; a
//! background thread (`Syncer`) runs one `syncfs(2)` of the store's filesystem for
//! every layer installed before it started (coalesced: layers installed while it runs
//! wait for the next one) and removes their markers.
//!
//! So a name in `layers/` whose files may not be on the disk always has a durable
//! marker. When skiffd starts ([`crate::daemon::Daemon::new`]), a marker of another
//! boot means the machine went down before the sync: the layer is extracted again from
//! its blob (blobs are fsynced before they are named) and swapped in place of the old
//! tree. A marker of the current boot means only skiffd died: the page cache holds the
//! files, one `syncfs` makes them durable.

use std::collections::BTreeSet;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use super::blob::parse_digest;
use super::store::{ImageStore, Staging};
use super::{is_sha256_hex, Error, UnpackStats};
use crate::fsutil::{atomic_write, replace_file_json, sync_dir, syncfs};

/// The directory of the markers, under the store's root.
pub(crate) const UNSYNCED_DIR: &str = "unsynced";

/// The machine's boot id: it changes at every boot.
pub fn boot_id() -> io::Result<String> {
    Ok(fs::read_to_string("/proc/sys/kernel/random/boot_id")?
        .trim()
        .to_string())
}

/// One marker found in `unsynced/`: a layer that may not be on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Marker {
    /// The layer's diff id hex.
    pub hex: String,
    /// The boot id written in the marker (empty if unreadable).
    pub boot_id: String,
}

/// The coalescing background sync of a store's new layers (shared by its clones).
#[derive(Debug, Default, Clone)]
pub(crate) struct Syncer(Arc<Mutex<SyncState>>);

#[derive(Debug, Default)]
struct SyncState {
    /// Layers installed since the last sync began.
    pending: BTreeSet<String>,
    /// Whether a sync thread runs.
    running: bool,
}

impl Syncer {
    fn state(&self) -> std::sync::MutexGuard<'_, SyncState> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether no layer waits for its sync.
    #[cfg(test)]
    pub(crate) fn idle(&self) -> bool {
        let s = self.state();
        s.pending.is_empty() && !s.running
    }
}

impl ImageStore {
    fn unsynced_dir(&self) -> PathBuf {
        self.root.join(UNSYNCED_DIR)
    }

    /// Writes the durable marker of layer `hex` (see the module docs).
    pub(crate) fn mark_unsynced(&self, hex: &str) -> Result<(), Error> {
        let id = boot_id().map_err(|e| Error::io("reading the machine's boot id", e))?;
        let path = self.unsynced_dir().join(hex);
        atomic_write(&path, id.as_bytes()).map_err(|e| Error::io(format!("writing {path:?}"), e))
    }

    /// Hands layer `hex`, just named, to the background sync.
    pub(crate) fn queue_sync(&self, hex: &str) {
        let mut s = self.syncer.state();
        s.pending.insert(hex.to_string());
        if s.running {
            return;
        }
        s.running = true;
        drop(s);
        let store = self.clone();
        let spawned = std::thread::Builder::new()
            .name("layer-sync".into())
            .spawn(move || store.sync_loop());
        if let Err(e) = spawned {
            // The markers stay: the next start syncs them.
            tracing::error!("cannot start the layers' sync thread: {e}");
            self.syncer.state().running = false;
        }
    }

    /// Syncs until no layer is pending: each round covers every layer named before it.
    fn sync_loop(&self) {
        loop {
            let batch = {
                let mut s = self.syncer.state();
                if s.pending.is_empty() {
                    s.running = false;
                    return;
                }
                std::mem::take(&mut s.pending)
            };
            let started = std::time::Instant::now();
            match syncfs(&self.root) {
                Ok(()) => {
                    tracing::debug!("{} layer(s) synced in {:?}", batch.len(), started.elapsed());
                    let s = self.syncer.state();
                    for hex in &batch {
                        // Named again meanwhile (removed and extracted anew): next round.
                        if !s.pending.contains(hex) {
                            self.remove_marker(hex);
                        }
                    }
                }
                // The markers stay: the next start of skiffd syncs them.
                Err(e) => tracing::error!("syncing the image store's new layers: {e}"),
            }
        }
    }

    /// Waits (polling) until the background sync has nothing left.
    #[cfg(test)]
    pub(crate) fn wait_synced(&self) {
        while !self.syncer.idle() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Removes the marker of layer `hex` (a missing one is fine).
    pub fn remove_marker(&self, hex: &str) {
        let path = self.unsynced_dir().join(hex);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("removing {path:?}: {e}"),
        }
    }

    /// The markers in `unsynced/` (see the module docs), sorted.
    pub fn unsynced_layers(&self) -> Result<Vec<Marker>, Error> {
        let dir = self.unsynced_dir();
        let rd = fs::read_dir(&dir).map_err(|e| Error::io(format!("listing {dir:?}"), e))?;
        let mut out = Vec::new();
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("listing {dir:?}"), e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !is_sha256_hex(&name) {
                continue;
            }
            let boot_id = fs::read_to_string(entry.path())
                .map(|s| s.trim().to_string())
                .unwrap_or_default();
            out.push(Marker { hex: name, boot_id });
        }
        out.sort_by(|a, b| a.hex.cmp(&b.hex));
        Ok(out)
    }

    /// Makes every layer marked durable with one `syncfs` and removes their markers
    /// (the page cache holds their files: only skiffd died, not the machine).
    pub fn sync_marked(&self, hexes: &[String]) -> Result<(), Error> {
        syncfs(&self.root).map_err(|e| Error::io("syncing the image store", e))?;
        for hex in hexes {
            self.remove_marker(hex);
        }
        Ok(())
    }

    /// Moves the layer `hex` out of `layers/` into `tmp/` (for the collection to
    /// remove) and removes its marker: a layer no image lists that a crash of the
    /// machine may have emptied must not be reused by a later pull.
    pub fn discard_unsynced(&self, hex: &str) -> Result<(), Error> {
        if self.move_aside(hex)?.is_some() {
            let layers = self.root.join("layers");
            sync_dir(&layers).map_err(|e| Error::io(format!("syncing {layers:?}"), e))?;
        }
        self.remove_marker(hex);
        Ok(())
    }

    /// Renames `layers/<hex>`, if there, to a new name in `tmp/` (which the collection
    /// empties) and returns that name.
    fn move_aside(&self, hex: &str) -> Result<Option<PathBuf>, Error> {
        let dir = self.root.join("layers").join(hex);
        if !dir.exists() {
            return Ok(None);
        }
        let aside = self.root.join("tmp").join(format!(
            "unsynced-{}-{}",
            &hex[..12.min(hex.len())],
            super::store::random_hex()?
        ));
        fs::rename(&dir, &aside)
            .map_err(|e| Error::io(format!("moving {dir:?} to {aside:?}"), e))?;
        Ok(Some(aside))
    }

    /// Puts `staging`, the layer extracted anew from its blob, in place of
    /// `layers/<hex>` crash-safely: synced first, the old tree renamed aside into
    /// `tmp/`, the new one renamed in, then the marker removed (a crash in between
    /// leaves the marker over a missing layer: extracted again at the next start).
    /// Returns the old tree for the caller to remove.
    pub fn replace_unsynced(
        &self,
        staging: Staging,
        stats: &UnpackStats,
    ) -> Result<Option<PathBuf>, Error> {
        let hex = parse_digest(&stats.diff_id)?.to_string();
        let meta = staging.dir.join("layer.json");
        replace_file_json(&meta, &super::store::LayerMeta { size: stats.size })
            .map_err(|e| Error::io(format!("writing {meta:?}"), e))?;
        syncfs(&staging.dir)
            .map_err(|e| Error::io(format!("syncing the extracted layer {:?}", staging.dir), e))?;
        let old = self.move_aside(&hex)?;
        let layers = self.root.join("layers");
        let dir = layers.join(&hex);
        fs::rename(&staging.dir, &dir)
            .and_then(|()| sync_dir(&layers))
            .map_err(|e| Error::io(format!("moving {:?} to {dir:?}", staging.dir), e))?;
        self.remove_marker(&hex);
        Ok(old)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::sha256_hex;

    fn install(store: &ImageStore, name: &[u8]) -> String {
        let staging = store.new_staging().unwrap();
        fs::write(staging.diff.join("f"), name).unwrap();
        let stats = UnpackStats {
            diff_id: format!("sha256:{}", sha256_hex(name)),
            ..Default::default()
        };
        store.install_layer(staging, &stats).unwrap();
        sha256_hex(name)
    }

    #[test]
    fn installed_layers_are_marked_then_synced_in_the_background() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let hexes: Vec<String> = (0..5u8).map(|i| install(&store, &[b'l', i])).collect();
        // Each layer was named over its marker (unless the background sync already ran).
        for hex in &hexes {
            assert!(store.has_layer(&format!("sha256:{hex}")));
        }
        store.wait_synced();
        assert_eq!(store.unsynced_layers().unwrap(), vec![]);
        // A marker no sync follows (as a crash leaves it) is listed with this boot's id.
        store.mark_unsynced(&hexes[0]).unwrap();
        let left = store.unsynced_layers().unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].boot_id, boot_id().unwrap());
    }

    #[test]
    fn discarded_and_replaced_layers_leave_no_marker() {
        let dir = tempfile::tempdir().unwrap();
        let store = ImageStore::open(dir.path()).unwrap();
        let hex = install(&store, b"old");
        store.wait_synced();
        store.mark_unsynced(&hex).unwrap();
        // Extracted anew: the tree swapped in, the old one handed back from tmp/.
        let staging = store.new_staging().unwrap();
        fs::write(staging.diff.join("f"), b"new").unwrap();
        let stats = UnpackStats {
            diff_id: format!("sha256:{hex}"),
            ..Default::default()
        };
        let old = store.replace_unsynced(staging, &stats).unwrap().unwrap();
        assert!(old.starts_with(dir.path().join("tmp")));
        assert_eq!(fs::read(old.join("diff/f")).unwrap(), b"old");
        let layer = dir.path().join("layers").join(&hex);
        assert_eq!(fs::read(layer.join("diff/f")).unwrap(), b"new");
        assert_eq!(store.unsynced_layers().unwrap(), vec![]);
        // An unlisted one is moved out of layers/.
        store.mark_unsynced(&hex).unwrap();
        store.discard_unsynced(&hex).unwrap();
        assert!(!layer.exists());
        assert_eq!(store.unsynced_layers().unwrap(), vec![]);
    }
}
