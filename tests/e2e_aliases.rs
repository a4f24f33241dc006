//! End to end: docker's management-command aliases (`container …`, `image …`), `wait`
//! and `rm -f` on several containers, `port`, the completion scripts and the man pages.

mod common;

use std::process::Output;

use common::{bin, require, stderr, stdout, Env};

fn same(a: &Output, b: &Output) -> bool {
    a.status.code() == b.status.code() && a.stdout == b.stdout && a.stderr == b.stderr
}

/// Every `container X` is `X`: the same output, errors and exit codes, for a container
/// that is there and for one that is not.
#[test]
fn every_container_alias_behaves_as_the_top_level_command() {
    let env = Env::new();
    env.skiff_ok(&[
        "run",
        "-d",
        "--name",
        "web",
        "demo/busybox",
        "sh",
        "-c",
        "echo hello; sleep 1000",
    ]);
    assert!(env.eventually(10, || env.skiff_ok(&["logs", "web"]) == "hello\n"));
    let done = env.skiff(&[
        "run",
        "--name",
        "done",
        "demo/busybox",
        "sh",
        "-c",
        "exit 4",
    ]);
    assert_eq!(done.status.code(), Some(4));
    // (management alias, top-level command, arguments): one row per alias.
    let rows: &[(&str, &str, &[&str])] = &[
        ("ls", "ps", &["-a", "-q"]),
        ("list", "ps", &["-a", "-q"]),
        ("ps", "ps", &["-q"]),
        ("inspect", "inspect", &["web", "done"]),
        ("logs", "logs", &["web"]),
        ("wait", "wait", &["done"]),
        ("port", "port", &["web"]),
        ("top", "top", &["web", "-o", "pid,comm"]),
        ("exec", "exec", &["web", "echo", "hi"]),
        ("run", "run", &["--rm", "demo/busybox", "echo", "ran"]),
        (
            "stats",
            "stats",
            &["--no-stream", "--format", "json", "done"],
        ),
        ("cp", "cp", &["web:/etc/hostname", "-"]),
        ("start", "start", &["nosuch"]),
        ("stop", "stop", &["nosuch"]),
        ("kill", "kill", &["nosuch"]),
        ("restart", "restart", &["nosuch"]),
        ("rm", "rm", &["nosuch"]),
        ("remove", "rm", &["nosuch"]),
        ("rename", "rename", &["nosuch", "other"]),
        ("attach", "attach", &["nosuch"]),
        ("create", "create", &["--name", "bad name", "demo/busybox"]),
        ("wait", "wait", &["nosuch"]),
        ("top", "top", &["nosuch"]),
        ("logs", "logs", &["nosuch"]),
        ("inspect", "inspect", &["nosuch"]),
    ];
    for (alias, cmd, args) in rows {
        let mut a = vec!["container", alias];
        a.extend(*args);
        let mut b = vec![*cmd];
        b.extend(*args);
        let (x, y) = (env.skiff(&a), env.skiff(&b));
        assert!(
            same(&x, &y),
            "{a:?} vs {b:?}:\n{:?} {}{}\n{:?} {}{}",
            x.status.code(),
            stdout(&x),
            stderr(&x),
            y.status.code(),
            stdout(&y),
            stderr(&y)
        );
    }
    // What changes state, once each way: the effect is the same.
    env.skiff_ok(&[
        "container",
        "create",
        "--name",
        "made",
        "demo/busybox",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(env.inspect("made")["State"]["Status"], "created");
    assert_eq!(env.skiff_ok(&["container", "start", "made"]), "made\n");
    assert_eq!(env.skiff_ok(&["container", "wait", "made"]), "7\n");
    assert_eq!(
        env.skiff_ok(&["container", "rename", "made", "renamed"]),
        ""
    );
    assert_eq!(env.inspect("renamed")["State"]["ExitCode"], 7);
    assert_eq!(
        env.skiff_ok(&["container", "restart", "renamed"]),
        "renamed\n"
    );
    // The restarted command ends again before it can be removed.
    assert_eq!(env.skiff_ok(&["container", "wait", "renamed"]), "7\n");
    assert_eq!(env.skiff_ok(&["container", "rm", "renamed"]), "renamed\n");
    assert_eq!(env.skiff_ok(&["container", "stop", "web"]), "web\n");
    assert_eq!(env.inspect("web")["State"]["Status"], "exited");
    assert_eq!(env.skiff_ok(&["container", "start", "web"]), "web\n");
    assert_eq!(env.skiff_ok(&["container", "kill", "web"]), "web\n");
    assert!(env.eventually(10, || env.inspect("web")["State"]["Status"] == "exited"));
    let attach = env.skiff(&["container", "attach", "web"]);
    let top_level = env.skiff(&["attach", "web"]);
    assert!(
        same(&attach, &top_level),
        "{} / {}",
        stderr(&attach),
        stderr(&top_level)
    );
    assert_eq!(env.skiff_ok(&["container", "remove", "-f", "web"]), "web\n");

    // image: its own commands and the top-level ones.
    let rows: &[(&[&str], &[&str])] = &[
        (&["image", "ls"], &["images"]),
        (&["image", "list", "-q"], &["images", "-q"]),
        (
            &["image", "history", "demo/busybox"],
            &["history", "demo/busybox"],
        ),
        (&["image", "rm", "nosuch"], &["rmi", "nosuch"]),
        (
            &["image", "pull", "127.0.0.1:1/nosuch"],
            &["pull", "127.0.0.1:1/nosuch"],
        ),
    ];
    for (a, b) in rows {
        let (x, y) = (env.skiff(a), env.skiff(b));
        assert!(
            same(&x, &y),
            "{a:?} vs {b:?}: {} / {}",
            stderr(&x),
            stderr(&y)
        );
    }
    // Every alias is listed in the help.
    let help = env.skiff_ok(&["container", "--help"]);
    for name in [
        "ls", "list", "prune", "inspect", "rm", "start", "stop", "kill", "restart", "logs", "exec",
        "run", "create", "wait", "port", "top", "stats", "cp", "rename", "attach",
    ] {
        assert!(
            help.contains(&format!(" {name}")),
            "{name} missing:\n{help}"
        );
    }
    assert!(env.skiff_ok(&["image", "--help"]).contains("pull"));
}

#[test]
fn wait_and_rm_on_several_containers() {
    let env = Env::new();
    env.skiff_ok(&[
        "run",
        "-d",
        "--name",
        "three",
        "demo/busybox",
        "sh",
        "-c",
        "exit 3",
    ]);
    env.skiff_ok(&[
        "run",
        "-d",
        "--name",
        "five",
        "demo/busybox",
        "sh",
        "-c",
        "exit 5",
    ]);
    // One exit code a line, in the order asked; a missing one is an error that does not
    // stop the others.
    assert_eq!(env.skiff_ok(&["wait", "three", "five"]), "3\n5\n");
    let out = env.skiff(&["wait", "five", "nosuch", "three"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "5\n3\n");
    assert!(
        stderr(&out).contains("no such container: nosuch"),
        "{}",
        stderr(&out)
    );

    env.skiff_ok(&["run", "-d", "--name", "aa", "demo/busybox", "sleep", "1000"]);
    env.skiff_ok(&["run", "-d", "--name", "bb", "demo/busybox", "sleep", "1000"]);
    let out = env.skiff(&["rm", "-f", "aa", "nosuch", "bb", "three"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert_eq!(stdout(&out), "aa\nbb\nthree\n");
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("nosuch"));
    assert_eq!(
        env.skiff_ok(&["ps", "-a", "--format", "json"])
            .lines()
            .count(),
        1
    );
    assert_eq!(env.skiff_ok(&["rm", "-f", "five"]), "five\n");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn port_prints_as_docker() {
    let env = Env::new();
    let (tcp, udp) = (free_port(), free_port());
    env.skiff_ok(&[
        "run",
        "-d",
        "--name",
        "pub",
        "-p",
        &format!("127.0.0.1:{tcp}:80"),
        "-p",
        &format!("127.0.0.1:{udp}:53/udp"),
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert_eq!(
        env.skiff_ok(&["port", "pub"]),
        format!("53/udp -> 127.0.0.1:{udp}\n80/tcp -> 127.0.0.1:{tcp}\n")
    );
    assert_eq!(
        env.skiff_ok(&["port", "pub", "80"]),
        format!("127.0.0.1:{tcp}\n")
    );
    assert_eq!(
        env.skiff_ok(&["port", "pub", "80/tcp"]),
        format!("127.0.0.1:{tcp}\n")
    );
    assert_eq!(
        env.skiff_ok(&["port", "pub", "53/udp"]),
        format!("127.0.0.1:{udp}\n")
    );
    for missing in ["53", "81/tcp"] {
        let out = env.skiff(&["port", "pub", missing]);
        assert_eq!(out.status.code(), Some(1));
        assert!(stderr(&out).contains("no public port"), "{}", stderr(&out));
    }
    env.skiff_ok(&["create", "--name", "none", "demo/busybox", "true"]);
    assert_eq!(env.skiff_ok(&["port", "none"]), "");
}

/// Runs `script` in bash with the completion script sourced and skiff on PATH.
fn bash_with_completion(env: &Env, file: &std::path::Path, script: &str) -> Output {
    let dir = bin("skiff").parent().unwrap().to_path_buf();
    let path = format!(
        "{}:{}",
        dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    std::process::Command::new(require("bash"))
        .arg("-c")
        .arg(format!("source {}\n{script}", file.display()))
        .envs(env.envs())
        .env("PATH", path)
        .output()
        .unwrap()
}

#[test]
fn completion_scripts_load_and_complete_names() {
    let env = Env::new();
    env.skiff_ok(&["create", "--name", "alpha-box", "demo/busybox", "true"]);
    let script = env.skiff_ok(&["completion", "bash"]);
    let file = env.dir.path().join("skiff.bash");
    std::fs::write(&file, &script).unwrap();
    let syntax = std::process::Command::new(require("bash"))
        .arg("-n")
        .arg(&file)
        .output()
        .unwrap();
    assert!(syntax.status.success(), "{}", stderr(&syntax));
    let p = bash_with_completion(&env, &file, "complete -p skiff");
    assert!(p.status.success(), "{}", stderr(&p));
    assert!(
        stdout(&p).contains("-F _skiff_dynamic") && stdout(&p).ends_with("skiff\n"),
        "{}",
        stdout(&p)
    );
    // Names come from skiffd: containers after stop/rm/container logs, images after run.
    let complete = |words: &str| {
        let out = bash_with_completion(&env, &file, &format!(
            "COMP_WORDS=({words}); COMP_CWORD=$((${{#COMP_WORDS[@]}} - 1)); \
             COMP_LINE=\"${{COMP_WORDS[*]}}\"; COMP_POINT=${{#COMP_LINE}}; \
             _skiff_dynamic skiff \"${{COMP_WORDS[COMP_CWORD]}}\" \"${{COMP_WORDS[COMP_CWORD-1]}}\"; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\""
        ));
        assert!(out.status.success(), "{words}: {}", stderr(&out));
        stdout(&out)
    };
    assert_eq!(complete("skiff stop al"), "alpha-box\n");
    assert_eq!(complete("skiff container logs ''"), "alpha-box\n");
    assert_eq!(complete("skiff rm -f alp"), "alpha-box\n");
    assert_eq!(complete("skiff run demo/"), "demo/busybox:latest\n");
    assert_eq!(complete("skiff image rm demo"), "demo/busybox:latest\n");
    // Otherwise clap's completion: subcommands and flags.
    let subs = complete("skiff sta");
    assert!(subs.contains("start") && subs.contains("stats"), "{subs}");
    assert!(complete("skiff stop --").contains("--time"));
    // zsh and fish: the scripts carry the same hook; their shells check them where present.
    for (shell, hook) in [
        ("zsh", "compdef _skiff_dynamic skiff"),
        ("fish", "skiff __complete containers"),
    ] {
        let text = env.skiff_ok(&["completion", shell]);
        assert!(text.contains(hook), "{shell}");
        if let Some(sh) = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| std::path::Path::new(d).join(shell))
            .find(|p| p.exists())
        {
            let f = env.dir.path().join(format!("skiff.{shell}"));
            std::fs::write(&f, &text).unwrap();
            let out = std::process::Command::new(&sh)
                .arg("-n")
                .arg(&f)
                .output()
                .unwrap();
            assert!(out.status.success(), "{shell}: {}", stderr(&out));
            if shell == "fish" {
                // fish completes a command line on request: names from skiffd.
                let dir = bin("skiff").parent().unwrap().to_path_buf();
                let out = std::process::Command::new(&sh)
                    .arg("-c")
                    .arg(format!(
                        "source {}; complete -C 'skiff stop al'",
                        f.display()
                    ))
                    .envs(env.envs())
                    .env("PATH", format!("{}:/usr/bin:/bin", dir.display()))
                    .env("HOME", env.dir.path())
                    .output()
                    .unwrap();
                assert!(
                    stdout(&out).contains("alpha-box"),
                    "fish: {}{}",
                    stdout(&out),
                    stderr(&out)
                );
            }
        }
    }
    // A usage error, as every other one: docker's 125, naming the value.
    let bad = env.skiff(&["completion", "tcsh"]);
    assert_eq!(bad.status.code(), Some(125));
    assert!(stderr(&bad).contains("tcsh"), "{}", stderr(&bad));
}

#[test]
fn man_pages_render() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(bin("skiff"))
        .arg("__man")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let pages: Vec<String> = stdout(&out).lines().map(str::to_string).collect();
    for want in [
        "skiff.1",
        "skiff-run.1",
        "skiff-system-df.1",
        "skiff-container-ps.1",
        "skiff-image-ls.1",
        "skiff-top.1",
    ] {
        assert!(
            pages.iter().any(|p| p.ends_with(&format!("/{want}"))),
            "{want} missing: {pages:?}"
        );
    }
    assert!(
        !pages.iter().any(|p| p.contains("__")),
        "hidden commands get no page"
    );
    let man = require("man");
    for p in &pages {
        let out = std::process::Command::new(&man)
            .args(["-P", "cat", "-l", p])
            .env("MANWIDTH", "80")
            .output()
            .unwrap();
        assert!(out.status.success(), "{p}: {}", stderr(&out));
        let text = stdout(&out);
        assert!(
            text.contains("NAME") && text.contains("SYNOPSIS"),
            "{p}: {text}"
        );
        assert!(stderr(&out).trim().is_empty(), "{p}: {}", stderr(&out));
    }
    let run = std::fs::read_to_string(dir.path().join("skiff-run.1")).unwrap();
    assert!(run.contains("publish"), "skiff-run.1 lacks --publish");
}
