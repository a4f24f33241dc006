//! Tests of `lookup.rs`: how names, repo digests and ids resolve.

use super::*;
use crate::image::store::IndexImage;

fn hex(c: char) -> String {
    c.to_string().repeat(64)
}

fn image(repo_digests: &[&str]) -> IndexImage {
    IndexImage {
        layers: vec![format!("sha256:{}", hex('1'))],
        created: "2024-01-01T00:00:00Z".into(),
        size: 0,
        manifest: None,
        layer_blobs: Vec::new(),
        repo_digests: repo_digests.iter().map(|s| s.to_string()).collect(),
    }
}

/// Image a (tagged busybox:latest, digest of busybox), image b (untagged, digests in
/// two repositories on a private registry).
fn index() -> Index {
    let mut index = Index::default();
    index.images.insert(
        hex('a'),
        image(&[&format!("docker.io/library/busybox@sha256:{}", hex('d'))]),
    );
    index.images.insert(
        hex('b'),
        image(&[
            &format!("127.0.0.1:5000/test/busybox@sha256:{}", hex('e')),
            &format!("127.0.0.1:5000/other@sha256:{}", hex('f')),
        ]),
    );
    index
        .tags
        .insert("docker.io/library/busybox:latest".into(), hex('a'));
    index
}

#[test]
fn a_repo_digest_resolves_by_its_normalised_repository() {
    let index = index();
    for written in [
        format!("busybox@sha256:{}", hex('d')),
        format!("library/busybox@sha256:{}", hex('d')),
        format!("docker.io/library/busybox@sha256:{}", hex('d')),
        format!("index.docker.io/library/busybox@sha256:{}", hex('d')),
        // A tag next to the digest is ignored, as docker does.
        format!("busybox:1.36@sha256:{}", hex('d')),
    ] {
        assert_eq!(resolve_in(&index, &written).unwrap(), hex('a'), "{written}");
    }
    for written in [
        format!("127.0.0.1:5000/test/busybox@sha256:{}", hex('e')),
        format!("127.0.0.1:5000/other@sha256:{}", hex('f')),
    ] {
        assert_eq!(resolve_in(&index, &written).unwrap(), hex('b'), "{written}");
    }
}

#[test]
fn a_digest_under_another_repository_is_no_image() {
    let index = index();
    for written in [
        // The digest exists, under another repository.
        format!("alpine@sha256:{}", hex('d')),
        format!("127.0.0.1:5000/busybox@sha256:{}", hex('d')),
        format!("127.0.0.1:5000/test/busybox@sha256:{}", hex('f')),
        format!("test/busybox@sha256:{}", hex('e')),
        // Unknown digest.
        format!("busybox@sha256:{}", hex('0')),
    ] {
        match resolve_in(&index, &written) {
            Err(Error::NoSuchImage { reference }) => assert_eq!(reference, written),
            other => panic!("{written}: {other:?}"),
        }
    }
}

#[test]
fn tags_ids_and_prefixes_still_resolve() {
    let index = index();
    assert_eq!(resolve_in(&index, "busybox").unwrap(), hex('a'));
    assert_eq!(resolve_in(&index, "busybox:latest").unwrap(), hex('a'));
    assert_eq!(resolve_in(&index, &hex('b')).unwrap(), hex('b'));
    assert_eq!(
        resolve_in(&index, &format!("sha256:{}", hex('b'))).unwrap(),
        hex('b')
    );
    assert_eq!(resolve_in(&index, "bbbb").unwrap(), hex('b'));
    assert!(matches!(
        resolve_in(&index, "busybox:1"),
        Err(Error::NoSuchImage { .. })
    ));
    // A malformed digest is an invalid reference, not a missing image.
    assert!(matches!(
        resolve_in(&index, "busybox@sha256:abc"),
        Err(Error::InvalidReference { .. })
    ));
}
