//! End to end image store: a multi-layer docker-archive with whiteouts, an opaque
//! directory and hard links (plain, gzip and zstd layers) looks right inside containers
//! on every storage driver; import --change; tag/rmi/prune free exactly the unshared
//! blobs and layers; rmi of an image in use; a load killed midway; hostile layers; a
//! FIFO of a layer in the container on every driver (podman's vfs and the kernel
//! overlay as oracles).

mod common;
mod image_support;
mod podman_support;

use std::path::{Path, PathBuf};

use common::{entries, stderr, stdout, Env};
use image_support::multi_layer_archive;

const CHECK: &str = "test ! -e /etc/gone && ls /opq && echo --- && ls /keep && \
                     cat /links/x /top && stat -c %i /links/x /links/y";

#[test]
fn multi_layer_image_looks_right_on_every_driver() {
    for driver in ["overlay", "vfs", "fuse"] {
        let mut env = Env::bus_only();
        env.start_daemon_with(&["--storage-driver", driver]);
        let archive = multi_layer_archive(&env, "demo/multi:1");
        let out = env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
        assert!(
            out.contains("Loaded image: docker.io/demo/multi:1"),
            "{out}"
        );
        let out = env.skiff_ok(&["run", "--rm", "demo/multi:1", "sh", "-c", CHECK]);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            &lines[..6],
            ["new", "---", "a", "b", "linked", "top"],
            "{driver}: {out}"
        );
        assert_eq!(lines[6], lines[7], "{driver}: hard link lost: {out}");
        let hist = env.skiff_ok(&["history", "--format", "json", "demo/multi:1"]);
        assert!(
            hist.find("three").unwrap() < hist.find("one").unwrap(),
            "{hist}"
        );
    }
}

/// A rootfs tar: busybox plus the FIFO `run/fifo` (mode 0640).
fn fifo_tar(env: &Env) -> PathBuf {
    let base = env.busybox_tar();
    let mut ar = tar::Archive::new(std::fs::File::open(&base).unwrap());
    let mut b = tar::Builder::new(Vec::new());
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let path = e.path().unwrap().into_owned();
        match e.link_name().unwrap().map(|l| l.into_owned()) {
            Some(link) => b.append_link(&mut h, &path, &link).unwrap(),
            None => b.append_data(&mut h, &path, &mut e).unwrap(),
        }
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Fifo);
    h.set_mode(0o640);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(0);
    b.append_data(&mut h, "run/fifo", &[][..]).unwrap();
    let path = env.dir.path().join("fifo.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    path
}

const FIFO_CHECK: &str = "test -p /run/fifo && stat -c %a /run/fifo";

#[test]
fn a_fifo_of_a_layer_is_in_the_container_on_every_driver() {
    // podman's vfs driver (rootless) makes the FIFO too.
    let oracle = Env::bus_only();
    let podman = podman_support::Podman::new(oracle.dir.path(), "vfs");
    let tar = fifo_tar(&oracle);
    podman.run(&["import", "-q", tar.to_str().unwrap(), "demo/fifo"]);
    let out = podman.run(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo/fifo",
        "sh",
        "-c",
        FIFO_CHECK,
    ]);
    assert_eq!(stdout(&out), "640\n", "podman vfs: {}", stderr(&out));
    for driver in ["overlay", "vfs", "fuse"] {
        let mut env = Env::bus_only();
        env.start_daemon_with(&["--storage-driver", driver]);
        let tar = fifo_tar(&env);
        env.skiff_ok(&["import", tar.to_str().unwrap(), "demo/fifo"]);
        let out = env.skiff(&["run", "--rm", "demo/fifo", "sh", "-c", FIFO_CHECK]);
        assert_eq!(
            stdout(&out),
            "640\n",
            "{driver}: {}\n{}",
            stderr(&out),
            env.daemon_log()
        );
    }
}

fn daemon_env() -> Env {
    let mut env = Env::bus_only();
    env.start_daemon();
    env
}

fn storage(env: &Env) -> PathBuf {
    env.data().join("storage")
}

fn count(dir: &Path) -> usize {
    entries(dir).len()
}

#[test]
fn tag_rmi_and_prune_free_exactly_the_unshared_blobs_and_layers() {
    let env = Env::new(); // demo/busybox imported
    let s = storage(&env);
    let archive = multi_layer_archive(&env, "demo/multi:1");
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    // busybox: 1 layer + config + manifest; multi: 3 layers + config + manifest.
    assert_eq!(count(&s.join("layers")), 4);
    assert_eq!(count(&s.join("blobs/sha256")), 8);

    env.skiff_ok(&["tag", "demo/multi:1", "demo/multi:2", "other/name"]);
    let out = env.skiff_ok(&["images", "--filter", "reference=demo/multi*"]);
    assert_eq!(
        out.lines().filter(|l| l.contains("demo/multi")).count(),
        2,
        "{out}"
    );
    let out = env.skiff_ok(&["rmi", "demo/multi:2"]);
    assert_eq!(out.trim(), "Untagged: docker.io/demo/multi:2");
    assert_eq!(count(&s.join("layers")), 4, "a tag removal frees nothing");

    // In use by a container: refused, then forced.
    env.skiff_ok(&["create", "--name", "user1", "demo/busybox", "true"]);
    let out = env.skiff(&["rmi", "demo/busybox"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("user1"), "{}", stderr(&out));
    assert!(stderr(&out).contains("-f"), "{}", stderr(&out));
    let out = env.skiff_ok(&["rmi", "-f", "demo/busybox"]);
    assert!(out.contains("Deleted: sha256:"), "{out}");
    assert!(!stdout(&env.skiff(&["ps", "-a"])).contains("user1"));
    assert_eq!(count(&s.join("layers")), 3);
    assert_eq!(count(&s.join("blobs/sha256")), 5);

    env.skiff_ok(&["rmi", "other/name"]);
    env.skiff_ok(&["rmi", "demo/multi:1"]);
    assert!(env.eventually(30, || count(&s.join("layers")) == 0
        && count(&s.join("blobs/sha256")) == 0
        && count(&s.join("tmp")) == 0));
    assert!(env.skiff_ok(&["images", "-q"]).trim().is_empty());

    // prune: a dangling image goes, a tagged one stays unless -a.
    let tar = env.busybox_tar();
    env.skiff_ok(&["import", tar.to_str().unwrap(), "p:1"]);
    env.skiff_ok(&[
        "import",
        "--change",
        "ENV X=1",
        tar.to_str().unwrap(),
        "p:1",
    ]);
    let dangling = env.skiff_ok(&["images", "-q", "--filter", "dangling=true"]);
    assert_eq!(dangling.lines().count(), 1);
    let out = env.skiff_ok(&["image", "prune"]);
    assert!(
        out.contains(&format!("Deleted: sha256:{}", dangling.trim())),
        "{out}"
    );
    assert_eq!(count(&s.join("layers")), 1, "the layer is shared with p:1");
    let out = env.skiff_ok(&["image", "prune", "-a"]);
    assert!(out.contains("Untagged: docker.io/library/p:1"), "{out}");
    assert!(env.eventually(30, || count(&s.join("layers")) == 0));
}

#[test]
fn import_change_sets_the_config_containers_use() {
    let env = daemon_env();
    let tar = env.busybox_tar();
    env.skiff_ok(&[
        "import",
        "--change",
        r#"ENTRYPOINT ["/bin/sh", "-c"]"#,
        "--change",
        r#"CMD ["echo $GREETING from $(pwd) as $(id -u)"]"#,
        "-c",
        "ENV GREETING=\"hello there\"",
        "-c",
        "WORKDIR /tmp",
        "-c",
        "USER 1000",
        "-c",
        "LABEL org.example.k=v",
        "-c",
        "EXPOSE 8080",
        "-c",
        "STOPSIGNAL SIGINT",
        tar.to_str().unwrap(),
        "demo/changed",
    ]);
    let out = env.skiff_ok(&["run", "--rm", "demo/changed"]);
    assert_eq!(out.trim(), "hello there from /tmp as 1000");
    let v: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", "demo/changed"])).unwrap();
    let cfg = &v[0]["Config"];
    assert_eq!(cfg["Labels"]["org.example.k"], "v");
    assert_eq!(cfg["StopSignal"], "SIGINT");
    assert!(
        cfg["ExposedPorts"].to_string().contains("8080/tcp"),
        "{cfg}"
    );
    assert!(v[0]["RepoDigests"][0]
        .as_str()
        .unwrap()
        .starts_with("docker.io/demo/changed@sha256:"));
    let out = env.skiff(&["import", "-c", "RUN make", tar.to_str().unwrap(), "x"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("RUN is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_load_killed_midway_leaves_nothing_and_the_next_load_works() {
    let mut env = Env::bus_only();
    env.start_daemon();
    // A big incompressible layer makes the import take a while.
    let dir = env.dir.path();
    let mut noise = vec![0u8; 64 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for chunk in noise.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let big = dir.join("big.tar");
    let mut b = tar::Builder::new(std::fs::File::create(&big).unwrap());
    let mut h = tar::Header::new_gnu();
    h.set_size(noise.len() as u64);
    h.set_mode(0o644);
    b.append_data(&mut h, "noise", &noise[..]).unwrap();
    b.finish().unwrap();
    drop(noise);
    let archive = multi_layer_archive(&env, "demo/big:1");
    let tmp = storage(&env).join("tmp");
    let mut child = env
        .skiff_cmd(&["import", big.to_str().unwrap(), "demo/never"])
        .spawn()
        .unwrap();
    // Kill the daemon as soon as the import has started writing.
    assert!(env.eventually(60, || count(&tmp) > 0));
    env.kill_daemon();
    let _ = child.wait();
    env.start_daemon();
    let s = storage(&env);
    assert!(!env.skiff_ok(&["images"]).contains("demo/never"));
    assert!(env.eventually(30, || count(&s.join("tmp")) == 0
        && count(&s.join("layers")) == 0
        && count(&s.join("blobs/sha256")) == 0));
    let out = env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    assert!(out.contains("demo/big:1"), "{out}");
    env.skiff_ok(&["run", "--rm", "demo/big:1", "true"]);
}

#[test]
fn hostile_layers_never_touch_the_host() {
    use tar::EntryType::{Block, Char, Link, Regular, Symlink};
    let env = daemon_env();
    let victim_dir = env.dir.path().join("victim");
    std::fs::create_dir(&victim_dir).unwrap();
    let victim = victim_dir.join("file");
    std::fs::write(&victim, b"untouched").unwrap();
    let v = victim_dir.to_str().unwrap();
    let raw = |b: &mut tar::Builder<Vec<u8>>, kind, path: &str, link: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        let n = &mut h.as_old_mut().name;
        n.fill(0);
        n[..path.len()].copy_from_slice(path.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if !link.is_empty() {
            h.set_link_name_literal(link).unwrap();
        }
        h.set_cksum();
        b.append(&h, data).unwrap();
    };
    type Case = (&'static str, Box<dyn Fn(&mut tar::Builder<Vec<u8>>)>);
    let vf = format!("{v}/file");
    let cases: Vec<Case> = vec![
        (
            "dotdot",
            Box::new(move |b| raw(b, Regular, "../../../../../../../../tmp/x", "", b"x")),
        ),
        (
            "absolute",
            Box::new({
                let vf = vf.clone();
                move |b| raw(b, Regular, &vf, "", b"pwned")
            }),
        ),
        (
            "symlink-then-write",
            Box::new({
                let v = v.to_string();
                move |b| {
                    raw(b, Symlink, "out", &v, b"");
                    raw(b, Regular, "out/file", "", b"pwned");
                }
            }),
        ),
        (
            "hardlink-out",
            Box::new({
                let vf = vf.clone();
                move |b| raw(b, Link, "h", &vf, b"")
            }),
        ),
        (
            "symlink-whiteout",
            Box::new({
                let v = v.to_string();
                move |b| {
                    raw(b, Symlink, "w", &v, b"");
                    raw(b, Regular, "w/.wh.file", "", b"");
                }
            }),
        ),
    ];
    for (name, build) in cases {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let path = env.dir.path().join(format!("{name}.tar"));
        std::fs::write(&path, b.into_inner().unwrap()).unwrap();
        let out = env.skiff(&["import", path.to_str().unwrap(), &format!("evil/{name}")]);
        assert!(!out.status.success(), "{name} was imported");
        assert!(
            stderr(&out).contains("refusing layer entry"),
            "{name}: {}",
            stderr(&out)
        );
        assert_eq!(std::fs::read(&victim).unwrap(), b"untouched", "{name}");
        assert_eq!(entries(&victim_dir), ["file"], "{name}");
    }
    // Device nodes are skipped with a warning; setuid bits are kept inside.
    let mut b = tar::Builder::new(Vec::new());
    raw(&mut b, Char, "dev-null", "", b"");
    raw(&mut b, Block, "dev-sda", "", b"");
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o4755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h.set_size(1);
    b.append_data(&mut h, "suid", &b"x"[..]).unwrap();
    let path = env.dir.path().join("dev.tar");
    std::fs::write(&path, b.into_inner().unwrap()).unwrap();
    env.skiff_ok(&["import", path.to_str().unwrap(), "ok/devices"]);
    assert!(env.daemon_log().contains("skipping device node dev-null"));
    let layers = storage(&env).join("layers");
    let layer = layers.join(&entries(&layers)[0]).join("diff");
    assert!(!layer.join("dev-null").exists());
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(layer.join("suid"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7777, 0o4755);
}
