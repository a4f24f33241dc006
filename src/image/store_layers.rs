//! The store's extracted layers: a staging directory per extraction in `tmp/`, its
//! install as `layers/<diff-id hex>` (durable or marked, see [`super::durability`]),
//! their sizes and trees, and what crashes leave in `tmp/`.

use std::fs;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::blob::parse_digest;
use super::imgconfig::random_hex;
use super::store::{ImageRecord, ImageStore};
use super::{Error, UnpackStats};
use crate::fsutil::{replace_file_json, sync_dir};

/// A fresh directory for one layer extraction, inside the store's `tmp/`.
#[derive(Debug)]
pub struct Staging {
    /// `root/tmp/<random>`: becomes `layers/<diff-id>` on commit.
    pub dir: PathBuf,
    /// `dir/diff`, created empty: extract the layer here.
    pub diff: PathBuf,
}

/// A layer's `layer.json`.
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct LayerMeta {
    pub(crate) size: u64,
}

impl ImageStore {
    /// Staging directories and temporary blobs left in `tmp/` (by a crash or an import
    /// that failed). The daemon removes them from inside the user namespace.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, Error> {
        let tmp = self.root.join("tmp");
        let mut out = Vec::new();
        let rd = fs::read_dir(&tmp).map_err(|e| Error::io(format!("listing {tmp:?}"), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("listing {tmp:?}"), e))?;
            out.push(entry.path());
        }
        out.sort();
        Ok(out)
    }

    /// Creates `tmp/<random>/diff` for a new layer extraction.
    pub fn new_staging(&self) -> Result<Staging, Error> {
        let dir = self
            .root
            .join("tmp")
            .join(format!("import-{}", random_hex()?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating the staging directory {dir:?}"), e))?;
        // 0755 whatever the umask: the layer root, unless the layer lists `./` itself.
        let diff = dir.join("diff");
        fs::create_dir(&diff)
            .and_then(|()| fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)))
            .map_err(|e| Error::io(format!("creating {diff:?}"), e))?;
        Ok(Staging { dir, diff })
    }

    /// Whether the layer with diff id `diff_id` is extracted in the store.
    pub fn has_layer(&self, diff_id: &str) -> bool {
        parse_digest(diff_id).is_ok_and(|h| self.root.join("layers").join(h).is_dir())
    }

    /// Moves an extracted layer into `layers/<diff-id hex>`; when it is there already
    /// (dedup, or a concurrent extraction won) returns the staging directory for the
    /// caller to remove.
    ///
    /// A layer is durable, or marked, before it has its name: a marker
    /// `unsynced/<hex>` holding the boot id is written and fsynced with its directory
    /// before the rename, and the layer handed to the background sync, which removes
    /// the marker once one `syncfs(2)` of the store's filesystem covered the layer. A
    /// crash of the machine at any point leaves either no `layers/<hex>` or one the
    /// next start of skiffd extracts again from its blob (see [`super::durability`]):
    /// never a name the index (or a later pull finding the layer present) counts on
    /// over empty or missing files.
    pub fn install_layer(
        &self,
        staging: Staging,
        stats: &UnpackStats,
    ) -> Result<Option<PathBuf>, Error> {
        let layer_hex = parse_digest(&stats.diff_id)?;
        let layers = self.root.join("layers");
        let layer_dir = layers.join(layer_hex);
        if layer_dir.exists() {
            tracing::debug!("layer {} already in the store", stats.diff_id);
            return Ok(Some(staging.dir));
        }
        // Made durable by the background sync, with the layer's files.
        let meta = staging.dir.join("layer.json");
        replace_file_json(&meta, &LayerMeta { size: stats.size })
            .map_err(|e| Error::io(format!("writing {meta:?}"), e))?;
        self.mark_unsynced(layer_hex)?;
        crate::phase::mark("layer-marked");
        match fs::rename(&staging.dir, &layer_dir) {
            Ok(()) => {
                sync_dir(&layers).map_err(|e| Error::io(format!("syncing {layers:?}"), e))?;
                self.queue_sync(layer_hex);
                Ok(None)
            }
            Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                // Another extraction won; its sync may have ended before our marker.
                self.queue_sync(layer_hex);
                Ok(Some(staging.dir))
            }
            Err(e) => Err(Error::io(
                format!("moving {:?} to {layer_dir:?}", staging.dir),
                e,
            )),
        }
    }

    pub(crate) fn layer_size(&self, diff_id: &str) -> u64 {
        let hex = diff_id.strip_prefix("sha256:").unwrap_or(diff_id);
        fs::read(self.root.join("layers").join(hex).join("layer.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerMeta>(&b).ok())
            .map_or(0, |m| m.size)
    }

    /// The layers' extracted trees, TOP layer first (overlayfs `lowerdir` order).
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers
            .iter()
            .rev()
            .map(|d| {
                let hex = d.strip_prefix("sha256:").unwrap_or(d);
                self.root.join("layers").join(hex).join("diff")
            })
            .collect()
    }
}
