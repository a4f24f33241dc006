//! Tests of `names.rs`: names become tags or repo digests, never digest tags.

use super::*;
use crate::image::store::IndexImage;

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn index_with(ids: &[String]) -> Index {
    let mut index = Index::default();
    for id in ids {
        index.images.insert(
            id.clone(),
            IndexImage {
                layers: Vec::new(),
                created: "2024-01-01T00:00:00Z".into(),
                size: 0,
                manifest: None,
                layer_blobs: Vec::new(),
                repo_digests: Vec::new(),
            },
        );
    }
    index
}

fn r(s: &str) -> Reference {
    Reference::parse(s).unwrap()
}

#[test]
fn a_digest_name_adds_a_repo_digest_and_no_tag() {
    let (a, m) = (hex('a'), format!("sha256:{}", hex('9')));
    let mut index = index_with(std::slice::from_ref(&a));
    apply(
        &mut index,
        &a,
        &m,
        &[r(&format!("127.0.0.1:5000/test/busybox@{m}"))],
    );
    assert!(index.tags.is_empty(), "{:?}", index.tags);
    assert_eq!(
        index.images[&a].repo_digests,
        vec![format!("127.0.0.1:5000/test/busybox@{m}")]
    );
    // name:tag@digest: the tag is ignored (docker's rule).
    apply(&mut index, &a, &m, &[r(&format!("busybox:1.36@{m}"))]);
    assert!(index.tags.is_empty(), "{:?}", index.tags);
    assert!(index.tags.keys().all(|k| !k.contains('@')));
}

#[test]
fn a_tag_name_adds_a_tag_and_the_manifest_repo_digest() {
    let (a, b) = (hex('a'), hex('b'));
    let (ma, mb) = (
        format!("sha256:{}", hex('8')),
        format!("sha256:{}", hex('9')),
    );
    let mut index = index_with(&[a.clone(), b.clone()]);
    apply(&mut index, &a, &ma, &[r("busybox")]);
    assert_eq!(index.tags["docker.io/library/busybox:latest"], a);
    assert_eq!(
        index.images[&a].repo_digests,
        vec![format!("docker.io/library/busybox@{ma}")]
    );
    // The tag moves to b; a keeps its repo digest (shown as busybox <none>).
    apply(&mut index, &b, &mb, &[r("busybox:latest")]);
    assert_eq!(index.tags["docker.io/library/busybox:latest"], b);
    assert_eq!(index.images[&a].repo_digests.len(), 1);
    // An index digest (same for two platform images) names one image: it moves.
    let idx = format!("sha256:{}", hex('7'));
    apply(&mut index, &a, &ma, &[r(&format!("multi@{idx}"))]);
    apply(&mut index, &b, &mb, &[r(&format!("multi@{idx}"))]);
    let named = format!("docker.io/library/multi@{idx}");
    assert!(!index.images[&a].repo_digests.contains(&named));
    assert!(index.images[&b].repo_digests.contains(&named));
}

#[test]
fn digest_tags_of_older_stores_migrate_to_repo_digests() {
    let a = hex('a');
    let m = format!("sha256:{}", hex('9'));
    let mut index = index_with(std::slice::from_ref(&a));
    index
        .tags
        .insert(format!("127.0.0.1:5000/test/busybox@{m}"), a.clone());
    index
        .tags
        .insert(format!("docker.io/library/busybox:1@{m}"), a.clone());
    index
        .tags
        .insert("docker.io/library/busybox:latest".into(), a.clone());
    index.tags.insert("garbage@x".into(), a.clone());
    assert_eq!(migrate_digest_tags(&mut index), 3);
    assert_eq!(
        index.tags.keys().collect::<Vec<_>>(),
        vec!["docker.io/library/busybox:latest"]
    );
    assert_eq!(
        index.images[&a].repo_digests,
        vec![
            format!("127.0.0.1:5000/test/busybox@{m}"),
            format!("docker.io/library/busybox@{m}"),
        ]
    );
    assert_eq!(migrate_digest_tags(&mut index), 0);
}

#[test]
fn digests_cannot_be_tags() {
    let m = format!("sha256:{}", hex('9'));
    let e = check_taggable(&r(&format!("busybox@{m}"))).unwrap_err();
    assert!(e.to_string().contains("cannot be used as a tag"), "{e}");
    check_taggable(&r("busybox:1")).unwrap();
}
