//! Tests of `unpack.rs`: archives are built by hand, hostile ones header by header
//! (the refused ones in `unpack_hostile_tests.rs`).

use super::*;
use crate::image::sha256_hex;
use std::ffi::CString;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use tar::{Builder, EntryType, Header};

#[path = "unpack_hostile_tests.rs"]
mod hostile;

const MTIME: u64 = 1_600_000_000;

struct Tar {
    b: Builder<Vec<u8>>,
    uid: u64,
    gid: u64,
}

impl Tar {
    fn new() -> Tar {
        Tar {
            b: Builder::new(Vec::new()),
            uid: u64::from(nix::unistd::geteuid().as_raw()),
            gid: u64::from(nix::unistd::getegid().as_raw()),
        }
    }

    /// Appends an entry with the path and link name written verbatim (no sanitising).
    fn raw(&mut self, path: &str, kind: EntryType, mode: u32, link: &str, data: &[u8]) {
        let mut h = Header::new_gnu();
        let name = &mut h.as_old_mut().name;
        name.fill(0);
        name[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(data.len() as u64);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(MTIME);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        self.b.append(&h, data).unwrap();
    }

    fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.raw(path, EntryType::Regular, mode, "", data);
    }
    fn dir(&mut self, path: &str, mode: u32) {
        self.raw(path, EntryType::Directory, mode, "", b"");
    }
    fn symlink(&mut self, path: &str, target: &str) {
        self.raw(path, EntryType::Symlink, 0o777, target, b"");
    }
    fn hardlink(&mut self, path: &str, target: &str) {
        self.raw(path, EntryType::Link, 0o644, target, b"");
    }
    fn xattr(&mut self, key: &str, value: &[u8]) {
        let k = format!("SCHILY.xattr.{key}");
        self.b.append_pax_extensions([(k.as_str(), value)]).unwrap();
    }
    fn bytes(self) -> Vec<u8> {
        self.b.into_inner().unwrap()
    }
}

fn opts() -> UnpackOptions {
    UnpackOptions {
        preserve_ownership: false,
        ..UnpackOptions::default()
    }
}

fn unpack(
    bytes: &[u8],
    o: &UnpackOptions,
) -> (tempfile::TempDir, PathBuf, Result<UnpackStats, Error>) {
    let tmp = tempfile::tempdir().unwrap();
    let dest = tmp.path().join("root");
    fs::create_dir(&dest).unwrap();
    let r = unpack_layer(bytes, &dest, o);
    (tmp, dest, r)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

fn sample() -> Vec<u8> {
    let mut t = Tar::new();
    t.dir("./", 0o755);
    t.dir("./etc/", 0o755);
    t.file("./etc/hostname", 0o644, b"skiff\n");
    t.symlink("./etc/link", "hostname");
    t.hardlink("./etc/hard", "./etc/hostname");
    t.dir("./bin/", 0o755);
    t.file("./bin/tool", 0o755, b"#!/bin/sh\necho hi\n");
    t.bytes()
}

fn expect_unsafe(r: Result<UnpackStats, Error>, path: &str) -> String {
    match r {
        Err(Error::UnsafeEntry { path: p, reason }) => {
            assert_eq!(p, path);
            reason
        }
        other => panic!("expected UnsafeEntry for {path}, got {other:?}"),
    }
}

#[test]
fn plain_tar_extracts_and_hashes() {
    let bytes = sample();
    let (_t, dest, r) = unpack(&bytes, &opts());
    let stats = r.unwrap();
    assert_eq!(stats.diff_id, format!("sha256:{}", sha256_hex(&bytes)));
    assert_eq!(stats.entries, 7);
    assert_eq!(stats.size, 6 + 18);
    assert!(stats.warnings.is_empty(), "{:?}", stats.warnings);
    assert_eq!(fs::read(dest.join("etc/hostname")).unwrap(), b"skiff\n");
    assert_eq!(
        fs::read_link(dest.join("etc/link")).unwrap(),
        Path::new("hostname")
    );
    let a = fs::metadata(dest.join("etc/hostname")).unwrap();
    let b = fs::metadata(dest.join("etc/hard")).unwrap();
    assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
    assert_eq!(
        fs::metadata(dest.join("bin/tool")).unwrap().mode() & 0o7777,
        0o755
    );
    assert_eq!(a.mtime(), MTIME as i64);
    let json = serde_json::to_string(&stats).unwrap();
    assert_eq!(serde_json::from_str::<UnpackStats>(&json).unwrap(), stats);
}

#[test]
fn gzip_diff_id_is_sha256_of_uncompressed_stream() {
    let plain = sample();
    // Two gzip members: MultiGzDecoder must read both.
    let mut gz = gzip(&plain[..1024]);
    gz.extend(gzip(&plain[1024..]));
    let (_t, dest, r) = unpack(&gz, &opts());
    let stats = r.unwrap();
    assert_eq!(stats.diff_id, format!("sha256:{}", sha256_hex(&plain)));
    assert_ne!(stats.diff_id, format!("sha256:{}", sha256_hex(&gz)));
    assert_eq!(
        fs::read(dest.join("bin/tool")).unwrap(),
        b"#!/bin/sh\necho hi\n"
    );
}

#[test]
fn trailing_record_padding_is_part_of_the_diff_id() {
    let mut bytes = sample();
    bytes.resize(bytes.len().div_ceil(10240) * 10240 + 10240, 0);
    let (_t, _d, r) = unpack(&bytes, &opts());
    assert_eq!(r.unwrap().diff_id, format!("sha256:{}", sha256_hex(&bytes)));
}

#[test]
fn zstd_layers_extract_and_empty_or_garbage_is_refused() {
    let tar = sample();
    let z =
        ruzstd::encoding::compress_to_vec(&tar[..], ruzstd::encoding::CompressionLevel::Fastest);
    let (_t, dest, r) = unpack(&z, &opts());
    assert_eq!(r.unwrap().diff_id, format!("sha256:{}", sha256_hex(&tar)));
    assert!(dest.join("etc").is_dir());
    let (_t, _d, r) = unpack(&[0x28, 0xb5, 0x2f, 0xfd, 0, 0], &opts());
    let e = r.unwrap_err();
    assert!(matches!(e, Error::InvalidLayer { .. }), "{e:?}");
    assert!(e.to_string().contains("zstd"), "{e}");
    let (_t, _d, r) = unpack(b"", &opts());
    assert!(matches!(r, Err(Error::InvalidLayer { .. })), "{r:?}");
    let (_t, _d, r) = unpack(&[b'x'; 1024], &opts());
    let e = r.unwrap_err();
    assert!(matches!(e, Error::InvalidLayer { .. }), "{e:?}");
    assert!(e.to_string().contains("not a valid tar archive"), "{e}");
    let (_t, _d, r) = unpack(&[0x1f, 0x8b, 1, 2, 3], &opts());
    assert!(r.is_err());
}

#[test]
fn device_nodes_are_skipped_with_a_warning() {
    let mut t = Tar::new();
    t.raw("dev/sda", EntryType::Block, 0o660, "", b"");
    t.raw("./dev/null", EntryType::Char, 0o666, "", b"");
    t.file("dev/keep", 0o644, b"");
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    let stats = r.unwrap();
    assert_eq!(
        stats.warnings,
        vec![
            "skipping device node dev/sda: an unprivileged user cannot create device nodes",
            "skipping device node dev/null: an unprivileged user cannot create device nodes",
        ]
    );
    assert!(!dest.join("dev/sda").exists() && !dest.join("dev/null").exists());
    assert!(dest.join("dev/keep").exists());
}

#[test]
fn warnings_are_capped() {
    let mut t = Tar::new();
    for i in 0..150 {
        t.raw(&format!("dev/tty{i}"), EntryType::Char, 0o620, "", b"");
    }
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    let w = r.unwrap().warnings;
    assert_eq!(w.len(), MAX_WARNINGS + 1);
    assert_eq!(w[MAX_WARNINGS], "... and 50 more warnings");
}

#[test]
fn whiteouts_become_char_devices_and_opaque_xattrs() {
    let mut t = Tar::new();
    t.dir("var", 0o755);
    t.file("etc/.wh.passwd", 0o644, b"");
    t.file("var/.wh..wh..opq", 0o644, b"");
    t.file("var/kept", 0o644, b"k");
    t.file("both", 0o644, b"b");
    t.file(".wh.both", 0o644, b"");
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    let stats = r.unwrap();
    assert_eq!(stats.entries, 6);
    assert_eq!(stats.whiteouts, 3);
    assert!(!dest.join("etc/.wh.passwd").exists());
    assert!(!dest.join("var/.wh..wh..opq").exists());
    let md = fs::symlink_metadata(dest.join("etc/passwd")).unwrap();
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), 0);
    let mut v = [0u8; 8];
    let p = CString::new(dest.join("var").as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings and a valid buffer.
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            v.as_mut_ptr().cast(),
            v.len(),
        )
    };
    assert_eq!(&v[..usize::try_from(n).unwrap()], b"y");
    assert!(dest.join("var/kept").exists());
    assert_eq!(
        fs::read(dest.join("both")).unwrap(),
        b"b",
        "the addition wins"
    );
    assert!(stats.warnings.iter().any(|w| w.contains(".wh.both")));
}

#[test]
fn read_only_directories_still_get_their_children() {
    let mut t = Tar::new();
    t.dir("ro/", 0o555);
    t.dir("ro/sub/", 0o500);
    t.file("ro/sub/f", 0o444, b"data");
    t.file("ro/g", 0o600, b"g");
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    r.unwrap();
    assert_eq!(fs::read(dest.join("ro/sub/f")).unwrap(), b"data");
    assert!(dest.join("ro/g").exists());
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("ro"), 0o555);
    assert_eq!(mode("ro/sub"), 0o500);
    // Directory mtimes survive the writes of their children.
    assert_eq!(fs::metadata(dest.join("ro")).unwrap().mtime(), MTIME as i64);
    assert_eq!(
        fs::metadata(dest.join("ro/sub")).unwrap().mtime(),
        MTIME as i64
    );
    // Let the TempDir clean up.
    for p in ["ro/sub", "ro"] {
        fs::set_permissions(dest.join(p), fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn special_mode_bits_and_root_entry_are_applied() {
    let mut t = Tar::new();
    t.dir("./", 0o750);
    t.file("bin/su", 0o4755, b"x");
    t.file("bin/wall", 0o2755, b"x");
    t.dir("tmp/", 0o1777);
    for preserve in [false, true] {
        let o = UnpackOptions {
            preserve_ownership: preserve,
            ..opts()
        };
        let (_t, dest, r) = unpack(&t.b.get_ref().clone(), &o);
        r.unwrap();
        let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().mode() & 0o7777;
        assert_eq!(mode("bin/su"), 0o4755, "preserve={preserve}");
        assert_eq!(mode("bin/wall"), 0o2755);
        assert_eq!(mode("tmp"), 0o1777);
        assert_eq!(mode(""), 0o750);
        assert_eq!(fs::metadata(&dest).unwrap().mtime(), MTIME as i64);
    }
    let (_t, _d, r) = unpack(
        &{
            let mut t = Tar::new();
            t.file("./", 0o644, b"");
            t.bytes()
        },
        &opts(),
    );
    expect_unsafe(r, "./");
}

#[test]
fn ownership_with_own_ids_works_for_all_kinds() {
    let mut t = Tar::new();
    t.dir("d/", 0o755);
    t.file("d/f", 0o644, b"f");
    t.symlink("d/l", "/nowhere");
    let me = (t.uid, t.gid);
    let o = UnpackOptions {
        preserve_ownership: true,
        ..opts()
    };
    let (_t, dest, r) = unpack(&t.bytes(), &o);
    r.unwrap();
    for p in ["d", "d/f", "d/l"] {
        let m = fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!((u64::from(m.uid()), u64::from(m.gid())), me, "{p}");
    }
}

#[test]
fn ownership_of_other_ids_when_privileged() {
    if !nix::unistd::geteuid().is_root() {
        return; // needs CAP_CHOWN; the EINVAL mapping is also covered below
    }
    // Whether `id` is mapped in this process's user namespace (/proc/self/[ug]id_map).
    let mapped = |file: &str, id: u64| {
        fs::read_to_string(file).unwrap().lines().any(|l| {
            let v: Vec<u64> = l.split_whitespace().map(|n| n.parse().unwrap()).collect();
            (v[0]..v[0] + v[2]).contains(&id)
        })
    };
    let mut t = Tar::new();
    t.uid = 4321;
    t.gid = 8765;
    t.dir("d/", 0o755);
    t.file("d/suid", 0o4755, b"f");
    t.symlink("d/l", "suid");
    let (_t, dest, r) = unpack(&t.bytes(), &UnpackOptions::default());
    if !(mapped("/proc/self/uid_map", 4321) && mapped("/proc/self/gid_map", 8765)) {
        // Root of a user namespace without those ids: exactly the case to report.
        match r {
            Err(Error::UnmappedOwner { path, uid, gid }) => {
                assert_eq!((path, uid, gid), (dest.join("d/suid"), 4321, 8765));
            }
            other => panic!("expected UnmappedOwner, got {other:?}"),
        }
        return;
    }
    r.unwrap();
    for p in ["d", "d/suid", "d/l"] {
        let m = fs::symlink_metadata(dest.join(p)).unwrap();
        assert_eq!((m.uid(), m.gid()), (4321, 8765), "{p}");
    }
    let m = fs::metadata(dest.join("d/suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755, "chown must not clear setuid");
}

#[derive(Debug)]
struct Wrapped(&'static str, io::Error);
impl std::fmt::Display for Wrapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}
impl std::error::Error for Wrapped {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.1)
    }
}

#[test]
fn chown_einval_means_unmapped_owner() {
    // The shape of the tar crate's error: TarError { desc, io } wrapped twice.
    let inner = io::Error::from_raw_os_error(libc::EINVAL);
    let mid = io::Error::other(Wrapped("failed to set ownerships to uid=0, gid=0", inner));
    let outer = io::Error::other(Wrapped("failed to unpack `x`", mid));
    let (descs, errno) = error_chain(&outer);
    assert_eq!(errno, Some(libc::EINVAL));
    assert_eq!(descs.len(), 2, "{descs:?}");
    let x = Extraction {
        dest: PathBuf::from("/layer"),
        dest_canon: PathBuf::from("/layer"),
        opts: &UnpackOptions::default(),
        stats: UnpackStats::default(),
        bytes: 0,
        suppressed: 0,
        opaque: Vec::new(),
    };
    match x.unpack_error(outer, "etc/shadow", Path::new("etc/shadow"), 0, 42) {
        Error::UnmappedOwner { path, uid, gid } => {
            assert_eq!(
                (path, uid, gid),
                (PathBuf::from("/layer/etc/shadow"), 0, 42)
            );
        }
        other => panic!("{other:?}"),
    }
    let eperm = io::Error::other(Wrapped(
        "failed to set ownerships to uid=1, gid=1",
        io::Error::from_raw_os_error(libc::EPERM),
    ));
    let e = x.unpack_error(eperm, "f", Path::new("f"), 1, 1);
    assert!(e.to_string().contains("preserve_ownership: false"), "{e}");
}

#[test]
fn xattrs_applied_and_refused_ones_are_warnings() {
    let mut t = Tar::new();
    t.xattr("user.skiff", b"yes");
    t.file("f", 0o644, b"x");
    t.xattr("bogus.nope", b"1");
    t.file("g", 0o644, b"x");
    t.xattr("user.dir", b"d");
    t.dir("d/", 0o755);
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    let stats = r.unwrap();
    let get = |p: &str, k: &str| {
        let path = CString::new(dest.join(p).as_os_str().as_bytes()).unwrap();
        let key = CString::new(k).unwrap();
        let mut buf = [0u8; 64];
        // SAFETY: valid C strings and a buffer of the given length.
        let n = unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                key.as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        (n >= 0).then(|| buf[..n as usize].to_vec())
    };
    if get("f", "user.skiff").is_none() && stats.warnings.len() == 3 {
        return; // filesystem without user xattrs
    }
    assert_eq!(get("f", "user.skiff").as_deref(), Some(&b"yes"[..]));
    assert_eq!(get("d", "user.dir").as_deref(), Some(&b"d"[..]));
    assert_eq!(stats.warnings.len(), 1, "{:?}", stats.warnings);
    assert!(stats.warnings[0].contains("bogus.nope") && stats.warnings[0].contains(" g:"));
    assert!(dest.join("g").exists());
}

#[test]
fn unlisted_parents_get_0755() {
    // A daemon's umask is often 077; the layer's modes must not depend on it. (Other tests
    // running meanwhile do not depend on the umask either.)
    let old = nix::sys::stat::umask(Mode::from_bits_truncate(0o077));
    let mut t = Tar::new();
    t.file("usr/share/doc/f", 0o644, b"x");
    t.dir("opt/app/", 0o700);
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    r.unwrap();
    let mode = |p: &str| fs::metadata(dest.join(p)).unwrap().mode() & 0o7777;
    for p in ["usr", "usr/share", "usr/share/doc", "opt"] {
        assert_eq!(mode(p), 0o755, "{p}");
    }
    assert_eq!(mode("opt/app"), 0o700);
    nix::sys::stat::umask(old);
}

#[test]
fn fifos_are_created_as_fifos() {
    let mut t = Tar::new();
    t.raw("run/pipe", EntryType::Fifo, 0o620, "", b"");
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    assert_eq!(r.unwrap().size, 0);
    let m = fs::symlink_metadata(dest.join("run/pipe")).unwrap();
    assert!(m.file_type().is_fifo());
    assert_eq!(m.mode() & 0o7777, 0o620);
    assert_eq!(m.mtime(), MTIME as i64);
}

#[test]
fn limits_come_from_the_environment() {
    let o = UnpackOptions::from_env(|k| (k == MAX_ENTRIES_ENV).then(|| "7".to_string())).unwrap();
    assert_eq!(o.max_entries, 7);
    assert_eq!(o.max_bytes, UnpackOptions::default().max_bytes);
    let e = UnpackOptions::from_env(|_| Some("lots".into())).unwrap_err();
    assert!(e.to_string().contains("SKIFF_LAYER_MAX_ENTRIES"), "{e}");
    let mut t = Tar::new();
    for i in 0..8 {
        t.file(&format!("f{i}"), 0o644, b"");
    }
    let (_t, _d, r) = unpack(
        &t.bytes(),
        &UnpackOptions {
            preserve_ownership: false,
            ..o
        },
    );
    assert!(
        matches!(r, Err(Error::LimitExceeded { limit: 7, .. })),
        "{r:?}"
    );
}

#[test]
fn whiteout_names_are_plain_files_when_whiteouts_are_off() {
    let mut t = Tar::new();
    t.file("etc/.wh.passwd", 0o644, b"x");
    t.file("var/.wh..wh..opq", 0o644, b"y");
    let o = UnpackOptions {
        whiteouts: false,
        ..opts()
    };
    let (_t, dest, r) = unpack(&t.bytes(), &o);
    let stats = r.unwrap();
    assert_eq!(stats.whiteouts, 0);
    assert_eq!(fs::read(dest.join("etc/.wh.passwd")).unwrap(), b"x");
    assert_eq!(fs::read(dest.join("var/.wh..wh..opq")).unwrap(), b"y");
    assert!(!dest.join("etc/passwd").exists());
}
