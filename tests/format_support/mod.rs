//! Shared by the `--format` test files: skiff runs that must succeed or fail with a
//! given code, and the containers the template tests read.
#![allow(dead_code)]

use super::common::{stderr, stdout, Env};

/// Runs skiff, asserting success; returns stdout.
pub fn ok(env: &Env, args: &[&str]) -> String {
    env.skiff_ok(args)
}

/// Runs skiff, asserting exit code `code`; returns stderr.
pub fn fails(env: &Env, args: &[&str], code: i32) -> String {
    let out = env.skiff(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "skiff {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    stderr(&out)
}

/// One running container `web` (labels, a volume, a restart policy) and a created one.
pub fn setup() -> (Env, String) {
    let env = Env::new();
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            "-l",
            "b=2",
            "-l",
            "a=1",
            "-e",
            "GREETING=hi there",
            "-v",
            "vol1:/data",
            "--restart",
            "on-failure:3",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    )
    .trim()
    .to_string();
    ok(
        &env,
        &[
            "create",
            "--name",
            "idle",
            "--network",
            "none",
            "demo/busybox",
            "true",
        ],
    );
    (env, id)
}
