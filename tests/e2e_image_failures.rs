//! What failed, cancelled and killed loads and imports leave (nothing), what `image
//! prune` frees and reports, and the messages such failures give.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::process::Stdio;

use common::{entries, stderr, stdout, Env};

fn daemon_env() -> Env {
    let mut env = Env::bus_only();
    env.start_daemon();
    env
}

fn blobs(env: &Env) -> PathBuf {
    env.data().join("storage/blobs/sha256")
}

/// A tar holding one file of `size` incompressible bytes (a layer larger than what a
/// load keeps in memory, so it becomes a blob while the archive is read).
fn noise_layer(size: usize) -> Vec<u8> {
    let mut noise = vec![0u8; size];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(noise.len() as u64);
    h.set_mode(0o644);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    b.append_data(&mut h, "noise", &noise[..]).unwrap();
    b.into_inner().unwrap()
}

/// A docker-archive whose big layer comes first; returns it and where the layer's
/// member ends.
fn archive_with_big_layer() -> (Vec<u8>, usize) {
    let layer = noise_layer(6 << 20);
    let diff_id = common_sha(&layer);
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [diff_id] },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["demo/big:1"],
        "Layers": ["big/layer.tar"],
    }]);
    let mut out = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        out.append_data(&mut h, name, data).unwrap();
    };
    add("big/layer.tar", &layer);
    let layer_end = 512 + layer.len().div_ceil(512) * 512;
    add("config.json", &serde_json::to_vec(&config).unwrap());
    add("manifest.json", &serde_json::to_vec(&manifest).unwrap());
    (out.into_inner().unwrap(), layer_end)
}

fn common_sha(data: &[u8]) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(data);
    format!(
        "sha256:{}",
        d.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

#[test]
fn a_truncated_load_leaves_no_blob_behind() {
    let env = daemon_env();
    let (archive, layer_end) = archive_with_big_layer();
    let path = env.dir.path().join("cut.tar");
    // The layer is whole, the configuration cut in its middle.
    std::fs::write(&path, &archive[..layer_end + 600]).unwrap();
    let out = env.skiff(&["load", "-i", path.to_str().unwrap()]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        entries(&blobs(&env)).is_empty(),
        "blobs left: {:?}\n{}",
        entries(&blobs(&env)),
        env.daemon_log()
    );
    // The whole archive still loads.
    std::fs::write(&path, &archive).unwrap();
    let out = env.skiff(&["load", "-i", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn a_load_killed_with_the_daemon_leaves_no_blob_after_the_restart() {
    let mut env = daemon_env();
    let (archive, layer_end) = archive_with_big_layer();
    let mut child = env
        .skiff_cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(&archive[..layer_end + 512]).unwrap();
    // The layer's blob is written (committed) while the rest of the archive is awaited.
    let dir = blobs(&env);
    assert!(
        env.eventually(60, || !entries(&dir).is_empty()),
        "{}",
        env.daemon_log()
    );
    env.kill_daemon();
    drop(input);
    let _ = child.wait();
    env.start_daemon();
    assert!(
        entries(&dir).is_empty(),
        "blobs left after the restart: {:?}",
        entries(&dir)
    );
}

#[test]
fn a_cancelled_load_leaves_no_blob_behind() {
    let env = daemon_env();
    let (archive, layer_end) = archive_with_big_layer();
    let mut child = env
        .skiff_cmd(&["load"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(&archive[..layer_end + 512]).unwrap();
    let dir = blobs(&env);
    assert!(
        env.eventually(60, || !entries(&dir).is_empty()),
        "{}",
        env.daemon_log()
    );
    // Ctrl-C: the CLI cancels the job.
    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    drop(input);
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(
        env.eventually(30, || entries(&dir).is_empty()),
        "blobs left: {:?}\n{}",
        entries(&dir),
        env.daemon_log()
    );
}

#[test]
fn prune_frees_unreferenced_blobs_and_reports_the_bytes() {
    let env = daemon_env();
    let tar = env.busybox_tar();
    let tar = tar.to_str().unwrap();
    let ok = |args: &[&str]| {
        let out = env.skiff(args);
        assert!(out.status.success(), "{args:?}: {}", stderr(&out));
        stdout(&out)
    };
    ok(&["import", tar, "p:1"]);
    ok(&["import", "--change", "ENV X=1", tar, "p:1"]);
    // What an interrupted pull of another image leaves: a complete blob no image lists.
    let data = vec![7u8; 12345];
    let digest = common_sha(&data);
    let hex = digest.trim_start_matches("sha256:");
    std::fs::write(blobs(&env).join(hex), &data).unwrap();
    let size_of = |dir: PathBuf| -> u64 {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum()
    };
    let before = size_of(blobs(&env));
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PruneImages",
        &["0"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let freed = before - size_of(blobs(&env));
    assert!(!blobs(&env).join(hex).exists(), "{text}");
    assert!(freed > 12345, "{text}");
    assert!(
        text.contains(&format!("('reclaimed', '{freed}')")),
        "{freed}: {text}"
    );
    // The CLI says it as docker does; the image in use by a tag stays.
    std::fs::write(blobs(&env).join(hex), &data).unwrap();
    let out = ok(&["image", "prune"]);
    assert!(out.contains("Total reclaimed space: 12.3kB"), "{out}");
    assert!(ok(&["images"]).contains("p "), "p:1 is tagged: kept");
}

/// A one-file rootfs tar whose entry has no valid uid field (a broken tar writer).
fn tar_with_a_broken_uid(path: &std::path::Path) {
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o644);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_path("noise").unwrap();
    h.as_gnu_mut().unwrap().uid = *b"zzzzzzz\0";
    h.set_cksum();
    let mut data = h.as_bytes().to_vec();
    data.extend_from_slice(b"abc");
    data.resize(512 * 2, 0);
    data.extend_from_slice(&[0u8; 1024]);
    std::fs::write(path, data).unwrap();
}

#[test]
fn a_broken_layer_is_reported_by_entry_name_without_staging_paths() {
    let env = daemon_env();
    let path = env.dir.path().join("broken.tar");
    tar_with_a_broken_uid(&path);
    let out = env.skiff(&["import", path.to_str().unwrap(), "demo/broken"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains(&format!("importing {}: ", path.display())),
        "{err}"
    );
    assert!(err.contains("\"noise\""), "{err}");
    assert!(
        !err.contains("storage") && !err.contains("/diff") && !err.contains("import-"),
        "{err}"
    );
    assert_eq!(
        err.matches("noise").count(),
        2,
        "said once (plus the tar crate's own words): {err}"
    );
}

#[test]
fn load_refusals_name_the_archive_not_import() {
    let env = daemon_env();
    let (archive, layer_end) = archive_with_big_layer();
    let path = env.dir.path().join("cut.tar");
    std::fs::write(&path, &archive[..layer_end + 600]).unwrap();
    let out = env.skiff(&["load", "-i", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("import"), "{err}");
    assert!(
        err.contains(&format!("loading {}: ", path.display())),
        "{err}"
    );
    // A layer that cannot be extracted (said "import failed" before).
    let broken = env.dir.path().join("broken.tar");
    tar_with_a_broken_uid(&broken);
    let layer = std::fs::read(&broken).unwrap();
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [common_sha(&layer)] },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": ["demo/broken:1"], "Layers": ["l.tar"],
    }]);
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("l.tar", layer),
        ("config.json", serde_json::to_vec(&config).unwrap()),
        ("manifest.json", serde_json::to_vec(&manifest).unwrap()),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    let bad = env.dir.path().join("bad-layer.tar");
    std::fs::write(&bad, b.into_inner().unwrap()).unwrap();
    let out = env.skiff(&["load", "-i", bad.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("import"), "{err}");
    assert!(
        err.contains(&format!("loading {}: ", bad.display())) && err.contains("\"noise\""),
        "{err}"
    );
    // From stdin.
    let out = env
        .skiff_cmd(&["load"])
        .stdin(std::fs::File::open(&path).unwrap())
        .output()
        .unwrap();
    let err = stderr(&out);
    assert!(err.contains("loading the archive on stdin: "), "{err}");
}

#[test]
fn load_of_a_directory_that_is_no_oci_layout_names_the_directory() {
    let env = daemon_env();
    let dir = env.dir.path().join("not-a-layout");
    std::fs::create_dir(&dir).unwrap();
    let out = env.skiff(&["load", "-i", dir.to_str().unwrap()]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(!err.contains("/proc/"), "{err}");
    assert!(
        err.contains(&format!("loading {}: ", dir.display())) && err.contains("no index.json"),
        "{err}"
    );
}
