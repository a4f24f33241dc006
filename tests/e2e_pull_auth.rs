//! End to end: `skiff pull` from a real docker-registry on 127.0.0.1 that wants
//! credentials, basic or bearer tokens, with and without them.

mod common;
mod pull_support;
mod registry_support;

use common::{stderr, Env};
use pull_support::{pull_ok, run_ok, two_layer_image};
use registry_support::{Auth, Registry};

#[test]
fn basic_auth_with_and_without_credentials() {
    let env = Env::new();
    let reg = Registry::start(
        &env.dir.path().join("reg"),
        Auth::Basic {
            user: "alice".into(),
            password: "s3cret".into(),
        },
    );
    let layout = two_layer_image(&env, "layout");
    reg.push(&layout, "v1", "private/app:v1");
    let reference = format!("{}/private/app:v1", reg.addr);

    let out = env.skiff(&["pull", &reference]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("requires authentication") && e.contains("podman login"),
        "{e}"
    );

    let auth = |user: &str, pw: &str| {
        use base64::Engine;
        let b = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
        format!(r#"{{"auths": {{"{}": {{"auth": "{b}"}}}}}}"#, reg.addr)
    };
    let wrong = env.dir.path().join("wrong.json");
    std::fs::write(&wrong, auth("alice", "guess")).unwrap();
    let out = env.skiff(&["pull", "--authfile", wrong.to_str().unwrap(), &reference]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("refused the credentials") && e.contains("wrong.json"),
        "{e}"
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &[
            &reference,
            &format!("{{'wait': <true>, 'auth-file': <'{}'>}}", wrong.display()),
        ],
    );
    assert!(
        stderr(&out).contains("org.skiff.Error.Unauthorized"),
        "{}",
        stderr(&out)
    );

    let missing = env.dir.path().join("missing.json");
    let out = env.skiff(&["pull", "--authfile", missing.to_str().unwrap(), &reference]);
    assert!(stderr(&out).contains("missing.json"), "{}", stderr(&out));

    // --authfile with the right password.
    let right = env.dir.path().join("right.json");
    std::fs::write(&right, auth("alice", "s3cret")).unwrap();
    let (id, _) = pull_ok(
        &env,
        &["-q", "--authfile", right.to_str().unwrap(), &reference],
    );
    assert_eq!(
        run_ok(&env, &["run", "--rm", &id]),
        "hello from layer two\n"
    );

    // The default auth file ($XDG_RUNTIME_DIR/containers/auth.json) is found too (a
    // fresh store, so that the pull must reach the registry).
    let env = Env::new();
    let default = env.dir.path().join("runtime/containers/auth.json");
    std::fs::create_dir_all(default.parent().unwrap()).unwrap();
    std::fs::write(&default, auth("alice", "s3cret")).unwrap();
    let (id2, _) = pull_ok(&env, &["-q", &reference]);
    assert_eq!(id2, id);
}

#[test]
fn bearer_token_auth_with_and_without_credentials() {
    let env = Env::new();
    let reg = Registry::start(
        &env.dir.path().join("reg"),
        Auth::Token {
            user: "bob".into(),
            password: "t0ken".into(),
        },
    );
    let layout = two_layer_image(&env, "layout");
    reg.push(&layout, "v1", "private/app:v1");
    let reference = format!("{}/private/app:v1", reg.addr);
    let (granted_by_push, _) = reg.token_requests();
    assert!(granted_by_push > 0, "skopeo went through the token service");

    let out = env.skiff(&["pull", &reference]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("requires authentication") && e.contains("podman login"),
        "{e}"
    );
    assert!(
        reg.token_requests().1 > 0,
        "the anonymous token request was refused"
    );

    use base64::Engine;
    let b = base64::engine::general_purpose::STANDARD.encode("bob:t0ken");
    let authfile = env.dir.path().join("auth.json");
    std::fs::write(
        &authfile,
        format!(r#"{{"auths": {{"{}": {{"auth": "{b}"}}}}}}"#, reg.addr),
    )
    .unwrap();
    let (id, _) = pull_ok(
        &env,
        &["-q", "--authfile", authfile.to_str().unwrap(), &reference],
    );
    assert!(
        reg.token_requests().0 > granted_by_push,
        "skiff got a token"
    );
    assert_eq!(
        run_ok(&env, &["run", "--rm", &id]),
        "hello from layer two\n"
    );
}
