//! A build holds the store's collection lock only around its store writes: while a
//! RUN step waits, `images`, `tag`, `rmi` of an unrelated image, `image prune -a`,
//! an import and a second build all go through; an image the build uses (its first
//! stage's base, no container on it any more) is refused to `rmi` with the build's
//! name and kept by prune. The build then finishes correctly, a rebuild is all cache
//! hits with the same id, and once the build ended its base can be removed.

mod common;

use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Output, Stdio};

use common::{stderr, stdout, write_busybox_tar, Env};

const DOCKERFILE: &str = "FROM demo/busybox AS first\n\
    RUN echo a > /a\n\
    FROM demo/other\n\
    COPY --from=first /a /a\n\
    RUN trap 'touch /go' USR1; echo waiting-build; while [ ! -e /go ]; do sleep 0.1; done; \
    rm /go; echo built > /built\n\
    CMD [\"cat\", \"/a\", \"/built\", \"/other\"]\n";

/// Lets the waiting RUN step go on: SIGUSR1 to its shell (a build's containers are
/// not D-Bus objects, so not `exec`), which this test's user may signal.
fn release(_env: &Env) {
    let mut found = false;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if cmdline.starts_with("/bin/sh\0") && cmdline.contains("echo waiting-build;") {
            // SAFETY: kill(2) of a process just found by its command line.
            if unsafe { libc::kill(pid, libc::SIGUSR1) } == 0 {
                found = true;
            }
        }
    }
    assert!(found, "the build's waiting RUN shell was not found");
}

/// Runs skiff `args` while the build waits. A command that does not end (it waits
/// for the build: the bug this test is about) fails the test rather than hanging it:
/// the build is released first so that both can end.
fn while_building(env: &Env, args: &[&str]) -> Output {
    let mut child = env
        .skiff_cmd(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ended = env.eventually(120, || matches!(child.try_wait(), Ok(Some(_))));
    if !ended {
        release(env);
        let out = child.wait_with_output().unwrap();
        panic!(
            "skiff {args:?} waited for the running build (it ended only once the build \
             went on): {}{}",
            stdout(&out),
            stderr(&out)
        );
    }
    child.wait_with_output().unwrap()
}

fn import_variant(env: &Env, name: &str, file: &str) {
    let tar = env.dir.path().join(format!("{file}.tar"));
    let data = format!("{file}\n");
    write_busybox_tar(&tar, &[(file, 0, 0, 0o644, data.as_bytes())]);
    env.skiff_ok(&["import", tar.to_str().unwrap(), name]);
}

fn finish(mut child: Child, mut lines: impl Iterator<Item = String>) -> String {
    let rest: Vec<String> = lines.by_ref().collect();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let status = child.wait().unwrap();
    assert!(status.success(), "the build failed: {rest:?} {err}");
    rest.join("\n")
}

#[test]
fn store_commands_run_while_a_build_waits_and_its_images_stay() {
    let env = Env::new();
    import_variant(&env, "demo/other", "other");
    import_variant(&env, "demo/unrelated", "unrelated");
    let ctx = env.dir.path().join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(ctx.join("Dockerfile"), DOCKERFILE).unwrap();

    let mut child = env
        .skiff_cmd(&["build", "-t", "me/slow", ctx.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap())
        .lines()
        .map(|l| l.unwrap_or_default());
    assert!(
        lines.any(|l| l == "waiting-build"),
        "the RUN step did not start: {}",
        env.daemon_log()
    );

    // Store commands on other images go through while the RUN waits.
    let images = while_building(&env, &["images"]);
    assert!(stdout(&images).contains("demo/unrelated"), "{images:?}");
    let tag = while_building(&env, &["tag", "demo/unrelated", "me/unrelated:2"]);
    assert!(tag.status.success(), "{}", stderr(&tag));
    let rmi = while_building(&env, &["rmi", "me/unrelated:2", "demo/unrelated"]);
    assert!(rmi.status.success(), "{}", stderr(&rmi));
    let tar = env.dir.path().join("imported.tar");
    write_busybox_tar(&tar, &[("imported", 0, 0, 0o644, b"i\n")]);
    let import = while_building(&env, &["import", tar.to_str().unwrap(), "demo/imported"]);
    assert!(import.status.success(), "{}", stderr(&import));
    let ctx2 = env.dir.path().join("ctx2");
    std::fs::create_dir_all(&ctx2).unwrap();
    std::fs::write(
        ctx2.join("Dockerfile"),
        "FROM demo/imported\nRUN echo quick > /q\n",
    )
    .unwrap();
    let second = while_building(&env, &["build", "-t", "me/quick", ctx2.to_str().unwrap()]);
    assert!(second.status.success(), "{}", stderr(&second));

    // The first stage's base: no container uses it now, the build does.
    let refused = while_building(&env, &["rmi", "demo/busybox"]);
    assert!(!refused.status.success());
    assert!(
        stderr(&refused).contains("used by a running build -t me/slow"),
        "{}",
        stderr(&refused)
    );
    let prune = while_building(&env, &["image", "prune", "-a"]);
    assert!(prune.status.success(), "{}", stderr(&prune));
    assert!(
        env.skiff_ok(&["images", "-q", "--filter", "reference=demo/busybox"])
            .trim()
            .len()
            >= 12,
        "prune removed the build's base"
    );

    release(&env);
    let rest = finish(child, lines);
    assert!(rest.contains("Successfully tagged"), "{rest}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/slow"]),
        "a\nbuilt\nother\n"
    );
    let id = env.skiff_ok(&["images", "-q", "--filter", "reference=me/slow"]);

    // The cache is whole: a rebuild is all hits and makes the same image.
    let again = env.skiff_ok(&["build", "-t", "me/slow", ctx.to_str().unwrap()]);
    assert!(!again.lines().any(|l| l == "waiting-build"), "{again}");
    assert_eq!(again.matches("Using cache").count(), 4, "{again}");
    assert_eq!(
        env.skiff_ok(&["images", "-q", "--filter", "reference=me/slow"]),
        id
    );

    // The build is over: its base can go.
    env.skiff_ok(&["rmi", "demo/busybox"]);
}
