//! Tests of the monitor's I/O loop: logging, replay, exit, and clients that leave.

use super::*;
use std::process::{Command, Stdio};

/// A temp dir with an attach socket listening in it, and a log config there.
fn setup() -> (tempfile::TempDir, std::path::PathBuf, OwnedFd, LogConfig) {
    let d = tempfile::tempdir().unwrap();
    let sock = attach::socket_path(d.path());
    let listener = attach::listen(&sock).unwrap();
    let log = LogConfig {
        path: d.path().join("container.log"),
        max_size: 0,
        max_file: 1,
    };
    (d, sock, listener, log)
}

#[test]
fn output_is_logged_replayed_to_the_first_client_and_the_exit_sent() {
    let (_d, sock, listener, log) = setup();
    let mut child = Command::new("sh")
        .args([
            "-c",
            "echo one; echo two >&2; sleep 0.5; echo three; exit 3",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let streams = Streams {
        tty: None,
        out: Some(child.stdout.take().unwrap().into()),
        err: Some(child.stderr.take().unwrap().into()),
        stdin: None,
    };
    let path = sock.clone();
    // The client comes late (after "one" and "two"): it still gets everything.
    let client = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let c = attach::connect(&path).unwrap();
        attach::send(&c, &Packet::Hello { flags: WANT_OUTPUT }).unwrap();
        let mut got = Vec::new();
        while let Ok(Some(p)) = attach::recv(&c, MsgFlags::empty()) {
            let last = matches!(p, Packet::Exit(_));
            got.push(p);
            if last {
                break;
            }
        }
        got
    });
    let mut io = Io::new(streams, Some(listener), Some(log.clone()));
    io.run(Pid::from_raw(child.id() as i32));
    let code = child.wait().unwrap().code().unwrap();
    io.finish(code);
    let got = client.join().unwrap();
    assert_eq!(
        got[0],
        Packet::Info {
            tty: false,
            stdin: false
        }
    );
    let mut out = Vec::new();
    let mut err = Vec::new();
    for p in &got[1..] {
        if let Packet::Output { stream, data } = p {
            if *stream == 1 { &mut out } else { &mut err }.extend_from_slice(data);
        }
    }
    assert_eq!(out, b"one\nthree\n");
    assert_eq!(err, b"two\n");
    assert_eq!(got.last(), Some(&Packet::Exit(3)));
    let logged: Vec<String> = super::super::logger::read_all(&log)
        .into_iter()
        .map(|e| format!("{}:{}", e.stream, e.log))
        .collect();
    assert!(logged.contains(&"stdout:three\n".to_string()), "{logged:?}");
    assert!(logged.contains(&"stderr:two\n".to_string()), "{logged:?}");
}

#[test]
fn packets_a_client_sent_before_closing_on_an_unread_answer_are_still_read() {
    let (_d, sock, listener, log) = setup();
    let mut child = Command::new("cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let streams = Streams {
        tty: None,
        out: Some(child.stdout.take().unwrap().into()),
        err: Some(child.stderr.take().unwrap().into()),
        stdin: Some(child.stdin.take().unwrap().into()),
    };
    let path = sock.clone();
    // Like skiffd's Resize: a hello, more packets once the monitor answered, then a
    // close with the answer unread (the kernel then resets the monitor's end).
    let client = std::thread::spawn(move || {
        let c = attach::connect(&path).unwrap();
        attach::send(&c, &Packet::Hello { flags: 0 }).unwrap();
        let mut pfd = [PollFd::new(c.as_fd(), PollFlags::POLLIN)];
        poll(&mut pfd, PollTimeout::from(5000u16)).unwrap();
        attach::send(&c, &Packet::Input(b"late\n".to_vec())).unwrap();
        attach::send(&c, &Packet::InputDone).unwrap();
    });
    // Without the packets, cat would never end: do not hang the test for it.
    let watchdog = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), nix::sys::signal::SIGKILL);
    });
    let mut io = Io::new(streams, Some(listener), Some(log.clone()));
    io.run(Pid::from_raw(pid));
    let code = child.wait().unwrap().code();
    io.finish(code.unwrap_or(137));
    client.join().unwrap();
    drop(watchdog);
    assert_eq!(code, Some(0), "cat never got its input and end of file");
    let logged: Vec<String> = super::super::logger::read_all(&log)
        .into_iter()
        .map(|e| format!("{}:{}", e.stream, e.log))
        .collect();
    assert_eq!(logged, vec!["stdout:late\n".to_string()]);
}
