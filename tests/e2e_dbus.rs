//! The API is usable by any D-Bus client: create → start → wait → remove with gdbus alone,
//! no skiff code on the client side.

mod common;

use common::{stderr, stdout, Env};

fn call(env: &Env, path: &str, method: &str, args: &[&str]) -> String {
    let out = env.dbus_call(path, method, args);
    assert!(out.status.success(), "{method}: {}", stderr(&out));
    stdout(&out)
}

#[test]
fn gdbus_drives_create_start_wait_remove() {
    let env = Env::new();
    let created = call(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainer",
        &["{'image': <'demo/busybox'>, 'command': <['sh', '-c', 'exit 7']>, 'name': <'viagdbus'>}", "0"],
    );
    // ('<id>', objectpath '/org/skiff/skiff1/container/<id>')
    let path = created
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
        .unwrap_or_else(|| panic!("no path in {created}"))
        .to_string();
    let id = path.rsplit('/').next().unwrap().to_string();
    assert_eq!(id.len(), 64);
    let state = call(
        &env,
        &path,
        "org.freedesktop.DBus.Properties.Get",
        &["org.skiff.skiff1.Container", "State"],
    );
    assert!(state.contains("created"), "{state}");
    call(
        &env,
        &path,
        "org.skiff.skiff1.Container.Start",
        &["@a{uh} {}", "0"],
    );
    // Start returns once the command runs; it may have ended already, so wait for
    // "not-running" (race-free), not "next-exit".
    let waited = call(
        &env,
        &path,
        "org.skiff.skiff1.Container.Wait",
        &["not-running"],
    );
    assert!(waited.starts_with("(7,"), "{waited}");
    let inspect = call(&env, &path, "org.skiff.skiff1.Container.Inspect", &[]);
    assert!(
        inspect.contains("\\\"ExitCode\\\": 7") || inspect.contains("\"ExitCode\": 7"),
        "{inspect}"
    );
    call(&env, &path, "org.skiff.skiff1.Container.Remove", &["0"]);
    let gone = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.GetContainer",
        &[&id],
    );
    assert!(
        stderr(&gone).contains("org.skiff.Error.NoSuchContainer"),
        "{}",
        stderr(&gone)
    );
}

#[test]
fn wait_is_race_free_after_exit_and_lists_work() {
    let env = Env::new();
    let created = call(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainerJSON",
        &[
            r#"{"image": "demo/busybox", "command": ["true"], "labels": {"a": "b"}}"#,
            "0",
        ],
    );
    let path = created
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
        .unwrap()
        .to_string();
    call(
        &env,
        &path,
        "org.skiff.skiff1.Container.Start",
        &["@a{uh} {}", "0"],
    );
    std::thread::sleep(std::time::Duration::from_millis(300));
    // Already exited: not-running returns at once.
    let waited = call(
        &env,
        &path,
        "org.skiff.skiff1.Container.Wait",
        &["not-running"],
    );
    assert!(waited.starts_with("(0,"), "{waited}");
    let list = call(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.ListContainers",
        &["@as []", "1"],
    );
    assert!(list.contains(&path) && list.contains("exited"), "{list}");
    let imgs = call(
        &env,
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.ListImages",
        &["@as []", "0"],
    );
    assert!(imgs.contains("demo/busybox:latest"), "{imgs}");
    let remove_running = env.dbus_call(&path, "org.skiff.skiff1.Container.Remove", &["0"]);
    assert!(
        remove_running.status.success(),
        "{}",
        stderr(&remove_running)
    );
}

#[test]
fn removing_a_running_container_needs_force() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rm = env.skiff(&["rm", "sleeper"]);
    assert!(!rm.status.success());
    assert!(stderr(&rm).contains("is running"), "{}", stderr(&rm));
    let ps = env.skiff(&["ps"]);
    assert!(
        stdout(&ps).contains("sleeper") && stdout(&ps).contains("Up"),
        "{}",
        stdout(&ps)
    );
    let rmf = env.skiff(&["rm", "-f", "sleeper"]);
    assert!(rmf.status.success(), "{}", stderr(&rmf));
    assert!(!stdout(&env.skiff(&["ps", "-a"])).contains("sleeper"));
}

/// Item 3 of issue 12: on a bus that admits other users, another uid gets nothing out of
/// skiffd, whatever it calls: skiff's methods, `Properties` Get/GetAll/Set,
/// `ObjectManager.GetManagedObjects`, `Introspect`, `Peer`, `Job.Wait`, on any path.
///
/// The other uid is real, without root: `unshare` runs the client as our first subordinate
/// uid through newuidmap, so the bus (SO_PEERCRED) sees a different uid (see
/// `Env::new_shared_bus` and `Env::as_other_uid`). The client is gdbus, a generic client
/// that prints the error's name (busctl prints only the message).
#[test]
fn another_uid_is_refused_every_message() {
    let env = Env::new_shared_bus();
    let run = env.skiff(&[
        "run",
        "-d",
        "--name",
        "private-name",
        "demo/busybox",
        "sh",
        "-c",
        "echo topsecret-argument; sleep 1000",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let id = stdout(&run).trim().to_string();
    let cpath = format!("/org/skiff/skiff1/container/{id}");
    // The owner reads all of it (so a refusal below is not a missing object).
    let own = call(
        &env,
        &cpath,
        "org.freedesktop.DBus.Properties.GetAll",
        &["org.skiff.skiff1.Container"],
    );
    assert!(own.contains("private-name"), "{own}");
    call(
        &env,
        "/org/skiff/skiff1/job/1",
        "org.skiff.skiff1.Job.Wait",
        &[],
    );

    let other = |dest: &str, path: &str, method: &str, args: &[&str]| {
        let mut c = env.as_other_uid("gdbus");
        c.args(["call", "--timeout", "60", "--address", &env.address])
            .args(["--dest", dest, "--object-path", path, "--method", method])
            .args(args);
        c.output().unwrap()
    };
    // The other client is on the bus, as another uid (else the refusals prove nothing).
    let bus = "org.freedesktop.DBus";
    let me = other(
        bus,
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.GetId",
        &[],
    );
    assert!(me.status.success(), "{}", stderr(&me));

    let iface = "org.skiff.skiff1.Container";
    let cases: Vec<(&str, &str, Vec<&str>)> = vec![
        (
            &cpath,
            "org.freedesktop.DBus.Properties.Get",
            vec![iface, "Name"],
        ),
        (
            &cpath,
            "org.freedesktop.DBus.Properties.GetAll",
            vec![iface],
        ),
        (
            &cpath,
            "org.freedesktop.DBus.Properties.Set",
            vec![iface, "Name", "<'x'>"],
        ),
        (
            "/org/skiff/skiff1",
            "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            vec![],
        ),
        (
            "/org/skiff/skiff1",
            "org.freedesktop.DBus.Introspectable.Introspect",
            vec![],
        ),
        (
            &cpath,
            "org.freedesktop.DBus.Introspectable.Introspect",
            vec![],
        ),
        ("/", "org.freedesktop.DBus.Peer.GetMachineId", vec![]),
        (
            "/org/skiff/skiff1/job/1",
            "org.skiff.skiff1.Job.Wait",
            vec![],
        ),
        (&cpath, "org.skiff.skiff1.Container.Inspect", vec![]),
        (
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.GetContainer",
            vec!["private-name"],
        ),
        (
            "/no/such/path",
            "org.freedesktop.DBus.Introspectable.Introspect",
            vec![],
        ),
    ];
    for (path, method, args) in cases {
        let out = other("org.skiff.skiff1", path, method, &args);
        let (o, e) = (stdout(&out), stderr(&out));
        assert!(
            !out.status.success(),
            "{method} on {path} answered another uid: {o}"
        );
        assert!(
            e.contains("GDBus.Error:org.freedesktop.DBus.Error.AccessDenied:"),
            "{method} on {path}: {e}"
        );
        for secret in ["private-name", "topsecret", &id[..12]] {
            assert!(
                !o.contains(secret) && !e.contains(secret),
                "{method} leaked {secret}: {o}{e}"
            );
        }
    }
    // Refused, yet still running and unchanged for its owner.
    assert_eq!(env.inspect("private-name")["State"]["Status"], "running");
}
