//! The image catalogue of the backend: list, inspect, history, tag and remove images
//! (with the containers a forced removal takes), prune, and the collection of what a
//! crash left in the store.

use std::collections::HashSet;

use super::events::Event;
use super::{Daemon, Error};
use crate::image::{ImageRecord, Reference, Removal};

impl Daemon {
    /// All images, newest first.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, Error> {
        Ok(self.inner.images.list()?)
    }

    /// One image by reference, id or id prefix.
    pub fn image(&self, reference: &str) -> Result<ImageRecord, Error> {
        Ok(self.inner.images.resolve(reference)?)
    }

    /// The image as docker-style inspect JSON.
    pub fn inspect_image(&self, reference: &str) -> Result<serde_json::Value, Error> {
        let rec = self.inner.images.resolve(reference)?;
        let cfg = self.inner.images.config(&rec.id)?;
        Ok(serde_json::json!({
            "Id": format!("sha256:{}", rec.id),
            "RepoTags": rec.repo_tags,
            "RepoDigests": rec.repo_digests,
            "Created": rec.created,
            "Size": rec.size,
            "Architecture": cfg.architecture().to_string(),
            "Os": cfg.os().to_string(),
            "Config": cfg.config(),
            "RootFS": { "Type": "layers", "Layers": rec.layers },
            "Manifest": rec.manifest,
            "LayerBlobs": rec.layer_blobs,
        }))
    }

    /// The image's history entries, newest first: Created, CreatedBy, Comment,
    /// EmptyLayer, Size (of the entry's layer: 0 for an empty one) and Id (the image's
    /// on the newest entry, empty on the others, as docker's `<missing>`).
    pub fn image_history(&self, reference: &str) -> Result<serde_json::Value, Error> {
        let rec = self.inner.images.resolve(reference)?;
        let cfg = self.inner.images.config(&rec.id)?;
        let mut entries: Vec<serde_json::Value> = cfg
            .history()
            .iter()
            .flatten()
            .map(|h| {
                let empty = h.empty_layer().unwrap_or(false);
                serde_json::json!({
                    "Created": h.created(),
                    "CreatedBy": h.created_by(),
                    "Comment": h.comment(),
                    "EmptyLayer": empty,
                    "Size": 0,
                    "Id": "",
                })
            })
            .collect();
        // Layers are bottom first, as the history: the n-th non-empty entry is layer n.
        let mut layers = rec.layers.iter();
        for e in entries.iter_mut() {
            if e["EmptyLayer"] == false {
                if let Some(l) = layers.next() {
                    e["Size"] = self.inner.images.layer_size(l).into();
                }
            }
        }
        entries.reverse();
        if let Some(top) = entries.first_mut() {
            top["Id"] = format!("sha256:{}", rec.id).into();
        }
        Ok(serde_json::Value::Array(entries))
    }

    /// Points `target` at the image `source` names.
    pub fn tag_image(&self, source: &str, target: &str) -> Result<ImageRecord, Error> {
        let target: Reference = target.parse()?;
        let rec = self.inner.images.tag(source, &target)?;
        self.emit(Event::new(
            "image",
            "tag",
            &rec.id,
            &[("name", target.to_string())],
        ));
        Ok(rec)
    }

    /// The ids of the images containers were created from.
    fn images_in_use(&self) -> HashSet<String> {
        self.list(true).into_iter().map(|r| r.image_id).collect()
    }

    /// Removes an image (or only the tag, when the image has others). An image a
    /// container uses is refused unless `force`, which removes those containers first.
    pub async fn remove_image(&self, name_or_id: &str, force: bool) -> Result<Removal, Error> {
        let store = self.inner.images.clone();
        let id = store.resolve_id(name_or_id)?;
        let only_untag = store.removal_keeps_image(name_or_id)?;
        if !only_untag {
            let users: Vec<_> = self
                .list(true)
                .into_iter()
                .filter(|r| r.image_id == id)
                .collect();
            if !users.is_empty() && !force {
                let names: Vec<String> = users.iter().map(|r| r.name.clone()).collect();
                return Err(Error::ImageInUse(format!(
                    "image {name_or_id} is used by container(s) {}: remove them first, or \
                     force with rmi -f (which removes them too)",
                    names.join(", ")
                )));
            }
            for u in users {
                self.remove(&u.id, true).await?;
            }
        }
        let name = name_or_id.to_string();
        let removal = tokio::task::spawn_blocking(move || store.remove_image(&name, force))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.finish_removal(&removal).await;
        Ok(removal)
    }

    /// Removes dangling images, or with `all` every image no container uses.
    pub async fn prune_images(&self, all: bool) -> Result<Removal, Error> {
        let store = self.inner.images.clone();
        let keep = self.images_in_use();
        let removal = tokio::task::spawn_blocking(move || store.prune(all, &keep))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        self.finish_removal(&removal).await;
        Ok(removal)
    }

    async fn finish_removal(&self, removal: &Removal) {
        for t in &removal.untagged {
            self.emit(Event::new("image", "untag", "", &[("name", t.clone())]));
        }
        for id in &removal.deleted {
            self.emit(Event::new("image", "remove", id, &[]));
        }
        for dir in &removal.trash {
            self.remove_tree(dir).await;
        }
    }

    /// Collects what a crash left in the image store (unreferenced blobs and layers,
    /// temporary files); run at start, before the daemon serves anything: the blobs go
    /// at once, the trees (which may hold subordinate-owned files) in the background.
    pub(crate) fn collect_image_garbage(&self) {
        let leftovers = match self.inner.images.collect_garbage() {
            Ok(l) => l,
            Err(e) => {
                tracing::error!("collecting image store leftovers: {e}");
                return;
            }
        };
        if leftovers.is_empty() {
            return;
        }
        let daemon = self.clone();
        tokio::spawn(async move {
            for p in leftovers {
                tracing::info!("collecting image store leftover {}", p.display());
                if p.is_dir() {
                    daemon.remove_tree(&p).await;
                } else {
                    let _ = std::fs::remove_file(&p);
                }
            }
        });
    }
}
