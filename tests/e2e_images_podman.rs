//! Archives exchanged with podman (run as the test user, with its own storage in the
//! test's directory): `podman save` → `skiff load`, `skiff save` → `podman load`, both
//! docker-archive and oci-archive.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use common::{require, stderr, stdout, Env};

struct Podman {
    root: PathBuf,
}

impl Podman {
    fn new(env: &Env) -> Podman {
        let root = env.dir.path().join("podman");
        for d in ["root", "run", "xdg"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Podman { root }
    }

    fn run(&self, args: &[&str]) -> Output {
        let out = Command::new(require("podman"))
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args([
                "--storage-driver",
                "vfs",
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .args(args)
            .env("XDG_RUNTIME_DIR", self.root.join("xdg"))
            .output()
            .unwrap();
        assert!(out.status.success(), "podman {args:?}: {}", stderr(&out));
        out
    }
}

impl Drop for Podman {
    /// Removes podman's storage (files of subordinate ids: from its user namespace) and
    /// ends its rootless pause process, which would otherwise outlive the test.
    fn drop(&mut self) {
        let _ = Command::new(require("podman"))
            .arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args(["--storage-driver", "vfs", "unshare", "rm", "-rf"])
            .arg(self.root.join("root"))
            .env("XDG_RUNTIME_DIR", self.root.join("xdg"))
            .output();
        let pid_file = self.root.join("xdg/libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}

#[test]
fn load_what_podman_saves() {
    let mut env = Env::bus_only();
    env.start_daemon();
    let podman = Podman::new(&env);
    let tar = env.busybox_tar();
    podman.run(&["import", tar.to_str().unwrap(), "localhost/pbb:1"]);
    for format in ["docker-archive", "oci-archive"] {
        let archive = env.dir.path().join(format!("{format}.tar"));
        podman.run(&[
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            "localhost/pbb:1",
        ]);
        let out = env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(out.contains("localhost/pbb:1"), "{format}: {out}");
        let out = env.skiff_ok(&["run", "--rm", "localhost/pbb:1", "cat", "/home/user/owned"]);
        assert_eq!(out, "mine\n", "{format}");
        env.skiff_ok(&["rmi", "localhost/pbb:1"]);
    }
}

#[test]
fn podman_loads_what_skiff_saves() {
    let env = Env::new(); // demo/busybox
    let podman = Podman::new(&env);
    for format in ["docker-archive", "oci-archive"] {
        let archive = env.dir.path().join(format!("skiff-{format}.tar"));
        env.skiff_ok(&[
            "save",
            "--format",
            format,
            "-o",
            archive.to_str().unwrap(),
            "demo/busybox",
        ]);
        let out = podman.run(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            stdout(&out).contains("docker.io/demo/busybox:latest"),
            "{format}: {}",
            stdout(&out)
        );
        let out = podman.run(&[
            "image",
            "inspect",
            "--format",
            "{{.Id}}",
            "docker.io/demo/busybox:latest",
        ]);
        let skiff_id = env.skiff_ok(&["images", "-q"]);
        assert!(
            stdout(&out).starts_with(skiff_id.trim()),
            "{format}: podman id {} vs skiff {skiff_id}",
            stdout(&out)
        );
        podman.run(&["rmi", "docker.io/demo/busybox:latest"]);
    }
    // A round trip through skiff itself.
    let archive = env.dir.path().join("again.tar");
    env.skiff_ok(&["save", "-o", archive.to_str().unwrap(), "demo/busybox"]);
    env.skiff_ok(&["rmi", "demo/busybox"]);
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    let out = env.skiff_ok(&["run", "--rm", "demo/busybox", "cat", "/etc/group"]);
    assert!(out.contains("user:x:1000:"), "{out}");
}
