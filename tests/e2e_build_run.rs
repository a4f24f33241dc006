//! End to end: a build's RUN steps — their containers are removed while the next steps
//! run, and none is left once the build answers (done or failed); a RUN layer the
//! unpack helper refuses fails the step with the helper's reason.

mod common;

use std::fs;
use std::path::PathBuf;

use common::{entries, stderr, stdout, Env};

fn context(env: &Env, name: &str, dockerfile: &str) -> PathBuf {
    let dir = env.dir.path().join(name);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir
}

/// No build container, and no directory of one (nor a `.rm-` leftover), in the data
/// and runtime directories.
fn assert_no_container_left(env: &Env, when: &str) {
    let ps = env.skiff(&["ps", "-a", "-q"]);
    assert!(ps.status.success(), "{}", stderr(&ps));
    assert_eq!(stdout(&ps), "", "{when}: containers left");
    let data = entries(&env.data().join("containers"));
    let runtime = entries(&env.runtime().join("containers"));
    assert!(
        data.is_empty() && runtime.is_empty(),
        "{when}: container directories left: {data:?} {runtime:?}\n{}",
        env.daemon_log()
    );
}

#[test]
fn no_build_container_is_left_when_the_build_answers() {
    let env = Env::new();
    let ctx = context(
        &env,
        "runs",
        "FROM demo/busybox\nRUN echo one > /one\nRUN echo two > /two\nENV K=v\n\
         RUN cat /one /two > /both\nCMD [\"cat\", \"/both\"]\n",
    );
    let c = ctx.to_str().unwrap();
    let out = env.skiff(&["build", "--no-cache", "-t", "me/runs", c]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    assert_no_container_left(&env, "after a build of three RUN steps");
    let run = env.skiff(&["run", "--rm", "me/runs"]);
    assert_eq!(stdout(&run), "one\ntwo\n", "{}", stderr(&run));
    // A build whose second RUN fails: the first one's container (removed in the
    // background) and the failed one's are both gone when the error arrives.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nRUN echo one > /one\nRUN exit 3\nRUN echo never\n",
    )
    .unwrap();
    let out = env.skiff(&["build", "--no-cache", "-t", "me/fails", c]);
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        format!("{}{}", stdout(&out), stderr(&out)).contains("returned a non-zero code: 3"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert_no_container_left(&env, "after a failed build");
}

/// The RUN layer goes to the blob and the unpack helper at once: when the helper
/// refuses it midway (here the layer limit, while the commit helper is still writing
/// files of 256 KiB, more than a pipe holds), the step fails with the limit named, not
/// with the commit helper's closed pipe; nothing is recorded, no container is left.
#[test]
fn a_run_layer_over_the_layer_limit_fails_naming_the_limit() {
    let mut env = Env::new();
    env.stop_daemon();
    env.start_daemon_with(&["--layer-max-entries", "3"]);
    let ctx = context(
        &env,
        "big",
        "FROM demo/busybox\nRUN for f in a b c d e f; do \
         dd if=/dev/zero of=/$f bs=1024 count=256 2>/dev/null; done\n",
    );
    let out = env.skiff(&["build", "-t", "me/big", ctx.to_str().unwrap()]);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "the layer passed the limit: {all}");
    assert!(
        all.contains("max_entries") && !all.contains("commit failed"),
        "{all}\n{}",
        env.daemon_log()
    );
    let images = env.skiff(&["image", "inspect", "me/big"]);
    assert!(!images.status.success());
    assert_no_container_left(&env, "after the refused layer");
}
