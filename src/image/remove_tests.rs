//! Tests of `remove.rs` with digest references and pins, and of the collection lock
//! loads rely on (a shared lock taken again inside one).

use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use nix::fcntl::{Flock, FlockArg};

use super::*;
use crate::image::store::tests::{blob_count, import, new_store};
use crate::image::{ImageChanges, NewImage};

/// The image `rec` recorded again (its blobs and layers are in the store) as `names`.
fn record_as(store: &ImageStore, rec: &ImageRecord, names: &[String]) -> ImageRecord {
    store
        .record_image(&NewImage {
            config: format!("sha256:{}", rec.id),
            manifest: rec.manifest.clone().unwrap(),
            layers: rec.layers.clone(),
            layer_blobs: rec.layer_blobs.clone(),
            names: names.to_vec(),
            created: rec.created.clone(),
        })
        .unwrap()
}

/// An image in the store with no name: imported as `tmp`, then untagged by recording
/// it under its digest and removing the tag's digest and tag by hand.
fn digest_only(store: &ImageStore, content: &[u8], repo: &str) -> (ImageRecord, String) {
    let rec = import(store, content, "tmp:1", &ImageChanges::default()).image;
    let manifest = rec.manifest.clone().unwrap();
    let _lock = store.lock().unwrap();
    let mut index = store.load_index().unwrap();
    index.tags.clear();
    index.images.get_mut(&rec.id).unwrap().repo_digests.clear();
    store.save_index(&index).unwrap();
    drop(_lock);
    let by_digest = format!("{repo}@{manifest}");
    let rec = record_as(store, &rec, std::slice::from_ref(&by_digest));
    (rec, by_digest)
}

#[test]
fn an_image_recorded_by_digest_is_untagged_and_removed_by_digest() {
    let (_t, store) = new_store();
    let (rec, by_digest) = digest_only(&store, b"d", "127.0.0.1:5000/test/busybox");
    assert!(rec.repo_tags.is_empty(), "{:?}", rec.repo_tags);
    assert_eq!(rec.repo_digests, vec![by_digest.clone()]);
    let on_disk: serde_json::Value =
        serde_json::from_slice(&fs::read(store.root().join("images.json")).unwrap()).unwrap();
    assert_eq!(on_disk["tags"], serde_json::json!({}), "no tag: {on_disk}");
    assert_eq!(store.resolve(&by_digest).unwrap().id, rec.id);
    // The same digest under another repository names nothing.
    let elsewhere = by_digest.replace("test/busybox", "test/other");
    assert!(matches!(
        store.resolve(&elsewhere),
        Err(Error::NoSuchImage { .. })
    ));
    assert!(matches!(
        store.remove_image(&elsewhere, false),
        Err(Error::NoSuchImage { .. })
    ));

    // Its last name: the image goes.
    assert!(!store.removal_keeps_image(&by_digest).unwrap());
    let blobs = blob_count(&store);
    let r = store.remove_image(&by_digest, false).unwrap();
    assert_eq!(r.untagged, vec![by_digest.clone()]);
    assert_eq!(r.deleted, vec![rec.id.clone()]);
    assert_eq!(r.blobs_freed, 3);
    assert_eq!(blob_count(&store), blobs - 3);
    assert!(store.list().unwrap().is_empty());
}

#[test]
fn removing_a_repo_digest_of_a_tagged_image_keeps_the_image() {
    let (_t, store) = new_store();
    let rec = import(
        &store,
        b"t",
        "127.0.0.1:5000/app:v1",
        &ImageChanges::default(),
    )
    .image;
    let digest = format!("127.0.0.1:5000/app@{}", rec.manifest.clone().unwrap());
    assert_eq!(rec.repo_digests, vec![digest.clone()]);
    assert!(store.removal_keeps_image(&digest).unwrap());
    let r = store.remove_image(&digest, false).unwrap();
    assert_eq!(r.untagged, vec![digest.clone()]);
    assert!(r.deleted.is_empty());
    let now = store.resolve(&rec.id).unwrap();
    assert_eq!(now.repo_tags, vec!["127.0.0.1:5000/app:v1"]);
    assert!(now.repo_digests.is_empty());
    assert!(matches!(
        store.resolve(&digest),
        Err(Error::NoSuchImage { .. })
    ));
}

#[test]
fn untagging_the_last_tag_of_a_repository_drops_its_repo_digests() {
    let (_t, store) = new_store();
    let rec = import(&store, b"u", "one/app:v1", &ImageChanges::default()).image;
    let manifest = rec.manifest.clone().unwrap();
    record_as(&store, &rec, &["docker.io/two/app:v1".to_string()]);
    let r = store.remove_image("one/app:v1", false).unwrap();
    assert_eq!(r.untagged, vec!["docker.io/one/app:v1"]);
    let now = store.resolve(&rec.id).unwrap();
    assert_eq!(
        now.repo_digests,
        vec![format!("docker.io/two/app@{manifest}")]
    );
}

#[test]
fn digests_are_not_names_to_give() {
    let (_t, store) = new_store();
    let rec = import(&store, b"n", "app:v1", &ImageChanges::default()).image;
    let target = Reference::parse(&format!("app@sha256:{}", rec.id)).unwrap();
    let e = store.tag("app:v1", &target).unwrap_err();
    assert!(e.to_string().contains("cannot be used as a tag"), "{e}");
    // A digest that is not the image's (an archive claiming a registry's digest) is
    // not recorded at all.
    let lie = format!("docker.io/library/alpine@sha256:{}", "5".repeat(64));
    let now = record_as(&store, &rec, std::slice::from_ref(&lie));
    assert_eq!(now.repo_tags, vec!["docker.io/library/app:v1"]);
    assert!(!now.repo_digests.contains(&lie), "{:?}", now.repo_digests);
    assert!(store.resolve(&lie).is_err());
}

#[test]
fn an_index_digest_names_the_image_it_lists() {
    let (_t, store) = new_store();
    let rec = import(&store, b"i", "tmp:1", &ImageChanges::default()).image;
    let manifest = rec.manifest.clone().unwrap();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "digest": manifest, "size": 1}],
    });
    let (index_digest, _) = store
        .write_blob(&serde_json::to_vec(&index).unwrap())
        .unwrap();
    let by_index = format!("127.0.0.1:5000/multi@{index_digest}");
    let now = record_as(&store, &rec, std::slice::from_ref(&by_index));
    assert!(
        now.repo_digests.contains(&by_index),
        "{:?}",
        now.repo_digests
    );
    assert!(now
        .repo_digests
        .contains(&format!("127.0.0.1:5000/multi@{manifest}")));
    assert_eq!(store.resolve(&by_index).unwrap().id, rec.id);
}

#[test]
fn digest_tags_of_an_older_store_are_migrated_on_open() {
    let (_t, store) = new_store();
    let rec = import(&store, b"m", "app:v1", &ImageChanges::default()).image;
    let manifest = rec.manifest.clone().unwrap();
    let old_key = format!("127.0.0.1:5000/test/busybox@{manifest}");
    let path = store.root().join("images.json");
    let mut json: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    json["tags"][&old_key] = serde_json::Value::String(rec.id.clone());
    fs::write(&path, serde_json::to_vec(&json).unwrap()).unwrap();

    let store = ImageStore::open(store.root()).unwrap();
    let on_disk: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
    let tags: Vec<&String> = on_disk["tags"].as_object().unwrap().keys().collect();
    assert_eq!(tags, vec!["docker.io/library/app:v1"], "saved migrated");
    let now = store.resolve(&old_key).unwrap();
    assert_eq!(now.id, rec.id);
    assert_eq!(now.repo_tags, vec!["docker.io/library/app:v1"]);
    assert!(
        now.repo_digests.contains(&old_key),
        "{:?}",
        now.repo_digests
    );
}

/// Whether /proc/locks shows a blocked exclusive flock request on the inode `ino`.
fn exclusive_waiter_on(ino: u64) -> bool {
    let locks = fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"->")
            && f.get(2) == Some(&"FLOCK")
            && f.get(4) == Some(&"WRITE")
            && f.get(6)
                .is_some_and(|dev| dev.ends_with(&format!(":{ino}")))
    })
}

/// What a pull does: it holds the collection lock shared from its blob presence check,
/// and the commit takes it shared again on another open file. A removal waiting for it
/// exclusively must not block that second shared lock (which would deadlock the pull,
/// itself blocking the removal), and must get it once the pull is done.
#[test]
fn a_nested_shared_collection_lock_is_granted_while_a_removal_waits() {
    let (_t, store) = new_store();
    let pull = store.gc_lock(false).unwrap();
    let ino = fs::metadata(store.root().join("gc.lock")).unwrap().ino();
    let store2 = store.clone();
    let removal = std::thread::spawn(move || {
        let _x = store2.gc_lock(true).unwrap();
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    while !exclusive_waiter_on(ino) {
        assert!(
            Instant::now() < deadline,
            "the removal never waited for the lock"
        );
        assert!(
            !removal.is_finished(),
            "the removal got the lock a pull holds"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Non-blocking: a refusal here would be a deadlock in the daemon.
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.root().join("gc.lock"))
        .unwrap();
    let commit = Flock::lock(file, FlockArg::LockSharedNonblock)
        .map_err(|(_, e)| e)
        .expect("a second shared lock while an exclusive request waits");
    assert!(!removal.is_finished());
    drop(commit);
    drop(pull);
    removal.join().unwrap();
}

#[test]
fn a_pinned_blob_outlives_the_removal_of_its_last_image() {
    let (_t, store) = new_store();
    let rec = import(&store, b"pinned", "pin:1", &ImageChanges::default()).image;
    let layer_blob = rec.layer_blobs[0].clone();
    let before = blob_count(&store);
    let pins = store.pin([layer_blob.clone()]);
    let removal = store.remove_image("pin:1", false).unwrap();
    assert_eq!(removal.deleted, vec![rec.id.clone()]);
    // Config and manifest go; the pinned layer blob stays.
    assert_eq!(blob_count(&store), 1, "{before} blobs before");
    assert!(store.has_blob(&layer_blob));
    drop(pins);
    // Unpinned and unreferenced: the next collection frees it (once it is old enough,
    // as for any blob a job may resume with).
    assert!(store.has_blob(&layer_blob));
}
