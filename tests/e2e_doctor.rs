//! `skiff doctor` on this host, and with one prerequisite broken on purpose where the
//! test user can break it without root: in a user + mount namespace of its own, a file
//! bind-mounted over the real one, then `skiff doctor` run as the user again (a nested
//! user namespace mapping the user's uid back).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::{bin, require, stderr, stdout};

/// `skiff doctor --format json` with a private 0700 XDG_RUNTIME_DIR, after `setup`
/// (shell commands run as root of a private user + mount namespace; "" for none).
fn doctor(dir: &Path, setup: &str) -> (Output, serde_json::Value) {
    let rt = dir.join("rt");
    std::fs::create_dir_all(&rt).unwrap();
    std::fs::set_permissions(&rt, std::fs::Permissions::from_mode(0o700)).unwrap();
    let uid = nix::unistd::getuid().as_raw();
    let gid = nix::unistd::getgid().as_raw();
    let skiff = bin("skiff");
    let mut cmd = if setup.is_empty() {
        let mut c = Command::new(&skiff);
        c.args(["doctor", "--format", "json"]);
        c
    } else {
        let script = format!(
            "set -e; {setup}; exec unshare --map-user={uid} --map-group={gid} -U {} doctor --format json",
            skiff.display()
        );
        let mut c = Command::new(require("unshare"));
        c.args(["-rm", "sh", "-c", &script]);
        c
    };
    let out = cmd
        .env("XDG_RUNTIME_DIR", &rt)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}{}", stdout(&out), stderr(&out)));
    (out, v)
}

/// The check named `name`.
fn find<'a>(v: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    v.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {v}"))
}

#[test]
fn doctor_passes_on_a_good_host() {
    let dir = tempfile::tempdir().unwrap();
    let (out, v) = doctor(dir.path(), "");
    assert!(out.status.success(), "{v:#}");
    for name in [
        "subuid",
        "subgid",
        "newuidmap",
        "newgidmap",
        "userns",
        "fuse",
        "xdg_runtime_dir",
    ] {
        assert_eq!(find(&v, name)["status"], "ok", "{name}: {v:#}");
    }
    assert!(
        v.as_array().unwrap().iter().all(|c| c["status"] != "fail"),
        "{v:#}"
    );
    // The table form says the same.
    let table = Command::new(bin("skiff")).arg("doctor").output().unwrap();
    assert!(table.status.success());
    assert!(
        stdout(&table).contains("ok   newuidmap"),
        "{}",
        stdout(&table)
    );
}

#[test]
fn doctor_finds_a_newuidmap_that_is_not_setuid() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("newuidmap");
    std::fs::copy(require("newuidmap"), &copy).unwrap(); // the copy is not setuid
    let real = require("newuidmap");
    let (out, v) = doctor(
        dir.path(),
        &format!("mount --bind {} {}", copy.display(), real.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let c = find(&v, "newuidmap");
    assert_eq!(c["status"], "fail", "{v:#}");
    assert!(c["fix"].as_str().unwrap().contains("chmod u+s"), "{c}");
    assert_eq!(find(&v, "newgidmap")["status"], "ok", "{v:#}");
}

#[test]
fn doctor_finds_a_user_without_subordinate_ids() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("subuid");
    std::fs::write(&empty, "someone-else:100000:65536\n").unwrap();
    let (out, v) = doctor(
        dir.path(),
        &format!("mount --bind {} /etc/subuid", empty.display()),
    );
    assert_eq!(out.status.code(), Some(1), "{v:#}");
    let c = find(&v, "subuid");
    assert_eq!(c["status"], "fail", "{v:#}");
    assert!(
        c["fix"].as_str().unwrap().contains("usermod --add-subuids"),
        "{c}"
    );
}

#[test]
fn doctor_finds_an_unusable_dev_fuse() {
    let dir = tempfile::tempdir().unwrap();
    let closed = dir.path().join("fuse");
    std::fs::write(&closed, "").unwrap();
    std::fs::set_permissions(&closed, std::fs::Permissions::from_mode(0o000)).unwrap();
    let (out, v) = doctor(
        dir.path(),
        &format!("mount --bind {} /dev/fuse", closed.display()),
    );
    // Not blocking: the storage driver falls back to the kernel's overlay.
    assert!(out.status.success(), "{v:#}");
    let c = find(&v, "fuse");
    assert_eq!(c["status"], "warn", "{v:#}");
    assert!(c["fix"].as_str().unwrap().contains("/dev/fuse"), "{c}");
    assert!(
        find(&v, "storage_driver")["detail"]
            .as_str()
            .unwrap()
            .starts_with("overlay"),
        "{v:#}"
    );
}

/// A real user without subordinate ranges (no bind mount: the host's own files), run by
/// scripts/test.sh as root a second time, as `$SKIFF_NORANGES_USER` (skiffnoranges,
/// which it creates): `--ignored` runs it; as any other user it reports itself skipped.
#[test]
#[ignore = "scripts/test.sh runs it as a user without subuid/subgid ranges (skiffnoranges)"]
fn doctor_as_a_user_really_without_ranges() {
    let me = nix::unistd::User::from_uid(nix::unistd::getuid())
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_default();
    let wanted = std::env::var("SKIFF_NORANGES_USER").unwrap_or_default();
    if wanted.is_empty() || wanted != me {
        println!(
            "skiff-test: SKIPPED doctor_as_a_user_really_without_ranges: runs as the user \
             without ranges that scripts/test.sh makes (SKIFF_NORANGES_USER), not as {me:?}"
        );
        return;
    }
    for file in ["/etc/subuid", "/etc/subgid"] {
        let text = std::fs::read_to_string(file).unwrap_or_default();
        assert!(
            !text
                .lines()
                .any(|l| l.split(':').next() == Some(me.as_str())),
            "{me} has a range in {file}: not the user this test needs"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let (out, v) = doctor(dir.path(), "");
    assert_eq!(out.status.code(), Some(1), "blocking: non-zero exit: {v:#}");
    for name in ["subuid", "subgid"] {
        let c = find(&v, name);
        assert_eq!(c["status"], "fail", "{v:#}");
        let fix = c["fix"].as_str().unwrap();
        assert!(
            fix.contains("sudo usermod --add-sub") && fix.contains(&me),
            "the fix names the command and the user: {c}"
        );
    }
    // The table says the same, and that containers cannot run.
    let table = Command::new(bin("skiff"))
        .arg("doctor")
        .env("XDG_RUNTIME_DIR", dir.path().join("rt"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(table.status.code(), Some(1));
    assert!(
        stdout(&table).contains("Containers cannot run until every FAIL is fixed"),
        "{}",
        stdout(&table)
    );
}
