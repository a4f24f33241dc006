//! skiffd as a service of a real `systemd --user` (scripts/user-manager.sh, started by
//! scripts/test.sh, which passes its XDG_RUNTIME_DIR in SKIFF_USER_MANAGER_RUNTIME_DIR):
//! the project's own unit and activation files with the paths of this build.
//! Without a manager the tests say they are skipped (a line scripts/test.sh counts).

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use common::{bin, stderr, stdout, Env};

/// One skiffd.service per manager: the tests take turns.
static MANAGER: Mutex<()> = Mutex::new(());

/// The manager's runtime dir, or None after printing the skip line.
fn manager_runtime_dir(test: &str) -> Option<PathBuf> {
    match std::env::var_os("SKIFF_USER_MANAGER_RUNTIME_DIR") {
        Some(d) if !d.is_empty() => Some(PathBuf::from(d)),
        _ => {
            // Straight to fd 2, past libtest's capture of eprintln!.
            let _ = std::io::stderr().write_all(
                format!(
                    "skiff-test: SKIPPED {test}: no user manager (SKIFF_USER_MANAGER_RUNTIME_DIR \
                     unset; scripts/test.sh as root starts one)\n"
                )
                .as_bytes(),
            );
            None
        }
    }
}

/// skiffd installed as a user service of the manager at `rt`, its data in a temp dir
/// (`Env`'s, which also removes it); stopped and uninstalled on drop.
struct Service {
    rt: PathBuf,
    env: Env,
}

impl Service {
    fn install(rt: PathBuf) -> Service {
        let env = Env::bus_only();
        let data = env.dir.path().join("data");
        let skiffd = bin("skiffd");
        let unit = include_str!("../systemd/skiffd.service")
            .lines()
            .map(|l| {
                if l.starts_with("ExecStart=") {
                    format!(
                        "ExecStart={}\nEnvironment=XDG_DATA_HOME={}",
                        skiffd.display(),
                        data.display()
                    )
                } else if l.starts_with("Environment=RUST_LOG") {
                    "Environment=RUST_LOG=debug".to_string()
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let units = rt.join("config/systemd/user");
        std::fs::create_dir_all(&units).unwrap();
        std::fs::write(units.join("skiffd.service"), unit + "\n").unwrap();
        let activation = include_str!("../systemd/org.skiff.skiff1.service")
            .lines()
            .map(|l| {
                if l.starts_with("Exec=") {
                    format!("Exec={}", skiffd.display())
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let services = rt.join("data/dbus-1/services");
        std::fs::create_dir_all(&services).unwrap();
        std::fs::write(services.join("org.skiff.skiff1.service"), activation + "\n").unwrap();
        let s = Service { rt, env };
        s.ok(&s.systemctl(&["daemon-reload"]));
        // The bus reads its service files again.
        s.ok(&s
            .cmd("busctl")
            .args([
                "--user",
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "ReloadConfig",
            ])
            .output()
            .unwrap());
        s
    }

    /// A command talking to the manager and its user bus.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env_remove("SKIFF_BUS_ADDRESS")
            .env("XDG_RUNTIME_DIR", &self.rt)
            .env(
                "DBUS_SESSION_BUS_ADDRESS",
                format!("unix:path={}/bus", self.rt.display()),
            )
            .env("XDG_DATA_HOME", self.env.dir.path().join("data"))
            .stdin(Stdio::null());
        c
    }

    fn systemctl(&self, args: &[&str]) -> Output {
        self.cmd("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .unwrap()
    }

    fn skiff(&self, args: &[&str]) -> Output {
        self.cmd(bin("skiff")).args(args).output().unwrap()
    }

    fn ok(&self, out: &Output) -> String {
        assert!(
            out.status.success(),
            "failed: {}{}\n{}",
            stdout(out),
            stderr(out),
            self.journal()
        );
        stdout(out)
    }

    /// `systemctl show -p PROP --value UNIT`.
    fn show(&self, unit: &str, prop: &str) -> String {
        stdout(&self.systemctl(&["show", "-p", prop, "--value", unit]))
            .trim()
            .to_string()
    }

    /// What the manager knows about skiffd (its log goes to the manager's console).
    fn journal(&self) -> String {
        stdout(&self.systemctl(&["status", "--no-pager", "skiffd"]))
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        let ids = stdout(&self.skiff(&["ps", "-a", "-q"]));
        for id in ids.split_whitespace() {
            let _ = self.skiff(&["rm", "-f", id]);
        }
        let _ = self.systemctl(&["stop", "skiffd"]);
        let _ = std::fs::remove_file(self.rt.join("config/systemd/user/skiffd.service"));
        let _ = std::fs::remove_file(
            self.rt
                .join("data/dbus-1/services/org.skiff.skiff1.service"),
        );
        let _ = self.systemctl(&["daemon-reload"]);
        let _ = self.systemctl(&["reset-failed"]);
    }
}

/// The cgroup v2 path of `pid` (the unified hierarchy's line).
fn cgroup_of(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}

/// The pids in a unit's cgroup (unified hierarchy).
fn unit_pids(cgroup: &str) -> Vec<u32> {
    let root = if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    };
    std::fs::read_to_string(format!("{root}{cgroup}/cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// An HTTP GET of / on 127.0.0.1:port; the body (empty when nothing answers).
fn http_get(port: u16) -> String {
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = s.write_all(b"GET /index.html HTTP/1.0\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn systemd_notify_scopes_and_restart_keep_containers() {
    let Some(rt) = manager_runtime_dir("systemd_notify_scopes_and_restart_keep_containers") else {
        return;
    };
    let _turn = MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let s = Service::install(rt);

    // Type=notify: start returns once skiffd said READY=1, with its status line.
    s.ok(&s.systemctl(&["start", "skiffd"]));
    assert_eq!(s.show("skiffd", "ActiveState"), "active", "{}", s.journal());
    assert_eq!(s.show("skiffd", "Type"), "notify");
    assert_eq!(
        s.show("skiffd", "StatusText"),
        "0 containers, 0 running",
        "{}",
        s.journal()
    );
    let main_pid: u32 = s.show("skiffd", "MainPID").parse().unwrap();

    // A container with a published port, through the user bus.
    let tar = s.env.busybox_tar();
    s.ok(&s.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]));
    let port = free_port();
    let publish = format!("127.0.0.1:{port}:80");
    let id = s.ok(&s.skiff(&[
        "run",
        "-d",
        "--name",
        "web",
        "-p",
        &publish,
        "demo/busybox",
        "sh",
        "-c",
        "mkdir -p /www && echo hello-from-web > /www/index.html && exec httpd -f -p 80 -h /www",
    ]));
    let id = id.trim().to_string();
    assert!(
        s.env
            .eventually(30, || http_get(port).contains("hello-from-web")),
        "the published port does not answer"
    );
    assert!(
        s.env.eventually(10, || s.show("skiffd", "StatusText")
            == "1 container, 1 running"),
        "status: {}",
        s.show("skiffd", "StatusText")
    );

    // The container's processes are in a scope of their own, skiffd's unit holds only skiffd.
    let scope = format!("skiff-{id}.scope");
    assert_eq!(s.show(&scope, "ActiveState"), "active", "{}", s.journal());
    let insp: serde_json::Value =
        serde_json::from_str(&s.ok(&s.skiff(&["inspect", "web"]))).unwrap();
    let pid = insp[0]["State"]["Pid"].as_u64().unwrap() as u32;
    assert!(
        cgroup_of(pid).contains(&format!("/{scope}")),
        "container in {}",
        cgroup_of(pid)
    );
    let service_cg = s.show("skiffd", "ControlGroup");
    assert_eq!(
        unit_pids(&service_cg),
        vec![main_pid],
        "skiffd.service holds more than skiffd"
    );

    // restart: the container and its port stay, the new skiffd finds them.
    s.ok(&s.systemctl(&["restart", "skiffd"]));
    let new_pid: u32 = s.show("skiffd", "MainPID").parse().unwrap();
    assert_ne!(new_pid, main_pid);
    assert_eq!(
        s.show("skiffd", "StatusText"),
        "1 container, 1 running",
        "{}",
        s.journal()
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with skiffd"
    );
    assert!(
        http_get(port).contains("hello-from-web"),
        "the port died with skiffd"
    );
    let ps = s.ok(&s.skiff(&["ps", "--format", "json"]));
    assert!(ps.contains(&id) && ps.contains("running"), "{ps}");

    // rm: the scope goes with the container.
    s.ok(&s.skiff(&["rm", "-f", "web"]));
    assert!(
        s.env
            .eventually(10, || s.show(&scope, "ActiveState") != "active"),
        "{scope} outlived its container"
    );
    assert!(s.env.eventually(10, || s.show("skiffd", "StatusText")
        == "0 containers, 0 running"));

    // stop: STOPPING=1, then inactive.
    s.ok(&s.systemctl(&["stop", "skiffd"]));
    assert_eq!(s.show("skiffd", "ActiveState"), "inactive");
}

#[test]
fn systemd_activation_by_a_cli_call() {
    let Some(rt) = manager_runtime_dir("systemd_activation_by_a_cli_call") else {
        return;
    };
    let _turn = MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let s = Service::install(rt);
    assert_eq!(s.show("skiffd", "ActiveState"), "inactive");
    // skiff finds no skiffd on the bus; the bus asks the manager for skiffd.service.
    let out = s.skiff(&["ps"]);
    assert!(out.status.success(), "{}{}", stderr(&out), s.journal());
    assert!(stdout(&out).starts_with("CONTAINER ID"), "{}", stdout(&out));
    assert_eq!(s.show("skiffd", "ActiveState"), "active", "{}", s.journal());
    assert_eq!(s.show("skiffd", "StatusText"), "0 containers, 0 running");
}

/// `systemctl --user reload skiffd` (the unit's `ExecReload=`, SIGHUP) re-reads
/// skiffd.toml in the manager's XDG_CONFIG_HOME: a live setting changes, same process.
#[test]
fn systemd_reload_rereads_skiffd_toml() {
    let Some(rt) = manager_runtime_dir("systemd_reload_rereads_skiffd_toml") else {
        return;
    };
    let _one = MANAGER.lock().unwrap_or_else(|p| p.into_inner());
    /// Removes the manager's skiffd.toml (shared by the manager's services) at the end.
    struct Conf(PathBuf);
    impl Drop for Conf {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }
    let dir = rt.join("config/skiff");
    std::fs::create_dir_all(&dir).unwrap();
    let conf = Conf(dir.join("skiffd.toml"));
    let write = |text: &str| {
        let tmp = dir.join("skiffd.toml.tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, &conf.0).unwrap();
    };
    write("network = \"none\"\n");
    let s = Service::install(rt.clone());
    s.ok(&s.systemctl(&["start", "skiffd"]));
    let network = || -> serde_json::Value {
        let info: serde_json::Value = serde_json::from_str(&s.ok(&s.skiff(&["info"]))).unwrap();
        info["config"]["network"].clone()
    };
    assert_eq!(
        network(),
        serde_json::json!({"value": "none", "source": "file"})
    );
    let pid = s.show("skiffd.service", "MainPID");
    write("network = \"host\"\n");
    s.ok(&s.systemctl(&["reload", "skiffd"]));
    // ExecReload= only sends the signal: wait for skiffd to have read the file.
    assert!(
        s.env.eventually(20, || network()["value"] == "host"),
        "{}\n{}",
        network(),
        s.journal()
    );
    assert_eq!(network()["source"], "file");
    assert_eq!(s.show("skiffd.service", "MainPID"), pid, "not restarted");
    assert_eq!(s.show("skiffd.service", "ActiveState"), "active");
}

/// Under a user manager a container has a scope cgroup of its own: `stats` reads its CPU
/// time there (`cpu.stat` is in every cgroup v2 directory), and what the scope lacks
/// (controllers not delegated) from /proc.
#[test]
fn systemd_stats_read_the_scope_cgroup() {
    let Some(rt) = manager_runtime_dir("systemd_stats_read_the_scope_cgroup") else {
        return;
    };
    let _turn = MANAGER.lock().unwrap_or_else(|e| e.into_inner());
    let s = Service::install(rt);
    s.ok(&s.systemctl(&["start", "skiffd"]));
    let tar = s.env.busybox_tar();
    s.ok(&s.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]));
    s.ok(&s.skiff(&[
        "run",
        "-d",
        "--name",
        "busy",
        "demo/busybox",
        "sh",
        "-c",
        "while :; do :; done",
    ]));
    let out = s.ok(&s.skiff(&["stats", "--no-stream", "--format", "json", "busy"]));
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let cpu: f64 = v["CPUPerc"]
        .as_str()
        .unwrap()
        .trim_end_matches('%')
        .parse()
        .unwrap();
    assert!(cpu > 0.0, "{v}");
    assert_eq!(v["PIDs"], "1", "{v}");
    // Where the numbers came from, as the API says.
    let path = s.ok(&s
        .cmd("busctl")
        .args([
            "--user",
            "call",
            "org.skiff.skiff1",
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager",
            "GetContainer",
            "s",
            "busy",
        ])
        .output()
        .unwrap());
    let path = path.split('"').nth(1).unwrap().to_string();
    let stats = s.ok(&s
        .cmd("busctl")
        .args([
            "--user",
            "call",
            "org.skiff.skiff1",
            &path,
            "org.skiff.skiff1.Container",
            "Stats",
        ])
        .output()
        .unwrap());
    assert!(stats.contains("cpu=cgroup"), "{stats}");
}
