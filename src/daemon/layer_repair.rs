//! At start: layers a crash of the machine may have emptied are extracted again.
//!
//! See [`crate::image::durability`]: every layer named before a `syncfs` covered it
//! has a marker `unsynced/<hex>` holding the boot id of its install. Before skiffd
//! serves anything or loads its containers, each marker is settled:
//! - its layer is there and the boot is the current one (only skiffd died): one
//!   `syncfs` for all of them, then the markers go;
//! - no image lists the layer: it is moved out of `layers/` (the collection removes
//!   it), so that no later pull reuses it;
//! - otherwise (another boot, or the layer missing after a crash midway through a
//!   repair): the layer is extracted again from its blob and swapped in.

use crate::image::durability::{boot_id, Marker};
use crate::image::store::ImageRecord;

use super::Daemon;

/// A marked layer some images list, to extract again.
struct Repair {
    hex: String,
    /// The layer's blobs as the images list them (any one will do).
    blobs: Vec<String>,
    /// The images listing the layer, for messages.
    images: Vec<String>,
}

impl Daemon {
    /// Settles the markers of `unsynced/` (see the module docs); never fails: what it
    /// cannot repair is logged with what to do.
    pub(crate) fn repair_unsynced_layers(&self) {
        let store = &self.inner.images;
        let markers = match store.unsynced_layers() {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("listing the image store's unsynced layers: {e}");
                return;
            }
        };
        if markers.is_empty() {
            return;
        }
        let current = boot_id().unwrap_or_default();
        let records = match store.list() {
            Ok(r) => r,
            Err(e) => {
                tracing::error!("reading the image index to repair unsynced layers: {e}");
                return;
            }
        };
        let mut to_sync = Vec::new();
        let mut repairs = Vec::new();
        for Marker { hex, boot_id } in markers {
            let diff_id = format!("sha256:{hex}");
            let present = store.has_layer(&diff_id);
            if present && !current.is_empty() && boot_id == current {
                to_sync.push(hex);
                continue;
            }
            let (blobs, images) = users_of(&records, &diff_id);
            if images.is_empty() {
                tracing::info!("discarding the unlisted layer {diff_id}, maybe not on disk");
                if let Err(e) = store.discard_unsynced(&hex) {
                    tracing::error!("{e}");
                }
                continue;
            }
            repairs.push(Repair { hex, blobs, images });
        }
        if !to_sync.is_empty() {
            if let Err(e) = store.sync_marked(&to_sync) {
                tracing::error!("{e}");
            }
        }
        if repairs.is_empty() {
            return;
        }
        let handle = tokio::runtime::Handle::current();
        if handle.runtime_flavor() != tokio::runtime::RuntimeFlavor::MultiThread {
            tracing::error!("cannot repair the image store's layers on this runtime");
            return;
        }
        tokio::task::block_in_place(|| {
            handle.block_on(async {
                for r in &repairs {
                    self.repair_layer(r).await;
                }
            })
        });
    }

    /// Extracts the layer of `r` again from one of its blobs and swaps it in.
    async fn repair_layer(&self, r: &Repair) {
        let diff_id = format!("sha256:{}", r.hex);
        let advice = format!(
            "remove the image(s) using it ({}) with `skiff rmi` and pull or load them again",
            r.images.join(", ")
        );
        let store = self.inner.images.clone();
        let Some(blob) = r.blobs.iter().find(|b| store.has_blob(b)) else {
            tracing::error!(
                "the layer {diff_id} may have lost files in a crash of the machine, and \
                 its blob is not in the store to extract it again: {advice}"
            );
            return;
        };
        tracing::warn!(
            "the layer {diff_id} was not on disk when the machine went down: extracting it \
             again from {blob}"
        );
        let (staging, stats) = match self.unpack_blob(blob, None).await {
            Ok(x) => x,
            Err(e) => {
                tracing::error!("extracting the layer {diff_id} again: {e}; {advice}");
                return;
            }
        };
        if stats.diff_id != diff_id {
            self.remove_tree(&staging.dir).await;
            tracing::error!(
                "the blob {blob} extracts as {}, not the layer {diff_id}: {advice}",
                stats.diff_id
            );
            return;
        }
        let replaced = tokio::task::spawn_blocking(move || store.replace_unsynced(staging, &stats))
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r.map_err(|e| e.to_string()));
        match replaced {
            Ok(old) => {
                tracing::info!("layer {diff_id} extracted again");
                if let Some(old) = old {
                    self.remove_tree(&old).await;
                }
            }
            Err(e) => tracing::error!("replacing the layer {diff_id}: {e}; {advice}"),
        }
    }
}

/// The blobs and names (or ids) of the images listing the layer `diff_id`.
fn users_of(records: &[ImageRecord], diff_id: &str) -> (Vec<String>, Vec<String>) {
    let mut blobs = Vec::new();
    let mut images = Vec::new();
    for rec in records {
        let Some(i) = rec.layers.iter().position(|l| l == diff_id) else {
            continue;
        };
        if let Some(b) = rec.layer_blobs.get(i) {
            if !blobs.contains(b) {
                blobs.push(b.clone());
            }
        }
        images.push(
            rec.repo_tags
                .first()
                .cloned()
                .unwrap_or_else(|| rec.id[..12.min(rec.id.len())].to_string()),
        );
    }
    (blobs, images)
}
