//! End to end: terminals and attach — `run -it`, `create -t` + `start -a -i`, `exec -it`,
//! `attach` with detach keys and several clients, all driven through a real
//! pseudo-terminal held by the test.

mod common;
mod tty_support;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::{stderr, stdout, Env};
use tty_support::{same_modes, PtyChild};

/// busybox sh's prompt as root.
const PROMPT: &str = "# ";

fn running(env: &Env, name: &str, args: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name];
    a.extend_from_slice(args);
    let out = env.skiff(&a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(5, || env.inspect(name)["State"]["Status"] == "running"));
}

/// Waits until `sleep 100` runs in the container (so Ctrl-C finds it in the foreground).
fn sleeping(env: &Env, name: &str) {
    assert!(env.eventually(10, || {
        stdout(&env.skiff(&["exec", name, "ps", "-o", "args"]))
            .lines()
            .any(|l| l.trim() == "sleep 100")
    }));
}

#[test]
fn run_it_gives_a_real_terminal() {
    let env = Env::new();
    let mut t = PtyChild::spawn(
        env.skiff_cmd(&[
            "run",
            "-it",
            "--rm",
            "--name",
            "shell",
            "demo/busybox",
            "sh",
        ]),
        24,
        80,
    );
    let at = t.expect_from(0, PROMPT, 30);
    // The pty is the shell's controlling terminal, from the container's own devpts, with
    // our size set before we typed anything.
    t.send(b"tty; stty size; echo sum=$((40+2))\r");
    let at = t.expect_from(at, "/dev/pts/0", 10);
    let at = t.expect_from(at, "24 80", 10);
    let at = t.expect_from(at, "sum=42", 10);
    // Ctrl-C is a byte for the container's foreground process, not a signal for skiff.
    t.send(b"sleep 100\r");
    sleeping(&env, "shell");
    t.send(&[0x03]);
    t.send(b"echo back=$((1+1))\r");
    let at = t.expect_from(at, "back=2", 10);
    assert!(t.running(), "skiff must survive Ctrl-C");
    // The window size follows ours.
    t.resize(33, 101);
    let at = t.retry_until(at, b"stty size\r", "33 101");
    t.send(b"exit 3\r");
    let st = t.wait(20);
    assert_eq!(st.code(), Some(3), "{}", t.output());
    let _ = at;
    assert!(
        same_modes(&t.termios_before, &t.termios_now()),
        "terminal modes were not restored"
    );
    // --rm: gone.
    assert!(env.eventually(10, || !env.skiff(&["inspect", "shell"]).status.success()));
}

#[test]
fn terminal_modes_restored_when_skiff_is_killed_by_a_signal() {
    let env = Env::new();
    running(&env, "box", &["-t", "-i", "demo/busybox", "sh"]);
    let mut t = PtyChild::spawn(env.skiff_cmd(&["attach", "box"]), 24, 80);
    // The prompt comes after skiff set raw mode (it does so on the monitor's first
    // answer); the computed value cannot be the terminal's local echo.
    let at = t.expect_from(0, PROMPT, 20);
    t.send(b"echo ready=$((0+1))\r");
    t.expect_from(at, "ready=1", 20);
    let before = t.termios_before.clone();
    assert!(
        !same_modes(&before, &t.termios_now()),
        "attach sets raw mode"
    );
    let pid = nix::unistd::Pid::from_raw(t.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let st = t.wait(10);
    assert_eq!(st.code(), Some(128 + 15));
    assert!(same_modes(&before, &t.termios_now()), "modes not restored");
    // Leaving the session leaves the container running.
    assert_eq!(env.inspect("box")["State"]["Status"], "running");
}

#[test]
fn create_t_then_start_ai() {
    let env = Env::new();
    let out = env.skiff(&["create", "-t", "-i", "--name", "c1", "demo/busybox", "sh"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.inspect("c1")["Config"]["Tty"], true);
    let mut t = PtyChild::spawn(env.skiff_cmd(&["start", "-a", "-i", "c1"]), 30, 90);
    let at = t.expect_from(0, PROMPT, 30);
    t.send(b"stty size; exit 4\r");
    t.expect_from(at, "30 90", 10);
    assert_eq!(t.wait(20).code(), Some(4));
    assert!(same_modes(&t.termios_before, &t.termios_now()));
    // The tty's output went to the json-file log too.
    let logs = stdout(&env.skiff(&["logs", "c1"]));
    assert!(logs.contains("30 90"), "{logs}");
}

#[test]
fn exec_it_in_the_containers_devpts() {
    let env = Env::new();
    running(&env, "box", &["demo/busybox", "sleep", "1000"]);
    let mut t = PtyChild::spawn(
        env.skiff_cmd(&["exec", "-it", "-e", "X=1", "-w", "/tmp", "box", "sh"]),
        25,
        77,
    );
    let at = t.expect_from(0, PROMPT, 30);
    t.send(b"tty; stty size; echo x=$X; pwd\r");
    let at = t.expect_from(at, "/dev/pts/", 10);
    let at = t.expect_from(at, "25 77", 10);
    let at = t.expect_from(at, "x=1", 10);
    let at = t.expect_from(at, "/tmp", 10);
    t.send(b"sleep 100\r");
    sleeping(&env, "box");
    t.send(&[0x03]);
    t.send(b"echo alive=$((2*3))\r");
    let at = t.expect_from(at, "alive=6", 10);
    t.resize(40, 120);
    t.retry_until(at, b"stty size\r", "40 120");
    t.send(b"exit 5\r");
    assert_eq!(t.wait(20).code(), Some(5), "{}", t.output());
    assert!(same_modes(&t.termios_before, &t.termios_now()));
}

#[test]
fn exec_it_ends_when_the_main_process_exits() {
    let env = Env::new();
    running(&env, "short", &["demo/busybox", "sleep", "1000"]);
    let mut t = PtyChild::spawn(env.skiff_cmd(&["exec", "-it", "short", "sh"]), 24, 80);
    let at = t.expect_from(0, PROMPT, 30);
    t.send(b"echo inside=$((1+1))\r");
    t.expect_from(at, "inside=2", 10);
    let out = env.skiff(&["kill", "short"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The pid namespace is gone, so is the shell: exec returns, killed by SIGKILL.
    let st = t.wait(20);
    assert_eq!(st.code(), Some(137), "{}", t.output());
    assert!(same_modes(&t.termios_before, &t.termios_now()));
}

#[test]
fn attach_two_clients_detach_keys_and_resize_over_dbus() {
    let env = Env::new();
    running(&env, "box", &["-it", "demo/busybox", "sh"]);
    let mut a = PtyChild::spawn(env.skiff_cmd(&["attach", "box"]), 24, 80);
    // The first client gets the prompt written before it attached.
    a.expect_from(0, PROMPT, 20);
    let mut b = PtyChild::spawn(
        env.skiff_cmd(&["attach", "--detach-keys", "ctrl-x,y", "box"]),
        24,
        80,
    );
    // b is served (registered for output) once it went raw.
    b.wait_raw();
    let (ma, mb) = (a.mark(), b.mark());
    a.send(b"echo from-a=$((2+3))\r");
    a.expect_from(ma, "from-a=5", 10);
    b.expect_from(mb, "from-a=5", 10);
    // ctrl-p ctrl-q detaches a; the container keeps running.
    a.send(&[0x10, 0x11]);
    assert_eq!(a.wait(10).code(), Some(0));
    assert!(same_modes(&a.termios_before, &a.termios_now()));
    assert_eq!(env.inspect("box")["State"]["Status"], "running");
    // Container.Resize over D-Bus sets the pty's size.
    let id = env.inspect("box")["Id"].as_str().unwrap().to_string();
    let path = format!("/org/skiff/skiff1/container/{id}");
    let out = env.dbus_call(&path, "org.skiff.skiff1.Container.Resize", &["41", "99"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The call returns once skiffd passed the size to the monitor, which applies it
    // asynchronously: ask until the shell sees it.
    let mb = b.mark();
    b.retry_until(mb, b"stty size\r", "41 99");
    // b's own detach keys; ctrl-p alone is just a byte for it.
    b.send(&[0x18, b'y']);
    assert_eq!(b.wait(10).code(), Some(0));
    assert_eq!(env.inspect("box")["State"]["Status"], "running");
    // A third client sees the container exit and returns its code.
    let mut c = PtyChild::spawn(env.skiff_cmd(&["attach", "box"]), 24, 80);
    c.wait_raw();
    c.send(b"exit 7\r");
    assert_eq!(c.wait(20).code(), Some(7), "{}", c.output());
}

#[test]
fn attach_to_a_container_without_a_tty() {
    let env = Env::new();
    // Output fanned out from the pipes, stderr kept apart.
    running(
        &env,
        "ticker",
        &[
            "demo/busybox",
            "sh",
            "-c",
            "i=0; while true; do echo tick$i; echo err$i >&2; i=$((i+1)); sleep 0.2; done",
        ],
    );
    let mut child = env
        .skiff_cmd(&["attach", "--no-stdin", "ticker"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut err = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(line.starts_with("tick"), "{line:?}");
    line.clear();
    err.read_line(&mut line).unwrap();
    assert!(line.starts_with("err"), "{line:?}");
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(env.inspect("ticker")["State"]["Status"], "running");

    // stdin of a container created with -i: a pipe fed by attached clients; EOF closes it.
    running(&env, "cat", &["-i", "demo/busybox", "cat"]);
    let mut child = env
        .skiff_cmd(&["attach", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"ping\n").unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line, "ping\n");
    drop(stdin);
    let st = child.wait().unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(env.eventually(10, || env.inspect("cat")["State"]["Status"] == "exited"));
}

#[test]
fn output_before_attach_is_not_lost() {
    let env = Env::new();
    running(
        &env,
        "early",
        &[
            "-t",
            "demo/busybox",
            "sh",
            "-c",
            "echo early-bird; sleep 1000",
        ],
    );
    // It is in the log before anyone attached…
    assert!(env.eventually(10, || stdout(&env.skiff(&["logs", "early"]))
        .contains("early-bird")));
    // …and the first client gets it too.
    let mut t = PtyChild::spawn(env.skiff_cmd(&["attach", "--no-stdin", "early"]), 24, 80);
    t.expect_from(0, "early-bird", 10);
    t.send(&[0x10, 0x11]);
    // --no-stdin: nothing reads the keys; stop the session with a signal instead.
    let pid = nix::unistd::Pid::from_raw(t.pid());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    t.wait(10);

    // A fast command under run -t: its output arrives even if it ended first.
    let out = env
        .skiff_cmd(&["run", "-t", "--rm", "demo/busybox", "echo", "quick"])
        .output()
        .unwrap();
    assert!(stdout(&out).contains("quick"), "{}", stderr(&out));
    assert!(out.status.success(), "{:?}: {}", out.status, stderr(&out));
}

#[test]
fn bad_detach_keys_and_tty_with_fds_are_refused() {
    let env = Env::new();
    running(&env, "box", &["-t", "demo/busybox", "sleep", "1000"]);
    let out = env.skiff(&["attach", "--detach-keys", "ctrl-1", "box"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("invalid detach key"),
        "{}",
        stderr(&out)
    );
    // Bad sizes, and resizing a container without a tty, are refused.
    let id = env.inspect("box")["Id"].as_str().unwrap().to_string();
    let path = format!("/org/skiff/skiff1/container/{id}");
    let out = env.dbus_call(&path, "org.skiff.skiff1.Container.Resize", &["0", "80"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rows and cols"), "{}", stderr(&out));
    running(&env, "plain", &["demo/busybox", "sleep", "100"]);
    let id = env.inspect("plain")["Id"].as_str().unwrap().to_string();
    let path = format!("/org/skiff/skiff1/container/{id}");
    let out = env.dbus_call(&path, "org.skiff.skiff1.Container.Resize", &["24", "80"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no tty"), "{}", stderr(&out));
    let out = env.skiff(&["attach", "nosuch"]);
    assert!(!out.status.success());
}

#[test]
fn an_attached_session_does_not_need_the_daemon() {
    let mut env = Env::new();
    running(&env, "box", &["-it", "demo/busybox", "sh"]);
    let mut t = PtyChild::spawn(env.skiff_cmd(&["attach", "box"]), 24, 80);
    let at = t.expect_from(0, PROMPT, 20);
    // skiffd only handed over the connection: the session goes on without it.
    env.kill_daemon();
    t.send(b"echo still=$((6*7))\r");
    let at = t.expect_from(at, "still=42", 10);
    t.resize(50, 100);
    t.retry_until(at, b"stty size\r", "50 100");
    env.start_daemon();
    t.send(b"exit 9\r");
    assert_eq!(t.wait(20).code(), Some(9), "{}", t.output());
    assert!(env.eventually(10, || env.inspect("box")["State"]["ExitCode"] == 9));
}

#[test]
fn start_a_without_a_tty_shows_both_streams_and_returns_the_code() {
    let env = Env::new();
    let out = env.skiff(&[
        "create",
        "--name",
        "s1",
        "demo/busybox",
        "sh",
        "-c",
        "echo out-line; echo err-line >&2; exit 6",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["start", "-a", "s1"]);
    assert_eq!(out.status.code(), Some(6), "{}", stderr(&out));
    assert_eq!(stdout(&out), "out-line\n");
    assert!(stderr(&out).contains("err-line"), "{}", stderr(&out));
}

/// The client's window size is the pty's before the command starts (docker's
/// ConsoleSize): `stty size` as the very first command prints it — `run -it`.
#[test]
fn the_window_size_is_set_before_run_it_starts_the_command() {
    let env = Env::new();
    let mut t = PtyChild::spawn(
        env.skiff_cmd(&["run", "-it", "--rm", "demo/busybox", "stty", "size"]),
        31,
        97,
    );
    assert_eq!(t.wait(30).code(), Some(0), "{}", t.output());
    assert!(t.output().contains("31 97"), "run -it: {}", t.output());
}

/// The same for `create -t` + `start -a` (the terminal of the start counts).
#[test]
fn the_window_size_is_set_before_start_a_starts_the_command() {
    let env = Env::new();
    let out = env.skiff(&[
        "create",
        "-t",
        "--name",
        "sized",
        "demo/busybox",
        "stty",
        "size",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut t = PtyChild::spawn(env.skiff_cmd(&["start", "-a", "sized"]), 29, 83);
    assert_eq!(t.wait(30).code(), Some(0), "{}", t.output());
    assert!(t.output().contains("29 83"), "start -a: {}", t.output());
}

/// The same for `exec -it`.
#[test]
fn the_window_size_is_set_before_exec_it_starts_the_command() {
    let env = Env::new();
    running(&env, "box", &["demo/busybox", "sleep", "1000"]);
    let mut t = PtyChild::spawn(
        env.skiff_cmd(&["exec", "-it", "box", "stty", "size"]),
        27,
        71,
    );
    assert_eq!(t.wait(30).code(), Some(0), "{}", t.output());
    assert!(t.output().contains("27 71"), "exec -it: {}", t.output());
}

/// The race behind a flaky `start -a`: the command has written its output and ended
/// before the first client attaches. The monitor keeps both for that client, and the
/// session returns only once skiffd has recorded the exit (as docker's `start -a` does).
#[test]
fn output_and_exit_before_the_first_attach_reach_the_client() {
    let env = Env::new();
    let out = env.skiff(&[
        "create",
        "-t",
        "--name",
        "early",
        "demo/busybox",
        "sh",
        "-c",
        "echo done-early; exit 3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let path = stdout(&env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.GetContainer",
        &["early"],
    ))
    .split('\'')
    .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
    .expect("container path")
    .to_string();
    // Started as `start -a` starts it (flag 4 = ATTACH), but nobody attaches yet.
    let started = env.dbus_call(&path, "org.skiff.skiff1.Container.Start", &["{}", "4"]);
    assert!(started.status.success(), "{}", stderr(&started));
    let pid = env.inspect("early")["State"]["Pid"].as_u64().unwrap();
    // The command has ended and its output is in the log…
    assert!(
        env.eventually(10, || !std::path::Path::new(&format!("/proc/{pid}"))
            .exists())
    );
    assert!(env.eventually(10, || stdout(&env.skiff(&["logs", "early"]))
        .contains("done-early")));
    // …and the monitor still waits for its first client.
    assert_eq!(env.inspect("early")["State"]["Status"], "running");
    let mut t = PtyChild::spawn(env.skiff_cmd(&["attach", "--no-stdin", "early"]), 24, 80);
    assert_eq!(t.wait(30).code(), Some(3), "{}", t.output());
    assert!(t.output().contains("done-early"), "attach: {}", t.output());
    let state = env.inspect("early");
    assert_eq!(state["State"]["Status"], "exited", "{state}");
    assert_eq!(state["State"]["ExitCode"], 3, "{state}");
}
