//! The on-disk image store.
//!
//! ```text
//! root/
//!   blobs/sha256/<hex>        image config JSON, content-addressed (the image id)
//!   layers/<diff-id hex>/diff extracted layer trees, shared by every image using them
//!   tmp/<random>/diff         staging of imports in progress (leftovers after a crash)
//!   index.json                images and tags, replaced atomically
//!   index.lock                flock serialising read-modify-write of index.json
//! ```
//!
//! `blobs/` follows the OCI image-layout blob naming, so manifests and compressed layers
//! can join the configs there once registry pulls exist.

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os,
    RootFsBuilder,
};
use serde::{Deserialize, Serialize};

use super::{is_sha256_hex, sha256_hex, Error, Reference, UnpackStats};
use crate::fsutil::{atomic_write, atomic_write_json, ensure_private_dir, sync_dir};

/// The `version` of the index.json format this code reads and writes.
const INDEX_VERSION: u32 = 1;

/// A store of images rooted at one directory. Methods take `&self`; index updates are
/// serialised across processes with a lock file.
#[derive(Debug, Clone)]
pub struct ImageStore {
    root: PathBuf,
}

/// A fresh directory for one import, inside the store's `tmp/`.
#[derive(Debug)]
pub struct Staging {
    /// `root/tmp/<random>`: becomes `layers/<diff-id>` on commit.
    pub dir: PathBuf,
    /// `dir/diff`, created empty: extract the layer here.
    pub diff: PathBuf,
}

/// Image configuration set at import time (`skiff image import --change ...`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ImageChanges {
    /// Default arguments (`CMD`).
    pub cmd: Option<Vec<String>>,
    /// Entrypoint (`ENTRYPOINT`).
    pub entrypoint: Option<Vec<String>>,
    /// `NAME=value` environment entries.
    pub env: Vec<String>,
    /// Working directory.
    pub workdir: Option<String>,
    /// User (`user`, `uid`, `user:group`, ...).
    pub user: Option<String>,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Stop signal name, e.g. `SIGTERM`.
    pub stop_signal: Option<String>,
}

/// One image as listed by the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRecord {
    /// The image id: hex sha256 of its config blob.
    pub id: String,
    /// Layer diff ids (`sha256:<hex>`), bottom first.
    pub layers: Vec<String>,
    /// Import time, RFC 3339 UTC.
    pub created: String,
    /// Sum of the layers' regular file sizes.
    pub size: u64,
    /// `name:tag` references pointing at this image, sorted.
    pub repo_tags: Vec<String>,
}

/// The result of [`ImageStore::commit_import`].
#[derive(Debug)]
pub struct CommitOutcome {
    /// The image now in the store.
    pub image: ImageRecord,
    /// The staging directory, when the layer was already present (dedup): the caller
    /// removes it (from inside the user namespace, as it may hold subordinate-owned files).
    pub unused_staging: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct IndexImage {
    layers: Vec<String>,
    created: String,
    size: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Index {
    version: u32,
    #[serde(default)]
    images: BTreeMap<String, IndexImage>,
    #[serde(default)]
    tags: BTreeMap<String, String>,
}

impl Default for Index {
    fn default() -> Self {
        Index {
            version: INDEX_VERSION,
            images: BTreeMap::new(),
            tags: BTreeMap::new(),
        }
    }
}

impl ImageStore {
    /// Opens (creating if needed, mode 0700) the store at `root` and checks its index.
    pub fn open(root: &Path) -> Result<ImageStore, Error> {
        let store = ImageStore {
            root: root.to_path_buf(),
        };
        for dir in [
            store.root.clone(),
            store.root.join("blobs/sha256"),
            store.root.join("layers"),
            store.root.join("tmp"),
        ] {
            ensure_private_dir(&dir)
                .map_err(|e| Error::io(format!("creating the image store directory {dir:?}"), e))?;
        }
        store.load_index()?;
        Ok(store)
    }

    /// The store's root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Staging directories left in `tmp/` (by a crash or an import that failed). The
    /// daemon removes them from inside the user namespace.
    pub fn leftovers(&self) -> Result<Vec<PathBuf>, Error> {
        let tmp = self.root.join("tmp");
        let mut out = Vec::new();
        let rd = fs::read_dir(&tmp).map_err(|e| Error::io(format!("listing {tmp:?}"), e))?;
        for entry in rd {
            let entry = entry.map_err(|e| Error::io(format!("listing {tmp:?}"), e))?;
            out.push(entry.path());
        }
        out.sort();
        Ok(out)
    }

    /// Creates `tmp/<random>/diff` for a new import.
    pub fn new_staging(&self) -> Result<Staging, Error> {
        let dir = self
            .root
            .join("tmp")
            .join(format!("import-{}", random_hex()?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| Error::io(format!("creating the staging directory {dir:?}"), e))?;
        // 0755 whatever the umask: the layer root, unless the layer lists `./` itself.
        let diff = dir.join("diff");
        fs::create_dir(&diff)
            .and_then(|()| fs::set_permissions(&diff, fs::Permissions::from_mode(0o755)))
            .map_err(|e| Error::io(format!("creating {diff:?}"), e))?;
        Ok(Staging { dir, diff })
    }

    /// Moves an extracted layer into the store (or finds it already there), writes the
    /// image config blob and records the image under `reference`.
    pub fn commit_import(
        &self,
        staging: Staging,
        stats: &UnpackStats,
        reference: &Reference,
        changes: &ImageChanges,
    ) -> Result<CommitOutcome, Error> {
        let layer_hex = stats
            .diff_id
            .strip_prefix("sha256:")
            .filter(|h| is_sha256_hex(h))
            .ok_or_else(|| Error::InvalidLayer {
                reason: format!("diff id {:?} is not a sha256 digest", stats.diff_id),
            })?;
        let _lock = self.lock()?;

        let layers = self.root.join("layers");
        let layer_dir = layers.join(layer_hex);
        let unused_staging = if layer_dir.exists() {
            tracing::debug!("layer {} already in the store", stats.diff_id);
            Some(staging.dir)
        } else {
            match fs::rename(&staging.dir, &layer_dir) {
                Ok(()) => {
                    sync_dir(&layers).map_err(|e| Error::io(format!("syncing {layers:?}"), e))?;
                    None
                }
                Err(e) if matches!(e.raw_os_error(), Some(libc::EEXIST | libc::ENOTEMPTY)) => {
                    Some(staging.dir)
                }
                Err(e) => {
                    return Err(Error::io(
                        format!("moving {:?} to {layer_dir:?}", staging.dir),
                        e,
                    ))
                }
            }
        };

        let created = now_rfc3339();
        let config = build_config(&stats.diff_id, &created, changes)?;
        let bytes = canonical_json(&config)?;
        let id = sha256_hex(&bytes);
        let blob = self.blob_path(&id);
        if !blob.exists() {
            atomic_write(&blob, &bytes)
                .map_err(|e| Error::io(format!("writing the image config {blob:?}"), e))?;
        }

        let mut index = self.load_index()?;
        index.images.insert(
            id.clone(),
            IndexImage {
                layers: vec![stats.diff_id.clone()],
                created,
                size: stats.size,
            },
        );
        let tag = reference.to_string();
        if let Some(old) = index.tags.insert(tag.clone(), id.clone()) {
            if old != id {
                tracing::info!("tag {tag} moved from image {old} to {id}");
            }
        }
        self.save_index(&index)?;
        tracing::info!("imported image {id} as {tag}");
        let image = record(&index, &id).ok_or_else(|| Error::NoSuchImage {
            reference: id.clone(),
        })?;
        Ok(CommitOutcome {
            image,
            unused_staging,
        })
    }

    /// All images, newest first.
    pub fn list(&self) -> Result<Vec<ImageRecord>, Error> {
        let index = self.load_index()?;
        let mut out: Vec<ImageRecord> = index
            .images
            .keys()
            .filter_map(|id| record(&index, id))
            .collect();
        out.sort_by(|a, b| b.created.cmp(&a.created).then_with(|| a.id.cmp(&b.id)));
        Ok(out)
    }

    /// Finds an image by `name[:tag]`, full id, `sha256:<id>` or unique id prefix.
    pub fn resolve(&self, name_or_id: &str) -> Result<ImageRecord, Error> {
        let index = self.load_index()?;
        let not_found = || Error::NoSuchImage {
            reference: name_or_id.to_string(),
        };
        let parsed = Reference::parse(name_or_id);
        if let Ok(r) = &parsed {
            if let Some(id) = index.tags.get(&r.to_string()) {
                return record(&index, id).ok_or_else(not_found);
            }
        }
        let prefix = name_or_id.strip_prefix("sha256:").unwrap_or(name_or_id);
        let is_hex = !prefix.is_empty()
            && prefix.len() <= 64
            && prefix
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        if !is_hex {
            return match parsed {
                Err(e @ Error::InvalidReference { .. }) => Err(e),
                _ => Err(not_found()),
            };
        }
        let candidates: Vec<&String> = index
            .images
            .keys()
            .filter(|id| id.starts_with(prefix))
            .collect();
        match candidates.as_slice() {
            [] => Err(not_found()),
            [id] => record(&index, id).ok_or_else(not_found),
            many => Err(Error::AmbiguousImage {
                prefix: prefix.to_string(),
                candidates: many.iter().map(|s| s.to_string()).collect(),
            }),
        }
    }

    /// The image configuration of image `id` (hex, optionally `sha256:`-prefixed),
    /// after checking that the blob's content matches its digest.
    pub fn config(&self, id: &str) -> Result<ImageConfiguration, Error> {
        let id = id.strip_prefix("sha256:").unwrap_or(id);
        if !is_sha256_hex(id) {
            return Err(Error::NoSuchImage {
                reference: id.to_string(),
            });
        }
        let path = self.blob_path(id);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(if self.load_index()?.images.contains_key(id) {
                    Error::Corrupt {
                        path,
                        reason: "the image's config blob is missing".into(),
                    }
                } else {
                    Error::NoSuchImage {
                        reference: id.to_string(),
                    }
                });
            }
            Err(e) => return Err(Error::io(format!("reading {path:?}"), e)),
        };
        let actual = sha256_hex(&bytes);
        if actual != id {
            return Err(Error::Corrupt {
                path,
                reason: format!("its content has digest sha256:{actual}, not the one in its name"),
            });
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::Corrupt {
            path,
            reason: format!("not a valid OCI image configuration: {e}"),
        })
    }

    /// The layers' extracted trees, TOP layer first (overlayfs `lowerdir` order).
    pub fn layer_dirs(&self, rec: &ImageRecord) -> Vec<PathBuf> {
        rec.layers
            .iter()
            .rev()
            .map(|d| {
                let hex = d.strip_prefix("sha256:").unwrap_or(d);
                self.root.join("layers").join(hex).join("diff")
            })
            .collect()
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }

    fn index_path(&self) -> PathBuf {
        self.root.join("index.json")
    }

    /// Takes the exclusive index lock; released when the guard drops.
    fn lock(&self) -> Result<Flock<File>, Error> {
        let path = self.root.join("index.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening the lock file {path:?}"), e))?;
        loop {
            match Flock::lock(file, FlockArg::LockExclusive) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(Error::io(format!("locking {path:?}"), errno.into()))
                }
            }
        }
    }

    fn load_index(&self) -> Result<Index, Error> {
        let path = self.index_path();
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(e) => return Err(Error::io(format!("reading {path:?}"), e)),
        };
        let corrupt = |reason: String| Error::Corrupt {
            path: path.clone(),
            reason,
        };
        let index: Index =
            serde_json::from_slice(&bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
        if index.version != INDEX_VERSION {
            return Err(Error::Unsupported {
                feature: format!("image index version {} (in {path:?}) is", index.version),
                hint: "this skiff reads version 1; use the skiff that wrote it".into(),
            });
        }
        for (id, img) in &index.images {
            if !is_sha256_hex(id) {
                return Err(corrupt(format!(
                    "image id {id:?} is not a sha256 hex digest"
                )));
            }
            if let Some(bad) = img
                .layers
                .iter()
                .find(|l| !l.strip_prefix("sha256:").is_some_and(is_sha256_hex))
            {
                return Err(corrupt(format!(
                    "image {id} has an invalid layer id {bad:?}"
                )));
            }
        }
        if let Some((tag, id)) = index
            .tags
            .iter()
            .find(|(_, id)| !index.images.contains_key(*id))
        {
            return Err(corrupt(format!("tag {tag} points to unknown image {id:?}")));
        }
        Ok(index)
    }

    fn save_index(&self, index: &Index) -> Result<(), Error> {
        let path = self.index_path();
        atomic_write_json(&path, index).map_err(|e| Error::io(format!("writing {path:?}"), e))
    }
}

fn record(index: &Index, id: &str) -> Option<ImageRecord> {
    let img = index.images.get(id)?;
    let repo_tags = index
        .tags
        .iter()
        .filter(|(_, v)| *v == id)
        .map(|(k, _)| k.clone())
        .collect();
    Some(ImageRecord {
        id: id.to_string(),
        layers: img.layers.clone(),
        created: img.created.clone(),
        size: img.size,
        repo_tags,
    })
}

fn build_config(
    diff_id: &str,
    created: &str,
    changes: &ImageChanges,
) -> Result<ImageConfiguration, Error> {
    let oci = |context: &str| {
        let context = context.to_string();
        move |source| Error::Oci { context, source }
    };
    let mut cfg = ConfigBuilder::default();
    if let Some(cmd) = &changes.cmd {
        cfg = cfg.cmd(cmd.clone());
    }
    if let Some(ep) = &changes.entrypoint {
        cfg = cfg.entrypoint(ep.clone());
    }
    if !changes.env.is_empty() {
        cfg = cfg.env(changes.env.clone());
    }
    if let Some(w) = &changes.workdir {
        cfg = cfg.working_dir(w.clone());
    }
    if let Some(u) = &changes.user {
        cfg = cfg.user(u.clone());
    }
    if !changes.labels.is_empty() {
        let labels: HashMap<String, String> = changes.labels.clone().into_iter().collect();
        cfg = cfg.labels(labels);
    }
    if let Some(s) = &changes.stop_signal {
        cfg = cfg.stop_signal(s.clone());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(oci("building the image rootfs"))?;
    let history = HistoryBuilder::default()
        .created(created)
        .created_by("skiff import")
        .build()
        .map_err(oci("building the image history"))?;
    ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(oci_arch()))
        .os(Os::Linux)
        .config(cfg.build().map_err(oci("building the image config"))?)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(oci("building the image configuration"))
}

/// JSON with object keys sorted (labels are a `HashMap` in oci-spec), so the bytes
/// and hence the image id do not depend on hash order.
fn canonical_json(config: &ImageConfiguration) -> Result<Vec<u8>, Error> {
    let encode = |e: serde_json::Error| Error::io("encoding the image config", io::Error::other(e));
    let value = serde_json::to_value(config).map_err(encode)?;
    serde_json::to_vec(&value).map_err(encode)
}

/// The OCI (GOARCH) name of the architecture this binary runs on.
pub fn oci_arch() -> &'static str {
    let big = cfg!(target_endian = "big");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" if big => "arm64be",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if big => "ppc64",
        "powerpc64" => "ppc64le",
        "powerpc" => "ppc",
        "mips64" if big => "mips64",
        "mips64" => "mips64le",
        "mips" if big => "mips",
        "mips" => "mipsle",
        "loongarch64" => "loong64",
        "riscv32" => "riscv",
        "sparc64" => "sparc64",
        other => other,
    }
}

/// 16 random bytes from the kernel, as hex.
fn random_hex() -> Result<String, Error> {
    let mut buf = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(super::hex(&buf))
}

/// The current time as RFC 3339 UTC (fixed width, so it sorts).
pub fn now_rfc3339() -> String {
    crate::timefmt::rfc3339(crate::timefmt::now_us())
}

#[cfg(test)]
#[path = "store_tests.rs"]
mod tests;
