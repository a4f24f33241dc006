//! Tests of `archive.rs`: save then load between two stores, and hostile archives.

use super::*;
use crate::image::{unpack_layer, ImageChanges, UnpackOptions};

fn new_store(dir: &tempfile::TempDir, name: &str) -> ImageStore {
    ImageStore::open(&dir.path().join(name)).unwrap()
}

/// A one-layer image made like `skiff import` does (the layer gzip-compressed when asked).
fn image(store: &ImageStore, content: &[u8], name: &str, gzip: bool) -> ImageRecord {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "etc/data", content).unwrap();
    let mut layer = b.into_inner().unwrap();
    if gzip {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(&layer).unwrap();
        layer = e.finish().unwrap();
    }
    let staging = store.new_staging().unwrap();
    let opts = UnpackOptions {
        preserve_ownership: false,
        ..UnpackOptions::default()
    };
    let stats = unpack_layer(&layer[..], &staging.diff, &opts).unwrap();
    let (digest, size) = store.write_blob(&layer).unwrap();
    let blob = LayerRef {
        digest,
        media_type: layer_media_type(&layer).to_string(),
        size,
    };
    let r = Reference::parse(name).unwrap();
    store
        .commit_import(staging, &stats, &blob, &r, &ImageChanges::default())
        .unwrap()
        .image
}

fn item(img: &ImageRecord) -> SaveItem {
    SaveItem {
        image: img.clone(),
        names: img.repo_tags.clone(),
    }
}

#[test]
fn oci_archive_round_trip_keeps_every_blob() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (new_store(&t, "a"), new_store(&t, "b"));
    let img = image(&a, b"one", "app:1", true);
    let mut out = Vec::new();
    save(&a, &[item(&img)], Format::OciArchive, &mut out).unwrap();
    let loaded = load_archive(&b, &out[..]).unwrap();
    assert_eq!(loaded.len(), 1);
    assert_eq!(Some(&loaded[0].manifest), img.manifest.as_ref());
    assert_eq!(loaded[0].names, vec![Reference::parse("app:1").unwrap()]);
    for d in img
        .layer_blobs
        .iter()
        .chain([&format!("sha256:{}", img.id)])
    {
        assert!(b.has_blob(d), "{d}");
    }
}

#[test]
fn docker_archive_round_trip_has_plain_layers_named_by_diff_id() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (new_store(&t, "a"), new_store(&t, "b"));
    let one = image(&a, b"one", "app:1", true);
    let two = image(&a, b"two", "other", false);
    let mut out = Vec::new();
    save(
        &a,
        &[item(&one), item(&two)],
        Format::DockerArchive,
        &mut out,
    )
    .unwrap();
    // Members as docker and podman write them.
    let mut names: Vec<String> = tar::Archive::new(&out[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap().path().unwrap().display().to_string())
        .collect();
    names.sort();
    assert!(names.contains(&"manifest.json".to_string()));
    assert!(names.contains(&format!("{}.json", one.id)));
    assert!(names.contains(&format!("{}.tar", &one.layers[0][7..])));

    let loaded = load_archive(&b, &out[..]).unwrap();
    assert_eq!(loaded.len(), 2);
    let m = parse_manifest(&b.read_blob(&loaded[0].manifest).unwrap(), "m").unwrap();
    assert_eq!(
        m.config,
        format!("sha256:{}", one.id),
        "same config, same id"
    );
    assert_eq!(
        m.layers[0].digest, one.layers[0],
        "the plain layer's digest is its diff id"
    );
    assert!(m.layers[0].media_type.ends_with(".tar"));
    assert_eq!(
        loaded[1].names,
        vec![Reference::parse("docker.io/library/other:latest").unwrap()]
    );
}

fn tar_of(members: &[(&str, tar::EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, link, data) in members {
        let mut h = tar::Header::new_gnu();
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn hostile_and_broken_archives_are_refused() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "s");
    use tar::EntryType::{Regular, Symlink};
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            tar_of(&[("../escape", Regular, "", b"x")]),
            "leaves the archive",
        ),
        (tar_of(&[("/abs", Regular, "", b"x")]), "leaves the archive"),
        (
            tar_of(&[("l", Symlink, "../../etc/passwd", b"")]),
            "points outside the archive",
        ),
        (tar_of(&[("x", Regular, "", b"x")]), "neither manifest.json"),
        (
            tar_of(&[(
                "manifest.json",
                Regular,
                "",
                br#"[{"Config":"c.json","Layers":[]}]"#,
            )]),
            "lacks c.json",
        ),
        (Vec::new(), "empty"),
    ];
    for (bytes, want) in cases {
        let e = load_archive(&s, &bytes[..]).unwrap_err().to_string();
        assert!(e.contains(want), "{want}: {e}");
    }
    // Nothing escaped next to the store.
    assert!(!t.path().join("escape").exists());
}

#[test]
fn oci_blobs_must_match_their_names() {
    let t = tempfile::tempdir().unwrap();
    let s = new_store(&t, "s");
    let fake = format!("sha256:{}", "1".repeat(64));
    let index = format!(
        r#"{{"schemaVersion":2,"manifests":[{{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"{fake}","size":3}}]}}"#
    );
    let bytes = tar_of(&[
        ("index.json", tar::EntryType::Regular, "", index.as_bytes()),
        (
            &format!("blobs/sha256/{}", "1".repeat(64)),
            tar::EntryType::Regular,
            "",
            b"not it",
        ),
    ]);
    let e = load_archive(&s, &bytes[..]).unwrap_err();
    assert!(matches!(e, Error::DigestMismatch { .. }), "{e:?}");
}

#[test]
fn format_names() {
    assert_eq!("oci-archive".parse::<Format>().unwrap(), Format::OciArchive);
    let e = "zip".parse::<Format>().unwrap_err().to_string();
    assert!(e.contains("docker-archive or oci-archive"), "{e}");
}
