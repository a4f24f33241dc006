//! The image store: image references, safe layer extraction and the on-disk store.
//!
//! This is the minimal store of the first milestone: an image is imported from a single
//! layer tarball (`skiff image import FILE NAME`), extracted once into
//! `layers/<diff-id>/diff/` and described by an OCI image configuration blob in
//! `blobs/sha256/<id>`. The layout is shaped to grow into the OCI image-layout form
//! (manifests and compressed layer blobs next to the configs) when registry pulls arrive.
//!
//! * [`reference`] parses and normalises image references (docker's grammar and rules).
//! * [`unpack`] extracts one layer tar stream (plain or gzip) into a directory, refusing
//!   entries that would escape it, and computes the layer's diff id on the way.
//! * [`store`] keeps the content-addressed blobs, the shared layer trees and the index of
//!   images and tags.
//!
//! All failures are reported through the single [`Error`] type; its messages name the
//! problem and, where there is one, the fix.

pub mod archive;
pub mod blob;
pub mod changes;
pub mod derive;
pub mod durability;
mod fsops;
mod imgconfig;
mod index_file;
pub mod keepid_copies;
pub mod layer_diff;
pub mod leases;
mod lookup;
pub mod manifest;
pub mod names;
pub mod pins;
pub mod progress;
pub mod reference;
pub mod registry;
pub mod remove;
pub mod store;
mod store_blobs;
mod store_layers;
pub mod unpack;
mod unpack_entry;
mod zstd;

pub use blob::{parse_digest, BlobWriter};
/// A tar entry path's normal components, or why it is unsafe (absolute, `..`).
pub(crate) use fsops::relative as relative_path;
pub use manifest::{LayerRef, ParsedManifest};
pub use reference::Reference;
pub use remove::Removal;
pub use store::{
    repository_of, CommitOutcome, ImageChanges, ImageRecord, ImageStore, NewImage, Staging,
};
pub use unpack::{unpack_layer, UnpackOptions, UnpackStats};

use std::path::PathBuf;

/// Everything that can go wrong in the image module.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An image reference does not follow the `NAME[:TAG][@DIGEST]` grammar.
    #[error("invalid image reference {reference:?}: {reason}")]
    InvalidReference {
        /// The reference as the user gave it.
        reference: String,
        /// What is wrong with it.
        reason: String,
    },

    /// A feature the input needs that this version of skiff does not implement.
    #[error("{feature} not supported yet{}", hint_suffix(.hint))]
    Unsupported {
        /// What is not supported, e.g. "zstd layers are".
        feature: String,
        /// How to get around it (may be empty).
        hint: String,
    },

    /// A digest string is not `sha256:<64 hex digits>`.
    #[error("invalid digest {digest:?}: {reason}")]
    InvalidDigest {
        /// The digest as given.
        digest: String,
        /// What is wrong with it.
        reason: String,
    },

    /// Content does not have the digest it was announced with (a blob, or a layer's
    /// uncompressed stream against the config's diff id).
    #[error(
        "content digest mismatch: expected {expected}, got {actual}; the data is corrupt \
         or was tampered with, fetch or export it again"
    )]
    DigestMismatch {
        /// The announced digest.
        expected: String,
        /// The digest of what was actually read.
        actual: String,
    },

    /// A blob a manifest or configuration refers to is not in the store.
    #[error("blob {digest} is not in the image store: {hint}")]
    MissingBlob {
        /// The missing blob's digest.
        digest: String,
        /// Who needed it and what to do.
        hint: String,
    },

    /// A manifest, image configuration or archive is malformed or unsupported.
    #[error("invalid image {what}: {reason}")]
    InvalidImage {
        /// What was being read (e.g. "manifest sha256:..").
        what: String,
        /// What is wrong.
        reason: String,
    },

    /// A layer entry that would write outside the extraction directory (or is otherwise
    /// hostile). The whole import fails.
    #[error("refusing layer entry {path:?}: {reason}; the layer is unsafe and was not imported")]
    UnsafeEntry {
        /// The entry's path as recorded in the archive.
        path: String,
        /// Why it is refused.
        reason: String,
    },

    /// The layer is not a well-formed archive in a way that is not a security problem.
    #[error("invalid layer: {reason}")]
    InvalidLayer {
        /// What is wrong.
        reason: String,
    },

    /// A layer exceeds one of the [`UnpackOptions`] limits.
    #[error(
        "the layer exceeds the {what} limit of {limit}; if the image is legitimate, \
         raise skiffd's layer-max-entries or layer-max-bytes (skiffd.toml, the flags \
         of the same names, or skiffd's environment: SKIFF_LAYER_MAX_ENTRIES, \
         SKIFF_LAYER_MAX_BYTES)"
    )]
    LimitExceeded {
        /// The name of the option whose limit was hit (`max_entries` or `max_bytes`).
        what: String,
        /// The limit in force.
        limit: u64,
    },

    /// A file in the layer is owned by a uid/gid the user namespace does not map.
    #[error(
        "cannot give {path:?} the owner {uid}:{gid}: that id is not mapped in the user \
         namespace; the image needs a subordinate id range for your user, add one with: \
         sudo usermod --add-subuids 100000-165535 --add-subgids 100000-165535 $USER"
    )]
    UnmappedOwner {
        /// The file whose owner could not be set.
        path: PathBuf,
        /// The uid recorded in the layer.
        uid: u64,
        /// The gid recorded in the layer.
        gid: u64,
    },

    /// The image is used by a running build (see [`leases`]).
    #[error(
        "image {image} is used by a running {build}: wait for the build to end or cancel it, \
         then remove the image"
    )]
    UsedByBuild {
        /// The image as the user named it.
        image: String,
        /// The build (`build -t NAME`).
        build: String,
    },

    /// No image matches a name or id.
    #[error("no such image {reference:?}: import or pull it first (skiff image import FILE NAME)")]
    NoSuchImage {
        /// What the user asked for.
        reference: String,
    },

    /// An id prefix matches more than one image.
    #[error(
        "image id prefix {prefix:?} is ambiguous, it matches {}: give more characters",
        candidates.join(", ")
    )]
    AmbiguousImage {
        /// The prefix the user gave.
        prefix: String,
        /// The full ids it matches.
        candidates: Vec<String>,
    },

    /// A store file is damaged (unparsable, or its content does not match its digest).
    #[error(
        "image store file {path:?} is corrupt: {reason}; remove it (and re-import the \
         affected images) to recover"
    )]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },

    /// Building an OCI structure failed.
    #[error("{context}: {source}")]
    Oci {
        /// What was being built.
        context: String,
        /// The underlying error.
        #[source]
        source: oci_spec::OciSpecError,
    },

    /// An I/O operation failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, naming the file.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

fn hint_suffix(hint: &str) -> String {
    if hint.is_empty() {
        String::new()
    } else {
        format!("; {hint}")
    }
}

impl Error {
    /// Wraps an I/O error with a description of what was being done.
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            context: context.into(),
            source,
        }
    }
}

/// Lower-case hex encoding of a byte string (digests).
pub(crate) fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// sha256 of `data` as lower-case hex.
pub(crate) fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex(&sha2::Sha256::digest(data))
}

/// Whether `s` is a full sha256 hex digest (64 lower-case hex characters).
pub(crate) fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_of_empty_sha256() {
        assert_eq!(
            sha256_hex(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert!(is_sha256_hex(&sha256_hex(b"x")));
        assert!(!is_sha256_hex("E3B0"));
    }

    #[test]
    fn messages_name_the_fix() {
        let e = Error::UnmappedOwner {
            path: "/x/etc/shadow".into(),
            uid: 0,
            gid: 42,
        };
        assert!(e.to_string().contains("sudo usermod --add-subuids"));
        let e = Error::LimitExceeded {
            what: "max_entries".into(),
            limit: 3,
        };
        assert!(e.to_string().contains("layer-max-entries"), "{e}");
        let e = Error::Unsupported {
            feature: "zstd layers are".into(),
            hint: String::new(),
        };
        assert_eq!(e.to_string(), "zstd layers are not supported yet");
    }
}
