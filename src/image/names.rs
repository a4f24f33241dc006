//! How names point at images in the store's index, the way docker keeps them:
//!
//! * `repository:tag` references are **tags**: each points at one image and moves when a
//!   newer image takes it. A tag never holds a digest.
//! * `repository@sha256:...` references are **repo digests**: listed by the image they
//!   name (`RepoDigests`), never tags. Recording an image under any name adds
//!   `repository@<manifest digest>`; a name pinned to a digest (a pull by digest) adds
//!   only repo digests, no tag (the tag of `name:tag@digest` is ignored, as docker does),
//!   so an image pulled only by digest is untagged (`<none>`, dangling).
//! * A push adds the destination's `repository@<manifest digest>`
//!   ([`ImageStore::add_repo_digest`]).
//!
//! A digest other than the manifest's is recorded only when the store holds it as an
//! image index listing that manifest (a multi-platform pull by index digest): a repo
//! digest is a content address, so nothing may claim one it does not have.

use std::collections::BTreeSet;

use serde::Deserialize;

use super::store::Index;
use super::{Error, ImageStore, Reference};

/// The repo digest a reference names (`repository@sha256:...`), if it pins a digest.
pub(crate) fn repo_digest(r: &Reference) -> Option<String> {
    r.digest().map(|d| format!("{}@{d}", r.repository()))
}

/// Refuses a digest-pinned reference as a tag to make (`tag`, `import`): a digest is
/// the registry's content address of an image, not a name to give one.
pub fn check_taggable(r: &Reference) -> Result<(), Error> {
    match r.digest() {
        Some(_) => Err(Error::InvalidReference {
            reference: r.to_string(),
            reason: "a digest cannot be used as a tag (it is the registry's content \
                     address of an image): give a name with a tag, e.g. name:v1"
                .into(),
        }),
        None => Ok(()),
    }
}

#[derive(Deserialize)]
struct IndexEntry {
    digest: String,
}

#[derive(Deserialize)]
struct ImageIndex {
    #[serde(default)]
    manifests: Vec<IndexEntry>,
}

impl ImageStore {
    /// `names` parsed, without the digest-pinned ones whose digest does not name the
    /// image of manifest `manifest` (dropped with a warning: an archive cannot claim a
    /// registry digest).
    pub(crate) fn checked_names(
        &self,
        names: &[String],
        manifest: &str,
    ) -> Result<Vec<Reference>, Error> {
        let mut out = Vec::new();
        for n in names {
            let r = Reference::parse(n)?;
            match r.digest() {
                Some(d) if d != manifest && !self.index_lists(d, manifest) => {
                    tracing::warn!(
                        "not recording {n}: {d} is neither the image's manifest {manifest} \
                         nor an index in the store listing it"
                    );
                }
                _ => out.push(r),
            }
        }
        Ok(out)
    }

    /// Records that the registry holds image `id` under `repository@manifest` (a push
    /// did, as docker's adds the pushed digest to `RepoDigests`). `manifest` must be the
    /// image's own manifest; nothing changes when the image no longer has it (re-recorded
    /// meanwhile). Returns the image as it is now.
    pub fn add_repo_digest(
        &self,
        id: &str,
        repository: &Reference,
        manifest: &str,
    ) -> Result<super::ImageRecord, Error> {
        let pinned = repository.with_digest(manifest)?;
        let _lock = self.lock()?;
        let mut index = self.load_index()?;
        let current = index.images.get(id).and_then(|i| i.manifest.clone());
        if current.as_deref() == Some(manifest) {
            apply(&mut index, id, manifest, std::slice::from_ref(&pinned));
            self.save_index(&index)?;
        } else {
            tracing::warn!("not recording {pinned}: image {id} no longer has that manifest");
        }
        super::lookup::record(&index, id).ok_or(Error::NoSuchImage {
            reference: id.to_string(),
        })
    }

    /// Whether blob `index` is an image index (in the store) listing `manifest`.
    fn index_lists(&self, index: &str, manifest: &str) -> bool {
        self.read_blob(index)
            .ok()
            .and_then(|b| serde_json::from_slice::<ImageIndex>(&b).ok())
            .is_some_and(|i| i.manifests.iter().any(|m| m.digest == manifest))
    }
}

/// Points `names` at image `id` (already in `index`, with manifest `manifest`): each
/// name adds its repository's repo digest of `manifest`, a digest-pinned name also its
/// own digest, and a name with a tag and no digest becomes a tag (moved off any other
/// image). A repo digest names one image: it moves too.
pub(crate) fn apply(index: &mut Index, id: &str, manifest: &str, names: &[Reference]) {
    let mut digests = BTreeSet::new();
    for n in names {
        digests.insert(format!("{}@{manifest}", n.repository()));
        digests.extend(repo_digest(n));
    }
    for (other, img) in index.images.iter_mut() {
        if other != id {
            img.repo_digests.retain(|d| !digests.contains(d));
        }
    }
    if let Some(img) = index.images.get_mut(id) {
        let mut all: BTreeSet<String> = img.repo_digests.drain(..).collect();
        all.extend(digests);
        img.repo_digests = all.into_iter().collect();
    }
    for n in names.iter().filter(|n| n.digest().is_none()) {
        let tag = n.to_string();
        if let Some(old) = index.tags.insert(tag.clone(), id.to_string()) {
            if old != id {
                tracing::info!("tag {tag} moved from image {old} to {id}");
            }
        }
    }
}

/// Moves tag keys holding a digest (`repo@sha256:...`: older skiffs recorded a pull by
/// digest as a tag) to their image's repo digests; returns how many there were.
pub(crate) fn migrate_digest_tags(index: &mut Index) -> usize {
    let keys: Vec<String> = index
        .tags
        .keys()
        .filter(|k| k.contains('@'))
        .cloned()
        .collect();
    for key in &keys {
        let Some(id) = index.tags.remove(key) else {
            continue;
        };
        let digest = Reference::parse(key).ok().as_ref().and_then(repo_digest);
        match (digest, index.images.get_mut(&id)) {
            (Some(d), Some(img)) => {
                tracing::info!("image index: {key} is a repo digest of {id}, not a tag");
                if !img.repo_digests.contains(&d) {
                    img.repo_digests.push(d);
                    img.repo_digests.sort();
                }
            }
            _ => tracing::warn!("image index: dropping the invalid tag {key:?} (image {id})"),
        }
    }
    keys.len()
}

#[cfg(test)]
#[path = "names_tests.rs"]
mod tests;
