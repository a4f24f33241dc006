//! End to end: the container directory made ahead of a create (`spare/`, a sibling of
//! `containers/`): a `run --rm` takes it and the next one is made while its command
//! runs; a spare left by an earlier skiffd is removed at start-up, never taken. Likewise
//! the bundle made ahead in the runtime directory (its `spare/`): a first start writes
//! into its files, made empty ahead, instead of making new ones.

mod common;
mod spare_support;

use common::{entries, stderr, Env};
use spare_support::{inodes_ready, removals_done, spare_dir_ready, the_spare_bundle, BUNDLE_FILES};

#[test]
fn run_rm_takes_the_spare_and_a_new_one_is_made() {
    let env = Env::new();
    let spare = env.data().join("spare");
    let run = |code: &str| {
        let out = env.skiff(&["run", "--rm", "demo/busybox", "sh", "-c", code]);
        assert_eq!(out.status.code(), Some(7), "stderr: {}", stderr(&out));
    };
    // The first create finds none and makes one.
    run("test -d / && exit 7");
    assert!(
        env.eventually(10, || entries(&spare).len() == 1),
        "no spare after the first run: {:?}",
        entries(&spare)
    );
    let first = entries(&spare);
    // The second takes it (renamed into its directory, which is then removed), and its
    // start makes the next one.
    run("touch /new && test -f /new && exit 7");
    assert!(
        env.eventually(10, || {
            let now = entries(&spare);
            now.len() == 1 && now != first
        }),
        "the spare was not taken and made again: before {first:?}, now {:?}",
        entries(&spare)
    );
    // Its trash (`.rm-ID`) is emptied in the background too.
    let containers = env.data().join("containers");
    assert!(
        env.eventually(10, || entries(&containers).is_empty()),
        "{:?}",
        entries(&containers)
    );
    // A container made from a spare starts with an empty writable layer.
    let out = env.skiff(&["run", "--rm", "demo/busybox", "sh", "-c", "test ! -e /new"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn a_spare_left_by_an_earlier_daemon_is_removed_at_start_up() {
    let mut env = Env::new();
    let out = env.skiff(&["run", "--rm", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let spare = env.data().join("spare");
    assert!(env.eventually(10, || entries(&spare).len() == 1));
    env.stop_daemon();
    // Not the shape of a spare: it must not become a container's directory.
    let stale = spare.join("1-2-3");
    std::fs::create_dir_all(stale.join("upper")).unwrap();
    std::fs::write(stale.join("upper").join("planted"), "x").unwrap();
    env.start_daemon();
    assert!(
        env.eventually(10, || !stale.exists()),
        "the stale spare is still there"
    );
    let out = env.skiff(&[
        "run",
        "--rm",
        "demo/busybox",
        "sh",
        "-c",
        "test ! -e /planted",
    ]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

/// The inode number of each file of a bundle (as `ls -i` would show them).
fn inodes(dir: &std::path::Path) -> Vec<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    BUNDLE_FILES
        .iter()
        .map(|n| {
            let ino = std::fs::metadata(dir.join(n))
                .map(|m| m.ino())
                .unwrap_or_else(|e| panic!("{}: {e}", dir.join(n).display()));
            (n.to_string(), ino)
        })
        .collect()
}

#[test]
fn a_first_start_writes_its_bundle_into_the_spare_bundle() {
    let mut env = Env::new();
    let spare = env.runtime().join("spare");
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert!(
        env.eventually(10, || entries(&spare).len() == 1
            && inodes_ready(&spare.join(&entries(&spare)[0]))),
        "no spare bundle after the first run: {:?}",
        entries(&spare)
    );
    let made = spare.join(&entries(&spare)[0]);
    let before = inodes(&made);
    let id = env.skiff_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--hostname",
        "spared",
        "demo/busybox",
        "sleep",
        "300",
    ]);
    let id = id.trim();
    let bundle = env.runtime().join("containers").join(id);
    // The very files made ahead, written in place; the next spare is made meanwhile.
    assert_eq!(inodes(&bundle), before, "the bundle's files are new inodes");
    assert!(!made.exists(), "the spare was not taken");
    assert!(
        env.eventually(10, || entries(&spare).len() == 1),
        "no new spare bundle after the start: {:?}",
        entries(&spare)
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let hosts = bundle.join("hosts");
        let mode = std::fs::metadata(&hosts).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644, "hosts's mode");
    }
    let out = env.skiff(&["exec", id, "cat", "/etc/hostname", "/etc/hosts"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let text = common::stdout(&out);
    assert!(text.starts_with("spared\n"), "{text}");
    assert!(text.contains("spared"), "{text}");
    let inspect = env.inspect(id);
    assert_eq!(inspect["State"]["Running"], true, "{inspect}");
    env.skiff_ok(&["rm", "-f", id]);

    // A spare bundle of an earlier daemon is removed at start-up, never taken.
    env.stop_daemon();
    let stale = spare.join("1-2-3");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join("config.json"), "planted").unwrap();
    env.start_daemon();
    assert!(
        env.eventually(10, || !stale.exists()),
        "the stale spare bundle is still there"
    );
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
}

#[test]
fn a_run_rm_gives_its_bundle_back_as_the_spare_bundle_unless_its_files_changed_owner() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let env = Env::new();
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none", "demo/busybox"];
        all.extend_from_slice(args);
        let out = env.skiff(&all);
        assert!(out.status.success(), "stderr: {}", stderr(&out));
        common::stdout(&out)
    };
    // Both spares are made in the background: a create that finds no spare directory
    // makes the two anew (then this run's bundle would not be kept: one is there).
    let both_spares = || {
        assert!(
            env.eventually(10, || spare_dir_ready(&env) && removals_done(&env)),
            "no spare container directory"
        );
        the_spare_bundle(&env)
    };
    run(&["true"]);
    let first = inodes(&both_spares());
    // Taken by this run and, at its removal, emptied and kept: the same inodes.
    assert_eq!(run(&["cat", "/etc/hostname"]).lines().count(), 1);
    assert!(
        env.eventually(10, || {
            let e = entries(&env.runtime().join("spare"));
            e.len() == 1 && inodes(&env.runtime().join("spare").join(&e[0])) == first
        }),
        "the run's bundle is not the spare: {:?}",
        entries(&env.runtime().join("spare"))
    );
    let kept = both_spares();
    let mut names = entries(&kept);
    names.sort();
    assert_eq!(
        names,
        [
            ".next-exit.json",
            "config.json",
            "hostname",
            "hosts",
            "monitor.json",
            "monitor.lock"
        ],
        "the rest is gone; the exit file is the next one made ahead"
    );
    for n in &names {
        let m = std::fs::metadata(kept.join(n)).unwrap();
        assert_eq!((m.len(), m.permissions().mode() & 0o777), (0, 0o600), "{n}");
    }
    // The next run writes into them.
    let out = run(&["cat", "/etc/hostname", "/etc/hosts"]);
    assert!(out.contains("localhost"), "{out}");
    // A file the container gave to another owner (its root may chown the /etc files
    // bound from the bundle) is not reused: the bundle goes, a new spare is made, all
    // of whose files are ours. (Its inode numbers may be the freed ones again.)
    both_spares();
    run(&["chown", "1000:1000", "/etc/hosts"]);
    // SAFETY: geteuid cannot fail.
    let me = unsafe { libc::geteuid() };
    let ours = |dir: &std::path::Path| {
        inodes_ready(dir)
            && entries(dir)
                .iter()
                .all(|n| std::fs::metadata(dir.join(n)).is_ok_and(|m| m.uid() == me))
    };
    assert!(
        env.eventually(10, || {
            let e = entries(&env.runtime().join("spare"));
            e.len() == 1 && ours(&env.runtime().join("spare").join(&e[0]))
        }),
        "no spare bundle of ours: {:?}",
        entries(&env.runtime().join("spare"))
    );
    run(&["true"]);
}

/// A file's identity: its inode number and, where the filesystem keeps it, its birth
/// time (a freed inode number can come back, not with the same birth time).
fn identity(path: &std::path::Path) -> (u64, Option<std::time::SystemTime>) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.ino(), m.created().ok())
}

#[test]
fn the_record_and_the_exit_file_are_written_into_files_made_ahead() {
    let env = Env::new();
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    let spare = env.data().join("spare");
    assert!(
        env.eventually(10, || entries(&spare).len() == 1
            && spare
                .join(&entries(&spare)[0])
                .join(".next2-container.json")
                .exists()),
        "no spare container directory with its record files made ahead: {:?}",
        entries(&spare)
    );
    let ahead = spare.join(&entries(&spare)[0]);
    let (create, start) = (
        identity(&ahead.join(".next-container.json")),
        identity(&ahead.join(".next2-container.json")),
    );
    let exit_ahead = the_spare_bundle(&env).join(".next-exit.json");
    let exit = identity(&exit_ahead);
    // The create's record write takes the first, the start's (running) the second.
    let id = env.skiff_ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "demo/busybox",
        "sleep",
        "300",
    ]);
    let id = id.trim();
    let dir = env.data().join("containers").join(id);
    assert_eq!(
        identity(&dir.join("container.json")),
        start,
        "the running record"
    );
    assert!(create != start);
    assert_eq!(
        entries(&dir).iter().filter(|n| n.starts_with('.')).count(),
        0
    );
    let inspect = env.inspect(id);
    assert_eq!(inspect["State"]["Running"], true, "{inspect}");
    // The monitor writes its exit file into the bundle's file made ahead.
    let bundle = env.runtime().join("containers").join(id);
    env.skiff_ok(&["kill", id]);
    let out = env.skiff(&["wait", id]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    assert_eq!(identity(&bundle.join("exit.json")), exit, "the exit file");
    let inspect = env.inspect(id);
    assert_eq!(inspect["State"]["ExitCode"], 137, "{inspect}");
    env.skiff_ok(&["rm", id]);
}

#[test]
fn every_run_rm_gives_its_bundle_back() {
    let env = Env::new();
    let run = || {
        let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
        assert!(out.status.success(), "stderr: {}", stderr(&out));
    };
    let spares = || {
        assert!(
            env.eventually(10, || spare_dir_ready(&env) && removals_done(&env)),
            "no spare container directory"
        );
        the_spare_bundle(&env)
    };
    run();
    let lock = identity(&spares().join("monitor.lock"));
    let exit = identity(&spares().join(".next-exit.json"));
    // The monitor releases its lock before skiffd hears its end: the removal that
    // follows at once finds it free and keeps the bundle, each time.
    for round in 0..8 {
        run();
        assert!(
            env.eventually(10, || {
                let e = entries(&env.runtime().join("spare"));
                let b = env
                    .runtime()
                    .join("spare")
                    .join(e.first().map_or("", |s| s));
                e.len() == 1
                    && b.join("monitor.lock").exists()
                    && identity(&b.join("monitor.lock")) == lock
            }),
            "round {round}: the run's bundle was not given back: {:?}",
            entries(&env.runtime().join("spare"))
        );
        // Its exit file was the one made ahead, and is again.
        assert_eq!(
            identity(&spares().join(".next-exit.json")),
            exit,
            "round {round}"
        );
    }
}

/// `RunContainer` over D-Bus with `config` (a{sv}) and the container's fd 1 passed;
/// the error's text when it fails.
fn run_container_with_fds(
    env: &Env,
    config: std::collections::HashMap<&str, zbus::Variant<'_>>,
) -> Result<String, String> {
    use std::os::fd::AsFd;
    let null = std::fs::File::options()
        .write(true)
        .open("/dev/null")
        .unwrap();
    let fds: std::collections::HashMap<u32, zbus::Fd<'_>> =
        [(1u32, zbus::Fd::from(null.as_fd()))].into();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let conn = zbus::connection::Builder::address(env.address.as_str())
            .build()
            .await
            .unwrap();
        let r = conn
            .call_method(
                Some("org.skiff.skiff1"),
                "/org/skiff/skiff1",
                Some("org.skiff.skiff1.Manager"),
                "RunContainer",
                &(config, fds, 0u64),
            )
            .await;
        match r {
            Ok(m) => Ok(format!("{:?}", m.body())),
            Err(e) => Err(e.to_string()),
        }
    })
}

/// The sorted names in a container's directory.
fn container_files(env: &Env, name: &str) -> Vec<String> {
    let id = env.inspect(name)["Id"].as_str().unwrap().to_string();
    let mut names = entries(&env.data().join("containers").join(id));
    names.sort();
    names
}

/// A container that is not started keeps none of the record files made ahead in its
/// directory (the second is a start's): not after `create`, not after a `run` whose
/// start is refused before it is recorded, not after a daemon restart (one an earlier
/// skiffd left is removed); `rm` leaves no directory.
#[test]
fn a_container_that_is_not_started_keeps_no_file_made_ahead() {
    let mut env = Env::new();
    let spare_ready = |env: &Env| {
        assert!(
            env.eventually(10, || spare_dir_ready(env)),
            "no spare container directory: {:?}",
            entries(&env.data().join("spare"))
        )
    };
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    spare_ready(&env);
    let bare = ["container.json", "rootfs", "upper", "work"];
    env.skiff_ok(&[
        "create",
        "--network",
        "none",
        "--name",
        "made",
        "demo/busybox",
        "true",
    ]);
    assert_eq!(container_files(&env, "made"), bare, "after create");
    // A run whose start is refused at once (a tty and fds): the container stays created.
    spare_ready(&env);
    let config: std::collections::HashMap<&str, zbus::Variant<'_>> = [
        ("image", "demo/busybox".into()),
        ("name", "refused".into()),
        ("network", "none".into()),
        ("tty", true.into()),
        ("command", vec!["true"].into()),
    ]
    .into();
    let e = run_container_with_fds(&env, config).unwrap_err();
    assert!(e.contains("has a tty"), "{e}");
    assert_eq!(env.inspect("refused")["State"]["Status"], "created");
    assert_eq!(
        container_files(&env, "refused"),
        bare,
        "after a refused start"
    );
    // Left by an earlier skiffd (or a crash between a run's create and start): removed
    // at start-up.
    let id = env.inspect("made")["Id"].as_str().unwrap().to_string();
    env.stop_daemon();
    let dir = env.data().join("containers").join(&id);
    for n in [".next-container.json", ".next2-container.json"] {
        std::fs::write(dir.join(n), b"").unwrap();
    }
    env.start_daemon();
    assert_eq!(container_files(&env, "made"), bare, "after a restart");
    // Still started and run as ever.
    let out = env.skiff(&["start", "-a", "made"]);
    assert!(out.status.success(), "stderr: {}", stderr(&out));
    for name in ["made", "refused"] {
        let id = env.inspect(name)["Id"].as_str().unwrap().to_string();
        env.skiff_ok(&["rm", name]);
        let dir = env.data().join("containers").join(&id);
        assert!(
            env.eventually(10, || !dir.exists()),
            "{name}: {:?}",
            entries(&dir)
        );
    }
    assert_eq!(
        entries(&env.data().join("containers")),
        Vec::<String>::new()
    );
}
