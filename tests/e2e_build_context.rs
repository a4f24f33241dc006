//! End to end: the build context kept as the one tar it arrives as (never unpacked into
//! the store), COPY of hard links and symlink loops from its index, and the cache keyed
//! by the index's content hashes (a file changed between builds with the same size and
//! time still invalidates from its step; an ignored one does not).

mod common;

use std::fs;
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use common::{stderr, stdout, Env};

/// Every file (not directory) below `dir`, relative to it, sorted.
fn files_below(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let p = e.path();
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                todo.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[test]
fn a_large_context_is_kept_as_one_tar_and_never_unpacked() {
    let env = Env::new();
    let ctx = env.dir.path().join("big");
    // 400 files of 16 KiB (6.4 MB) in 4 directories.
    let mut data_bytes = 0u64;
    for i in 0..400u32 {
        let d = ctx.join(format!("data/d{}", i % 4));
        fs::create_dir_all(&d).unwrap();
        let body: Vec<u8> = (0..16384u32).map(|b| (b * 7 + i) as u8).collect();
        data_bytes += body.len() as u64;
        fs::write(d.join(format!("f{i:04}")), body).unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY data/ /data/\nRUN echo files-$(find /data -type f | wc -l); \
         echo waiting-$((1+1)); sleep 1000\n",
    )
    .unwrap();
    let mut child = env
        .skiff_cmd(&["build", "-t", "me/big", ctx.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for l in lines.by_ref() {
        let l = l.unwrap_or_default();
        let done = l == "waiting-2";
        seen.push(l);
        if done {
            break;
        }
    }
    assert!(
        seen.iter().any(|l| l == "files-400"),
        "{seen:?}\n{}",
        env.daemon_log()
    );
    assert_eq!(
        seen.last().map(String::as_str),
        Some("waiting-2"),
        "{seen:?}"
    );
    // While the build runs (its COPY done), the store's temporary directory holds the
    // context as one tar and nothing else: no unpacked copy of it.
    let tmp = env.data().join("storage/tmp");
    let builds: Vec<PathBuf> = fs::read_dir(&tmp)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("build-"))
        })
        .collect();
    assert_eq!(builds.len(), 1, "{:?}", files_below(&tmp));
    assert_eq!(files_below(&builds[0]), ["context.tar"]);
    let tar_len = fs::metadata(builds[0].join("context.tar")).unwrap().len();
    assert!(tar_len > data_bytes, "{tar_len} <= {data_bytes}");
    let name = builds[0]
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    assert_eq!(files_below(&tmp), [format!("{name}/context.tar")]);
    // Cancelled, the build's directory goes.
    // SAFETY: kill(2) of our own child by its pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        env.eventually(20, || !builds[0].exists()),
        "{:?}",
        files_below(&tmp)
    );
}

fn steps_from_cache(out: &str) -> usize {
    out.matches("--> Using cache").count()
}

#[test]
fn hard_links_and_symlink_loops_copy_and_a_same_size_change_invalidates() {
    let env = Env::new();
    let ctx = env.dir.path().join("links");
    fs::create_dir_all(ctx.join("app/sub")).unwrap();
    fs::write(ctx.join("app/one"), "aaaa\n").unwrap();
    fs::hard_link(ctx.join("app/one"), ctx.join("app/sub/two")).unwrap();
    std::os::unix::fs::symlink("loop", ctx.join("app/loop")).unwrap();
    std::os::unix::fs::symlink("b", ctx.join("app/a")).unwrap();
    std::os::unix::fs::symlink("a", ctx.join("app/b")).unwrap();
    fs::write(ctx.join("notes.txt"), "not copied\n").unwrap();
    fs::write(ctx.join(".dockerignore"), "notes.txt\n").unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY app/ /app/\nCOPY . /all/\nRUN echo ran-$((2+3))\n",
    )
    .unwrap();
    let c = ctx.to_str().unwrap();
    let first = env.skiff_ok(&["build", "-t", "me/links", c]);
    assert!(first.contains("ran-5"), "{first}");
    let show = env.skiff_ok(&[
        "run",
        "--rm",
        "me/links",
        "sh",
        "-c",
        "cat /app/one /app/sub/two; for l in loop a b; do readlink /app/$l; done; ls /all",
    ]);
    assert_eq!(show, "aaaa\naaaa\nloop\nb\na\nDockerfile\napp\n", "{show}");

    // The ignored file changes: all from the cache.
    fs::write(ctx.join("notes.txt"), "changed, still ignored\n").unwrap();
    let again = env.skiff_ok(&["build", "-t", "me/links", c]);
    assert_eq!(steps_from_cache(&again), 3, "{again}");

    // One copied byte changes, size and time kept: the COPY steps and what follows
    // run again.
    let one = ctx.join("app/one");
    let mtime = fs::metadata(&one).unwrap().modified().unwrap();
    fs::write(&one, "bbbb\n").unwrap();
    fs::OpenOptions::new()
        .write(true)
        .open(&one)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let changed = env.skiff_ok(&["build", "-t", "me/links", c]);
    assert_eq!(steps_from_cache(&changed), 0, "{changed}");
    assert!(changed.contains("ran-5"), "{changed}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/links", "cat", "/app/sub/two"]),
        "bbbb\n"
    );

    // A mode change invalidates too.
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(ctx.join("app/sub/two"), fs::Permissions::from_mode(0o600)).unwrap();
    let chmod = env.skiff_ok(&["build", "-t", "me/links", c]);
    assert_eq!(steps_from_cache(&chmod), 0, "{chmod}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/links", "stat", "-c", "%a", "/app/one"]),
        "600\n"
    );
}

#[test]
fn a_tar_context_with_hard_links_and_a_symlink_loop_on_stdin() {
    let env = Env::new();
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("Dockerfile", &b"FROM demo/busybox\nCOPY . /h/\n"[..]),
        ("dir/f", &b"data\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    for (kind, name, target) in [
        (tar::EntryType::Link, "g", "dir/f"),
        (tar::EntryType::Symlink, "l", "l"),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(0);
        h.set_mode(0o777);
        b.append_link(&mut h, name, target).unwrap();
    }
    let out = env.skiff_stdin(&["build", "-t", "me/hard", "-"], &b.into_inner().unwrap());
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        env.skiff_ok(&[
            "run",
            "--rm",
            "me/hard",
            "sh",
            "-c",
            "cat /h/g /h/dir/f; readlink /h/l"
        ]),
        "data\ndata\nl\n"
    );
}

/// A `--no-cache` rebuild copies the same files into the same layer, which the store
/// holds already: it is found by its digest and not extracted again. Seen by a daemon
/// whose layer limit (`--layer-max-entries 3`) no extraction of the COPY layer (a
/// directory and four files) passes: the rebuild succeeds, the image has the files, and
/// a changed file (a new layer, extracted) still meets the limit.
#[test]
fn a_no_cache_rebuild_does_not_extract_a_layer_the_store_holds() {
    let mut env = Env::new();
    let ctx = env.dir.path().join("same");
    fs::create_dir_all(ctx.join("data")).unwrap();
    for i in 0..4 {
        fs::write(ctx.join(format!("data/f{i}")), format!("file {i}\n")).unwrap();
    }
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY data/ /data/\nENV K=v\n",
    )
    .unwrap();
    let c = ctx.to_str().unwrap().to_string();
    env.skiff_ok(&["build", "-t", "me/same:1", &c]);
    env.stop_daemon();
    env.start_daemon_with(&["--layer-max-entries", "3"]);
    let again = env.skiff_ok(&["build", "--no-cache", "-t", "me/same:2", &c]);
    assert!(!again.contains("Using cache"), "{again}");
    let cat = env.skiff_ok(&["run", "--rm", "me/same:2", "cat", "/data/f3"]);
    assert_eq!(cat, "file 3\n");
    fs::write(ctx.join("data/f3"), "changed\n").unwrap();
    let out = env.skiff(&["build", "--no-cache", "-t", "me/same:3", &c]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "a new layer passed the limit: {all}");
    assert!(all.contains("max_entries"), "{all}");
}
