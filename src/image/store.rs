//! The on-disk image store, in the OCI image-layout shape.
//!
//! ```text
//! root/
//!   oci-layout                {"imageLayoutVersion": "1.0.0"}
//!   index.json                OCI image index of the tagged manifests (for other tools)
//!   blobs/sha256/<hex>        manifests, image configs (hex = image id), layer blobs
//!   layers/<diff-id hex>/diff extracted layer trees, shared by every image using them
//!   layers/<diff-id hex>/layer.json  {"size": N}: the regular file bytes of the layer
//!   layers/<diff-id hex>/keepid/<key>  the layer copied with a `--userns keep-id` mapping's
//!                             owners, for the overlay driver (`runtime::keepid_layers`)
//!   tmp/                      blobs being written, layers being extracted or removed
//!   unsynced/<diff-id hex>    the boot id: layer <hex> may not be on the disk yet
//!                             (see [`super::durability`])
//!   resumable/<hex>           empty: blob <hex> was written by a pull (kept unreferenced
//!                             for a day, for the next pull to resume with)
//!   images.json               skiff's own index: images (their blobs and layers), tags
//!   index.lock                flock serialising read-modify-write of images.json
//!   build-cache.json          the build cache: a build step's key -> the image it made
//!   build-parents.json        each build step's image -> the image it was built on
//!   build-cache.lock          flock serialising read-modify-write of the two above
//!   gc.lock                   shared while an image is committed, exclusive while blobs
//!                             and layers are freed
//! ```
//!
//! Nothing is visible before `images.json` names it: blobs and layers are written first,
//! the index last, so a load or pull killed at any moment leaves at most unreferenced
//! blobs and layers; [`ImageStore::collect_garbage`] removes them when the daemon starts
//! (a pull's blobs are kept a day, for a new pull to resume with; a failed load or
//! import's are freed at once by [`ImageStore::free_unreferenced_blobs`]). Reference
//! counts are computed from the index: removing an image frees exactly the blobs and
//! layers no other image lists.
//!
//! Against a crash of the machine: a blob is fsynced before its rename; a layer is
//! named over a durable boot-id marker (`unsynced/<hex>`) and synced in the background,
//! and the next start extracts a layer still marked by another boot again from its blob
//! (see [`super::durability`] and [`ImageStore::install_layer`]).
//!
//! This module holds the store's types and its images (the index); the blobs are
//! [`super::store_blobs`]'s, the extracted layers [`super::store_layers`]'s.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;
use serde::{Deserialize, Serialize};

use super::blob::parse_digest;
pub(crate) use super::imgconfig::random_hex;
use super::imgconfig::{build_config, canonical_json};
pub use super::imgconfig::{now_rfc3339, oci_arch};
pub use super::lookup::repository_of;
pub(crate) use super::lookup::{record, resolve_in};
use super::manifest::{build_manifest, LayerRef};
use super::names;
pub(crate) use super::store_layers::LayerMeta;
pub use super::store_layers::Staging;
use super::{is_sha256_hex, sha256_hex, Error, Reference, UnpackStats};
use crate::fsutil::{atomic_write, ensure_private_dir};

/// The `version` of the images.json format this code reads and writes.
pub(crate) const INDEX_VERSION: u32 = 1;

/// The file holding skiff's own index.
pub(crate) const IMAGES_FILE: &str = "images.json";

/// A store of images rooted at one directory. Methods take `&self`; index updates are
/// serialised across processes with a lock file.
#[derive(Debug, Clone)]
pub struct ImageStore {
    pub(crate) root: PathBuf,
    /// Blobs running jobs count on (see [`super::pins`]).
    pub(crate) pins: super::pins::Pins,
    /// Images running builds count on (see [`super::leases`]).
    pub(crate) leases: super::leases::Leases,
    /// The background sync of new layers (see [`super::durability`]).
    pub(crate) syncer: super::durability::Syncer,
}

/// Image configuration set at import time (`skiff import --change ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageChanges {
    /// Default arguments (`CMD`).
    pub cmd: Option<Vec<String>>,
    /// Entrypoint (`ENTRYPOINT`).
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value` environment entries.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User (`user`, `uid`, `user:group`, ...).
    pub user: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Exposed ports (`80/tcp`).
    pub exposed_ports: Vec<String>,
    /// Volumes (`/var/lib/data`): each container gets an anonymous volume there.
    pub volumes: Vec<String>,
    /// Stop signal name, e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
}

/// One image as listed by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: hex sha256 of its config blob.
    pub id: String,
    /// Layer diff ids (`sha256:<hex>`), bottom first.
    pub layers: Vec<String>,
    /// Creation time (the config's, else the time it entered the store), RFC 3339 UTC.
    pub created: String,
    /// Sum of the layers' regular file sizes.
    pub size: u64,
    /// `name:tag` references pointing at this image, sorted.
    pub repo_tags: Vec<String>,
    /// `name@sha256:...` references (the manifest digest under each repository name).
    #[serde(default)]
    pub repo_digests: Vec<String>,
    /// `sha256:<hex>` of the image's manifest blob (`None` for images of older stores).
    #[serde(default)]
    pub manifest: Option<String>,
    /// `sha256:<hex>` of the layer blobs (as in the manifest), bottom first.
    #[serde(default)]
    pub layer_blobs: Vec<String>,
}

/// The result of [`ImageStore::commit_import`].
#[derive(Debug)]
pub struct CommitOutcome {
    /// The image now in the store.
    pub image: ImageRecord,
    /// The staging directory, when the layer was already present (dedup): the caller
    /// removes it (from inside the user namespace, as it may hold subordinate-owned files).
    pub unused_staging: Option<PathBuf>,
}

/// An image to record with [`ImageStore::record_image`]: its blobs and layers are in
/// the store already.
#[derive(Debug, Clone, Default)]
pub struct NewImage {
    /// `sha256:<hex>` of the config blob (its hex is the image id).
    pub config: String,
    /// `sha256:<hex>` of the manifest blob.
    pub manifest: String,
    /// Layer diff ids, bottom first (each `layers/<hex>` exists).
    pub layers: Vec<String>,
    /// Layer blob digests, bottom first.
    pub layer_blobs: Vec<String>,
    /// References to point at the image, as displayed by [`Reference`]: `name:tag`
    /// becomes a tag, `name@sha256:...` (a pull by digest) only a repo digest.
    pub names: Vec<String>,
    /// Creation time, RFC 3339.
    pub created: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct IndexImage {
    pub(crate) layers: Vec<String>,
    pub(crate) created: String,
    pub(crate) size: u64,
    #[serde(default)]
    pub(crate) manifest: Option<String>,
    #[serde(default)]
    pub(crate) layer_blobs: Vec<String>,
    #[serde(default)]
    pub(crate) repo_digests: Vec<String>,
}

impl IndexImage {
    /// Every blob digest the image holds (manifest, config, layers).
    pub(crate) fn blobs(&self, id: &str) -> Vec<String> {
        let mut out = vec![format!("sha256:{id}")];
        out.extend(self.manifest.iter().cloned());
        out.extend(self.layer_blobs.iter().cloned());
        out
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Index {
    pub(crate) version: u32,
    #[serde(default)]
    pub(crate) images: BTreeMap<String, IndexImage>,
    #[serde(default)]
    pub(crate) tags: BTreeMap<String, String>,
    /// How many digest tag keys of an older skiff [`load_index`](ImageStore::load_index)
    /// moved to repo digests (saved with the next update).
    #[serde(skip)]
    pub(crate) migrated: usize,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: INDEX_VERSION,
            images: BTreeMap::new(),
            tags: BTreeMap::new(),
            migrated: 0,
        }
    }
}

impl ImageStore {
    /// Pins `digests` (see [`super::pins`]): removal keeps them until the guard is
    /// dropped. Pin before checking whether the store has a blob you will count on.
    pub fn pin(&self, digests: impl IntoIterator<Item = String>) -> super::pins::PinGuard {
        self.pins.pin(digests)
    }

    /// A holder of image leases for the build `name` (see [`super::leases`]).
    pub fn lease_holder(&self, name: &str) -> super::leases::LeaseGuard {
        self.leases.holder(name)
    }

    /// Resolves `name_or_id` and leases the image to `lease`, checking after the lease
    /// is taken that the image is still there (see [`super::leases`]).
    pub fn resolve_leased(
        &self,
        name_or_id: &str,
        lease: &super::leases::LeaseGuard,
    ) -> Result<ImageRecord, Error> {
        let rec = self.resolve(name_or_id)?;
        lease.hold(&rec.id);
        self.resolve(&rec.id).map_err(|_| Error::NoSuchImage {
            reference: name_or_id.to_string(),
        })
    }

    /// Opens (creating if needed, mode 0700) the store at `root` and checks its index.
    /// A store of the first milestone (skiff's index in `index.json`) is converted.
    pub fn open(root: &Path) -> Result<ImageStore, Error> {
        let store = ImageStore {
            root: root.to_path_buf(),
            pins: super::pins::Pins::default(),
            leases: super::leases::Leases::default(),
            syncer: super::durability::Syncer::default(),
        };
        for dir in [
            store.root.clone(),
            store.root.join("blobs/sha256"),
            store.root.join("layers"),
            store.root.join("tmp"),
            store.root.join(super::durability::UNSYNCED_DIR),
        ] {
            ensure_private_dir(&dir)
                .map_err(|e| Error::io(format!("creating the image store directory {dir:?}"), e))?;
        }
        let layout = store.root.join("oci-layout");
        if !layout.exists() {
            atomic_write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
                .map_err(|e| Error::io(format!("writing {layout:?}"), e))?;
        }
        if !store.index_path().exists() {
            let old = store.root.join("index.json");
            if let Ok(bytes) = fs::read(&old) {
                if let Ok(index) = serde_json::from_slice::<Index>(&bytes) {
                    let _lock = store.lock()?;
                    tracing::info!("converting the image index {old:?} to {IMAGES_FILE}");
                    store.save_index(&index)?;
                }
            }
        }
        if store.load_index()?.migrated > 0 {
            let _lock = store.lock()?;
            let index = store.load_index()?;
            if index.migrated > 0 {
                store.save_index(&index)?;
            }
        }
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Records an image whose blobs and layers are all in the store, and points `names`
    /// at it (moving them off other images), in one atomic index update: tags for the
    /// names with a tag, repo digests for all (see [`super::names`]).
    pub fn record_image(&self, new: &NewImage) -> Result<ImageRecord, Error> {
        let id = parse_digest(&new.config)?.to_string();
        parse_digest(&new.manifest)?;
        for d in new.layer_blobs.iter().chain([&new.config, &new.manifest]) {
            if !self.has_blob(d) {
                return Err(Error::MissingBlob {
                    digest: d.clone(),
                    hint: "it must be written before the image is recorded".into(),
                });
            }
        }
        for l in &new.layers {
            if !self.has_layer(l) {
                return Err(Error::InvalidLayer {
                    reason: format!("layer {l} is not extracted in the store"),
                });
            }
        }
        let size = new.layers.iter().map(|l| self.layer_size(l)).sum();
        let names = self.checked_names(&new.names, &new.manifest)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let (created, repo_digests) = match index.images.get(&id) {
            Some(i) => (i.created.clone(), i.repo_digests.clone()),
            None => (new.created.clone(), Vec::new()),
        };
        index.images.insert(
            id.clone(),
            IndexImage {
                layers: new.layers.clone(),
                created,
                size,
                manifest: Some(new.manifest.clone()),
                layer_blobs: new.layer_blobs.clone(),
                repo_digests,
            },
        );
        names::apply(&mut index, &id, &new.manifest, &names);
        self.save_index(&index)?;
        tracing::info!("recorded image {id} as {:?}", new.names);
        record(&index, &id).ok_or(Error::NoSuchImage { reference: id })
    }

    /// Moves an extracted layer into the store (or finds it already there), writes the
    /// image config and manifest blobs and records the image under `reference`.
    /// `layer_blob` is the layer as imported (already a blob).
    pub fn commit_import(
        &self,
        staging: Staging,
        stats: &UnpackStats,
        layer_blob: &LayerRef,
        reference: &Reference,
        changes: &ImageChanges,
    ) -> Result<CommitOutcome, Error> {
        names::check_taggable(reference)?;
        let unused_staging = self.install_layer(staging, stats)?;
        let created = now_rfc3339();
        let config = build_config(&stats.diff_id, &created, changes)?;
        let bytes = canonical_json(&config)?;
        let (config_digest, config_size) = self.write_blob(&bytes)?;
        let manifest = build_manifest(
            &config_digest,
            config_size,
            std::slice::from_ref(layer_blob),
        )?;
        let (manifest_digest, _) = self.write_blob(&manifest)?;
        let image = self.record_image(&NewImage {
            config: config_digest,
            manifest: manifest_digest,
            layers: vec![stats.diff_id.clone()],
            layer_blobs: vec![layer_blob.digest.clone()],
            names: vec![reference.to_string()],
            created,
        })?;
        Ok(CommitOutcome {
            image,
            unused_staging,
        })
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, Error> {
        let index = self.load_index()?;
        let mut out: Vec<ImageRecord> = index
            .images
            .keys()
            .filter_map(|id| record(&index, id))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds an image by `name[:tag]`, full id, `sha256:<id>` or unique id prefix.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, Error> {
        let index = self.load_index()?;
        let id = resolve_in(&index, name_or_id)?;
        record(&index, &id).ok_or_else(|| Error::NoSuchImage {
            reference: name_or_id.to_string(),
        })
    }

    /// The image configuration of image `id` (hex, optionally `sha256:`-prefixed),
    /// after checking that the blob's content matches its digest.
    pub fn config(&self, id: &str) -> Result<ImageConfiguration, Error> {
        let id = id.strip_prefix("sha256:").unwrap_or(id);
        if !is_sha256_hex(id) {
            return Err(Error::NoSuchImage {
                reference: id.to_string(),
            });
        }
        let path = self.blob_file(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if self.load_index()?.images.contains_key(id) {
                    Error::Corrupt {
                        path,
                        reason: "the image's config blob is missing".into(),
                    }
                } else {
                    Error::NoSuchImage {
                        reference: id.to_string(),
                    }
                });
            }
            Err(e) => return Err(Error::io(format!("reading {path:?}"), e)),
        };
        let actual = sha256_hex(&bytes);
        if actual != id {
            return Err(Error::Corrupt {
                path,
                reason: format!("its content has digest sha256:{actual}, not the one in its name"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path,
            reason: format!("not a valid OCI image configuration: {e}"),
        })
    }
}

#[cfg(test)]
#[path = "store_tests.rs"]
pub(crate) mod tests;
