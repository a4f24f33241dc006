//! Image operations of the backend: import a rootfs tarball (extracted by a helper inside
//! the user namespace) and list images.

use std::os::fd::OwnedFd;
use std::process::Stdio;

use super::events::Event;
use super::{Daemon, Error};
use crate::helpers::UnpackResult;
use crate::image::{ImageChanges, ImageRecord, Reference};

impl Daemon {
    /// Imports the rootfs tar (plain or gzip) read from `input` as `reference`.
    pub async fn import_image(
        &self,
        input: OwnedFd,
        reference: &str,
        changes: ImageChanges,
    ) -> Result<ImageRecord, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let reference: Reference = reference.parse()?;
        let store = &self.inner.images;
        let staging = store.new_staging()?;
        let out = tokio::process::Command::new(&self.inner.opts.exe)
            .arg("__unpack")
            .arg("--maps")
            .arg(&self.inner.maps_json)
            .arg(&staging.diff)
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .await
            .map_err(|e| Error::ImportFailed(format!("cannot run the unpack helper: {e}")))?;
        let result: Result<UnpackResult, _> = serde_json::from_slice(&out.stdout);
        let stats = match result {
            Ok(UnpackResult::Ok(stats)) if out.status.success() => stats,
            Ok(UnpackResult::Err(msg)) => {
                self.remove_tree(&staging.dir).await;
                return Err(Error::ImportFailed(msg));
            }
            _ => {
                self.remove_tree(&staging.dir).await;
                return Err(Error::ImportFailed(format!(
                    "the unpack helper failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )));
            }
        };
        for w in &stats.warnings {
            tracing::warn!("import {reference}: {w}");
        }
        let store2 = store.clone();
        let reference2 = reference.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            store2.commit_import(staging, &stats, &reference2, &changes)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(unused) = &outcome.unused_staging {
            self.remove_tree(unused).await;
        }
        self.emit(Event::new(
            "image",
            "import",
            &outcome.image.id,
            &[("name", reference.to_string())],
        ));
        Ok(outcome.image)
    }

    /// All images, newest first.
    pub fn list_images(&self) -> Result<Vec<ImageRecord>, Error> {
        Ok(self.inner.images.list()?)
    }

    /// One image by reference, id or id prefix.
    pub fn image(&self, reference: &str) -> Result<ImageRecord, Error> {
        Ok(self.inner.images.resolve(reference)?)
    }
}
