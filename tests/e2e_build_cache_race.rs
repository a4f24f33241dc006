//! Two builds at once share the store's build cache (`build-cache.json`): each records
//! its steps while the other does, and neither loses the other's entries. Two builds
//! of different steps run together; afterwards a rebuild of each is all cache hits.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{stderr, stdout, Env};

/// Steps after FROM in each Dockerfile: many small config steps, so that the two
/// builds' cache writes interleave.
const STEPS: usize = 100;

fn context(env: &Env, name: &str) -> PathBuf {
    let dir = env.dir.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    let mut df = String::from("FROM demo/busybox\n");
    for n in 0..STEPS {
        df.push_str(&format!("LABEL {name}.step{n}=\"{name} {n}\"\n"));
    }
    std::fs::write(dir.join("Dockerfile"), df).unwrap();
    dir
}

/// One round: the builds of `names` at once, then a rebuild of each (one at a time)
/// that must find every one of its steps in the cache.
fn round(env: &Env, names: &[&str]) {
    let dirs: Vec<PathBuf> = names.iter().map(|n| context(env, n)).collect();

    // All at once: each build's steps are recorded while the others' are.
    let children: Vec<_> = names
        .iter()
        .zip(&dirs)
        .map(|(n, d)| {
            env.skiff_cmd(&["build", "-t", &format!("me/{n}"), d.to_str().unwrap()])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut ids = Vec::new();
    for (n, c) in names.iter().zip(children) {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "build {n}: {}{}\n{}",
            stdout(&out),
            stderr(&out),
            env.daemon_log()
        );
        ids.push(stdout(&out).lines().last().unwrap_or_default().to_string());
    }

    for ((n, d), id) in names.iter().zip(&dirs).zip(&ids) {
        let out = env.skiff(&["build", "-t", &format!("me/{n}"), d.to_str().unwrap()]);
        let text = stdout(&out);
        assert!(out.status.success(), "rebuild {n}: {text}{}", stderr(&out));
        let missed: Vec<&str> = text
            .split("STEP ")
            .skip(2) // the text before STEP 1, and FROM
            .filter(|s| !s.contains("--> Using cache"))
            .collect();
        assert!(
            missed.is_empty(),
            "rebuild {n}: steps not found in the cache (their entries were lost to \
             another build's write): {missed:?}"
        );
        assert_eq!(text.lines().last().unwrap_or_default(), id, "{text}");
    }
}

#[test]
fn concurrent_builds_keep_every_cache_entry() {
    let env = Env::new();
    round(&env, &["alpha", "beta", "gamma", "delta"]);
    round(&env, &["one", "two", "three", "four"]);
}
