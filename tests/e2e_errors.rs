//! End to end: bad input gets a clear error naming the problem, and loses nothing.

mod common;

use common::{entries, stderr, stdout, Env};

#[test]
fn unknown_image_is_a_clear_error() {
    let env = Env::new();
    let out = env.skiff(&["run", "--rm", "no/such-image", "true"]);
    assert_eq!(out.status.code(), Some(125));
    let e = stderr(&out);
    assert!(
        e.contains("no such image") && e.contains("no/such-image"),
        "{e}"
    );
}

#[test]
fn invalid_reference_and_name_are_refused() {
    let env = Env::new();
    let tar = env.busybox_tar();
    let out = env.skiff(&["import", tar.to_str().unwrap(), "Bad/UPPER"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).to_lowercase().contains("reference"),
        "{}",
        stderr(&out)
    );
    let out = env.skiff(&["run", "--name=-bad", "demo/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("not a valid container name"),
        "{}",
        stderr(&out)
    );
    assert!(env
        .skiff(&["create", "--name", "twice", "demo/busybox", "true"])
        .status
        .success());
    let dup = env.skiff(&["create", "--name", "twice", "demo/busybox", "true"]);
    assert!(!dup.status.success());
    assert!(stderr(&dup).contains("already in use"), "{}", stderr(&dup));
}

#[test]
fn unknown_config_key_is_named_in_a_dbus_error() {
    let env = Env::new();
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainer",
        &["{'image': <'demo/busybox'>, 'colour': <'red'>}", "0"],
    );
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("org.skiff.Error.InvalidConfig") && e.contains("colour"),
        "{e}"
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainerJSON",
        &["{\"image\": 5}", "0"],
    );
    assert!(
        stderr(&out).contains("org.skiff.Error.InvalidConfig") && stderr(&out).contains("image"),
        "{}",
        stderr(&out)
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainer",
        &["{'image': <'demo/busybox'>}", "8"],
    );
    assert!(
        stderr(&out).contains("InvalidArgs") && stderr(&out).contains("flag"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn daemon_not_running_says_how_to_start_it() {
    let env = Env::bus_only();
    let out = env.skiff(&["ps"]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("skiffd is not running") && e.contains("skiffd &"),
        "{e}"
    );
}

#[test]
fn hostile_tar_is_refused_and_touches_nothing_outside() {
    let env = Env::new();
    let evil = env.dir.path().join("evil.tar");
    {
        let f = std::fs::File::create(&evil).unwrap();
        let mut b = tar::Builder::new(f);
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(4);
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_700_000_000);
        // tar::Builder refuses `..` in append_data, so write the name into the header.
        let name = b"../../escaped";
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_cksum();
        b.append(&h, &b"evil"[..]).unwrap();
        b.finish().unwrap();
    }
    let before = entries(&env.data().join("storage/layers")).len();
    let out = env.skiff(&["import", evil.to_str().unwrap(), "evil/image"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains(".."), "{}", stderr(&out));
    assert!(!env.data().join("storage/escaped").exists() && !env.data().join("escaped").exists());
    assert_eq!(entries(&env.data().join("storage/layers")).len(), before);
    let imgs = env.skiff(&["images"]);
    assert!(!stdout(&imgs).contains("evil/image"));
    // Nothing staged is left either (collected right away).
    assert!(entries(&env.data().join("storage/tmp")).is_empty());
}

#[test]
fn corrupt_container_record_is_skipped_not_fatal() {
    let mut env = Env::bus_only();
    let bad = env.data().join("containers").join("f".repeat(64));
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("container.json"), b"{\"id\": \"ff").unwrap();
    env.start_daemon();
    let out = env.skiff(&["ps", "-a"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        env.daemon_log().contains("skipping container"),
        "{}",
        env.daemon_log()
    );
    // The bad entry is reported and kept for the user to look at, not deleted.
    assert!(bad.join("container.json").exists());
}

/// A `--rm` container's records are written without fsyncs (issue 18): after a crash of
/// the machine one may be torn. Its directory carries the auto-remove marker, and
/// start-up collects it (it was to be removed anyway) instead of keeping a corrupt entry.
#[test]
fn torn_record_of_an_rm_container_is_collected() {
    let mut env = Env::new();
    // A `--rm` container that is not started (the CLI's `create` has no --rm).
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainerJSON",
        &[
            r#"{"image": "demo/busybox", "name": "torn", "command": ["true"], "auto-remove": true}"#,
            "0",
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let id = env.inspect("torn")["Id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(id.len(), 64, "{id:?}");
    let dir = env.data().join("containers").join(&id);
    assert!(dir.join("auto-remove").exists(), "{:?}", entries(&dir));
    env.stop_daemon();
    // What a crash of the machine may leave of an unsynced write: an empty file.
    std::fs::write(dir.join("container.json"), b"").unwrap();
    env.start_daemon();
    assert!(
        env.eventually(30, || !dir.exists()),
        "{:?}\n{}",
        entries(&dir),
        env.daemon_log()
    );
    let out = env.skiff(&["ps", "-a", "--format", "{{.Names}}"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains("torn"), "{}", stdout(&out));
}

#[test]
fn import_from_stdin_and_gzip() {
    let env = Env::new();
    let tar = env.busybox_tar();
    let gz = env.dir.path().join("busybox.tar.gz");
    {
        let data = std::fs::read(&tar).unwrap();
        let f = std::fs::File::create(&gz).unwrap();
        let mut enc = flate2::write::GzEncoder::new(f, flate2::Compression::fast());
        std::io::Write::write_all(&mut enc, &data).unwrap();
        enc.finish().unwrap();
    }
    let out = env
        .skiff_cmd(&["image", "import", "-", "demo/fromstdin:1"])
        .stdin(std::fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).starts_with("sha256:"));
    let run = env.skiff(&["run", "--rm", "demo/fromstdin:1", "echo", "ok"]);
    assert_eq!(stdout(&run), "ok\n");
}

/// Item 17 of issue 12: the errors skiffd raises itself travel under their own names —
/// the standard `org.freedesktop.DBus.Error.InvalidArgs`, or `org.skiff.Error.*` — as a
/// generic client (gdbus) sees them, not as `org.freedesktop.zbus.Error`.
#[test]
fn dbus_errors_travel_under_their_documented_names() {
    let env = Env::new();
    let created = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainer",
        &["{'image': <'demo/busybox'>, 'command': <['true']>}", "0"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let path = stdout(&created)
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
        .unwrap()
        .to_string();
    let cases: Vec<(&str, &str, Vec<&str>, &str)> = vec![
        // Unknown flag bits.
        (
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.CreateContainer",
            vec!["{'image': <'demo/busybox'>}", "8"],
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        // A bad window size.
        (
            &path,
            "org.skiff.skiff1.Container.Resize",
            vec!["0", "0"],
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        // An unknown log option.
        (
            &path,
            "org.skiff.skiff1.Container.OpenLogs",
            vec!["{'colour': <true>}"],
            "org.freedesktop.DBus.Error.InvalidArgs",
        ),
        (
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.GetContainer",
            vec!["no-such-container"],
            "org.skiff.Error.NoSuchContainer",
        ),
    ];
    for (path, method, args, name) in cases {
        let out = env.dbus_call(path, method, &args);
        let e = stderr(&out);
        assert!(!out.status.success(), "{method}: {}", stdout(&out));
        assert!(
            e.contains(&format!("GDBus.Error:{name}: ")),
            "{method}: wanted {name}: {e}"
        );
        assert!(!e.contains("zbus"), "{method}: {e}");
    }
}

/// Item 19 of issue 12: when stdout is a pipe whose reader is gone (`skiff ps -a | head`),
/// skiff ends quietly as docker does — by SIGPIPE, with nothing on stderr — instead of
/// panicking with exit 101. The reader is closed before skiff starts, so every write
/// fails, whatever the timing (with a real `head` the failure depends on who is first).
#[test]
fn a_closed_stdout_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let env = Env::new();
    let made = env.skiff(&["create", "--name", "piped", "demo/busybox", "true"]);
    assert!(made.status.success(), "{}", stderr(&made));
    let commands: &[&[&str]] = &[
        &["ps", "-a"],
        &["info"],
        &["images"],
        &["inspect", "piped"],
        &["image", "inspect", "demo/busybox"],
        &["history", "demo/busybox"],
        &["create", "demo/busybox", "true"],
        &["--help"],
    ];
    for args in commands {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        drop(read);
        let out = env
            .skiff_cmd(args)
            .stdout(std::process::Stdio::from(write))
            .output()
            .unwrap();
        let e = stderr(&out);
        assert!(!e.contains("panicked"), "skiff {args:?}: {e}");
        assert_ne!(out.status.code(), Some(101), "skiff {args:?}: {e}");
        assert_eq!(e, "", "skiff {args:?} is not quiet");
        assert_eq!(
            out.status.signal(),
            Some(libc::SIGPIPE),
            "skiff {args:?}: {:?}",
            out.status
        );
    }
}

/// The description of a failed D-Bus call made with zbus (no argv limit: 1 MiB fits).
fn zbus_call_error<B>(env: &Env, path: &str, iface: &str, method: &str, body: &B) -> String
where
    B: serde::Serialize + zbus::zvariant::DynamicType,
{
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
            .call_method(Some("org.skiff.skiff1"), path, Some(iface), method, body)
            .await;
        match r {
            Err(zbus::Error::MethodError(name, desc, _)) => format!("{name}: {desc:?}"),
            Err(zbus::Error::FDO(e)) => e.to_string(),
            other => panic!("{method} did not fail: {other:?}"),
        }
    })
}

/// Item 22 of issue 12: a huge input is not echoed whole in an error; its first 200
/// characters and its size are. Over D-Bus a 1 MiB input (zbus: no argv limit); through
/// the CLI 100000 bytes (one argument of argv holds at most 128 KiB).
#[test]
fn huge_inputs_are_cut_in_error_messages() {
    let env = Env::new();
    let big = "a".repeat(1 << 20);
    let e = zbus_call_error(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager",
        "GetContainer",
        &(big.as_str(),),
    );
    assert!(e.contains("NoSuchContainer"), "{}", &e[..e.len().min(300)]);
    assert!(
        e.len() < 1000 && e.contains("…(1048576 bytes)"),
        "{} bytes",
        e.len()
    );
    let json = format!(r#"{{"image": "demo/busybox", "command": ["true"], "name": "-{big}"}}"#);
    let e = zbus_call_error(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager",
        "CreateContainerJSON",
        &(json.as_str(), 0u64),
    );
    assert!(e.contains("InvalidConfig"), "{}", &e[..e.len().min(300)]);
    assert!(
        e.len() < 1000 && e.contains("bytes)"),
        "{} bytes: {e}",
        e.len()
    );

    let big = "b".repeat(100_000);
    let cases: &[(&[&str], i32)] = &[
        (&["run", "--rm", &big, "true"], 125),
        (&["inspect", &big], 1),
        (&["run", "--stop-signal", &big, "demo/busybox", "true"], 125),
        // A bad flag value: docker's usage code.
        (
            &["run", "--stop-timeout", &big, "demo/busybox", "true"],
            125,
        ),
        (&["import", "/dev/null", "x", "--change", &big], 1),
    ];
    for (args, code) in cases {
        let out = env.skiff(args);
        let e = stderr(&out);
        let what = &args[..args.len().min(2)];
        assert_eq!(
            out.status.code(),
            Some(*code),
            "{what:?}: {}",
            &e[..e.len().min(300)]
        );
        assert!(e.len() < 1000, "{what:?}: {} bytes of stderr", e.len());
        // clap quotes a value with '…', which the cut counts in (100002 bytes).
        assert!(e.contains("…(10000"), "{what:?}: {e}");
    }
}

/// Item 22: `--change` without arguments shows an example of that instruction.
#[test]
fn a_change_without_arguments_shows_its_own_example() {
    let env = Env::new();
    let tar = env.busybox_tar();
    for (change, example) in [("ENV", "ENV NAME=value"), ("USER", "USER 1000:1000")] {
        let out = env.skiff(&["import", tar.to_str().unwrap(), "x/y", "--change", change]);
        let e = stderr(&out);
        assert!(!out.status.success());
        assert!(e.contains(&format!("(e.g. {example})")), "{change}: {e}");
        assert!(!e.contains("CMD"), "{change}: {e}");
    }
}

/// Item 22: a stop signal is checked the same way by `import --change STOPSIGNAL` and
/// `run/create --stop-signal`, and a bad one fails `run` with docker's 125.
#[test]
fn stop_signals_are_checked_alike_and_run_says_125() {
    let env = Env::new();
    let tar = env.busybox_tar();
    let tar = tar.to_str().unwrap();
    let out = env.skiff(&[
        "import",
        tar,
        "bogus/sig",
        "--change",
        "STOPSIGNAL SIGBOGUS",
    ]);
    assert!(!out.status.success(), "SIGBOGUS was stored");
    assert!(
        stderr(&out).contains("\"SIGBOGUS\" is not a signal"),
        "{}",
        stderr(&out)
    );
    assert!(!stdout(&env.skiff(&["images"])).contains("bogus/sig"));
    for cmd in ["run", "create"] {
        let out = env.skiff(&[cmd, "--stop-signal", "SIGBOGUS", "demo/busybox", "true"]);
        assert_eq!(out.status.code(), Some(125), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("invalid signal \"SIGBOGUS\""),
            "{}",
            stderr(&out)
        );
    }
    // What one accepts, the other does.
    let out = env.skiff(&["import", tar, "good/sig", "--change", "STOPSIGNAL quit"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["create", "--stop-signal", "quit", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Item 22: `Properties.Set` of a property skiff exports says `PropertyReadOnly` (every
/// one is read-only); of one it does not, `UnknownProperty`.
#[test]
fn setting_a_property_says_it_is_read_only() {
    let env = Env::new();
    let set = |iface: &str, prop: &str| {
        stderr(&env.dbus_call(
            "/org/skiff/skiff1",
            "org.freedesktop.DBus.Properties.Set",
            &[iface, prop, "<'x'>"],
        ))
    };
    let e = set("org.skiff.skiff1.Manager", "Version");
    assert!(
        e.contains("GDBus.Error:org.freedesktop.DBus.Error.PropertyReadOnly:")
            && e.contains("Version"),
        "{e}"
    );
    let e = set("org.skiff.skiff1.Manager", "Colour");
    assert!(
        e.contains("org.freedesktop.DBus.Error.UnknownProperty"),
        "{e}"
    );
    let v = env.dbus_call(
        "/org/skiff/skiff1",
        "org.freedesktop.DBus.Properties.Get",
        &["org.skiff.skiff1.Manager", "Version"],
    );
    assert!(!stdout(&v).contains("'x'"), "{}", stdout(&v));
}

/// Item 22: the container names in the README's examples are valid (`--name c` was not:
/// a name has at least two characters, as in docker).
#[test]
fn the_readme_examples_use_valid_container_names() {
    let env = Env::new();
    let readme = include_str!("../README.md");
    let mut names: Vec<&str> = readme
        .split("--name")
        .skip(1)
        // `--name NAME` in a command line (not "`--name`" in prose).
        .filter_map(|rest| rest.strip_prefix(' '))
        .filter_map(|rest| rest.split_whitespace().next())
        .collect();
    names.sort();
    names.dedup();
    assert!(names.len() >= 3, "{names:?}");
    for name in names {
        let out = env.skiff(&["create", "--name", name, "demo/busybox", "true"]);
        assert!(out.status.success(), "--name {name}: {}", stderr(&out));
    }
}
