//! Pulling an image from a registry: download the blobs into the store
//! ([`crate::image::registry`]), then commit the image (extract the layers, record the
//! image and its name).

use std::path::PathBuf;
use std::sync::Arc;

use super::{Daemon, Error};
use crate::image::registry::{self, auth, client::ConnectOptions, Platform, Progress, PullOptions};
use crate::image::{ImageRecord, Reference};

/// Most blobs downloaded at once (podman's default is 6; 3 keeps a laptop responsive
/// and is enough to fill a link for typical layer sizes).
const MAX_PARALLEL_DOWNLOADS: usize = 3;

/// A pull request as the API layer passes it.
#[derive(Debug, Clone)]
pub struct PullRequest {
    /// The image reference as the user wrote it.
    pub reference: String,
    /// Verify TLS certificates (and refuse plain HTTP to non-loopback registries).
    pub tls_verify: bool,
    /// The auth file to read instead of the default ones.
    pub auth_file: Option<PathBuf>,
    /// `os/arch[/variant]` to pick from manifest lists; default: the host's.
    pub platform: Option<String>,
}

impl PullRequest {
    /// A pull of `reference` with the defaults (TLS verified, default auth files, our
    /// platform).
    pub fn new(reference: &str) -> PullRequest {
        PullRequest {
            reference: reference.to_string(),
            tls_verify: true,
            auth_file: None,
            platform: None,
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone)]
pub struct PullOutcome {
    /// The image now in the store.
    pub image: ImageRecord,
    /// The normalised reference pulled.
    pub reference: String,
    /// `sha256:...` of the image manifest.
    pub manifest_digest: String,
    /// Blobs downloaded.
    pub fetched: usize,
    /// Blobs skipped because the store had them.
    pub skipped: usize,
    /// Bytes downloaded.
    pub bytes: u64,
}

impl Daemon {
    /// Pulls `req.reference`, reporting into `progress`, and records the image under the
    /// normalised reference ([`Daemon::commit_image`] emits the `image pull` event).
    pub async fn pull_image(
        &self,
        req: &PullRequest,
        progress: Arc<Progress>,
    ) -> Result<PullOutcome, Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let reference: Reference = req.reference.parse()?;
        let platform = match &req.platform {
            Some(p) if !p.is_empty() => Platform::parse(p)?,
            _ => Platform::host(),
        };
        if let Some(f) = &req.auth_file {
            if !f.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "the auth file {f:?} must be an absolute path"
                )));
            }
        }
        let settings = self.settings();
        let opts = |from: &Reference| PullOptions {
            connect: ConnectOptions {
                // skiffd's insecure-registries: as --tls-verify=false for those.
                tls_verify: req.tls_verify && !settings.is_insecure(from.domain()),
                auth_file: req.auth_file.clone(),
                default_auth_files: auth::default_auth_files(),
            },
            platform: platform.clone(),
            platform_explicit: req.platform.as_deref().is_some_and(|p| !p.is_empty()),
            max_parallel: MAX_PARALLEL_DOWNLOADS,
        };
        tracing::info!("pulling {reference}");
        // skiffd's registry-mirrors (docker.io's), in order, then docker.io itself.
        let mut pulled = None;
        for mirror in mirrors_of(&reference, &settings.registry_mirrors) {
            match registry::pull(&self.inner.images, &mirror, &opts(&mirror), &progress).await {
                Ok(p) => {
                    tracing::info!("pulled {reference} from the mirror {}", mirror.domain());
                    pulled = Some(p);
                    break;
                }
                Err(e) => tracing::warn!(
                    "mirror {} of {}: {e}; trying the next",
                    mirror.domain(),
                    reference.domain()
                ),
            }
        }
        // The pull pins the image's blobs before it looks for them in the store, and
        // they stay pinned (`pulled.pins`) until the image is recorded: an rmi meanwhile
        // does not free them, and does not wait for the download either.
        let pulled = match pulled {
            Some(p) => p,
            None => {
                registry::pull(&self.inner.images, &reference, &opts(&reference), &progress).await?
            }
        };
        let image = self
            .commit_image(
                &pulled.manifest_digest,
                std::slice::from_ref(&reference),
                &progress,
            )
            .await?;
        let totals = progress.totals();
        tracing::info!(
            "pulled {reference} ({}): image {}, {} blobs fetched ({} bytes), {} already present",
            pulled.manifest_digest,
            image.id,
            totals.fetched,
            totals.done,
            totals.skipped
        );
        Ok(PullOutcome {
            image,
            reference: reference.to_string(),
            manifest_digest: pulled.manifest_digest,
            fetched: totals.fetched,
            skipped: totals.skipped,
            bytes: totals.done,
        })
    }
}

/// `reference` on each of `mirrors` (`host[:port]`) when it is on docker.io (the
/// only registry docker's `registry-mirrors` apply to); none otherwise.
fn mirrors_of(reference: &Reference, mirrors: &[String]) -> Vec<Reference> {
    let Some(rest) = reference
        .to_string()
        .strip_prefix(&format!("{}/", crate::image::reference::DEFAULT_DOMAIN))
        .map(str::to_string)
    else {
        return Vec::new();
    };
    mirrors
        .iter()
        .filter_map(|m| match Reference::parse(&format!("{m}/{rest}")) {
            Ok(r) if r.domain() == m => Some(r),
            _ => {
                tracing::warn!("registry mirror {m:?} is not a registry host: skipped");
                None
            }
        })
        .collect()
}
