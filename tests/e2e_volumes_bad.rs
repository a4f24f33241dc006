//! Mounts that must not work, end to end as the unprivileged test user: mount targets
//! through symlinks stay inside the rootfs on each storage driver, and bad mount flags
//! get docker's messages.

mod common;
mod volumes_support;

use std::path::PathBuf;

use common::{stderr, Env};
use volumes_support::{env_with, host_dir, image_with, ok};

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
