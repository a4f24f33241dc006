//! Resolving a reference to an image manifest and downloading its blobs into the store.

use std::collections::HashSet;
use std::io::Write;
use std::sync::Arc;

use futures_util::StreamExt;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use super::client::{ConnectOptions, Repo};
use super::platform::{self, IndexEntry, Platform};
use super::Error;
use crate::image::progress::{LayerStatus, Progress};
use crate::image::{ImageStore, Reference};

/// Layer media types we can extract.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
    "application/vnd.docker.image.rootfs.diff.tar",
];

const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How many times a blob download is tried when the transport fails midway.
const ATTEMPTS: usize = 3;

/// What to pull and how.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Transport and credentials.
    pub connect: ConnectOptions,
    /// The platform to pick from manifest lists.
    pub platform: Platform,
    /// Whether the user chose the platform (`--platform`): a single-platform image for
    /// another one is then refused; otherwise it is taken with a warning, as docker does.
    pub platform_explicit: bool,
    /// Most blobs downloaded at once.
    pub max_parallel: usize,
}

/// The result of [`pull`]: every blob of the image is in the store.
#[derive(Debug)]
pub struct Pulled {
    /// `sha256:...` of the image manifest (the platform's one, for an index).
    pub manifest_digest: String,
    /// `sha256:...` of the index or list the manifest was picked from, if any.
    pub index_digest: Option<String>,
    /// Whether the registry was reached over plain HTTP.
    pub plain_http: bool,
    /// The image's blobs, pinned: keep this until the image is recorded.
    pub pins: crate::image::pins::PinGuard,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Probe {
    #[serde(default)]
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<IndexEntry>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    #[serde(default)]
    media_type: String,
    digest: String,
    size: u64,
    #[serde(default)]
    urls: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
struct Manifest {
    config: Descriptor,
    #[serde(default)]
    layers: Vec<Descriptor>,
}

/// Pulls `reference` into `store`: manifest, config and layer blobs (not extracted:
/// the caller commits the image). Blobs already in the store are not downloaded.
pub async fn pull(
    store: &ImageStore,
    reference: &Reference,
    opts: &PullOptions,
    progress: &Arc<Progress>,
) -> Result<Pulled, Error> {
    let protocol = |detail: String| Error::Protocol {
        reference: reference.to_string(),
        detail,
    };
    let repo = Arc::new(Repo::connect(reference, &opts.connect).await?);
    let want = match (reference.digest(), reference.tag()) {
        (Some(d), _) => d.to_string(),
        (None, Some(t)) => t.to_string(),
        (None, None) => crate::image::reference::DEFAULT_TAG.to_string(),
    };
    let (mut bytes, mut digest) = repo.manifest(&want).await?;
    let mut index_digest = None;
    let mut index_blob = None;
    let probe: Probe = serde_json::from_slice(&bytes)
        .map_err(|e| protocol(format!("the manifest is not valid JSON: {e}")))?;
    check_schema(&probe).map_err(&protocol)?;
    if let Some(entries) = probe.manifests.as_ref().filter(|_| is_index(&probe)) {
        let entry = platform::select(entries, &opts.platform).ok_or_else(|| Error::NoPlatform {
            reference: reference.to_string(),
            wanted: opts.platform.to_string(),
            available: platform::available(entries),
        })?;
        tracing::debug!("{reference}: {} picked from index {digest}", entry.digest);
        index_digest = Some(digest.clone());
        if reference.digest().is_some() {
            index_blob = Some(bytes);
        }
        (bytes, digest) = repo.manifest(&entry.digest).await?;
        let child: Probe = serde_json::from_slice(&bytes)
            .map_err(|e| protocol(format!("the platform manifest is not valid JSON: {e}")))?;
        check_schema(&child).map_err(&protocol)?;
        if is_index(&child) {
            return Err(protocol("nested image indexes are not supported".into()));
        }
    }
    let manifest: Manifest = serde_json::from_slice(&bytes)
        .map_err(|e| protocol(format!("not a valid image manifest: {e}")))?;
    check_manifest(&manifest).map_err(&protocol)?;

    // Pinned before the presence checks, until the caller recorded the image (or
    // gave up): a concurrent rmi keeps them rather than waiting for the download.
    let mut pins = store.pin(
        std::iter::once(&manifest.config)
            .chain(&manifest.layers)
            .map(|d| d.digest.clone()),
    );
    pins.add(&digest);
    if let Some(d) = &index_digest {
        pins.add(d);
    }
    let mut blobs: Vec<(String, u64, bool)> = Vec::new();
    let mut seen = HashSet::new();
    for d in std::iter::once(&manifest.config).chain(&manifest.layers) {
        if seen.insert(d.digest.clone()) {
            blobs.push((d.digest.clone(), d.size, store.has_blob(&d.digest)));
        }
    }
    progress.set_blobs(&blobs);

    // The config first (it is small): its platform must be the one asked for before
    // any layer is worth downloading.
    let config_fetched = !blobs[0].2;
    if config_fetched {
        fetch_blob(&repo, store, 0, &blobs[0].0, blobs[0].1, progress).await?;
    }
    if index_digest.is_none() {
        check_config_platform(store, reference, &manifest.config.digest, opts, progress).await?;
    }

    let limit = Arc::new(Semaphore::new(opts.max_parallel.max(1)));
    let mut tasks = JoinSet::new();
    for (idx, (digest, size, present)) in blobs.iter().cloned().enumerate() {
        if present || (idx == 0 && config_fetched) {
            continue;
        }
        let (repo, store, progress, limit) =
            (repo.clone(), store.clone(), progress.clone(), limit.clone());
        tasks.spawn(async move {
            let _permit = limit
                .acquire_owned()
                .await
                .map_err(|e| Error::Interrupted(e.to_string()))?;
            fetch_blob(&repo, &store, idx, &digest, size, &progress).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        let result = joined.map_err(|e| Error::Interrupted(e.to_string()))?;
        if let Err(e) = result {
            tasks.abort_all();
            return Err(e);
        }
    }

    // The manifest last: only a complete set of blobs is worth committing. For a pull
    // by index digest the index too: the commit checks that the digest names the image.
    if !store.has_blob(&digest) || index_blob.is_some() {
        let store2 = store.clone();
        let digest2 = digest.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            if let Some(index) = index_blob {
                store2.mark_resumable(&format!("sha256:{}", crate::image::sha256_hex(&index)))?;
                store2.write_blob(&index)?;
            }
            if store2.has_blob(&digest2) {
                return Ok(());
            }
            store2.mark_resumable(&digest2)?;
            let mut w = store2.blob_writer()?;
            w.write_all(&bytes)
                .map_err(|e| crate::image::Error::io("writing the manifest blob", e))?;
            w.commit(&digest2)?;
            Ok(())
        })
        .await
        .map_err(|e| Error::Interrupted(e.to_string()))??;
    }
    Ok(Pulled {
        manifest_digest: digest,
        index_digest,
        plain_http: repo.plain_http(),
        pins,
    })
}

/// The platform an image config declares.
#[derive(Debug, Deserialize)]
struct ConfigPlatform {
    #[serde(default)]
    os: String,
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

/// Checks the platform of a single-platform image (no index to choose from) against
/// the one wanted: refused when the user chose it, a warning otherwise.
async fn check_config_platform(
    store: &ImageStore,
    reference: &Reference,
    config_digest: &str,
    opts: &PullOptions,
    progress: &Progress,
) -> Result<(), Error> {
    let store2 = store.clone();
    let digest = config_digest.to_string();
    let bytes = tokio::task::spawn_blocking(move || store2.read_blob(&digest))
        .await
        .map_err(|e| Error::Interrupted(e.to_string()))??;
    let cfg: ConfigPlatform = serde_json::from_slice(&bytes).map_err(|e| Error::Protocol {
        reference: reference.to_string(),
        detail: format!("the image config is not valid JSON: {e}"),
    })?;
    if cfg.os.is_empty() || cfg.architecture.is_empty() {
        return Ok(());
    }
    let want = &opts.platform;
    let variant_differs = matches!((&want.variant, &cfg.variant), (Some(a), Some(b)) if a != b);
    if cfg.os == want.os && cfg.architecture == want.arch && !variant_differs {
        return Ok(());
    }
    let mut actual = format!("{}/{}", cfg.os, cfg.architecture);
    if let Some(v) = &cfg.variant {
        actual.push('/');
        actual.push_str(v);
    }
    if opts.platform_explicit {
        return Err(Error::PlatformMismatch {
            reference: reference.to_string(),
            wanted: want.to_string(),
            actual,
        });
    }
    tracing::warn!("{reference}: the image is for {actual}, not {want}");
    progress.warn(format!(
        "the image's platform ({actual}) does not match this host's ({want}): it may not run"
    ));
    Ok(())
}

fn is_index(p: &Probe) -> bool {
    match &p.media_type {
        Some(t) => INDEX_TYPES.contains(&t.as_str()),
        None => p.manifests.is_some(),
    }
}

fn check_schema(p: &Probe) -> Result<(), String> {
    match p.schema_version {
        Some(2) => Ok(()),
        Some(1) => Err(
            "the registry serves a Docker schema 1 manifest, which is obsolete and not \
             supported; push the image again with a current tool"
                .into(),
        ),
        Some(v) => Err(format!("unsupported manifest schemaVersion {v}")),
        None => Err("the manifest has no schemaVersion".into()),
    }
}

fn check_manifest(m: &Manifest) -> Result<(), String> {
    let digest_ok = |d: &str| {
        d.strip_prefix("sha256:")
            .is_some_and(crate::image::is_sha256_hex)
    };
    for d in std::iter::once(&m.config).chain(&m.layers) {
        if !digest_ok(&d.digest) {
            return Err(format!(
                "blob digest {:?} is not sha256:<64 hex digits>",
                d.digest
            ));
        }
    }
    for l in &m.layers {
        if l.urls.as_ref().is_some_and(|u| !u.is_empty()) || l.media_type.contains("foreign") {
            return Err(format!(
                "layer {} is a foreign (non-distributable) layer, which is not supported",
                l.digest
            ));
        }
        if !LAYER_TYPES.contains(&l.media_type.as_str()) {
            return Err(format!(
                "layer {} has the media type {:?}, which is not a supported layer type",
                l.digest, l.media_type
            ));
        }
    }
    if m.layers.is_empty() {
        return Err("the image manifest has no layers".into());
    }
    Ok(())
}

/// Downloads one blob through a store [`crate::image::store::BlobWriter`], retrying
/// when the transport fails midway.
async fn fetch_blob(
    repo: &Repo,
    store: &ImageStore,
    idx: usize,
    digest: &str,
    size: u64,
    progress: &Progress,
) -> Result<(), Error> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        progress.reset(idx);
        match fetch_once(repo, store, idx, digest, size, progress).await {
            Ok(()) => {
                progress.set_status(idx, LayerStatus::Done);
                return Ok(());
            }
            Err(e @ (Error::Unreachable { .. } | Error::Interrupted(_))) if attempt < ATTEMPTS => {
                tracing::warn!("blob {digest}: {e}; retrying");
            }
            Err(e) => return Err(e),
        }
    }
}

async fn fetch_once(
    repo: &Repo,
    store: &ImageStore,
    idx: usize,
    digest: &str,
    size: u64,
    progress: &Progress,
) -> Result<(), Error> {
    let mut stream = repo.blob(digest).await?;
    let mut writer = {
        let store = store.clone();
        tokio::task::spawn_blocking(move || store.blob_writer())
            .await
            .map_err(|e| Error::Interrupted(e.to_string()))??
    };
    // Disk writes run on the blocking pool, fed through a small channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(16);
    let sink = tokio::task::spawn_blocking(move || -> Result<_, std::io::Error> {
        while let Some(chunk) = rx.blocking_recv() {
            writer.write_all(&chunk)?;
        }
        Ok(writer)
    });
    let mut received: u64 = 0;
    let mut failure = None;
    while let Some(item) = stream.next().await {
        match item {
            Ok(chunk) => {
                received += chunk.len() as u64;
                if received > size {
                    failure = Some(Error::Protocol {
                        reference: digest.to_string(),
                        detail: format!(
                            "the blob is larger than the {size} bytes its manifest says"
                        ),
                    });
                    break;
                }
                progress.advance(idx, chunk.len() as u64);
                if tx.send(chunk).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(Error::Interrupted(format!(
                    "the download of {digest} broke off after {received} bytes: {e}"
                )));
                break;
            }
        }
    }
    drop(tx);
    let writer = sink
        .await
        .map_err(|e| Error::Interrupted(e.to_string()))?
        .map_err(|e| crate::image::Error::io(format!("writing blob {digest}"), e))?;
    if let Some(e) = failure {
        return Err(e);
    }
    let digest2 = digest.to_string();
    let store2 = store.clone();
    tokio::task::spawn_blocking(move || {
        store2.mark_resumable(&digest2)?;
        writer.commit(&digest2)
    })
    .await
    .map_err(|e| Error::Interrupted(e.to_string()))??;
    Ok(())
}
