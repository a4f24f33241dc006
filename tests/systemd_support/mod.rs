//! skiffd as a service of the real `systemd --user` that scripts/test.sh starts
//! (scripts/user-manager.sh; its XDG_RUNTIME_DIR in SKIFF_USER_MANAGER_RUNTIME_DIR),
//! with the project's own unit and activation files at the paths of this build; for the
//! tests of containers as units, pause and limits. (The same harness as
//! tests/e2e_systemd.rs, shared from here.) Without a manager the tests say they are
//! skipped (a line scripts/test.sh counts).

#![allow(dead_code)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use crate::common::{bin, stderr, stdout, Env};

/// One skiffd.service per manager: the tests of a binary take turns.
pub static MANAGER: Mutex<()> = Mutex::new(());

/// The manager's runtime dir, or None after printing the skip line.
pub fn manager_runtime_dir(test: &str) -> Option<PathBuf> {
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
pub struct Service {
    pub rt: PathBuf,
    pub env: Env,
}

impl Service {
    pub fn install(rt: PathBuf) -> Service {
        let env = Env::bus_only();
        let data = env.dir.path().join("data");
        let skiffd = bin("skiffd");
        let unit = include_str!("../../systemd/skiffd.service")
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
        let activation = include_str!("../../systemd/org.skiff.skiff1.service")
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
    pub fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
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

    pub fn systemctl(&self, args: &[&str]) -> Output {
        self.cmd("systemctl")
            .arg("--user")
            .args(args)
            .output()
            .unwrap()
    }

    pub fn skiff(&self, args: &[&str]) -> Output {
        self.cmd(bin("skiff")).args(args).output().unwrap()
    }

    pub fn ok(&self, out: &Output) -> String {
        assert!(
            out.status.success(),
            "failed: {}{}\n{}",
            stdout(out),
            stderr(out),
            self.journal("skiffd")
        );
        stdout(out)
    }

    /// `systemctl show -p PROP --value UNIT`.
    pub fn show(&self, unit: &str, prop: &str) -> String {
        stdout(&self.systemctl(&["show", "-p", prop, "--value", unit]))
            .trim()
            .to_string()
    }

    /// The directory of `unit`'s cgroup as the tests see it. The manager runs in a cgroup
    /// namespace rooted at its own cgroup (scripts/user-manager.sh), so its
    /// `ControlGroup=` paths are relative to that directory, which the script writes
    /// to `STATE_DIR/cgroups` (`STATE_DIR` is `rt`'s parent).
    pub fn unit_cgroup(&self, unit: &str) -> PathBuf {
        let state = self
            .rt
            .parent()
            .expect("the runtime dir is in the state dir");
        let cgroups = std::fs::read_to_string(state.join("cgroups")).unwrap();
        let root = cgroups.lines().next().expect("the manager's cgroup");
        let rel = self.show(unit, "ControlGroup");
        assert!(rel.starts_with('/'), "{unit}: ControlGroup={rel}");
        Path::new(root).join(rel.trim_start_matches('/'))
    }

    /// What the manager knows about a unit.
    pub fn journal(&self, unit: &str) -> String {
        stdout(&self.systemctl(&["status", "--no-pager", "-n", "30", unit]))
    }

    /// The manager's own log (STATE_DIR/log: systemd's messages about its units, not
    /// their output, which goes to a journal the manager does not have).
    pub fn manager_log(&self) -> String {
        let log = self.rt.parent().map(|p| p.join("log"));
        log.and_then(|l| std::fs::read_to_string(l).ok())
            .map(|s| {
                let lines: Vec<&str> = s.lines().collect();
                lines[lines.len().saturating_sub(60)..].join("\n")
            })
            .unwrap_or_default()
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

/// The unified hierarchy's mount point.
pub fn unified_root() -> &'static str {
    if Path::new("/sys/fs/cgroup/unified/cgroup.procs").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        "/sys/fs/cgroup"
    }
}

/// The cgroup v2 path of `pid` (the unified hierarchy's line).
pub fn cgroup_of(pid: u32) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap_or_default()
        .to_string()
}
