//! End to end: `skiff exec` — a new process in all of a running container's namespaces.

mod common;

use std::io::Write;
use std::process::Stdio;

use common::{stderr, stdout, Env};

fn running(env: &Env, name: &str, args: &[&str]) {
    let mut a = vec!["run", "-d", "--name", name];
    a.extend_from_slice(args);
    let out = env.skiff(&a);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(env.eventually(5, || env.inspect(name)["State"]["Status"] == "running"));
}

#[test]
fn exec_joins_the_containers_namespaces_and_root() {
    let env = Env::new();
    running(
        &env,
        "box",
        &["-h", "boxhost", "demo/busybox", "sleep", "1000"],
    );
    let out = env.skiff(&[
        "exec",
        "box",
        "sh",
        "-c",
        "echo pid=$$; id -u; hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; \
         [ \"$(readlink /proc/self/ns/mnt)\" = \"$(readlink /proc/1/ns/mnt)\" ] && echo same-mnt; \
         [ \"$(readlink /proc/self/ns/net)\" = \"$(readlink /proc/1/ns/net)\" ] && echo same-net; \
         test -x /bin/busybox && test ! -e /work && echo container-root",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = stdout(&out);
    let pid: u32 = so
        .lines()
        .next()
        .unwrap()
        .trim_start_matches("pid=")
        .parse()
        .unwrap();
    assert!(pid > 1, "{so}");
    for want in [
        "\n0\n",
        "boxhost",
        "sleep 1000",
        "same-mnt",
        "same-net",
        "container-root",
    ] {
        assert!(so.contains(want), "missing {want:?} in {so}");
    }
}

#[test]
fn exec_env_workdir_user_stdin_and_exit_codes() {
    let env = Env::new();
    running(
        &env,
        "box",
        &["-e", "FROM_RUN=yes", "demo/busybox", "sleep", "1000"],
    );
    let out = env.skiff(&[
        "exec",
        "-e",
        "X=1",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        "box",
        "sh",
        "-c",
        "echo $X $FROM_RUN; pwd; id -u; id -g",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1 yes\n/tmp\n1000\n1000\n");
    assert_eq!(
        env.skiff(&["exec", "box", "sh", "-c", "exit 7"])
            .status
            .code(),
        Some(7)
    );
    let nf = env.skiff(&["exec", "box", "no-such-command"]);
    assert_eq!(nf.status.code(), Some(127));
    assert!(
        stderr(&nf).contains("executable file not found"),
        "{}",
        stderr(&nf)
    );
    let mut child = env
        .skiff_cmd(&["exec", "-i", "box", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "hello\n");
    assert!(env
        .skiff(&["exec", "-d", "box", "sh", "-c", "echo bg > /tmp/bg"])
        .status
        .success());
    assert!(
        env.eventually(5, || stdout(&env.skiff(&["exec", "box", "cat", "/tmp/bg"]))
            == "bg\n")
    );
}

#[test]
fn exec_into_a_stopped_container_is_refused() {
    let env = Env::new();
    assert!(env
        .skiff(&["create", "--name", "idle", "demo/busybox", "true"])
        .status
        .success());
    let out = env.skiff(&["exec", "idle", "true"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("is not running"), "{}", stderr(&out));
}

#[test]
fn exec_ends_when_the_containers_main_process_exits() {
    let env = Env::new();
    running(&env, "brief", &["demo/busybox", "sleep", "2"]);
    let t = std::time::Instant::now();
    let out = env.skiff(&["exec", "brief", "sleep", "100"]);
    // The pid namespace dies with its init: the exec'd process is killed (SIGKILL).
    assert_eq!(out.status.code(), Some(137), "{}", stderr(&out));
    assert!(t.elapsed() < std::time::Duration::from_secs(30));
}
