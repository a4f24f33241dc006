//! The store's blobs: `blobs/sha256/<hex>`, written through `tmp/` (see [`BlobWriter`])
//! and verified when read whole.

use std::fs;
use std::io;
use std::path::PathBuf;

use super::blob::{parse_digest, BlobWriter};
use super::imgconfig::random_hex;
use super::store::ImageStore;
use super::{sha256_hex, Error};

impl ImageStore {
    /// Whether the blob `digest` (`sha256:<hex>`) is in the store. An invalid digest is
    /// never present.
    pub fn has_blob(&self, digest: &str) -> bool {
        parse_digest(digest).is_ok_and(|h| self.blob_file(h).is_file())
    }

    /// The path of blob `digest` (`sha256:<hex>`), whether or not it exists; fails on a
    /// digest that is not sha256 or malformed.
    pub fn blob_path(&self, digest: &str) -> Result<PathBuf, Error> {
        Ok(self.blob_file(parse_digest(digest)?))
    }

    /// Starts writing a blob (see [`BlobWriter`]).
    pub fn blob_writer(&self) -> Result<BlobWriter, Error> {
        BlobWriter::create(
            &self.root.join("tmp"),
            &self.root.join("blobs/sha256"),
            &random_hex()?,
        )
    }

    /// Reads a whole blob, verifying its digest.
    pub fn read_blob(&self, digest: &str) -> Result<Vec<u8>, Error> {
        let path = self.blob_path(digest)?;
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(Error::MissingBlob {
                    digest: digest.to_string(),
                    hint: "write it first".into(),
                })
            }
            Err(e) => return Err(Error::io(format!("reading {path:?}"), e)),
        };
        let actual = format!("sha256:{}", sha256_hex(&bytes));
        if actual != digest {
            return Err(Error::Corrupt {
                path,
                reason: format!("its content has digest {actual}"),
            });
        }
        Ok(bytes)
    }

    /// Writes a small blob made in memory; returns (`sha256:<hex>`, size).
    pub fn write_blob(&self, data: &[u8]) -> Result<(String, u64), Error> {
        let digest = format!("sha256:{}", sha256_hex(data));
        if self.has_blob(&digest) {
            return Ok((digest, data.len() as u64));
        }
        let mut w = self.blob_writer()?;
        std::io::Write::write_all(&mut w, data).map_err(|e| Error::io("writing a blob", e))?;
        let size = w.commit(&digest)?;
        Ok((digest, size))
    }

    /// The path of blob `<hex>` under `blobs/sha256/`.
    pub(crate) fn blob_file(&self, hex: &str) -> PathBuf {
        self.root.join("blobs/sha256").join(hex)
    }
}
