//! What the pull tests share: a two-layer image layout, and `skiff pull`/any command
//! that must succeed (the daemon's log shown when not).
#![allow(dead_code)]

use std::path::PathBuf;

use crate::common::{stderr, stdout, Env};
use crate::registry_support::{ImageSpec, LayerBuilder, Layout};

pub fn our_arch() -> String {
    skiff::image::store::oci_arch().to_string()
}

/// A two-layer busybox image: busybox below, /hello and /etc/motd above.
pub fn two_layer_image(env: &Env, name: &str) -> PathBuf {
    let dir = env.dir.path().join(name);
    let layout = Layout::new(&dir);
    let base = LayerBuilder::default().busybox().finish();
    let top = LayerBuilder::default()
        .file("hello", 0o644, b"hello from layer two\n")
        .file("etc/motd", 0o644, b"pulled\n")
        .finish();
    let desc = layout.image(&ImageSpec {
        arch: our_arch(),
        layers: vec![base, top],
        cmd: vec!["cat".into(), "/hello".into()],
    });
    layout.tag("v1", &desc);
    dir
}

pub fn pull_ok(env: &Env, args: &[&str]) -> (String, String) {
    let mut all = vec!["pull"];
    all.extend_from_slice(args);
    let out = env.skiff(&all);
    assert!(
        out.status.success(),
        "skiff {all:?} failed: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    (stdout(&out).trim().to_string(), stderr(&out))
}

pub fn run_ok(env: &Env, args: &[&str]) -> String {
    let out = env.skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    stdout(&out)
}
