//! Pushing an image of the store to a registry ([`crate::image::registry::push`]).

use std::path::PathBuf;
use std::sync::Arc;

use super::events::Event;
use super::{Daemon, Error};
use crate::image::registry::{self, auth, client::ConnectOptions, push::PushOptions, Progress};
use crate::image::{ImageRecord, Reference};

/// Most blobs uploaded at once.
const MAX_PARALLEL_UPLOADS: usize = 3;

/// A push request as the API layer passes it.
#[derive(Debug, Clone)]
pub struct PushRequest {
    /// The local image: name, id or id prefix.
    pub image: String,
    /// Where to push it (`HOST[:PORT]/REPO[:TAG]`); empty: the image's own name.
    pub destination: String,
    /// Verify TLS certificates (and refuse plain HTTP to non-loopback registries).
    pub tls_verify: bool,
    /// The auth file to read instead of the default ones.
    pub auth_file: Option<PathBuf>,
}

impl PushRequest {
    /// A push of `image` to `destination` with the defaults.
    pub fn new(image: &str, destination: &str) -> PushRequest {
        PushRequest {
            image: image.to_string(),
            destination: destination.to_string(),
            tls_verify: true,
            auth_file: None,
        }
    }
}

/// What a push did.
#[derive(Debug, Clone)]
pub struct PushOutcome {
    /// The image pushed.
    pub image: ImageRecord,
    /// The normalised destination.
    pub destination: String,
    /// `sha256:...` of the manifest pushed.
    pub digest: String,
}

impl Daemon {
    /// Pushes `req.image` to `req.destination`, reporting into `progress`; emits an
    /// `image push` event.
    pub async fn push_image(
        &self,
        req: &PushRequest,
        progress: Arc<Progress>,
    ) -> Result<PushOutcome, Error> {
        let image = self.inner.images.resolve(&req.image)?;
        if req.destination.is_empty()
            && image.id.starts_with(req.image.as_str())
            && !image
                .repo_tags
                .iter()
                .any(|t| t.contains(req.image.as_str()))
        {
            return Err(Error::InvalidArgument(format!(
                "{} is an image id: name the destination: skiff push {} \
                 HOST[:PORT]/REPO[:TAG]",
                req.image, req.image
            )));
        }
        let dest_text = if req.destination.is_empty() {
            &req.image
        } else {
            &req.destination
        };
        let dest: Reference = dest_text.parse().map_err(|e| {
            if req.destination.is_empty() {
                Error::InvalidArgument(format!(
                    "{:?} is not a name to push to ({e}); name the destination: skiff push \
                     IMAGE HOST[:PORT]/REPO[:TAG]",
                    req.image
                ))
            } else {
                Error::from(e)
            }
        })?;
        if dest.digest().is_some() {
            return Err(Error::InvalidArgument(format!(
                "cannot push to {dest}: a push names a tag, not a digest"
            )));
        }
        let dest = match dest.tag() {
            Some(_) => dest,
            None => dest.with_tag(crate::image::reference::DEFAULT_TAG)?,
        };
        let manifest = image.manifest.clone().ok_or_else(|| {
            Error::InvalidArgument(format!(
                "image {} has no manifest (it was imported by an older skiff): import or \
                 pull it again to push it",
                &image.id[..12.min(image.id.len())]
            ))
        })?;
        if let Some(f) = &req.auth_file {
            if !f.is_absolute() {
                return Err(Error::InvalidArgument(format!(
                    "the auth file {f:?} must be an absolute path"
                )));
            }
        }
        // Other names of the image on the destination's registry: blobs to mount.
        let mut mount_from: Vec<String> = Vec::new();
        for name in image.repo_tags.iter().chain(&image.repo_digests) {
            if let Ok(r) = name.parse::<Reference>() {
                if r.domain() == dest.domain()
                    && r.path() != dest.path()
                    && !mount_from.iter().any(|p| p == r.path())
                {
                    mount_from.push(r.path().to_string());
                }
            }
        }
        let opts = PushOptions {
            connect: ConnectOptions {
                // skiffd's insecure-registries: as --tls-verify=false for those (as pull).
                tls_verify: req.tls_verify && !self.settings().is_insecure(dest.domain()),
                auth_file: req.auth_file.clone(),
                default_auth_files: auth::default_auth_files(),
            },
            max_parallel: MAX_PARALLEL_UPLOADS,
            mount_from,
        };
        // The blobs stay while they are read: an rmi meanwhile keeps them.
        let _pins = self.inner.images.pin(
            std::iter::once(manifest.clone())
                .chain(image.layer_blobs.iter().cloned())
                .chain(std::iter::once(format!("sha256:{}", image.id))),
        );
        tracing::info!("pushing {} to {dest}", image.id);
        let pushed = registry::push::push(&self.inner.images, &manifest, &dest, &opts, &progress)
            .await
            .map_err(|e| match e {
                // The local store's own errors (a missing blob) stay what they are.
                registry::Error::Store(e) => Error::Image(e),
                e => Error::Push(e),
            })?;
        // The registry now has the image as `repository@digest`: docker and podman list
        // that in RepoDigests.
        let image = {
            let store = self.inner.images.clone();
            let (id, digest, dest) = (image.id.clone(), pushed.digest.clone(), dest.clone());
            match tokio::task::spawn_blocking(move || store.add_repo_digest(&id, &dest, &digest))
                .await
            {
                Ok(Ok(updated)) => updated,
                Ok(Err(e)) => {
                    tracing::warn!("recording the pushed digest of {}: {e}", image.id);
                    image
                }
                Err(e) => {
                    tracing::warn!("recording the pushed digest of {}: {e}", image.id);
                    image
                }
            }
        };
        progress.set_phase(crate::image::progress::Phase::Done);
        self.emit(Event::new(
            "image",
            "push",
            &image.id,
            &[("name", dest.to_string())],
        ));
        Ok(PushOutcome {
            image,
            destination: dest.to_string(),
            digest: pushed.digest,
        })
    }
}
