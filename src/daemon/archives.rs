//! Image archives in the backend: `load` (docker-archive, oci-archive, OCI layout
//! directory) and `save` (docker-archive, oci-archive), and the image list filters.

use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use super::events::Event;
use super::{Daemon, Error};
use crate::image::archive::{self, Format, SaveItem};
use crate::image::progress::{CountingReader, Progress};
use crate::image::{ImageRecord, Reference};

impl Daemon {
    /// Loads every image of the archive read from `input` (a docker-archive or
    /// oci-archive tar, plain or gzip, or an open OCI layout directory). Each image is
    /// committed like a pulled one; nothing is visible before its index update. Reading
    /// and extraction are reported into `progress`.
    pub async fn load_image(
        &self,
        input: OwnedFd,
        progress: Arc<Progress>,
    ) -> Result<Vec<ImageRecord>, Error> {
        let guard = super::failed_jobs::FailedJobBlobs::new(self);
        let result = self.load_image_inner(input, progress).await;
        guard.finish(result).await
    }

    async fn load_image_inner(
        &self,
        input: OwnedFd,
        progress: Arc<Progress>,
    ) -> Result<Vec<ImageRecord>, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let store = self.inner.images.clone();
        let gc = store.clone();
        // Blobs written by the load must not be freed by a concurrent rmi before commit.
        let gc = Arc::new(
            tokio::task::spawn_blocking(move || gc.gc_lock(false))
                .await
                .map_err(|e| Error::Internal(e.to_string()))??,
        );
        progress.start_reading(super::images::input_size(&input));
        let reading = progress.clone();
        // The reading thread holds the lock too: after a cancel it may still be
        // committing a blob, which the collection must not miss.
        let held = gc.clone();
        let loaded = tokio::task::spawn_blocking(move || {
            let _held = held;
            let file = File::from(input);
            let is_dir = file.metadata().map(|m| m.is_dir()).unwrap_or(false);
            if is_dir {
                let path = format!("/proc/self/fd/{}", file.as_raw_fd());
                archive::load_oci_dir(&store, std::path::Path::new(&path), &reading)
            } else {
                archive::load_archive(&store, CountingReader::new(file, reading))
            }
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        if loaded.is_empty() {
            return Err(Error::ImportFailed("the archive holds no image".into()));
        }
        let mut out = Vec::new();
        for l in loaded {
            let rec = self
                .commit_manifest(&l.manifest, &l.names, &progress)
                .await?;
            let name = l.names.first().map(|n| n.to_string()).unwrap_or_default();
            self.emit(Event::new("image", "load", &rec.id, &[("name", name)]));
            out.push(rec);
        }
        Ok(out)
    }

    /// Writes the images `refs` name as an archive of `format` to `out`. An image named
    /// by a tag is saved under that tag; one named by id under all its tags.
    pub async fn save_images(
        &self,
        refs: &[String],
        out: OwnedFd,
        format: &str,
    ) -> Result<(), Error> {
        let format: Format = format.parse()?;
        if refs.is_empty() {
            return Err(Error::InvalidArgument(
                "name at least one image to save".into(),
            ));
        }
        let store = self.inner.images.clone();
        let mut items: Vec<SaveItem> = Vec::new();
        for r in refs {
            let image = store.resolve(r)?;
            let by_tag = Reference::parse(r)
                .ok()
                .map(|p| p.to_string())
                .filter(|t| image.repo_tags.contains(t));
            let names = match by_tag {
                Some(t) => vec![t],
                None => image.repo_tags.clone(),
            };
            match items.iter_mut().find(|i| i.image.id == image.id) {
                Some(i) => i.names.extend(names),
                None => items.push(SaveItem { image, names }),
            }
        }
        tokio::task::spawn_blocking(move || {
            archive::save(
                &store,
                &items,
                format,
                std::io::BufWriter::new(File::from(out)),
            )
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(())
    }

    /// Images matching all `filters` (`dangling=true|false`, `reference=PATTERN` with
    /// `*` wildcards, matched against the full and the short name), newest first. Without
    /// `all`, a build's intermediate images (untagged, another image built on them) are
    /// left out, as docker does.
    pub fn list_images_filtered(
        &self,
        filters: &[String],
        all: bool,
    ) -> Result<Vec<ImageRecord>, Error> {
        let mut dangling = None;
        let mut patterns = Vec::new();
        for f in filters {
            match f.split_once('=') {
                Some(("dangling", v)) => {
                    dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => {
                            return Err(Error::InvalidArgument(format!(
                                "filter {f:?}: dangling takes true or false"
                            )))
                        }
                    })
                }
                Some(("reference", p)) if !p.is_empty() => patterns.push(p.to_string()),
                _ => {
                    return Err(Error::InvalidArgument(format!(
                        "unknown image filter {f:?} (known: dangling=true|false, \
                         reference=PATTERN)"
                    )))
                }
            }
        }
        let images = self.list_images()?;
        let hidden = if all {
            Default::default()
        } else {
            super::build::cache::intermediate(&self.inner.images, &images)
        };
        Ok(images
            .into_iter()
            .filter(|i| !hidden.contains(&i.id))
            .filter(|i| dangling.is_none_or(|d| d == i.repo_tags.is_empty()))
            .filter(|i| {
                patterns.iter().all(|p| {
                    i.repo_tags
                        .iter()
                        .any(|t| short_names(t).iter().any(|n| glob(p, n)))
                })
            })
            .collect())
    }
}

/// A normalised name and its short forms: `docker.io/library/busybox:latest` also
/// matches as `library/busybox:latest`, `busybox:latest` and `busybox`.
fn short_names(tag: &str) -> Vec<String> {
    let mut out = vec![tag.to_string()];
    for prefix in ["docker.io/library/", "docker.io/", "localhost/"] {
        if let Some(rest) = tag.strip_prefix(prefix) {
            out.push(rest.to_string());
        }
    }
    let more: Vec<String> = out
        .iter()
        .filter_map(|n| n.strip_suffix(":latest").map(str::to_string))
        .collect();
    out.extend(more);
    out
}

/// Matches `pattern` (`*` = any run of characters) against the whole of `s`.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_short_names() {
        assert!(glob("busy*", "busybox"));
        assert!(glob("*box", "busybox"));
        assert!(glob("b*y*x", "busybox"));
        assert!(!glob("b*z", "busybox"));
        assert!(glob("busybox", "busybox"));
        assert!(!glob("busy", "busybox"));
        let n = short_names("docker.io/library/busybox:latest");
        assert!(n.contains(&"busybox".to_string()));
        assert!(n.contains(&"busybox:latest".to_string()));
        assert!(n.contains(&"library/busybox".to_string()));
    }
}
