//! Image manifests: reading OCI image manifests and Docker v2 schema 2 manifests (the
//! same JSON shape with other media types) with oci-spec's types, and writing the OCI
//! manifests skiff makes for imported and loaded images.

use std::str::FromStr;

use oci_spec::image::{Descriptor, Digest, ImageManifest, ImageManifestBuilder, MediaType};

use super::blob::parse_digest;
use super::Error;

/// Docker's schema 2 manifest media type.
pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
/// Docker's gzip layer media type.
pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
/// Docker's uncompressed layer media type (docker-archive members).
pub const DOCKER_LAYER_TAR: &str = "application/vnd.docker.image.rootfs.diff.tar";

/// Layer media types whose content is a tar stream (plain, gzip or zstd); the unpacker
/// detects the compression from the content itself.
const LAYER_TYPES: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar",
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.oci.image.layer.v1.tar+zstd",
    "application/vnd.oci.image.layer.nondistributable.v1.tar",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
    "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
    DOCKER_LAYER_GZIP,
    DOCKER_LAYER_TAR,
    "application/vnd.docker.image.rootfs.diff.tar.zstd",
    "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
];

/// Media types of manifest lists / image indexes (which name manifests, not layers).
const INDEX_TYPES: &[&str] = &[
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
];

/// One layer of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerRef {
    /// `sha256:<hex>` of the (possibly compressed) layer blob.
    pub digest: String,
    /// Its media type.
    pub media_type: String,
    /// Its size in bytes.
    pub size: u64,
}

/// What skiff needs of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedManifest {
    /// `sha256:<hex>` of the image configuration blob.
    pub config: String,
    /// The layers, bottom first.
    pub layers: Vec<LayerRef>,
}

/// Parses an OCI image manifest or Docker v2 schema 2 manifest. `what` names it in
/// errors (e.g. its digest). Manifest lists and indexes, schema 1 manifests and layers
/// that are not tar streams are refused with a message saying so.
pub fn parse_manifest(bytes: &[u8], what: &str) -> Result<ParsedManifest, Error> {
    let bad = |reason: String| Error::InvalidImage {
        what: format!("manifest {what}"),
        reason,
    };
    let value: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| bad(format!("not JSON: {e}")))?;
    let media = value
        .get("mediaType")
        .and_then(|m| m.as_str())
        .unwrap_or("");
    if INDEX_TYPES.contains(&media) || value.get("manifests").is_some() {
        return Err(bad(
            "it is a manifest list (image index), not an image manifest: pick the \
             manifest for your platform from it"
                .into(),
        ));
    }
    match value.get("schemaVersion").and_then(|v| v.as_u64()) {
        Some(2) => {}
        Some(1) => {
            return Err(bad(
                "Docker schema 1 manifests are deprecated and not supported; re-push \
                 the image with a current client"
                    .into(),
            ))
        }
        other => return Err(bad(format!("schemaVersion is {other:?}, expected 2"))),
    }
    let m: ImageManifest = serde_json::from_value(value).map_err(|e| bad(e.to_string()))?;
    let config = m.config().digest().to_string();
    parse_digest(&config).map_err(|e| bad(format!("its config: {e}")))?;
    let mut layers = Vec::with_capacity(m.layers().len());
    for (i, l) in m.layers().iter().enumerate() {
        let digest = l.digest().to_string();
        parse_digest(&digest).map_err(|e| bad(format!("layer {i}: {e}")))?;
        let media_type = l.media_type().to_string();
        if !LAYER_TYPES.contains(&media_type.as_str()) {
            return Err(bad(format!(
                "layer {i} ({digest}) has media type {media_type:?}, which is not a \
                 (plain, gzip or zstd) tar layer"
            )));
        }
        layers.push(LayerRef {
            digest,
            media_type,
            size: l.size(),
        });
    }
    Ok(ParsedManifest { config, layers })
}

/// The OCI layer media type for a blob whose first bytes are `head`.
pub fn layer_media_type(head: &[u8]) -> &'static str {
    if head.starts_with(&[0x1f, 0x8b]) {
        "application/vnd.oci.image.layer.v1.tar+gzip"
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        "application/vnd.oci.image.layer.v1.tar+zstd"
    } else {
        "application/vnd.oci.image.layer.v1.tar"
    }
}

/// Builds an OCI image manifest (JSON bytes) for a config blob and layer blobs.
pub fn build_manifest(
    config_digest: &str,
    config_size: u64,
    layers: &[LayerRef],
) -> Result<Vec<u8>, Error> {
    let digest = |d: &str| {
        Digest::from_str(d).map_err(|e| Error::Oci {
            context: format!("digest {d}"),
            source: e,
        })
    };
    let config = Descriptor::new(MediaType::ImageConfig, config_size, digest(config_digest)?);
    let mut descs = Vec::with_capacity(layers.len());
    for l in layers {
        descs.push(Descriptor::new(
            MediaType::from(l.media_type.as_str()),
            l.size,
            digest(&l.digest)?,
        ));
    }
    let m = ImageManifestBuilder::default()
        .schema_version(2u32)
        .media_type(MediaType::ImageManifest)
        .config(config)
        .layers(descs)
        .build()
        .map_err(|e| Error::Oci {
            context: "building the image manifest".into(),
            source: e,
        })?;
    serde_json::to_vec(&m).map_err(|e| Error::io("encoding the manifest", std::io::Error::other(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const H2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    #[test]
    fn oci_manifest_round_trip() {
        let layers = vec![LayerRef {
            digest: H2.into(),
            media_type: "application/vnd.oci.image.layer.v1.tar+gzip".into(),
            size: 42,
        }];
        let bytes = build_manifest(H1, 7, &layers).unwrap();
        let m = parse_manifest(&bytes, "test").unwrap();
        assert_eq!(m.config, H1);
        assert_eq!(m.layers, layers);
    }

    #[test]
    fn docker_schema2_manifest_is_read() {
        let json = format!(
            r#"{{"schemaVersion":2,"mediaType":"{DOCKER_MANIFEST}",
              "config":{{"mediaType":"application/vnd.docker.container.image.v1+json","size":3,"digest":"{H1}"}},
              "layers":[{{"mediaType":"{DOCKER_LAYER_GZIP}","size":5,"digest":"{H2}"}}]}}"#
        );
        let m = parse_manifest(json.as_bytes(), "d").unwrap();
        assert_eq!(m.layers[0].media_type, DOCKER_LAYER_GZIP);
        assert_eq!(m.layers[0].size, 5);
    }

    #[test]
    fn lists_schema1_and_foreign_layers_are_refused() {
        let list = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}"#;
        let e = parse_manifest(list, "x").unwrap_err().to_string();
        assert!(e.contains("manifest list"), "{e}");
        let s1 = br#"{"schemaVersion":1,"name":"a"}"#;
        let e = parse_manifest(s1, "x").unwrap_err().to_string();
        assert!(e.contains("schema 1"), "{e}");
        let odd = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"application/vnd.oci.image.config.v1+json","size":3,"digest":"{H1}"}},
              "layers":[{{"mediaType":"application/vnd.example.blob","size":5,"digest":"{H2}"}}]}}"#
        );
        let e = parse_manifest(odd.as_bytes(), "x").unwrap_err().to_string();
        assert!(e.contains("not a (plain, gzip or zstd) tar layer"), "{e}");
    }

    #[test]
    fn media_type_from_magic() {
        assert!(layer_media_type(&[0x1f, 0x8b, 8]).ends_with("+gzip"));
        assert!(layer_media_type(&[0x28, 0xb5, 0x2f, 0xfd]).ends_with("+zstd"));
        assert!(layer_media_type(b"etc/").ends_with(".tar"));
    }
}
