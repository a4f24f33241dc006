//! A rootless podman with storage of its own in the test's directory, as an oracle: its
//! `--storage-driver` chosen per test (`vfs` or `overlay`). Dropped, it removes its
//! storage (from its user namespace) and ends its pause process.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::common::{require, stderr};

/// One podman storage (root, runroot, runtime dir) under a test's directory.
pub struct Podman {
    root: PathBuf,
    driver: String,
}

impl Podman {
    /// A podman with its storage in `dir/podman-DRIVER`, with storage driver `driver`.
    pub fn new(dir: &Path, driver: &str) -> Podman {
        let root = dir.join(format!("podman-{driver}"));
        for d in ["root", "run", "xdg"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
            std::fs::set_permissions(root.join(d), std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Podman {
            root,
            driver: driver.to_string(),
        }
    }

    fn cmd(&self) -> Command {
        let mut c = Command::new(require("podman"));
        c.arg("--root")
            .arg(self.root.join("root"))
            .arg("--runroot")
            .arg(self.root.join("run"))
            .args([
                "--storage-driver",
                &self.driver,
                "--cgroup-manager",
                "cgroupfs",
                "--events-backend",
                "file",
            ])
            .env("XDG_RUNTIME_DIR", self.root.join("xdg"));
        c
    }

    /// Runs podman with `args`, whatever its outcome.
    pub fn output(&self, args: &[&str]) -> Output {
        self.cmd().args(args).output().unwrap()
    }

    /// Runs podman with `args`; asserts that it succeeded.
    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.output(args);
        assert!(
            out.status.success(),
            "podman ({}) {args:?}: {}",
            self.driver,
            stderr(&out)
        );
        out
    }
}

impl Drop for Podman {
    fn drop(&mut self) {
        let _ = self.cmd().args(["rm", "-a", "-f", "-t", "0"]).output();
        let _ = self
            .cmd()
            .args(["unshare", "rm", "-rf"])
            .arg(self.root.join("root"))
            .output();
        let pid_file = self.root.join("xdg/libpod/tmp/pause.pid");
        if let Some(pid) = std::fs::read_to_string(pid_file)
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        {
            // SAFETY: kill(2) with a pid read from podman's own pause file.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
    }
}
