//! Pushing an image from the store to a registry: its layer blobs (as stored:
//! compressed or not, so that their digests stay those of the manifest), its config,
//! then its manifest (the stored bytes, OCI or Docker schema 2) under the destination
//! tag. A blob the repository has already (a HEAD request) is not uploaded, nor one the
//! registry mounts from another repository the image has a name in.

use std::sync::Arc;

use futures_util::Stream;
use oci_client::errors::OciDistributionError;
use tokio::io::AsyncReadExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{ConnectOptions, Repo};
use super::Error;
use crate::image::manifest::parse_manifest;
use crate::image::progress::{LayerStatus, Progress};
use crate::image::{ImageStore, Reference};

/// Bytes read from a blob file per chunk of an upload.
const CHUNK: usize = 1 << 20;

/// The OCI manifest media type, for manifests that do not say theirs.
const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";

/// How to push.
#[derive(Debug, Clone)]
pub struct PushOptions {
    /// Transport and credentials.
    pub connect: ConnectOptions,
    /// Most blobs uploaded at once.
    pub max_parallel: usize,
    /// Repositories of the destination's registry that may have the blobs (other names
    /// of the image there): a blob the destination lacks is mounted from them first.
    pub mount_from: Vec<String>,
}

/// What a push did.
#[derive(Debug)]
pub struct Pushed {
    /// `sha256:...` of the manifest the destination tag now names.
    pub digest: String,
    /// Size of that manifest in bytes.
    pub manifest_size: usize,
}

/// Pushes the image whose manifest blob is `manifest_digest` to `dest` (a tagged
/// reference). The caller keeps the image's blobs pinned meanwhile.
pub async fn push(
    store: &ImageStore,
    manifest_digest: &str,
    dest: &Reference,
    opts: &PushOptions,
    progress: &Arc<Progress>,
) -> Result<Pushed, Error> {
    let manifest = {
        let store = store.clone();
        let d = manifest_digest.to_string();
        tokio::task::spawn_blocking(move || store.read_blob(&d))
            .await
            .map_err(|e| Error::Interrupted(e.to_string()))??
    };
    let parsed = parse_manifest(&manifest, manifest_digest)?;
    let media_type = serde_json::from_slice::<serde_json::Value>(&manifest)
        .ok()
        .and_then(|v| {
            v.get("mediaType")
                .and_then(|m| m.as_str())
                .map(String::from)
        })
        .unwrap_or_else(|| OCI_MANIFEST.to_string());
    let config_size = std::fs::metadata(store.blob_path(&parsed.config)?)
        .map_err(|e| crate::image::Error::io(format!("the config blob {}", parsed.config), e))?
        .len();
    // Layers first, the config last (as docker does); each blob once.
    let mut blobs: Vec<(String, u64)> = Vec::new();
    for (d, size) in parsed
        .layers
        .iter()
        .map(|l| (l.digest.clone(), l.size))
        .chain(std::iter::once((parsed.config.clone(), config_size)))
    {
        if !blobs.iter().any(|(b, _)| *b == d) {
            blobs.push((d, size));
        }
    }
    let repo = Arc::new(Repo::connect_for(dest, &opts.connect, true).await?);
    progress.set_push_blobs(&blobs);

    let limit = Arc::new(Semaphore::new(opts.max_parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (idx, (digest, size)) in blobs.into_iter().enumerate() {
        let (repo, store, progress, limit) =
            (repo.clone(), store.clone(), progress.clone(), limit.clone());
        let from = opts.mount_from.clone();
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|e| Error::Interrupted(e.to_string()))?;
            push_blob(&repo, &store, idx, &digest, size, &from, &progress).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(|e| Error::Interrupted(e.to_string()))?;
        if let Err(e) = result {
            tasks.abort_all();
            return Err(e);
        }
    }
    let manifest_size = manifest.len();
    repo.push_manifest(manifest, &media_type).await?;
    tracing::info!("pushed {dest}: {manifest_digest}");
    Ok(Pushed {
        digest: manifest_digest.to_string(),
        manifest_size,
    })
}

/// Uploads one blob unless the repository has it or can mount it from one of `from`.
async fn push_blob(
    repo: &Repo,
    store: &ImageStore,
    idx: usize,
    digest: &str,
    size: u64,
    from: &[String],
    progress: &Arc<Progress>,
) -> Result<(), Error> {
    if repo.has_blob(digest).await? {
        progress.set_status(idx, LayerStatus::Exists);
        return Ok(());
    }
    for source in from {
        if repo.mount_blob(digest, source).await {
            progress.set_status(idx, LayerStatus::Mounted);
            return Ok(());
        }
    }
    let path = store.blob_path(digest)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|e| crate::image::Error::io(format!("opening blob {digest}"), e))?;
    let actual = file
        .metadata()
        .await
        .map_err(|e| crate::image::Error::io(format!("blob {digest}"), e))?
        .len();
    if actual != size {
        return Err(Error::Protocol {
            reference: digest.to_string(),
            detail: format!(
                "the stored blob has {actual} bytes, its manifest says {size}: the store is \
                 damaged; pull or load the image again"
            ),
        });
    }
    progress.upload(idx, 0);
    repo.push_blob(file_stream(file, progress.clone(), idx), digest, size)
        .await?;
    progress.set_status(idx, LayerStatus::Pushed);
    Ok(())
}

/// The content of `file` as a stream of chunks, counted into `progress` as sent.
fn file_stream(
    file: tokio::fs::File,
    progress: Arc<Progress>,
    idx: usize,
) -> impl Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static {
    futures_util::stream::unfold(Some(file), move |state| {
        let progress = progress.clone();
        async move {
            let mut file = state?;
            let mut buf = vec![0u8; CHUNK];
            match file.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    progress.upload(idx, n as u64);
                    Some((Ok(bytes::Bytes::from(buf)), Some(file)))
                }
                Err(e) => Some((Err(OciDistributionError::IoError(e)), None)),
            }
        }
    })
}
