//! End to end: a volume's first use copies the image's content into it (docker's
//! copy-up), and is recorded only once a container started with it mounted; a volume
//! first used by a `--userns keep-id` container is seeded with the owners that container
//! sees, and keeps those host ids (podman's rule): a default container sees them through
//! its own mapping.

mod common;

use std::os::unix::fs::MetadataExt;

use common::{first_subuid_range, stderr, stdout, Env};

fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    env
}

#[test]
fn a_start_that_fails_before_mounting_leaves_the_volume_to_be_seeded() {
    let env = env_with("fuse");
    let dir = env.data().join("bind-src");
    std::fs::create_dir(&dir).unwrap();
    let bind = format!("{}:/a", dir.display());
    env.skiff_ok(&[
        "create",
        "--name",
        "c1",
        "-v",
        &bind,
        "-v",
        "seedvol:/home/user",
        "demo/busybox",
        "cat",
        "/home/user/owned",
    ]);
    // The bind mount (before the volume) fails: the volume was neither mounted nor seeded.
    std::fs::remove_dir(&dir).unwrap();
    let out = env.skiff(&["start", "c1"]);
    assert!(!out.status.success(), "{}", stdout(&out));
    let data = env.data().join("volumes/seedvol/_data");
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 0);
    // Once the container can start, its first start seeds the volume.
    std::fs::create_dir(&dir).unwrap();
    assert_eq!(env.skiff_ok(&["start", "-a", "c1"]), "mine\n");
    assert_eq!(std::fs::read(data.join("owned")).unwrap(), b"mine\n");
    // And only that one: what a container removes from it stays removed.
    env.skiff_ok(&[
        "run",
        "--rm",
        "-v",
        "seedvol:/home/user",
        "demo/busybox",
        "rm",
        "/home/user/owned",
    ]);
    let out = env.skiff_ok(&[
        "run",
        "--rm",
        "-v",
        "seedvol:/home/user",
        "demo/busybox",
        "ls",
        "-A",
        "/home/user",
    ]);
    assert_eq!(out, "");
}

#[test]
fn keep_id_seeds_a_volume_with_the_owners_it_sees_on_every_driver() {
    let (sub_start, _) = first_subuid_range().unwrap();
    for driver in ["fuse", "overlay", "vfs"] {
        let env = env_with(driver);
        let look = "stat -c '%n %u:%g %a' /home/user /home/user/owned";
        let out = env.skiff_ok(&[
            "run",
            "--rm",
            "--userns",
            "keep-id",
            "-v",
            "kvol:/home/user",
            "demo/busybox",
            "sh",
            "-c",
            look,
        ]);
        // As the image has them, in the keep-id container.
        assert_eq!(
            out, "/home/user 1000:1000 755\n/home/user/owned 1000:1000 644\n",
            "{driver}"
        );
        // On disk: the host id of uid 1000 in the keep-id mapping (container ids below
        // yours are the first subordinate ids).
        let data = env.data().join("volumes/kvol/_data");
        for p in [data.clone(), data.join("owned")] {
            let md = std::fs::symlink_metadata(&p).unwrap();
            assert_eq!(md.uid(), sub_start + 1000, "{driver}: {}", p.display());
        }
        // The host ids are kept: a default container (uid 1 = the first subordinate id)
        // sees them one higher. Not seeded again.
        let out = env.skiff_ok(&[
            "run",
            "--rm",
            "-v",
            "kvol:/home/user",
            "demo/busybox",
            "sh",
            "-c",
            look,
        ]);
        assert_eq!(
            out, "/home/user 1001:1001 755\n/home/user/owned 1001:1001 644\n",
            "{driver}"
        );
    }
}
