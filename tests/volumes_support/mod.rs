//! What the volume tests share: a daemon on a storage driver with the busybox image,
//! host directories, images with symlinks, and a command that must succeed.
#![allow(dead_code)]

use std::path::PathBuf;

use crate::common::{stderr, stdout, Env};

/// A daemon with `driver` and the busybox image.
pub fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
    env
}

/// A host directory (with a marker file) the test user owns.
pub fn host_dir(env: &Env, name: &str) -> PathBuf {
    let d = env.dir.path().join(name);
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("marker"), b"from the host\n").unwrap();
    d
}

pub fn ok(out: &std::process::Output) -> String {
    assert!(out.status.success(), "{}{}", stdout(out), stderr(out));
    stdout(out)
}

/// Imports the busybox rootfs plus `symlinks` (path, target) as `name`, with `changes`.
pub fn image_with(env: &Env, name: &str, symlinks: &[(&str, &str)], changes: &[&str]) {
    let base = env
        .dir
        .path()
        .join(format!("{}-base.tar", name.replace('/', "_")));
    crate::common::write_busybox_tar(&base, &[]);
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
