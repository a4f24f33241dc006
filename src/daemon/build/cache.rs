//! The build cache: `build-cache.json` in the image store maps a step's key (docker's
//! classic builder: the parent image, the instruction after substitution, and for
//! RUN its build-arg environment, for COPY/ADD the sources' checksum) to the image that
//! step made. Shared by every build; an entry whose image is gone is a miss. Losing an
//! entry (two builds writing at once) only costs a rebuild of that step.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::image::{ImageRecord, ImageStore};

const FILE: &str = "build-cache.json";

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
    std::fs::read(store.root().join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// The image a step with `key` made, if it is still in the store.
pub(crate) fn lookup(store: &ImageStore, key: &str) -> Option<ImageRecord> {
    let id = load(store).get(key)?.clone();
    store.resolve(&id).ok()
}

/// Remembers that the step `key` made image `id` (entries of removed images dropped).
pub(crate) fn store(store: &ImageStore, key: &str, id: &str) {
    let mut map = load(store);
    if let Ok(images) = store.list() {
        let ids: std::collections::HashSet<String> = images.into_iter().map(|i| i.id).collect();
        map.retain(|_, v| ids.contains(v));
    }
    map.insert(key.to_string(), id.to_string());
    if let Err(e) = crate::fsutil::atomic_write_json(&store.root().join(FILE), &map) {
        tracing::warn!("writing the build cache: {e}");
    }
}
