//! End to end: users by name (`-u`, `--group-add`, `exec -u`, HOME), `--init`,
//! `--env-file`, `--entrypoint ''`, `--shm-size` and the working directory's owner
//! (`--userns keep-id`: e2e_users_keepid).

mod common;
mod tty_support;
mod users_support;

use common::{stderr, stdout, Env};
use tty_support::PtyChild;
use users_support::env;

/// uid, gid, supplementary groups (from /proc/self/status) and HOME, one per line.
const WHO: &str = "id -u; id -g; sed -n 's/^Groups:[[:space:]]*//p' /proc/self/status; echo $HOME";

fn who(env: &Env, flags: &[&str]) -> (String, String, Vec<u32>, String) {
    let mut args = vec!["run", "--rm"];
    args.extend_from_slice(flags);
    args.extend_from_slice(&["demo/users", "sh", "-c", WHO]);
    let out = env.skiff(&args);
    assert!(out.status.success(), "{flags:?}: {}", stderr(&out));
    parse_who(&stdout(&out))
}

fn parse_who(s: &str) -> (String, String, Vec<u32>, String) {
    let lines: Vec<&str> = s.lines().collect();
    assert_eq!(lines.len(), 4, "{s}");
    let groups = lines[2]
        .split_whitespace()
        .map(|g| g.parse().unwrap())
        .collect();
    (lines[0].into(), lines[1].into(), groups, lines[3].into())
}

#[test]
fn user_by_name_from_the_containers_passwd_and_group() {
    let env = env();
    // A name: its uid, its primary gid, the groups listing it, its home.
    assert_eq!(
        who(&env, &["-u", "alice"]),
        (
            "1500".into(),
            "1600".into(),
            vec![10, 29],
            "/home/alice".into()
        )
    );
    // A uid with an entry is that user too.
    assert_eq!(who(&env, &["-u", "1500"]).2, vec![10, 29]);
    // An explicit group (by name) replaces the primary one and drops the listed groups.
    assert_eq!(
        who(&env, &["-u", "alice:extra"]),
        ("1500".into(), "1700".into(), vec![], "/home/alice".into())
    );
    assert_eq!(
        who(&env, &["-u", "1000:staff"]),
        ("1000".into(), "1600".into(), vec![], "/home/user".into())
    );
    // Numeric -u UID:GID keeps exactly those, no supplementary group 0.
    assert_eq!(who(&env, &["-u", "1000:1000"]).2, Vec::<u32>::new());
    // --group-add: names and numbers, after the listed groups.
    assert_eq!(
        who(
            &env,
            &["-u", "alice", "--group-add", "extra", "--group-add", "4242"]
        )
        .2,
        vec![10, 29, 1700, 4242]
    );
    // A uid without an entry: HOME is /; root's is /root; the image's HOME wins.
    assert_eq!(who(&env, &["-u", "4321"]).3, "/");
    assert_eq!(who(&env, &[]).3, "/root");
    assert_eq!(who(&env, &["-u", "alice", "-e", "HOME=/mine"]).3, "/mine");
    // inspect keeps what was asked.
    let out = env.skiff(&[
        "create",
        "--name",
        "named",
        "-u",
        "alice",
        "--group-add",
        "audio",
        "demo/users",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let i = env.inspect("named");
    assert_eq!(i["Config"]["User"], "alice");
    assert_eq!(i["HostConfig"]["GroupAdd"], serde_json::json!(["audio"]));
}

#[test]
fn unknown_user_or_group_is_a_clear_error_with_125() {
    let env = env();
    for (flags, want) in [
        (
            vec!["-u", "bob"],
            "unable to find user bob: no matching entries in passwd file",
        ),
        (
            vec!["-u", "alice:nogroup"],
            "unable to find group nogroup: no matching entries in group file",
        ),
        (
            vec!["--group-add", "nogroup"],
            "unable to find group nogroup: no matching entries in group file",
        ),
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(&flags);
        args.extend_from_slice(&["demo/users", "true"]);
        let out = env.skiff(&args);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
    }
    // Not a user at all: refused when created, naming the forms.
    let out = env.skiff(&["run", "--rm", "-u", "a:b:c", "demo/users", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("use NAME, UID, NAME:GROUP or UID:GID"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn exec_takes_names_and_the_containers_user() {
    let env = env();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "box",
        "-u",
        "alice",
        "--group-add",
        "extra",
        "demo/users",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Without -u: the container's user, groups and HOME.
    let out = env.skiff(&["exec", "box", "sh", "-c", WHO]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        parse_who(&stdout(&out)),
        (
            "1500".into(),
            "1600".into(),
            vec![10, 29, 1700],
            "/home/alice".into()
        )
    );
    // -u by name.
    let out = env.skiff(&["exec", "-u", "root", "box", "sh", "-c", WHO]);
    assert!(out.status.success(), "{}", stderr(&out));
    let (uid, gid, groups, home) = parse_who(&stdout(&out));
    assert_eq!(
        (uid.as_str(), gid.as_str(), home.as_str()),
        ("0", "0", "/root")
    );
    assert_eq!(groups, vec![1700]);
    let out = env.skiff(&["exec", "-u", "user", "box", "id", "-u"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1000\n");
    // An unknown name: docker's message.
    let out = env.skiff(&["exec", "-u", "bob", "box", "true"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unable to find user bob: no matching entries in passwd file"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn workdir_is_created_owned_by_the_containers_user() {
    let env = env();
    let out = env.skiff(&[
        "run",
        "--rm",
        "-u",
        "alice",
        "-w",
        "/srv/new/dir",
        "demo/users",
        "sh",
        "-c",
        "pwd; stat -c %u:%g /srv/new/dir /srv/new /srv; touch mine && echo wrote",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "/srv/new/dir\n1500:1600\n1500:1600\n1500:1600\nwrote\n"
    );
    // An existing directory keeps its owner.
    let out = env.skiff(&[
        "run",
        "--rm",
        "-u",
        "alice",
        "-w",
        "/etc",
        "demo/users",
        "stat",
        "-c",
        "%u",
        ".",
    ]);
    assert_eq!(stdout(&out), "0\n", "{}", stderr(&out));
}

#[test]
fn init_reaps_orphans_and_passes_the_exit_status() {
    let env = env();
    // PID 1 is skiff's init; the status is the command's.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--init",
        "demo/busybox",
        "sh",
        "-c",
        "tr '\\0' ' ' < /proc/1/cmdline; echo; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "/dev/init -- sh -c tr '\\0' ' ' < /proc/1/cmdline; echo; exit 7 \n"
    );
    // A burst of orphans (their parents exit at once) while the command itself never
    // waits: only PID 1 can reap them.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "orphans",
        "--init",
        "demo/busybox",
        "sh",
        "-c",
        "i=0; while [ $i -lt 30 ]; do (sleep 0 &); i=$((i+1)); done; touch /tmp/spawned; exec sleep 1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let ready = env.eventually(30, || {
        env.skiff(&["exec", "orphans", "test", "-e", "/tmp/spawned"])
            .status
            .success()
    });
    assert!(ready, "the orphans were never spawned");
    // Every orphan has ended by now or soon; none may stay a zombie.
    let states = || {
        stdout(&env.skiff(&[
            "exec",
            "orphans",
            "sh",
            "-c",
            "for s in /proc/[0-9]*/stat; do read -r l < $s && echo \"$l\"; done 2>/dev/null",
        ]))
    };
    let clean = env.eventually(30, || {
        let s = states();
        // init, sleep 1000 and this exec's shell: nothing else.
        !s.contains(") Z ") && s.lines().count() == 3
    });
    assert!(clean, "zombies or orphans left: {}", states());
    let s = states();
    assert!(!s.contains(") Z "), "{s}");
    assert!(s.contains("1 (init) S"), "{s}");
}

#[test]
fn init_forwards_sigterm_to_the_command() {
    let env = env();
    // `sleep` as PID 1 would ignore SIGTERM (no handler) and be killed after the stop
    // timeout (137); behind the init it gets the signal and dies of it (143).
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "--init",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["stop", "-t", "600", "sleeper"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(env.inspect("sleeper")["State"]["ExitCode"], 143);
    // Other signals too: USR1 kills sleep (its default action), 128+10.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "usr1",
        "--init",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["kill", "-s", "USR1", "usr1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["wait", "usr1"]);
    assert_eq!(stdout(&out).trim(), "138", "{}", stderr(&out));
}

#[test]
fn env_file_in_docker_format_with_errors_by_line() {
    let env = env();
    let file = env.data().join("app.env");
    std::fs::write(
        &file,
        "# settings\n\nA=1\n  B=two words \nFROM_CLIENT\nNOT_SET_ANYWHERE\nC=overridden\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let out = env
        .skiff_cmd(&[
            "run",
            "--rm",
            "--env-file",
            f,
            "-e",
            "C=from-e",
            "demo/busybox",
            "sh",
            "-c",
            "echo \"$A|$B|$FROM_CLIENT|$C|${NOT_SET_ANYWHERE-unset}\"",
        ])
        .env("FROM_CLIENT", "client value")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "1|two words |client value|from-e|unset\n");
    std::fs::write(&file, "A=1\n# fine\nBAD NAME=1\n").unwrap();
    let out = env.skiff(&["run", "--rm", "--env-file", f, "demo/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!(
            "{f}:3: variable name \"BAD NAME\" contains whitespace"
        )),
        "{}",
        stderr(&out)
    );
    let missing = env.data().join("nope.env");
    let out = env.skiff(&[
        "run",
        "--rm",
        "--env-file",
        missing.to_str().unwrap(),
        "demo/busybox",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains(&format!("--env-file {}", missing.display())),
        "{}",
        stderr(&out)
    );
}

#[test]
fn empty_entrypoint_clears_the_images() {
    let env = env();
    let out = env.skiff(&["run", "--rm", "demo/entry"]);
    assert_eq!(
        stdout(&out),
        "from-entrypoint echo from-cmd\n",
        "{}",
        stderr(&out)
    );
    // '' clears the entrypoint: the image's CMD runs alone, or the given command.
    let out = env.skiff(&["run", "--rm", "--entrypoint", "", "demo/entry"]);
    assert_eq!(stdout(&out), "from-cmd\n", "{}", stderr(&out));
    let out = env.skiff(&[
        "run",
        "--rm",
        "--entrypoint",
        "",
        "demo/entry",
        "echo",
        "mine",
    ]);
    assert_eq!(stdout(&out), "mine\n", "{}", stderr(&out));
}

#[test]
fn shm_size_sets_the_dev_shm_tmpfs() {
    let env = env();
    let df = |flags: &[&str]| {
        let mut args = vec!["run", "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["demo/busybox", "df", "-k", "/dev/shm"]);
        let out = env.skiff(&args);
        assert!(out.status.success(), "{}", stderr(&out));
        let so = stdout(&out);
        let line = so.lines().nth(1).unwrap_or_default().to_string();
        line.split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(df(&["--shm-size", "8m"]), "8192");
    assert_eq!(df(&[]), "65536");
    let out = env.skiff(&["run", "--rm", "--shm-size", "lots", "demo/busybox", "true"]);
    assert_eq!(out.status.code(), Some(125));
    assert!(
        stderr(&out).contains("key \"shm-size\": \"lots\" is not a size"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn init_keeps_the_terminal_for_the_command() {
    let env = env();
    let mut t = PtyChild::spawn(
        env.skiff_cmd(&[
            "run",
            "-it",
            "--rm",
            "--init",
            "--name",
            "tty-init",
            "demo/busybox",
            "sh",
        ]),
        24,
        80,
    );
    // The shell is in the terminal's foreground (it could not read otherwise) ...
    let at = t.expect_from(0, "# ", 30);
    t.send(b"echo sum=$((40+2)); tr '\\0' ' ' < /proc/1/cmdline; echo\r");
    let at = t.expect_from(at, "sum=42", 10);
    let at = t.expect_from(at, "/dev/init -- sh", 10);
    // ... so Ctrl-C reaches what it runs, and the shell survives it.
    t.send(b"sleep 100\r");
    assert!(env.eventually(10, || {
        stdout(&env.skiff(&["exec", "tty-init", "ps", "-o", "args"]))
            .lines()
            .any(|l| l.trim() == "sleep 100")
    }));
    t.send(&[0x03]);
    t.send(b"echo back=$((1+1))\r");
    let _ = t.expect_from(at, "back=2", 10);
    t.send(b"exit 3\r");
    let st = t.wait(20);
    assert_eq!(st.code(), Some(3), "{}", t.output());
}
