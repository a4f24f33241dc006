//! End to end: when skiffd makes the next spare container directory and bundle after a
//! start took them (see `daemon::spare`): once the start's client has its answer, never
//! while a command its client waits for runs.

mod common;
mod spare_support;

use common::{entries, Env};
use spare_support::{spare_dir_ready, the_spare_bundle};

/// When a spare was begun: the µs time in its name (`PID-TIME-N`).
fn begun_at(name: &str) -> u64 {
    name.split('-')
        .nth(1)
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("not a spare's name: {name}"))
}

/// The times (`t_us`) of the phase marks `phase` in skiffd's log, in order.
fn marks(env: &Env, phase: &str) -> Vec<u64> {
    let needle = format!("phase=\"{phase}\"");
    env.daemon_log()
        .lines()
        .filter(|l| l.contains(&needle))
        .filter_map(|l| l.split("t_us=").nth(1))
        .filter_map(|t| t.split_whitespace().next())
        .filter_map(|t| t.parse().ok())
        .collect()
}

/// The time of the `n`th (from 1) phase mark `phase`, once it is in the log.
fn nth_mark(env: &Env, phase: &str, n: usize) -> u64 {
    assert!(
        env.eventually(10, || marks(env, phase).len() >= n),
        "no {phase} mark #{n} in the log:\n{}",
        env.daemon_log()
    );
    marks(env, phase)[n - 1]
}

/// The one spare container directory and spare bundle, once both are complete and the
/// removals of earlier `--rm` runs are done (a removal gives its bundle back).
fn both_spares_settled(env: &Env) -> (String, String) {
    assert!(
        env.eventually(10, || spare_dir_ready(env)
            && entries(&env.data().join("containers"))
                .iter()
                .all(|n| !n.starts_with(".rm-"))),
        "no spare container directory: {:?}",
        entries(&env.data().join("spare"))
    );
    let bundle = the_spare_bundle(env);
    let dir = entries(&env.data().join("spare")).remove(0);
    (dir, bundle.file_name().unwrap().to_string_lossy().into())
}

/// A foreground run (`fg`, its client waiting for its end) whose command waits for a
/// line on its stdin while a spare made meanwhile (other than `before`'s) has the time
/// to show itself, then exits 3.
fn foreground_run(env: &Env, name: &str, before: Option<&(String, String)>) {
    let mut fg = env
        .skiff_cmd(&[
            "run",
            "-i",
            "--network",
            "none",
            "--name",
            name,
            "demo/busybox",
            "sh",
            "-c",
            "read x; exit 3",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    assert!(
        env.eventually(20, || env.inspect(name)["State"]["Running"] == true),
        "{name} does not run: {}",
        env.daemon_log()
    );
    // Its command waits: a spare made while it runs has the time to show itself. (Not
    // asserted here: a spare is expected to appear only later, so this wait ends at its
    // limit; the order is checked below from the spares' names.)
    let spare_names = || {
        (
            entries(&env.data().join("spare")),
            entries(&env.runtime().join("spare")),
        )
    };
    env.eventually(3, || {
        let (d, b) = spare_names();
        let new = |now: &[String], was: Option<&String>| {
            !now.is_empty() && was.is_none_or(|w| now != [w.clone()])
        };
        new(&d, before.map(|b| &b.0)) || new(&b, before.map(|b| &b.1))
    });
    {
        use std::io::Write;
        let mut stdin = fg.stdin.take().unwrap();
        stdin.write_all(b"go\n").unwrap();
    }
    assert_eq!(fg.wait().unwrap().code(), Some(3));
}

/// A run without `--rm` takes the spares and the next ones are made once its client
/// has its answer, not while its command runs: for a foreground run after its exit is
/// recorded (and `die` sent), for a detached one after its start.
#[test]
fn a_run_without_rm_makes_the_next_spares_after_its_client_is_answered() {
    let env = Env::new();
    // The first create makes both spares (not a `--rm` run: its removal's thread would
    // make the next spare directory once the run below took this one).
    env.skiff_ok(&["create", "--network", "none", "demo/busybox", "true"]);
    let before = both_spares_settled(&env);
    foreground_run(&env, "fg", Some(&before));
    // Both taken by the run (a new name each), both made again.
    assert!(
        env.eventually(10, || {
            let e = entries(&env.data().join("spare"));
            e.len() == 1 && e[0] != before.0 && spare_dir_ready(&env)
        }),
        "no new spare container directory: {:?} (before: {before:?})",
        entries(&env.data().join("spare"))
    );
    let after = both_spares_settled(&env);
    assert_ne!(after.1, before.1, "the spare bundle was not taken");
    let ended = nth_mark(&env, "exit-recorded", 1);
    assert!(
        begun_at(&after.0) > ended && begun_at(&after.1) > ended,
        "spares {after:?} begun before the run's end was recorded ({ended})"
    );
    // A detached run: after its start (its client's answer).
    let id = env.skiff_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "demo/busybox",
        "sleep",
        "300",
    ]);
    let id = id.trim();
    assert!(
        env.eventually(10, || {
            let e = entries(&env.data().join("spare"));
            e.len() == 1 && e[0] != after.0 && spare_dir_ready(&env)
        }),
        "no new spare after a detached run: {:?}",
        entries(&env.data().join("spare"))
    );
    let detached = both_spares_settled(&env);
    let started = nth_mark(&env, "running-recorded", 2);
    assert!(
        begun_at(&detached.0) > started && begun_at(&detached.1) > started,
        "spares {detached:?} begun before the start was recorded ({started})"
    );
    env.skiff_ok(&["rm", "-f", id, "fg"]);
}

/// A run that finds no spare (the first of a skiffd) makes its own directory and
/// bundle, and the spares only once its client has its answer: not at its create, which
/// would make them while its command runs.
#[test]
fn a_run_that_finds_no_spare_makes_them_after_its_client_is_answered() {
    let env = Env::new();
    assert_eq!(entries(&env.data().join("spare")), Vec::<String>::new());
    foreground_run(&env, "first", None);
    let made = both_spares_settled(&env);
    let ended = nth_mark(&env, "exit-recorded", 1);
    assert!(
        begun_at(&made.0) > ended && begun_at(&made.1) > ended,
        "spares {made:?} begun before the run's end was recorded ({ended})"
    );
    env.skiff_ok(&["rm", "first"]);
}
