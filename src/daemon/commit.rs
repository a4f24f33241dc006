//! `skiff commit` in the backend: a container's writable layer becomes a new image.
//!
//! The `__commit` helper (see [`crate::helpers::commit_main`]) writes the changes as an
//! OCI layer tar inside the user namespace (so owners are the container's) into a pipe;
//! the daemon writes it, as it comes, into a blob (digested) and into the unpack helper
//! (which checks it like any other layer) at once, installs the extraction as a store
//! layer once it is seen to have the blob's digest, and records an image whose
//! configuration is the parent's with the changes, the layer and a history entry.
//!
//! A running container is committed as it runs (docker's `--pause=false`); with `pause`
//! it is frozen for the copy when its processes have a cgroup v2 scope of their own
//! (`skiff-<id>.scope`), else committed running, as docker does without pause.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Stdio;

use tokio::io::AsyncReadExt;

use super::container::Status;
use super::events::Event;
use super::{Daemon, Error};
use crate::fdutil;
use crate::helpers::CommitSpec;
use crate::image::derive::{Derived, HistoryEntry};
use crate::image::manifest::{build_manifest, parse_manifest};
use crate::image::{
    self, ImageChanges, ImageRecord, LayerRef, NewImage, Reference, Staging, UnpackStats,
};
use crate::runtime::RootfsDriver;

/// The most the commit helper may say on stderr.
const MAX_REPORT: u64 = 1 << 20;

/// What `skiff commit` asks for.
#[derive(Debug, Clone, Default)]
pub struct CommitOptions {
    /// The new image's name (`None`: an untagged image).
    pub reference: Option<String>,
    /// `--change` instructions.
    pub changes: ImageChanges,
    /// `-m`: the history entry's comment.
    pub message: Option<String>,
    /// `-a`: the author.
    pub author: Option<String>,
    /// Freeze a running container while its layer is read.
    pub pause: bool,
}

/// A layer just made from a container: its blob is in the store, its tree installed.
#[derive(Debug, Clone)]
pub(crate) struct NewLayer {
    /// The blob (an uncompressed tar: its digest is the diff id).
    pub(crate) blob: LayerRef,
    /// `sha256:<hex>` of the tar.
    pub(crate) diff_id: String,
}

impl Daemon {
    /// Commits the container `name_or_id` as a new image (see the module docs).
    pub async fn commit_container(
        &self,
        name_or_id: &str,
        opts: CommitOptions,
    ) -> Result<ImageRecord, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let reference = match &opts.reference {
            Some(r) if !r.is_empty() => {
                let r: Reference = r.parse()?;
                image::names::check_taggable(&r)?;
                Some(r)
            }
            _ => None,
        };
        let c = self.lookup(name_or_id)?;
        // A stopped container stays stopped (its layer unchanged) while it is read.
        let mut _op = None;
        let mut rec = c.snapshot();
        if rec.state.status != Status::Running {
            _op = Some(c.lock_op().await?);
            rec = c.snapshot();
        }
        if rec.state.status == Status::Removing {
            return Err(Error::NoSuchContainer(name_or_id.to_string()));
        }
        let (maps, remap) = self.container_maps(&rec)?;
        let parent = self.inner.images.resolve(&rec.image_id)?;
        let _frozen = match (opts.pause, rec.state.status) {
            (true, Status::Running) if rec.state.pid != 0 => {
                super::freeze::Frozen::try_freeze(&rec.id, rec.state.pid as i32)
            }
            _ => None,
        };
        let guard = super::failed_jobs::FailedJobBlobs::new(self);
        let result = async {
            let _gc = self.gc_shared_lock().await?;
            let layer = self
                .layer_of_container_as(&c.dir, &parent, maps, remap)
                .await?;
            drop(_frozen);
            let mut cfg = Derived::new(Some(
                &self
                    .inner
                    .images
                    .read_blob(&format!("sha256:{}", parent.id))?,
            ))?;
            cfg.apply(&opts.changes);
            cfg.add_layer(&layer.diff_id);
            cfg.add_history(&HistoryEntry {
                created: image::store::now_rfc3339(),
                created_by: rec.args.join(" "),
                comment: opts.message.clone().filter(|m| !m.is_empty()),
                author: opts.author.clone().filter(|a| !a.is_empty()),
                empty_layer: false,
            });
            let names: Vec<String> = reference.iter().map(|r| r.to_string()).collect();
            self.record_derived(&Some(parent.clone()), &cfg, &[layer], &names)
                .await
        }
        .await;
        let rec_img = guard.finish(result).await?;
        self.emit(Event::new(
            "container",
            "commit",
            &rec.id,
            &[
                ("name", rec.name.clone()),
                ("image", rec_img.id.clone()),
                (
                    "reference",
                    reference.map(|r| r.to_string()).unwrap_or_default(),
                ),
            ],
        ));
        Ok(rec_img)
    }

    /// Holds the store's collection lock shared (see `images.rs`).
    pub(crate) async fn gc_shared_lock(&self) -> Result<nix::fcntl::Flock<File>, Error> {
        let store = self.inner.images.clone();
        Ok(tokio::task::spawn_blocking(move || store.gc_lock(false))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??)
    }

    /// Records an image whose configuration is `cfg` and whose layers are `parent`'s
    /// (none for `scratch`) followed by `layers`, under `names`.
    pub(crate) async fn record_derived(
        &self,
        parent: &Option<ImageRecord>,
        cfg: &Derived,
        layers: &[NewLayer],
        names: &[String],
    ) -> Result<ImageRecord, Error> {
        let store = self.inner.images.clone();
        let mut blobs: Vec<LayerRef> = match parent.as_ref() {
            None => Vec::new(),
            Some(p) => {
                let digest = p.manifest.clone().ok_or_else(|| {
                    Error::NotSupported(format!(
                        "image {} was stored by an older skiff without a manifest; pull or \
                         load it again",
                        p.id
                    ))
                })?;
                parse_manifest(&store.read_blob(&digest)?, &digest)?.layers
            }
        };
        blobs.extend(layers.iter().map(|l| l.blob.clone()));
        let diff_ids = cfg.diff_ids();
        if diff_ids.len() != blobs.len() {
            return Err(Error::Internal(format!(
                "the new image has {} diff ids for {} layers",
                diff_ids.len(),
                blobs.len()
            )));
        }
        let bytes = cfg.to_bytes()?;
        let created = cfg
            .0
            .get("created")
            .and_then(|c| c.as_str())
            .map(str::to_string)
            .unwrap_or_else(image::store::now_rfc3339);
        let names = names.to_vec();
        tokio::task::spawn_blocking(move || {
            // The manifest names the config by digest: both written, then their
            // directory synced once (see `ImageStore::write_blobs`).
            let config = format!("sha256:{}", image::sha256_hex(&bytes));
            let manifest = build_manifest(&config, bytes.len() as u64, &blobs)?;
            store.write_blobs(&[&bytes, &manifest])?;
            let manifest = format!("sha256:{}", image::sha256_hex(&manifest));
            store.record_image(&NewImage {
                config,
                manifest,
                layers: diff_ids,
                layer_blobs: blobs.into_iter().map(|b| b.digest).collect(),
                names,
                created,
            })
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(Error::from)
    }

    /// Writes the changes in the container directory `dir` (made from `parent`, with
    /// the daemon's id maps) as a layer blob and installs its tree in the store. The
    /// caller holds the collection lock shared.
    pub(crate) async fn layer_of_container(
        &self,
        dir: &std::path::Path,
        parent: &ImageRecord,
    ) -> Result<NewLayer, Error> {
        self.layer_of_container_as(dir, parent, self.inner.maps.clone(), None)
            .await
    }

    /// [`Daemon::layer_of_container`] for a container with the id maps `maps` and the
    /// owner translation `remap` (`--userns keep-id`; see `Daemon::container_maps`).
    /// The layer holds the owners the container sees: the kernel overlay's upper
    /// directory and the vfs copy hold them as the container's namespace stores them,
    /// so they are read in that namespace; skiff's FUSE overlay stores the default
    /// mapping's owners for what the container sees (it translates), so its upper is
    /// read with the daemon's maps.
    pub(crate) async fn layer_of_container_as(
        &self,
        dir: &std::path::Path,
        parent: &ImageRecord,
        maps: crate::userns::IdMaps,
        remap: Option<crate::userns::keepid::IdRemap>,
    ) -> Result<NewLayer, Error> {
        let upper = dir.join("upper");
        let driver = self.inner.opts.driver;
        let vfs_lower = (driver == RootfsDriver::Vfs).then(|| self.inner.images.layer_dirs(parent));
        let (maps, remap) = match (driver, remap) {
            (RootfsDriver::Fuse, _) | (_, None) => (self.inner.maps.clone(), None),
            (RootfsDriver::Overlay, Some(_)) => (maps, None),
            (RootfsDriver::Vfs, Some(r)) => (maps, Some(r)),
        };
        let (blob, staging, stats) = self
            .run_commit_helper(CommitSpec {
                maps,
                upper,
                vfs_lower,
                remap,
            })
            .await?;
        crate::phase::mark("layer-unpacked");
        self.install_extracted(blob, staging, stats).await
    }

    /// Installs `staging`, the extraction of the layer tar `blob`, as a store layer once
    /// it is checked to have extracted to the blob's own digest.
    pub(crate) async fn install_extracted(
        &self,
        blob: LayerRef,
        staging: Staging,
        stats: UnpackStats,
    ) -> Result<NewLayer, Error> {
        if stats.diff_id != blob.digest {
            self.remove_tree(&staging.dir).await;
            return Err(Error::Internal(format!(
                "the layer's tar has digest {} but extracted as {}",
                blob.digest, stats.diff_id
            )));
        }
        let diff_id = stats.diff_id.clone();
        let store = self.inner.images.clone();
        let unused = tokio::task::spawn_blocking(move || store.install_layer(staging, &stats))
            .await
            .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(d) = unused {
            self.remove_tree(&d).await;
        }
        Ok(NewLayer { blob, diff_id })
    }

    /// Runs `__commit` with `spec`; its tar goes, as it comes, into a blob and the
    /// unpack helper at once ([`Daemon::tee_layer`]). Returns the blob and its
    /// extraction, not yet installed; on an error the extraction is removed.
    async fn run_commit_helper(
        &self,
        spec: CommitSpec,
    ) -> Result<(LayerRef, Staging, UnpackStats), Error> {
        let json = serde_json::to_vec(&spec).map_err(|e| Error::Internal(e.to_string()))?;
        let memfd = fdutil::sealed_memfd(&json)
            .map_err(|e| Error::Internal(format!("the commit helper's spec: {e}")))?;
        let (read_end, write_end): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let mut cmd = tokio::process::Command::new(&self.inner.opts.exe);
        cmd.arg("__commit")
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::piped())
            .env_remove("RUST_LOG")
            .kill_on_drop(true);
        let mut fds = vec![(memfd, fdutil::SPEC_FD)];
        if let Some(log) = crate::logging::for_helper(cmd.as_std_mut(), "commit") {
            fds.push(log);
        }
        fdutil::pass_fds(&mut cmd, fds);
        let mut child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("cannot start skiffd's commit helper: {e}")))?;
        // The pipe's write end is the helper's alone now: its end is the tar's end.
        drop(cmd);
        let mut input = File::from(read_end);
        let teed = self.tee_layer("commit-tar-written", move |w| {
            copy_layer(&mut input, w)
                .map_err(|e| Error::from(image::Error::io("reading the commit helper's layer", e)))
        });
        let helper = async {
            let mut report = Vec::new();
            if let Some(err) = child.stderr.take() {
                let _ = err.take(MAX_REPORT).read_to_end(&mut report).await;
            }
            let status = child
                .wait()
                .await
                .map_err(|e| Error::Internal(format!("waiting for the commit helper: {e}")))?;
            if !status.success() {
                return Err(Error::Runtime(format!(
                    "commit failed ({status}): {}",
                    String::from_utf8_lossy(&report).trim()
                )));
            }
            Ok(())
        };
        let (teed, helper) = tokio::join!(teed, helper);
        match (teed, helper) {
            (Ok(layer), Ok(())) => Ok(layer),
            // The helper's failure explains a short or broken tar...
            (Ok((_, staging, _)), Err(e)) => {
                self.remove_tree(&staging.dir).await;
                Err(e)
            }
            (Err((_, false)), Err(e)) | (Err((e, _)), Ok(())) => Err(e),
            // ...unless the unpack helper refused the tar midway (e.g. a layer limit):
            // the commit helper then only saw its pipe closed.
            (Err((e, true)), Err(_)) => Err(e),
        }
    }
}

/// Copies the commit helper's tar from `input` to `w`; an empty one (no tar at all) is
/// an error.
fn copy_layer(input: &mut File, w: &mut dyn std::io::Write) -> std::io::Result<()> {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match std::io::Read::read(input, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        total += n as u64;
        w.write_all(&buf[..n])?;
    }
    if total == 0 {
        return Err(std::io::Error::other(
            "the layer is empty (0 bytes), expected a tar archive",
        ));
    }
    w.flush()
}
