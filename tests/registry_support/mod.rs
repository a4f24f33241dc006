//! A real registry for the pull tests: Debian's `docker-registry` on 127.0.0.1 with its
//! config and storage in a temp dir, OCI image layouts written here (tar + gzip +
//! serde_json), pushed with skopeo, a throttling TCP proxy to make a pull slow enough
//! to be killed midway, and a gating one to stop a pull at a known request.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::Digest;

use super::common::require;

mod token;
pub use token::TokenServer;

/// sha256 of `data` as `sha256:<hex>`.
pub fn digest(data: &[u8]) -> String {
    let h = sha2::Sha256::digest(data);
    let hex: String = h.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

/// A free TCP port on 127.0.0.1 (bound then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A layer under construction: an uncompressed tar.
pub struct LayerBuilder {
    b: tar::Builder<Vec<u8>>,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        LayerBuilder {
            b: tar::Builder::new(Vec::new()),
        }
    }
}

impl LayerBuilder {
    /// Adds a directory.
    pub fn dir(mut self, path: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_mode(0o755);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_data(&mut h, path, std::io::empty()).unwrap();
        self
    }

    /// Adds a regular file.
    pub fn file(mut self, path: &str, mode: u32, data: &[u8]) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_data(&mut h, path, data).unwrap();
        self
    }

    /// Adds a symlink.
    pub fn symlink(mut self, path: &str, target: &str) -> Self {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        self.b.append_link(&mut h, path, target).unwrap();
        self
    }

    /// The busybox rootfs: /bin/busybox and its applet links for sh, echo, cat, ls.
    pub fn busybox(self) -> Self {
        let bb = std::fs::read(require("busybox")).unwrap();
        let mut s = self
            .dir("bin")
            .dir("etc")
            .dir("tmp")
            .file("bin/busybox", 0o755, &bb);
        for applet in ["sh", "echo", "cat", "ls", "true", "test"] {
            s = s.symlink(&format!("bin/{applet}"), "busybox");
        }
        s
    }

    /// The uncompressed tar.
    pub fn finish(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

/// One platform's image in a layout.
pub struct ImageSpec {
    /// GOARCH.
    pub arch: String,
    /// Layers bottom first, uncompressed.
    pub layers: Vec<Vec<u8>>,
    /// Cmd of the config.
    pub cmd: Vec<String>,
}

/// An OCI image layout directory being written.
pub struct Layout {
    /// The directory.
    pub dir: PathBuf,
}

impl Layout {
    /// Creates an empty layout at `dir`.
    pub fn new(dir: &Path) -> Layout {
        std::fs::create_dir_all(dir.join("blobs/sha256")).unwrap();
        std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
        Layout {
            dir: dir.to_path_buf(),
        }
    }

    /// Writes a blob; returns its descriptor JSON.
    fn blob(&self, media_type: &str, data: &[u8]) -> serde_json::Value {
        let d = digest(data);
        let path = self
            .dir
            .join("blobs/sha256")
            .join(d.trim_start_matches("sha256:"));
        std::fs::write(path, data).unwrap();
        serde_json::json!({"mediaType": media_type, "digest": d, "size": data.len()})
    }

    /// Writes an image (config, gzip layers, manifest); returns the manifest's
    /// descriptor (with platform).
    pub fn image(&self, spec: &ImageSpec) -> serde_json::Value {
        let mut layer_descs = Vec::new();
        let mut diff_ids = Vec::new();
        for tar in &spec.layers {
            diff_ids.push(digest(tar));
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(tar).unwrap();
            let gz = gz.finish().unwrap();
            layer_descs.push(self.blob("application/vnd.oci.image.layer.v1.tar+gzip", &gz));
        }
        let config = serde_json::json!({
            "architecture": spec.arch,
            "os": "linux",
            "created": "2024-01-01T00:00:00Z",
            "config": {"Cmd": spec.cmd, "Env": ["PATH=/bin"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
        });
        let config_desc = self.blob(
            "application/vnd.oci.image.config.v1+json",
            &serde_json::to_vec(&config).unwrap(),
        );
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": config_desc,
            "layers": layer_descs,
        });
        let mut desc = self.blob(
            "application/vnd.oci.image.manifest.v1+json",
            &serde_json::to_vec(&manifest).unwrap(),
        );
        desc["platform"] = serde_json::json!({"os": "linux", "architecture": spec.arch});
        desc
    }

    /// Tags `desc` (a manifest or index descriptor) as `tag` in index.json.
    pub fn tag(&self, tag: &str, desc: &serde_json::Value) {
        let path = self.dir.join("index.json");
        let mut index: serde_json::Value = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_else(|| serde_json::json!({"schemaVersion": 2, "manifests": []}));
        let mut d = desc.clone();
        d["annotations"] = serde_json::json!({"org.opencontainers.image.ref.name": tag});
        index["manifests"].as_array_mut().unwrap().push(d);
        std::fs::write(&path, serde_json::to_vec(&index).unwrap()).unwrap();
    }

    /// Writes an image index of `manifests`; returns its descriptor.
    pub fn index(&self, manifests: &[serde_json::Value]) -> serde_json::Value {
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        self.blob(
            "application/vnd.oci.image.index.v1+json",
            &serde_json::to_vec(&index).unwrap(),
        )
    }
}

/// How the registry authenticates.
pub enum Auth {
    /// Anonymous access.
    None,
    /// htpasswd (basic auth) with one user.
    Basic {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
    /// Bearer tokens from a token service ([`TokenServer`]) that wants this user.
    Token {
        /// User name.
        user: String,
        /// Password.
        password: String,
    },
}

/// A running `docker-registry`.
pub struct Registry {
    child: Child,
    /// `127.0.0.1:PORT`.
    pub addr: String,
    /// Its log (access log included).
    pub log: PathBuf,
    dir: PathBuf,
    basic: Option<(String, String)>,
    token: Option<TokenServer>,
}

impl Registry {
    /// Starts a registry with storage under `dir`.
    pub fn start(dir: &Path, auth: Auth) -> Registry {
        let bin = require("docker-registry");
        std::fs::create_dir_all(dir.join("storage")).unwrap();
        let port = free_port();
        let addr = format!("127.0.0.1:{port}");
        let mut basic = None;
        let mut token = None;
        let auth_yaml = match &auth {
            Auth::None => String::new(),
            Auth::Basic { user, password } => {
                let out = Command::new(require("htpasswd"))
                    .args(["-Bbn", user, password])
                    .output()
                    .unwrap();
                assert!(out.status.success(), "htpasswd failed");
                std::fs::write(dir.join("htpasswd"), &out.stdout).unwrap();
                basic = Some((user.clone(), password.clone()));
                format!(
                    "auth:\n  htpasswd:\n    realm: skiff-test\n    path: {}\n",
                    dir.join("htpasswd").display()
                )
            }
            Auth::Token { user, password } => {
                let server = TokenServer::start(dir, user, password);
                basic = Some((user.clone(), password.clone()));
                let yaml = format!(
                    "auth:\n  token:\n    realm: http://{}/token\n    service: skiff-test\n    \
                     issuer: skiff-test-issuer\n    rootcertbundle: {}\n",
                    server.addr,
                    server.cert_pem.display()
                );
                token = Some(server);
                yaml
            }
        };
        let config = format!(
            "version: 0.1\nlog:\n  level: info\n  accesslog:\n    disabled: false\n\
             storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
             http:\n  addr: {addr}\n{auth_yaml}",
            dir.join("storage").display()
        );
        std::fs::write(dir.join("config.yml"), config).unwrap();
        let log = dir.join("registry.log");
        let child = Command::new(bin)
            .arg("serve")
            .arg(dir.join("config.yml"))
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.join("registry.err")).unwrap())
            .spawn()
            .unwrap();
        let reg = Registry {
            child,
            addr,
            log,
            dir: dir.to_path_buf(),
            basic,
            token,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&reg.addr).is_err() {
            assert!(
                Instant::now() < deadline,
                "docker-registry did not listen: {}",
                reg.logs()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// Everything the registry logged.
    pub fn logs(&self) -> String {
        let a = std::fs::read_to_string(&self.log).unwrap_or_default();
        let b = std::fs::read_to_string(self.dir.join("registry.err")).unwrap_or_default();
        format!("{a}{b}")
    }

    /// Requests the token service answered: (with valid credentials, refused).
    pub fn token_requests(&self) -> (usize, usize) {
        self.token.as_ref().map_or((0, 0), |t| {
            (
                t.granted.load(Ordering::Relaxed),
                t.refused.load(Ordering::Relaxed),
            )
        })
    }

    /// How many blob GETs the access log shows.
    pub fn blob_gets(&self) -> usize {
        self.logs()
            .lines()
            .filter(|l| l.contains("\"GET /v2/") && l.contains("/blobs/sha256:"))
            .filter(|l| l.contains("\" 200 ") || l.contains("\" 307 "))
            .count()
    }

    /// Pushes `layout:tag` to `repo:tag` here with skopeo (all platforms); returns the
    /// digest of the pushed manifest or index.
    pub fn push(&self, layout: &Path, tag: &str, repo_tag: &str) -> String {
        let digestfile = self.dir.join("pushed.digest");
        let mut cmd = Command::new(require("skopeo"));
        cmd.args([
            "--insecure-policy",
            "copy",
            "--all",
            "--quiet",
            "--dest-tls-verify=false",
            "--digestfile",
        ])
        .arg(&digestfile)
        .arg(format!("oci:{}:{tag}", layout.display()))
        .arg(format!("docker://{}/{repo_tag}", self.addr));
        if let Some((u, p)) = &self.basic {
            cmd.arg(format!("--dest-creds={u}:{p}"));
        }
        // skopeo wants a writable home for its temporary files.
        let out = cmd.env("TMPDIR", &self.dir).output().unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        std::fs::read_to_string(&digestfile)
            .unwrap()
            .trim()
            .to_string()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A TCP proxy to a registry that, while `slow` is set, sends the registry's answers
/// on at about 256 KiB/s (so that a pull can be interrupted midway).
pub struct Throttle {
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: String,
    /// Slow down answers.
    pub slow: Arc<AtomicBool>,
}

impl Throttle {
    /// Starts a proxy to `upstream`, slow from the start.
    pub fn start(upstream: &str) -> Throttle {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let slow = Arc::new(AtomicBool::new(true));
        let up = upstream.to_string();
        let slow2 = slow.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&up) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                std::thread::spawn(move || copy(client, server, None));
                let slow = slow2.clone();
                std::thread::spawn(move || copy(s2, c2, Some(slow)));
            }
        });
        Throttle { addr, slow }
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream, slow: Option<Arc<AtomicBool>>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
        if slow.as_ref().is_some_and(|s| s.load(Ordering::Relaxed)) {
            std::thread::sleep(Duration::from_millis(60));
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A TCP proxy to a registry that holds back the answer to every request whose text
/// contains `marker` (e.g. a blob's hex digest) until [`Gate::open`]: a pull stops at a
/// known point. HTTP/1.1 clients do not pipeline, so once a connection carries the
/// marked request, all that connection's earlier answers were delivered.
pub struct Gate {
    /// `127.0.0.1:PORT` of the proxy.
    pub addr: String,
    seen: Arc<AtomicBool>,
    open: Arc<AtomicBool>,
}

impl Gate {
    /// Starts a proxy to `upstream`, closed.
    pub fn start(upstream: &str, marker: &str) -> Gate {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap().to_string();
        let seen = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicBool::new(false));
        let (up, marker) = (upstream.to_string(), marker.as_bytes().to_vec());
        let (seen2, open2) = (seen.clone(), open.clone());
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(client) = conn else { continue };
                let Ok(server) = TcpStream::connect(&up) else {
                    continue;
                };
                let (c2, s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
                let held = Arc::new(AtomicBool::new(false));
                let (held2, seen, marker) = (held.clone(), seen2.clone(), marker.clone());
                std::thread::spawn(move || forward_marking(client, server, &marker, &held2, &seen));
                let open = open2.clone();
                std::thread::spawn(move || forward_held(s2, c2, &held, &open));
            }
        });
        Gate { addr, seen, open }
    }

    /// Whether a request with the marker went through (its answer is held).
    pub fn seen(&self) -> bool {
        self.seen.load(Ordering::SeqCst)
    }

    /// Lets the held answers through.
    pub fn open(&self) {
        self.open.store(true, Ordering::SeqCst);
    }
}

/// Client to server: marks the connection `held` (before forwarding the bytes) once
/// the request text contains `marker`.
fn forward_marking(
    mut from: TcpStream,
    mut to: TcpStream,
    marker: &[u8],
    held: &AtomicBool,
    seen: &AtomicBool,
) {
    let mut buf = vec![0u8; 16 * 1024];
    let mut window: Vec<u8> = Vec::new();
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        window.extend_from_slice(&buf[..n]);
        if window.windows(marker.len()).any(|w| w == marker) {
            held.store(true, Ordering::SeqCst);
            seen.store(true, Ordering::SeqCst);
        }
        let keep = window.len().saturating_sub(marker.len());
        window.drain(..keep);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Server to client: waits while the connection is `held` and the gate not open.
fn forward_held(mut from: TcpStream, mut to: TcpStream, held: &AtomicBool, open: &AtomicBool) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        while held.load(Ordering::SeqCst) && !open.load(Ordering::SeqCst) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// Random-looking incompressible bytes (xorshift), `len` long.
pub fn noise(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}
