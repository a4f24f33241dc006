//! Safe extraction of one layer tar stream (plain or gzip) into a directory.
//!
//! The layer is untrusted. Every entry is checked before anything is written: absolute
//! paths, `..` components, hard links whose target escapes the layer and writes through
//! symlinks that lead outside the destination fail the whole import with
//! [`Error::UnsafeEntry`]. Writing itself goes through `tar::Entry::unpack_in`, which
//! canonicalises each entry's parent directory and refuses anything outside the
//! destination, so a check missed here is still caught there.
//!
//! Device nodes are skipped with a warning (an unprivileged user cannot create them).
//! OCI whiteouts become the storage drivers' form (what kernel overlayfs with `userxattr`,
//! skiff's FUSE overlay and the vfs copy read): `.wh.NAME` a 0/0 character device `NAME`
//! (which the root of a user namespace may create since Linux 5.8), `.wh..wh..opq` the
//! xattr `user.overlay.opaque=y` on its directory. Overlay xattrs (`user.overlay.*`,
//! `trusted.overlay.*`) recorded in the layer itself are dropped with a warning: only
//! whiteout entries may make a directory opaque.
//! Directory metadata (mode, owner, mtime, xattrs) is applied after all entries, deepest
//! first, so a read-only directory can still receive its children and directory mtimes
//! are not disturbed by later writes.
//!
//! Extended attributes are applied by this module rather than by the tar crate (which
//! fails the whole archive on the first refused attribute): one the kernel refuses (for
//! example `trusted.*` without `CAP_SYS_ADMIN`) becomes a warning in
//! [`UnpackStats::warnings`].
//!
//! On error the destination is left partially filled; the caller owns it and removes it.
//!
//! Known limits: a hard link to a symlink whose target is absolute is refused (the tar
//! crate resolves the link source on the host to check it); the tar crate reads PAX and
//! GNU long-name headers into memory whole, so `max_bytes` does not bound their size.

use std::fs;
use std::io::{self, Cursor, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tar::{Archive, Entry};

use super::fsops::{
    check_no_escape, lsetxattr, relative, set_mtime, start_writeback, WRITEBACK_MIN,
};
use super::unpack_entry::{
    error_chain, meta_of, owner_error, read_error, xattrs_of, HashingReader, Meta, Xattrs,
};
use super::zstd::ZstdReader;
use super::{hex, Error};

/// Limits and behaviour of [`unpack_layer`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnpackOptions {
    /// Give every entry the uid/gid recorded in the layer. Needs root in a user
    /// namespace that maps those ids; without it, everything is owned by the caller.
    pub preserve_ownership: bool,
    /// Most archive members accepted (all kinds, including skipped ones).
    pub max_entries: u64,
    /// Most bytes of entry data accepted (the sum of the entries' sizes).
    pub max_bytes: u64,
    /// Turn OCI whiteouts (`.wh.NAME`, `.wh..wh..opq`) into the storage drivers' form.
    /// Off for `skiff cp`, where such names are ordinary files, as in docker.
    pub whiteouts: bool,
}

impl Default for UnpackOptions {
    fn default() -> Self {
        UnpackOptions {
            preserve_ownership: true,
            max_entries: 1_000_000,
            max_bytes: 64 << 30,
            whiteouts: true,
        }
    }
}

/// The environment variable (of skiffd, inherited by its unpack helper) overriding
/// [`UnpackOptions::max_entries`].
pub const MAX_ENTRIES_ENV: &str = "SKIFF_LAYER_MAX_ENTRIES";
/// The environment variable overriding [`UnpackOptions::max_bytes`].
pub const MAX_BYTES_ENV: &str = "SKIFF_LAYER_MAX_BYTES";

impl UnpackOptions {
    /// The defaults, with the limits taken from `SKIFF_LAYER_MAX_ENTRIES` and
    /// `SKIFF_LAYER_MAX_BYTES` when set (`get` reads the environment).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<UnpackOptions, Error> {
        let mut o = UnpackOptions::default();
        for (var, field) in [
            (MAX_ENTRIES_ENV, &mut o.max_entries),
            (MAX_BYTES_ENV, &mut o.max_bytes),
        ] {
            if let Some(v) = get(var) {
                *field = v.trim().parse().map_err(|_| Error::InvalidLayer {
                    reason: format!("{var}={v:?} is not a number; set it to a positive integer"),
                })?;
            }
        }
        Ok(o)
    }
}

/// What [`unpack_layer`] extracted. Serialisable: the unpack helper process reports it
/// to the daemon as JSON.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnpackStats {
    /// `sha256:<hex>` of the uncompressed tar stream: the layer's OCI diff id.
    pub diff_id: String,
    /// Sum of the sizes of the regular files written.
    pub size: u64,
    /// Number of archive members read.
    pub entries: u64,
    /// Things skipped or only partly applied (device nodes, refused xattrs).
    pub warnings: Vec<String>,
    /// Whiteouts and opaque-directory markers applied.
    #[serde(default)]
    pub whiteouts: u64,
}

/// Warnings kept verbatim; further ones are only counted.
const MAX_WARNINGS: usize = 100;

/// Trailing data after the end-of-archive marker always accepted (record padding is
/// at most a few KiB), even when `max_bytes` is smaller.
const MIN_TRAILING_LIMIT: u64 = 1 << 20;

/// The OCI whiteout prefix.
const OCI_WH_PREFIX: &[u8] = b".wh.";
/// What follows the prefix in the opaque-directory marker `.wh..wh..opq`.
const OCI_OPAQUE_SUFFIX: &[u8] = b".wh..opq";
/// The xattr kernel overlayfs (`userxattr`) reads to make a directory opaque.
pub const OPAQUE_XATTR: &str = "user.overlay.opaque";

/// Extracts the layer read from `input` into `dest`, an existing (empty) directory.
///
/// The stream may be a plain tar, gzip- or zstd-compressed (detected from its first
/// bytes). See the module documentation for the safety rules.
pub fn unpack_layer<R: Read>(
    mut input: R,
    dest: &Path,
    opts: &UnpackOptions,
) -> Result<UnpackStats, Error> {
    let mut magic = [0u8; 4];
    let mut n = 0;
    while n < magic.len() {
        match input.read(&mut magic[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::io("reading the layer", e)),
        }
    }
    if n == 0 {
        return Err(Error::InvalidLayer {
            reason: "the layer is empty (0 bytes), expected a tar archive".into(),
        });
    }
    let head = magic[..n].to_vec();
    let stream = Cursor::new(head.clone()).chain(input);
    if head.starts_with(&[0x1f, 0x8b]) {
        extract(MultiGzDecoder::new(stream), dest, opts)
    } else if head == [0x28, 0xb5, 0x2f, 0xfd] {
        let reader =
            ZstdReader::new(io::BufReader::with_capacity(1 << 16, stream)).map_err(|e| {
                Error::InvalidLayer {
                    reason: e.to_string(),
                }
            })?;
        extract(reader, dest, opts)
    } else {
        extract(stream, dest, opts)
    }
}

/// A directory entry whose creation and metadata wait until all entries are written.
struct DeferredDir<'a, S: Read> {
    rel: PathBuf,
    name: String,
    entry: Entry<'a, HashingReader<S>>,
    meta: Meta,
}

struct Extraction<'o> {
    dest: PathBuf,
    dest_canon: PathBuf,
    opts: &'o UnpackOptions,
    stats: UnpackStats,
    bytes: u64,
    suppressed: u64,
    /// Directories marked opaque by `.wh..wh..opq`, relative to `dest`.
    opaque: Vec<PathBuf>,
}

fn extract<S: Read>(stream: S, dest: &Path, opts: &UnpackOptions) -> Result<UnpackStats, Error> {
    let dest_canon = dest
        .canonicalize()
        .map_err(|e| Error::io(format!("opening the extraction directory {dest:?}"), e))?;
    let mut x = Extraction {
        dest: dest.to_path_buf(),
        dest_canon,
        opts,
        stats: UnpackStats::default(),
        bytes: 0,
        suppressed: 0,
        opaque: Vec::new(),
    };
    let mut archive = Archive::new(HashingReader {
        inner: stream,
        hasher: Sha256::new(),
    });
    archive.set_preserve_permissions(true);
    archive.set_preserve_mtime(true);
    archive.set_preserve_ownerships(opts.preserve_ownership);
    archive.set_unpack_xattrs(false); // applied by `set_xattrs`, failures are warnings
    archive.set_overwrite(true);
    archive.set_mask(0);
    {
        let mut dirs = Vec::new();
        let mut root = None;
        let entries = archive.entries().map_err(read_error)?;
        for entry in entries {
            let entry = entry.map_err(read_error)?;
            x.entry(entry, &mut dirs, &mut root)?;
        }
        crate::phase::mark("unpack-entries-done");
        // Deepest first: children get their final mode and mtime before their parents.
        dirs.sort_by_key(|d| std::cmp::Reverse(d.rel.components().count()));
        for dir in dirs {
            x.finish_dir(dir)?;
        }
        crate::phase::mark("unpack-dirs-done");
        if let Some(meta) = root {
            let dest = x.dest.clone();
            x.apply_meta(&dest, ".", &meta)?;
        }
        for rel in std::mem::take(&mut x.opaque) {
            let dir = x.dest.join(&rel);
            lsetxattr(&dir, OPAQUE_XATTR.as_bytes(), b"y").map_err(|e| {
                Error::io(
                    format!(
                        "marking {dir:?} opaque (xattr {OPAQUE_XATTR}); the image store's \
                         filesystem must support user extended attributes"
                    ),
                    e,
                )
            })?;
        }
    }
    let mut rest = archive.into_inner();
    // The tar end marker may be followed by more zero blocks (record padding): they are
    // part of the uncompressed stream the diff id covers. Bounded, as a gzip bomb could
    // hide behind the end marker.
    let limit = opts.max_bytes.max(MIN_TRAILING_LIMIT);
    let trailing = io::copy(
        &mut (&mut rest).take(limit.saturating_add(1)),
        &mut io::sink(),
    )
    .map_err(read_error)?;
    if trailing > limit {
        return Err(Error::LimitExceeded {
            what: "max_bytes".into(),
            limit: opts.max_bytes,
        });
    }
    if x.suppressed > 0 {
        x.stats
            .warnings
            .push(format!("... and {} more warnings", x.suppressed));
    }
    x.stats.diff_id = format!("sha256:{}", hex(rest.hasher.finalize().as_slice()));
    Ok(x.stats)
}

impl Extraction<'_> {
    fn warn(&mut self, msg: String) {
        tracing::warn!("{msg}");
        if self.stats.warnings.len() < MAX_WARNINGS {
            self.stats.warnings.push(msg);
        } else {
            self.suppressed += 1;
        }
    }

    fn entry<'a, S: Read>(
        &mut self,
        mut entry: Entry<'a, HashingReader<S>>,
        dirs: &mut Vec<DeferredDir<'a, S>>,
        root: &mut Option<Meta>,
    ) -> Result<(), Error> {
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        self.stats.entries += 1;
        if self.stats.entries > self.opts.max_entries {
            return Err(Error::LimitExceeded {
                what: "max_entries".into(),
                limit: self.opts.max_entries,
            });
        }
        let unsafe_entry = |reason: String| Error::UnsafeEntry {
            path: name.clone(),
            reason,
        };
        let path = entry.path().map_err(|e| Error::InvalidLayer {
            reason: format!("entry {name:?} has an unreadable path: {e}"),
        })?;
        let rel = relative(&path).map_err(unsafe_entry)?;
        // Counted for every entry, skipped ones too: their data is still decompressed.
        let size = entry.size();
        self.bytes = self.bytes.saturating_add(size);
        if self.bytes > self.opts.max_bytes {
            return Err(Error::LimitExceeded {
                what: "max_bytes".into(),
                limit: self.opts.max_bytes,
            });
        }

        let kind = entry.header().entry_type();
        if kind.is_pax_global_extensions() {
            return Ok(());
        }
        if let Some(target) = rel
            .file_name()
            .filter(|_| self.opts.whiteouts)
            .and_then(|f| f.as_bytes().strip_prefix(OCI_WH_PREFIX))
        {
            let target = target.to_vec();
            return self.whiteout(&name, &rel, &target);
        }
        if kind.is_character_special() || kind.is_block_special() {
            self.warn(format!(
                "skipping device node {}: an unprivileged user cannot create device nodes",
                rel.display()
            ));
            return Ok(());
        }

        if rel.as_os_str().is_empty() {
            if !kind.is_dir() {
                return Err(unsafe_entry(
                    "it names the layer root but is not a directory".into(),
                ));
            }
            *root = Some(meta_of(&mut entry, &name)?);
            return Ok(());
        }
        let parent = rel.parent().unwrap_or(Path::new(""));
        check_no_escape(&self.dest, &self.dest_canon, parent).map_err(unsafe_entry)?;
        self.create_parents(parent)?;

        if kind.is_hard_link() {
            let target = entry
                .link_name()
                .map_err(|e| Error::InvalidLayer {
                    reason: format!("hard link {name:?} has an unreadable target: {e}"),
                })?
                .ok_or_else(|| Error::InvalidLayer {
                    reason: format!("hard link {name:?} has no target"),
                })?;
            let target_rel =
                relative(&target).map_err(|r| unsafe_entry(format!("its hard link target {r}")))?;
            check_no_escape(&self.dest, &self.dest_canon, &target_rel)
                .map_err(|r| unsafe_entry(format!("its hard link target {r}")))?;
            if fs::symlink_metadata(self.dest.join(&target_rel)).is_err() {
                return Err(Error::InvalidLayer {
                    reason: format!(
                        "hard link {name:?} points to {:?}, which is not (yet) in the layer",
                        target_rel
                    ),
                });
            }
        } else if kind.is_file() || !(kind.is_dir() || kind.is_symlink() || kind.is_fifo()) {
            // Everything the tar crate writes as a regular file (it treats unknown types
            // as regular files, as POSIX asks).
            self.stats.size = self.stats.size.saturating_add(size);
        }

        if kind.is_dir() {
            let meta = meta_of(&mut entry, &name)?;
            dirs.push(DeferredDir {
                rel,
                name,
                entry,
                meta,
            });
            return Ok(());
        }

        let xattrs = if kind.is_hard_link() {
            Vec::new()
        } else {
            xattrs_of(&mut entry, &name)?
        };
        let uid = entry.header().uid().unwrap_or(0);
        let gid = entry.header().gid().unwrap_or(0);
        self.unpack_in(&mut entry, &name, &rel, uid, gid)?;
        let full = self.dest.join(&rel);
        if kind.is_fifo() {
            // The tar crate writes FIFOs as empty regular files: replace it.
            let meta = meta_of(&mut entry, &name)?;
            fs::remove_file(&full)
                .map_err(|e| Error::io(format!("replacing {full:?} with a FIFO"), e))?;
            nix::unistd::mkfifo(&full, Mode::from_bits_truncate(0o600))
                .map_err(|e| Error::io(format!("creating the FIFO {full:?}"), e.into()))?;
            self.apply_meta(&full, &name, &meta)?;
        } else {
            self.set_xattrs(&full, &name, &xattrs);
            // A layer (not `skiff cp`'s files): its sync before the store names it waits less.
            if kind.is_file() && size >= WRITEBACK_MIN && self.opts.whiteouts {
                start_writeback(&full);
            }
        }
        Ok(())
    }

    /// Applies the whiteout entry `rel` (`DIR/.wh.TARGET`).
    fn whiteout(&mut self, name: &str, rel: &Path, target: &[u8]) -> Result<(), Error> {
        let unsafe_entry = |reason: String| Error::UnsafeEntry {
            path: name.to_string(),
            reason,
        };
        let parent = rel.parent().unwrap_or(Path::new(""));
        check_no_escape(&self.dest, &self.dest_canon, parent).map_err(unsafe_entry)?;
        self.create_parents(parent)?;
        self.stats.whiteouts += 1;
        if target == OCI_OPAQUE_SUFFIX {
            self.opaque.push(parent.to_path_buf());
            return Ok(());
        }
        if target.is_empty() || target.starts_with(OCI_WH_PREFIX) || target == b"." {
            return Err(Error::InvalidLayer {
                reason: format!("whiteout {name:?} names no valid file"),
            });
        }
        let full = self
            .dest
            .join(parent)
            .join(std::ffi::OsStr::from_bytes(target));
        if fs::symlink_metadata(&full).is_ok() {
            // The layer both adds and deletes the name: the addition wins, as in docker.
            self.warn(format!(
                "ignoring whiteout {name}: the layer also contains {}",
                parent.join(std::ffi::OsStr::from_bytes(target)).display()
            ));
            return Ok(());
        }
        nix::sys::stat::mknod(
            &full,
            nix::sys::stat::SFlag::S_IFCHR,
            Mode::empty(),
            nix::sys::stat::makedev(0, 0),
        )
        .map_err(|e| {
            Error::io(
                format!(
                    "creating the whiteout {full:?} (a 0/0 character device; needs Linux \
                     5.8 or later in a user namespace)"
                ),
                e.into(),
            )
        })
    }

    /// Creates a deferred directory (if no child created it) and applies its metadata.
    fn finish_dir<S: Read>(&mut self, mut dir: DeferredDir<'_, S>) -> Result<(), Error> {
        let parent = dir.rel.parent().unwrap_or(Path::new(""));
        check_no_escape(&self.dest, &self.dest_canon, parent).map_err(|reason| {
            Error::UnsafeEntry {
                path: dir.name.clone(),
                reason,
            }
        })?;
        self.create_parents(parent)?;
        let (uid, gid) = (dir.meta.uid, dir.meta.gid);
        self.unpack_in(&mut dir.entry, &dir.name, &dir.rel, uid, gid)?;
        let full = self.dest.join(&dir.rel);
        self.set_xattrs(&full, &dir.name, &dir.meta.xattrs);
        set_mtime(&full, dir.meta.mtime)
    }

    fn unpack_in<S: Read>(
        &mut self,
        entry: &mut Entry<'_, HashingReader<S>>,
        name: &str,
        rel: &Path,
        uid: u64,
        gid: u64,
    ) -> Result<(), Error> {
        match entry.unpack_in(&self.dest) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Error::UnsafeEntry {
                path: name.to_string(),
                reason: "the tar crate refused to place it inside the layer".into(),
            }),
            Err(e) => Err(self.unpack_error(e, name, rel, uid, gid)),
        }
    }

    fn unpack_error(&self, e: io::Error, name: &str, rel: &Path, uid: u64, gid: u64) -> Error {
        let (descs, errno) = error_chain(&e);
        let text = descs.join(": ");
        if self.opts.preserve_ownership && text.contains("failed to set ownerships") {
            return owner_error(&self.dest.join(rel), uid, gid, errno, e);
        }
        if text.contains("outside of destination") {
            return Error::UnsafeEntry {
                path: name.to_string(),
                reason: "it would be written through a symlink leading outside the layer".into(),
            };
        }
        // The tar crate's own descriptions only name the file by its full path (in the
        // staging directory, which means nothing to the user): the entry's name does.
        let said: Vec<&String> = descs
            .iter()
            .filter(|d| !d.starts_with("failed to unpack `"))
            .collect();
        let text = said
            .iter()
            .map(|d| d.as_str())
            .collect::<Vec<_>>()
            .join(": ");
        match errno {
            Some(code) if text.is_empty() => Error::io(
                format!("extracting layer entry {name:?}"),
                io::Error::from_raw_os_error(code),
            ),
            Some(code) => Error::io(
                format!("extracting layer entry {name:?} ({text})"),
                io::Error::from_raw_os_error(code),
            ),
            None => Error::InvalidLayer {
                reason: format!("entry {name:?} cannot be extracted: {text}"),
            },
        }
    }

    /// Creates the missing directories of `rel` (already checked by `check_no_escape`)
    /// with mode 0755 whatever the umask, as docker does for parents the layer does not
    /// list; a directory entry met later sets its own mode.
    fn create_parents(&self, rel: &Path) -> Result<(), Error> {
        let mut cur = self.dest.clone();
        for c in rel.components() {
            cur.push(c);
            if fs::symlink_metadata(&cur).is_err() {
                fs::create_dir(&cur)
                    .and_then(|()| fs::set_permissions(&cur, fs::Permissions::from_mode(0o755)))
                    .map_err(|e| Error::io(format!("creating the directory {cur:?}"), e))?;
            }
        }
        Ok(())
    }

    /// Owner, mode, xattrs and mtime for paths the tar crate does not finish itself.
    fn apply_meta(&mut self, path: &Path, name: &str, m: &Meta) -> Result<(), Error> {
        if self.opts.preserve_ownership {
            // An id that does not even fit in 32 bits cannot be mapped either.
            let ids = u32::try_from(m.uid).ok().zip(u32::try_from(m.gid).ok());
            let result = match ids {
                Some((uid, gid)) => std::os::unix::fs::lchown(path, Some(uid), Some(gid)),
                None => Err(io::Error::from_raw_os_error(libc::EINVAL)),
            };
            if let Err(e) = result {
                return Err(owner_error(path, m.uid, m.gid, e.raw_os_error(), e));
            }
        }
        fs::set_permissions(path, fs::Permissions::from_mode(m.mode & 0o7777))
            .map_err(|e| Error::io(format!("setting the mode of {path:?}"), e))?;
        self.set_xattrs(path, name, &m.xattrs);
        set_mtime(path, m.mtime)
    }

    fn set_xattrs(&mut self, path: &Path, name: &str, xattrs: &Xattrs) {
        for (key, value) in xattrs {
            if key.starts_with(b"user.overlay.") || key.starts_with(b"trusted.overlay.") {
                self.warn(format!(
                    "dropping the overlay attribute {} of {name}: only whiteout entries may \
                     change the merged view",
                    String::from_utf8_lossy(key)
                ));
                continue;
            }
            if let Err(e) = lsetxattr(path, key, value) {
                self.warn(format!(
                    "could not set extended attribute {} on {name}: {e}",
                    String::from_utf8_lossy(key)
                ));
            }
        }
    }
}

#[cfg(test)]
#[path = "unpack_tests.rs"]
mod tests;
