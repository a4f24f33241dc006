//! The connection to one registry repository, through `oci-client`.
//!
//! Transport: HTTPS verified against the system's roots. Loopback registries
//! (`localhost`, 127.0.0.0/8, `[::1]`) and `--tls-verify=false` may fall back to plain
//! HTTP when the HTTPS attempt fails at the transport level (as docker does for its
//! insecure registries); `--tls-verify=false` also accepts any certificate.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::Once;

use oci_client::client::{ClientConfig, ClientProtocol, SizedStream};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::secrets::RegistryAuth;
use oci_client::RegistryOperation;

use super::auth::{self, Credentials};
use super::{Error, Op};
use crate::image::Reference;

/// Manifest media types we accept.
pub const ACCEPTED_MANIFESTS: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// How to reach a registry and who we are there.
#[derive(Debug, Clone, Default)]
pub struct ConnectOptions {
    /// Verify TLS certificates and refuse plain HTTP to non-loopback hosts.
    pub tls_verify: bool,
    /// `--authfile`: the only auth file to read.
    pub auth_file: Option<PathBuf>,
    /// The auth files searched without `--authfile` ([`auth::default_auth_files`]).
    pub default_auth_files: Vec<PathBuf>,
}

/// An authenticated connection to one repository.
pub struct Repo {
    client: oci_client::Client,
    repo: oci_client::Reference,
    registry: String,
    creds_source: Option<PathBuf>,
    reference: String,
    plain_http: bool,
    /// Pull or push: named by the hints of errors.
    op: Op,
}

impl std::fmt::Debug for Repo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repo")
            .field("registry", &self.registry)
            .field("repo", &self.repo.to_string())
            .field("plain_http", &self.plain_http)
            .finish()
    }
}

/// Whether `domain` (`host[:port]`) is a loopback host.
pub fn is_loopback(domain: &str) -> bool {
    let host = if let Some(rest) = domain.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        domain.split(':').next().unwrap_or_default()
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.octets()[0] == Ipv4Addr::LOCALHOST.octets()[0],
        Ok(IpAddr::V6(a)) => a.is_loopback(),
        Err(_) => false,
    }
}

pub(super) fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Fails only if another provider is installed already, which is just as good.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Repo {
    /// Connects to the registry of `reference` and authenticates for pulling.
    pub async fn connect(reference: &Reference, opts: &ConnectOptions) -> Result<Repo, Error> {
        Repo::connect_for(reference, opts, false).await
    }

    /// Connects to the registry of `reference` and authenticates for pulling, and with
    /// `push` for pushing too (uploads are made as single PUTs of a stream).
    pub async fn connect_for(
        reference: &Reference,
        opts: &ConnectOptions,
        push: bool,
    ) -> Result<Repo, Error> {
        install_crypto_provider();
        let creds = auth::lookup(
            opts.auth_file.as_deref(),
            &opts.default_auth_files,
            reference.domain(),
            reference.path(),
        )?;
        let loopback = is_loopback(reference.domain());
        // (plain HTTP?, accept any certificate?) in the order tried.
        let mut attempts = vec![(false, !opts.tls_verify)];
        if loopback || !opts.tls_verify {
            attempts.push((true, false));
        }
        let mut last = None;
        for (plain_http, insecure) in attempts {
            let mut repo = Repo::new(reference, creds.as_ref(), plain_http, insecure);
            if push {
                repo.op = Op::Push;
            }
            if plain_http
                && matches!(last, Some(Error::Tls { .. }))
                && !answers_plain_http(repo.repo.resolve_registry()).await
            {
                // A TLS-only server: what HTTPS said is the error to report (its hint
                // says how to trust the registry); plain HTTP would only get 400s.
                break;
            }
            match repo.authenticate(creds.as_ref(), push).await {
                Ok(()) => {
                    tracing::debug!(
                        "registry {}: {}",
                        repo.registry,
                        if plain_http { "plain HTTP" } else { "HTTPS" }
                    );
                    return Ok(repo);
                }
                Err(e @ (Error::Tls { .. } | Error::Unreachable { .. })) => {
                    tracing::debug!("registry {}: {e}", repo.registry);
                    last = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| Error::Unreachable {
            registry: reference.domain().to_string(),
            detail: "no transport to try".into(),
        }))
    }

    fn new(
        reference: &Reference,
        creds: Option<&Credentials>,
        plain_http: bool,
        insecure: bool,
    ) -> Repo {
        let config = ClientConfig {
            protocol: if plain_http {
                ClientProtocol::Http
            } else {
                ClientProtocol::Https
            },
            accept_invalid_certificates: insecure,
            platform_resolver: None,
            connect_timeout: Some(std::time::Duration::from_secs(30)),
            read_timeout: Some(std::time::Duration::from_secs(120)),
            user_agent: concat!("skiff/", env!("CARGO_PKG_VERSION")),
            use_monolithic_push: true,
            ..ClientConfig::default()
        };
        let repo = oci_client::Reference::with_tag(
            reference.domain().to_string(),
            reference.path().to_string(),
            reference
                .tag()
                .unwrap_or(crate::image::reference::DEFAULT_TAG)
                .to_string(),
        );
        Repo {
            client: oci_client::Client::new(config),
            registry: reference.domain().to_string(),
            repo,
            creds_source: creds.map(|c| c.source.clone()),
            reference: reference.to_string(),
            plain_http,
            op: Op::Pull,
        }
    }

    async fn authenticate(&self, creds: Option<&Credentials>, push: bool) -> Result<(), Error> {
        let auth = match creds {
            Some(c) => RegistryAuth::Basic(c.username.clone(), c.password.clone()),
            None => RegistryAuth::Anonymous,
        };
        self.client
            .auth(&self.repo, &auth, RegistryOperation::Pull)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))?;
        if push {
            self.client
                .auth(&self.repo, &auth, RegistryOperation::Push)
                .await
                .map(|_| ())
                .map_err(|e| self.error(e))?;
        }
        Ok(())
    }

    /// Whether the repository has the blob `digest` (a HEAD request).
    pub async fn has_blob(&self, digest: &str) -> Result<bool, Error> {
        self.client
            .blob_exists(&self.repo, digest)
            .await
            .map_err(|e| self.error(e))
    }

    /// Mounts the blob `digest` from the repository `from` (a path on the same
    /// registry) instead of uploading it; false when the registry would not (no such
    /// blob there, no access to it).
    pub async fn mount_blob(&self, digest: &str, from: &str) -> bool {
        let source = oci_client::Reference::with_tag(
            self.repo.registry().to_string(),
            from.to_string(),
            crate::image::reference::DEFAULT_TAG.to_string(),
        );
        match self.client.mount_blob(&self.repo, &source, digest).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("mounting {digest} from {from}: {e}");
                false
            }
        }
    }

    /// Uploads the blob `digest` of `size` bytes from `stream` in one PUT.
    pub async fn push_blob<S>(&self, stream: S, digest: &str, size: u64) -> Result<(), Error>
    where
        S: futures_util::Stream<Item = Result<bytes::Bytes, OciDistributionError>> + Send + 'static,
    {
        self.client
            .push_blob_stream(&self.repo, stream, digest, Some(size))
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Uploads a manifest under the connection's tag.
    pub async fn push_manifest(&self, bytes: Vec<u8>, media_type: &str) -> Result<(), Error> {
        let content_type = media_type.parse().map_err(|_| Error::Protocol {
            reference: self.reference.clone(),
            detail: format!("the manifest media type {media_type:?} is not a header value"),
        })?;
        self.client
            .push_manifest_raw(&self.repo, bytes, content_type)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    /// Whether the connection fell back to plain HTTP.
    pub fn plain_http(&self) -> bool {
        self.plain_http
    }

    /// The manifest (or index) named by `tag_or_digest` (a tag, or `sha256:...`): its
    /// bytes and their digest (verified against a requested digest).
    pub async fn manifest(&self, tag_or_digest: &str) -> Result<(Vec<u8>, String), Error> {
        let r = if tag_or_digest.starts_with("sha256:") {
            oci_client::Reference::with_digest(
                self.repo.registry().to_string(),
                self.repo.repository().to_string(),
                tag_or_digest.to_string(),
            )
        } else {
            oci_client::Reference::with_tag(
                self.repo.registry().to_string(),
                self.repo.repository().to_string(),
                tag_or_digest.to_string(),
            )
        };
        let (bytes, _) = self
            .client
            .pull_manifest_raw(&r, &RegistryAuth::Anonymous, ACCEPTED_MANIFESTS)
            .await
            .map_err(|e| self.error(e))?;
        let digest = format!("sha256:{}", crate::image::sha256_hex(&bytes));
        if tag_or_digest.starts_with("sha256:") && digest != tag_or_digest {
            return Err(Error::DigestMismatch {
                what: format!("the manifest of {}", self.reference),
                expected: tag_or_digest.to_string(),
                actual: digest,
            });
        }
        Ok((bytes.to_vec(), digest))
    }

    /// A stream of the blob `digest`.
    pub async fn blob(&self, digest: &str) -> Result<SizedStream, Error> {
        self.client
            .pull_blob_stream(&self.repo, digest)
            .await
            .map_err(|e| self.error(e))
    }

    /// Our error for an `oci-client` error.
    pub fn error(&self, e: OciDistributionError) -> Error {
        let registry = self.registry.clone();
        let unauthorized = |detail: String| Error::Unauthorized {
            registry: registry.clone(),
            detail,
            authfile: self.creds_source.clone(),
        };
        let not_found = |detail: String| Error::NotFound {
            reference: self.reference.clone(),
            detail,
        };
        let protocol = |detail: String| Error::Protocol {
            reference: self.reference.clone(),
            detail,
        };
        match e {
            OciDistributionError::RequestError(re)
                if matches!(re.status().map(|s| s.as_u16()), Some(401 | 403)) =>
            {
                unauthorized(re.to_string())
            }
            OciDistributionError::RequestError(re) => transport_error(&registry, self.op, &re),
            OciDistributionError::AuthenticationFailure(m) => {
                unauthorized(format!("the token service said: {}", m.trim()))
            }
            OciDistributionError::UnauthorizedError { url } => {
                unauthorized(format!("401 Unauthorized for {url}"))
            }
            OciDistributionError::ImageManifestNotFoundError(m) => not_found(m),
            OciDistributionError::RegistryError { envelope, .. } => {
                let text = envelope
                    .errors
                    .iter()
                    .map(|e| e.message.clone())
                    .collect::<Vec<_>>()
                    .join("; ");
                let code = envelope.errors.first().map(|e| &e.code);
                match code {
                    Some(
                        OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::NotFound
                        | OciErrorCode::BlobUnknown,
                    ) => not_found(text),
                    Some(OciErrorCode::Unauthorized | OciErrorCode::Denied) => unauthorized(text),
                    _ => protocol(format!("the registry said: {text}")),
                }
            }
            OciDistributionError::ServerError { code, message, url } => match code {
                404 => not_found(format!("404 for {url}")),
                401 | 403 => unauthorized(format!("{code} for {url}: {}", message.trim())),
                _ => protocol(format!("HTTP {code} for {url}: {}", message.trim())),
            },
            other => protocol(other.to_string()),
        }
    }
}

/// Whether `host` (`host[:port]`) serves the registry API over plain HTTP: its `/v2/`
/// answers 200 or 401. A TLS-only server answers 400 ("HTTP request to an HTTPS server"),
/// which oci-client's authentication would take for a registry without credentials.
async fn answers_plain_http(host: &str) -> bool {
    let Ok(client) = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(30))
        .timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
        .build()
    else {
        return false;
    };
    match client.get(format!("http://{host}/v2/")).send().await {
        Ok(r) => matches!(r.status().as_u16(), 200 | 401),
        Err(e) => {
            tracing::debug!("plain HTTP to {host}: {e}");
            false
        }
    }
}

/// A reqwest failure as unreachable or TLS trouble.
pub(super) fn transport_error(
    registry: &str,
    op: Op,
    e: &(dyn std::error::Error + 'static),
) -> Error {
    let mut chain = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        chain.push_str(": ");
        chain.push_str(&s.to_string());
        src = s.source();
    }
    let lower = chain.to_ascii_lowercase();
    let tls = [
        "certificate",
        "tls",
        "handshake",
        "invalidcontenttype",
        "corrupt message",
        "peer misbehaved",
    ]
    .iter()
    .any(|w| lower.contains(w));
    if tls {
        Error::Tls {
            registry: registry.to_string(),
            detail: chain,
            op,
        }
    } else {
        Error::Unreachable {
            registry: registry.to_string(),
            detail: chain,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:5000",
            "127.0.0.1",
            "127.1.2.3:80",
            "[::1]:5000",
            "[::1]",
        ] {
            assert!(is_loopback(h), "{h}");
        }
        for h in [
            "docker.io",
            "128.0.0.1:5000",
            "10.0.0.1",
            "[::2]:5000",
            "localhost.example.com",
        ] {
            assert!(!is_loopback(h), "{h}");
        }
    }
}
