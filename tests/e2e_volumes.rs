//! Bind mounts, named and anonymous volumes and tmpfs mounts, end to end as the
//! unprivileged test user, on each storage driver: what the container sees, what lands
//! on the host (owners included), and docker's messages for bad input.

mod common;

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use common::{first_subuid_range, stderr, stdout, Env};

/// A daemon with `driver` and the busybox image.
fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    env
}

/// A host directory (with a marker file) the test user owns.
fn host_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.dir.path().join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("marker"), b"from the host\n").unwrap();
    d
}

fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

/// Imports the busybox rootfs plus `symlinks` (path, target) as `name`, with `changes`.
fn image_with(env: &Env, name: &str, symlinks: &[(&str, &str)], changes: &[&str]) {
    let base = env
        .dir
        .path()
        .join(format!("{}-base.tar", name.replace('/', "_")));
    common::write_busybox_tar(&base, &[]);
    let path = env
        .dir
        .path()
        .join(format!("{}.tar", name.replace('/', "_")));
    let mut b = tar::Builder::new(std::fs::File::create(&path).unwrap());
    let mut src = tar::Archive::new(std::fs::File::open(&base).unwrap());
    for e in src.entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let p = e.path().unwrap().into_owned();
        if h.entry_type() == tar::EntryType::Symlink {
            let target = e.link_name().unwrap().unwrap().into_owned();
            b.append_link(&mut h, &p, &target).unwrap();
        } else {
            b.append_data(&mut h, &p, &mut e).unwrap();
        }
    }
    for (p, target) in symlinks {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_mode(0o777);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_size(0);
        b.append_link(&mut h, p, target).unwrap();
    }
    b.finish().unwrap();
    drop(b);
    let mut args = vec!["import", path.to_str().unwrap(), name];
    for c in changes {
        args.push("--change");
        args.push(c);
    }
    ok(&env.skiff(&args));
}

fn bind_and_volume_work(driver: &str) {
    let env = env_with(driver);
    let dir = host_dir(&env, "src");
    let d = dir.display().to_string();
    // Read and write through a bind mount: the file lands on the host, owned by the test
    // user (the container's root).
    let out = env.skiff(&[
        "run",
        "--rm",
        "-v",
        &format!("{d}:/src:z"),
        "demo/busybox",
        "sh",
        "-c",
        "cat /src/marker && echo written > /src/out",
    ]);
    assert_eq!(ok(&out), "from the host\n");
    assert_eq!(
        std::fs::read_to_string(dir.join("out")).unwrap(),
        "written\n"
    );
    let me = nix::unistd::getuid().as_raw();
    assert_eq!(std::fs::metadata(dir.join("out")).unwrap().uid(), me);
    // :ro gives EROFS, and nothing is written.
    let out = env.skiff(&[
        "run",
        "--rm",
        "-v",
        &format!("{d}:/src:ro"),
        "demo/busybox",
        "sh",
        "-c",
        "cat /src/marker; touch /src/nope",
    ]);
    assert!(!out.status.success());
    assert!(stdout(&out).contains("from the host"), "{}", stdout(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    assert!(!dir.join("nope").exists());
    // A single file, read-only, via --mount.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--mount",
        &format!("type=bind,source={d}/marker,target=/etc/m,readonly"),
        "demo/busybox",
        "sh",
        "-c",
        "cat /etc/m; echo x >> /etc/m",
    ]);
    assert!(stdout(&out).contains("from the host"));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    // A named volume: first use copies the image's content (with owners), the data
    // outlives the container and the next one sees it.
    ok(&env.skiff(&["volume", "create", "keep"]));
    let out = env.skiff(&[
        "run",
        "--name",
        "first",
        "-v",
        "keep:/home/user",
        "demo/busybox",
        "sh",
        "-c",
        "cat /home/user/owned && echo later > /home/user/new && stat -c %u /home/user",
    ]);
    assert_eq!(ok(&out), "mine\n1000\n");
    ok(&env.skiff(&["rm", "first"]));
    let out = env.skiff(&[
        "run",
        "--rm",
        "-v",
        "keep:/data",
        "demo/busybox",
        "cat",
        "/data/new",
        "/data/owned",
    ]);
    assert_eq!(ok(&out), "later\nmine\n");
    let data = env.data().join("volumes/keep/_data");
    assert_eq!(
        std::fs::read_to_string(data.join("new")).unwrap(),
        "later\n"
    );
    if let Some((start, _)) = first_subuid_range() {
        // Container uid 1000 is the 1000th subordinate id on the host.
        assert_eq!(
            std::fs::metadata(data.join("owned")).unwrap().uid(),
            start + 999
        );
    }
}

#[test]
fn bind_mounts_and_volumes_on_fuse() {
    bind_and_volume_work("fuse");
}

#[test]
fn bind_mounts_and_volumes_on_overlay() {
    bind_and_volume_work("overlay");
}

#[test]
fn bind_mounts_and_volumes_on_vfs() {
    bind_and_volume_work("vfs");
}

#[test]
fn nocopy_anonymous_volumes_and_rm_v() {
    let env = Env::new();
    // volume-nocopy: a new volume stays empty, and a new volume is owned by the
    // container's root (the test user on the host).
    let out = env.skiff(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,source=empty,target=/home/user,volume-nocopy",
        "demo/busybox",
        "sh",
        "-c",
        "ls -A /home/user | wc -l; stat -c %u /home/user",
    ]);
    assert_eq!(ok(&out), "0\n0\n");
    let me = nix::unistd::getuid().as_raw();
    assert_eq!(
        std::fs::metadata(env.data().join("volumes/empty/_data"))
            .unwrap()
            .uid(),
        me
    );
    // Anonymous volumes: `-v /path` and the image's VOLUME; inspect shows them.
    image_with(&env, "demo/withvol", &[], &["VOLUME /logs"]);
    ok(&env.skiff(&[
        "create",
        "--name",
        "anon",
        "-v",
        "/scratch",
        "demo/withvol",
        "true",
    ]));
    let v = env.inspect("anon");
    let mounts = v["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 2, "{v}");
    let names: Vec<String> = mounts
        .iter()
        .map(|m| {
            assert_eq!(m["Type"], "volume");
            m["Name"].as_str().unwrap().to_string()
        })
        .collect();
    let dests: Vec<&str> = mounts
        .iter()
        .map(|m| m["Destination"].as_str().unwrap())
        .collect();
    assert_eq!(dests, ["/scratch", "/logs"]);
    assert_eq!(v["HostConfig"]["Binds"][0], "/scratch");
    let listed = ok(&env.skiff(&["volume", "ls", "-q"]));
    for n in &names {
        assert!(listed.contains(n.as_str()), "{listed}");
    }
    // rm without -v keeps them; prune (anonymous, unused) would remove them.
    ok(&env.skiff(&[
        "create",
        "--name",
        "anon2",
        "-v",
        "/scratch",
        "demo/busybox",
        "true",
    ]));
    let anon2 = env.inspect("anon2")["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_string();
    ok(&env.skiff(&["rm", "anon2"]));
    assert!(env.data().join("volumes").join(&anon2).exists());
    // rm -v removes the container's anonymous volumes.
    ok(&env.skiff(&["rm", "-v", "anon"]));
    for n in &names {
        assert!(
            !env.data().join("volumes").join(n).exists(),
            "{n} left behind"
        );
    }
    // --rm removes them too.
    ok(&env.skiff(&[
        "run",
        "--rm",
        "--name",
        "gone",
        "-v",
        "/tmpvol",
        "demo/busybox",
        "true",
    ]));
    assert!(
        env.eventually(10, || env.skiff(&["inspect", "gone"]).status.code()
            != Some(0))
    );
    let left: Vec<String> = ok(&env.skiff(&["volume", "ls", "-q"]))
        .lines()
        .map(str::to_string)
        .collect();
    assert!(
        env.eventually(10, || {
            let now = ok(&env.skiff(&["volume", "ls", "-q"]));
            now.lines().count() == 2 // "empty" and anon2's
        }),
        "{left:?}"
    );
    // prune removes unused anonymous volumes only; -a the named ones too.
    let out = ok(&env.skiff(&["volume", "prune", "-f"]));
    assert!(out.contains(&anon2), "{out}");
    assert!(env.data().join("volumes/empty").exists());
    ok(&env.skiff(&["volume", "prune", "-a"]));
    assert_eq!(ok(&env.skiff(&["volume", "ls", "-q"])), "");
}

#[test]
fn volume_in_use_labels_filters_and_dbus() {
    let env = Env::new();
    ok(&env.skiff(&["volume", "create", "-l", "env=prod", "p1"]));
    ok(&env.skiff(&["volume", "create", "p2"]));
    assert_eq!(
        ok(&env.skiff(&["volume", "ls", "-q", "--filter", "label=env=prod"])),
        "p1\n"
    );
    assert_eq!(
        ok(&env.skiff(&["volume", "ls", "-q", "--filter", "label!=env"])),
        "p2\n"
    );
    let v: serde_json::Value =
        serde_json::from_str(&ok(&env.skiff(&["volume", "inspect", "p1"]))).unwrap();
    assert_eq!(v[0]["Labels"]["env"], "prod");
    assert_eq!(v[0]["Driver"], "local");
    assert!(v[0]["Mountpoint"]
        .as_str()
        .unwrap()
        .ends_with("volumes/p1/_data"));
    // In use (even by a stopped container): refused, naming the container.
    ok(&env.skiff(&[
        "create",
        "--name",
        "user1",
        "-v",
        "p1:/d",
        "demo/busybox",
        "true",
    ]));
    let out = env.skiff(&["volume", "rm", "p1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("volume is in use by container(s) user1"),
        "{}",
        stderr(&out)
    );
    // -f does not change that (docker's -f only ignores missing volumes).
    assert!(!env.skiff(&["volume", "rm", "-f", "p1"]).status.success());
    let call = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Volumes.RemoveVolume",
        &["p1", "0"],
    );
    assert!(
        stderr(&call).contains("org.skiff.Error.VolumeInUse"),
        "{}",
        stderr(&call)
    );
    assert_eq!(
        ok(&env.skiff(&["volume", "ls", "-q", "--filter", "dangling=true"])),
        "p2\n"
    );
    // prune -a with a label filter leaves the rest; the volume in use stays.
    ok(&env.skiff(&["volume", "prune", "-a", "--filter", "label=env=prod"]));
    assert!(env.data().join("volumes/p1").exists());
    assert!(env.data().join("volumes/p2").exists());
    ok(&env.skiff(&["rm", "user1"]));
    ok(&env.skiff(&["volume", "rm", "p1"]));
    assert!(!env.data().join("volumes/p1").exists());
    // Missing volumes: an error without -f, none with it.
    let out = env.skiff(&["volume", "rm", "p1"]);
    assert!(
        stderr(&out).contains("no such volume: p1"),
        "{}",
        stderr(&out)
    );
    ok(&env.skiff(&["volume", "rm", "-f", "p1"]));
    // The volume's own object.
    let call = env.dbus_call(
        "/org/skiff/skiff1/volume/p2",
        "org.skiff.skiff1.Volume.Inspect",
        &[],
    );
    assert!(
        stdout(&call).contains("\\\"Name\\\": \\\"p2\\\"") || stdout(&call).contains("p2"),
        "{}",
        stdout(&call)
    );
}

#[test]
fn tmpfs_size_limit_gives_enospc() {
    let env = Env::new();
    for flags in [
        vec!["--tmpfs", "/t:size=1m,mode=1777"],
        vec!["--mount", "type=tmpfs,target=/t,tmpfs-size=1m"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter());
        args.extend([
            "demo/busybox",
            "sh",
            "-c",
            "dd if=/dev/zero of=/t/half bs=1024 count=512 2>/dev/null && echo fits; \
             dd if=/dev/zero of=/t/big bs=1024 count=2048",
        ]);
        let out = env.skiff(&args);
        assert!(stdout(&out).contains("fits"), "{}", stderr(&out));
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("No space left on device"),
            "{}",
            stderr(&out)
        );
    }
    let v = {
        ok(&env.skiff(&[
            "create",
            "--name",
            "tm",
            "--tmpfs",
            "/run:size=16m",
            "demo/busybox",
            "true",
        ]));
        env.inspect("tm")
    };
    assert_eq!(v["HostConfig"]["Tmpfs"]["/run"], "size=16m");
    assert_eq!(v["Mounts"][0]["Type"], "tmpfs");
}

/// An image whose mount targets are symlinks out (`/slash -> /`, `/up -> ../../..`):
/// the mounts land inside the rootfs, and nothing appears outside it on the host.
fn symlinked_targets_stay_inside(driver: &str) {
    let env = env_with(driver);
    image_with(
        &env,
        "demo/evil",
        &[("slash", "/"), ("up", "../../..")],
        &[],
    );
    let dir = host_dir(&env, "h");
    let d = dir.display().to_string();
    let out = env.skiff(&[
        "run",
        "--rm",
        "-v",
        &format!("{d}:/up/escape-up"),
        "-v",
        &format!("{d}:/slash/escape-slash"),
        "--tmpfs",
        "/up/escape-tmp",
        "demo/evil",
        "sh",
        "-c",
        "cat /escape-up/marker /escape-slash/marker && touch /escape-tmp/t && echo ok",
    ]);
    assert_eq!(ok(&out), "from the host\nfrom the host\nok\n");
    // Resolved naively, /up/escape-up is <rootfs>/../../../escape-up: the data dir.
    let data = env.data();
    for outside in [
        data.join("escape-up"),
        data.join("escape-tmp"),
        data.join("containers/escape-up"),
        PathBuf::from("/escape-slash"),
    ] {
        assert!(
            !outside.exists(),
            "{} was created outside the rootfs",
            outside.display()
        );
    }
    // A volume's copy-up through such a symlink copies from inside the rootfs: its
    // /etc, and nothing of the host's data directory (which has `containers`).
    ok(&env.skiff(&[
        "run",
        "--rm",
        "-v",
        "seed:/up/etc",
        "-v",
        "seed2:/up/containers",
        "demo/evil",
        "true",
    ]));
    let seeded = common::entries(&data.join("volumes/seed/_data"));
    assert!(seeded.contains(&"passwd".to_string()), "{seeded:?}");
    let seeded2 = common::entries(&data.join("volumes/seed2/_data"));
    assert!(
        seeded2.is_empty(),
        "the host's containers were copied: {seeded2:?}"
    );
}

#[test]
fn symlinked_mount_targets_stay_inside_the_rootfs_fuse() {
    symlinked_targets_stay_inside("fuse");
}

#[test]
fn symlinked_mount_targets_stay_inside_the_rootfs_overlay() {
    symlinked_targets_stay_inside("overlay");
}

#[test]
fn symlinked_mount_targets_stay_inside_the_rootfs_vfs() {
    symlinked_targets_stay_inside("vfs");
}

#[test]
fn bad_mounts_get_docker_messages() {
    let env = Env::new();
    let cases: &[(&[&str], &str)] = &[
        (
            &["-v", "./rel:/x"],
            "\"./rel\" includes invalid characters for a local volume name",
        ),
        (
            &["-v", "/does/not/exist:/x"],
            "bind source path does not exist: /does/not/exist",
        ),
        (&["-v", "vol:rel"], "\"rel\" mount path must be absolute"),
        (&["-v", "vol:/"], "destination can't be '/'"),
        (&["-v", "vol:/x:bogus"], "invalid mode: bogus"),
        (
            &["-v", "a:b:c:d"],
            "invalid volume specification: 'a:b:c:d'",
        ),
        (&["-v", "a:/d", "-v", "b:/d"], "Duplicate mount point: /d"),
        (
            &["--mount", "type=nfs,target=/x"],
            "mount type unknown: \"nfs\"",
        ),
        (
            &["--mount", "type=bind,source=rel,target=/x"],
            "\"rel\" mount path must be absolute",
        ),
        (
            &["--mount", "type=bind,source=/does/not/exist,target=/x"],
            "bind source path does not exist",
        ),
        (
            &["--mount", "type=tmpfs,source=x,target=/x"],
            "field Source must not be specified",
        ),
        (
            &["--mount", "type=bind,source=/tmp,target=/x,volume-nocopy"],
            "field VolumeOptions must not be specified",
        ),
        (
            &[
                "--mount",
                "type=bind,source=/tmp,target=/x,bind-propagation=weird",
            ],
            "invalid propagation mode: weird",
        ),
        (&["--mount", "source=v"], "target is required"),
        (
            &["--mount", "type=volume,target=/x,frob=1"],
            "unknown field \"frob\"",
        ),
        (
            &["--mount", "type=tmpfs,target=/x,tmpfs-size=lots"],
            "tmpfs-size \"lots\" is not a size",
        ),
        (&["--tmpfs", "/t:size=lots"], "size \"lots\" is not a size"),
        (&["--tmpfs", "/t:frob"], "unknown tmpfs option \"frob\""),
        (&["--tmpfs", "rel"], "mount path must be absolute"),
    ];
    for (flags, needle) in cases {
        let mut args = vec!["run", "--rm"];
        args.extend(flags.iter());
        args.extend(["demo/busybox", "true"]);
        let out = env.skiff(&args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(needle), "{flags:?}: {}", stderr(&out));
    }
    // Nothing was created by the refused runs.
    assert_eq!(ok(&env.skiff(&["ps", "-a", "-q"])), "");
    assert_eq!(ok(&env.skiff(&["volume", "ls", "-q"])), "");
    for (args, needle) in [
        (
            vec!["volume", "create", "../x"],
            "includes invalid characters for a local volume name",
        ),
        (vec!["volume", "rm", "nosuch"], "no such volume: nosuch"),
        (
            vec!["volume", "inspect", "nosuch"],
            "no such volume: nosuch",
        ),
        (
            vec!["volume", "ls", "--filter", "bogus=1"],
            "invalid filter \"bogus=1\"",
        ),
        (
            vec!["volume", "prune", "--filter", "dangling=true"],
            "invalid filter \"dangling=true\"",
        ),
    ] {
        let out = env.skiff(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
    // A create refused for its name leaves no anonymous volume behind.
    ok(&env.skiff(&["create", "--name", "taken", "demo/busybox", "true"]));
    let out = env.skiff(&[
        "create",
        "--name",
        "taken",
        "-v",
        "/anon",
        "demo/busybox",
        "true",
    ]);
    assert!(stderr(&out).contains("already in use"), "{}", stderr(&out));
    assert_eq!(ok(&env.skiff(&["volume", "ls", "-q"])), "");
}
