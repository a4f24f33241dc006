//! The end-to-end harness: a private dbus-daemon, a skiffd with its XDG directories in a
//! temp dir, and a busybox image built from /bin/busybox (busybox-static) — real parts,
//! no mocks. Runs as whatever user runs the tests; scripts/test.sh runs it unprivileged.

#![allow(dead_code)]

mod image;
// (Not every test crate uses both.)
#[allow(unused_imports)]
pub use image::{write_busybox_tar, Extra};

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Where the skiff binaries are: `$SKIFF_BIN_DIR` (set by scripts/test.sh when the tests
/// run as another user) or cargo's build.
pub fn bin(name: &str) -> PathBuf {
    if let Some(dir) = std::env::var_os("SKIFF_BIN_DIR") {
        return PathBuf::from(dir).join(name);
    }
    match name {
        "skiff" => PathBuf::from(env!("CARGO_BIN_EXE_skiff")),
        "skiff-systemd-generator" => PathBuf::from(env!("CARGO_BIN_EXE_skiff-systemd-generator")),
        "skiff-monitor" => PathBuf::from(env!("CARGO_BIN_EXE_skiff-monitor")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_skiffd")),
    }
}

/// Fails the test with a clear message when a host tool is missing.
pub fn require(tool: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/sbin", "/sbin", "/usr/local/bin"] {
        let p = Path::new(dir).join(tool);
        if p.exists() {
            return p;
        }
    }
    panic!("{tool} is not installed: run scripts/test.sh as root once, or install it (see README)");
}

/// A private bus with a skiffd on it, and the image `demo/busybox` imported.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub address: String,
    dbus: Child,
    skiffd: Option<Child>,
    extra_args: Vec<String>,
    /// An fd skiffd inherits as fd 9 (a stray descriptor from whoever started it).
    inherit_fd9: Option<std::os::fd::OwnedFd>,
}

impl Env {
    /// Bus + daemon + image.
    pub fn new() -> Env {
        let env = Env::bus_only();
        let mut env = env;
        env.start_daemon();
        let tar = env.busybox_tar();
        let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
        assert!(out.status.success(), "import failed: {}", stderr(&out));
        env
    }

    /// Just the bus (no daemon): for "daemon not running" and for tests that prepare the
    /// state before the daemon starts.
    pub fn bus_only() -> Env {
        let dir = Env::temp_dir();
        let sock = dir.path().join("bus");
        let mut cmd = Command::new(require("dbus-daemon"));
        cmd.args(["--session", "--nofork", "--print-address=1", "--nopidfile"])
            .arg(format!("--address=unix:path={}", sock.display()));
        Env::with_bus(dir, cmd)
    }

    /// Bus + daemon + image, on a bus that admits every user, as a misconfigured shared bus
    /// would: for the caller check. The bus is at an abstract address (another uid cannot
    /// reach into the test's 0700 dir). A client of another uid is a process in a user
    /// namespace mapped to a subordinate uid (see [`Env::as_other_uid`]); the dbus-daemon
    /// refuses a uid it cannot look up in /etc/passwd, so it runs in a user namespace of its
    /// own where our uid is itself and our first subordinate uid is uid 1 (`daemon` on
    /// Debian): it sees the other client as uid 1, us as us.
    pub fn new_shared_bus() -> Env {
        let dir = Env::temp_dir();
        let conf = dir.path().join("bus.conf");
        let name = format!("skiff-e2e-{}", dir.path().display());
        std::fs::write(
            &conf,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:abstract={name}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#
            ),
        )
        .unwrap();
        let (uid, gid) = (unsafe { libc::getuid() }, unsafe { libc::getgid() });
        let (sub_uid, sub_gid) = first_subordinate_ids();
        let mut cmd = Command::new(require("unshare"));
        cmd.arg(format!("--map-user={uid}"))
            .arg(format!("--map-users={sub_uid},1,1"))
            .arg(format!("--map-group={gid}"))
            .arg(format!("--map-groups={sub_gid},1,1"))
            .args(["-S", &uid.to_string(), "-G", &gid.to_string()])
            .arg(require("dbus-daemon"))
            .arg(format!("--config-file={}", conf.display()))
            .args(["--nofork", "--print-address=1", "--nopidfile"]);
        let mut env = Env::with_bus(dir, cmd);
        env.start_daemon();
        let tar = env.busybox_tar();
        let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
        assert!(out.status.success(), "import failed: {}", stderr(&out));
        env
    }

    /// A command run as another uid: our first subordinate uid (newuidmap), which is uid 1
    /// in its user namespace as in the bus's of [`Env::new_shared_bus`]. (A client claims
    /// the uid it has in its namespace when it authenticates, as gdbus and dbus-send do; the
    /// bus checks that claim against the uid it sees, so the two namespaces agree.)
    pub fn as_other_uid(&self, program: &str) -> Command {
        let (sub_uid, sub_gid) = first_subordinate_ids();
        let mut c = Command::new(require("unshare"));
        c.arg(format!("--map-users={sub_uid},1,1"))
            .arg(format!("--map-groups={sub_gid},1,1"))
            .args(["-S", "1", "-G", "1"])
            .arg(require(program))
            .env_clear()
            .env("PATH", "/usr/bin:/bin")
            .stdin(Stdio::null());
        c
    }

    fn temp_dir() -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix("skiff-e2e-")
            .tempdir()
            .unwrap();
        for sub in ["runtime", "data", "config"] {
            std::fs::create_dir(dir.path().join(sub)).unwrap();
            std::fs::set_permissions(dir.path().join(sub), std::fs::Permissions::from_mode(0o700))
                .unwrap();
        }
        dir
    }

    /// Starts the bus with `cmd` (which prints its address on stdout).
    fn with_bus(dir: tempfile::TempDir, mut cmd: Command) -> Env {
        let mut dbus = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        let mut out = dbus.stdout.take().unwrap();
        let mut byte = [0u8; 1];
        while out.read(&mut byte).unwrap_or(0) == 1 && byte[0] != b'\n' {
            line.push(byte[0] as char);
        }
        assert!(!line.is_empty(), "dbus-daemon did not print its address");
        Env {
            dir,
            address: line.trim().to_string(),
            dbus,
            skiffd: None,
            extra_args: Vec::new(),
            inherit_fd9: None,
        }
    }

    /// The environment every skiff process of this test gets.
    pub fn envs(&self) -> Vec<(String, String)> {
        let d = self.dir.path();
        vec![
            ("SKIFF_BUS_ADDRESS".into(), self.address.clone()),
            ("DBUS_SESSION_BUS_ADDRESS".into(), self.address.clone()),
            (
                "XDG_RUNTIME_DIR".into(),
                d.join("runtime").display().to_string(),
            ),
            ("XDG_DATA_HOME".into(), d.join("data").display().to_string()),
            (
                "XDG_CONFIG_HOME".into(),
                d.join("config").display().to_string(),
            ),
        ]
    }

    /// Starts skiffd (with extra flags) and waits until it owns its name.
    pub fn start_daemon_with(&mut self, args: &[&str]) {
        self.extra_args = args.iter().map(|s| s.to_string()).collect();
        self.start_daemon();
    }

    /// Makes the next skiffd started inherit `fd` as its fd 9 (not close-on-exec), as a
    /// daemon started from a shell that holds stray descriptors would.
    pub fn inherit_fd9(&mut self, fd: std::os::fd::OwnedFd) {
        self.inherit_fd9 = Some(fd);
    }

    /// Starts skiffd and waits until it owns its name.
    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.dir.path().join("skiffd.log")).unwrap();
        let mut cmd = Command::new(bin("skiffd"));
        cmd.args(&self.extra_args)
            .envs(self.envs())
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        if let Some(fd) = &self.inherit_fd9 {
            let raw = std::os::fd::AsRawFd::as_raw_fd(fd);
            // SAFETY: only dup2 (async-signal-safe) between fork and exec.
            unsafe {
                std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                    if raw == 9 {
                        libc::fcntl(9, libc::F_SETFD, 0);
                    } else if libc::dup2(raw, 9) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let child = cmd.spawn().unwrap();
        self.skiffd = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if self.skiffd_has_its_name() {
                return;
            }
            if let Some(Ok(Some(status))) = self.skiffd.as_mut().map(|c| c.try_wait()) {
                panic!("skiffd exited with {status}: {}", self.daemon_log());
            }
            assert!(
                Instant::now() < deadline,
                "skiffd did not take its name: {}",
                self.daemon_log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether a skiffd owns `org.skiff.skiff1` on this test's bus.
    pub fn skiffd_has_its_name(&self) -> bool {
        let out = self.ask_bus_about_skiffd("NameHasOwner");
        stdout(&out).contains("true")
    }

    /// Stops skiffd (SIGTERM) and waits for it; a skiffd that was running must end
    /// cleanly (exit 0): one that crashes on its way out fails the test (skiffd once
    /// aborted at every stop with a container running, unseen by every test).
    pub fn stop_daemon(&mut self) {
        if let Some(bad) = self.stop_daemon_quietly() {
            panic!("{bad}");
        }
    }

    /// Stops skiffd like [`Env::stop_daemon`]; returns what was wrong with its end
    /// instead of failing. A skiffd that had already exited is not judged here.
    fn stop_daemon_quietly(&mut self) -> Option<String> {
        let mut c = self.skiffd.take()?;
        if let Ok(Some(_)) = c.try_wait() {
            return None;
        }
        unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
        match c.wait() {
            Ok(s) if s.success() => None,
            other => Some(format!(
                "skiffd did not stop cleanly on SIGTERM ({other:?}); its log:\n{}",
                self.daemon_log()
            )),
        }
    }

    /// Kills skiffd with SIGKILL (a crash) and reaps it.
    pub fn kill_daemon(&mut self) {
        if let Some(mut c) = self.skiffd.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Polls `f` every 50 ms until it is true or `secs` pass; returns whether it became true.
    pub fn eventually(&self, secs: u64, mut f: impl FnMut() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < deadline {
            if f() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        f()
    }

    /// `skiff inspect NAME` as JSON (the first element).
    pub fn inspect(&self, name: &str) -> serde_json::Value {
        let out = self.skiff(&["inspect", name]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        v[0].clone()
    }

    /// The daemon's log so far.
    pub fn daemon_log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("skiffd.log")).unwrap_or_default()
    }

    /// Runs the skiff CLI.
    pub fn skiff(&self, args: &[&str]) -> Output {
        self.skiff_cmd(args).output().unwrap()
    }

    /// Runs the skiff CLI, which must succeed (else the test fails with its stderr, stdout
    /// and the daemon's log); returns its stdout.
    pub fn skiff_ok(&self, args: &[&str]) -> String {
        let out = self.skiff(args);
        assert!(
            out.status.success(),
            "skiff {args:?} failed: {}\n{}\n{}",
            stderr(&out),
            stdout(&out),
            self.daemon_log()
        );
        stdout(&out)
    }

    /// Runs the CLI with `input` on its stdin (written by a thread, so that a CLI that
    /// writes much before it reads all of it cannot block), its output collected.
    pub fn skiff_stdin(&self, args: &[&str], input: &[u8]) -> Output {
        let mut child = self
            .skiff_cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let data = input.to_vec();
        let feeder = std::thread::spawn(move || {
            use std::io::Write;
            let _ = stdin.write_all(&data);
        });
        let out = child.wait_with_output().unwrap();
        feeder.join().unwrap();
        out
    }

    /// A skiff command, to add stdin or more.
    pub fn skiff_cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin("skiff"));
        c.args(args).envs(self.envs()).stdin(Stdio::null());
        c
    }

    /// Runs gdbus on the private bus (`gdbus call --address A ...`).
    pub fn gdbus(&self, args: &[&str]) -> Output {
        Command::new(require("gdbus"))
            .args(["call", "--timeout", "120", "--address", &self.address])
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// The bus's own `org.freedesktop.DBus.METHOD` called about `org.skiff.skiff1`.
    fn ask_bus_about_skiffd(&self, method: &str) -> Output {
        self.gdbus(&[
            "--dest",
            "org.freedesktop.DBus",
            "--object-path",
            "/org/freedesktop/DBus",
            "--method",
            &format!("org.freedesktop.DBus.{method}"),
            "org.skiff.skiff1",
        ])
    }

    /// skiffd's pid, from the bus (the owner of `org.skiff.skiff1`).
    pub fn daemon_pid(&self) -> u32 {
        let out = self.ask_bus_about_skiffd("GetConnectionUnixProcessID");
        let s = stdout(&out);
        s.split_whitespace()
            .nth(1)
            .map(|n| n.trim_matches(|c: char| !c.is_ascii_digit()))
            .unwrap_or_default()
            .parse()
            .unwrap_or_else(|_| panic!("no pid in {s:?} {}", stderr(&out)))
    }

    /// Calls `method` on skiffd's object `path` with gdbus (no skiff code on the client side).
    pub fn dbus_call(&self, path: &str, method: &str, args: &[&str]) -> Output {
        let mut a = vec![
            "--dest",
            "org.skiff.skiff1",
            "--object-path",
            path,
            "--method",
            method,
        ];
        a.extend_from_slice(args);
        self.gdbus(&a)
    }

    /// The data directory of skiff.
    pub fn data(&self) -> PathBuf {
        self.dir.path().join("data/skiff")
    }

    /// The runtime directory of skiff.
    pub fn runtime(&self) -> PathBuf {
        self.dir.path().join("runtime/skiff")
    }

    /// Writes a busybox rootfs tarball (from /bin/busybox) and returns its path. The
    /// archive records root ownership, plus `home/user` and a file in it owned by
    /// 1000:1000 — built with the tar crate, so no privileges are needed.
    pub fn busybox_tar(&self) -> PathBuf {
        let path = self.dir.path().join("busybox.tar");
        write_busybox_tar(&path, &[]);
        path
    }
}

impl Drop for Env {
    fn drop(&mut self) {
        // A failed test may leave containers running: remove them while the daemon is
        // there, so no monitor or container outlives the test.
        if self.skiffd.is_some() {
            let ids = stdout(&self.skiff(&["ps", "-a", "-q"]));
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let mut args = vec!["rm", "-f"];
                args.extend(ids);
                let _ = self.skiff(&args);
            }
        }
        let bad_stop = self.stop_daemon_quietly();
        self.clean_up_after_daemon();
        if let Some(bad) = bad_stop {
            if !std::thread::panicking() {
                panic!("{bad}");
            }
        }
    }
}

impl Env {
    /// What [`Drop`] cleans once skiffd is gone: a shared network's holder, the bus,
    /// the layers.
    fn clean_up_after_daemon(&mut self) {
        // A shared network's holder left by a killed skiffd (a stopped one ends it).
        let state = self.runtime().join("network/holder.json");
        if let Ok(text) = std::fs::read_to_string(&state) {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(pid) = v["pid"].as_i64().filter(|p| *p > 1) {
                let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                if String::from_utf8_lossy(&cmd).contains("__netns") {
                    // SAFETY: a signal to the holder this test's skiffd started.
                    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
                }
            }
        }
        let _ = self.dbus.kill();
        let _ = self.dbus.wait();
        // Layers hold files owned by subordinate ids, which only the user namespace can
        // remove: use skiffd's own helper with the maps the daemon used (on its fd 4).
        let maps_file = self.dir.path().join("maps.json");
        if std::fs::write(&maps_file, current_maps_json()).is_err() {
            return;
        }
        let Ok(maps) = std::fs::File::open(&maps_file) else {
            return;
        };
        let raw = std::os::fd::AsRawFd::as_raw_fd(&maps);
        let mut cmd = Command::new(bin("skiffd"));
        cmd.arg("__remove")
            .arg(self.dir.path().join("data"))
            .stderr(Stdio::null());
        // SAFETY: only dup2/fcntl (async-signal-safe) between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, move || {
                if raw == 4 {
                    libc::fcntl(4, libc::F_SETFD, 0);
                } else if libc::dup2(raw, 4) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = cmd.status();
    }
}

/// The id maps skiffd computes for this user, as its helpers take them.
pub fn current_maps_json() -> String {
    let (maps, _) = skiff::userns::IdMaps::for_current_user().expect("reading /etc/subuid");
    serde_json::to_string(&maps).unwrap()
}

/// stdout as text.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).to_string()
}

/// stderr as text.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

/// The first subordinate uid range of the current user from /etc/subuid: (start, count).
pub fn first_subuid_range() -> Option<(u32, u32)> {
    let (maps, _) = skiff::userns::IdMaps::for_current_user().ok()?;
    maps.uid
        .iter()
        .find(|e| e.container_id == 1)
        .map(|e| (e.host_id, e.size))
}

/// The first subordinate uid and gid of the current user.
pub fn first_subordinate_ids() -> (u32, u32) {
    let (maps, _) = skiff::userns::IdMaps::for_current_user().expect("reading /etc/subuid");
    let first = |m: &[skiff::userns::IdMapEntry]| {
        m.iter()
            .find(|e| e.container_id == 1)
            .map(|e| e.host_id)
            .expect("no subordinate id range: see README")
    };
    (first(&maps.uid), first(&maps.gid))
}

/// Lists the entries of a directory (empty if it does not exist).
pub fn entries(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default()
}
