//! Pulling images from registries (OCI distribution and Docker registry v2).
//!
//! * [`auth`] finds credentials in podman/docker auth files.
//! * [`platform`] picks our platform's manifest from a manifest list / image index.
//! * [`client`] talks to the registry through the `oci-client` crate: transport choice
//!   (HTTPS with the system roots; plain HTTP only for loopback hosts or with TLS
//!   verification off), authentication, manifests and blob streams, and turns its
//!   errors into ours.
//! * [`pull`] resolves a reference to an image manifest and downloads the manifest, the
//!   config and the layers into the store (in parallel, skipping blobs already there,
//!   every digest verified), reporting [`Progress`].

pub mod auth;
pub mod client;
pub mod login;
pub mod platform;
pub mod pull;
pub mod push;

use std::path::PathBuf;

pub use crate::image::progress::{LayerProgress, Progress};
pub use platform::Platform;
pub use pull::{pull, PullOptions, Pulled};

/// Everything that can go wrong while pulling.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry has no such repository, tag or digest.
    #[error("{reference}: no such image in the registry ({detail}); check the name and tag")]
    NotFound {
        /// The reference asked for.
        reference: String,
        /// What the registry said.
        detail: String,
    },

    /// The registry wants credentials we do not have, or refused the ones we sent.
    #[error("{}", unauthorized_message(.registry, .detail, .authfile.as_ref()))]
    Unauthorized {
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
        /// The auth file the refused credentials came from (None: we sent none).
        authfile: Option<PathBuf>,
    },

    /// `login` with a user name and password the registry refused: nothing was stored.
    #[error(
        "the registry {registry} refused the user name and password ({detail}); nothing \
         was stored: check them and log in again"
    )]
    LoginRefused {
        /// The registry host.
        registry: String,
        /// What the registry said.
        detail: String,
    },

    /// A registry name (login, logout) that is not `HOST[:PORT]`.
    #[error("invalid registry {registry:?}: {reason}")]
    InvalidRegistry {
        /// As given.
        registry: String,
        /// What is wrong.
        reason: String,
    },

    /// The registry cannot be reached (DNS, connection refused, timeout).
    #[error("cannot reach the registry {registry}: {detail}")]
    Unreachable {
        /// The registry host.
        registry: String,
        /// The transport error.
        detail: String,
    },

    /// The TLS handshake failed (untrusted certificate, not a TLS server).
    #[error(
        "TLS with the registry {registry} failed: {detail}; if you trust this registry and it \
         uses a self-signed certificate or plain HTTP, {}",
        op.tls_hint()
    )]
    Tls {
        /// The registry host.
        registry: String,
        /// The TLS error.
        detail: String,
        /// What we were doing (the hint names its flag).
        op: Op,
    },

    /// A manifest list / image index without our platform.
    #[error(
        "{reference} has no image for the platform {wanted} (it has: {}); choose one with \
         --platform",
        if available.is_empty() { "none".to_string() } else { available.join(", ") }
    )]
    NoPlatform {
        /// The reference asked for.
        reference: String,
        /// The platform we looked for.
        wanted: String,
        /// The platforms the index offers.
        available: Vec<String>,
    },

    /// A single-platform image (no index) for another platform than the one asked for.
    #[error(
        "{reference} has no image for the platform {wanted}: the registry has only an image \
         for {actual}; pull it without --platform, or choose --platform {actual}"
    )]
    PlatformMismatch {
        /// The reference asked for.
        reference: String,
        /// The platform asked for.
        wanted: String,
        /// The platform of the image the registry has.
        actual: String,
    },

    /// `--platform` is malformed.
    #[error("invalid platform {platform:?}: {reason}")]
    InvalidPlatform {
        /// As given.
        platform: String,
        /// What is wrong.
        reason: String,
    },

    /// Content does not match its digest (manifest by digest, blob).
    #[error("{what} has digest {actual}, expected {expected}: the registry sent wrong content")]
    DigestMismatch {
        /// What was checked.
        what: String,
        /// The digest we expected.
        expected: String,
        /// The digest of what we got.
        actual: String,
    },

    /// The registry sent something we cannot use (bad manifest, unknown media type,
    /// protocol error).
    #[error("{reference}: {detail}")]
    Protocol {
        /// The reference being pulled.
        reference: String,
        /// What is wrong.
        detail: String,
    },

    /// An auth file is unreadable or malformed.
    #[error("auth file {path:?}: {reason}")]
    AuthFile {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },

    /// Writing into the image store failed.
    #[error(transparent)]
    Store(#[from] crate::image::Error),

    /// The pull was interrupted (a worker vanished).
    #[error("the pull was interrupted: {0}")]
    Interrupted(String),
}

/// What a registry connection is for: error hints name the command to retry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `pull` (and the pulls of `run`, `create`, `build`).
    Pull,
    /// `push`.
    Push,
    /// `login`.
    Login,
}

impl Op {
    /// How to go without TLS verification for this operation.
    fn tls_hint(self) -> &'static str {
        match self {
            Op::Pull => {
                "pull with --tls-verify=false, or list it in insecure-registries in \
                 skiffd.toml"
            }
            Op::Push => {
                "push with --tls-verify=false, or list it in insecure-registries in \
                 skiffd.toml"
            }
            Op::Login => "log in with --tls-verify=false",
        }
    }
}

fn unauthorized_message(registry: &str, detail: &str, authfile: Option<&PathBuf>) -> String {
    match authfile {
        Some(f) => format!(
            "the registry {registry} refused the credentials from {} ({detail}); log in \
             again with: skiff login --authfile {} {registry}",
            f.display(),
            f.display()
        ),
        None => format!(
            "the registry {registry} requires authentication ({detail}); log in with: \
             skiff login {registry} (skiff reads $REGISTRY_AUTH_FILE, \
             $XDG_RUNTIME_DIR/containers/auth.json, ~/.config/containers/auth.json and \
             ~/.docker/config.json, the files podman login and docker login write), or \
             pass --authfile FILE"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_say_how_to_fix() {
        let e = Error::Unauthorized {
            registry: "r:5000".into(),
            detail: "401".into(),
            authfile: None,
        };
        assert!(e.to_string().contains("skiff login r:5000"), "{e}");
        let e = Error::Unauthorized {
            registry: "r:5000".into(),
            detail: "401".into(),
            authfile: Some("/a/auth.json".into()),
        };
        assert!(
            e.to_string().contains("--authfile /a/auth.json r:5000"),
            "{e}"
        );
        let e = Error::NoPlatform {
            reference: "x".into(),
            wanted: "linux/amd64".into(),
            available: vec!["linux/arm64".into()],
        };
        assert!(e.to_string().contains("it has: linux/arm64"), "{e}");
        for (op, hint) in [
            (Op::Pull, "pull with --tls-verify=false"),
            (Op::Push, "push with --tls-verify=false"),
            (Op::Login, "log in with --tls-verify=false"),
        ] {
            let e = Error::Tls {
                registry: "r".into(),
                detail: "bad cert".into(),
                op,
            };
            assert!(e.to_string().contains(hint), "{e}");
        }
    }
}
