//! End to end: `--userns keep-id`: your own uid and gid inside, the image's owners as in
//! any container, the layers shared (FUSE) or copied with the keep-id owners (vfs).

mod common;
mod users_support;

use common::{stderr, stdout};
use users_support::{env, env_with};

/// Files under `dir` (recursively) with their sizes, owners, modes and inode numbers.
fn tree(dir: &std::path::Path) -> Vec<String> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let md = e.path().symlink_metadata().unwrap();
            out.push(format!(
                "{} {} {}:{} {:o} {}",
                e.path().display(),
                md.len(),
                md.uid(),
                md.gid(),
                md.mode(),
                md.ino()
            ));
            if md.is_dir() {
                stack.push(e.path());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn keep_id_keeps_your_ids_and_shares_the_layers() {
    let env = env();
    let driver = stdout(&env.skiff(&["info"]));
    assert!(
        driver.contains("fuse"),
        "the FUSE driver is needed here: {driver}"
    );
    let me = nix::unistd::getuid().as_raw();
    let my_gid = nix::unistd::getgid().as_raw();
    let layers = env.data().join("storage/layers");
    let before = tree(&layers);
    assert!(!before.is_empty(), "no layers under {}", layers.display());
    // You inside, the image's owners as in any container.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "demo/users",
        "sh",
        "-c",
        "id -u; id -g; stat -c %u:%g /bin/busybox /home/user/owned; \
         touch /tmp/mine && stat -c %u:%g /tmp/mine",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("{me}\n{my_gid}\n0:0\n1000:1000\n{me}:{my_gid}\n")
    );
    // Root inside a keep-id container is a subordinate id; what it chowns is stored
    // with the default mapping's owner, so a default container sees the same.
    let out = env.skiff(&[
        "run",
        "--name",
        "kid",
        "--userns",
        "keep-id",
        "-u",
        "0",
        "demo/users",
        "sh",
        "-c",
        "touch /x && chown 1000:1600 /x && stat -c %u:%g /x; cat /proc/self/uid_map",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = stdout(&out);
    assert!(so.starts_with("1000:1600\n"), "{so}");
    assert!(
        so.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>()
                == [&me.to_string(), &me.to_string(), "1"]),
        "{so}"
    );
    let id = env.inspect("kid")["Id"].as_str().unwrap().to_string();
    let upper_x = env.data().join("containers").join(&id).join("upper/x");
    let md = std::os::unix::fs::MetadataExt::uid(&std::fs::symlink_metadata(&upper_x).unwrap());
    let (sub_start, _) = common::first_subuid_range().unwrap();
    assert_eq!(md, sub_start + 999, "{}", upper_x.display());
    // Nothing of the image was copied or chowned for the other mapping: the same files
    // (inode numbers too) in the store, and the container's own directory holds what it
    // wrote, no tree of the image.
    assert_eq!(tree(&layers), before);
    let own = tree(&env.data().join("containers").join(&id));
    assert!(
        own.iter().any(|l| l.contains("/upper/x ")),
        "the write is not in the container's dir: {own:#?}"
    );
    assert!(
        !own.iter()
            .any(|l| l.contains("/bin/busybox ") || l.contains("/etc/passwd ")),
        "a copy of the image under the container's dir: {own:#?}"
    );
    // A default container from the same layers sees the same owners.
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/users",
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
        "/home/user/owned",
    ]);
    assert_eq!(stdout(&out), "0:0\n1000:1000\n", "{}", stderr(&out));
    // An exec joins the mapping: you by default.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "kid2",
        "--userns",
        "keep-id",
        "demo/users",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["exec", "kid2", "sh", "-c", "id -u; stat -c %u /bin/busybox"]);
    assert_eq!(stdout(&out), format!("{me}\n0\n"), "{}", stderr(&out));
    // A mode the API does not know.
    let out = env.skiff(&["run", "--rm", "--userns", "auto", "demo/users", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("\"auto\" is not supported"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn keep_id_on_vfs_copies_with_the_keep_id_owners() {
    let env = env_with(&["--storage-driver", "vfs"]);
    let me = nix::unistd::getuid().as_raw();
    let my_gid = nix::unistd::getgid().as_raw();
    let layers = env.data().join("storage/layers");
    let before = tree(&layers);
    // A host directory of the test user's, bind-mounted.
    let src = env.data().join("src");
    std::fs::create_dir(&src).unwrap();
    let bind = format!("{}:/src", src.display());
    let out = env.skiff(&[
        "run",
        "--rm",
        "--userns",
        "keep-id",
        "-v",
        &bind,
        "demo/users",
        "sh",
        "-c",
        "id -u; id -g; stat -c %u:%g / /bin/busybox /home/user/owned /src; \
         touch /src/built && stat -c %u:%g /src/built",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The copy shows the image's owners; the user's directory and file are the user's.
    assert_eq!(
        stdout(&out),
        format!("{me}\n{my_gid}\n0:0\n0:0\n1000:1000\n{me}:{my_gid}\n{me}:{my_gid}\n")
    );
    let md = std::fs::symlink_metadata(src.join("built")).unwrap();
    use std::os::unix::fs::MetadataExt;
    assert_eq!((md.uid(), md.gid()), (me, my_gid));
    // The layers were only read, and a default container still sees the same owners.
    assert_eq!(tree(&layers), before);
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/users",
        "stat",
        "-c",
        "%u:%g",
        "/bin/busybox",
        "/home/user/owned",
    ]);
    assert_eq!(stdout(&out), "0:0\n1000:1000\n", "{}", stderr(&out));
    // `info` says which driver supports keep-id and at what cost (the overlay driver's
    // copies: tests/e2e_keepid_overlay.rs).
    let info: serde_json::Value = serde_json::from_str(&stdout(&env.skiff(&["info"]))).unwrap();
    let k = &info["userns_keep_id"];
    assert!(
        k["fuse"]
            .as_str()
            .unwrap()
            .starts_with("supported, no cost"),
        "{info}"
    );
    assert!(
        k["vfs"].as_str().unwrap().starts_with("supported:"),
        "{info}"
    );
}
