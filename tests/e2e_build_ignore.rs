//! End to end: `.dockerignore` on both sides of a build: the CLI does not send what it
//! excludes (a large ignored directory costs nothing: the bytes skiffd received are in
//! its debug log), `!` re-includes still reach COPY, and skiffd still leaves ignored
//! files out when a client sends them anyway.

mod common;

use std::fs;

use common::{stderr, stdout, Env};

/// The sizes skiffd logged for the build contexts it received, in order.
fn context_sizes(env: &Env) -> Vec<u64> {
    env.daemon_log()
        .lines()
        .filter(|l| l.contains("build context received"))
        .filter_map(|l| {
            let v = l.split("bytes=").nth(1)?;
            v.split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
        })
        .collect()
}

/// The CLI leaves what `.dockerignore` excludes out of the context it sends (a large
/// ignored directory costs nothing), the build sees the same files as before, and `!`
/// re-includes (also of a file below an excluded directory) still reach COPY.
#[test]
fn the_cli_does_not_send_ignored_files() {
    let env = Env::new();
    let ctx = env.dir.path().join("ignoring");
    fs::create_dir_all(ctx.join("big/deeper")).unwrap();
    fs::create_dir_all(ctx.join("build/keep")).unwrap();
    // 32 MiB that must not travel.
    let blob = vec![0x5a_u8; 1 << 20];
    for n in 0..32 {
        fs::write(ctx.join(format!("big/deeper/blob{n}")), &blob).unwrap();
    }
    for (p, data) in [
        (
            ".dockerignore",
            "big\n*.tmp\n!keep.tmp\nbuild/\n!build/keep\n",
        ),
        (
            "Dockerfile",
            "FROM demo/busybox\nCOPY . /ctx/\nCOPY build/keep/f /f\n",
        ),
        ("a.tmp", "ignored\n"),
        ("keep.tmp", "kept\n"),
        ("build/x", "ignored\n"),
        ("build/keep/f", "re-included\n"),
        ("src", "source\n"),
    ] {
        fs::write(ctx.join(p), data).unwrap();
    }
    env.skiff_ok(&["build", "-t", "me/ignoring", ctx.to_str().unwrap()]);
    let sizes = context_sizes(&env);
    assert_eq!(sizes.len(), 1, "{}", env.daemon_log());
    assert!(
        sizes[0] < 1 << 20,
        "the CLI sent {} bytes: the ignored directory went along",
        sizes[0]
    );
    assert_eq!(
        env.skiff_ok(&[
                "run",
                "--rm",
                "me/ignoring",
                "sh",
                "-c",
                "cd /ctx && find . | sort | tr '\\n' ' '; cat /f keep.tmp"
            ]
        ),
        // As docker: COPY . takes what `!build/keep` re-includes below the excluded
        // `build` (and its parents), nothing else of it; named, it is copied too.
        ". ./.dockerignore ./Dockerfile ./build ./build/keep ./build/keep/f ./keep.tmp ./src re-included\nkept\n"
    );

    // A client that sends ignored files anyway (a tar on stdin is sent as it is):
    // skiffd still leaves them out of COPY.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("Dockerfile", &b"FROM demo/busybox\nCOPY . /ctx/\n"[..]),
        (".dockerignore", &b"*.tmp\n"[..]),
        ("a.tmp", &b"ignored\n"[..]),
        ("b", &b"kept\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let out = env.skiff_stdin(
        &["build", "-t", "me/sent-anyway", "-"],
        &b.into_inner().unwrap(),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/sent-anyway", "ls", "-A", "/ctx"]),
        ".dockerignore\nDockerfile\nb\n"
    );
}
