//! A new layer written in one pass: its tar goes, as it is written, to a new blob of
//! the store (digested as it is written) and through a pipe to the unpack helper, which
//! extracts it into a staging directory at the same time (checking it as any layer).
//! The blob is then committed (synced, renamed) and the staging directory installed as
//! the store's layer (renamed), as for any other layer: a crash midway leaves only
//! temporary files the store collects. Used by the build's COPY/ADD.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use crate::daemon::commit::NewLayer;
use crate::daemon::{Daemon, Error};
use crate::image::{BlobWriter, LayerRef};

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
    /// Makes a layer from the uncompressed tar `write` writes (see the module docs).
    /// The caller holds the collection lock shared.
    pub(crate) async fn install_layer_stream<F>(&self, write: F) -> Result<NewLayer, Error>
    where
        F: FnOnce(&mut dyn Write) -> Result<(), Error> + Send + 'static,
    {
        let (read_end, write_end): (OwnedFd, OwnedFd) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
                .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let store = self.inner.images.clone();
        let pipe_failed = Arc::new(AtomicBool::new(false));
        let failed = pipe_failed.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<LayerRef, Error> {
            let mut tee = Tee {
                blob: store.blob_writer()?,
                pipe: Some(File::from(write_end)),
                pipe_failed: failed,
            };
            {
                let mut w = io::BufWriter::with_capacity(1 << 20, &mut tee);
                write(&mut w)?;
                w.flush()
                    .map_err(|e| Error::Internal(format!("writing the layer: {e}")))?;
            }
            // The end of the tar for the helper.
            tee.pipe = None;
            let (digest, size) = tee.blob.commit_computed()?;
            Ok(LayerRef {
                digest,
                media_type: "application/vnd.oci.image.layer.v1.tar".into(),
                size,
            })
        });
        let unpack = self.unpack_from(File::from(read_end), "the new layer", None);
        let (written, unpacked) = tokio::join!(writer, unpack);
        let written = written.map_err(|e| Error::Internal(e.to_string()))?;
        let (blob, (staging, stats)) = match (written, unpacked) {
            (Ok(b), Ok(u)) => (b, u),
            (Ok(_), Err(e)) => return Err(e),
            (Err(w), Ok((staging, _))) => {
                self.remove_tree(&staging.dir).await;
                return Err(w);
            }
            (Err(w), Err(u)) => {
                return Err(if pipe_failed.load(Ordering::Relaxed) {
                    u
                } else {
                    w
                })
            }
        };
        self.install_extracted(blob, staging, stats).await
    }
}
