//! The test image: a busybox root filesystem tarball built from the host's static
//! busybox (busybox-static), with a few files the tests look for.

use std::path::Path;
use std::process::Command;

use super::require;

/// Extra entries for [`write_busybox_tar`]: (path, uid, gid, mode, content).
pub type Extra<'a> = (&'a str, u64, u64, u32, &'a [u8]);

/// Builds the busybox rootfs tar at `path`, with `extra` regular files.
pub fn write_busybox_tar(path: &Path, extra: &[Extra<'_>]) {
    let busybox = require("busybox");
    let file = std::fs::File::create(path).unwrap();
    let mut b = tar::Builder::new(file);
    let dir = |b: &mut tar::Builder<std::fs::File>, name: &str, uid: u64, mode: u32| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_uid(uid);
        h.set_gid(uid);
        h.set_mode(mode);
        h.set_size(0);
        h.set_mtime(1_700_000_000);
        b.append_data(&mut h, name, std::io::empty()).unwrap();
    };
    let file =
        |b: &mut tar::Builder<std::fs::File>, name: &str, uid: u64, mode: u32, data: &[u8]| {
            let mut h = tar::Header::new_gnu();
            h.set_entry_type(tar::EntryType::Regular);
            h.set_uid(uid);
            h.set_gid(uid);
            h.set_mode(mode);
            h.set_size(data.len() as u64);
            h.set_mtime(1_700_000_000);
            b.append_data(&mut h, name, data).unwrap();
        };
    for d in [
        "bin", "etc", "proc", "sys", "dev", "root", "home", "var", "usr",
    ] {
        dir(&mut b, d, 0, 0o755);
    }
    dir(&mut b, "tmp", 0, 0o1777);
    dir(&mut b, "home/user", 1000, 0o755);
    let data = std::fs::read(&busybox).unwrap();
    file(&mut b, "bin/busybox", 0, 0o755, &data);
    let list = Command::new(&busybox).arg("--list").output().unwrap();
    for applet in String::from_utf8_lossy(&list.stdout).lines() {
        if applet == "busybox" || applet.is_empty() {
            continue;
        }
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        h.set_mode(0o777);
        h.set_size(0);
        b.append_link(&mut h, format!("bin/{applet}"), "busybox")
            .unwrap();
    }
    file(&mut b, "etc/passwd", 0, 0o644, b"root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1000:user:/home/user:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n");
    file(
        &mut b,
        "etc/group",
        0,
        0o644,
        b"root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n",
    );
    file(&mut b, "home/user/owned", 1000, 0o644, b"mine\n");
    file(
        &mut b,
        "etc/not-executable",
        0,
        0o644,
        b"#!/bin/sh\necho no\n",
    );
    for (name, uid, gid, mode, data) in extra {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_uid(*uid);
        h.set_gid(*gid);
        h.set_mode(*mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.finish().unwrap();
}
