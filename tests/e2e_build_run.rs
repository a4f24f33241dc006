//! End to end: a build's RUN steps — their containers are removed while the next steps
//! run, and none is left once the build answers (done or failed).

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
