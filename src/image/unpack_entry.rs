//! Reading one tar entry's metadata for [`super::unpack`] (mode, owner, mtime, PAX
//! xattrs), and the errors extraction reports.

use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};
use tar::Entry;

use super::Error;

/// The PAX record prefix of extended attributes.
const PAX_XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// Metadata applied by this module (not by the tar crate) to one path.
pub(super) struct Meta {
    pub(super) mode: u32,
    pub(super) uid: u64,
    pub(super) gid: u64,
    pub(super) mtime: u64,
    pub(super) xattrs: Xattrs,
}

/// Extended attributes of one entry: (name, value) pairs.
pub(super) type Xattrs = Vec<(Vec<u8>, Vec<u8>)>;

pub(super) fn meta_of<S: Read>(entry: &mut Entry<'_, S>, name: &str) -> Result<Meta, Error> {
    let bad = |what: &str, e: io::Error| Error::InvalidLayer {
        reason: format!("entry {name:?} has an invalid {what} field: {e}"),
    };
    let h = entry.header();
    let mode = h.mode().map_err(|e| bad("mode", e))?;
    let uid = h.uid().map_err(|e| bad("uid", e))?;
    let gid = h.gid().map_err(|e| bad("gid", e))?;
    let mtime = h.mtime().map_err(|e| bad("mtime", e))?;
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs: xattrs_of(entry, name)?,
    })
}

/// The `SCHILY.xattr.*` PAX records of an entry.
pub(super) fn xattrs_of<S: Read>(entry: &mut Entry<'_, S>, name: &str) -> Result<Xattrs, Error> {
    let mut out = Vec::new();
    let exts = entry.pax_extensions().map_err(|e| Error::InvalidLayer {
        reason: format!("entry {name:?} has unreadable PAX headers: {e}"),
    })?;
    for ext in exts.into_iter().flatten() {
        let ext = ext.map_err(|e| Error::InvalidLayer {
            reason: format!("entry {name:?} has a malformed PAX record: {e}"),
        })?;
        if let Some(key) = ext.key_bytes().strip_prefix(PAX_XATTR_PREFIX) {
            out.push((key.to_vec(), ext.value_bytes().to_vec()));
        }
    }
    Ok(out)
}

/// The descriptions along an error chain (OS errors excluded) and the innermost errno.
pub(super) fn error_chain(e: &io::Error) -> (Vec<String>, Option<i32>) {
    let mut descs = Vec::new();
    let mut errno = None;
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        match err
            .downcast_ref::<io::Error>()
            .and_then(io::Error::raw_os_error)
        {
            Some(code) => errno = Some(code),
            None => descs.push(err.to_string()),
        }
        cur = err.source();
    }
    descs.dedup();
    (descs, errno)
}

pub(super) fn owner_error(
    path: &Path,
    uid: u64,
    gid: u64,
    errno: Option<i32>,
    e: io::Error,
) -> Error {
    if errno == Some(libc::EINVAL) {
        return Error::UnmappedOwner {
            path: path.to_path_buf(),
            uid,
            gid,
        };
    }
    let source = errno.map(io::Error::from_raw_os_error).unwrap_or(e);
    Error::io(
        format!(
            "setting the owner of {path:?} to {uid}:{gid} (keeping layer ownership needs \
             root inside a user namespace; use preserve_ownership: false otherwise)"
        ),
        source,
    )
}

/// Errors reading the archive: OS errors stay I/O errors, the rest mean a bad layer.
pub(super) fn read_error(e: io::Error) -> Error {
    let (descs, errno) = error_chain(&e);
    match errno {
        Some(_) => Error::io("reading the layer", e),
        None => Error::InvalidLayer {
            reason: format!(
                "not a valid tar archive (plain, gzip- or zstd-compressed): {}",
                descs.join(": ")
            ),
        },
    }
}

/// A `Read` adapter hashing everything read through it.
pub(super) struct HashingReader<R> {
    pub(super) inner: R,
    pub(super) hasher: Sha256,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }
}
