//! End to end: the container directory made ahead of a create (`spare/`, a sibling of
//! `containers/`): a `run --rm` takes it and the next one is made while its command
//! runs; a spare left by an earlier skiffd is removed at start-up, never taken.

mod common;

use common::{entries, stderr, Env};

#[test]
fn run_rm_takes_the_spare_and_a_new_one_is_made() {
    let env = Env::new();
    let spare = env.data().join("spare");
    let run = |code: &str| {
        let out = env.skiff(&["run", "--rm", "demo/busybox", "sh", "-c", code]);
        assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    };
    // The first create finds none and makes one.
    run("test -d / && exit 7");
    assert!(
        env.eventually(10, || entries(&spare).len() == 1),
        "no spare after the first run: {:?}",
        entries(&spare)
    );
    let first = entries(&spare);
    // The second takes it (renamed into its directory, which is then removed), and its
    // start makes the next one.
    run("touch /new && test -f /new && exit 7");
    assert!(
        env.eventually(10, || {
            let now = entries(&spare);
            now.len() == 1 && now != first
        }),
        "the spare was not taken and made again: before {first:?}, now {:?}",
        entries(&spare)
    );
    // Its trash (`.rm-ID`) is emptied in the background too.
    let containers = env.data().join("containers");
    assert!(
        env.eventually(10, || entries(&containers).is_empty()),
        "{:?}",
        entries(&containers)
    );
    // A container made from a spare starts with an empty writable layer.
    let out = env.skiff(&["run", "--rm", "demo/busybox", "sh", "-c", "test ! -e /new"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn a_spare_left_by_an_earlier_daemon_is_removed_at_start_up() {
    let mut env = Env::new();
    let out = env.skiff(&["run", "--rm", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let spare = env.data().join("spare");
    assert!(env.eventually(10, || entries(&spare).len() == 1));
    env.stop_daemon();
    // Not the shape of a spare: it must not become a container's directory.
    let stale = spare.join("1-2-3");
    std::fs::create_dir_all(stale.join("upper")).unwrap();
    std::fs::write(stale.join("upper").join("planted"), "x").unwrap();
    env.start_daemon();
    assert!(
        env.eventually(10, || !stale.exists()),
        "the stale spare is still there"
    );
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "test ! -e /planted",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}
