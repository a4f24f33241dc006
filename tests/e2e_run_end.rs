//! End to end: a foreground `skiff run` always learns that its container ended, and
//! SIGTERM always ends it (issue 12, item 9).

mod common;

use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{stderr, stdout, Env};

/// Waits for `child` up to `secs`; kills it and returns None when it does not end.
fn wait_bounded(child: &mut Child, secs: u64) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if let Ok(Some(s)) = child.try_wait() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

/// Whether `pid` catches `signo` (its handler is installed).
fn catches(pid: u32, signo: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|m| m & (1 << (signo - 1)) != 0)
}

#[test]
fn parallel_foreground_runs_all_end_with_their_output() {
    let env = Env::new();
    for batch in 0..5 {
        let mut kids: Vec<(usize, Child)> = (0..20)
            .map(|i| {
                let n = batch * 20 + i;
                let child = env
                    .skiff_cmd(&[
                        "run",
                        "--rm",
                        "demo/busybox",
                        "sh",
                        "-c",
                        &format!("echo ok{n}"),
                    ])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap();
                (n, child)
            })
            .collect();
        for (n, child) in kids.iter_mut() {
            let status = wait_bounded(child, 180);
            let mut out = String::new();
            if let Some(mut o) = child.stdout.take() {
                let _ = std::io::Read::read_to_string(&mut o, &mut out);
            }
            assert!(status.is_some(), "run {n} never exited (output {out:?})");
            assert!(status.unwrap().success(), "run {n}: {status:?} {out:?}");
            assert_eq!(out.trim(), format!("ok{n}"));
        }
    }
    assert!(stdout(&env.skiff(&["ps", "-a", "-q"])).trim().is_empty());
}

/// Other containers' events arriving while `run` waits for its RunContainer reply must
/// not hold that reply back (zbus stops reading a connection whose subscription is full).
#[test]
fn a_flood_of_other_events_does_not_hang_run() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "noisy",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let stop = Arc::new(AtomicBool::new(false));
    let address = env.address.clone();
    let flooding = stop.clone();
    let flood = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await
                .unwrap();
            let mgr = skiff::dbus::proxy::ManagerProxy::new(&conn).await.unwrap();
            let path = mgr.get_container("noisy").await.unwrap();
            let c = skiff::dbus::proxy::ContainerProxy::builder(&conn)
                .path(path)
                .build()
                .await
                .unwrap();
            let mut sent = 0u64;
            while !flooding.load(Ordering::Relaxed) {
                // SIGWINCH: ignored by sleep; every Kill is a `kill` event.
                c.kill("main", libc::SIGWINCH).await.unwrap();
                sent += 1;
            }
            sent
        })
    });
    for i in 0..5 {
        let mut child = env
            .skiff_cmd(&["run", "--rm", "demo/busybox", "echo", &format!("hi{i}")])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let status = wait_bounded(&mut child, 120);
        assert!(status.is_some(), "run {i} hung while other events flowed");
        assert!(status.unwrap().success());
    }
    stop.store(true, Ordering::Relaxed);
    let sent = flood.join().unwrap();
    assert!(sent > 64, "the flood sent only {sent} events");
    assert!(env.skiff(&["rm", "-f", "noisy"]).status.success());
}

/// A CLI that waits for skiffd (here: for the RunContainer reply of a stopped skiffd)
/// still ends on SIGTERM.
#[test]
fn sigterm_ends_a_waiting_run() {
    let env = Env::new();
    let daemon = env.daemon_pid() as i32;
    // SAFETY: kill(2) on the daemon this test started.
    unsafe { libc::kill(daemon, libc::SIGSTOP) };
    let mut child = env
        .skiff_cmd(&["run", "--rm", "demo/busybox", "sleep", "1000"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // Readiness: the CLI forwards signals once its handler is in place, right before the
    // call that cannot be answered.
    let pid = child.id();
    let ready = env.eventually(30, || catches(pid, libc::SIGTERM));
    if ready {
        // SAFETY: kill(2) on our child.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    let status = wait_bounded(&mut child, 30);
    // SAFETY: as above.
    unsafe { libc::kill(daemon, libc::SIGCONT) };
    assert!(ready, "the CLI never installed its SIGTERM handler");
    let status = status.expect("the CLI ignored SIGTERM while waiting");
    assert_eq!(status.code(), Some(143), "{status:?}");
    // The call it left is answered once skiffd runs again: the client is gone, so its
    // container is killed (and, with --rm, removed).
    assert!(
        env.eventually(60, || stdout(&env.skiff(&["ps", "-a", "-q"]))
            .trim()
            .is_empty()),
        "the container of the departed client runs on: {}",
        stdout(&env.skiff(&["ps", "-a"]))
    );
}
