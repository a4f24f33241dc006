//! End to end: the races between the shared slirp4netns's restart and the monitors'
//! forwards (`network/forwards/ADDR.json`), each held at its critical point by skiffd's
//! test hold points (`SKIFF_TEST_FORWARDS_HOLD`, debug builds): a forward added just
//! before slirp4netns dies, before its monitor records it, is in the new one too; a
//! container stopped while the holder re-adds its forwards leaves its host port free.
//! Real slirp4netns, real UDP traffic to an address of this machine.

mod common;
#[path = "net_helpers/mod.rs"]
mod net_helpers;

use std::net::{TcpListener, UdpSocket};
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use common::{stderr, stdout, Env};
use net_helpers::*;

/// The directory of the hold points skiffd's processes see (`SKIFF_TEST_FORWARDS_HOLD`).
struct Holds {
    dir: PathBuf,
}

impl Holds {
    fn new(env: &Env) -> Holds {
        let dir = env.dir.path().join("holds");
        std::fs::create_dir(&dir).unwrap();
        Holds { dir }
    }

    /// The next process that reaches `point` stops there (until [`Holds::release`]).
    fn arm(&self, point: &str) {
        let go = self.dir.join(format!("{point}.go"));
        let c = std::ffi::CString::new(go.to_str().unwrap()).unwrap();
        // SAFETY: mkfifo with a NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
        std::fs::write(self.dir.join(point), b"").unwrap();
    }

    /// Whether a process is held at `point`.
    fn held(&self, point: &str) -> bool {
        self.dir.join(format!("{point}.held")).exists()
    }

    /// Lets the process held at `point` go on.
    fn release(&self, point: &str) {
        let go = self.dir.join(format!("{point}.go"));
        drop(std::fs::OpenOptions::new().write(true).open(go).unwrap());
    }

    /// Lets every held process go (a failed test's: a FIFO with a reader opens at once).
    fn release_all(&self) {
        for name in common::entries(&self.dir) {
            if name.ends_with(".go") {
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_NONBLOCK)
                    .open(self.dir.join(name));
            }
        }
    }
}

/// skiffd started with the hold points (its log where [`Env::daemon_log`] reads it);
/// removes the test's containers and stops skiffd when dropped.
struct Daemon {
    child: Child,
    envs: Vec<(String, String)>,
    holds: Holds,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.holds.release_all();
        let skiff = |args: &[&str]| {
            Command::new(common::bin("skiff"))
                .envs(self.envs.clone())
                .args(args)
                .stdin(Stdio::null())
                .output()
        };
        if let Ok(out) = skiff(&["ps", "-a", "-q"]) {
            let ids = stdout(&out);
            let mut args = vec!["rm", "-f"];
            args.extend(ids.split_whitespace());
            if args.len() > 2 {
                let _ = skiff(&args);
            }
        }
        // SAFETY: kill(2) of our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// skiffd with hold points, and the busybox and UDP echo images.
fn start(env: &Env) -> Daemon {
    start_with(env, &[])
}

/// [`start`], with `extra` in skiffd's environment (its monitors inherit it).
fn start_with(env: &Env, extra: &[(&str, &str)]) -> Daemon {
    let holds = Holds::new(env);
    let log = std::fs::File::create(env.dir.path().join("skiffd.log")).unwrap();
    let child = Command::new(common::bin("skiffd"))
        .envs(env.envs())
        .env("SKIFF_TEST_FORWARDS_HOLD", &holds.dir)
        .env("RUST_LOG", "debug")
        .envs(extra.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let daemon = Daemon {
        child,
        envs: env.envs(),
        holds,
    };
    let owned = env.eventually(20, || env.skiffd_has_its_name());
    assert!(owned, "skiffd did not take its name: {}", env.daemon_log());
    let tar = env.busybox_tar();
    run_ok(
        env,
        &["image", "import", tar.to_str().unwrap(), "demo/busybox"],
    );
    import_udp_image(env);
    daemon
}

/// The pid of the one slirp4netns of the shared network, after checking it is the one.
fn the_slirp(env: &Env) -> (i32, Vec<String>) {
    let now = slirps(env);
    assert_eq!(now.len(), 1, "{now:?}");
    (now[0].split(':').next().unwrap().parse().unwrap(), now)
}

/// Kills the shared slirp4netns and waits until its holder started another.
fn kill_slirp_and_wait_for_another(env: &Env) {
    let (pid, first) = the_slirp(env);
    // SAFETY: kill(2) of a slirp4netns of this test's holder.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    assert!(
        env.eventually(20, || {
            let now = slirps(env);
            now.len() == 1 && now != first
        }),
        "no new slirp4netns: {:?}",
        slirps(env)
    );
}

/// Whether process `pid` waits for a flock (`/proc/locks`' blocked requests).
fn waits_for_a_flock(pid: i32) -> bool {
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.get(1) == Some(&"->")
            && f.get(2) == Some(&"FLOCK")
            && f.get(5) == Some(&&*pid.to_string())
    })
}

/// `-p` for UDP port `port` on every host address (a loopback client gets no answer
/// from the shared slirp4netns: libslirp drops answers to 10.0.2.2 without host
/// loopback).
fn udp_publish(port: u16) -> String {
    format!("{port}:5353/udp")
}

/// Whether host port `port` is free for UDP (no slirp4netns forwards it).
fn udp_port_free(port: u16) -> bool {
    UdpSocket::bind(("0.0.0.0", port)).is_ok()
}

/// A monitor adds its UDP forward to the shared slirp4netns and is held before it
/// records it; slirp4netns dies then and its holder starts another. Once the monitor
/// goes on, the forward is in the new slirp4netns: the holder's re-add waited for the
/// record.
#[test]
fn a_forward_added_just_before_slirp4netns_dies_is_in_the_new_one() {
    let Some(host) = host_address(false) else {
        eprintln!("no non-loopback address: skipped");
        return;
    };
    let env = Env::bus_only();
    let daemon = start(&env);
    let holds = &daemon.holds;
    // The shared network up, with a container without ports.
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "idle",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    the_slirp(&env);
    let udp = free_udp_port();
    holds.arm("forwards-added");
    let publish = udp_publish(udp);
    let run = env
        .skiff_cmd(&[
            "run", "-d", "--name", "echo", "-p", &publish, "demo/udp", "udpecho", "5353",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        env.eventually(60, || holds.held("forwards-added")),
        "the monitor never reached its hold point: {}",
        env.daemon_log()
    );
    // Its forward is in this slirp4netns: the port is taken.
    assert!(!udp_port_free(udp), "UDP port {udp} is not forwarded yet");
    kill_slirp_and_wait_for_another(&env);
    assert!(
        env.eventually(20, || env.daemon_log().contains("slirp4netns restarted")),
        "the holder did not get as far as re-adding: {}",
        env.daemon_log()
    );
    holds.release("forwards-added");
    let out = run.wait_with_output().unwrap();
    assert!(out.status.success(), "run: {}", stderr(&out));
    let sock = UdpSocket::bind((host, 0)).unwrap();
    let answer = udp_answer(&sock, host, udp);
    assert!(
        answer.starts_with(&format!("from={host} ")),
        "UDP port {udp} after the restart: {answer:?}: {}",
        env.daemon_log()
    );
    run_ok(&env, &["rm", "-f", "echo", "idle"]);
    assert!(
        udp_port_free(udp),
        "UDP port {udp} still taken after its container went"
    );
}

/// The holder re-adds a container's UDP forward to a new slirp4netns and is held
/// before it does; the container stops meanwhile. Once the holder goes on, the host
/// port is free: the monitor's removal waited for the re-add.
#[test]
fn a_container_stopped_during_the_re_add_leaves_its_port_free() {
    let env = Env::bus_only();
    let daemon = start(&env);
    let holds = &daemon.holds;
    let udp = free_udp_port();
    let publish = udp_publish(udp);
    run_ok(
        &env,
        &[
            "run", "-d", "--name", "echo", "-p", &publish, "demo/udp", "udpecho", "5353",
        ],
    );
    assert!(
        !udp_port_free(udp),
        "the shared slirp4netns does not hold UDP port {udp}"
    );
    let monitor = env.inspect("echo")["State"]["MonitorPid"].as_i64().unwrap() as i32;
    holds.arm("re-add");
    kill_slirp_and_wait_for_another(&env);
    assert!(
        env.eventually(30, || holds.held("re-add")),
        "the holder never reached its hold point: {}",
        env.daemon_log()
    );
    let mut stop = env
        .skiff_cmd(&["stop", "-t", "1", "echo"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The stop ends, or its monitor waits for the re-add to be over.
    assert!(
        env.eventually(60, || matches!(stop.try_wait(), Ok(Some(_)))
            || waits_for_a_flock(monitor)),
        "the stop neither ended nor waited: {}",
        env.daemon_log()
    );
    holds.release("re-add");
    let out = stop.wait_with_output().unwrap();
    assert!(out.status.success(), "stop: {}", stderr(&out));
    assert!(
        env.eventually(20, || env.daemon_log().contains("forward(s) re-added")),
        "the re-add did not end: {}",
        env.daemon_log()
    );
    assert!(
        udp_port_free(udp),
        "UDP port {udp} still taken after its container stopped during the re-add: {}",
        env.daemon_log()
    );
}

/// A TCP port that the shared slirp4netns forwards itself (the monitor's relay could not
/// keep client addresses: forced here by the test variable) is dropped by skiffd when
/// the container's monitor dies without removing it, as a UDP port is. (Before, skiffd
/// cleaned up only after containers with UDP ports, and the port stayed bound.)
#[test]
fn a_dead_monitors_tcp_forward_through_slirp4netns_is_dropped_by_skiffd() {
    let env = Env::bus_only();
    let _daemon = start_with(&env, &[(skiff::netns::connector::NO_TRANSPARENT_ENV, "1")]);
    let port = free_port();
    let publish = format!("{port}:80");
    run_ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "-p",
            &publish,
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let taken = || TcpListener::bind(("0.0.0.0", port)).is_err();
    assert!(
        taken(),
        "the shared slirp4netns does not hold TCP port {port}: {}",
        env.daemon_log()
    );
    assert!(
        env.daemon_log().contains("slirp4netns forwards them"),
        "the port did not go through slirp4netns: {}",
        env.daemon_log()
    );
    // The monitor dies without removing its forward from the shared slirp4netns.
    kill_monitor_of(&env, "web");
    assert!(
        env.eventually(20, || env.inspect("web")["State"]["Running"] == false),
        "the container still runs after its monitor died"
    );
    assert!(
        env.eventually(10, || !taken()),
        "TCP port {port} is still forwarded after the container's end: {}",
        env.daemon_log()
    );
    run_ok(&env, &["rm", "-f", "web"]);
}
