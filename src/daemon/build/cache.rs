//! The build cache: `build-cache.json` in the image store maps a step's key (docker's
//! classic builder: the parent image, the instruction after substitution, and for
//! RUN its build-arg environment, for COPY/ADD the sources' checksum) to the image that
//! step made. Shared by every build; an entry whose image is gone is a miss. Builds
//! recording steps at once take turns under the store's build-cache lock (read, change
//! and write in one turn), so none loses another's entries. Losing an entry in a crash
//! of the machine (the files are replaced by rename without fsync, as the runtime
//! directory's) only costs a rebuild of that step, or shows an intermediate image in
//! `images`.
//!
//! `build-parents.json` maps each step's image to the image it was built on, so that
//! `skiff images` can hide the untagged intermediate images (docker's rule: an untagged
//! image another image was built on), shown with `-a`.

use std::collections::{BTreeMap, HashSet};

use sha2::{Digest, Sha256};

use crate::image::{ImageRecord, ImageStore};

const FILE: &str = "build-cache.json";
const PARENTS: &str = "build-parents.json";

/// The cache key of a step.
pub(crate) fn key(parent: &str, instruction: &str, extra: &str) -> String {
    let mut h = Sha256::new();
    for part in [parent, instruction, extra] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    crate::image::hex(&h.finalize())
}

fn load(store: &ImageStore) -> BTreeMap<String, String> {
    load_map(store, FILE)
}

fn load_map(store: &ImageStore, file: &str) -> BTreeMap<String, String> {
    std::fs::read(store.root().join(file))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The image a step with `key` made, if it is still in the store.
pub(crate) fn lookup(store: &ImageStore, key: &str) -> Option<ImageRecord> {
    let id = load(store).get(key)?.clone();
    store.resolve(&id).ok()
}

/// Remembers that the step `key` made image `id` on image `parent` (entries of removed
/// images dropped).
pub(crate) fn store(store: &ImageStore, key: &str, id: &str, parent: Option<&str>) {
    // Held until both files are written: another build's write in between would be
    // overwritten by this one (its entries lost).
    let _lock = match store.build_cache_lock() {
        Ok(l) => l,
        Err(e) => {
            tracing::warn!("not recording a build step in the build cache: {e}");
            return;
        }
    };
    let mut map = load(store);
    let mut parents = load_map(store, PARENTS);
    if let Ok(images) = store.list() {
        let ids: HashSet<String> = images.into_iter().map(|i| i.id).collect();
        map.retain(|_, v| ids.contains(v));
        parents.retain(|k, _| ids.contains(k));
    }
    map.insert(key.to_string(), id.to_string());
    if let Some(p) = parent.filter(|p| *p != id) {
        parents.insert(id.to_string(), p.to_string());
    }
    for (file, m) in [(FILE, &map), (PARENTS, &parents)] {
        if let Err(e) = crate::fsutil::replace_file_json(&store.root().join(file), m) {
            tracing::warn!("writing the build cache ({file}): {e}");
        }
    }
}

/// The ids of the intermediate images among `images`: untagged, and the image another
/// of `images` was built on.
pub(crate) fn intermediate(store: &ImageStore, images: &[ImageRecord]) -> HashSet<String> {
    let parents = load_map(store, PARENTS);
    let untagged: HashSet<&str> = images
        .iter()
        .filter(|i| i.repo_tags.is_empty())
        .map(|i| i.id.as_str())
        .collect();
    images
        .iter()
        .filter_map(|i| parents.get(&i.id))
        .filter(|p| untagged.contains(p.as_str()))
        .cloned()
        .collect()
}
