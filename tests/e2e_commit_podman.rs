//! `skiff commit` against podman (the oracle): the same steps in a podman container and
//! a skiff container of the same image, then `commit` on both; the new top layers (from
//! `podman save` and `skiff save`) must hold the same entries: names, types, modes,
//! owners, link targets, whiteouts and opaque markers, sizes, content digests and
//! xattrs. skiff's fuse and overlay drivers are compared with podman's overlay driver,
//! skiff's vfs with podman's vfs (neither vfs can tell a replaced directory from an
//! emptied one: both write whiteouts where the overlays write an opaque marker). Once as
//! root in a default container, once in a `--userns keep-id` container (root and the
//! user making files): podman's commit records the owners the container sees.
//!
//! Intentional differences, left out of the comparison:
//! - mtimes;
//! - the mode and owner of whiteout and opaque marker entries (podman writes 0 or 0755,
//!   skiff 0644; readers look only at their names);
//! - what podman itself puts in a container's root: its mount points (`dev`, `proc`,
//!   `sys`, `run`, `run/.containerenv`, `etc/hostname`, `etc/hosts`, `etc/resolv.conf`)
//!   and `etc/mtab`, and with keep-id the user's lines it adds to `etc/passwd` and
//!   `etc/group`; skiff mounts those files over the rootfs and leaves the image's
//!   passwd alone;
//! - the `user.overlay.*` xattrs podman's overlay driver leaks into its layers (the
//!   kernel overlay's own bookkeeping; skiff never writes them).

mod common;
mod podman_support;

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use common::Env;
use podman_support::Podman;
use sha2::{Digest, Sha256};

/// What podman puts in every container's root (see the module docs).
const PODMAN_OWN: &[&str] = &[
    "dev",
    "proc",
    "sys",
    "run",
    "run/.containerenv",
    "etc/hostname",
    "etc/hosts",
    "etc/resolv.conf",
    "etc/mtab",
];

/// What podman adds to the root with keep-id (the user's passwd and group lines).
const PODMAN_KEEP_ID_OWN: &[&str] = &["etc/passwd", "etc/group"];

/// The steps of the default container, as root: new files, directories, modes and
/// owners (setuid too), a hard link, symlinks, a FIFO, a deleted image file and
/// directory, an image directory replaced (opaque), chmod and chown of image files, an
/// appended image file, and a chmod of an image file with a user xattr (copied up).
const STEPS: &str = "set -e; echo new > /new; mkdir -m 750 /dd; echo f > /dd/f; \
    chown 1000:1000 /dd/f; chmod 4755 /dd/f; ln /new /hl; ln -s /etc/passwd /sym; \
    ln -s ../new /dd/rel; mkfifo -m 640 /fifo; rm /etc/rmme; rm -rf /var; \
    rm -rf /usr/share/doc; mkdir /usr/share/doc; echo c > /usr/share/doc/c; \
    chmod 600 /etc/chmodme; chown 1000:1000 /etc/chownme; echo more >> /home/user/owned; \
    chmod 640 /etc/xattr-file";

/// keep-id, as root (`{U}`: the user's id).
const KEEP_ID_ROOT: &str = "set -e; echo r > /byroot; mkdir /mine; chown {U}:{U} /mine; \
    chmod 600 /etc/chmodme; chown 1000:1000 /etc/chownme; rm /etc/rmme; \
    rm -rf /usr/share/doc; mkdir /usr/share/doc; chown {U}:{U} /usr/share/doc";

/// keep-id, as the user.
const KEEP_ID_USER: &str = "set -e; echo u > /mine/u; ln /mine/u /mine/u2; echo t > /tmp/t; \
    ln -s u /mine/l; echo d > /usr/share/doc/d";

/// One layer member, as compared.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Member {
    /// A whiteout or the opaque marker: only its name counts.
    Marker,
    /// Anything else.
    Entry {
        kind: char,
        mode: u32,
        owner: (u64, u64),
        link: Option<String>,
        size: u64,
        sha256: Option<String>,
        xattrs: BTreeMap<String, Vec<u8>>,
    },
}

/// The test image: the busybox rootfs with files to change and one with a user xattr.
fn write_image(env: &Env) -> std::path::PathBuf {
    let base = env.busybox_tar();
    let path = env.dir.path().join("diffbase.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut a = tar::Archive::new(std::fs::File::open(&base).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let h = e.header().clone();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        b.append(&h, &data[..]).unwrap();
    }
    let add =
        |b: &mut tar::Builder<std::fs::File>, name: &str, dir: bool, data: &[u8], uid: u64| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(if dir {
                tar::EntryType::Directory
            } else {
                tar::EntryType::Regular
            });
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mode(if dir { 0o755 } else { 0o644 });
            h.set_mtime(1_700_000_000);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, name, data).unwrap();
        };
    add(&mut b, "usr/share", true, b"", 0);
    add(&mut b, "usr/share/doc", true, b"", 0);
    add(&mut b, "usr/share/doc/a", false, b"a\n", 0);
    add(&mut b, "usr/share/doc/b", false, b"b\n", 0);
    add(&mut b, "etc/chmodme", false, b"chmod\n", 0);
    add(&mut b, "etc/chownme", false, b"chown\n", 0);
    add(&mut b, "etc/rmme", false, b"rm\n", 0);
    b.append_pax_extensions([("SCHILY.xattr.user.note", b"kept".as_slice())])
        .unwrap();
    add(&mut b, "etc/xattr-file", false, b"xattr\n", 0);
    b.finish().unwrap();
    path
}

/// The top layer of the first image in the docker-archive `path`, by name.
fn top_layer(path: &Path) -> BTreeMap<String, Member> {
    let mut files = BTreeMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let top = manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string();
    let mut out = BTreeMap::new();
    let mut a = tar::Archive::new(&files[&top][..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().display().to_string();
        let name = name
            .trim_start_matches("./")
            .trim_end_matches('/')
            .to_string();
        let base = name.rsplit('/').next().unwrap_or_default();
        if base.starts_with(".wh.") {
            out.insert(name, Member::Marker);
            continue;
        }
        let mut xattrs = BTreeMap::new();
        if let Some(exts) = e.pax_extensions().unwrap() {
            for x in exts {
                let x = x.unwrap();
                let key = x.key().unwrap();
                if let Some(k) = key.strip_prefix("SCHILY.xattr.") {
                    if !k.starts_with("user.overlay.") {
                        xattrs.insert(k.to_string(), x.value_bytes().to_vec());
                    }
                }
            }
        }
        let h = e.header().clone();
        let kind = match h.entry_type() {
            tar::EntryType::Regular => 'f',
            tar::EntryType::Directory => 'd',
            tar::EntryType::Symlink => 'l',
            tar::EntryType::Link => 'h',
            tar::EntryType::Fifo => 'p',
            tar::EntryType::Char => 'c',
            tar::EntryType::Block => 'b',
            other => panic!("{name}: unexpected entry type {other:?}"),
        };
        let link = e
            .link_name()
            .unwrap()
            .map(|l| l.display().to_string().trim_start_matches("./").to_string());
        let (size, sha256) = if kind == 'f' {
            let mut data = Vec::new();
            e.read_to_end(&mut data).unwrap();
            let hex: String = Sha256::digest(&data)
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect();
            (data.len() as u64, Some(hex))
        } else {
            (0, None)
        };
        out.insert(
            name,
            Member::Entry {
                kind,
                mode: h.mode().unwrap() & 0o7777,
                owner: (h.uid().unwrap(), h.gid().unwrap()),
                link,
                size,
                sha256,
                xattrs,
            },
        );
    }
    out
}

/// The differences between the two layers, one a line.
fn differences(skiff: &BTreeMap<String, Member>, podman: &BTreeMap<String, Member>) -> String {
    let mut out = String::new();
    for (name, m) in skiff {
        match podman.get(name) {
            None => out.push_str(&format!("only skiff: {name} {m:?}\n")),
            Some(p) if p != m => out.push_str(&format!(
                "differs: {name}\n  skiff  {m:?}\n  podman {p:?}\n"
            )),
            Some(_) => {}
        }
    }
    for (name, p) in podman {
        if !skiff.contains_key(name) {
            out.push_str(&format!("only podman: {name} {p:?}\n"));
        }
    }
    out
}

/// The steps: (user, script) pairs run with `exec` in a container that sleeps.
type Steps<'a> = &'a [(&'a str, String)];

/// Runs `steps` in podman (driver `podman_driver`) and returns the new layer.
fn podman_layer(
    env: &Env,
    image: &Path,
    podman_driver: &str,
    keep_id: bool,
    steps: Steps<'_>,
) -> BTreeMap<String, Member> {
    let podman = Podman::new(env.dir.path(), podman_driver);
    podman.run(&["import", image.to_str().unwrap(), "localhost/diffbase:1"]);
    let mut run = vec!["run", "-d", "--name", "box", "--user", "0"];
    if keep_id {
        run.extend(["--userns", "keep-id"]);
    }
    run.extend(["localhost/diffbase:1", "sleep", "1000"]);
    podman.run(&run);
    for (user, script) in steps {
        podman.run(&["exec", "--user", user, "box", "sh", "-c", script]);
    }
    podman.run(&["commit", "box", "localhost/out:1"]);
    let archive = env.dir.path().join(format!("podman-{podman_driver}.tar"));
    podman.run(&[
        "save",
        "--format",
        "docker-archive",
        "-o",
        archive.to_str().unwrap(),
        "localhost/out:1",
    ]);
    let mut layer = top_layer(&archive);
    for n in PODMAN_OWN {
        layer.remove(*n);
    }
    if keep_id {
        for n in PODMAN_KEEP_ID_OWN {
            layer.remove(*n);
        }
    }
    layer
}

/// Runs `steps` in skiff on `driver` and returns the new layer.
fn skiff_layer(
    image: &Path,
    driver: &str,
    keep_id: bool,
    steps: Steps<'_>,
) -> (Env, BTreeMap<String, Member>) {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    env.skiff_ok(&["import", image.to_str().unwrap(), "demo/diffbase:1"]);
    let mut run = vec!["run", "-d", "--name", "box", "--user", "0"];
    if keep_id {
        run.extend(["--userns", "keep-id"]);
    }
    run.extend(["demo/diffbase:1", "sleep", "1000"]);
    env.skiff_ok(&run);
    for (user, script) in steps {
        env.skiff_ok(&["exec", "--user", user, "box", "sh", "-c", script]);
    }
    env.skiff_ok(&["commit", "box", "me/out:1"]);
    let archive = env.dir.path().join(format!("skiff-{driver}.tar"));
    env.skiff_ok(&["save", "-o", archive.to_str().unwrap(), "me/out:1"]);
    let layer = top_layer(&archive);
    (env, layer)
}

fn compare(driver: &str, keep_id: bool, steps: Steps<'_>) -> BTreeMap<String, Member> {
    let podman_driver = if driver == "vfs" { "vfs" } else { "overlay" };
    // The image tar is written by a first Env, whose directory also holds podman's
    // storage; skiff's daemon gets an Env of its own.
    let holder = Env::bus_only();
    let image = write_image(&holder);
    let podman = podman_layer(&holder, &image, podman_driver, keep_id, steps);
    let (env, skiff) = skiff_layer(&image, driver, keep_id, steps);
    let diff = differences(&skiff, &podman);
    assert!(
        diff.is_empty(),
        "skiff ({driver}) and podman ({podman_driver}) committed different layers \
         (keep-id: {keep_id}):\n{diff}\n{}",
        env.daemon_log()
    );
    skiff
}

fn default_steps() -> Vec<(&'static str, String)> {
    vec![("0", STEPS.to_string())]
}

fn keep_id_steps() -> Vec<(String, String)> {
    // SAFETY: getuid cannot fail.
    let uid = unsafe { libc::getuid() }.to_string();
    vec![
        ("0".to_string(), KEEP_ID_ROOT.replace("{U}", &uid)),
        (uid, KEEP_ID_USER.to_string()),
    ]
}

fn differential(driver: &str) {
    let layer = compare(driver, false, &default_steps());
    // The comparison saw what the steps made (a layer both got wrong alike would pass
    // it): a few entries checked outright.
    let xattr_file = &layer["etc/xattr-file"];
    assert!(
        matches!(xattr_file, Member::Entry { xattrs, mode: 0o640, .. }
            if xattrs.get("user.note").map(Vec::as_slice) == Some(b"kept".as_slice())),
        "{xattr_file:?}"
    );
    assert!(layer.contains_key(".wh.var"), "{layer:?}");
    assert!(
        matches!(
            &layer["dd/f"],
            Member::Entry {
                mode: 0o4755,
                owner: (1000, 1000),
                ..
            }
        ),
        "{layer:?}"
    );
    let replaced = if driver == "vfs" {
        "usr/share/doc/.wh.a"
    } else {
        "usr/share/doc/.wh..wh..opq"
    };
    assert!(layer.contains_key(replaced), "{layer:?}");
}

fn keep_id(driver: &str) {
    let steps = keep_id_steps();
    let steps: Vec<(&str, String)> = steps.iter().map(|(u, s)| (u.as_str(), s.clone())).collect();
    let layer = compare(driver, true, &steps);
    // SAFETY: getuid cannot fail.
    let uid = u64::from(unsafe { libc::getuid() });
    for (name, owner) in [
        ("byroot", (0, 0)),
        ("mine", (uid, uid)),
        ("mine/u", (uid, uid)),
        ("tmp/t", (uid, uid)),
        ("etc/chownme", (1000, 1000)),
        ("etc/chmodme", (0, 0)),
    ] {
        assert!(
            matches!(&layer[name], Member::Entry { owner: o, .. } if *o == owner),
            "{name}: {:?}",
            layer[name]
        );
    }
}

#[test]
fn commit_like_podman_on_fuse() {
    differential("fuse");
}

#[test]
fn commit_like_podman_on_overlay() {
    differential("overlay");
}

#[test]
fn commit_like_podman_on_vfs() {
    differential("vfs");
}

#[test]
fn keep_id_commit_like_podman_on_fuse() {
    keep_id("fuse");
}

#[test]
fn keep_id_commit_like_podman_on_overlay() {
    keep_id("overlay");
}

#[test]
fn keep_id_commit_like_podman_on_vfs() {
    keep_id("vfs");
}
