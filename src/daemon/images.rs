//! Image operations of the backend: commit an image whose blobs are in the store (the
//! end of a pull or load), import a rootfs tarball, list, tag and remove images. Layers
//! are extracted by the `__unpack` helper inside the user namespace.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::events::Event;
use super::{Daemon, Error};
use crate::helpers::UnpackResult;
use crate::image::manifest::{layer_media_type, parse_manifest};
use crate::image::progress::{CountingReader, Progress};
use crate::image::{
    self, ImageChanges, ImageRecord, LayerRef, NewImage, Reference, Staging, UnpackStats,
};

impl Daemon {
    /// Commits the image whose manifest is the blob `manifest_digest` (an OCI image
    /// manifest or a Docker v2 schema 2 manifest; its config and layer blobs must be in
    /// the store too): extracts the layers not extracted yet, verifying each one's
    /// uncompressed digest against the config's `rootfs.diff_ids`, then records the image
    /// with `names` (and their repo digests) in one atomic index update, and emits an
    /// `image` event (`pull`). Until that update nothing of the image is visible; a crash
    /// before it leaves unreferenced blobs and layers that the next start collects. The
    /// extraction is reported into `progress`.
    pub async fn commit_image(
        &self,
        manifest_digest: &str,
        names: &[Reference],
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        let rec = self
            .commit_manifest(manifest_digest, names, progress)
            .await?;
        let name = names.first().map(|n| n.to_string()).unwrap_or_default();
        self.emit(Event::new("image", "pull", &rec.id, &[("name", name)]));
        Ok(rec)
    }

    /// [`Daemon::commit_image`] without the event (load emits its own).
    pub(crate) async fn commit_manifest(
        &self,
        manifest_digest: &str,
        names: &[Reference],
        progress: &Progress,
    ) -> Result<ImageRecord, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let store = self.inner.images.clone();
        let manifest_bytes = store.read_blob(manifest_digest)?;
        let manifest = parse_manifest(&manifest_bytes, manifest_digest)?;
        let config_bytes = store.read_blob(&manifest.config)?;
        let config: oci_spec::image::ImageConfiguration = serde_json::from_slice(&config_bytes)
            .map_err(|e| image::Error::InvalidImage {
                what: format!("configuration {}", manifest.config),
                reason: e.to_string(),
            })?;
        let diff_ids = config.rootfs().diff_ids().clone();
        if diff_ids.len() != manifest.layers.len() {
            return Err(image::Error::InvalidImage {
                what: format!("manifest {manifest_digest}"),
                reason: format!(
                    "it lists {} layers but its configuration has {} diff ids",
                    manifest.layers.len(),
                    diff_ids.len()
                ),
            }
            .into());
        }
        for l in &manifest.layers {
            if !store.has_blob(&l.digest) {
                return Err(image::Error::MissingBlob {
                    digest: l.digest.clone(),
                    hint: format!("manifest {manifest_digest} needs it; fetch it first"),
                }
                .into());
            }
        }
        let _gc = self.gc_shared().await?;
        for diff_id in &diff_ids {
            image::parse_digest(diff_id)?;
        }
        let plan: Vec<(String, u64, bool)> = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .map(|(l, d)| (l.digest.clone(), l.size, store.has_layer(d)))
            .collect();
        let slots = progress.plan_extraction(&plan);
        // Layers are independent trees: extract several at once (each by its own helper
        // process), in any order. The first error drops the others, which kills their
        // helpers and removes their staging directories.
        let todo: Vec<_> = manifest
            .layers
            .iter()
            .zip(&diff_ids)
            .zip(slots)
            .zip(&plan)
            .filter(|(_, (_, _, present))| !present)
            .map(|(((layer, diff_id), slot), _)| {
                self.extract_layer(&layer.digest, diff_id, progress, slot)
            })
            .collect();
        let mut extractions = futures_util::stream::iter(todo).buffer_unordered(parallel_unpacks());
        while let Some(done) = extractions.next().await {
            done?;
        }
        drop(extractions);
        if !progress.enter_commit() {
            return Err(Error::Cancelled);
        }
        let new = NewImage {
            config: manifest.config.clone(),
            manifest: manifest_digest.to_string(),
            layers: diff_ids,
            layer_blobs: manifest.layers.iter().map(|l| l.digest.clone()).collect(),
            names: names.iter().map(|n| n.to_string()).collect(),
            created: config
                .created()
                .clone()
                .unwrap_or_else(image::store::now_rfc3339),
        };
        let rec = tokio::task::spawn_blocking(move || store.record_image(&new))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        Ok(rec)
    }

    /// Extracts the layer blob `blob` unless the layer `diff_id` is there already,
    /// verifies its diff id and installs it, reporting into `slot` of `progress`.
    async fn extract_layer(
        &self,
        blob: &str,
        diff_id: &str,
        progress: &Progress,
        slot: usize,
    ) -> Result<(), Error> {
        if self.inner.images.has_layer(diff_id) {
            // Extracted meanwhile by another job.
            progress.extract_done(slot);
            return Ok(());
        }
        let (staging, stats) = self.unpack_blob(blob, Some((progress, slot))).await?;
        if stats.diff_id != diff_id {
            self.remove_tree(&staging.dir).await;
            return Err(image::Error::DigestMismatch {
                expected: diff_id.to_string(),
                actual: stats.diff_id,
            }
            .into());
        }
        self.install(staging, stats).await?;
        progress.extract_done(slot);
        Ok(())
    }

    /// Imports the rootfs tar (plain, gzip or zstd) read from `input` as `reference`: the
    /// tar becomes a layer blob, then it is extracted and a config and manifest made.
    /// Reading and extraction are reported into `progress`.
    pub async fn import_image(
        &self,
        input: OwnedFd,
        reference: &str,
        changes: ImageChanges,
        progress: Arc<Progress>,
    ) -> Result<ImageRecord, Error> {
        let guard = super::failed_jobs::FailedJobBlobs::new(self);
        let result = self
            .import_image_inner(input, reference, changes, progress)
            .await;
        guard.finish(result).await
    }

    async fn import_image_inner(
        &self,
        input: OwnedFd,
        reference: &str,
        changes: ImageChanges,
        progress: Arc<Progress>,
    ) -> Result<ImageRecord, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let reference: Reference = reference.parse()?;
        image::names::check_taggable(&reference)?;
        let gc = Arc::new(self.gc_shared().await?);
        let store = self.inner.images.clone();
        progress.start_reading(input_size(&input));
        let counted = CountingReader::new(File::from(input), progress.clone());
        // The copying thread holds the lock too (see load_image).
        let held = gc.clone();
        let layer = tokio::task::spawn_blocking(move || {
            let _held = held;
            copy_to_blob(&store, counted)
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        let slot = progress.plan_extraction(&[(layer.digest.clone(), layer.size, false)]);
        let watch = slot.first().map(|s| (&*progress, *s));
        let (staging, stats) = self.unpack_blob(&layer.digest, watch).await?;
        if let Some((p, s)) = watch {
            p.extract_done(s);
        }
        if !progress.enter_commit() {
            return Err(Error::Cancelled);
        }
        let store = self.inner.images.clone();
        let reference2 = reference.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            store.commit_import(staging, &stats, &layer, &reference2, &changes)
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

    /// Holds the store's collection lock shared (blobs and layers of an image being
    /// committed are not freed under it).
    async fn gc_shared(&self) -> Result<nix::fcntl::Flock<File>, Error> {
        let store = self.inner.images.clone();
        Ok(tokio::task::spawn_blocking(move || store.gc_lock(false))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??)
    }

    /// Extracts the layer blob `digest` into a fresh staging directory with the unpack
    /// helper; on failure the staging directory is removed. With `watch`, how far the
    /// helper has read the blob is reported as the extraction of that layer slot.
    pub(crate) async fn unpack_blob(
        &self,
        digest: &str,
        watch: Option<(&Progress, usize)>,
    ) -> Result<(Staging, UnpackStats), Error> {
        let path = self.inner.images.blob_path(digest)?;
        let blob = File::open(&path).map_err(|e| Error::io(&path, e))?;
        // A duplicate shares the file offset with the helper's stdin: its position is
        // how far the helper has read.
        let offset = blob.try_clone().ok();
        let watch = watch.zip(offset).map(|((p, slot), f)| (p, slot, f));
        self.unpack_from(blob, &format!("layer {digest}"), watch)
            .await
    }

    /// Extracts the layer tar read from `input` (a blob, or a pipe a writer streams it
    /// into) into a fresh staging directory with the unpack helper; on failure the
    /// staging directory is removed. `what` names the layer in messages. With `watch`,
    /// the offset of its file is reported as the extraction of that layer slot.
    pub(crate) async fn unpack_from(
        &self,
        input: File,
        what: &str,
        watch: Option<(&Progress, usize, File)>,
    ) -> Result<(Staging, UnpackStats), Error> {
        let store = &self.inner.images;
        let staging = store.new_staging()?;
        let guard = StagingGuard {
            daemon: self.clone(),
            dir: Some(staging.dir.clone()),
        };
        // On failure the guard removes the staging directory.
        let mut cmd = super::helper::maps_command(
            &self.inner.opts.exe,
            "__unpack",
            &self.inner.maps_json,
            &format!("unpack {what}"),
        )?;
        cmd.arg(&staging.diff)
            .envs(self.settings().layer_limit_envs())
            .stdin(Stdio::from(input))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let spawned = cmd.spawn();
        // The input is the helper's alone now (a pipe's writer sees its end if it dies).
        drop(cmd);
        let run = async move { spawned?.wait_with_output().await };
        tokio::pin!(run);
        let mut tick = tokio::time::interval(UNPACK_TICK);
        let out = loop {
            tokio::select! {
                out = &mut run => break out,
                _ = tick.tick() => {
                    if let Some((p, slot, f)) = &watch {
                        if let Ok(pos) = nix::unistd::lseek(f.as_fd(), 0, nix::unistd::Whence::SeekCur) {
                            p.extract_position(*slot, u64::try_from(pos).unwrap_or(0));
                        }
                    }
                }
            }
        };
        guard.disarm();
        let out = match out {
            Ok(o) => o,
            Err(e) => {
                self.remove_tree(&staging.dir).await;
                return Err(Error::ImportFailed(format!(
                    "cannot run the unpack helper: {e}"
                )));
            }
        };
        let result: Result<UnpackResult, _> = serde_json::from_slice(&out.stdout);
        match result {
            Ok(UnpackResult::Ok(stats)) if out.status.success() => {
                for w in &stats.warnings {
                    tracing::warn!("{what}: {w}");
                    if let Some((p, _, _)) = &watch {
                        p.warn(format!("{what}: {w}"));
                    }
                }
                Ok((staging, stats))
            }
            Ok(UnpackResult::Err(msg)) => {
                self.remove_tree(&staging.dir).await;
                Err(Error::ImportFailed(format!("{what}: {msg}")))
            }
            _ => {
                self.remove_tree(&staging.dir).await;
                Err(Error::ImportFailed(format!(
                    "the unpack helper failed on {what} ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
    }

    /// Moves an extracted layer into the store (removing the staging copy if the layer
    /// got there first).
    async fn install(&self, staging: Staging, stats: UnpackStats) -> Result<(), Error> {
        let store = self.inner.images.clone();
        let unused = tokio::task::spawn_blocking(move || store.install_layer(staging, &stats))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(dir) = unused {
            self.remove_tree(&dir).await;
        }
        Ok(())
    }
}

/// Removes a staging directory when the extraction that owns it is dropped midway (a
/// cancelled job: the helper is killed with it); disarmed once the extraction ended.
struct StagingGuard {
    daemon: Daemon,
    dir: Option<std::path::PathBuf>,
}

impl StagingGuard {
    fn disarm(mut self) {
        self.dir = None;
    }
}

impl Drop for StagingGuard {
    fn drop(&mut self) {
        let Some(dir) = self.dir.take() else { return };
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            let daemon = self.daemon.clone();
            rt.spawn(async move { daemon.remove_tree(&dir).await });
        }
    }
}

/// How many layers are extracted at once: one per CPU, at most 4 (each extraction
/// reads, hashes and writes; more than the CPUs only contend).
fn parallel_unpacks() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

/// How often the extraction's position is sampled.
const UNPACK_TICK: Duration = Duration::from_millis(100);

/// The size of `input` when it is a regular file (a pipe's is unknown).
pub(crate) fn input_size(input: &OwnedFd) -> Option<u64> {
    let st = nix::sys::stat::fstat(input.as_fd()).ok()?;
    let regular = (st.st_mode & libc::S_IFMT) == libc::S_IFREG;
    // A file given at an offset (stdin redirected after a read) has less left.
    let pos = nix::unistd::lseek(input.as_fd(), 0, nix::unistd::Whence::SeekCur).unwrap_or(0);
    regular.then(|| u64::try_from(st.st_size - pos).unwrap_or(0))
}

/// Copies a layer stream into a new blob; returns it as a manifest layer.
pub(crate) fn copy_to_blob(
    store: &image::ImageStore,
    mut input: impl Read,
) -> Result<LayerRef, Error> {
    let mut w = store.blob_writer()?;
    let mut buf = vec![0u8; 1 << 20];
    let mut head = Vec::new();
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(image::Error::io("reading the layer", e).into()),
        };
        if head.len() < 4 {
            head.extend_from_slice(&buf[..n.min(4)]);
        }
        w.write_all(&buf[..n])
            .map_err(|e| image::Error::io("writing a layer blob", e))?;
    }
    if w.size() == 0 {
        return Err(image::Error::InvalidLayer {
            reason: "the layer is empty (0 bytes), expected a tar archive".into(),
        }
        .into());
    }
    let media_type = layer_media_type(&head).to_string();
    let (digest, size) = w.commit_computed()?;
    Ok(LayerRef {
        digest,
        media_type,
        size,
    })
}
