//! `skiff build` with podman: an image skiff built loads into podman (and keeps the
//! configuration the instruction families set), and an image podman (buildah) built is
//! a base skiff builds FROM. The instruction families without a runtime effect skiff
//! can observe (SHELL, HEALTHCHECK, ONBUILD, VOLUME, ENTRYPOINT) are checked in the
//! configuration the saved archive carries.
//! (The podman helper is the one of e2e_images_podman.rs.)

mod common;

use std::io::Read;
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

const FAMILIES: &str = r#"FROM demo/busybox
SHELL ["/bin/sh", "-ec"]
RUN --network=none echo "$-" > /shell && grep -c : /proc/net/dev > /interfaces
HEALTHCHECK --interval=30s --retries=2 CMD wget -q -O- http://localhost/ || exit 1
ONBUILD RUN echo child
VOLUME /data /cache
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["echo entry"]
"#;

/// The image configuration inside a docker-archive.
fn config_in_archive(path: &std::path::Path) -> serde_json::Value {
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(path).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let cfg = manifest[0]["Config"].as_str().unwrap();
    serde_json::from_slice(&files[cfg]).unwrap()
}

#[test]
fn podman_loads_what_skiff_builds() {
    let env = Env::new();
    let ctx = env.dir.path().join("fam");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), FAMILIES).unwrap();
    env.skiff_ok(&["build", "-t", "me/fam", ctx.to_str().unwrap()]);
    assert_eq!(env.skiff_ok(&["run", "--rm", "me/fam"]), "entry\n");
    // SHELL ["/bin/sh", "-ec"] ran the RUN with -e; --network=none gave it only lo.
    let flags = env.skiff_ok(&["run", "--rm", "me/fam", "cat /shell"]);
    assert!(flags.contains('e'), "{flags}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/fam", "cat /interfaces"]),
        "1\n"
    );
    let archive = env.dir.path().join("fam.tar");
    env.skiff_ok(&["save", "-o", archive.to_str().unwrap(), "me/fam"]);
    let cfg = config_in_archive(&archive);
    let c = &cfg["config"];
    assert_eq!(c["Shell"], serde_json::json!(["/bin/sh", "-ec"]), "{cfg}");
    assert_eq!(
        c["Healthcheck"]["Test"],
        serde_json::json!(["CMD-SHELL", "wget -q -O- http://localhost/ || exit 1"]),
        "{cfg}"
    );
    assert_eq!(c["Healthcheck"]["Interval"], 30_000_000_000u64, "{cfg}");
    assert_eq!(c["Healthcheck"]["Retries"], 2, "{cfg}");
    assert_eq!(c["OnBuild"], serde_json::json!(["RUN echo child"]), "{cfg}");
    assert!(
        c["Volumes"].get("/data").is_some() && c["Volumes"].get("/cache").is_some(),
        "{cfg}"
    );
    assert_eq!(
        c["Entrypoint"],
        serde_json::json!(["/bin/sh", "-c"]),
        "{cfg}"
    );
    let podman = Podman::new(&env);
    let out = podman.run(&["load", "-i", archive.to_str().unwrap()]);
    assert!(
        stdout(&out).contains("docker.io/me/fam:latest"),
        "{}",
        stdout(&out)
    );
    let out = podman.run(&[
        "image",
        "inspect",
        "--format",
        "{{.Id}}",
        "docker.io/me/fam:latest",
    ]);
    let id = env.skiff_ok(&["images", "-q", "--filter", "reference=me/fam"]);
    assert!(
        stdout(&out).starts_with(id.trim()),
        "podman {} vs skiff {id}",
        stdout(&out)
    );
}

#[test]
fn skiff_builds_from_what_podman_builds() {
    let env = Env::new();
    let podman = Podman::new(&env);
    let tar = env.busybox_tar();
    podman.run(&["import", tar.to_str().unwrap(), "localhost/pbase:1"]);
    let pctx = env.dir.path().join("pctx");
    std::fs::create_dir_all(&pctx).unwrap();
    std::fs::write(pctx.join("f"), "from podman\n").unwrap();
    std::fs::write(
        pctx.join("Dockerfile"),
        "FROM localhost/pbase:1\nCOPY f /podman-file\nENV MADE_BY=podman\n",
    )
    .unwrap();
    podman.run(&[
        "build",
        "--isolation",
        "chroot",
        "-t",
        "localhost/pbuilt:1",
        pctx.to_str().unwrap(),
    ]);
    let archive = env.dir.path().join("pbuilt.tar");
    podman.run(&[
        "save",
        "-o",
        archive.to_str().unwrap(),
        "localhost/pbuilt:1",
    ]);
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    let sctx = env.dir.path().join("sctx");
    std::fs::create_dir_all(&sctx).unwrap();
    std::fs::write(
        sctx.join("Dockerfile"),
        "FROM localhost/pbuilt:1\nRUN cat /podman-file > /copied\nCMD [\"sh\", \"-c\", \"cat /copied; echo $MADE_BY\"]\n",
    )
    .unwrap();
    env.skiff_ok(&["build", "-t", "me/onpodman", sctx.to_str().unwrap()]);
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/onpodman"]),
        "from podman\npodman\n"
    );
}
