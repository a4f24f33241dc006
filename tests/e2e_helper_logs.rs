//! Helpers' logs: what a container's monitor logs reaches skiffd's log, each line with
//! the container's id, without colours when the log is no terminal; warnings of a job
//! reach the client.

mod common;

use common::{stderr, stdout, Env};
use skiff::monitor::attach::{self, Packet, WANT_OUTPUT};

#[test]
fn a_monitor_warning_reaches_the_daemon_log_with_the_container_id() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--log-opt",
        "max-size=1m",
        "demo/busybox",
        "sh",
        "-c",
        "while :; do cat /bin/busybox; done",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let sock = env
        .runtime()
        .join("containers")
        .join(&id)
        .join(attach::SOCKET_NAME);
    // A client that asks for the output and never reads it is disconnected, with a
    // warning.
    let c = attach::connect(&sock).unwrap();
    attach::send(&c, &Packet::Hello { flags: WANT_OUTPUT }).unwrap();
    let warned = |log: &str| {
        log.lines()
            .any(|l| l.contains("does not read its output") && l.contains(&id))
    };
    assert!(
        env.eventually(120, || warned(&env.daemon_log())),
        "{}",
        env.daemon_log()
    );
    drop(c);
    let log = env.daemon_log();
    assert!(!log.contains('\u{1b}'), "colours in a log file: {log}");
    let _ = env.skiff(&["rm", "-f", &id]);
}

#[test]
fn the_fuse_server_logs_to_the_daemon_log_with_the_container_id() {
    // The FUSE server, a fork that closes every descriptor it does not need, keeps the
    // log's: its lines reach skiffd's log (RUST_LOG=debug in the tests), not a file that
    // later got the log's descriptor number.
    let env = Env::new();
    let out = env.skiff(&["run", "-d", "demo/busybox", "sleep", "1000"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_string();
    let short = &id[..12];
    let logged = |what: &str| {
        env.daemon_log()
            .lines()
            .any(|l| l.contains(what) && l.contains(short))
    };
    assert!(
        env.eventually(60, || logged("FUSE server: serving the container's rootfs")),
        "{}",
        env.daemon_log()
    );
    let _ = env.skiff_ok(&["rm", "-f", &id]);
    assert!(
        env.eventually(60, || logged("FUSE server: the container's init exited")),
        "{}",
        env.daemon_log()
    );
}

/// A layer with a file and a character device node (which an unprivileged user cannot
/// create: skipped with a warning).
fn layer_with_a_device() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (kind, path, data) in [
        (tar::EntryType::Directory, "dev", &b""[..]),
        (tar::EntryType::Char, "dev/sda", &b""[..]),
        (tar::EntryType::Regular, "hello", &b"hi\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        h.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            0o644
        });
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        if kind == tar::EntryType::Char {
            h.set_device_major(8).unwrap();
            h.set_device_minor(0).unwrap();
        }
        b.append_data(&mut h, path, data).unwrap();
    }
    b.into_inner().unwrap()
}

#[test]
fn import_and_load_print_the_warnings_of_their_job() {
    use sha2::Digest;
    let mut env = Env::bus_only();
    env.start_daemon();
    let layer = layer_with_a_device();
    let tar = env.dir.path().join("dev.tar");
    std::fs::write(&tar, &layer).unwrap();
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/dev:1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: ") && err.contains("skipping device node dev/sda"),
        "{err}"
    );

    let hex = |d: &[u8]| {
        sha2::Sha256::digest(d)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };
    let config = serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "rootfs": { "type": "layers", "diff_ids": [format!("sha256:{}", hex(&layer))] },
    });
    let manifest = serde_json::json!([{
        "Config": "config.json", "RepoTags": ["demo/dev:2"], "Layers": ["l.tar"],
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
    // Without the layer in the store, so that the load extracts it again.
    let _ = env.skiff(&["rmi", "demo/dev:1"]);
    let archive = env.dir.path().join("dev-archive.tar");
    std::fs::write(&archive, b.into_inner().unwrap()).unwrap();
    let out = env.skiff(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("WARNING: ") && err.contains("skipping device node dev/sda"),
        "{err}"
    );
}
