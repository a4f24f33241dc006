//! Image archives: reading docker-archive (`docker save`/`podman save`), oci-archive and
//! OCI layout directories into the store's blobs, and writing docker-archive and
//! oci-archive.
//!
//! Reading only fills blobs: each image comes out as a manifest blob (an OCI manifest
//! made for docker-archives) plus its names, which the daemon then commits like a pulled
//! image (layers extracted in the user namespace, diff ids verified). Archive members are
//! never written to the filesystem under their own names: small ones are kept in memory,
//! large ones streamed into blobs, so a hostile archive cannot place files anywhere.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use serde::Deserialize;

use super::manifest::{build_manifest, layer_media_type, parse_manifest, LayerRef};
use super::progress::{CountingReader, Progress};
use super::{parse_digest, sha256_hex, Error, ImageRecord, ImageStore, Reference};

/// Members up to this size are kept in memory while reading an archive.
const IN_MEMORY: u64 = 4 << 20;

/// The OCI annotation naming an image in an index.
const REF_NAME: &str = "org.opencontainers.image.ref.name";

/// One image found in an archive, its blobs in the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Loaded {
    /// `sha256:<hex>` of its manifest blob.
    pub manifest: String,
    /// The names the archive gives it (normalised).
    pub names: Vec<Reference>,
}

/// An archive member: in memory or already a blob.
enum Member {
    Data(Vec<u8>),
    Blob { digest: String, size: u64 },
    Link(PathBuf),
}

/// The archive formats [`save`] writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `manifest.json` + `<id>.json` + uncompressed `<diff-id>.tar` layers.
    DockerArchive,
    /// An OCI image layout in a tar.
    OciArchive,
}

impl std::str::FromStr for Format {
    type Err = Error;
    fn from_str(s: &str) -> Result<Format, Error> {
        match s {
            "docker-archive" => Ok(Format::DockerArchive),
            "oci-archive" => Ok(Format::OciArchive),
            other => Err(Error::Unsupported {
                feature: format!("archive format {other:?} is"),
                hint: "use docker-archive or oci-archive".into(),
            }),
        }
    }
}

fn bad(reason: impl Into<String>) -> Error {
    Error::InvalidImage {
        what: "archive".into(),
        reason: reason.into(),
    }
}

/// Reads a docker-archive or oci-archive (tar, plain or gzip) from `input` into blobs.
pub fn load_archive(store: &ImageStore, input: impl Read) -> Result<Vec<Loaded>, Error> {
    let mut head = [0u8; 2];
    let mut input = io::BufReader::with_capacity(1 << 20, input);
    let buf = io::BufRead::fill_buf(&mut input).map_err(|e| Error::io("reading the archive", e))?;
    if buf.is_empty() {
        return Err(bad("the archive is empty (0 bytes)"));
    }
    head[..buf.len().min(2)].copy_from_slice(&buf[..buf.len().min(2)]);
    let reader: Box<dyn Read> = if head == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(input))
    } else {
        Box::new(input)
    };
    let mut members: HashMap<PathBuf, Member> = HashMap::new();
    let mut archive = tar::Archive::new(reader);
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("not a tar archive: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| bad(format!("unreadable member name: {e}")))?;
        let Some(name) = clean(&path) else {
            return Err(bad(format!("member {path:?} leaves the archive")));
        };
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            let target = entry
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad(format!("link {name:?} has no target")))?;
            let resolved = if kind.is_symlink() {
                name.parent().unwrap_or(Path::new("")).join(target)
            } else {
                target.to_path_buf()
            };
            let resolved = clean(&resolved)
                .ok_or_else(|| bad(format!("link {name:?} points outside the archive")))?;
            members.insert(name, Member::Link(resolved));
        } else if kind.is_file() {
            let size = entry.size();
            let member = if size <= IN_MEMORY {
                let mut data = Vec::with_capacity(size as usize);
                entry
                    .read_to_end(&mut data)
                    .map_err(|e| Error::io(format!("reading archive member {name:?}"), e))?;
                Member::Data(data)
            } else {
                let mut w = store.blob_writer()?;
                io::copy(&mut entry, &mut w)
                    .map_err(|e| Error::io(format!("reading archive member {name:?}"), e))?;
                let (digest, size) = w.commit_computed()?;
                Member::Blob { digest, size }
            };
            members.insert(name, member);
        }
    }
    let archive = Archive { members };
    if archive.get("manifest.json").is_some() {
        archive.docker(store)
    } else if archive.get("index.json").is_some() {
        archive.oci(store)
    } else {
        Err(bad(
            "it has neither manifest.json (docker-archive) nor index.json (oci-archive)",
        ))
    }
}

/// Reads an OCI image layout directory into blobs, counting the bytes of the blobs it
/// copies into `progress`.
pub fn load_oci_dir(
    store: &ImageStore,
    dir: &Path,
    progress: &Arc<Progress>,
) -> Result<Vec<Loaded>, Error> {
    let index = match read_small(dir, Path::new("index.json")) {
        Err(Error::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(bad(
                "the directory has no index.json: it is not an OCI image layout (give an \
                 OCI layout directory, or a docker-archive or oci-archive tar file)",
            ))
        }
        r => r?,
    };
    let mut out = Vec::new();
    for (digest, names) in oci_index_entries(&index)? {
        let hex = parse_digest(&digest)?;
        copy_file_blob(
            store,
            dir,
            &Path::new("blobs/sha256").join(hex),
            &digest,
            progress,
        )?;
        let manifest = store.read_blob(&digest)?;
        let m = parse_manifest(&manifest, &digest)?;
        for d in m.layers.iter().map(|l| &l.digest).chain([&m.config]) {
            let hex = parse_digest(d)?;
            copy_file_blob(
                store,
                dir,
                &Path::new("blobs/sha256").join(hex),
                d,
                progress,
            )?;
        }
        out.push(Loaded {
            manifest: digest,
            names,
        });
    }
    Ok(out)
}

/// Reads `rel` in `dir` (errors name `rel`: `dir` may be a /proc/self/fd path).
fn read_small(dir: &Path, rel: &Path) -> Result<Vec<u8>, Error> {
    let f = File::open(dir.join(rel)).map_err(|e| Error::io(format!("opening {rel:?}"), e))?;
    let mut data = Vec::new();
    f.take(IN_MEMORY + 1)
        .read_to_end(&mut data)
        .map_err(|e| Error::io(format!("reading {rel:?}"), e))?;
    if data.len() as u64 > IN_MEMORY {
        return Err(bad(format!("{rel:?} is too large")));
    }
    Ok(data)
}

/// Copies the blob `rel` of the layout `dir` (errors name `rel`).
fn copy_file_blob(
    store: &ImageStore,
    dir: &Path,
    rel: &Path,
    digest: &str,
    progress: &Arc<Progress>,
) -> Result<(), Error> {
    if store.has_blob(digest) {
        return Ok(());
    }
    let f = File::open(dir.join(rel)).map_err(|e| Error::io(format!("opening {rel:?}"), e))?;
    let mut f = CountingReader::new(f, progress.clone());
    let mut w = store.blob_writer()?;
    io::copy(&mut f, &mut w).map_err(|e| Error::io(format!("reading {rel:?}"), e))?;
    w.commit(digest)?;
    Ok(())
}

/// `(manifest digest, names)` of an OCI index.
fn oci_index_entries(index: &[u8]) -> Result<Vec<(String, Vec<Reference>)>, Error> {
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(index).map_err(|e| bad(format!("index.json: {e}")))?;
    let mut order: Vec<String> = Vec::new();
    let mut names: HashMap<String, Vec<Reference>> = HashMap::new();
    for d in index.manifests() {
        let media = d.media_type().to_string();
        if media.contains("index") || media.contains("manifest.list") {
            return Err(bad(
                "its index.json names a nested image index (multi-platform image): \
                 save a single-platform image",
            ));
        }
        let digest = d.digest().to_string();
        if !names.contains_key(&digest) {
            order.push(digest.clone());
        }
        let entry = names.entry(digest).or_default();
        let ann = d.annotations().as_ref().and_then(|a| a.get(REF_NAME));
        // A bare tag ("latest", as skopeo and umoci write) names no repository.
        if let Some(r) = ann.filter(|a| a.contains('/') || a.contains(':')) {
            entry.push(Reference::parse(r)?);
        }
    }
    Ok(order
        .into_iter()
        .map(|d| {
            let n = names.remove(&d).unwrap_or_default();
            (d, n)
        })
        .collect())
}

/// A member path without `.` components; `None` if it is absolute or climbs out.
fn clean(p: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            _ => return None,
        }
    }
    Some(out)
}

struct Archive {
    members: HashMap<PathBuf, Member>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerEntry {
    config: String,
    #[serde(default)]
    repo_tags: Option<Vec<String>>,
    layers: Vec<String>,
}

impl Archive {
    fn get(&self, name: &str) -> Option<&Member> {
        let mut p = clean(Path::new(name))?;
        for _ in 0..16 {
            match self.members.get(&p)? {
                Member::Link(t) => p = t.clone(),
                m => return Some(m),
            }
        }
        None
    }

    fn data(&self, name: &str) -> Result<&[u8], Error> {
        match self.get(name) {
            Some(Member::Data(d)) => Ok(d),
            Some(_) => Err(bad(format!("{name} is too large"))),
            None => Err(bad(format!("it lacks {name}"))),
        }
    }

    /// Makes `name` a blob; returns (digest, size, first bytes).
    fn to_blob(
        &self,
        store: &ImageStore,
        name: &str,
        expect: Option<&str>,
    ) -> Result<(String, u64, Vec<u8>), Error> {
        let (digest, size) = match self.get(name) {
            Some(Member::Data(d)) => {
                let digest = format!("sha256:{}", sha256_hex(d));
                if let Some(e) = expect.filter(|e| *e != digest) {
                    return Err(Error::DigestMismatch {
                        expected: e.to_string(),
                        actual: digest,
                    });
                }
                store.write_blob(d)?
            }
            Some(Member::Blob { digest, size }) => {
                if let Some(e) = expect.filter(|e| e != digest) {
                    return Err(Error::DigestMismatch {
                        expected: e.to_string(),
                        actual: digest.clone(),
                    });
                }
                (digest.clone(), *size)
            }
            _ => return Err(bad(format!("it lacks {name}"))),
        };
        let mut head = vec![0u8; 4];
        let n = File::open(store.blob_path(&digest)?)
            .and_then(|mut f| f.read(&mut head))
            .map_err(|e| Error::io(format!("reading blob {digest}"), e))?;
        head.truncate(n);
        Ok((digest, size, head))
    }

    fn docker(&self, store: &ImageStore) -> Result<Vec<Loaded>, Error> {
        let entries: Vec<DockerEntry> = serde_json::from_slice(self.data("manifest.json")?)
            .map_err(|e| bad(format!("manifest.json: {e}")))?;
        let mut out = Vec::new();
        for e in entries {
            let (config, config_size, _) = self.to_blob(store, &e.config, None)?;
            let mut layers = Vec::new();
            for l in &e.layers {
                let (digest, size, head) = self.to_blob(store, l, None)?;
                layers.push(LayerRef {
                    digest,
                    media_type: layer_media_type(&head).to_string(),
                    size,
                });
            }
            let manifest = build_manifest(&config, config_size, &layers)?;
            let (manifest, _) = store.write_blob(&manifest)?;
            let names = e
                .repo_tags
                .unwrap_or_default()
                .iter()
                .map(|t| Reference::parse(t))
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Loaded { manifest, names });
        }
        Ok(out)
    }

    fn oci(&self, store: &ImageStore) -> Result<Vec<Loaded>, Error> {
        let mut out = Vec::new();
        for (digest, names) in oci_index_entries(self.data("index.json")?)? {
            let path = |d: &str| -> Result<String, Error> {
                Ok(format!("blobs/sha256/{}", parse_digest(d)?))
            };
            self.to_blob(store, &path(&digest)?, Some(&digest))?;
            let m = parse_manifest(&store.read_blob(&digest)?, &digest)?;
            for d in m.layers.iter().map(|l| &l.digest).chain([&m.config]) {
                self.to_blob(store, &path(d)?, Some(d))?;
            }
            out.push(Loaded {
                manifest: digest,
                names,
            });
        }
        Ok(out)
    }
}

/// One image to save: its record and the names to give it in the archive.
#[derive(Debug, Clone)]
pub struct SaveItem {
    /// The image.
    pub image: ImageRecord,
    /// Names (`name:tag`) to record; may be empty.
    pub names: Vec<String>,
}

/// Writes `items` as an archive of `format` to `out`.
pub fn save(
    store: &ImageStore,
    items: &[SaveItem],
    format: Format,
    out: impl Write,
) -> Result<(), Error> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let res = match format {
        Format::DockerArchive => save_docker(store, items, &mut tar),
        Format::OciArchive => save_oci(store, items, &mut tar),
    };
    res?;
    tar.into_inner()
        .and_then(|mut w| w.flush())
        .map_err(|e| Error::io("writing the archive", e))
}

fn append_bytes<W: Write>(tar: &mut tar::Builder<W>, name: &str, data: &[u8]) -> Result<(), Error> {
    append(tar, name, data.len() as u64, data)
}

fn append<W: Write>(
    tar: &mut tar::Builder<W>,
    name: &str,
    size: u64,
    data: impl Read,
) -> Result<(), Error> {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    tar.append_data(&mut h, name, data)
        .map_err(|e| Error::io(format!("writing archive member {name}"), e))
}

fn manifest_of(store: &ImageStore, img: &ImageRecord) -> Result<(String, Vec<u8>), Error> {
    let digest = img.manifest.clone().ok_or_else(|| Error::Unsupported {
        feature: format!(
            "saving image {} (imported by an older skiff, no manifest) is",
            img.id
        ),
        hint: "import it again".into(),
    })?;
    let bytes = store.read_blob(&digest)?;
    Ok((digest, bytes))
}

fn save_docker<W: Write>(
    store: &ImageStore,
    items: &[SaveItem],
    tar: &mut tar::Builder<W>,
) -> Result<(), Error> {
    let mut manifest = Vec::new();
    let mut written = std::collections::HashSet::new();
    for item in items {
        let img = &item.image;
        let (digest, bytes) = manifest_of(store, img)?;
        let m = parse_manifest(&bytes, &digest)?;
        let config_name = format!("{}.json", img.id);
        if written.insert(config_name.clone()) {
            append_bytes(tar, &config_name, &store.read_blob(&m.config)?)?;
        }
        let mut layers = Vec::new();
        for (blob, diff_id) in m.layers.iter().zip(&img.layers) {
            let name = format!("{}.tar", parse_digest(diff_id)?);
            if written.insert(name.clone()) {
                append_uncompressed(store, tar, &name, &blob.digest)?;
            }
            layers.push(name);
        }
        manifest.push(serde_json::json!({
            "Config": config_name,
            "RepoTags": item.names,
            "Layers": layers,
        }));
    }
    let json = serde_json::to_vec(&manifest)
        .map_err(|e| Error::io("encoding manifest.json", io::Error::other(e)))?;
    append_bytes(tar, "manifest.json", &json)
}

/// Appends a layer blob decompressed (docker-archive layers are plain tars named by
/// their diff id). Compressed blobs are decompressed twice: once to learn the size the
/// tar header needs, once to write.
fn append_uncompressed<W: Write>(
    store: &ImageStore,
    tar: &mut tar::Builder<W>,
    name: &str,
    digest: &str,
) -> Result<(), Error> {
    let path = store.blob_path(digest)?;
    let open = || -> Result<Box<dyn Read>, Error> {
        let f = File::open(&path).map_err(|e| Error::io(format!("opening {path:?}"), e))?;
        let mut f = io::BufReader::with_capacity(1 << 20, f);
        let head = io::BufRead::fill_buf(&mut f)
            .map_err(|e| Error::io(format!("reading {path:?}"), e))?
            .to_vec();
        Ok(if head.starts_with(&[0x1f, 0x8b]) {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Box::new(
                super::zstd::ZstdReader::new(f)
                    .map_err(|e| Error::io(format!("reading {path:?}"), e))?,
            )
        } else {
            Box::new(f)
        })
    };
    let size = io::copy(&mut open()?, &mut io::sink())
        .map_err(|e| Error::io(format!("decompressing {path:?}"), e))?;
    append(tar, name, size, open()?.take(size))
}

fn save_oci<W: Write>(
    store: &ImageStore,
    items: &[SaveItem],
    tar: &mut tar::Builder<W>,
) -> Result<(), Error> {
    append_bytes(tar, "oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifests = Vec::new();
    let mut written = std::collections::HashSet::new();
    for item in items {
        let (digest, bytes) = manifest_of(store, &item.image)?;
        let m = parse_manifest(&bytes, &digest)?;
        for d in [&digest, &m.config]
            .into_iter()
            .chain(m.layers.iter().map(|l| &l.digest))
        {
            if !written.insert(d.clone()) {
                continue;
            }
            let path = store.blob_path(d)?;
            let f = File::open(&path).map_err(|e| Error::io(format!("opening {path:?}"), e))?;
            let size = f
                .metadata()
                .map_err(|e| Error::io(format!("reading {path:?}"), e))?
                .len();
            append(
                tar,
                &format!("blobs/sha256/{}", parse_digest(d)?),
                size,
                f.take(size),
            )?;
        }
        let desc = |name: Option<&String>| {
            let mut v = serde_json::json!({
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "digest": digest,
                "size": bytes.len(),
            });
            if let Some(n) = name {
                v["annotations"] = serde_json::json!({ REF_NAME: n });
            }
            v
        };
        if item.names.is_empty() {
            manifests.push(desc(None));
        }
        for n in &item.names {
            manifests.push(desc(Some(n)));
        }
    }
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let json = serde_json::to_vec(&index)
        .map_err(|e| Error::io("encoding index.json", io::Error::other(e)))?;
    append_bytes(tar, "index.json", &json)
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
