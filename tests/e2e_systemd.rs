//! skiffd as a service of a real `systemd --user` (scripts/user-manager.sh, started by
//! scripts/test.sh, which passes its XDG_RUNTIME_DIR in SKIFF_USER_MANAGER_RUNTIME_DIR):
//! the project's own unit and activation files with the paths of this build.
//! Without a manager the tests say they are skipped (a line scripts/test.sh counts).

mod common;
mod systemd_support;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use common::{stderr, stdout};
use systemd_support::{cgroup_of, manager_runtime_dir, unified_root, Service, MANAGER};

/// The pids in a unit's cgroup directory.
fn unit_pids(cgroup: &Path) -> Vec<u32> {
    std::fs::read_to_string(cgroup.join("cgroup.procs"))
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
    assert_eq!(
        s.show("skiffd", "ActiveState"),
        "active",
        "{}",
        s.journal("skiffd")
    );
    assert_eq!(s.show("skiffd", "Type"), "notify");
    assert_eq!(
        s.show("skiffd", "StatusText"),
        "0 containers, 0 running",
        "{}",
        s.journal("skiffd")
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
    assert_eq!(
        s.show(&scope, "ActiveState"),
        "active",
        "{}",
        s.journal("skiffd")
    );
    let insp: serde_json::Value =
        serde_json::from_str(&s.ok(&s.skiff(&["inspect", "web"]))).unwrap();
    let pid = insp[0]["State"]["Pid"].as_u64().unwrap() as u32;
    assert!(
        cgroup_of(pid).contains(&format!("/{scope}")),
        "container in {}",
        cgroup_of(pid)
    );
    // (and skiffd's monitor zygote, its child, which forks the monitors: they are
    // placed in their scopes, the zygote ends with skiffd.)
    let service_cg = s.unit_cgroup("skiffd");
    assert_eq!(
        Path::new(&format!("{}{}", unified_root(), cgroup_of(main_pid))),
        service_cg,
        "skiffd is not in its unit's cgroup"
    );
    let is_zygote = |p: &u32| {
        let comm = std::fs::read_to_string(format!("/proc/{p}/comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap_or_default();
        let ppid = stat
            .rsplit(')')
            .next()
            .and_then(|r| r.split_whitespace().nth(1));
        comm.trim_end() == "skiff-zygote" && ppid == Some(main_pid.to_string().as_str())
    };
    let unit: Vec<u32> = unit_pids(&service_cg)
        .into_iter()
        .filter(|p| !is_zygote(p))
        .collect();
    assert_eq!(
        unit,
        vec![main_pid],
        "skiffd.service holds more than skiffd"
    );

    // The shared network's holder (the container is on `bridge`, the default) is in a
    // scope of its own too: skiffd's restart must not take the network along.
    let holder_state = s.rt.join("skiff/network/holder.json");
    let holder: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&holder_state).unwrap()).unwrap();
    let holder = holder["pid"].as_u64().unwrap() as u32;
    let holder_scope = format!("skiff-network-{holder}.scope");
    assert_eq!(
        s.show(&holder_scope, "ActiveState"),
        "active",
        "{}",
        s.journal("skiffd")
    );
    assert!(
        cgroup_of(holder).contains(&format!("/{holder_scope}")),
        "the holder in {}",
        cgroup_of(holder)
    );

    // restart: the container and its port stay, the new skiffd finds them.
    s.ok(&s.systemctl(&["restart", "skiffd"]));
    let new_pid: u32 = s.show("skiffd", "MainPID").parse().unwrap();
    assert_ne!(new_pid, main_pid);
    assert_eq!(
        s.show("skiffd", "StatusText"),
        "1 container, 1 running",
        "{}",
        s.journal("skiffd")
    );
    assert!(
        Path::new(&format!("/proc/{pid}")).exists(),
        "the container died with skiffd"
    );
    assert!(
        http_get(port).contains("hello-from-web"),
        "the port died with skiffd"
    );
    assert!(
        cgroup_of(holder).contains(&format!("/{holder_scope}")),
        "the shared network's holder died with skiffd"
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

    // stop: STOPPING=1, then inactive; no container uses the shared network: its
    // holder ends, and its scope with it.
    s.ok(&s.systemctl(&["stop", "skiffd"]));
    assert_eq!(s.show("skiffd", "ActiveState"), "inactive");
    assert!(
        s.env
            .eventually(10, || s.show(&holder_scope, "ActiveState") != "active"),
        "{holder_scope} outlived skiffd with no container on the network"
    );
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
    assert!(
        out.status.success(),
        "{}{}",
        stderr(&out),
        s.journal("skiffd")
    );
    assert!(stdout(&out).starts_with("CONTAINER ID"), "{}", stdout(&out));
    assert_eq!(
        s.show("skiffd", "ActiveState"),
        "active",
        "{}",
        s.journal("skiffd")
    );
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
        s.journal("skiffd")
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
