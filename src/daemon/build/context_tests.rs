use super::*;

fn file(b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8], mode: u32) {
    let mut h = tar::Header::new_gnu();
    h.set_size(data.len() as u64);
    h.set_mode(mode);
    h.set_mtime(1234);
    b.append_data(&mut h, name, data).unwrap();
}

fn link(b: &mut tar::Builder<Vec<u8>>, kind: EntryType, name: &str, target: &str) {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, name, target).unwrap();
}

fn receive(bytes: &[u8]) -> (tempfile::TempDir, Result<Context, Error>) {
    let d = tempfile::tempdir().unwrap();
    let r = Context::receive(bytes, &d.path().join("context.tar"));
    (d, r)
}

fn content(ctx: &Context, name: &str) -> Vec<u8> {
    let mut v = Vec::new();
    ctx.data(ctx.get(Path::new(name)).unwrap())
        .read_to_end(&mut v)
        .unwrap();
    v
}

#[test]
fn indexes_files_dirs_links_and_long_names_in_one_pass() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "./Dockerfile", b"FROM x\n", 0o644);
    // No entry for "a/" or "a/b/": implied.
    file(&mut b, "a/b/run.sh", b"#!/bin/sh\n", 0o755);
    let long = format!("deep/{}/f", "n".repeat(150));
    file(&mut b, &long, b"long name", 0o600);
    link(&mut b, EntryType::Symlink, "out", "/etc");
    link(&mut b, EntryType::Link, "hard", "a/b/run.sh");
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    file(&mut b, "big", &big, 0o644);
    let bytes = b.into_inner().unwrap();
    let (d, ctx) = receive(&bytes);
    let ctx = ctx.unwrap();
    // The tar is kept as it came, byte for byte; nothing is unpacked beside it.
    assert_eq!(fs_read(&d.path().join("context.tar")), bytes);
    let names: Vec<_> = std::fs::read_dir(d.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["context.tar"]);

    assert_eq!(ctx.read_file("Dockerfile").unwrap(), "FROM x\n");
    assert_eq!(content(&ctx, &long), b"long name");
    assert_eq!(content(&ctx, "big"), big);
    let run = ctx.get(Path::new("a/b/run.sh")).unwrap();
    assert_eq!(
        (run.kind.clone(), run.mode, run.mtime),
        (Kind::File, 0o755, 1234)
    );
    assert_eq!(run.hash, <[u8; 32]>::from(Sha256::digest(b"#!/bin/sh\n")));
    assert_eq!(ctx.get(Path::new("a")).unwrap().kind, Kind::Dir);
    assert_eq!(
        ctx.children(Path::new("")),
        ["Dockerfile", "a", "big", "deep", "hard", "out"]
    );
    assert_eq!(ctx.children(Path::new("a/b")), ["run.sh"]);
    assert_eq!(
        ctx.get(Path::new("out")).unwrap().kind,
        Kind::Symlink(PathBuf::from("/etc"))
    );
    // A hard link is a file with its target's data.
    assert_eq!(content(&ctx, "hard"), b"#!/bin/sh\n");
    assert_eq!(ctx.get(Path::new("hard")).unwrap().hash, run.hash);
    assert!(ctx.read_file("out").is_err());
    assert!(ctx.read_file("a").is_err());
    assert!(ctx.read_file("missing").is_err());
}

fn fs_read(p: &Path) -> Vec<u8> {
    std::fs::read(p).unwrap()
}

#[test]
fn a_later_entry_replaces_an_earlier_one_and_its_subtree() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "d/x", b"1", 0o644);
    file(&mut b, "f", b"old", 0o644);
    file(&mut b, "f", b"new", 0o600);
    link(&mut b, EntryType::Symlink, "d", "f");
    let (_d, ctx) = receive(&b.into_inner().unwrap());
    let ctx = ctx.unwrap();
    assert_eq!(content(&ctx, "f"), b"new");
    assert_eq!(ctx.get(Path::new("f")).unwrap().mode, 0o600);
    assert!(ctx.get(Path::new("d/x")).is_none());
    assert_eq!(ctx.children(Path::new("")), ["d", "f"]);
    assert_eq!(ctx.len(), 3);
}

/// Raw tar entry with any name (the tar crate's builder refuses `..` and absolute).
fn raw_entry(name: &str, kind: EntryType, link: &str, data: &[u8]) -> Vec<u8> {
    let mut h = tar::Header::new_old();
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_size(data.len() as u64);
    h.set_cksum();
    let mut v = h.as_bytes().to_vec();
    v.extend_from_slice(data);
    v.resize(v.len().div_ceil(512) * 512, 0);
    v
}

#[test]
fn hostile_entries_are_refused() {
    let end = [0u8; 1024];
    for (entries, want) in [
        (
            vec![raw_entry("../x", EntryType::Regular, "", b"x")],
            "'..'",
        ),
        (
            vec![raw_entry("/etc/x", EntryType::Regular, "", b"x")],
            "absolute",
        ),
        (
            vec![
                raw_entry("l", EntryType::Symlink, "/etc", b""),
                raw_entry("l/passwd", EntryType::Regular, "", b"x"),
            ],
            "below l, which is not a directory",
        ),
        (
            vec![raw_entry("h", EntryType::Link, "nothing", b"")],
            "not a regular file before it",
        ),
        (
            vec![
                raw_entry("l", EntryType::Symlink, "/etc/passwd", b""),
                raw_entry("h", EntryType::Link, "l", b""),
            ],
            "not a regular file before it",
        ),
        (
            vec![raw_entry("h", EntryType::Link, "../../etc/passwd", b"")],
            "'..'",
        ),
    ] {
        let mut bytes: Vec<u8> = entries.concat();
        bytes.extend_from_slice(&end);
        let (_d, r) = receive(&bytes);
        let e = r.unwrap_err().to_string();
        assert!(e.contains(want), "want {want:?} in {e}");
    }
}

#[test]
fn a_truncated_stream_is_an_error_not_a_short_file() {
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "f", &[7u8; 5000], 0o644);
    let bytes = b.into_inner().unwrap();
    let (_d, r) = receive(&bytes[..2000]);
    assert!(r.is_err());
}

#[test]
fn devices_and_fifos_are_left_out() {
    let mut bytes = raw_entry("fifo", EntryType::Fifo, "", b"");
    bytes.extend(raw_entry("f", EntryType::Regular, "", b"data"));
    bytes.extend_from_slice(&[0u8; 1024]);
    let (_d, ctx) = receive(&bytes);
    let ctx = ctx.unwrap();
    assert!(ctx.get(Path::new("fifo")).is_none());
    assert_eq!(content(&ctx, "f"), b"data");
}

#[test]
fn a_gzip_context_is_kept_as_the_plain_tar() {
    use std::io::Write as _;
    let mut b = tar::Builder::new(Vec::new());
    file(&mut b, "Dockerfile", b"FROM y\n", 0o644);
    let plain = b.into_inner().unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let (d, ctx) = receive(&gz.finish().unwrap());
    assert_eq!(ctx.unwrap().read_file("Dockerfile").unwrap(), "FROM y\n");
    assert_eq!(fs_read(&d.path().join("context.tar")), plain);
    let (_d, r) = receive(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0]);
    assert!(r.unwrap_err().to_string().contains("zstd"));
}
