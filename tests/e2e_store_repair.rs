//! End to end: the store state a power loss leaves, repaired when skiffd starts. A
//! layer named in `layers/` whose background sync never ran keeps its marker
//! `unsynced/<hex>` with the boot id of its install; after a reboot (another boot id)
//! its files may be empty or missing. skiffd, at start, extracts such a layer again
//! from its blob: the file emptied here has its content back, the marker is gone. A
//! marker of the current boot (only skiffd died: the page cache holds the files) is
//! only synced and removed, the layer left as it is. The `--userns keep-id` copies of a
//! repaired layer (overlay driver) go with its old tree and are made again from the
//! repaired one: a keep-id container of the image, old or new, sees the right owners.

mod common;
mod image_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use common::{entries, Env};
use image_support::multi_layer_archive;

/// Imports busybox as `demo/busybox`, waits for its layer's marker to go (synced) and
/// stops skiffd; returns the layer's directory and its diff id hex.
fn imported_layer(env: &mut Env) -> (PathBuf, String) {
    env.start_daemon();
    let tar = env.busybox_tar();
    env.skiff_ok(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    let v: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", "demo/busybox"])).expect("JSON");
    let diff_id = v[0]["RootFS"]["Layers"][0]
        .as_str()
        .expect("a layer")
        .to_string();
    let hex = diff_id.trim_start_matches("sha256:").to_string();
    let marker = env.data().join("storage/unsynced").join(&hex);
    assert!(
        env.eventually(60, || !marker.exists()),
        "the marker {marker:?} was never removed by the background sync\n{}",
        env.daemon_log()
    );
    env.stop_daemon();
    (env.data().join("storage/layers").join(&hex), hex)
}

/// The biggest regular file of the layer's tree (its path and content).
fn biggest_file(diff: &Path) -> (PathBuf, Vec<u8>) {
    let mut best: Option<(u64, PathBuf)> = None;
    let mut todo = vec![diff.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in fs::read_dir(&d).expect("read_dir").flatten() {
            let m = e.path().symlink_metadata().expect("lstat");
            if m.is_dir() {
                todo.push(e.path());
            } else if m.is_file() && best.as_ref().is_none_or(|(s, _)| m.len() > *s) {
                best = Some((m.len(), e.path()));
            }
        }
    }
    let (_, path) = best.expect("a regular file in the layer");
    let content = fs::read(&path).expect("reading the layer's file");
    assert!(!content.is_empty());
    (path, content)
}

/// Empties `path` as a power loss does to a file whose pages never reached the disk.
fn empty_file(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).expect("stat").permissions().mode();
    fs::set_permissions(path, fs::Permissions::from_mode(mode | 0o200)).expect("chmod");
    fs::File::create(path).expect("truncating the layer's file");
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod back");
}

#[test]
fn a_layer_marked_by_another_boot_is_extracted_again_at_start() {
    let mut env = Env::bus_only();
    let (layer, hex) = imported_layer(&mut env);
    let (file, content) = biggest_file(&layer.join("diff"));
    empty_file(&file);
    let marker = env.data().join("storage/unsynced").join(&hex);
    fs::create_dir_all(env.data().join("storage/unsynced")).expect("mkdir");
    fs::write(&marker, "00000000-0000-4000-8000-000000000000\n").expect("writing the marker");

    env.start_daemon();
    // The repair runs before skiffd serves: it is done once the daemon answers.
    env.skiff_ok(&["image", "ls"]);
    let now = fs::read(&file).expect("reading the repaired file");
    assert!(
        now == content,
        "{file:?} was not restored ({} bytes, expected {})\n{}",
        now.len(),
        content.len(),
        env.daemon_log()
    );
    assert!(
        !marker.exists(),
        "the marker {marker:?} is still there\n{}",
        env.daemon_log()
    );
    // The image works on the repaired layer.
    let out = env.skiff_ok(&["run", "--rm", "demo/busybox", "echo", "repaired"]);
    assert_eq!(out.trim(), "repaired");
    // Nothing of the old tree stays behind once the collection ran.
    let tmp = env.data().join("storage/tmp");
    assert!(
        env.eventually(60, || fs::read_dir(&tmp)
            .map(|d| d.count() == 0)
            .unwrap_or(false)),
        "leftovers in {tmp:?}: {:?}",
        fs::read_dir(&tmp).map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
    );
}

#[test]
fn a_layer_marked_in_this_boot_is_only_synced() {
    let mut env = Env::bus_only();
    let (layer, hex) = imported_layer(&mut env);
    let (file, _) = biggest_file(&layer.join("diff"));
    // Only skiffd died: the page cache is the truth, nothing is extracted again (the
    // emptied file shows it).
    empty_file(&file);
    let boot = fs::read_to_string("/proc/sys/kernel/random/boot_id").expect("boot id");
    let marker = env.data().join("storage/unsynced").join(&hex);
    fs::create_dir_all(env.data().join("storage/unsynced")).expect("mkdir");
    fs::write(&marker, boot).expect("writing the marker");

    env.start_daemon();
    env.skiff_ok(&["image", "ls"]);
    assert!(
        !marker.exists(),
        "the marker {marker:?} is still there\n{}",
        env.daemon_log()
    );
    assert_eq!(
        fs::metadata(&file).expect("stat").len(),
        0,
        "a layer of this boot was extracted again\n{}",
        env.daemon_log()
    );
}

#[test]
fn a_marked_layer_without_its_blob_is_reported_not_fatal() {
    let mut env = Env::bus_only();
    let (_, hex) = imported_layer(&mut env);
    // An import's layer blob is the tar as it came: its digest is the diff id.
    let blob = env.data().join("storage/blobs/sha256").join(&hex);
    assert!(blob.is_file(), "no blob {blob:?}");
    fs::remove_file(&blob).expect("removing the blob");
    let marker = env.data().join("storage/unsynced").join(&hex);
    fs::create_dir_all(env.data().join("storage/unsynced")).expect("mkdir");
    fs::write(&marker, "00000000-0000-4000-8000-000000000000\n").expect("writing the marker");

    env.start_daemon();
    env.skiff_ok(&["image", "ls"]);
    let log = env.daemon_log();
    assert!(
        log.contains(&format!("sha256:{hex}"))
            && log.contains("demo/busybox")
            && log.contains("skiff rmi"),
        "no error naming the layer, its image and what to do:\n{log}"
    );
    // Kept: the next start says it again until the image is removed.
    assert!(marker.exists(), "the marker went without a repair\n{log}");
}

/// What a keep-id container reports of itself and the image: ids, owners, modes and
/// sizes (of the biggest files too, which the test empties), what the layers' whiteouts
/// leave.
const LOOK: &str = "id -u; id -g; stat -c '%n %u:%g %a %s' / /bin/busybox /home/user/owned \
    /keep/a /keep/b /links/x /top; ls /keep; test ! -e /etc/gone && echo gone stays gone; \
    cat /top";

/// Every finished keep-id copy in the store: `layers/<hex>/keepid/<key>`.
fn keep_id_copies(env: &Env) -> Vec<PathBuf> {
    let layers = env.data().join("storage/layers");
    let mut out = Vec::new();
    for l in entries(&layers) {
        let dir = layers.join(l).join("keepid");
        for c in entries(&dir) {
            if !c.starts_with('.') && !c.ends_with(".lock") {
                out.push(dir.join(c));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn keep_id_containers_of_a_repaired_image_see_the_right_owners() {
    const IMAGE: &str = "demo/multi:1";
    let me = nix::unistd::getuid().as_raw();
    let my_gid = nix::unistd::getgid().as_raw();
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "overlay"]);
    let archive = multi_layer_archive(&env, IMAGE);
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    env.skiff_ok(&[
        "create", "--name", "kid", "--userns", "keep-id", IMAGE, "sh", "-c", LOOK,
    ]);
    let want = env.skiff_ok(&["start", "-a", "kid"]);
    assert!(
        want.starts_with(&format!("{me}\n{my_gid}\n/ 0:0 755 ")),
        "{want}"
    );
    assert!(
        want.contains("/home/user/owned 1000:1000 644 5\n") && want.contains("a\nb\n"),
        "{want}"
    );
    assert_eq!(keep_id_copies(&env).len(), 3, "{}", env.daemon_log());
    let v: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", IMAGE])).expect("JSON");
    let hexes: Vec<String> = v[0]["RootFS"]["Layers"]
        .as_array()
        .expect("layers")
        .iter()
        .map(|l| l.as_str().expect("a diff id")[7..].to_string())
        .collect();
    let unsynced = env.data().join("storage/unsynced");
    assert!(
        env.eventually(60, || entries(&unsynced).is_empty()),
        "the markers were never removed by the background sync\n{}",
        env.daemon_log()
    );
    env.stop_daemon();

    // Another boot: every layer marked, the biggest file of each emptied (their
    // keep-id copies, made from the whole files, are what the repair must not trust
    // either: they go with the old trees).
    for hex in &hexes {
        let layer = env.data().join("storage/layers").join(hex);
        let (file, _) = biggest_file(&layer.join("diff"));
        empty_file(&file);
        fs::write(unsynced.join(hex), "00000000-0000-4000-8000-000000000000\n")
            .expect("writing the marker");
    }
    env.start_daemon();
    env.skiff_ok(&["image", "ls"]);
    assert!(
        entries(&unsynced).is_empty(),
        "markers left: {:?}\n{}",
        entries(&unsynced),
        env.daemon_log()
    );
    assert!(
        keep_id_copies(&env).is_empty(),
        "copies of the old trees kept: {:?}",
        keep_id_copies(&env)
    );

    // The container made before the repair starts again on new copies.
    let out = env.skiff(&["start", "-a", "kid"]);
    assert!(
        out.status.success(),
        "the keep-id container does not start after the repair: {}\n{}",
        common::stderr(&out),
        env.daemon_log()
    );
    assert_eq!(common::stdout(&out), want, "{}", env.daemon_log());
    // So does a new one.
    let again = env.skiff_ok(&[
        "run", "--rm", "--userns", "keep-id", IMAGE, "sh", "-c", LOOK,
    ]);
    assert_eq!(again, want);
    let made = keep_id_copies(&env);
    assert_eq!(made.len(), 3, "{made:?}");
    let (sub_uid, _) = common::first_subordinate_ids();
    let busybox = made
        .iter()
        .map(|c| c.join("bin/busybox"))
        .find(|p| p.exists())
        .expect("busybox in a copy");
    assert_eq!(
        fs::symlink_metadata(&busybox).expect("lstat").uid(),
        sub_uid,
        "the copy's root-owned files belong to the keep-id root"
    );
    // The old trees and their copies are collected.
    let tmp = env.data().join("storage/tmp");
    assert!(
        env.eventually(60, || entries(&tmp).is_empty()),
        "leftovers in {tmp:?}: {:?}",
        entries(&tmp)
    );
}
