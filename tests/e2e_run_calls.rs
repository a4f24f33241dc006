//! End to end: the D-Bus calls `skiff run` and `create` make (issue 18): with an image in
//! the store, one `RunContainer` (`CreateContainer`) and no `GetImage` round trip before
//! it; the image is looked at only when that call says it is missing (docker's CLI does
//! the same with its create call). Seen by `dbus-monitor` on the test's private bus.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{require, stderr, stdout, Env};

/// `dbus-monitor` of the method calls to skiffd's manager, its lines collected.
struct Calls {
    child: Child,
    lines: Arc<Mutex<Vec<String>>>,
}

impl Calls {
    fn start(env: &Env) -> Calls {
        let mut child = Command::new(require("stdbuf"))
            .args(["-oL", "dbus-monitor", "--address", &env.address])
            .arg("type='method_call',interface='org.skiff.skiff1.Manager'")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                sink.lock().unwrap().push(line);
            }
        });
        let calls = Calls { child, lines };
        // dbus-monitor is a monitor once the bus took its own name away.
        assert!(
            calls.wait_for("member=NameLost"),
            "dbus-monitor did not start: {:?}",
            calls.lines()
        );
        calls
    }

    fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().clone()
    }

    fn wait_for(&self, what: &str) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.lines().iter().any(|l| l.contains(what)) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The manager's methods called so far, in order.
    fn members(&self) -> Vec<String> {
        self.lines()
            .iter()
            .filter(|l| l.starts_with("method call"))
            .filter_map(|l| l.split("member=").nth(1).map(|m| m.trim().to_string()))
            .collect()
    }
}

impl Drop for Calls {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn run_and_create_of_a_stored_image_make_no_get_image_call() {
    let env = Env::new();
    let calls = Calls::start(&env);
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
        calls.wait_for("member=CreateContainer"),
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
