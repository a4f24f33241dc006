//! A new layer written in one pass: its tar goes, as it is written, to a new blob of
//! the store (digested as it is written) and through a pipe to the unpack helper, which
//! extracts it into a staging directory at the same time (checking it as any layer).
//! The blob is then committed (synced, renamed) and the staging directory installed as
//! the store's layer (renamed), as for any other layer: a crash midway leaves only
//! temporary files the store collects. Used by the build's COPY/ADD, and by the commit
//! of a container (`skiff commit`, a build's RUN step: the commit helper's tar is
//! teed the same way, [`Daemon::tee_layer`]).
//!
//! When the caller has a hint that the store holds the layer already (the same files
//! copied before, e.g. a `--no-cache` rebuild of an unchanged step), the tar is first
//! written into a digest only (the sources are read from the page cache and hashed):
//! if the store holds the layer with that diff id, no file is extracted again and the
//! blob is written only if it is missing. Layers are content-addressed, so the result
//! is the same layer either way; a wrong hint costs that one digest pass.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use sha2::{Digest, Sha256};

use crate::daemon::commit::NewLayer;
use crate::daemon::{Daemon, Error};
use crate::image::{BlobWriter, LayerRef, Staging, UnpackStats};

/// The media type of the layers written here.
const TAR: &str = "application/vnd.oci.image.layer.v1.tar";

/// A sink that only digests and counts what is written.
struct Digester {
    hasher: Sha256,
    size: u64,
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hasher.update(buf);
        self.size += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Runs `write` into `w` through a 1 MiB buffer.
fn write_buffered<F>(write: &F, w: &mut dyn Write, report: bool) -> Result<(), Error>
where
    F: Fn(&mut dyn Write, bool) -> Result<(), Error>,
{
    let mut w = io::BufWriter::with_capacity(1 << 20, w);
    write(&mut w, report)?;
    w.flush()
        .map_err(|e| Error::Internal(format!("writing the layer: {e}")))
}

/// Writes each buffer to the blob and the pipe; remembers a failed pipe write (the
/// helper's end gone: its error is the one to report).
struct Tee {
    blob: BlobWriter,
    pipe: Option<File>,
    pipe_failed: Arc<AtomicBool>,
}

impl Write for Tee {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.blob.write_all(buf)?;
        if let Some(p) = &mut self.pipe {
            if let Err(e) = p.write_all(buf) {
                self.pipe_failed.store(true, Ordering::Relaxed);
                return Err(e);
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.blob.flush()
    }
}

impl Daemon {
    /// Makes a layer from the uncompressed tar `write` writes (see the module docs);
    /// `hint` is the diff id the layer probably has. `write` is called up to twice and
    /// must write the same bytes each time; its flag says whether to report the copy's
    /// progress (the pass that makes the layer). The caller holds the collection lock
    /// shared (a layer found in the store stays).
    pub(crate) async fn install_layer_stream<F>(
        &self,
        hint: Option<String>,
        write: F,
    ) -> Result<NewLayer, Error>
    where
        F: Fn(&mut dyn Write, bool) -> Result<(), Error> + Send + Sync + 'static,
    {
        let write = Arc::new(write);
        let store = self.inner.images.clone();
        let w = write.clone();
        let hinted = hint.is_some_and(|h| self.inner.images.has_layer(&h));
        let known = tokio::task::spawn_blocking(move || -> Result<Option<NewLayer>, Error> {
            if !hinted {
                return Ok(None);
            }
            let mut d = Digester {
                hasher: Sha256::new(),
                size: 0,
            };
            write_buffered(&*w, &mut d, false)?;
            let digest = format!("sha256:{}", crate::image::hex(&d.hasher.finalize()));
            crate::phase::mark("copy-digested");
            if !store.has_layer(&digest) {
                return Ok(None);
            }
            // The layer is there: only its blob may be missing (a layer pulled
            // compressed has another blob).
            if !store.has_blob(&digest) {
                let mut blob = store.blob_writer()?;
                write_buffered(&*w, &mut blob, true)?;
                blob.commit(&digest)?;
            }
            Ok(Some(NewLayer {
                blob: LayerRef {
                    digest: digest.clone(),
                    media_type: TAR.into(),
                    size: d.size,
                },
                diff_id: digest,
            }))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))??;
        if let Some(layer) = known {
            crate::phase::mark("copy-layer-known");
            return Ok(layer);
        }
        let (blob, staging, stats) = self
            .tee_layer("copy-tar-written", move |w| {
                write_buffered(&*write, w, true)
            })
            .await
            .map_err(|(e, _)| e)?;
        crate::phase::mark("copy-layer-unpacked");
        let layer = self.install_extracted(blob, staging, stats).await;
        crate::phase::mark("copy-layer-installed");
        layer
    }

    /// Writes the uncompressed layer tar `write` writes into a new blob of the store and,
    /// at the same time, through a pipe into the unpack helper (see the module docs);
    /// marks `written` when the tar is written. Returns the committed blob and the
    /// extraction, not yet installed (see [`Daemon::install_extracted`]); on an error
    /// the staging directory is removed here, and the flag says whether the unpack
    /// helper ended while the tar was still being written to it (its error is then the
    /// cause; else a writer's failure, or a bad tar, is). Used by the build's COPY/ADD
    /// and by the commit of a container (a RUN step's).
    pub(crate) async fn tee_layer<F>(
        &self,
        written: &'static str,
        write: F,
    ) -> Result<(LayerRef, Staging, UnpackStats), (Error, bool)>
    where
        F: FnOnce(&mut dyn Write) -> Result<(), Error> + Send + 'static,
    {
        let (read_end, write_end): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| (Error::Internal(format!("pipe: {e}")), false))?;
        let store = self.inner.images.clone();
        let pipe_failed = Arc::new(AtomicBool::new(false));
        let failed = pipe_failed.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<LayerRef, Error> {
            let mut tee = Tee {
                blob: store.blob_writer()?,
                pipe: Some(File::from(write_end)),
                pipe_failed: failed,
            };
            write(&mut tee)?;
            // The end of the tar for the helper.
            tee.pipe = None;
            crate::phase::mark(written);
            let (digest, size) = tee.blob.commit_computed()?;
            Ok(LayerRef {
                digest,
                media_type: TAR.into(),
                size,
            })
        });
        let unpack = self.unpack_from(File::from(read_end), "the new layer", None);
        let (written, unpacked) = tokio::join!(writer, unpack);
        let pipe_failed = pipe_failed.load(Ordering::Relaxed);
        let written = written.map_err(|e| (Error::Internal(e.to_string()), pipe_failed))?;
        match (written, unpacked) {
            (Ok(b), Ok((staging, stats))) => Ok((b, staging, stats)),
            (Ok(_), Err(e)) => Err((e, false)),
            (Err(w), Ok((staging, _))) => {
                self.remove_tree(&staging.dir).await;
                Err((w, false))
            }
            (Err(w), Err(u)) => Err(if pipe_failed { (u, true) } else { (w, false) }),
        }
    }
}
