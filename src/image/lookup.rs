//! Looking images up in the store's index: by name, repo digest, id or id prefix, and
//! the [`ImageRecord`] of an index entry.

use super::names::repo_digest;
use super::store::Index;
use super::{Error, ImageRecord, Reference};

/// The id of the image `name_or_id` names in `index`: a `name[:tag]` by its tag, a
/// `name@sha256:...` by the repo digest of exactly that (normalised) repository, else
/// a full id, `sha256:<id>` or unique id prefix.
pub(crate) fn resolve_in(index: &Index, name_or_id: &str) -> Result<String, Error> {
    let not_found = || Error::NoSuchImage {
        reference: name_or_id.to_string(),
    };
    let parsed = Reference::parse(name_or_id);
    if let Ok(r) = &parsed {
        if let Some(want) = repo_digest(r) {
            // name@sha256:...: exactly that repository's repo digest (docker normalises
            // the name, and ignores a tag next to the digest); nothing else.
            return index
                .images
                .iter()
                .find(|(_, i)| i.repo_digests.contains(&want))
                .map(|(id, _)| id.clone())
                .ok_or_else(not_found);
        }
        if let Some(id) = index.tags.get(&r.to_string()) {
            return Ok(id.clone());
        }
    }
    let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
    let is_hex = !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if !is_hex {
        return match parsed {
            Err(e @ Error::InvalidReference { .. }) => Err(e),
            _ => Err(not_found()),
        };
    }
    let candidates: Vec<&String> = index
        .images
        .keys()
        .filter(|id| id.starts_with(prefix))
        .collect();
    match candidates.as_slice() {
        [] => Err(not_found()),
        [id] => Ok((*id).clone()),
        many => Err(Error::AmbiguousImage {
            prefix: prefix.to_string(),
            candidates: many.iter().map(|s| s.to_string()).collect(),
        }),
    }
}

/// The repository part of a displayed reference: without `@digest` and `:tag`.
pub fn repository_of(name: &str) -> &str {
    let name = name.split_once('@').map_or(name, |(n, _)| n);
    let slash = name.rfind('/').map_or(0, |i| i + 1);
    match name[slash..].rfind(':') {
        Some(i) => &name[..slash + i],
        None => name,
    }
}

pub(crate) fn record(index: &Index, id: &str) -> Option<ImageRecord> {
    let img = index.images.get(id)?;
    let repo_tags = index
        .tags
        .iter()
        .filter(|(_, v)| *v == id)
        .map(|(k, _)| k.clone())
        .collect();
    Some(ImageRecord {
        id: id.to_string(),
        layers: img.layers.clone(),
        created: img.created.clone(),
        size: img.size,
        repo_tags,
        repo_digests: img.repo_digests.clone(),
        manifest: img.manifest.clone(),
        layer_blobs: img.layer_blobs.clone(),
    })
}

#[cfg(test)]
#[path = "lookup_tests.rs"]
mod tests;
