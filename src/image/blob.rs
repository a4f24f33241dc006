//! Writing content-addressed blobs: [`BlobWriter`] streams into a temporary file in the
//! store's `tmp/`, hashing as it goes, and [`BlobWriter::commit`] verifies the sha256,
//! fsyncs and renames the file to `blobs/sha256/<hex>`. A writer dropped without commit
//! removes its temporary file, so an interrupted download or load leaves nothing behind
//! but (after a crash) a `tmp/blob-*` file that the next daemon start collects.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::{hex, is_sha256_hex, Error};
use crate::fsutil::sync_dir;

/// Splits `sha256:<hex>` into its hex part, or says why it is not a sha256 digest.
pub fn parse_digest(digest: &str) -> Result<&str, Error> {
    match digest.split_once(':') {
        Some(("sha256", h)) if is_sha256_hex(h) => Ok(h),
        Some((alg, _)) if alg != "sha256" => Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: format!("algorithm {alg:?} is not supported, only sha256 is"),
        }),
        _ => Err(Error::InvalidDigest {
            digest: digest.to_string(),
            reason: "expected sha256: followed by 64 lower-case hex digits".into(),
        }),
    }
}

/// A blob being written; see the module documentation.
#[derive(Debug)]
pub struct BlobWriter {
    file: Option<File>,
    tmp: PathBuf,
    blobs: PathBuf,
    hasher: Sha256,
    size: u64,
}

impl BlobWriter {
    /// Creates the temporary file `tmp_dir/blob-<random>`; committed blobs go to `blobs`
    /// (the store's `blobs/sha256`).
    pub(crate) fn create(tmp_dir: &Path, blobs: &Path, random: &str) -> Result<Self, Error> {
        let tmp = tmp_dir.join(format!("blob-{random}"));
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(|e| Error::io(format!("creating the blob temporary file {tmp:?}"), e))?;
        Ok(BlobWriter {
            file: Some(file),
            tmp,
            blobs: blobs.to_path_buf(),
            hasher: Sha256::new(),
            size: 0,
        })
    }

    /// Bytes written so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// `sha256:<hex>` of what was written so far.
    pub fn digest(&self) -> String {
        format!("sha256:{}", hex(&self.hasher.clone().finalize()))
    }

    /// Verifies that the content's digest is `expected_digest` (`sha256:<hex>`), makes it
    /// durable and moves it to `blobs/sha256/<hex>` (an existing blob with that digest is
    /// kept: same digest, same content). Returns the blob's size.
    ///
    /// A mismatch is [`Error::DigestMismatch`] and removes the temporary file.
    pub fn commit(mut self, expected_digest: &str) -> Result<u64, Error> {
        let expected_hex = parse_digest(expected_digest)?.to_string();
        let actual = self.digest();
        if actual != format!("sha256:{expected_hex}") {
            return Err(Error::DigestMismatch {
                expected: expected_digest.to_string(),
                actual,
            });
        }
        self.finish(&expected_hex)
    }

    /// Commits the blob under the digest of what was written: for content skiff makes
    /// itself (or an archive member whose digest is only known once read). Returns
    /// (`sha256:<hex>`, size).
    pub fn commit_computed(mut self) -> Result<(String, u64), Error> {
        let digest = self.digest();
        let hex = digest.trim_start_matches("sha256:").to_string();
        let size = self.finish(&hex)?;
        Ok((digest, size))
    }

    /// [`BlobWriter::commit_computed`] without the fsync of `blobs/sha256` after the
    /// rename: the content is synced, the name may still be lost in a crash of the
    /// machine until the caller syncs the directory ([`ImageStore::write_blobs`] does,
    /// once for several blobs, before anything refers to them). Returns (`sha256:<hex>`,
    /// size, whether the file was renamed into place).
    ///
    /// [`ImageStore::write_blobs`]: super::ImageStore::write_blobs
    pub(crate) fn commit_computed_unsynced_name(mut self) -> Result<(String, u64, bool), Error> {
        let digest = self.digest();
        let hex = digest.trim_start_matches("sha256:").to_string();
        let (size, renamed) = self.finish_with(&hex, false)?;
        Ok((digest, size, renamed))
    }

    fn finish(&mut self, hex: &str) -> Result<u64, Error> {
        self.finish_with(hex, true).map(|(size, _)| size)
    }

    fn finish_with(&mut self, hex: &str, sync_name: bool) -> Result<(u64, bool), Error> {
        let file = self.file.take().ok_or_else(|| Error::Io {
            context: "committing a blob".into(),
            source: io::Error::other("the blob writer was already used"),
        })?;
        file.sync_all()
            .map_err(|e| Error::io(format!("syncing {:?}", self.tmp), e))?;
        crate::phase::mark("blob-synced");
        drop(file);
        let dest = self.blobs.join(hex);
        if dest.exists() {
            let _ = fs::remove_file(&self.tmp);
            return Ok((self.size, false));
        }
        fs::rename(&self.tmp, &dest)
            .map_err(|e| Error::io(format!("moving {:?} to {dest:?}", self.tmp), e))?;
        if sync_name {
            sync_dir(&self.blobs).map_err(|e| Error::io(format!("syncing {:?}", self.blobs), e))?;
        }
        Ok((self.size, true))
    }
}

impl Write for BlobWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let file = self
            .file
            .as_mut()
            .ok_or_else(|| io::Error::other("the blob was already committed"))?;
        let n = file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match self.file.as_mut() {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}

impl Drop for BlobWriter {
    fn drop(&mut self) {
        // After a commit the temporary file is gone already (renamed or removed).
        if self.file.take().is_some() {
            let _ = fs::remove_file(&self.tmp);
        }
    }
}

impl super::ImageStore {
    /// Writes small blobs made in memory (e.g. an image's config and manifest) with one
    /// fsync of `blobs/sha256` for all of them instead of one each; returns (`sha256:<hex>`,
    /// size) for each. Crash consistency as [`write_blob`](super::ImageStore::write_blob)'s: each content is
    /// synced before its rename, and the directory is synced after the renames, before
    /// this returns, so before any record (the index) can name these blobs. A crash of
    /// the machine before that fsync may lose some of the names: no record names them
    /// yet, so that is only a blob never written; one whose name stayed is an
    /// unreferenced blob, as after a crash between two `write_blob` calls.
    pub fn write_blobs(&self, data: &[&[u8]]) -> Result<Vec<(String, u64)>, Error> {
        let mut out = Vec::with_capacity(data.len());
        let mut renamed = false;
        for d in data {
            let digest = format!("sha256:{}", super::sha256_hex(d));
            if self.has_blob(&digest) {
                out.push((digest, d.len() as u64));
                continue;
            }
            let mut w = self.blob_writer()?;
            std::io::Write::write_all(&mut w, d).map_err(|e| Error::io("writing a blob", e))?;
            let (digest, size, r) = w.commit_computed_unsynced_name()?;
            renamed |= r;
            out.push((digest, size));
        }
        if renamed {
            let blobs = self.root().join("blobs/sha256");
            sync_dir(&blobs).map_err(|e| Error::io(format!("syncing {blobs:?}"), e))?;
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use crate::image::store::tests::new_store;

    /// Blobs written together are the blobs `write_blob` writes: same digests, sizes
    /// and content; one already there is kept.
    #[test]
    fn write_blobs_writes_each_as_write_blob_does() {
        let (_t, store) = new_store();
        let (known, _) = store.write_blob(b"known").unwrap();
        let got = store.write_blobs(&[b"config", b"known", b""]).unwrap();
        let want: Vec<(String, u64)> = [&b"config"[..], b"known", b""]
            .iter()
            .map(|d| {
                (
                    format!("sha256:{}", super::super::sha256_hex(d)),
                    d.len() as u64,
                )
            })
            .collect();
        assert_eq!(got, want);
        assert_eq!(got[1].0, known);
        for ((digest, _), data) in got.iter().zip([&b"config"[..], b"known", b""]) {
            assert_eq!(store.read_blob(digest).unwrap(), data);
        }
        assert!(store.leftovers().unwrap().is_empty());
    }
}
