//! End to end: the FUSE rootfs mounts while the intermediate unshares the container's
//! other namespaces and forks init, which waits for the mount. A mount that fails is
//! reported as before, and the init forked meanwhile never runs the command nor stays.

mod common;

use common::{entries, stderr, Env};

#[test]
fn a_failed_fuse_mount_is_reported_and_init_never_runs_the_command() {
    let env = Env::new();
    let host = env.dir.path().join("out");
    std::fs::create_dir(&host).unwrap();
    let out = env.skiff(&[
        "create",
        "--name",
        "broken",
        "-v",
        &format!("{}:/out", host.display()),
        "demo/busybox",
        "touch",
        "/out/ran",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    // Without its writable layer the FUSE server cannot mount the rootfs.
    let dir = env.data().join("containers").join(&id);
    std::fs::remove_dir_all(dir.join("upper")).unwrap();
    let out = env.skiff(&["start", "broken"]);
    assert!(!out.status.success(), "the start succeeded");
    assert!(
        stderr(&out).contains("FUSE rootfs could not be mounted"),
        "{}",
        stderr(&out)
    );
    assert!(!host.join("ran").exists(), "init ran the command");
    // Nothing of the start is left: no monitor, FUSE server or init of this container.
    let bundle = env.runtime().join("containers").join(&id);
    let left = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout)
            .lines()
            .filter(|l| l.contains(bundle.to_str().unwrap()))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert!(
        env.eventually(10, || left().is_empty()),
        "left: {:?}",
        left()
    );
    let state = env.inspect("broken");
    assert_ne!(state[0]["State"]["Status"], "running", "{state}");
    assert!(env.skiff(&["rm", "broken"]).status.success());
    assert!(env.eventually(10, || entries(&env.data().join("containers")).is_empty()));
}
