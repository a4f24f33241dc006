//! Tests of `store.rs`.

use super::*;
use crate::image::{unpack_layer, LayerRef, UnpackOptions};
use oci_spec::image::Os;

pub(crate) fn layer(content: &[u8]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(content.len() as u64);
    h.set_mode(0o644);
    h.set_mtime(1);
    b.append_data(&mut h, "etc/data", content).unwrap();
    b.into_inner().unwrap()
}

/// Stages, extracts and commits `content` as `name`.
pub(crate) fn import(
    store: &ImageStore,
    content: &[u8],
    name: &str,
    changes: &ImageChanges,
) -> CommitOutcome {
    let staging = store.new_staging().unwrap();
    let opts = UnpackOptions {
        preserve_ownership: false,
        ..UnpackOptions::default()
    };
    let tar = layer(content);
    let stats = unpack_layer(&tar[..], &staging.diff, &opts).unwrap();
    let (digest, size) = store.write_blob(&tar).unwrap();
    let blob = LayerRef {
        digest,
        media_type: "application/vnd.oci.image.layer.v1.tar".into(),
        size,
    };
    let r = Reference::parse(name).unwrap();
    store
        .commit_import(staging, &stats, &blob, &r, changes)
        .unwrap()
}

pub(crate) fn new_store() -> (tempfile::TempDir, ImageStore) {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("storage")).unwrap();
    (tmp, store)
}

#[test]
fn open_creates_private_layout() {
    use std::os::unix::fs::PermissionsExt;
    let (_t, store) = new_store();
    for d in ["", "blobs/sha256", "layers", "tmp"] {
        let m = fs::metadata(store.root().join(d)).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o777, 0o700, "{d}");
    }
    assert!(store.list().unwrap().is_empty());
    assert!(store.leftovers().unwrap().is_empty());
}

#[test]
fn commit_then_list_resolve_and_config() {
    let (_t, store) = new_store();
    let changes = ImageChanges {
        cmd: Some(vec!["/bin/sh".into()]),
        env: vec!["PATH=/bin".into()],
        workdir: Some("/srv".into()),
        labels: [("b".to_string(), "2".to_string()), ("a".into(), "1".into())].into(),
        stop_signal: Some("SIGINT".into()),
        ..ImageChanges::default()
    };
    let out = import(&store, b"hello", "app:1.0", &changes);
    assert!(out.unused_staging.is_none());
    let img = &out.image;
    assert_eq!(img.repo_tags, vec!["docker.io/library/app:1.0"]);
    assert_eq!(img.size, 5);
    assert_eq!(img.layers.len(), 1);
    assert!(store.leftovers().unwrap().is_empty(), "staging was moved");

    let dirs = store.layer_dirs(img);
    assert_eq!(fs::read(dirs[0].join("etc/data")).unwrap(), b"hello");

    assert_eq!(store.list().unwrap(), vec![img.clone()]);
    assert_eq!(&store.resolve("app:1.0").unwrap(), img);
    assert_eq!(&store.resolve(&img.id).unwrap(), img);
    assert_eq!(&store.resolve(&format!("sha256:{}", img.id)).unwrap(), img);
    assert_eq!(&store.resolve(&img.id[..5]).unwrap(), img);

    let cfg = store.config(&img.id).unwrap();
    assert_eq!(cfg.rootfs().diff_ids(), &img.layers);
    assert_eq!(cfg.rootfs().typ(), "layers");
    assert_eq!(cfg.os(), &Os::Linux);
    assert_eq!(cfg.architecture().to_string(), oci_arch());
    assert_eq!(cfg.created().as_deref(), Some(img.created.as_str()));
    let c = cfg.config().as_ref().unwrap();
    assert_eq!(c.cmd().as_deref(), Some(&["/bin/sh".to_string()][..]));
    assert_eq!(c.env().as_deref(), Some(&["PATH=/bin".to_string()][..]));
    assert_eq!(c.working_dir().as_deref(), Some("/srv"));
    assert_eq!(c.stop_signal().as_deref(), Some("SIGINT"));
    assert_eq!(
        c.labels().as_ref().unwrap().get("a").map(String::as_str),
        Some("1")
    );
    assert!(c.entrypoint().is_none());
    let h = cfg.history().as_ref().unwrap();
    assert_eq!(h[0].created_by().as_deref(), Some("skiff import"));

    // The blob is canonical JSON whose sha256 is the id; labels come out sorted.
    let blob = fs::read(store.root().join("blobs/sha256").join(&img.id)).unwrap();
    assert_eq!(sha256_hex(&blob), img.id);
    let text = String::from_utf8(blob).unwrap();
    assert!(text.find("\"a\":\"1\"").unwrap() < text.find("\"b\":\"2\"").unwrap());

    // The index is versioned and readable by a fresh handle.
    let index: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(index["version"], 1);
    assert_eq!(index["tags"]["docker.io/library/app:1.0"], img.id.as_str());
    let again = ImageStore::open(store.root()).unwrap();
    assert_eq!(again.resolve("app:1.0").unwrap(), *img);
}

#[test]
fn default_tag_is_latest() {
    let (_t, store) = new_store();
    let out = import(
        &store,
        b"x",
        "example.com:5000/team/app",
        &ImageChanges::default(),
    );
    assert_eq!(
        out.image.repo_tags,
        vec!["example.com:5000/team/app:latest"]
    );
    assert_eq!(
        store.resolve("example.com:5000/team/app").unwrap(),
        out.image
    );
    assert_eq!(
        store.resolve("example.com:5000/team/app:latest").unwrap(),
        out.image
    );
}

#[test]
fn unknown_and_ambiguous_lookups() {
    let (_t, store) = new_store();
    let e = store.resolve("nope").unwrap_err();
    assert!(matches!(&e, Error::NoSuchImage { reference } if reference == "nope"));
    assert_eq!(
        e.to_string(),
        "no such image \"nope\": import or pull it first (skiff image import FILE NAME)"
    );
    assert!(matches!(
        store.resolve("BAD//ref"),
        Err(Error::InvalidReference { .. })
    ));
    assert!(matches!(
        store.resolve("sha256:zz"),
        Err(Error::NoSuchImage { .. })
    ));

    // 17 images: two of them must share their first hex digit.
    let mut ids = Vec::new();
    for i in 0..17 {
        ids.push(
            import(
                &store,
                b"same",
                &format!("img{i}"),
                &ImageChanges::default(),
            )
            .image
            .id,
        );
    }
    let first = ids
        .iter()
        .map(|id| &id[..1])
        .find(|p| ids.iter().filter(|id| id.starts_with(*p)).count() > 1)
        .unwrap();
    match store.resolve(first) {
        Err(Error::AmbiguousImage { prefix, candidates }) => {
            assert_eq!(prefix, first);
            assert!(candidates.len() >= 2);
            assert!(candidates
                .iter()
                .all(|c| c.starts_with(first) && ids.contains(c)));
        }
        other => panic!("{other:?}"),
    }
    let unused = ('0'..='9')
        .chain('a'..='f')
        .map(String::from)
        .find(|p| !ids.iter().any(|id| id.starts_with(p.as_str())));
    if let Some(p) = unused {
        assert!(matches!(store.resolve(&p), Err(Error::NoSuchImage { .. })));
    }
}

#[test]
fn identical_layers_are_stored_once() {
    let (_t, store) = new_store();
    let a = import(&store, b"shared", "a", &ImageChanges::default());
    let b = import(&store, b"shared", "b", &ImageChanges::default());
    assert!(a.unused_staging.is_none());
    let unused = b
        .unused_staging
        .expect("second import must not need its staging");
    assert!(
        unused.join("diff/etc/data").exists(),
        "left for the caller to remove"
    );
    assert_eq!(store.leftovers().unwrap(), vec![unused]);
    assert_eq!(a.image.layers, b.image.layers);
    assert_ne!(a.image.id, b.image.id);
    assert_eq!(
        fs::read_dir(store.root().join("layers")).unwrap().count(),
        1
    );
}

#[test]
fn tags_move_and_old_images_stay() {
    let (_t, store) = new_store();
    let old = import(&store, b"v1", "app:stable", &ImageChanges::default()).image;
    let new = import(&store, b"v2", "app:stable", &ImageChanges::default()).image;
    assert_eq!(store.resolve("app:stable").unwrap().id, new.id);
    let list = store.list().unwrap();
    assert_eq!(list.len(), 2);
    assert_eq!(list[0].id, new.id, "newest first");
    assert_eq!(list[1].id, old.id);
    assert!(list[1].repo_tags.is_empty(), "old image is dangling");
    assert_eq!(store.resolve(&old.id).unwrap().id, old.id);
}

#[test]
fn corrupt_index_is_an_error_naming_the_file() {
    let (_t, store) = new_store();
    let path = store.root().join("images.json");
    for bad in [
        &b"{not json"[..],
        br#"{"version":1,"images":{"../../x":{"layers":[],"created":"","size":0}}}"#,
        br#"{"version":1,"tags":{"a:latest":"00"}}"#,
    ] {
        fs::write(&path, bad).unwrap();
        for e in [
            ImageStore::open(store.root()).unwrap_err(),
            store.list().unwrap_err(),
        ] {
            match &e {
                Error::Corrupt { path: p, .. } => assert_eq!(p, &path),
                other => panic!("{other:?}"),
            }
            assert!(e.to_string().contains("images.json"), "{e}");
        }
    }
    fs::write(&path, br#"{"version":7}"#).unwrap();
    let e = store.list().unwrap_err();
    assert!(e.to_string().contains("version 7"), "{e}");
}

#[test]
fn config_blob_digest_is_verified() {
    let (_t, store) = new_store();
    let img = import(&store, b"x", "app", &ImageChanges::default()).image;
    let blob = store.root().join("blobs/sha256").join(&img.id);
    let mut bytes = fs::read(&blob).unwrap();
    bytes.push(b' ');
    fs::write(&blob, &bytes).unwrap();
    match store.config(&img.id) {
        Err(Error::Corrupt { path, reason }) => {
            assert_eq!(path, blob);
            assert!(reason.contains("digest"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    fs::remove_file(&blob).unwrap();
    assert!(matches!(store.config(&img.id), Err(Error::Corrupt { .. })));
    assert!(matches!(
        store.config(&"0".repeat(64)),
        Err(Error::NoSuchImage { .. })
    ));
    assert!(matches!(
        store.config("../../etc/passwd"),
        Err(Error::NoSuchImage { .. })
    ));
}

#[test]
fn layer_dirs_are_top_first() {
    let (_t, store) = new_store();
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let rec = ImageRecord {
        id: "c".repeat(64),
        layers: vec![format!("sha256:{a}"), format!("sha256:{b}")],
        created: String::new(),
        size: 0,
        repo_tags: vec![],
        repo_digests: vec![],
        manifest: None,
        layer_blobs: vec![],
    };
    let layers = store.root().join("layers");
    assert_eq!(
        store.layer_dirs(&rec),
        vec![layers.join(&b).join("diff"), layers.join(&a).join("diff")]
    );
}

#[test]
fn staging_dirs_are_fresh_and_reported_as_leftovers() {
    let (_t, store) = new_store();
    let s1 = store.new_staging().unwrap();
    let s2 = store.new_staging().unwrap();
    assert_ne!(s1.dir, s2.dir);
    assert_eq!(s1.diff, s1.dir.join("diff"));
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!((mode(&s1.dir), mode(&s1.diff)), (0o700, 0o755));
    assert_eq!(fs::read_dir(&s1.diff).unwrap().count(), 0);
    let mut expect = vec![s1.dir, s2.dir];
    expect.sort();
    assert_eq!(store.leftovers().unwrap(), expect);
}

#[test]
fn concurrent_commits_lose_no_update() {
    let (_t, store) = new_store();
    std::thread::scope(|s| {
        for t in 0..4 {
            let store = store.clone();
            s.spawn(move || {
                for i in 0..5 {
                    import(
                        &store,
                        format!("{t}-{i}").as_bytes(),
                        &format!("t{t}:{i}"),
                        &ImageChanges::default(),
                    );
                }
            });
        }
    });
    let list = store.list().unwrap();
    assert_eq!(list.len(), 20);
    for t in 0..4 {
        for i in 0..5 {
            store.resolve(&format!("t{t}:{i}")).unwrap();
        }
    }
}

#[test]
fn created_times_are_fixed_width_rfc3339() {
    let now = now_rfc3339();
    assert!(
        now.starts_with("20") && now.ends_with('Z') && now.len() == 30,
        "{now}"
    );
}

const EMPTY: &str = "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

#[test]
fn blob_writer_verifies_commits_and_cleans_up() {
    use std::io::Write;
    let (_t, store) = new_store();
    let digest = format!("sha256:{}", sha256_hex(b"hello"));
    assert!(!store.has_blob(&digest));
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"hel").unwrap();
    w.write_all(b"lo").unwrap();
    assert_eq!(w.commit(&digest).unwrap(), 5);
    assert!(store.has_blob(&digest));
    let path = store.blob_path(&digest).unwrap();
    assert_eq!(fs::read(&path).unwrap(), b"hello");
    assert_eq!(path, store.root().join("blobs/sha256").join(&digest[7..]));

    // Already present: fine, content unchanged.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"hello").unwrap();
    assert_eq!(w.commit(&digest).unwrap(), 5);

    // Mismatch: an error naming both digests, nothing stored, temp file gone.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"evil").unwrap();
    match w.commit(EMPTY) {
        Err(Error::DigestMismatch { expected, actual }) => {
            assert_eq!(expected, EMPTY);
            assert_eq!(actual, format!("sha256:{}", sha256_hex(b"evil")));
        }
        other => panic!("{other:?}"),
    }
    assert!(!store.has_blob(EMPTY));
    assert!(store.leftovers().unwrap().is_empty(), "temp file left");

    // Dropped without commit: temp file removed.
    let mut w = store.blob_writer().unwrap();
    w.write_all(b"partial").unwrap();
    assert_eq!(store.leftovers().unwrap().len(), 1);
    drop(w);
    assert!(store.leftovers().unwrap().is_empty());
}

#[test]
fn blob_paths_validate_digests() {
    let (_t, store) = new_store();
    for bad in [
        "sha256:../../etc/passwd",
        "sha256:ABC",
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
        "sha512:00",
        "",
    ] {
        assert!(store.blob_path(bad).is_err(), "{bad}");
        assert!(!store.has_blob(bad), "{bad}");
    }
    let e = store.blob_path("md5:00").unwrap_err().to_string();
    assert!(e.contains("only sha256"), "{e}");
    let mut w = store.blob_writer().unwrap();
    std::io::Write::write_all(&mut w, b"x").unwrap();
    assert!(matches!(
        w.commit("sha256:zz"),
        Err(Error::InvalidDigest { .. })
    ));
}

#[test]
fn store_has_the_oci_layout_shape() {
    let (_t, store) = new_store();
    let img = import(&store, b"x", "app:1", &ImageChanges::default()).image;
    let layout: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("oci-layout")).unwrap()).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: oci_spec::image::ImageIndex =
        serde_json::from_slice(&fs::read(store.root().join("index.json")).unwrap()).unwrap();
    let m = &index.manifests()[0];
    assert_eq!(Some(m.digest().to_string()), img.manifest);
    let manifest = store.read_blob(img.manifest.as_deref().unwrap()).unwrap();
    let parsed = crate::image::manifest::parse_manifest(&manifest, "m").unwrap();
    assert_eq!(parsed.config, format!("sha256:{}", img.id));
    assert_eq!(parsed.layers.len(), 1);
    assert!(store.has_blob(&parsed.layers[0].digest));
    assert_eq!(img.layer_blobs, vec![parsed.layers[0].digest.clone()]);
    assert_eq!(
        img.repo_digests,
        vec![format!(
            "docker.io/library/app@{}",
            img.manifest.as_deref().unwrap()
        )]
    );
}

pub(crate) fn blob_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("blobs/sha256"))
        .unwrap()
        .count()
}

pub(crate) fn layer_count(store: &ImageStore) -> usize {
    fs::read_dir(store.root().join("layers")).unwrap().count()
}

#[test]
fn remove_frees_exactly_the_unshared_blobs_and_layers() {
    let (_t, store) = new_store();
    // Same layer, different configs (names differ in labels).
    let a = import(&store, b"shared", "a", &ImageChanges::default()).image;
    let mut labels = ImageChanges::default();
    labels.labels.insert("k".into(), "v".into());
    let b = import(&store, b"shared", "b", &labels).image;
    let c = import(&store, b"alone", "c", &ImageChanges::default()).image;
    assert_eq!(layer_count(&store), 2);
    // a: config+manifest; b: config+manifest; shared layer blob; c: 3.
    assert_eq!(blob_count(&store), 2 + 2 + 1 + 3);

    store.tag("a", &Reference::parse("a2").unwrap()).unwrap();
    let r = store.remove_image("a2", false).unwrap();
    assert_eq!(r.untagged, vec!["docker.io/library/a2:latest"]);
    assert!(r.deleted.is_empty());

    let r = store.remove_image("a", false).unwrap();
    assert_eq!(r.deleted, vec![a.id.clone()]);
    assert!(r.trash.is_empty(), "the layer is shared with b");
    assert_eq!(r.blobs_freed, 2);
    assert_eq!(layer_count(&store), 2);

    let r = store.remove_image(&b.id, false).unwrap();
    assert_eq!(r.untagged, vec!["docker.io/library/b:latest"]);
    assert_eq!(r.blobs_freed, 3);
    assert_eq!(r.trash.len(), 1);
    assert!(r.trash[0].starts_with(store.root().join("tmp")));
    assert_eq!(layer_count(&store), 1);
    assert_eq!(blob_count(&store), 3);
    assert_eq!(store.resolve("c").unwrap().id, c.id);
    assert!(
        store.remove_image("a:latest", false).is_err(),
        "a is gone (\"a\" alone may prefix an id)"
    );
}

#[test]
fn prune_removes_dangling_then_all_but_kept() {
    let (_t, store) = new_store();
    let old = import(&store, b"v1", "app", &ImageChanges::default()).image;
    let new = import(&store, b"v2", "app", &ImageChanges::default()).image;
    let other = import(&store, b"v3", "other", &ImageChanges::default()).image;
    let r = store.prune(false, &Default::default()).unwrap();
    assert_eq!(r.deleted, vec![old.id]);
    let keep = [new.id.clone()].into_iter().collect();
    let r = store.prune(true, &keep).unwrap();
    assert_eq!(r.deleted, vec![other.id]);
    assert_eq!(r.untagged, vec!["docker.io/library/other:latest"]);
    assert_eq!(store.list().unwrap().len(), 1);
}

#[test]
fn garbage_from_a_crash_is_collected_and_images_kept() {
    let (_t, store) = new_store();
    let img = import(&store, b"kept", "kept", &ImageChanges::default()).image;
    let before = blob_count(&store);
    // A load and a pull that died after writing blobs and a layer, before recording
    // the image. The load's blob goes, young as it is; the pull's goes once older than
    // the resume grace, and a young one is kept, so that a pull killed midway resumes
    // without downloading it again.
    let (loaded, _) = store.write_blob(b"a load's orphan").unwrap();
    let (old, _) = store.write_blob(b"orphan").unwrap();
    store.mark_resumable(&old).unwrap();
    let two_days = std::time::Duration::from_secs(2 * 24 * 3600);
    fs::File::options()
        .write(true)
        .open(store.blob_path(&old).unwrap())
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - two_days))
        .unwrap();
    let young = format!("sha256:{}", sha256_hex(b"young orphan"));
    store.mark_resumable(&young).unwrap();
    store.write_blob(b"young orphan").unwrap();
    let staging = store.new_staging().unwrap();
    let stats = UnpackStats {
        diff_id: format!("sha256:{}", sha256_hex(b"orphan layer")),
        ..Default::default()
    };
    store.install_layer(staging, &stats).unwrap();
    let half = store.blob_writer().unwrap();
    std::mem::forget(half); // a half-written blob in tmp/
    assert_eq!(layer_count(&store), 2);
    let leftovers = store.collect_garbage().unwrap();
    assert_eq!(blob_count(&store), before + 1);
    assert!(!store.has_blob(&old) && store.has_blob(&young) && !store.has_blob(&loaded));
    assert_eq!(layer_count(&store), 1);
    assert_eq!(leftovers.len(), 2, "{leftovers:?}");
    assert!(store.has_layer(&img.layers[0]));
    assert_eq!(store.resolve("kept").unwrap(), img);
}

#[test]
fn repository_of_strips_tag_and_digest() {
    assert_eq!(
        repository_of("docker.io/library/busybox:latest"),
        "docker.io/library/busybox"
    );
    assert_eq!(repository_of("localhost:5000/a/b:1"), "localhost:5000/a/b");
    assert_eq!(repository_of("localhost:5000/a/b"), "localhost:5000/a/b");
    assert_eq!(repository_of("a@sha256:00"), "a");
}

/// A record that changes no tag (a build step's untagged image) leaves `index.json`
/// as it is (not rewritten: no fsyncs for it); one that tags an image rewrites it.
#[test]
fn an_untagged_record_leaves_index_json_and_a_tag_rewrites_it() {
    use std::os::unix::fs::MetadataExt;
    let (_t, store) = new_store();
    let img = import(&store, b"data", "me/a:1", &ImageChanges::default()).image;
    let oci = store.root().join("index.json");
    let ino = || fs::metadata(&oci).unwrap().ino();
    let before = ino();
    let mut cfg = store.read_blob(&format!("sha256:{}", img.id)).unwrap();
    cfg.push(b' ');
    let (config, _) = store.write_blob(&cfg).unwrap();
    let new = NewImage {
        config,
        manifest: img.manifest.clone().unwrap(),
        layers: img.layers.clone(),
        layer_blobs: img.layer_blobs.clone(),
        names: vec![],
        created: img.created.clone(),
    };
    assert!(store.record_image(&new).unwrap().repo_tags.is_empty());
    assert_eq!(store.list().unwrap().len(), 2);
    assert_eq!(ino(), before, "index.json rewritten for an untagged image");
    let names = vec!["me/b:1".into()];
    store.record_image(&NewImage { names, ..new }).unwrap();
    assert_ne!(ino(), before);
    assert!(fs::read_to_string(&oci).unwrap().contains("me/b:1"));
}
