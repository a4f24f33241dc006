//! `login` and `logout`: checking credentials against a registry as docker does, and
//! keeping them in an auth file of the podman/docker `auths` format (the one
//! [`super::auth`] reads for pulls and pushes).
//!
//! The check: `GET /v2/` without credentials. A registry that answers 200 needs none.
//! A `Basic` challenge is answered by `GET /v2/` with the credentials; a `Bearer`
//! challenge by asking its token service (`realm?service=..&account=USER`) with them.
//!
//! The auth file is rewritten atomically (a temporary file in the same directory, mode
//! 0600, then renamed over it), keeping every other entry and key.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;

use super::client::is_loopback;
use super::Error;

/// The registry a login or logout names: `host[:port]` from `host`, `host/path` or a
/// URL; `docker.io` for docker's hub aliases.
pub fn registry_key(arg: &str) -> Result<String, Error> {
    let rest = arg
        .strip_prefix("https://")
        .or_else(|| arg.strip_prefix("http://"))
        .unwrap_or(arg);
    let host = rest.split('/').next().unwrap_or_default();
    let bad = |reason: &str| Error::InvalidRegistry {
        registry: arg.to_string(),
        reason: reason.to_string(),
    };
    if host.is_empty() {
        return Err(bad(
            "it names no host; write HOST[:PORT], e.g. 127.0.0.1:5000",
        ));
    }
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(&b))
    {
        return Err(bad(
            "a registry is HOST[:PORT], e.g. registry.example.com:5000",
        ));
    }
    Ok(match host {
        "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com" => {
            "docker.io".to_string()
        }
        h => h.to_ascii_lowercase(),
    })
}

/// A `WWW-Authenticate` challenge.
#[derive(Debug, PartialEq, Eq)]
enum Challenge {
    Basic,
    Bearer {
        realm: String,
        service: Option<String>,
    },
}

/// Parses `Basic realm="x"` or `Bearer realm="x",service="y",scope="z"`.
fn parse_challenge(header: &str) -> Option<Challenge> {
    let (scheme, params) = header.trim().split_once(' ').unwrap_or((header.trim(), ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Some(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let mut realm = None;
    let mut service = None;
    let mut rest = params.trim();
    while !rest.is_empty() {
        let (key, after) = rest.split_once('=')?;
        let after = after.trim_start();
        let (value, next) = if let Some(q) = after.strip_prefix('"') {
            let end = q.find('"')?;
            (&q[..end], &q[end + 1..])
        } else {
            let end = after.find(',').unwrap_or(after.len());
            (&after[..end], &after[end..])
        };
        match key.trim().to_ascii_lowercase().as_str() {
            "realm" => realm = Some(value.to_string()),
            "service" => service = Some(value.to_string()),
            _ => {}
        }
        rest = next.trim_start().trim_start_matches(',').trim_start();
    }
    Some(Challenge::Bearer {
        realm: realm?,
        service,
    })
}

fn http_client(insecure: bool) -> Result<reqwest::Client, Error> {
    super::client::install_crypto_provider();
    reqwest::Client::builder()
        .danger_accept_invalid_certs(insecure)
        .connect_timeout(Duration::from_secs(30))
        .timeout(Duration::from_secs(60))
        .user_agent(concat!("skiff/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| Error::Unreachable {
            registry: String::new(),
            detail: e.to_string(),
        })
}

/// Checks `user`/`password` against `registry` (`host[:port]`). HTTPS first (verified
/// against the system's roots, or `SSL_CERT_FILE`/`SSL_CERT_DIR` when set); plain
/// HTTP for loopback registries or with `tls_verify` off, unless HTTPS failed its TLS
/// and plain HTTP does not answer as a registry (a TLS-only server): then the TLS
/// error.
pub async fn verify(
    registry: &str,
    user: &str,
    password: &str,
    tls_verify: bool,
) -> Result<(), Error> {
    let host = if registry == "docker.io" {
        "registry-1.docker.io"
    } else {
        registry
    };
    let mut attempts = vec![("https", !tls_verify)];
    if is_loopback(host) || !tls_verify {
        attempts.push(("http", false));
    }
    let mut last = None;
    for (scheme, insecure) in attempts {
        let client = http_client(insecure)?;
        let url = format!("{scheme}://{host}/v2/");
        match client.get(&url).send().await {
            Ok(resp)
                if scheme == "http"
                    && matches!(last, Some(Error::Tls { .. }))
                    && !matches!(resp.status().as_u16(), 200..=299 | 401) =>
            {
                // A TLS-only server answers plain HTTP with 400 ("client sent an HTTP
                // request to an HTTPS server"): what HTTPS said is the error to report
                // (its hint says how to trust the registry).
                tracing::debug!(
                    "login {registry}: plain HTTP answered {}: not a registry",
                    resp.status()
                );
                break;
            }
            Ok(resp) => return check(&client, registry, &url, resp, user, password).await,
            Err(e) => {
                tracing::debug!("login {registry} over {scheme}: {e}");
                last = Some(super::client::transport_error(
                    registry,
                    super::Op::Login,
                    &e,
                ));
            }
        }
    }
    Err(last.unwrap_or_else(|| Error::Unreachable {
        registry: registry.to_string(),
        detail: "no transport to try".into(),
    }))
}

async fn check(
    client: &reqwest::Client,
    registry: &str,
    url: &str,
    resp: reqwest::Response,
    user: &str,
    password: &str,
) -> Result<(), Error> {
    let refused = |detail: String| Error::LoginRefused {
        registry: registry.to_string(),
        detail,
    };
    let transport =
        |e: reqwest::Error| super::client::transport_error(registry, super::Op::Login, &e);
    let status = resp.status().as_u16();
    if (200..300).contains(&status) {
        tracing::info!("login {registry}: the registry needs no credentials");
        return Ok(());
    }
    if status != 401 {
        return Err(Error::Protocol {
            reference: registry.to_string(),
            detail: format!("GET {url} answered HTTP {status}, not 200 or 401"),
        });
    }
    let header = resp
        .headers()
        .get(reqwest::header::WWW_AUTHENTICATE)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default()
        .to_string();
    match parse_challenge(&header) {
        Some(Challenge::Basic) => {
            let r = client
                .get(url)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(transport)?;
            match r.status().as_u16() {
                200..=299 => Ok(()),
                401 | 403 => Err(refused(format!("HTTP {} for {url}", r.status().as_u16()))),
                s => Err(Error::Protocol {
                    reference: registry.to_string(),
                    detail: format!("GET {url} with credentials answered HTTP {s}"),
                }),
            }
        }
        Some(Challenge::Bearer { realm, service }) => {
            let mut query = vec![("account", user.to_string())];
            if let Some(s) = service {
                query.push(("service", s));
            }
            let r = client
                .get(&realm)
                .query(&query)
                .basic_auth(user, Some(password))
                .send()
                .await
                .map_err(transport)?;
            let code = r.status().as_u16();
            if code == 401 || code == 403 {
                return Err(refused(format!(
                    "the token service {realm} answered HTTP {code}"
                )));
            }
            let body: serde_json::Value = r.json().await.map_err(|e| Error::Protocol {
                reference: registry.to_string(),
                detail: format!("the token service {realm} answered HTTP {code}: {e}"),
            })?;
            let has_token = ["token", "access_token"].iter().any(|k| {
                body.get(k)
                    .and_then(|t| t.as_str())
                    .is_some_and(|t| !t.is_empty())
            });
            if (200..300).contains(&code) && has_token {
                Ok(())
            } else {
                Err(Error::Protocol {
                    reference: registry.to_string(),
                    detail: format!(
                        "the token service {realm} answered HTTP {code} without a token"
                    ),
                })
            }
        }
        None => Err(Error::Protocol {
            reference: registry.to_string(),
            detail: format!("401 for {url} with an unknown challenge {header:?}"),
        }),
    }
}

/// The auth file `login` writes: `flag`, else `$REGISTRY_AUTH_FILE`, else podman's
/// `$XDG_RUNTIME_DIR/containers/auth.json` (`~/.config/containers/auth.json` without a
/// runtime directory). The first of these is also the first a pull reads.
pub fn login_file(flag: Option<&Path>) -> Result<PathBuf, Error> {
    if let Some(f) = flag {
        return Ok(f.to_path_buf());
    }
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(f) = env("REGISTRY_AUTH_FILE") {
        return Ok(f);
    }
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        return Ok(run.join("containers/auth.json"));
    }
    match (env("XDG_CONFIG_HOME"), env("HOME")) {
        (Some(c), _) => Ok(c.join("containers/auth.json")),
        (None, Some(h)) => Ok(h.join(".config/containers/auth.json")),
        (None, None) => Err(Error::AuthFile {
            path: PathBuf::from("auth.json"),
            reason: "neither XDG_RUNTIME_DIR nor HOME is set: pass --authfile FILE".into(),
        }),
    }
}

/// Reads an auth file as JSON (an empty object when it does not exist).
fn read_file(path: &Path) -> Result<serde_json::Map<String, serde_json::Value>, Error> {
    let bad = |reason: String| Error::AuthFile {
        path: path.to_path_buf(),
        reason,
    };
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Default::default()),
        Err(e) => return Err(bad(format!("cannot read it: {e}"))),
    };
    if text.trim().is_empty() {
        return Ok(Default::default());
    }
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(serde_json::Value::Object(m)) => Ok(m),
        Ok(_) | Err(_) => Err(bad(
            "not a JSON object: fix or remove it (nothing was changed)".into(),
        )),
    }
}

/// Writes `doc` to `path` atomically with mode 0600 (its directory made 0700 if
/// missing).
fn write_file(path: &Path, doc: &serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
    let bad = |what: &str, e: std::io::Error| Error::AuthFile {
        path: path.to_path_buf(),
        reason: format!("{what}: {e}"),
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| bad("cannot create its directory", e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "auth.json".into());
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let text = serde_json::to_vec_pretty(doc).map_err(|e| bad("encoding", e.into()))?;
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&text)?;
        f.write_all(b"\n")?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(bad("cannot write it", e));
    }
    Ok(())
}

/// The `auths` object of an auth file, created if missing.
fn auths<'a>(
    doc: &'a mut serde_json::Map<String, serde_json::Value>,
    path: &Path,
) -> Result<&'a mut serde_json::Map<String, serde_json::Value>, Error> {
    doc.entry("auths")
        .or_insert_with(|| serde_json::json!({}))
        .as_object_mut()
        .ok_or_else(|| Error::AuthFile {
            path: path.to_path_buf(),
            reason: "its \"auths\" is not an object: fix or remove it (nothing was changed)".into(),
        })
}

/// Whether an `auths` key is the entry of `registry` itself: the host, or a URL of it
/// (`https://host/v1/`). Keys with a namespace (`host/org`) are entries of their own.
fn same_entry(key: &str, registry: &str) -> bool {
    key == registry || (key.contains("://") && registry_key(key).is_ok_and(|k| k == registry))
}

/// Stores `user`/`password` for `registry` in `path` (replacing its entry).
pub fn store(path: &Path, registry: &str, user: &str, password: &str) -> Result<(), Error> {
    let mut doc = read_file(path)?;
    let a = auths(&mut doc, path)?;
    a.retain(|k, _| !same_entry(k, registry));
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    a.insert(registry.to_string(), serde_json::json!({ "auth": auth }));
    write_file(path, &doc)
}

/// Removes the entries for `registry` (every one with `None`) from `path`; returns how
/// many there were (nothing is written when none).
pub fn remove(path: &Path, registry: Option<&str>) -> Result<usize, Error> {
    let mut doc = read_file(path)?;
    let a = auths(&mut doc, path)?;
    let before = a.len();
    match registry {
        Some(r) => a.retain(|k, _| !same_entry(k, r)),
        None => a.clear(),
    }
    let removed = before - a.len();
    if removed > 0 {
        write_file(path, &doc)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn registry_names() {
        assert_eq!(registry_key("127.0.0.1:5000").unwrap(), "127.0.0.1:5000");
        assert_eq!(
            registry_key("https://index.docker.io/v1/").unwrap(),
            "docker.io"
        );
        assert_eq!(registry_key("Quay.io/org").unwrap(), "quay.io");
        assert!(registry_key("").is_err());
        assert!(registry_key("a b").is_err());
    }

    #[test]
    fn challenges() {
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(
            parse_challenge(
                "Bearer realm=\"http://a/token\",service=\"reg\",scope=\"repository:x:pull\""
            ),
            Some(Challenge::Bearer {
                realm: "http://a/token".into(),
                service: Some("reg".into())
            })
        );
        assert_eq!(
            parse_challenge("Bearer realm=http://a/t"),
            Some(Challenge::Bearer {
                realm: "http://a/t".into(),
                service: None
            })
        );
        assert_eq!(parse_challenge("Bearer service=\"x\""), None);
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn store_keeps_the_rest_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("sub/auth.json");
        store(&f, "h:1", "u", "p").unwrap();
        let mode = std::fs::metadata(&f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let dmode = std::fs::metadata(f.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dmode, 0o700);
        // Other keys and entries survive; the registry's entry is replaced.
        std::fs::write(
            &f,
            r#"{"auths":{"h:1":{"auth":"x"},"other":{"auth":"y"}},"credHelpers":{"a":"b"}}"#,
        )
        .unwrap();
        store(&f, "h:1", "u2", "p2").unwrap();
        let c = super::super::auth::lookup(Some(&f), &[], "h:1", "repo")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u2", "p2"));
        let v: serde_json::Value = serde_json::from_slice(&std::fs::read(&f).unwrap()).unwrap();
        assert_eq!(v["auths"]["other"]["auth"], "y");
        assert_eq!(v["credHelpers"]["a"], "b");
        assert_eq!(remove(&f, Some("h:1")).unwrap(), 1);
        assert_eq!(remove(&f, Some("h:1")).unwrap(), 0);
        assert_eq!(remove(&f, None).unwrap(), 1);
        // A broken file is refused and left as it was.
        std::fs::write(&f, "{broken").unwrap();
        let e = store(&f, "h:1", "u", "p").unwrap_err().to_string();
        assert!(e.contains("nothing was changed"), "{e}");
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "{broken");
        let leftovers: Vec<_> = std::fs::read_dir(f.parent().unwrap()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file left");
    }
}
