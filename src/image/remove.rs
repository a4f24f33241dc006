//! Tagging, removing and collecting images: reference counts are computed from the
//! index, so removing an image frees exactly the blobs and layer trees that no other
//! image lists. Layer trees may hold files owned by subordinate ids, so they are only
//! renamed into `tmp/` here (atomically, under the lock) and the caller removes them
//! from inside the user namespace.

use std::collections::{BTreeSet, HashSet};
use std::fs;
use std::path::PathBuf;

use super::names::{check_taggable, repo_digest};
use super::store::{record, repository_of, resolve_in, Index};
use super::{is_sha256_hex, Error, ImageRecord, ImageStore, Reference};
use crate::fsutil::sync_dir;

/// What a removal did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Tags removed.
    pub untagged: Vec<String>,
    /// Ids of the images deleted.
    pub deleted: Vec<String>,
    /// Layer trees moved into `tmp/`, to be removed by the caller.
    pub trash: Vec<PathBuf>,
    /// Blobs deleted.
    pub blobs_freed: usize,
    /// Bytes freed: the blobs deleted and the layer trees moved to `tmp/`.
    pub bytes_freed: u64,
}

impl Removal {
    fn absorb(&mut self, other: Removal) {
        self.untagged.extend(other.untagged);
        self.deleted.extend(other.deleted);
        self.trash.extend(other.trash);
        self.blobs_freed += other.blobs_freed;
        self.bytes_freed += other.bytes_freed;
    }
}

impl ImageStore {
    /// Points `target` at the image `source` names; returns the image.
    pub fn tag(&self, source: &str, target: &Reference) -> Result<ImageRecord, Error> {
        check_taggable(target)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let id = resolve_in(&index, source)?;
        let tag = target.to_string();
        // Already so (a rebuild's tag): nothing to write.
        if index.tags.get(&tag) != Some(&id) {
            index.tags.insert(tag, id.clone());
            self.save_index(&index)?;
        }
        record(&index, &id).ok_or(Error::NoSuchImage { reference: id })
    }

    /// The image id `name_or_id` resolves to.
    pub fn resolve_id(&self, name_or_id: &str) -> Result<String, Error> {
        resolve_in(&self.load_index()?, name_or_id)
    }

    /// Whether removing `name_or_id` only drops that name and keeps the image: a tag of
    /// an image with other tags, or a repo digest (`name@sha256:...`) of an image that
    /// keeps a tag or another repo digest.
    pub fn removal_keeps_image(&self, name_or_id: &str) -> Result<bool, Error> {
        let index = self.load_index()?;
        let id = resolve_in(&index, name_or_id)?;
        Ok(keeps_image(&index, &id, name_or_id))
    }

    /// Removes `name_or_id`. A tag of an image with other tags is only untagged (with
    /// the image's repo digests of that repository when no tag of it is left); a repo
    /// digest (`name@sha256:...`) is only dropped while the image keeps a tag or another
    /// repo digest (as `docker rmi repo@digest` does). Otherwise — the last name, or an
    /// id (which `force` must confirm for an image tagged several times) — the image
    /// and all its tags go, with the blobs and layers no other image uses. The caller
    /// checked containers.
    pub fn remove_image(&self, name_or_id: &str, force: bool) -> Result<Removal, Error> {
        let _gc = self.gc_lock(true)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let id = resolve_in(&index, name_or_id)?;
        let keep = keeps_image(&index, &id, name_or_id);
        let tags = tags_of(&index, &id);
        if !keep {
            if let Some(build) = self.leases.held_by(&id) {
                return Err(Error::UsedByBuild {
                    image: name_or_id.to_string(),
                    build,
                });
            }
        }
        let parsed = Reference::parse(name_or_id).ok();
        let mut out = Removal::default();
        if let Some(digest) = parsed.as_ref().and_then(repo_digest) {
            if let Some(img) = index.images.get_mut(&id) {
                img.repo_digests.retain(|d| *d != digest);
            }
            out.untagged.push(digest);
            if keep {
                self.save_index(&index)?;
                return Ok(out);
            }
        } else if let Some(tag) = parsed.map(|r| r.to_string()).filter(|t| tags.contains(t)) {
            if keep {
                index.tags.remove(&tag);
                drop_orphan_digests(&mut index, &id, &tag);
                self.save_index(&index)?;
                out.untagged.push(tag);
                return Ok(out);
            }
        } else if tags.len() > 1 && !force {
            return Err(Error::InvalidImage {
                what: format!("id {id}"),
                reason: format!(
                    "it is tagged in several repositories ({}): remove the tags one by \
                     one, or force with -f",
                    tags.join(", ")
                ),
            });
        }
        for t in &tags {
            index.tags.remove(t);
        }
        out.untagged.extend(tags);
        out.absorb(self.delete_locked(&mut index, &[id])?);
        Ok(out)
    }

    /// Removes dangling images (no tag) or, with `all`, every image not in `keep`
    /// (the ids containers use).
    pub fn prune(&self, all: bool, keep: &HashSet<String>) -> Result<Removal, Error> {
        let _gc = self.gc_lock(true)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let tagged: HashSet<&String> = index.tags.values().collect();
        let leased = self.leases.all();
        let doomed: Vec<String> = index
            .images
            .keys()
            .filter(|id| !keep.contains(*id) && !leased.contains(*id))
            .filter(|id| all || !tagged.contains(id))
            .cloned()
            .collect();
        let mut out = Removal::default();
        let tags: Vec<String> = index
            .tags
            .iter()
            .filter(|(_, v)| doomed.contains(v))
            .map(|(k, _)| k.clone())
            .collect();
        for t in &tags {
            index.tags.remove(t);
        }
        out.untagged = tags;
        out.absorb(self.delete_locked(&mut index, &doomed)?);
        // Then every blob no image lists (what failed jobs and pulls left), but those
        // a running job pinned.
        out.absorb(self.free_unreferenced_locked(&index, false)?);
        Ok(out)
    }

    /// Frees the blobs no image lists and no running job pinned, but (with
    /// `keep_resumable`) those a pull wrote less than [`RESUME_GRACE`] ago, which a new
    /// pull of the image reuses. What a load or import wrote is never resumable: run
    /// after one failed or was cancelled, it frees everything such a job left. Waits for
    /// the jobs that are committing images (the collection lock).
    pub fn free_unreferenced_blobs(&self, keep_resumable: bool) -> Result<Removal, Error> {
        let _gc = self.gc_lock(true)?;
        self.free_unreferenced_gc_held(keep_resumable)
    }

    /// [`ImageStore::free_unreferenced_blobs`] if no job is committing an image;
    /// `None` (nothing done) otherwise.
    pub fn try_free_unreferenced_blobs(
        &self,
        keep_resumable: bool,
    ) -> Result<Option<Removal>, Error> {
        match self.try_gc_lock_exclusive()? {
            Some(_gc) => self.free_unreferenced_gc_held(keep_resumable).map(Some),
            None => Ok(None),
        }
    }

    fn free_unreferenced_gc_held(&self, keep_resumable: bool) -> Result<Removal, Error> {
        let _lock = self.lock()?;
        let index = self.load_index()?;
        self.free_unreferenced_locked(&index, keep_resumable)
    }

    /// With the collection lock and the index lock held.
    fn free_unreferenced_locked(
        &self,
        index: &Index,
        keep_resumable: bool,
    ) -> Result<Removal, Error> {
        let (used_blobs, _) = referenced(index);
        let blobs: Vec<String> = list_digests(&self.root.join("blobs/sha256"))?
            .into_iter()
            .filter(|b| !used_blobs.contains(b))
            .filter(|b| !(keep_resumable && self.resumable_blob(b)))
            .collect();
        if !blobs.is_empty() {
            tracing::info!("freeing {} unreferenced blobs", blobs.len());
        }
        let out = self.free(&blobs, &[])?;
        self.forget_stale_resumable_marks(&used_blobs);
        Ok(out)
    }

    /// Notes that a pull is writing blob `digest`: kept for a later pull (see
    /// [`ImageStore::free_unreferenced_blobs`]). Call before committing the blob.
    pub fn mark_resumable(&self, digest: &str) -> Result<(), Error> {
        let hex = super::parse_digest(digest)?;
        let dir = self.root.join(RESUMABLE_DIR);
        let path = dir.join(hex);
        fs::create_dir_all(&dir)
            .and_then(|()| fs::write(&path, b""))
            .map_err(|e| Error::io(format!("writing {path:?}"), e))
    }

    /// Drops the resumable marks of blobs that are gone, referenced (no longer
    /// unreferenced leftovers) or too old.
    fn forget_stale_resumable_marks(&self, used_blobs: &BTreeSet<String>) {
        let Ok(marks) = list_digests(&self.root.join(RESUMABLE_DIR)) else {
            return;
        };
        for m in marks {
            let hex = m.strip_prefix("sha256:").unwrap_or(&m);
            let stale =
                used_blobs.contains(&m) || !self.blob_file(hex).exists() || !self.recent_blob(&m);
            if stale {
                let _ = fs::remove_file(self.root.join(RESUMABLE_DIR).join(hex));
            }
        }
    }

    /// Deletes `ids` from the index, saves it, then frees what no remaining image uses.
    fn delete_locked(&self, index: &mut Index, ids: &[String]) -> Result<Removal, Error> {
        let mut blobs = BTreeSet::new();
        let mut layers = BTreeSet::new();
        let mut out = Removal::default();
        for id in ids {
            if let Some(img) = index.images.remove(id) {
                blobs.extend(img.blobs(id));
                layers.extend(img.layers.iter().cloned());
                out.deleted.push(id.clone());
            }
        }
        self.save_index(index)?;
        let (used_blobs, used_layers) = referenced(index);
        let blobs: Vec<String> = blobs.difference(&used_blobs).cloned().collect();
        let layers: Vec<String> = layers.difference(&used_layers).cloned().collect();
        out.absorb(self.free(&blobs, &layers)?);
        Ok(out)
    }

    fn free(&self, blobs: &[String], layers: &[String]) -> Result<Removal, Error> {
        let mut out = Removal::default();
        // Held across the deletions: a job pins before it looks for a blob.
        let pinned = self.pins.lock();
        for b in blobs {
            if pinned.contains_key(b) {
                tracing::debug!("keeping blob {b}: a running job counts on it");
                continue;
            }
            let hex = b.strip_prefix("sha256:").unwrap_or(b);
            let file = self.blob_file(hex);
            let size = fs::symlink_metadata(&file).map_or(0, |m| m.len());
            match fs::remove_file(&file) {
                Ok(()) => {
                    out.blobs_freed += 1;
                    out.bytes_freed += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing blob {b}"), e)),
            }
        }
        drop(pinned);
        for l in layers {
            let hex = l.strip_prefix("sha256:").unwrap_or(l);
            let from = self.root.join("layers").join(hex);
            let to = self.root.join("tmp").join(format!("rm-{hex}"));
            let size = self.layer_size(l);
            match fs::rename(&from, &to) {
                Ok(()) => {
                    out.trash.push(to);
                    out.bytes_freed += size;
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("moving {from:?} to {to:?}"), e)),
            }
        }
        if !layers.is_empty() {
            let dir = self.root.join("layers");
            sync_dir(&dir).map_err(|e| Error::io(format!("syncing {dir:?}"), e))?;
        }
        Ok(out)
    }

    /// Frees every blob and layer no image lists (what a crash between writing them and
    /// recording the image leaves) and returns everything in `tmp/` for the caller to
    /// remove. Run when the daemon starts, before any load or pull.
    pub fn collect_garbage(&self) -> Result<Vec<PathBuf>, Error> {
        let _gc = self.gc_lock(true)?;
        let _lock = self.lock()?;
        let index = self.load_index()?;
        let (used_blobs, used_layers) = referenced(&index);
        // Unreferenced blobs are what a load, import or pull killed midway left. A pull's
        // (marked resumable, younger than RESUME_GRACE) are kept, so that the next pull
        // of the image skips them; the others go.
        let blobs: Vec<String> = list_digests(&self.root.join("blobs/sha256"))?
            .into_iter()
            .filter(|b| !used_blobs.contains(b))
            .filter(|b| !self.resumable_blob(b))
            .collect();
        let layers: Vec<String> = list_digests(&self.root.join("layers"))?
            .into_iter()
            .filter(|l| !used_layers.contains(l))
            .collect();
        if !blobs.is_empty() || !layers.is_empty() {
            tracing::info!(
                "collecting {} unreferenced blobs and {} unreferenced layers",
                blobs.len(),
                layers.len()
            );
        }
        self.free(&blobs, &layers)?;
        self.forget_stale_resumable_marks(&used_blobs);
        self.leftovers()
    }
}

/// How long unreferenced blobs of a pull survive [`ImageStore::collect_garbage`]: a
/// pull killed midway resumes within this time without downloading its complete blobs
/// again.
const RESUME_GRACE: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Where [`ImageStore::mark_resumable`] notes the blobs pulls wrote (empty files named
/// by the blob's hex digest).
const RESUMABLE_DIR: &str = "resumable";

/// The `sha256:<hex>` digests named by the entries of `dir`.
fn list_digests(dir: &std::path::Path) -> Result<Vec<String>, Error> {
    let rd = fs::read_dir(dir).map_err(|e| Error::io(format!("listing {dir:?}"), e))?;
    Ok(rd
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(str::to_string))
        .filter(|n| is_sha256_hex(n))
        .map(|n| format!("sha256:{n}"))
        .collect())
}

impl ImageStore {
    /// Whether blob `digest` is a pull's (marked resumable) and younger than
    /// [`RESUME_GRACE`].
    fn resumable_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        self.root.join(RESUMABLE_DIR).join(hex).exists() && self.recent_blob(digest)
    }

    /// Whether blob `digest` was written less than [`RESUME_GRACE`] ago.
    fn recent_blob(&self, digest: &str) -> bool {
        let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
        fs::metadata(self.root.join("blobs/sha256").join(hex))
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age < RESUME_GRACE)
    }
}

/// The tags pointing at image `id`.
fn tags_of(index: &Index, id: &str) -> Vec<String> {
    index
        .tags
        .iter()
        .filter(|(_, v)| *v == id)
        .map(|(k, _)| k.clone())
        .collect()
}

/// See [`ImageStore::removal_keeps_image`]; `id` is what `name_or_id` resolves to.
fn keeps_image(index: &Index, id: &str, name_or_id: &str) -> bool {
    let Ok(r) = Reference::parse(name_or_id) else {
        return false;
    };
    let tags = tags_of(index, id);
    match repo_digest(&r) {
        Some(digest) => {
            let others = index
                .images
                .get(id)
                .is_some_and(|i| i.repo_digests.iter().any(|d| *d != digest));
            !tags.is_empty() || others
        }
        None => tags.len() > 1 && tags.contains(&r.to_string()),
    }
}

/// After `tag` was removed from image `id`: when no tag of its repository is left on
/// the image, its repo digests of that repository go too (docker does the same).
fn drop_orphan_digests(index: &mut Index, id: &str, tag: &str) {
    let repo = repository_of(tag).to_string();
    let still_tagged = tags_of(index, id).iter().any(|t| repository_of(t) == repo);
    if still_tagged {
        return;
    }
    if let Some(img) = index.images.get_mut(id) {
        img.repo_digests
            .retain(|d| d.split_once('@').map(|(r, _)| r) != Some(repo.as_str()));
    }
}

/// The blobs and layers the images of `index` use.
fn referenced(index: &Index) -> (BTreeSet<String>, BTreeSet<String>) {
    let mut blobs = BTreeSet::new();
    let mut layers = BTreeSet::new();
    for (id, img) in &index.images {
        blobs.extend(img.blobs(id));
        layers.extend(img.layers.iter().cloned());
    }
    (blobs, layers)
}

#[cfg(test)]
#[path = "remove_tests.rs"]
mod tests;
