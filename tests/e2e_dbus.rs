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
