//! End to end: the D-Bus calls `skiff run` and `create` make (issue 18): with an image in
//! the store, one `RunContainer` (`CreateContainer`) and no `GetImage` round trip before
//! it; the image is looked at only when that call says it is missing (docker's CLI does
//! the same with its create call). Seen by `dbus-monitor` on the test's private bus.

mod bus_monitor;
mod common;

use bus_monitor::Monitor;
use common::{stderr, stdout, Env};

#[test]
fn run_and_create_of_a_stored_image_make_no_get_image_call() {
    let env = Env::new();
    let calls = Monitor::method_calls(&env);
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo/busybox",
        "echo",
        "hi",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "hi\n");
    let out = env.skiff(&["run", "-d", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["create", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The monitor sees the calls in the bus's order: the create call last.
    assert!(
        calls.wait_for(|l| l.contains("member=CreateContainer")),
        "{:#?}",
        calls.lines()
    );
    let members = calls.members();
    let made: Vec<&String> = members
        .iter()
        .filter(|m| m.contains("Container") || m.contains("Image"))
        .collect();
    assert_eq!(
        made,
        ["RunContainer", "RunContainer", "CreateContainer"],
        "{members:?}"
    );
}

#[test]
fn a_foreground_run_makes_one_bus_round_trip_before_its_call() {
    let env = Env::new();
    let calls = Monitor::all_method_calls(&env);
    let out = env.skiff(&["run", "--rm", "--network", "none", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        calls.wait_for(|l| l.contains("member=Wait")),
        "{:#?}",
        calls.lines()
    );
    let cli = calls
        .caller_of("RunContainer")
        .expect("no RunContainer call");
    let members = calls.members_of(&cli);
    // Hello, then the subscription to skiffd's events (by its well-known name, which
    // the bus resolves): no NameOwnerChanged match nor GetNameOwner round trip first.
    let before: Vec<&str> = members
        .iter()
        .take_while(|m| *m != "RunContainer")
        .map(String::as_str)
        .collect();
    assert_eq!(before, ["Hello", "AddMatch"], "{members:?}");
}

#[test]
fn a_missing_image_is_still_reported_as_before_by_each_kind_of_run() {
    let env = Env::new();
    // --pull never: docker's error and exit code, the same for each path of `run`.
    for args in [
        &["run", "--rm", "--pull", "never", "demo/nope"][..],
        &["run", "-d", "--pull", "never", "demo/nope"],
        &["run", "-t", "--pull", "never", "demo/nope"],
        &["create", "--pull", "never", "demo/nope"],
    ] {
        let out = env.skiff(args);
        assert_eq!(out.status.code(), Some(125), "{args:?}: {}", stderr(&out));
        let e = stderr(&out);
        assert!(
            e.contains("No such image: demo/nope (Unable to find image 'demo/nope' locally;")
                && e.contains("--pull never does not pull"),
            "{args:?}: {e}"
        );
    }
    // The default pulls after the run call failed: no registry answers here, so the
    // pull fails with docker's 125, after docker's line.
    let out = env.skiff(&["run", "--rm", "127.0.0.1:9/demo/nope:1"]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    let e = stderr(&out);
    assert!(
        e.contains("Unable to find image '127.0.0.1:9/demo/nope:1' locally")
            && e.contains("no such image 127.0.0.1:9/demo/nope:1 here, and pulling it failed"),
        "{e}"
    );
    assert_eq!(
        stdout(&env.skiff(&["ps", "-aq"])),
        "",
        "no container was left"
    );
}
