//! End to end: containers' output in their logs — detached and foreground, stdout and
//! stderr apart, `logs -f` until the container stops, and rotation by `max-file`.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{stderr, stdout, Env};

#[test]
fn detached_output_goes_to_logs_with_streams_apart() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "talker",
        "demo/busybox",
        "sh",
        "-c",
        "echo one; echo two >&2; sleep 0.2; echo three",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim().len(), 64);
    assert_eq!(stdout(&env.skiff(&["wait", "talker"])).trim(), "0");
    let logs = env.skiff(&["logs", "talker"]);
    assert_eq!(stdout(&logs), "one\nthree\n");
    assert_eq!(stderr(&logs), "two\n");
    let tail = env.skiff(&["logs", "--tail", "1", "talker"]);
    assert_eq!(stdout(&tail), "three\n");
    let ts = env.skiff(&["logs", "-t", "talker"]);
    let first = stdout(&ts).lines().next().unwrap_or_default().to_string();
    assert!(
        first.ends_with(" one") && first.starts_with("20") && first.contains('T'),
        "{first}"
    );
    let future = env.skiff(&["logs", "--since", "2999-01-01T00:00:00Z", "talker"]);
    assert_eq!(stdout(&future), "");
}

#[test]
fn foreground_output_reaches_the_client_and_the_log() {
    let env = Env::new();
    // Output bigger than a pipe's buffer, on both streams, with stdin from the client.
    let script = "cat; i=0; while [ $i -lt 3000 ]; do echo line$i; i=$((i+1)); done; \
                  echo err >&2; exit 3";
    let mut child = env
        .skiff_cmd(&[
            "run",
            "-i",
            "--name",
            "fg",
            "demo/busybox",
            "sh",
            "-c",
            script,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"from the client\n").unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.starts_with("from the client\nline0\n"),
        "{}",
        &text[..80.min(text.len())]
    );
    assert!(text.ends_with("line2999\n"), "output cut short");
    assert_eq!(text.lines().count(), 3001);
    assert_eq!(stderr(&out), "err\n");
    // docker keeps a foreground run's output too.
    let logs = env.skiff(&["logs", "fg"]);
    assert_eq!(stdout(&logs), text);
    assert_eq!(stderr(&logs), "err\n");
}

#[test]
fn logs_follow_streams_until_the_container_stops() {
    let env = Env::new();
    assert!(env
        .skiff(&[
            "run",
            "-d",
            "--name",
            "ticker",
            "demo/busybox",
            "sh",
            "-c",
            "for i in 1 2 3; do echo tick $i; sleep 0.3; done"
        ])
        .status
        .success());
    let mut child = env
        .skiff_cmd(&["logs", "-f", "ticker"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let lines: Vec<String> = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map_while(Result::ok)
        .collect();
    assert!(child.wait().unwrap().success());
    assert_eq!(lines, vec!["tick 1", "tick 2", "tick 3"]);
}

#[test]
fn log_rotation_keeps_max_file_files() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "chatty",
        "--log-opt",
        "max-size=2k",
        "--log-opt",
        "max-file=2",
        "demo/busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 300 ]; do echo line $i; i=$((i+1)); done",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.skiff(&["wait", "chatty"]);
    let v = env.inspect("chatty");
    let log = std::path::PathBuf::from(v["LogPath"].as_str().unwrap());
    assert!(log.exists());
    assert!(std::path::PathBuf::from(format!("{}.1", log.display())).exists());
    assert!(!std::path::PathBuf::from(format!("{}.2", log.display())).exists());
    assert!(std::fs::metadata(&log).unwrap().len() <= 2048);
    let logs = stdout(&env.skiff(&["logs", "chatty"]));
    assert!(logs.ends_with("line 299\n"), "{logs}");
}
