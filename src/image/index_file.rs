//! The store's index file (`images.json`, plus the OCI `index.json` written beside it
//! for other tools) and its locks: the index lock, taken to update the index, and the
//! collection lock (see [`ImageStore::gc_lock`]).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use super::blob::parse_digest;
use super::names;
use super::store::{ImageStore, Index, IMAGES_FILE, INDEX_VERSION};
use super::{is_sha256_hex, Error};
use crate::fsutil::{atomic_replace, sync_dir};

impl ImageStore {
    pub(crate) fn index_path(&self) -> PathBuf {
        self.root.join(IMAGES_FILE)
    }

    /// Takes the exclusive index lock; released when the guard drops.
    pub(crate) fn lock(&self) -> Result<Flock<File>, Error> {
        self.flock("index.lock", FlockArg::LockExclusive)
    }

    /// The build cache's lock (`build-cache.lock`), exclusive: held across a read,
    /// change and write of the build cache's files so that two builds recording steps
    /// at once keep each other's entries. Blocks briefly (another build's write).
    pub(crate) fn build_cache_lock(&self) -> Result<Flock<File>, Error> {
        self.flock("build-cache.lock", FlockArg::LockExclusive)
    }

    /// The collection lock: shared while an image is being committed (its layers and
    /// blobs must not be freed under it), exclusive while unreferenced ones are freed.
    /// Blocks; call from a blocking thread.
    pub fn gc_lock(&self, exclusive: bool) -> Result<Flock<File>, Error> {
        let arg = if exclusive {
            FlockArg::LockExclusive
        } else {
            FlockArg::LockShared
        };
        self.flock("gc.lock", arg)
    }

    /// The collection lock, exclusive, if no one holds it now (`None` otherwise).
    pub fn try_gc_lock_exclusive(&self) -> Result<Option<Flock<File>>, Error> {
        match self.flock("gc.lock", FlockArg::LockExclusiveNonblock) {
            Ok(l) => Ok(Some(l)),
            Err(Error::Io { source, .. }) if source.kind() == std::io::ErrorKind::WouldBlock => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn flock(&self, name: &str, arg: FlockArg) -> Result<Flock<File>, Error> {
        let path = self.root.join(name);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&path)
            .map_err(|e| Error::io(format!("opening the lock file {path:?}"), e))?;
        loop {
            match Flock::lock(file, arg) {
                Ok(guard) => return Ok(guard),
                Err((f, Errno::EINTR)) => file = f,
                Err((_, errno)) => {
                    return Err(Error::io(format!("locking {path:?}"), errno.into()))
                }
            }
        }
    }

    pub(crate) fn load_index(&self) -> Result<Index, Error> {
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
        let mut index: Index =
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
                .chain(&img.layer_blobs)
                .chain(&img.manifest)
                .find(|l| parse_digest(l).is_err())
            {
                return Err(corrupt(format!(
                    "image {id} has an invalid layer or blob digest {bad:?}"
                )));
            }
        }
        index.migrated = names::migrate_digest_tags(&mut index);
        if let Some((tag, id)) = index
            .tags
            .iter()
            .find(|(_, id)| !index.images.contains_key(*id))
        {
            return Err(corrupt(format!("tag {tag} points to unknown image {id:?}")));
        }
        Ok(index)
    }

    /// Writes images.json, then the OCI `index.json` (tagged manifests) for other tools
    /// when it changed (an untagged image, e.g. a build step's, leaves it as it is).
    ///
    /// Each file's content is synced before its rename, and the store's directory once
    /// after both renames (not once per file), before this returns. A crash of the
    /// machine before that fsync leaves each file either as it was or as written (never
    /// torn): the old images.json names only what was durable when it was written (blobs
    /// and layers are synced before a record names them), so the store stays
    /// consistent and the new record is simply not there; index.json is not read by
    /// skiff (it is rewritten at the next save).
    pub(crate) fn save_index(&self, index: &Index) -> Result<(), Error> {
        let path = self.index_path();
        let data = serde_json::to_vec_pretty(index)
            .map_err(|e| Error::io(format!("encoding {path:?}"), io::Error::other(e)))?;
        atomic_replace(&path, &data).map_err(|e| Error::io(format!("writing {path:?}"), e))?;
        let mut manifests = Vec::new();
        for (tag, id) in &index.tags {
            let Some(m) = index.images.get(id).and_then(|i| i.manifest.as_ref()) else {
                continue;
            };
            let size = fs::metadata(self.blob_path(m)?).map_or(0, |md| md.len());
            manifests.push(serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": m,
                "size": size,
                "annotations": { "org.opencontainers.image.ref.name": tag },
            }));
        }
        let oci = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": manifests,
        });
        let p = self.root.join("index.json");
        let data = serde_json::to_vec_pretty(&oci)
            .map_err(|e| Error::io(format!("encoding {p:?}"), io::Error::other(e)))?;
        if fs::read(&p).map_or(true, |old| old != data) {
            atomic_replace(&p, &data).map_err(|e| Error::io(format!("writing {p:?}"), e))?;
        }
        sync_dir(&self.root).map_err(|e| Error::io(format!("syncing {:?}", self.root), e))
    }
}
