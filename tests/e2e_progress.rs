//! End to end: progress of load and import jobs, as a D-Bus client sees it (signals
//! recorded by `gdbus monitor` on the private bus) and as a user sees it (skiff's
//! progress bars on a real pseudo-terminal, none with `-q`).

mod bus_monitor;
mod common;
mod image_support;
mod tty_support;

use std::io::Write;
use std::process::{Child, Stdio};
use std::time::Duration;

use bus_monitor::Monitor;
use common::{stderr, stdout, Env};
use image_support::{multi_layer_archive, sha};
use tty_support::PtyChild;

/// The `LayerProgress` signals of job `path`: (digest, status, done, total).
fn layers(mon: &Monitor, path: &str) -> Vec<(String, String, u64, u64)> {
    let head = format!("{path}: org.skiff.skiff1.Job.LayerProgress (");
    mon.lines()
        .iter()
        .filter_map(|l| l.strip_prefix(&head))
        .map(|args| {
            let parts: Vec<&str> = args.trim_end_matches(')').split(", ").collect();
            let s = |i: usize| parts[i].trim_matches('\'').to_string();
            let n = |i: usize| parts[i].trim_start_matches("uint64 ").parse().unwrap();
            (s(0), s(1), n(2), n(3))
        })
        .collect()
}

/// The last status reported for each blob of job `path`.
fn last_status(mon: &Monitor, path: &str) -> Vec<(String, String, u64, u64)> {
    let mut last: Vec<(String, String, u64, u64)> = Vec::new();
    for l in layers(mon, path) {
        match last.iter_mut().find(|x| x.0 == l.0) {
            Some(x) => *x = l,
            None => last.push(l),
        }
    }
    last
}

/// A daemon, a three-layer archive named `name` (its path and bytes), and a monitor.
fn setup(name: &str) -> (Env, std::path::PathBuf, Vec<u8>, Monitor) {
    let mut env = Env::bus_only();
    env.start_daemon();
    let archive = multi_layer_archive(&env, name);
    let bytes = std::fs::read(&archive).unwrap();
    let mon = Monitor::start(&env);
    (env, archive, bytes, mon)
}

/// `skiff ARGS` with all its stdio piped (the archive goes in on stdin).
fn spawn_piped(env: &Env, args: &[&str]) -> Child {
    env.skiff_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn load_and_import_jobs_publish_their_progress() {
    let (env, archive, bytes, mon) = setup("demo/progress:1");

    // A load from a pipe that stalls halfway: the job reports what it has read, with
    // the total unknown (-1 progress) until the end.
    let mut child = spawn_piped(&env, &["load", "-q"]);
    let mut stdin = child.stdin.take().unwrap();
    let half = bytes.len() / 2;
    stdin.write_all(&bytes[..half]).unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    stdin.write_all(&bytes[half..]).unwrap();
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs = mon.jobs();
    let piped = jobs.first().expect("no JobNew seen").clone();
    mon.wait_end(&piped);

    let phases = mon.prop(&piped, "Phase");
    assert_eq!(
        phases.first().map(String::as_str),
        Some("'reading'"),
        "{phases:?}"
    );
    assert_eq!(
        phases.last().map(String::as_str),
        Some("'done'"),
        "{phases:?}"
    );
    let done = mon.numbers(&piped, "BytesDone");
    assert!(
        done.iter().any(|&d| d > 0 && d < bytes.len() as u64),
        "no partial count while the pipe stalled: {done:?} of {}",
        bytes.len()
    );
    let last_done = *done.last().unwrap();
    // The reader may leave the end-of-archive padding unread.
    assert!(last_done <= bytes.len() as u64 && last_done + 10240 >= bytes.len() as u64);
    let totals = mon.numbers(&piped, "BytesTotal");
    assert_eq!(
        totals.first(),
        Some(&0),
        "unknown while reading: {totals:?}"
    );
    assert_eq!(totals.last(), Some(&last_done), "{totals:?}");
    let progress = mon.prop(&piped, "Progress");
    assert!(progress.iter().any(|p| p == "-1.0"), "{progress:?}");
    assert_eq!(progress.last().map(String::as_str), Some("1.0"));
    let layers = last_status(&mon, &piped);
    assert_eq!(layers.len(), 3, "{layers:#?}");
    for (digest, status, done, total) in &layers {
        assert!(digest.starts_with("sha256:"), "{digest}");
        assert_eq!(status, "extracted", "{layers:#?}");
        assert!(*total > 0 && done == total, "{layers:#?}");
    }

    // The same archive from a file: its size is known from the start, and the layers
    // are already extracted.
    let out = env.skiff(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mon.wait_for(|_| mon.jobs().len() >= 2));
    let file = mon.jobs()[1].clone();
    mon.wait_end(&file);
    let totals = mon.numbers(&file, "BytesTotal");
    assert!(
        !totals.is_empty() && totals.iter().all(|&t| t == bytes.len() as u64),
        "{totals:?}"
    );
    let again = last_status(&mon, &file);
    assert_eq!(again.len(), 3, "{again:#?}");
    assert!(again.iter().all(|l| l.1 == "present"), "{again:#?}");
    assert_eq!(
        mon.prop(&file, "Phase").last().map(String::as_str),
        Some("'done'")
    );

    // An import: the tarball read whole, then its one layer extracted.
    let tar = env.busybox_tar();
    let tar_bytes = std::fs::read(&tar).unwrap();
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/imported"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(mon.wait_for(|_| mon.jobs().len() >= 3));
    let import = mon.jobs()[2].clone();
    mon.wait_end(&import);
    assert_eq!(
        mon.numbers(&import, "BytesDone").last(),
        Some(&(tar_bytes.len() as u64))
    );
    assert_eq!(
        mon.numbers(&import, "BytesTotal").last(),
        Some(&(tar_bytes.len() as u64))
    );
    let n = tar_bytes.len() as u64;
    assert_eq!(
        last_status(&mon, &import),
        vec![(sha(&tar_bytes), "extracted".to_string(), n, n)]
    );
}

#[test]
fn ctrl_c_cancels_a_load_which_leaves_nothing() {
    let (env, archive, bytes, mon) = setup("demo/cancel:1");
    let mut child = spawn_piped(&env, &["load"]);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&bytes[..bytes.len() / 2]).unwrap();
    assert!(mon.wait_for(|_| !mon.jobs().is_empty()));
    let job = mon.jobs()[0].clone();
    // The daemon is in the middle of it: it has read part of the archive.
    assert!(
        mon.wait_for(|_| mon.numbers(&job, "BytesDone").iter().any(|&n| n > 0)),
        "{:#?}",
        mon.lines()
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", stderr(&out));
    assert!(stderr(&out).contains("cancelled"), "{}", stderr(&out));
    assert!(mon.wait_for(|l| l.contains("Manager.JobRemoved")
        && l.contains(&format!("'{job}'"))
        && l.contains("'cancelled'")));
    drop(stdin);

    let images = env.skiff(&["images", "-q"]);
    assert!(stdout(&images).trim().is_empty(), "{}", stdout(&images));
    let tmp = env.data().join("storage/tmp");
    assert!(
        env.eventually(20, || std::fs::read_dir(&tmp)
            .map_or(true, |d| d.count() == 0)),
        "leftovers in {tmp:?}"
    );
    // An ended job cannot be cancelled; the next load works.
    let out = env.dbus_call(&job, "org.skiff.skiff1.Job.Cancel", &[]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("org.skiff.Error.Cancelled") && stderr(&out).contains("ended"),
        "{}",
        stderr(&out)
    );
    let out = env.skiff(&["load", "-q", "-i", archive.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Runs `args` on a pty (with a TERM: indicatif draws nothing without one); returns
/// (success, output) once the output shows `expect`.
fn on_pty(env: &Env, args: &[&str], expect: &str) -> (bool, String) {
    let mut cmd = env.skiff_cmd(args);
    cmd.env("TERM", "xterm");
    let mut t = PtyChild::spawn(cmd, 24, 120);
    let st = t.wait(120);
    t.expect_from(0, expect, 10);
    (st.success(), t.output())
}

#[test]
fn load_and_import_show_bars_on_a_terminal_and_not_with_quiet() {
    let mut env = Env::bus_only();
    env.start_daemon();
    let archive = multi_layer_archive(&env, "demo/bars:1");
    let a = archive.to_str().unwrap();

    let (ok, out) = on_pty(
        &env,
        &["load", "-i", a],
        "Loaded image: docker.io/demo/bars:1",
    );
    assert!(ok, "{out}");
    assert!(out.contains("Reading archive"), "{out}");
    assert!(out.contains("Extracting"), "{out}");

    let tar = env.busybox_tar();
    let t = tar.to_str().unwrap();
    let (ok, out) = on_pty(&env, &["import", t, "demo/imp"], "sha256:");
    assert!(ok, "{out}");
    assert!(out.contains("Reading tarball"), "{out}");
    assert!(out.contains("Extracting"), "{out}");

    let (ok, out) = on_pty(&env, &["load", "-q", "-i", a], "sha256:");
    assert!(ok, "{out}");
    assert!(
        !out.contains("Reading") && !out.contains("Extracting"),
        "{out}"
    );
    let (ok, out) = on_pty(&env, &["import", "-q", t, "demo/imp2"], "sha256:");
    assert!(ok, "{out}");
    assert!(
        !out.contains("Reading") && !out.contains("Extracting"),
        "{out}"
    );

    // A failing load ends with the error, not a bar left hanging.
    let junk = env.dir.path().join("junk.tar");
    std::fs::write(&junk, vec![b'x'; 4096]).unwrap();
    let (ok, out) = on_pty(
        &env,
        &["load", "-i", junk.to_str().unwrap()],
        "not a tar archive",
    );
    assert!(!ok, "{out}");
}
