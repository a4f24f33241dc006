//! Images made by the tests: a three-layer docker-archive (plain, gzip and zstd layers)
//! with whiteouts, an opaque directory and hard links.
#![allow(dead_code)]

use std::io::Write;
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use super::common::{write_busybox_tar, Env};

/// sha256 of `data` as `sha256:<hex>`.
pub fn sha(data: &[u8]) -> String {
    let d = Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// Appends one entry (owned by root, fixed mtime) to a tar being built.
pub fn entry(
    b: &mut tar::Builder<Vec<u8>>,
    kind: tar::EntryType,
    path: &str,
    link: &str,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(if kind == tar::EntryType::Directory {
        0o755
    } else {
        0o644
    });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(data.len() as u64);
    if link.is_empty() {
        b.append_data(&mut h, path, data).unwrap();
    } else {
        b.append_link(&mut h, path, link).unwrap();
    }
}

/// Writes a docker-archive (as `docker save` writes it) of a three-layer image and
/// returns its path: busybox + files (plain tar), whiteouts/opaque dir/hard links
/// (gzip), a whiteout of a bottom-layer file (zstd).
pub fn multi_layer_archive(env: &Env, name: &str) -> PathBuf {
    use tar::EntryType::{Directory, Link, Regular};
    let dir = env.dir.path();
    let base = dir.join("base.tar");
    write_busybox_tar(
        &base,
        &[
            ("etc/gone", 0, 0, 0o644, b"gone"),
            ("opq/old", 0, 0, 0o644, b"old"),
            ("keep/a", 0, 0, 0o644, b"a"),
            ("keep/c", 0, 0, 0o644, b"c"),
        ],
    );
    let l1 = std::fs::read(&base).unwrap();

    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, Regular, "etc/.wh.gone", "", b"");
    entry(&mut b, Directory, "opq", "", b"");
    entry(&mut b, Regular, "opq/.wh..wh..opq", "", b"");
    entry(&mut b, Regular, "opq/new", "", b"new");
    entry(&mut b, Regular, "keep/b", "", b"b");
    entry(&mut b, Directory, "links", "", b"");
    entry(&mut b, Regular, "links/x", "", b"linked\n");
    entry(&mut b, Link, "links/y", "links/x", b"");
    let l2 = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&l2).unwrap();
    let l2gz = gz.finish().unwrap();

    let mut b = tar::Builder::new(Vec::new());
    entry(&mut b, Regular, "keep/.wh.c", "", b"");
    entry(&mut b, Regular, "top", "", b"top\n");
    let l3 = b.into_inner().unwrap();
    let l3z =
        ruzstd::encoding::compress_to_vec(&l3[..], ruzstd::encoding::CompressionLevel::Fastest);

    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": { "Cmd": ["/bin/sh"], "Env": ["PATH=/bin"] },
        "rootfs": { "type": "layers", "diff_ids": [sha(&l1), sha(&l2), sha(&l3)] },
        "history": [{"created_by": "one"}, {"created_by": "two"}, {"created_by": "three"}],
    });
    let config = serde_json::to_vec(&config).unwrap();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": [name],
        "Layers": ["l1/layer.tar", "l2.tar.gz", "l3.tar.zst"],
    }]);
    let path = dir.join("multi.tar");
    let mut out = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, name, data).unwrap();
    };
    add("config.json", &config);
    add("l1/layer.tar", &l1);
    add("l2.tar.gz", &l2gz);
    add("l3.tar.zst", &l3z);
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    out.finish().unwrap();
    path
}
