//! The registry's token service for the Bearer-auth tests.

use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::common::require;

/// A token service for the registry's `auth: token` mode: answers
/// `GET /token?scope=repository:NAME:ACTIONS&service=...` with an ES256 JWT (signed with
/// a key whose self-signed certificate the registry trusts, sent in `x5c`) when the
/// request carries the right basic credentials, 401 otherwise.
pub struct TokenServer {
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// The certificate the registry trusts.
    pub cert_pem: PathBuf,
    pub(super) granted: Arc<std::sync::atomic::AtomicUsize>,
    pub(super) refused: Arc<std::sync::atomic::AtomicUsize>,
}

fn b64url(data: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(data)
}

impl TokenServer {
    pub(super) fn start(dir: &Path, user: &str, password: &str) -> TokenServer {
        use base64::Engine;
        let openssl = require("openssl");
        let key_pem = dir.join("token-key.pem");
        let cert_pem = dir.join("token-cert.pem");
        let run = |args: &[&str]| {
            let out = Command::new(&openssl).args(args).output().unwrap();
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            out.stdout
        };
        run(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=skiff-test-token",
            "-keyout",
            key_pem.to_str().unwrap(),
            "-out",
            cert_pem.to_str().unwrap(),
        ]);
        let pkcs8 = run(&[
            "pkcs8",
            "-topk8",
            "-nocrypt",
            "-in",
            key_pem.to_str().unwrap(),
            "-outform",
            "DER",
        ]);
        let cert_der = run(&["x509", "-in", cert_pem.to_str().unwrap(), "-outform", "DER"]);
        let rng = ring::rand::SystemRandom::new();
        let key = ring::signature::EcdsaKeyPair::from_pkcs8(
            &ring::signature::ECDSA_P256_SHA256_FIXED_SIGNING,
            &pkcs8,
            &rng,
        )
        .unwrap();
        let x5c = base64::engine::general_purpose::STANDARD.encode(&cert_der);
        let expected = format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
        );
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let granted = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let refused = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (g, r, user) = (granted.clone(), refused.clone(), user.to_string());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut req = Vec::new();
                let mut buf = [0u8; 4096];
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let text = String::from_utf8_lossy(&req).to_string();
                let authorized = text.lines().any(|l| {
                    l.to_ascii_lowercase().starts_with("authorization:")
                        && l.split_once(':').map(|(_, v)| v.trim()) == Some(expected.as_str())
                });
                let target = text.split_whitespace().nth(1).unwrap_or("").to_string();
                let query = target.split_once('?').map(|(_, q)| q).unwrap_or("");
                let mut access = Vec::new();
                for kv in query.split('&') {
                    if let Some(scope) = kv.strip_prefix("scope=") {
                        let scope = scope
                            .replace("%3A", ":")
                            .replace("%2F", "/")
                            .replace("%2C", ",");
                        let parts: Vec<&str> = scope.split(':').collect();
                        if parts.len() == 3 {
                            access.push(serde_json::json!({
                                "type": parts[0], "name": parts[1],
                                "actions": parts[2].split(',').collect::<Vec<_>>(),
                            }));
                        }
                    }
                }
                let reply = if authorized {
                    g.fetch_add(1, Ordering::Relaxed);
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .unwrap()
                        .as_secs();
                    let header = serde_json::json!({"typ": "JWT", "alg": "ES256", "x5c": [x5c]});
                    let claims = serde_json::json!({
                        "iss": "skiff-test-issuer", "sub": user, "aud": "skiff-test",
                        "exp": now + 600, "nbf": now - 60, "iat": now, "jti": format!("{now}"),
                        "access": access,
                    });
                    let signing_input = format!(
                        "{}.{}",
                        b64url(&serde_json::to_vec(&header).unwrap()),
                        b64url(&serde_json::to_vec(&claims).unwrap())
                    );
                    let sig = key.sign(&rng, signing_input.as_bytes()).unwrap();
                    let token = format!("{signing_input}.{}", b64url(sig.as_ref()));
                    let body = serde_json::json!({"token": token, "access_token": token,
                        "expires_in": 600})
                    .to_string();
                    format!("HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                } else {
                    r.fetch_add(1, Ordering::Relaxed);
                    let body = r#"{"errors":[{"code":"UNAUTHORIZED","message":"bad or missing credentials"}]}"#;
                    format!("HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len())
                };
                let _ = conn.write_all(reply.as_bytes());
            }
        });
        TokenServer {
            addr,
            cert_pem,
            granted,
            refused,
        }
    }
}
