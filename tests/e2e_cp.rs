//! End to end: `skiff cp` — host to container and back, running and stopped containers
//! on every storage driver, tar streams on stdin/stdout, docker's slash and directory
//! rules, hostile archives and symlinks that lead out of the container.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::{Output, Stdio};

use common::{stderr, stdout, Env};

/// Runs skiff, expects it to fail with a message containing `want`.
fn fails(env: &Env, args: &[&str], want: &str) -> String {
    let out = env.skiff(args);
    let err = stderr(&out);
    assert!(!out.status.success(), "skiff {args:?} succeeded");
    assert!(err.contains(want), "skiff {args:?}: want {want:?} in {err}");
    err
}

fn with_stdin(env: &Env, args: &[&str], input: &[u8]) -> Output {
    env.skiff_stdin(args, input)
}

fn running(env: &Env, name: &str) {
    env.skiff_ok(&["run", "-d", "--name", name, "demo/busybox", "sleep", "1000"]);
    assert!(env.eventually(10, || env.inspect(name)["State"]["Status"] == "running"));
}

fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let tar = env.busybox_tar();
    env.skiff_ok(&["import", tar.to_str().unwrap(), "demo/busybox"]);
    env
}

/// A host tree: `d/f` ("file f"), `d/sub/g` ("file g"), and `one` ("one\n").
fn host_tree(env: &Env) -> std::path::PathBuf {
    let h = env.dir.path().join("host");
    fs::create_dir_all(h.join("d/sub")).unwrap();
    fs::write(h.join("d/f"), "file f").unwrap();
    fs::write(h.join("d/sub/g"), "file g").unwrap();
    fs::write(h.join("one"), "one\n").unwrap();
    h
}

/// The host file `host/one` of [`host_tree`].
fn h_one(env: &Env) -> std::path::PathBuf {
    env.dir.path().join("host/one")
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// Copies in and out of `box` (running or not) and checks the results from the host.
fn round_trip(env: &Env, name: &str) {
    let h = host_tree(env);
    let c = |path: &str| format!("{name}:{path}");
    env.skiff_ok(&["cp", p(&h.join("one")), &c("/tmp/")]);
    env.skiff_ok(&["cp", p(&h.join("d")), &c("/srv")]);
    env.skiff_ok(&["cp", p(&h.join("d")), &c("/tmp")]);
    // Out again: a file, a directory into a new name, a directory's contents.
    let out = env.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    env.skiff_ok(&["cp", &c("/tmp/one"), p(&out.join("one"))]);
    assert_eq!(fs::read_to_string(out.join("one")).unwrap(), "one\n");
    env.skiff_ok(&["cp", &c("/srv"), p(&out.join("srv"))]);
    assert_eq!(fs::read_to_string(out.join("srv/sub/g")).unwrap(), "file g");
    env.skiff_ok(&["cp", &c("/tmp/d/."), p(&out)]);
    assert_eq!(fs::read_to_string(out.join("f")).unwrap(), "file f");
    env.skiff_ok(&["cp", &c("/tmp/d"), p(&out)]);
    assert_eq!(fs::read_to_string(out.join("d/sub/g")).unwrap(), "file g");
    // Copied out: the calling user's.
    let me = nix::unistd::getuid().as_raw();
    for f in ["one", "srv", "srv/sub/g", "f", "d/f"] {
        assert_eq!(fs::metadata(out.join(f)).unwrap().uid(), me, "{f}");
    }
}

#[test]
fn cp_both_ways_with_a_running_container() {
    let env = Env::new();
    running(&env, "box");
    round_trip(&env, "box");
    // Inside: in place, owned by the container's root.
    let o = env.skiff_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/one /srv/f /tmp/d/sub/g; stat -c '%u:%g %n' /tmp/one /srv /srv/sub/g",
    ]);
    assert_eq!(
        o, "one\nfile ffile g0:0 /tmp/one\n0:0 /srv\n0:0 /srv/sub/g\n",
        "{o}"
    );
    // -a keeps the numeric owners (ours: a subordinate id inside).
    let me = nix::unistd::getuid().as_raw();
    env.skiff_ok(&["cp", "-a", p(&h_one(&env)), "box:/tmp/kept"]);
    let o = env.skiff_ok(&["exec", "box", "stat", "-c", "%u", "/tmp/kept"]);
    assert_eq!(o.trim(), me.to_string());
    // The whole root: its files, and /proc and /sys as empty mount points.
    let root = env.dir.path().join("rootcopy");
    env.skiff_ok(&["cp", "box:/", p(&root)]);
    assert!(fs::read_to_string(root.join("etc/passwd"))
        .unwrap()
        .contains("user:x:1000"));
    assert_eq!(fs::read_to_string(root.join("tmp/one")).unwrap(), "one\n");
    for empty in ["proc", "sys"] {
        assert_eq!(
            fs::read_dir(root.join(empty)).unwrap().count(),
            0,
            "{empty}"
        );
    }
    // What the container writes comes out.
    env.skiff_ok(&["exec", "box", "sh", "-c", "echo made > /made"]);
    let dest = env.dir.path().join("made");
    env.skiff_ok(&["cp", "box:/made", p(&dest)]);
    assert_eq!(fs::read_to_string(&dest).unwrap(), "made\n");
}

#[test]
fn cp_with_stopped_containers_on_every_driver() {
    for driver in ["fuse", "overlay", "vfs"] {
        let env = env_with(driver);
        // Never started.
        env.skiff_ok(&[
            "create",
            "--name",
            "cc",
            "demo/busybox",
            "sh",
            "-c",
            "cat /tmp/one /srv/sub/g; echo ran > /ran",
        ]);
        round_trip(&env, "cc");
        let o = env.skiff_ok(&["start", "-a", "cc"]);
        assert_eq!(o, "one\nfile g", "{driver}: {o}");
        // Exited: what it wrote is there.
        let dest = env.dir.path().join("ran");
        env.skiff_ok(&["cp", "cc:/ran", p(&dest)]);
        assert_eq!(fs::read_to_string(&dest).unwrap(), "ran\n", "{driver}");
        // An image file replaced in a stopped container: the copy wins in the next run.
        let passwd = env.dir.path().join("passwd");
        fs::write(&passwd, "root:x:0:0::/:/bin/sh\n").unwrap();
        env.skiff_ok(&["cp", p(&passwd), "cc:/etc/passwd"]);
        let o = env.skiff_ok(&["run", "--rm", "demo/busybox", "cat", "/etc/passwd"]);
        assert!(
            o.contains("user:x:1000"),
            "{driver}: the image changed: {o}"
        );
        let back = env.dir.path().join("passwd.back");
        env.skiff_ok(&["cp", "cc:/etc/passwd", p(&back)]);
        assert_eq!(
            fs::read_to_string(&back).unwrap(),
            "root:x:0:0::/:/bin/sh\n",
            "{driver}"
        );
    }
}

#[test]
fn cp_tar_streams_on_stdin_and_stdout() {
    let env = Env::new();
    running(&env, "box");
    // CTR:PATH - writes a tar of PATH.
    let out = env
        .skiff_cmd(&["cp", "box:/etc/hostname", "-"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let mut names = Vec::new();
    let mut ar = tar::Archive::new(&out.stdout[..]);
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        names.push(e.path().unwrap().display().to_string());
        let mut s = String::new();
        std::io::Read::read_to_string(&mut e, &mut s).unwrap();
        let id = env.inspect("box")["Id"].as_str().unwrap().to_string();
        assert_eq!(s.trim(), &id[..12]);
    }
    assert_eq!(names, ["hostname"]);
    // `tar -t` reads it too.
    let tar = common::require("tar");
    let listing = std::process::Command::new(tar)
        .arg("-t")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            c.stdin.take().unwrap().write_all(&out.stdout)?;
            c.wait_with_output()
        })
        .unwrap();
    assert_eq!(stdout(&listing), "hostname\n");

    // - CTR:DIR extracts a tar from stdin, keeping its owners.
    let mut b = tar::Builder::new(Vec::new());
    for (name, uid, data) in [("a/x", 1000u64, "x\n"), ("y", 0, "y\n")] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o640);
        h.set_uid(uid);
        h.set_gid(uid);
        b.append_data(&mut h, name, data.as_bytes()).unwrap();
    }
    let bytes = b.into_inner().unwrap();
    let o = with_stdin(&env, &["cp", "-", "box:/tmp"], &bytes);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = env.skiff_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/a/x /tmp/y; stat -c '%u:%g %a' /tmp/a/x /tmp/y",
    ]);
    assert_eq!(o, "x\ny\n1000:1000 640\n0:0 640\n");
    // Owners the container does not map.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(0);
    h.set_mode(0o644);
    h.set_uid(4_000_000);
    h.set_gid(0);
    b.append_data(&mut h, "unmapped", std::io::empty()).unwrap();
    let o = with_stdin(&env, &["cp", "-", "box:/tmp"], &b.into_inner().unwrap());
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("owner 4000000:0: the container's user namespace does not map"),
        "{}",
        stderr(&o)
    );
    // Into something that is not a directory.
    let o = with_stdin(&env, &["cp", "-", "box:/etc/passwd"], &bytes);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("must be an existing directory"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn cp_follows_dockers_slash_and_directory_rules() {
    let env = Env::new();
    running(&env, "box");
    let h = host_tree(&env);
    // A file to a missing path ending in /: the directory must exist.
    fails(
        &env,
        &["cp", p(&h.join("one")), "box:/nowhere/"],
        "does not exist",
    );
    // A file to a missing name: created under that name; over a file: replaced.
    env.skiff_ok(&["cp", p(&h.join("one")), "box:/tmp/renamed"]);
    env.skiff_ok(&["cp", p(&h.join("d/f")), "box:/tmp/renamed"]);
    // A directory onto a file.
    fails(
        &env,
        &["cp", p(&h.join("d")), "box:/tmp/renamed"],
        "cannot copy a directory to a file",
    );
    // A file through a path that wants a directory.
    fails(
        &env,
        &["cp", p(&h.join("one")), "box:/tmp/renamed/"],
        "not a directory",
    );
    // A missing parent.
    fails(
        &env,
        &["cp", p(&h.join("one")), "box:/no/such/x"],
        "no such directory",
    );
    // A directory to a missing path: becomes it; into an existing one: under its name;
    // SRC/. into an existing one: its contents.
    env.skiff_ok(&["cp", p(&h.join("d")), "box:/tmp/newdir/"]);
    env.skiff_ok(&["exec", "box", "mkdir", "/tmp/ex"]);
    env.skiff_ok(&["cp", p(&h.join("d")), "box:/tmp/ex"]);
    env.skiff_ok(&["cp", &format!("{}/.", p(&h.join("d"))), "box:/tmp/ex"]);
    let o = env.skiff_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "cat /tmp/renamed; echo; ls /tmp/newdir /tmp/ex | tr '\\n' ' '",
    ]);
    assert_eq!(o, "file f\n/tmp/ex: d f sub  /tmp/newdir: f sub ", "{o}");

    // Out: the same rules on the host.
    let out = env.dir.path().join("out");
    fs::create_dir(&out).unwrap();
    fs::write(out.join("file"), "x").unwrap();
    fails(
        &env,
        &["cp", "box:/tmp/ex", p(&out.join("file"))],
        "cannot copy a directory to a file",
    );
    fails(
        &env,
        &[
            "cp",
            "box:/etc/passwd",
            &format!("{}/", p(&out.join("missing"))),
        ],
        "does not exist",
    );
    fails(
        &env,
        &["cp", "box:/etc/passwd/", p(&out)],
        "not a directory",
    );
    env.skiff_ok(&["cp", "box:/etc/passwd", p(&out.join("file"))]);
    assert!(fs::read_to_string(out.join("file"))
        .unwrap()
        .contains("user:x:1000"));
    assert!(!out.join("missing").exists());
    // A symlink is copied as a link, with -L its target.
    env.skiff_ok(&["exec", "box", "ln", "-s", "/etc/passwd", "/tmp/link"]);
    env.skiff_ok(&["cp", "box:/tmp/link", p(&out.join("link"))]);
    assert_eq!(
        fs::read_link(out.join("link")).unwrap(),
        Path::new("/etc/passwd")
    );
    env.skiff_ok(&["cp", "-L", "box:/tmp/link", p(&out.join("followed"))]);
    assert!(fs::read_to_string(out.join("followed"))
        .unwrap()
        .contains("user:x:1000"));
}

#[test]
fn cp_refuses_a_hostile_archive() {
    let env = Env::new();
    running(&env, "box");
    let raw_tar = |name: &str, kind: tar::EntryType, link: Option<&str>| {
        // Names set by hand: the tar crate's own setters refuse `..`.
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(kind);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(if link.is_some() { 0 } else { 2 });
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        let mut v = h.as_bytes().to_vec();
        if link.is_none() {
            let mut block = [0u8; 512];
            block[..2].copy_from_slice(b"x\n");
            v.extend_from_slice(&block);
        }
        v
    };
    let end = [0u8; 1024];
    let escape = [
        raw_tar("../../../escaped", tar::EntryType::Regular, None),
        end.to_vec(),
    ]
    .concat();
    let o = with_stdin(&env, &["cp", "-", "box:/tmp"], &escape);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("refusing archive entry \"../../../escaped\"") && err.contains("'..'"),
        "{err}"
    );
    // A symlink out of the destination, then a file through it.
    let through = [
        raw_tar("l", tar::EntryType::Symlink, Some("/etc")),
        raw_tar("l/evil", tar::EntryType::Regular, None),
        end.to_vec(),
    ]
    .concat();
    let o = with_stdin(&env, &["cp", "-", "box:/tmp"], &through);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("symlink"), "{}", stderr(&o));
    let o = env.skiff_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        "ls /escaped /etc/evil 2>&1; true",
    ]);
    assert!(
        o.contains("No such file") && !o.contains("/etc/evil\n"),
        "{o}"
    );
}

#[test]
fn cp_keeps_symlinks_inside_the_container() {
    let env = Env::new();
    running(&env, "box");
    // A host directory the test user can write, which a container symlink names.
    let host = env.dir.path().join("hostdir");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("secret"), "host secret").unwrap();
    let h = host_tree(&env);
    env.skiff_ok(&[
        "exec",
        "box",
        "sh",
        "-c",
        &format!(
            "ln -s / /data && ln -s ../../../../.. /up && ln -s {} /hd",
            p(&host)
        ),
    ]);
    // Reading through /data -> / reads the container's /etc/passwd, not the host's.
    let got = env.dir.path().join("passwd");
    env.skiff_ok(&["cp", "box:/data/etc/passwd", p(&got)]);
    assert!(fs::read_to_string(&got)
        .unwrap()
        .contains("user:x:1000:1000:user:/home/user"));
    let got = env.dir.path().join("passwd2");
    env.skiff_ok(&["cp", "box:/up/etc/passwd", p(&got)]);
    assert!(fs::read_to_string(&got)
        .unwrap()
        .contains("user:x:1000:1000:user:/home/user"));
    // The host's file behind an absolute link is not reachable.
    fails(
        &env,
        &["cp", "box:/hd/secret", p(&env.dir.path().join("s"))],
        "no such file",
    );
    // Writing through the links lands in the container, never on the host.
    env.skiff_ok(&["cp", p(&h.join("one")), "box:/data/"]);
    env.skiff_ok(&["cp", p(&h.join("one")), "box:/up/tmp/"]);
    let _ = env.skiff(&["cp", p(&h.join("one")), "box:/hd/"]);
    assert!(!host.join("one").exists());
    let o = env.skiff_ok(&["exec", "box", "sh", "-c", "cat /one /tmp/one"]);
    assert_eq!(o, "one\none\n");
    // The same for a stopped container.
    env.skiff_ok(&["stop", "-t", "0", "box"]);
    let _ = env.skiff(&["cp", p(&h.join("d")), "box:/hd/d"]);
    assert!(!host.join("d").exists());
    fails(
        &env,
        &["cp", "box:/hd/secret", p(&env.dir.path().join("s"))],
        "no such file",
    );
    let got = env.dir.path().join("passwd3");
    env.skiff_ok(&["cp", "box:/data/etc/passwd", p(&got)]);
    assert!(fs::read_to_string(&got)
        .unwrap()
        .contains("user:x:1000:1000:user:/home/user"));
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        1,
        "the host dir changed"
    );
}

#[test]
fn cp_bad_inputs_say_what_is_wrong() {
    let env = Env::new();
    running(&env, "box");
    let h = host_tree(&env);
    let here = p(env.dir.path());
    fails(
        &env,
        &["cp", "nosuch:/etc/passwd", here],
        "no such container: nosuch",
    );
    fails(
        &env,
        &["cp", p(&h.join("one")), "nosuch:/tmp"],
        "no such container: nosuch",
    );
    fails(
        &env,
        &["cp", "box:/no/such/file", here],
        "no such file or directory in the container: /no/such/file",
    );
    fails(
        &env,
        &["cp", p(&h.join("missing")), "box:/tmp"],
        "No such file or directory",
    );
    fails(&env, &["cp", "box:", here], "bad syntax");
    fails(&env, &["cp", ":/x", here], "bad syntax");
    fails(
        &env,
        &["cp", "a", "b"],
        "must specify at least one container",
    );
    fails(
        &env,
        &["cp", "box:/a", "box:/b"],
        "copying between containers is not supported",
    );
    fails(
        &env,
        &["cp", p(&h.join("one/")), "box:/tmp"],
        "not a directory",
    );
    // A refusal while the CLI still writes (more than a pipe holds): reported, the CLI
    // is not killed by SIGPIPE.
    let big = env.dir.path().join("big");
    fs::write(&big, vec![7u8; 4 << 20]).unwrap();
    fails(
        &env,
        &["cp", p(&big), "box:/no/such/big"],
        "no such directory",
    );
    // Nothing was left behind by the failures.
    let o = env.skiff_ok(&["exec", "box", "ls", "/tmp"]);
    assert_eq!(o, "", "{o}");
}
