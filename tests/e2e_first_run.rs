//! A first run without a session bus (over ssh or su): skiffd and skiff say so once,
//! with the fix, and the fix they give works; as the unprivileged user.

mod common;

use std::process::{Command, Stdio};

use common::{bin, require, stderr, stdout};

/// A clean environment like a `su USER` shell's: no session bus address, a runtime
/// directory with no bus in it.
fn no_bus(cmd: &mut Command, dir: &std::path::Path) {
    cmd.env_clear()
        .env("HOME", dir)
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("XDG_RUNTIME_DIR", dir.join("runtime"))
        .env("XDG_DATA_HOME", dir.join("data"))
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .stdin(Stdio::null());
}

fn tempdir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    for sub in ["runtime", "data", "config"] {
        std::fs::create_dir(dir.path().join(sub)).unwrap();
    }
    dir
}

#[test]
fn without_a_session_bus_one_clear_error_with_the_fix() {
    let dir = tempdir();
    // skiffd would serve on forever if it found a bus: `timeout` ends it (and the test fails).
    let mut cmd = Command::new(require("timeout"));
    cmd.arg("20").arg(bin("skiffd"));
    no_bus(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
    let bus = dir.path().join("runtime/bus");
    assert!(
        err.starts_with("skiffd: no D-Bus session bus")
            && err.contains(&format!("{} does not exist", bus.display()))
            && err.contains("dbus-run-session")
            && err.contains("systemctl --user start skiffd"),
        "{err}"
    );
    // Nothing made in the data directory for a daemon that cannot serve.
    assert!(!dir.path().join("data/skiff").exists(), "{err}");

    let mut cmd = Command::new(bin("skiff"));
    cmd.arg("ps");
    no_bus(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("no D-Bus session bus") && err.contains("dbus-run-session"),
        "{err}"
    );

    // A bus that is named but not there: the cause once, not three times.
    let mut cmd = Command::new(require("timeout"));
    cmd.arg("20")
        .arg(bin("skiffd"))
        .arg("--bus-address")
        .arg(format!("unix:path={}", dir.path().join("nobus").display()));
    no_bus(&mut cmd, dir.path());
    let out = cmd.output().unwrap();
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.matches("No such file or directory").count(), 1, "{err}");
}

#[test]
fn the_fix_it_gives_works_dbus_run_session() {
    let dir = tempdir();
    // What the message says: skiffd and skiff inside one `dbus-run-session`.
    let script = r#"
        "$SKIFFD" 2>"$HOME/skiffd.log" &
        d=$!
        ok=1
        for _ in $(seq 200); do
            if "$SKIFF" ps >"$HOME/ps.out" 2>&1; then ok=0; break; fi
            kill -0 "$d" 2>/dev/null || break
            sleep 0.05
        done
        kill "$d"; wait "$d"
        cat "$HOME/ps.out"
        exit $ok
    "#;
    let mut cmd = Command::new(require("timeout"));
    cmd.arg("60")
        .arg(require("dbus-run-session"))
        .args(["--", "sh", "-c", script]);
    no_bus(&mut cmd, dir.path());
    cmd.env("SKIFFD", bin("skiffd")).env("SKIFF", bin("skiff"));
    let out = cmd.output().unwrap();
    let log = std::fs::read_to_string(dir.path().join("skiffd.log")).unwrap_or_default();
    assert!(
        out.status.success(),
        "skiff ps in dbus-run-session: {}{}\n{log}",
        stdout(&out),
        stderr(&out)
    );
    assert!(stdout(&out).contains("CONTAINER ID"), "{}", stdout(&out));
}

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/demo.sh");

/// scripts/demo.sh as a normal user (no session bus, as over su): `skiff doctor` first,
/// then the demo runs to its end.
#[test]
fn demo_as_a_user_checks_the_host_then_runs() {
    let dir = tempdir();
    let mut cmd = Command::new(require("timeout"));
    cmd.arg("300")
        .arg(require("bash"))
        .arg(DEMO)
        .arg("--private");
    no_bus(&mut cmd, dir.path());
    cmd.env("SKIFF_BIN_DIR", bin("skiffd").parent().unwrap());
    let out = cmd.output().unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert!(out.status.success(), "demo.sh: {o}\n{e}");
    assert!(
        o.contains("### skiff doctor") && o.contains("ok   subuid"),
        "{o}"
    );
    assert!(
        o.contains("exit code: 3") && o.ends_with("demo: ok\n"),
        "{o}"
    );
}

/// When `skiff doctor` finds something that blocks containers (here: no subuid range,
/// an /etc/subuid without us bind-mounted in a user + mount namespace of our own),
/// demo.sh stops and prints the one command to run as root.
#[test]
fn demo_as_a_user_with_a_blocked_host_says_the_one_root_command() {
    let dir = tempdir();
    let empty = dir.path().join("subuid");
    std::fs::write(&empty, "someone-else:100000:65536\n").unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let script = format!(
        "set -e; mount --bind {} /etc/subuid; exec unshare --map-user={uid} --map-group={gid} -U bash {DEMO} --private",
        empty.display()
    );
    let mut cmd = Command::new(require("timeout"));
    cmd.arg("120")
        .arg(require("unshare"))
        .args(["-rm", "sh", "-c", &script]);
    no_bus(&mut cmd, dir.path());
    cmd.env("SKIFF_BIN_DIR", bin("skiffd").parent().unwrap());
    let out = cmd.output().unwrap();
    let (o, e) = (stdout(&out), stderr(&out));
    assert_eq!(out.status.code(), Some(1), "{o}\n{e}");
    assert!(o.contains("FAIL subuid"), "{o}");
    assert!(
        e.contains(&format!("sudo {DEMO} --user {me}")),
        "the one command as root: {e}"
    );
    assert!(
        !o.contains("### import and run"),
        "stopped before the demo: {o}"
    );
}
