//! End to end with the `fuse` storage driver: a file deleted and one changed inside a
//! running container are seen right inside, the image's layer stays untouched on disk,
//! and after `skiff rm` no process of the container (monitor or FUSE server) remains.

mod common;

use std::path::{Path, PathBuf};

use common::{entries, stderr, stdout, Env};

fn layer_dirs(env: &Env) -> Vec<PathBuf> {
    let layers = env.data().join("storage/layers");
    entries(&layers)
        .into_iter()
        .map(|e| layers.join(e).join("diff"))
        .collect()
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(needle) {
                out.push(format!("{}: {cmd}", e.file_name().to_string_lossy()));
            }
        }
    }
    out
}

fn fuse_env() -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", "fuse"]);
    let tar = env.busybox_tar();
    assert!(env
        .skiff(&["import", tar.to_str().unwrap(), "demo/busybox"])
        .status
        .success());
    env
}

#[test]
fn fuse_rootfs_sees_changes_inside_and_keeps_the_layers() {
    let env = fuse_env();
    let info = env.skiff(&["info"]);
    assert!(
        stdout(&info).contains("\"storage_driver\": \"fuse\""),
        "{}",
        stdout(&info)
    );
    let out = env.skiff(&[
        "run",
        "--name",
        "fz1",
        "demo/busybox",
        "sh",
        "-c",
        "grep -q user /etc/passwd && rm /etc/passwd && test ! -e /etc/passwd && \
         echo changed > /home/user/owned && cat /home/user/owned && \
         stat -c %u /home/user/owned && grep fuse /proc/mounts | cut -d' ' -f1-3",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}\nlog: {}",
        stderr(&out),
        env.daemon_log()
    );
    assert_eq!(
        stdout(&out),
        "changed\n1000\nskiff-overlay / fuse\n",
        "{}",
        stderr(&out)
    );
    // The image's layer is untouched.
    let layers = layer_dirs(&env);
    assert_eq!(layers.len(), 1, "{layers:?}");
    let passwd = std::fs::read_to_string(layers[0].join("etc/passwd")).unwrap();
    assert!(passwd.contains("user:x:1000"), "{passwd}");
    assert_eq!(
        std::fs::read_to_string(layers[0].join("home/user/owned")).unwrap(),
        "mine\n"
    );
    assert!(env.skiff(&["rm", "fz1"]).status.success());
    let dir = env.dir.path().to_str().unwrap().to_string();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let left: Vec<String> = processes_mentioning(&dir)
            .into_iter()
            .filter(|p| p.contains("__monitor"))
            .collect();
        if left.is_empty() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "left after rm: {left:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(entries(&env.data().join("containers")).is_empty());
}

#[test]
fn fuse_rootfs_of_a_running_container_goes_away_with_it() {
    let env = fuse_env();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "bg",
        "demo/busybox",
        "sh",
        "-c",
        "rm /etc/group; echo new > /etc/hostname.new; sleep 1000",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let dir = env.dir.path().to_str().unwrap().to_string();
    // The monitor and the FUSE server (a fork of it) run while the container does.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while processes_mentioning(&dir)
        .iter()
        .filter(|p| p.contains("__monitor"))
        .count()
        < 2
    {
        assert!(
            std::time::Instant::now() < deadline,
            "no FUSE server: {:?}",
            processes_mentioning(&dir)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let rm = env.skiff(&["rm", "-f", "bg"]);
    assert!(rm.status.success(), "{}", stderr(&rm));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !processes_mentioning(&dir)
        .iter()
        .all(|p| !p.contains("__monitor"))
    {
        assert!(
            std::time::Instant::now() < deadline,
            "left after rm -f: {:?}",
            processes_mentioning(&dir)
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let layers = layer_dirs(&env);
    assert!(Path::new(&layers[0].join("etc/group")).exists());
    assert!(!layers[0].join("etc/hostname.new").exists());
}

/// `mv olddir newdir` of an image directory inside a container (busybox mv: rename gives
/// EXDEV, as on kernel overlayfs with `userxattr`, and mv copies); the layer keeps it.
#[test]
fn mv_of_an_image_directory_inside_a_container() {
    let env = fuse_env();
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "mv /home/user /home/moved && test ! -e /home/user && cat /home/moved/owned && \
         stat -c %u /home/moved/owned && ls /home",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}\nlog: {}",
        stderr(&out),
        env.daemon_log()
    );
    assert_eq!(stdout(&out), "mine\n1000\nmoved\n", "{}", stderr(&out));
    let layers = layer_dirs(&env);
    assert!(layers[0].join("home/user/owned").exists());
}

/// Inside a container on the FUSE root: the caller's umask alone decides new modes
/// (not skiffd's too), `ls -a` lists `.` and `..`, and `mknod c 0 0` (the whiteout
/// marker) is refused (issue 12, items 12, 15, 16).
#[test]
fn umask_dot_entries_and_whiteout_mknod_inside_a_container() {
    let env = fuse_env();
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "umask 0; touch /f; mkdir /d; umask 002; touch /g; stat -c '%a %n' /f /d /g; \
         ls -a / | head -2; mknod /w c 0 0 2>/dev/null || echo refused; \
         test -e /w || echo absent",
    ]);
    assert!(
        out.status.success(),
        "stderr: {}\nlog: {}",
        stderr(&out),
        env.daemon_log()
    );
    assert_eq!(
        stdout(&out),
        "666 /f\n777 /d\n664 /g\n.\n..\nrefused\nabsent\n",
        "{}",
        stderr(&out)
    );
}
