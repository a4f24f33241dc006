//! Bind mounts, named and anonymous volumes and tmpfs mounts, end to end as the
//! unprivileged test user, on each storage driver: what the container sees, what lands
//! on the host (owners included) (mounts that must not work: e2e_volumes_bad).

mod common;
mod volumes_support;

use std::os::unix::fs::MetadataExt;

use common::{first_subuid_range, stderr, stdout, Env};
use volumes_support::{env_with, host_dir, image_with, ok};

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
