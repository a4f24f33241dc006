//! End to end: skiffd's default network falls back to slirp4netns where pasta cannot
//! run, and never fails a `run` because of its default. A `pasta` earlier in PATH
//! stands in for a broken one (the one test of this file sets the process's PATH, which
//! skiffd and its monitors inherit; it is alone in this binary so no other test sees
//! it). Traffic only goes to 127.0.0.1.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::{stderr, Env};
use net_helpers::*;

/// Puts `dir` first in this process's PATH.
fn path_with(dir: &Path) {
    let old = std::env::var("PATH").unwrap_or_default();
    std::env::set_var("PATH", format!("{}:{old}", dir.display()));
}

fn write_script(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

#[test]
fn the_default_network_falls_back_to_slirp4netns_where_pasta_fails() {
    let real_pasta = common::require("pasta");
    let fake = tempfile::tempdir().unwrap();
    std::fs::set_permissions(fake.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let pasta = fake.path().join("pasta");
    path_with(fake.path());

    // 1. pasta cannot run at all: skiffd's trial fails, the default is slirp4netns and
    //    info says why.
    write_script(
        &pasta,
        "#!/bin/sh\necho 'External interface not usable (simulated)' >&2\nexit 1\n",
    );
    let mut env = Env::new();
    env.stop_daemon();
    env.start_daemon_with(&["--network", "auto"]);
    let info: serde_json::Value = serde_json::from_str(&run_ok(&env, &["info"])).unwrap();
    assert_eq!(info["network"], "slirp4netns", "{info}");
    let why = info["network_reason"].as_str().unwrap_or("");
    assert!(
        why.contains("pasta cannot connect") && why.contains("simulated"),
        "{info}"
    );
    assert!(
        env.daemon_log().contains("default network: slirp4netns"),
        "{}",
        env.daemon_log()
    );
    let out = run_ok(&env, &["run", "--rm", "demo/busybox", "ip", "-o", "link"]);
    assert!(out.contains("tap0"), "{out}");
    drop(env);

    // 2. pasta passes the trial but fails for a container: that container's default
    //    pasta is replaced by slirp4netns at its start (the run works, its ports too),
    //    and inspect says so. An explicit --network pasta fails as asked.
    write_script(
        &pasta,
        &format!(
            "#!/bin/sh\nfor a in \"$@\"; do [ \"$a\" = -- ] && exec {} \"$@\"; done\n\
             echo 'Failed to open tap device (simulated)' >&2\nexit 1\n",
            real_pasta.display()
        ),
    );
    let mut env = Env::new();
    env.stop_daemon();
    env.start_daemon_with(&["--network", "auto"]);
    let info: serde_json::Value = serde_json::from_str(&run_ok(&env, &["info"])).unwrap();
    if info["network"] != "pasta" {
        eprintln!("skiff-test: SKIPPED the monitor's fallback: pasta cannot run here: {info}");
        return;
    }
    let port = free_port();
    let publish = format!("{port}:80");
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &publish,
            "demo/busybox",
            "sh",
            "-c",
            HTTPD,
        ],
    );
    assert!(http_get(port, "/").contains("hello-from-container"));
    let v = env.inspect("web");
    assert_eq!(v["HostConfig"]["NetworkMode"], "slirp4netns", "{v}");
    let reason = v["NetworkSettings"]["NetworkReason"].as_str().unwrap_or("");
    assert!(
        reason.contains("pasta failed") && reason.contains("simulated"),
        "{v}"
    );
    assert!(
        env.daemon_log().contains("slirp4netns used instead"),
        "{}",
        env.daemon_log()
    );
    run_ok(&env, &["rm", "-f", "web"]);
    assert_no_helpers_left(&env);
    let out = env.skiff(&["run", "--rm", "--network", "pasta", "demo/busybox", "true"]);
    assert!(!out.status.success(), "an explicit pasta fell back");
    assert!(stderr(&out).contains("simulated"), "{}", stderr(&out));
}
