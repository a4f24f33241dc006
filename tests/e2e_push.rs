//! End to end: `skiff login`/`logout` and `skiff push` against a real docker-registry on
//! 127.0.0.1 with basic and with token auth, as the unprivileged user.

mod common;
mod registry_support;
mod tty_support;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Output;

use common::{stderr, stdout, Env};
use registry_support::{Auth, Registry};

/// `skiff login -u USER --password-stdin ARGS...` with `password` on stdin.
fn login(env: &Env, user: &str, password: &str, args: &[&str]) -> Output {
    let mut all = vec!["login", "-u", user, "--password-stdin"];
    all.extend_from_slice(args);
    env.skiff_stdin(&all, format!("{password}\n").as_bytes())
}

fn ok(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    (stdout(&out), stderr(&out))
}

fn auths(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn check_login(auth: Auth, user: &str, password: &str) {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), auth);
    let file = env.dir.path().join("runtime/containers/auth.json");

    let out = login(&env, user, "wrong", &[&reg.addr]);
    assert!(!out.status.success(), "a wrong password was accepted");
    let e = stderr(&out);
    assert!(e.contains("refused the user name and password"), "{e}");
    assert!(!file.exists(), "nothing stored after a refusal");
    let out = login(&env, "mallory", password, &[&reg.addr]);
    assert!(!out.status.success(), "a wrong user was accepted");

    let out = login(&env, user, password, &[&reg.addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("Login Succeeded"), "{}", stdout(&out));
    let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "the auth file is private");
    use base64::Engine;
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    assert_eq!(auths(&file)["auths"][&reg.addr]["auth"], expected.as_str());

    // --authfile writes there instead, and logout removes the entry.
    let other = env.dir.path().join("other/auth.json");
    let out = login(
        &env,
        user,
        password,
        &["--authfile", other.to_str().unwrap(), &reg.addr],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(auths(&other)["auths"][&reg.addr].is_object());
    ok(
        &env,
        &["logout", "--authfile", other.to_str().unwrap(), &reg.addr],
    );
    assert!(auths(&other)["auths"].get(&reg.addr).is_none());
    let out = env.skiff(&["logout", "--authfile", other.to_str().unwrap(), &reg.addr]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not logged into"), "{}", stderr(&out));
    let (o, _) = ok(&env, &["logout", "--all"]);
    assert!(o.contains("all registries"), "{o}");
    assert_eq!(auths(&file)["auths"], serde_json::json!({}));
}

#[test]
fn login_checks_the_password_and_stores_it_privately_with_basic_auth() {
    check_login(
        Auth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        "alice",
        "s3cret",
    );
}

#[test]
fn login_checks_the_password_and_stores_it_privately_with_token_auth() {
    check_login(
        Auth::Token {
            user: "bob".into(),
            password: "t0ken".into(),
        },
        "bob",
        "t0ken",
    );
}

#[test]
fn login_without_a_terminal_or_user_says_what_to_pass() {
    use std::os::unix::process::CommandExt;
    let env = Env::new();
    // In a session of its own: no controlling terminal to prompt on, even when the
    // tests run from one.
    let detached = |args: &[&str]| {
        let mut c = env.skiff_cmd(args);
        // SAFETY: setsid is async-signal-safe and touches no memory of the parent.
        unsafe {
            c.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        c.output().unwrap()
    };
    let out = detached(&["login", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("-u USER"), "{}", stderr(&out));
    let out = detached(&["login", "-u", "x", "127.0.0.1:1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--password-stdin"),
        "{}",
        stderr(&out)
    );
}

/// login → push (new, then again: every layer already there) → rmi → pull → run.
fn round_trip(auth: Auth, user: &str, password: &str, mounts: bool) {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), auth);
    let target = format!("{}/me/app:1", reg.addr);
    ok(&env, &["tag", "demo/busybox", &target]);

    // Not logged in: refused, saying how to log in.
    let out = env.skiff(&["push", &target]);
    assert!(!out.status.success(), "pushed without credentials");
    let e = stderr(&out);
    assert!(
        e.contains("requires authentication") && e.contains(&format!("skiff login {}", reg.addr)),
        "{e}"
    );

    let out = login(&env, user, password, &[&reg.addr]);
    assert!(out.status.success(), "{}", stderr(&out));
    let digestfile = env.dir.path().join("digest");
    let (o, e) = ok(
        &env,
        &[
            "push",
            "--digestfile",
            digestfile.to_str().unwrap(),
            &target,
        ],
    );
    let digest = std::fs::read_to_string(&digestfile).unwrap();
    assert!(
        digest.starts_with("sha256:") && digest.len() == 71,
        "{digest:?}"
    );
    assert_eq!(o.trim(), format!("Digest: {digest}"));
    assert!(
        e.contains(": Pushed") && !e.contains("already exists"),
        "{e}"
    );
    assert!(e.contains("skipped 0 already in the registry"), "{e}");

    // Again, and to another tag: nothing is uploaded.
    let (o2, e) = ok(&env, &["push", &target, &format!("{}/me/app:2", reg.addr)]);
    assert_eq!(o2, o, "the same manifest");
    assert!(
        e.contains(": Layer already exists") && !e.contains(": Pushed"),
        "{e}"
    );
    assert!(e.contains("Pushed 0 blob(s)"), "{e}");

    // To another repository of the registry: the blobs are mounted from the one the
    // image has a name in, where the credentials reach it (basic auth; a token names
    // only the destination's repository, so they are uploaded).
    let (o3, e) = ok(
        &env,
        &["push", &target, &format!("{}/other/app:1", reg.addr)],
    );
    assert_eq!(o3, o, "the same manifest");
    if mounts {
        assert!(
            e.contains(": Mounted from another repository") && !e.contains(": Pushed"),
            "{e}"
        );
    }

    // Gone from the store, pulled back: the same image, digest and content.
    let (inspect, _) = ok(&env, &["image", "inspect", &target]);
    let inspect: serde_json::Value = serde_json::from_str(&inspect).unwrap();
    let inspect = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    // The pushed digest is listed, in each repository pushed to (as docker and podman).
    let digests = inspect["RepoDigests"].as_array().unwrap();
    for repo in ["me/app", "other/app"] {
        let want = serde_json::json!(format!("{}/{repo}@{digest}", reg.addr));
        assert!(digests.contains(&want), "{want} in {inspect}");
    }
    let id = inspect["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:")
        .to_string();
    ok(&env, &["rmi", "-f", &target, "demo/busybox"]);
    let (pulled, e) = ok(&env, &["pull", &format!("{}/me/app:2", reg.addr)]);
    assert!(e.contains(&format!("Digest: {digest}")), "{e}");
    assert_eq!(pulled.trim(), id, "the same image id");
    let (o, _) = ok(
        &env,
        &[
            "run",
            "--rm",
            &format!("{}/me/app:2", reg.addr),
            "echo",
            "round trip",
        ],
    );
    assert_eq!(o, "round trip\n");
}

#[test]
fn login_push_rmi_pull_round_trip_with_basic_auth() {
    round_trip(
        Auth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
        "alice",
        "s3cret",
        true,
    );
}

#[test]
fn login_push_rmi_pull_round_trip_with_token_auth() {
    round_trip(
        Auth::Token {
            user: "bob".into(),
            password: "t0ken".into(),
        },
        "bob",
        "t0ken",
        false,
    );
}

#[test]
fn push_image_over_dbus() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let dest = format!("{}/api/app", reg.addr);
    let call = |args: &[&str]| {
        env.dbus_call(
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.PushImage",
            args,
        )
    };
    let out = call(&["demo/busybox", &dest, "{'wait': <true>}"]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    let path = stdout(&out)
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/job/"))
        .unwrap_or_else(|| panic!("no job path in {}", stdout(&out)))
        .to_string();
    let prop = |name: &str| {
        stdout(&env.dbus_call(
            &path,
            "org.freedesktop.DBus.Properties.Get",
            &["org.skiff.skiff1.Job", name],
        ))
    };
    assert!(prop("Type").contains("'push'"), "{}", prop("Type"));
    assert!(prop("Digest").contains("sha256:"), "{}", prop("Digest"));
    assert!(prop("Phase").contains("'done'"), "{}", prop("Phase"));
    // The tag defaulted to latest: a pull of it finds the image.
    let (_, e) = ok(&env, &["pull", &format!("{dest}:latest")]);
    assert!(
        e.contains("skipped 2"),
        "config and the one layer are in the store: {e}"
    );

    for (args, error) in [
        (
            ["demo/busybox", dest.as_str(), "{'bogus': <true>}"],
            "InvalidArgs",
        ),
        (
            ["no/such:image", dest.as_str(), "{'wait': <true>}"],
            "NoSuchImage",
        ),
        (
            [
                "demo/busybox",
                &format!("{dest}@sha256:{}", "0".repeat(64)),
                "{'wait': <true>}",
            ],
            "a push names a tag",
        ),
    ] {
        let out = call(&args);
        assert!(!out.status.success(), "{args:?}");
        assert!(stderr(&out).contains(error), "{args:?}: {}", stderr(&out));
    }
    // An id names no destination.
    let inspect: serde_json::Value =
        serde_json::from_str(&ok(&env, &["image", "inspect", "demo/busybox"]).0).unwrap();
    let inspect = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    let id = inspect["Id"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let out = env.skiff(&["push", &id[..12]]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("name the destination"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn login_prompts_without_echo_and_push_draws_bars_on_a_terminal() {
    use nix::sys::termios::LocalFlags;
    let env = Env::new();
    let reg = Registry::start(
        &env.dir.path().join("reg"),
        Auth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
    );
    let mut pty = tty_support::PtyChild::spawn(env.skiff_cmd(&["login", &reg.addr]), 24, 100);
    let at = pty.expect_from(0, "Username: ", 20);
    pty.send(b"alice\n");
    let at = pty.expect_from(at, "Password: ", 20);
    // Echo goes off before the password is read: wait for it, then type.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while pty.termios_now().local_flags.contains(LocalFlags::ECHO) {
        assert!(
            std::time::Instant::now() < deadline,
            "echo stayed on: {}",
            pty.output()
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    pty.send(b"s3cret\n");
    let end = pty.expect_from(at, "Login Succeeded", 20);
    assert!(pty.wait(20).success(), "{}", pty.output());
    assert!(
        !pty.output()[..end].contains("s3cret"),
        "the password was echoed: {}",
        pty.output()
    );
    assert!(
        tty_support::same_modes(&pty.termios_before, &pty.termios_now()),
        "the terminal's modes were restored"
    );
    let file = env.dir.path().join("runtime/containers/auth.json");
    assert!(auths(&file)["auths"][&reg.addr].is_object());

    // push on a terminal: bars, and the second time every layer already exists.
    let target = format!("{}/me/tty:1", reg.addr);
    ok(&env, &["tag", "demo/busybox", &target]);
    for (round, needle) in [(0, "pushed"), (1, "Layer already exists")] {
        let mut cmd = env.skiff_cmd(&["push", &target]);
        cmd.env("TERM", "xterm");
        let mut pty = tty_support::PtyChild::spawn(cmd, 24, 120);
        assert!(pty.wait(60).success(), "round {round}: {}", pty.output());
        pty.expect_from(0, "Digest: sha256:", 10);
        let out = pty.output();
        assert!(
            out.contains("Pushing blob") && out.contains(needle),
            "round {round}: {out}"
        );
    }
}
