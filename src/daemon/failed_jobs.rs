//! What a load or import that does not end with its images recorded leaves: the blobs
//! it wrote are freed at once (only a pull resumes from kept blobs).

use super::{Daemon, Error};
use crate::image;

/// Frees what a load or import wrote when it does not end with its images recorded:
/// [`FailedJobBlobs::finish`] on the way out; dropped midway (a cancelled job), the
/// collection runs in the background. Create it before the job takes the collection
/// lock (so that the lock is released first).
pub(crate) struct FailedJobBlobs {
    store: Option<image::ImageStore>,
}

impl FailedJobBlobs {
    pub(crate) fn new(daemon: &Daemon) -> FailedJobBlobs {
        FailedJobBlobs {
            store: Some(daemon.inner.images.clone()),
        }
    }

    /// Ends the guard with the job's result: after a failure, frees the blobs no image
    /// lists at once, or (when another job is committing an image now) once it is done.
    pub(crate) async fn finish<T>(mut self, result: Result<T, Error>) -> Result<T, Error> {
        let store = self.store.take();
        if let (Err(_), Some(store)) = (&result, store) {
            let s = store.clone();
            match tokio::task::spawn_blocking(move || s.try_free_unreferenced_blobs(true)).await {
                Ok(Ok(Some(r))) => log_freed(&r),
                Ok(Ok(None)) => collect_in_background(store),
                Ok(Err(e)) => tracing::warn!("freeing the blobs of a failed job: {e}"),
                Err(e) => tracing::warn!("freeing the blobs of a failed job: {e}"),
            }
        }
        result
    }
}

impl Drop for FailedJobBlobs {
    fn drop(&mut self) {
        if let Some(store) = self.store.take() {
            collect_in_background(store);
        }
    }
}

fn collect_in_background(store: image::ImageStore) {
    if let Ok(rt) = tokio::runtime::Handle::try_current() {
        rt.spawn_blocking(move || match store.free_unreferenced_blobs(true) {
            Ok(r) => log_freed(&r),
            Err(e) => tracing::warn!("freeing the blobs of a failed job: {e}"),
        });
    }
}

fn log_freed(r: &image::Removal) {
    if r.blobs_freed > 0 {
        tracing::info!(
            "freed {} blobs ({} bytes) a failed load or import wrote",
            r.blobs_freed,
            r.bytes_freed
        );
    }
}
