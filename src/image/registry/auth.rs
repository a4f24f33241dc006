//! Registry credentials from auth files in the podman/docker `auths` format:
//!
//! ```json
//! {"auths": {"registry.example.com": {"auth": "base64(user:password)"}}}
//! ```
//!
//! Keys may be a host (`host:port`), a host with a repository namespace
//! (`quay.io/org`, the most specific key wins) or a URL (`https://index.docker.io/v1/`).
//! Entries may carry `username` and `password` instead of `auth`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::Deserialize;

use super::Error;

/// Credentials for one registry, and the file they came from.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user name.
    pub username: String,
    /// The password (or token used as a password).
    pub password: String,
    /// The auth file the credentials were read from.
    pub source: PathBuf,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("source", &self.source)
            .finish()
    }
}

#[derive(Debug, Deserialize)]
struct AuthFile {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

/// The auth files searched, in podman's order, when no `--authfile` is given:
/// `$REGISTRY_AUTH_FILE`, `$XDG_RUNTIME_DIR/containers/auth.json`,
/// `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`), `~/.docker/config.json`.
pub fn default_auth_files() -> Vec<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let home = env("HOME");
    let mut out = Vec::new();
    out.extend(env("REGISTRY_AUTH_FILE"));
    if let Some(run) = env("XDG_RUNTIME_DIR") {
        out.push(run.join("containers/auth.json"));
    }
    match (env("XDG_CONFIG_HOME"), &home) {
        (Some(cfg), _) => out.push(cfg.join("containers/auth.json")),
        (None, Some(h)) => out.push(h.join(".config/containers/auth.json")),
        (None, None) => {}
    }
    if let Some(h) = home {
        out.push(h.join(".docker/config.json"));
    }
    out
}

/// Finds credentials for `domain`/`path`. With `explicit`, only that file is read and it
/// must exist; otherwise the first of `defaults` that has an entry wins, and missing
/// files are skipped.
pub fn lookup(
    explicit: Option<&Path>,
    defaults: &[PathBuf],
    domain: &str,
    path: &str,
) -> Result<Option<Credentials>, Error> {
    if let Some(file) = explicit {
        let text = std::fs::read_to_string(file).map_err(|e| Error::AuthFile {
            path: file.to_path_buf(),
            reason: format!("cannot read it: {e}"),
        })?;
        return find_in(&text, file, domain, path);
    }
    for file in defaults {
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(Error::AuthFile {
                    path: file.clone(),
                    reason: format!("cannot read it: {e}"),
                })
            }
        };
        if let Some(c) = find_in(&text, file, domain, path)? {
            return Ok(Some(c));
        }
    }
    Ok(None)
}

/// Looks up `domain`/`path` in the text of one auth file.
fn find_in(
    text: &str,
    file: &Path,
    domain: &str,
    path: &str,
) -> Result<Option<Credentials>, Error> {
    let bad = |reason: String| Error::AuthFile {
        path: file.to_path_buf(),
        reason,
    };
    let parsed: AuthFile = serde_json::from_str(text).map_err(|e| {
        bad(format!(
            "not a valid auth file (JSON with an \"auths\" object): {e}"
        ))
    })?;
    // Keys normalised to host[/namespace], most specific first.
    let mut best: Option<(usize, &String, &Entry)> = None;
    for (key, entry) in &parsed.auths {
        let norm = normalise_key(key);
        let Some(len) = match_len(&norm, domain, path) else {
            continue;
        };
        if best.as_ref().is_none_or(|(l, _, _)| len > *l) {
            best = Some((len, key, entry));
        }
    }
    let Some((_, key, entry)) = best else {
        return Ok(None);
    };
    let (username, password) = match (&entry.auth, &entry.username, &entry.password) {
        (Some(a), _, _) if !a.is_empty() => {
            let raw = base64::engine::general_purpose::STANDARD
                .decode(a.trim())
                .map_err(|e| bad(format!("the \"auth\" of {key:?} is not base64: {e}")))?;
            let text = String::from_utf8(raw)
                .map_err(|_| bad(format!("the \"auth\" of {key:?} is not UTF-8")))?;
            let (u, p) = text
                .split_once(':')
                .ok_or_else(|| bad(format!("the \"auth\" of {key:?} is not user:password")))?;
            (u.to_string(), p.to_string())
        }
        (_, Some(u), Some(p)) => (u.clone(), p.clone()),
        _ => return Ok(None),
    };
    Ok(Some(Credentials {
        username,
        password,
        source: file.to_path_buf(),
    }))
}

/// `https://host/v1/` → `host`; `host/ns` stays.
fn normalise_key(key: &str) -> String {
    let k = key
        .strip_prefix("https://")
        .or_else(|| key.strip_prefix("http://"));
    match k {
        // URL keys name a host only (the path is an API path such as /v1/).
        Some(rest) => rest.split('/').next().unwrap_or(rest).to_string(),
        None => key.trim_end_matches('/').to_string(),
    }
}

/// The length of `key` if it covers `domain`/`path` (host, or host plus a namespace
/// prefix at a '/' boundary); `None` if it does not.
fn match_len(key: &str, domain: &str, path: &str) -> Option<usize> {
    let (khost, kpath) = match key.split_once('/') {
        Some((h, p)) => (h, Some(p)),
        None => (key, None),
    };
    if !same_registry(khost, domain) {
        return None;
    }
    match kpath {
        None => Some(0),
        Some(p) if path == p || path.starts_with(&format!("{p}/")) => Some(p.len() + 1),
        Some(_) => None,
    }
}

fn same_registry(a: &str, b: &str) -> bool {
    let docker = |h: &str| {
        matches!(
            h,
            "docker.io" | "index.docker.io" | "registry-1.docker.io" | "registry.hub.docker.com"
        )
    };
    a.eq_ignore_ascii_case(b) || (docker(a) && docker(b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        base64::engine::general_purpose::STANDARD.encode(s)
    }

    fn creds(text: &str, domain: &str, path: &str) -> Option<(String, String)> {
        find_in(text, Path::new("/a.json"), domain, path)
            .unwrap()
            .map(|c| (c.username, c.password))
    }

    #[test]
    fn finds_by_host_url_and_namespace() {
        let text = format!(
            r#"{{"auths": {{
                "127.0.0.1:5000": {{"auth": "{}"}},
                "https://index.docker.io/v1/": {{"auth": "{}"}},
                "quay.io": {{"username": "q", "password": "p:w"}},
                "quay.io/team": {{"auth": "{}"}}
            }}}}"#,
            b64("alice:s3cret"),
            b64("dock:er"),
            b64("team:pw")
        );
        let pair = |u: &str, p: &str| Some((u.to_string(), p.to_string()));
        assert_eq!(
            creds(&text, "127.0.0.1:5000", "x/y"),
            pair("alice", "s3cret")
        );
        assert_eq!(
            creds(&text, "docker.io", "library/busybox"),
            pair("dock", "er")
        );
        assert_eq!(creds(&text, "quay.io", "other/app"), pair("q", "p:w"));
        assert_eq!(creds(&text, "quay.io", "team/app"), pair("team", "pw"));
        assert_eq!(creds(&text, "quay.io", "teamx/app"), pair("q", "p:w"));
        assert_eq!(creds(&text, "127.0.0.1:5001", "x"), None);
    }

    #[test]
    fn bad_files_name_the_problem() {
        let err = |text: &str| {
            find_in(text, Path::new("/a.json"), "h", "p")
                .unwrap_err()
                .to_string()
        };
        assert!(err("{").contains("/a.json"));
        assert!(err(r#"{"auths":{"h":{"auth":"!!"}}}"#).contains("not base64"));
        let no_colon = format!(r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#, b64("nocolon"));
        assert!(err(&no_colon).contains("user:password"));
    }

    #[test]
    fn explicit_file_must_exist_defaults_may_not() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.json");
        let e = lookup(Some(&missing), &[], "h", "p").unwrap_err();
        assert!(e.to_string().contains("nope.json"), "{e}");
        assert_eq!(
            lookup(None, std::slice::from_ref(&missing), "h", "p").unwrap(),
            None
        );
        let f = dir.path().join("auth.json");
        std::fs::write(
            &f,
            format!(r#"{{"auths":{{"h":{{"auth":"{}"}}}}}}"#, b64("u:p")),
        )
        .unwrap();
        let c = lookup(None, &[missing, f.clone()], "h", "p")
            .unwrap()
            .unwrap();
        assert_eq!((c.username.as_str(), c.source), ("u", f));
    }
}
