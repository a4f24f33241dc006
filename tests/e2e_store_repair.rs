//! End to end: the store state a power loss leaves, repaired when skiffd starts. A
//! layer named in `layers/` whose background sync never ran keeps its marker
//! `unsynced/<hex>` with the boot id of its install; after a reboot (another boot id)
//! its files may be empty or missing. skiffd, at start, extracts such a layer again
//! from its blob: the file emptied here has its content back, the marker is gone. A
//! marker of the current boot (only skiffd died: the page cache holds the files) is
//! only synced and removed, the layer left as it is.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::Env;

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
