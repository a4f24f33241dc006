//! End to end: init reads the command's program ahead of its exec (src/runtime/readahead.rs)
//! once the root is in place, and a dynamic program's loader and libraries before it
//! drops privileges; those hints never change what the start does: a command that is
//! not a program (a FIFO: opening one for reading would wait for a writer) still fails
//! at once with docker's code, and a program runs as before.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{stderr, stdout, write_busybox_tar, Env};

/// The position of init's phase `mark` in skiffd's log (the tests' skiffd logs at debug).
fn at(log: &str, mark: &str) -> Option<usize> {
    log.find(&format!("phase=\"{mark}\""))
}

#[test]
fn the_program_is_read_ahead_after_the_pivot_and_before_the_exec() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo/busybox",
        "echo",
        "ran",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out).trim(), "ran");
    // The phase marks of init, in order; busybox is static: no loader, no libraries.
    let log = env.daemon_log();
    let at = |mark: &str| at(&log, mark).unwrap_or_else(|| panic!("no {mark} mark: {log}"));
    assert!(at("pivoted") < at("program-read-ahead"), "{log}");
    assert!(at("program-read-ahead") < at("exec"), "{log}");
    assert!(!log.contains("phase=\"libraries-read-ahead\""), "{log}");
}

#[test]
fn a_dynamic_programs_loader_and_libraries_are_read_ahead_before_the_exec() {
    // An image with this machine's coreutils `true` (linked with glibc), its loader and
    // its C library, where the loader looks for them.
    let host = |p: &str| std::fs::read(std::fs::canonicalize(p).unwrap()).unwrap();
    let (prog, ld, libc) = (
        host("/bin/true"),
        host("/lib64/ld-linux-x86-64.so.2"),
        host("/lib/x86_64-linux-gnu/libc.so.6"),
    );
    let env = Env::new();
    let tar = env.dir.path().join("dyn.tar");
    write_busybox_tar(
        &tar,
        &[
            ("usr/bin/dyntrue", 0, 0, 0o755, &prog),
            ("lib64/ld-linux-x86-64.so.2", 0, 0, 0o755, &ld),
            ("lib/x86_64-linux-gnu/libc.so.6", 0, 0, 0o755, &libc),
        ],
    );
    let out = env.skiff(&["import", tar.to_str().unwrap(), "demo/dyn"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/dyn", "dyntrue"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let log = env.daemon_log();
    let at = |mark: &str| at(&log, mark).unwrap_or_else(|| panic!("no {mark} mark: {log}"));
    assert!(at("user-resolved") < at("libraries-read-ahead"), "{log}");
    assert!(at("libraries-read-ahead") < at("exec"), "{log}");
}

#[test]
fn a_fifo_as_the_command_fails_at_once_and_is_never_waited_for() {
    let env = Env::new();
    let dir = env.dir.path().join("vol");
    std::fs::create_dir(&dir).unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o755),
    )
    .unwrap();
    let vol = format!("{}:/x", dir.display());
    let mut child = env
        .skiff_cmd(&[
            "run",
            "--rm",
            "--network",
            "none",
            "-v",
            &vol,
            "demo/busybox",
            "/x/fifo",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Readiness is the CLI's exit; a start that waits on the FIFO never exits.
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the start waited on the FIFO: {}", env.daemon_log());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(126), "{}", stderr(&out));
    assert!(!env.daemon_log().contains("phase=\"program-read-ahead\""));
}
