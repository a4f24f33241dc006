//! End to end: `skiff run` through skiffd over a real (private) D-Bus, in real user
//! namespaces mapped with newuidmap/newgidmap, on a busybox image built by the test.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{entries, first_subuid_range, stderr, stdout, Env};

#[test]
fn run_shows_root_maps_hostname_stderr_and_exit_code() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--name",
        "spine",
        "demo/busybox",
        "sh",
        "-c",
        "id; cat /proc/self/uid_map; hostname; echo oops >&2; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "stderr: {}", stderr(&out));
    let so = stdout(&out);
    assert!(so.contains("uid=0(root)"), "stdout: {so}");
    assert!(!so.contains("oops"), "stderr leaked into stdout: {so}");
    assert!(stderr(&out).contains("oops"), "stderr: {}", stderr(&out));
    // uid_map: 0 -> our uid (1), 1 -> the first subordinate uid (the range's length).
    let map: Vec<Vec<u64>> = so
        .lines()
        .filter(|l| {
            l.split_whitespace().count() == 3
                && l.split_whitespace().all(|w| w.parse::<u64>().is_ok())
        })
        .map(|l| l.split_whitespace().map(|w| w.parse().unwrap()).collect())
        .collect();
    let uid = unsafe { libc::getuid() } as u64;
    assert_eq!(map[0], vec![0, uid, 1], "uid_map: {so}");
    match first_subuid_range() {
        Some((start, count)) => {
            assert_eq!(map.len(), 2, "uid_map: {so}");
            assert_eq!(map[1], vec![1, start as u64, count as u64], "uid_map: {so}");
        }
        None => assert_eq!(map.len(), 1, "uid_map: {so}"),
    }
    // The hostname is the first 12 hex digits of the id.
    let inspect = env.skiff(&["inspect", "spine"]);
    let v: serde_json::Value = serde_json::from_slice(&inspect.stdout).unwrap();
    let id = v[0]["Id"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 64);
    assert!(
        so.lines().any(|l| l == &id[..12]),
        "hostname not {}: {so}",
        &id[..12]
    );
    assert_eq!(v[0]["State"]["ExitCode"], 3);
    assert_eq!(v[0]["State"]["Status"], "exited");
    assert!(env.skiff(&["rm", "spine"]).status.success());
    assert!(entries(&env.data().join("containers")).is_empty());
}

/// `skiff events` for `destroy` events, known to be live: a probe container's destroy
/// came through it (skiffd sends `destroy` once a container's files are gone).
struct Destroys {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Destroys {
    fn watch(env: &Env) -> Destroys {
        let mut child = env
            .skiff_cmd(&["events", "--filter", "event=destroy", "--format", "json"])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut d = Destroys { child, lines };
        // Until a probe's destroy arrives, the subscription may not be in place yet.
        for i in 0.. {
            let name = format!("probe{i}");
            assert!(env
                .skiff(&["create", "--name", &name, "demo/busybox", "true"])
                .status
                .success());
            assert!(env.skiff(&["rm", &name]).status.success());
            if d.until(&name, std::time::Duration::from_millis(500)) {
                break;
            }
            assert!(i < 40, "no destroy event came through `skiff events`");
        }
        d
    }

    /// Waits (at most `limit`) for the destroy event of container `name`.
    fn until(&mut self, name: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        let quoted = format!("\"{name}\"");
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(&quoted) => return true,
                Ok(_) => continue,
                Err(_) => return false,
            }
        }
    }
}

impl Drop for Destroys {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_rm_leaves_nothing_behind() {
    let env = Env::new();
    let mut destroys = Destroys::watch(&env);
    let out = env.skiff(&["run", "--rm", "--name", "gone", "demo/busybox", "sh", "-c", "echo hi > /root/f; mkdir -p /home/user/d; touch /home/user/d/x; chown -R 1000:1000 /home/user/d; exit 0"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    // When the CLI returns the container is gone for every command: not listed, its
    // name free, and its directory out of the store (at most in the trash, `.rm-ID`,
    // which skiffd empties in the background and sweeps at start-up).
    let ps = env.skiff(&["ps", "-a", "-q"]);
    assert!(stdout(&ps).trim().is_empty(), "ps -a: {}", stdout(&ps));
    assert!(
        entries(&env.data().join("containers"))
            .iter()
            .all(|e| e.starts_with(".rm-")),
        "{:?}",
        entries(&env.data().join("containers"))
    );
    let again = env.skiff(&["create", "--name", "gone", "demo/busybox", "true"]);
    assert!(
        again.status.success(),
        "the name is not free: {}",
        stderr(&again)
    );
    assert!(env.skiff(&["rm", "gone"]).status.success());
    // Then `destroy` says the files are gone: no record, directory, bundle, process or
    // mount of the container remains. Two containers were named `gone` (the `--rm` one,
    // removed in the background, and the created one): both destroys, in either order.
    for _ in 0..2 {
        assert!(
            destroys.until("gone", std::time::Duration::from_secs(30)),
            "no destroy event for the --rm container"
        );
    }
    assert!(
        entries(&env.data().join("containers")).is_empty(),
        "{:?}",
        entries(&env.data().join("containers"))
    );
    assert!(entries(&env.runtime().join("containers")).is_empty());
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(
        !mounts.contains(env.dir.path().to_str().unwrap()),
        "a mount is left: {mounts}"
    );
    let procs = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let tmp = env.dir.path().display().to_string();
    assert!(
        !stdout(&procs)
            .lines()
            .any(|l| l.contains("__monitor") && l.contains(&tmp)),
        "a monitor is left: {}",
        stdout(&procs)
    );
}

#[test]
fn images_lists_the_imported_image() {
    let env = Env::new();
    let out = env.skiff(&["images"]);
    assert!(out.status.success());
    let so = stdout(&out);
    assert!(so.starts_with("REPOSITORY"), "{so}");
    let line = so
        .lines()
        .find(|l| l.starts_with("docker.io/demo/busybox"))
        .expect("image listed");
    assert!(line.contains("latest"), "{line}");
}

#[test]
fn files_owned_by_other_uids_keep_their_owner_inside() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "stat",
        "-c",
        "%u:%g",
        "/home/user/owned",
        "/home/user",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().collect::<Vec<_>>(),
        vec!["1000:1000", "1000:1000"]
    );
    // On the host the same file belongs to the subordinate uid that 1000 maps to.
    if let Some((start, _)) = first_subuid_range() {
        let layers = env.data().join("storage/layers");
        let layer = entries(&layers).into_iter().next().expect("a layer");
        let md = std::fs::metadata(layers.join(layer).join("diff/home/user/owned")).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(md.uid(), start + 999);
    }
}

#[test]
fn exit_codes_follow_docker() {
    let env = Env::new();
    let nf = env.skiff(&["run", "--rm", "demo/busybox", "no-such-command"]);
    assert_eq!(nf.status.code(), Some(127));
    assert!(
        stderr(&nf).contains("executable file not found"),
        "{}",
        stderr(&nf)
    );
    let ne = env.skiff(&["run", "--rm", "demo/busybox", "/etc/not-executable"]);
    assert_eq!(ne.status.code(), Some(126));
    assert!(stderr(&ne).contains("permission denied"), "{}", stderr(&ne));
    // Killed by signal N → 128+N. (From inside, pid 1 ignores even SIGKILL, so kill it
    // from outside through the API.)
    let d = env.skiff(&[
        "run",
        "-d",
        "--name",
        "victim",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(d.status.success(), "{}", stderr(&d));
    let id = stdout(&d).trim().to_string();
    let path = format!("/org/skiff/skiff1/container/{id}");
    let k = env.dbus_call(&path, "org.skiff.skiff1.Container.Kill", &["main", "9"]);
    assert!(k.status.success(), "{}", stderr(&k));
    let w = env.skiff(&["wait", "victim"]);
    assert_eq!(stdout(&w).trim(), "137");
    let ok = env.skiff(&["run", "--rm", "demo/busybox", "true"]);
    assert_eq!(ok.status.code(), Some(0));
}

#[test]
fn namespaces_and_filesystems_are_set_up() {
    let env = Env::new();
    let script = "echo pid=$$; ip link 2>/dev/null | grep -c ': lo:' ; \
                  ls /dev/null /dev/zero /dev/urandom /dev/tty /dev/full /dev/random >/dev/null && echo devs; \
                  test -L /dev/ptmx && echo ptmx; grep -q ' /dev/pts devpts' /proc/mounts && echo pts; \
                  grep -q ' /dev/shm tmpfs' /proc/mounts && echo shm; grep -q ' /dev/mqueue mqueue' /proc/mounts && echo mqueue; \
                  touch /sys/x 2>/dev/null || echo sys-ro; echo $HOME $PATH; pwd; echo data > /dev/null && echo nullw";
    let out = env.skiff(&[
        "run",
        "--rm",
        "-w",
        "/tmp",
        "-e",
        "FOO=bar",
        "demo/busybox",
        "sh",
        "-c",
        script,
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let so = stdout(&out);
    for want in [
        "pid=1\n", "devs", "ptmx", "pts", "shm", "mqueue", "sys-ro", "HOME=", "/tmp\n", "nullw",
    ] {
        if want == "HOME=" {
            assert!(so.contains("/root /usr/local/sbin"), "env: {so}");
            continue;
        }
        assert!(so.contains(want), "missing {want:?} in: {so}");
    }
    let env_out = env.skiff(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "demo/busybox",
        "sh",
        "-c",
        "echo $FOO",
    ]);
    assert_eq!(stdout(&env_out).trim(), "bar");
}

#[test]
fn piped_stdin_reaches_the_container_with_i() {
    let env = Env::new();
    let mut child = env
        .skiff_cmd(&["run", "-i", "--rm", "demo/busybox", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(stdout(&out), "hello\n");
}

#[test]
fn vfs_driver_runs_containers_from_a_copy() {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "vfs"]);
    let tar = env.busybox_tar();
    assert!(env
        .skiff(&["import", tar.to_str().unwrap(), "demo/busybox"])
        .status
        .success());
    let mut destroys = Destroys::watch(&env);
    let out = env.skiff(&[
        "run",
        "--rm",
        "--name",
        "copied",
        "demo/busybox",
        "sh",
        "-c",
        "stat -c %u /home/user/owned; echo x > /etc/new; cat /etc/new",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}\nlog: {}",
        stderr(&out),
        env.daemon_log()
    );
    assert_eq!(stdout(&out), "1000\nx\n");
    // The copy goes with the container (in the background: `destroy` says when).
    assert!(destroys.until("copied", std::time::Duration::from_secs(30)));
    assert!(entries(&env.data().join("containers")).is_empty());
}

#[test]
fn killing_the_client_kills_its_container() {
    let env = Env::new();
    let mut child = env
        .skiff_cmd(&["run", "--name", "orphan", "demo/busybox", "sleep", "1000"])
        .spawn()
        .unwrap();
    // Wait until it runs.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while !stdout(&env.skiff(&["ps"])).contains("orphan") {
        assert!(std::time::Instant::now() < deadline, "container never ran");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    child.kill().unwrap();
    let _ = child.wait();
    // skiffd sees the client leave the bus and kills the container (KILL_ON_DISCONNECT).
    let w = env.skiff(&["wait", "orphan"]);
    assert_eq!(stdout(&w).trim(), "137", "{}", stderr(&w));
}

#[test]
fn non_root_users_can_use_the_root_filesystem() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "-u",
        "1000:1000",
        "-w",
        "/home/user",
        "demo/busybox",
        "sh",
        "-c",
        "id -u; ls / >/dev/null && echo ls-ok; cat owned; touch mine && echo write-ok",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1000\nls-ok\nmine\nwrite-ok\n");
}

#[test]
fn signals_to_skiff_run_reach_the_container() {
    let env = Env::new();
    let child = env
        .skiff_cmd(&[
            "run",
            "--name",
            "trapper",
            "demo/busybox",
            "sh",
            "-c",
            "trap 'echo got TERM; exit 5' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        env.eventually(10, || env.inspect("trapper")["State"]["Status"]
            == "running")
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert_eq!(stdout(&out), "ready\ngot TERM\n");
    // Two Ctrl-Cs to a container that ignores SIGINT: skiff leaves, the container is killed.
    let child = env
        .skiff_cmd(&["run", "--name", "deaf", "demo/busybox", "sleep", "1000"])
        .spawn()
        .unwrap();
    assert!(env.eventually(10, || env.inspect("deaf")["State"]["Status"] == "running"));
    std::thread::sleep(std::time::Duration::from_millis(300));
    for _ in 0..2 {
        unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    assert_eq!(stdout(&env.skiff(&["wait", "deaf"])).trim(), "137");
}
