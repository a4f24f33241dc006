//! End to end: `skiff build` — instructions and their effects in the image, ARG/ENV
//! substitution, the layer cache (a rebuild is all cache hits, a changed file rebuilds
//! from its step), multi-stage with COPY --from and --target, .dockerignore, ADD of a
//! local tar, a context on stdin, hostile contexts, errors naming file and line.

mod common;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use common::{stderr, stdout, Env};

fn fails(env: &Env, args: &[&str], want: &str) -> String {
    let out = env.skiff(args);
    let all = format!("{}{}", stdout(&out), stderr(&out));
    assert!(!out.status.success(), "skiff {args:?} succeeded: {all}");
    assert!(all.contains(want), "skiff {args:?}: want {want:?} in {all}");
    all
}

fn context(env: &Env, name: &str, files: &[(&str, &str)]) -> PathBuf {
    let dir = env.dir.path().join(name);
    for (p, content) in files {
        let path = dir.join(p);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }
    dir
}

fn with_stdin(env: &Env, args: &[&str], input: Vec<u8>) -> Output {
    env.skiff_stdin(args, &input)
}

const APP: &str = r#"# a comment
ARG BASE=demo/busybox
FROM $BASE AS base
ARG V=default
ENV A=1 B="two words"
ENV C=${A}-${V:-x}-${NOPE:-fallback}-${A:+set}-${NOPE:+unset}
WORKDIR /app
COPY --chown=1000:1000 --chmod=640 hello.txt ./
COPY dir/ /data/
RUN echo "v=$V b=$B" > /app/built && \
    echo run-$((40+2))-output
USER 1000
LABEL team=boats
EXPOSE 8080
STOPSIGNAL SIGINT
CMD ["sh", "-c", "echo $C; cat /app/built"]
"#;

#[test]
fn instructions_substitution_and_cache() {
    let env = Env::new();
    let ctx = context(
        &env,
        "app",
        &[
            ("Dockerfile", APP),
            ("hello.txt", "hello\n"),
            ("dir/x", "x\n"),
            ("dir/sub/y", "y\n"),
        ],
    );
    let c = ctx.to_str().unwrap();
    let first = env.skiff_ok(&["build", "-t", "me/app:1", "--build-arg", "V=3", c]);
    assert!(first.contains("STEP 1/13: FROM $BASE AS base"), "{first}");
    assert!(first.contains("STEP 8/13: RUN echo"), "{first}");
    assert!(first.contains("run-42-output"), "{first}");
    assert!(
        first.contains("Successfully tagged docker.io/me/app:1"),
        "{first}"
    );
    // The steps' images are intermediate: hidden, as docker's, but with -a; not dangling.
    let shown = env.skiff_ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut shown: Vec<&str> = shown.lines().collect();
    shown.sort();
    assert_eq!(
        shown,
        ["docker.io/demo/busybox:latest", "docker.io/me/app:1"]
    );
    let all = env.skiff_ok(&["images", "-a", "-q"]);
    // busybox and the images of the 11 steps that are not FROM or ARG.
    assert_eq!(all.lines().count(), 12, "{all}");
    assert_eq!(env.skiff_ok(&["images", "-q", "-f", "dangling=true"]), "");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/app:1"]),
        "1-3-fallback-set-\nv=3 b=two words\n"
    );
    assert_eq!(
        env.skiff_ok(&[
            "run",
            "--rm",
            "me/app:1",
            "stat",
            "-c",
            "%u:%g %a",
            "/app/hello.txt"
        ]),
        "1000:1000 640\n"
    );
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/app:1", "cat", "/data/sub/y"]),
        "y\n"
    );
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/app:1", "id", "-u"]),
        "1000\n"
    );
    assert_eq!(env.skiff_ok(&["run", "--rm", "me/app:1", "pwd"]), "/app\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", "me/app:1"])).unwrap();
    let img = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    assert_eq!(img["Config"]["Labels"]["team"], "boats", "{img}");
    assert!(
        img["Config"]["ExposedPorts"].get("8080/tcp").is_some(),
        "{img}"
    );
    assert_eq!(img["Config"]["StopSignal"], "SIGINT", "{img}");
    // busybox + COPY + COPY + RUN.
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        4,
        "{img}"
    );
    // `--format json` prints one object a line, as docker's.
    let history: Vec<serde_json::Value> = env
        .skiff_ok(&["history", "--no-trunc", "--format", "json", "me/app:1"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let by: Vec<String> = history
        .iter()
        .map(|h| h["CreatedBy"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(by[0].contains("CMD"), "{by:?}");
    assert!(
        by.iter().any(|b| b.contains("/bin/sh -c echo \"v=$V")),
        "{by:?}"
    );
    assert!(
        by.iter()
            .any(|b| b.contains("COPY") && b.contains("in /data/")),
        "{by:?}"
    );

    // The same build again: every step from the cache, the same image.
    let id1 = first.lines().last().unwrap().to_string();
    let again = env.skiff_ok(&["build", "-t", "me/app:1", "--build-arg", "V=3", c]);
    assert_eq!(again.matches("--> Using cache").count(), 11, "{again}");
    assert!(!again.contains("run-42-output"), "{again}");
    assert_eq!(again.lines().last().unwrap(), id1);
    // -q: only the id.
    let quiet = env.skiff_ok(&["build", "-q", "--build-arg", "V=3", c]);
    assert_eq!(quiet.trim(), id1);

    // A changed file rebuilds from its step on, not before.
    fs::write(ctx.join("dir/x"), "changed\n").unwrap();
    let changed = env.skiff_ok(&["build", "-t", "me/app:2", "--build-arg", "V=3", c]);
    assert_eq!(changed.matches("--> Using cache").count(), 4, "{changed}");
    assert!(changed.contains("run-42-output"), "{changed}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/app:2", "cat", "/data/x"]),
        "changed\n"
    );
    // A changed build arg invalidates RUN.
    let arg = env.skiff_ok(&["build", "-t", "me/app:3", "--build-arg", "V=4", c]);
    assert!(arg.contains("run-42-output"), "{arg}");
    // --no-cache uses none.
    let none = env.skiff_ok(&["build", "--no-cache", "--build-arg", "V=3", c]);
    assert!(!none.contains("Using cache"), "{none}");
}

const STAGES: &str = r#"FROM demo/busybox AS builder
RUN mkdir /out && echo artefact > /out/a
FROM scratch AS final
COPY --from=builder /out/a /a
COPY --from=builder /bin/busybox /bin/busybox
CMD ["/bin/busybox", "cat", "/a"]
"#;

#[test]
fn multi_stage_target_and_scratch() {
    let env = Env::new();
    let ctx = context(&env, "stages", &[("Dockerfile", STAGES)]);
    let c = ctx.to_str().unwrap();
    env.skiff_ok(&["build", "-t", "me/final", c]);
    assert_eq!(env.skiff_ok(&["run", "--rm", "me/final"]), "artefact\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", "me/final"])).unwrap();
    let img = if inspect.is_array() {
        inspect[0].clone()
    } else {
        inspect
    };
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "{img}"
    );
    // --target stops at the builder: a busybox with /out/a.
    env.skiff_ok(&["build", "--target", "builder", "-t", "me/builder", c]);
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/builder", "cat", "/out/a"]),
        "artefact\n"
    );
    fails(
        &env,
        &["build", "--target", "nope", c],
        "target stage \"nope\" could not be found",
    );
}

#[test]
fn dockerignore_add_tar_and_stdin_context() {
    let env = Env::new();
    // A tar for ADD to extract.
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_size(4);
    h.set_mode(0o644);
    b.append_data(&mut h, "in/tar-file", &b"tar\n"[..]).unwrap();
    let tarball = b.into_inner().unwrap();
    let ctx = context(
        &env,
        "ign",
        &[
            (
                "Dockerfile",
                "FROM demo/busybox\nCOPY . /ctx/\nADD files.tar /t/\nRUN ls /ctx | sort | tr '\\n' ' '\n",
            ),
            (".dockerignore", "secret*\n**/*.log\n!keep.log\n"),
            ("secret.key", "s"),
            ("public", "p"),
            ("sub/x.log", "l"),
            ("keep.log", "k"),
        ],
    );
    fs::write(ctx.join("files.tar"), &tarball).unwrap();
    let c = ctx.to_str().unwrap();
    let out = env.skiff_ok(&["build", "-t", "me/ign", c]);
    assert!(
        out.contains("Dockerfile files.tar keep.log public sub"),
        "{out}"
    );
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/ign", "ls", "/ctx/sub"]),
        ""
    );
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/ign", "cat", "/t/in/tar-file"]),
        "tar\n"
    );
    // An ignored file named explicitly is an error.
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY secret.key /\n",
    )
    .unwrap();
    fails(&env, &["build", c], "excluded by .dockerignore");

    // The context as a tar on stdin, its Dockerfile inside.
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in [
        ("Dockerfile", &b"FROM demo/busybox\nCOPY f /f\n"[..]),
        ("f", &b"from stdin\n"[..]),
    ] {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        b.append_data(&mut h, name, data).unwrap();
    }
    let out = with_stdin(
        &env,
        &["build", "-t", "me/stdin", "-"],
        b.into_inner().unwrap(),
    );
    assert!(out.status.success(), "{}{}", stdout(&out), stderr(&out));
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/stdin", "cat", "/f"]),
        "from stdin\n"
    );
}

#[test]
fn hostile_contexts_and_errors() {
    let env = Env::new();
    let ctx = context(
        &env,
        "bad",
        &[("Dockerfile", "FROM demo/busybox\nCOPY ../x /x\n")],
    );
    let c = ctx.to_str().unwrap();
    fails(&env, &["build", c], "outside the build context");
    std::os::unix::fs::symlink("/etc", ctx.join("out")).unwrap();
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY out/passwd /p\n",
    )
    .unwrap();
    fails(&env, &["build", c], "never followed");
    // The link itself is copied as a link.
    fs::write(ctx.join("Dockerfile"), "FROM demo/busybox\nCOPY out /l\n").unwrap();
    env.skiff_ok(&["build", "-t", "me/link", c]);
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/link", "readlink", "/l"]),
        "/etc\n"
    );

    // Parse errors name the file and line; nothing is built.
    fs::write(ctx.join("Dockerfile"), "FROM demo/busybox\n\nBOGUS x\n").unwrap();
    let dockerfile = format!("{}/Dockerfile", c);
    fails(
        &env,
        &["build", c],
        &format!("{dockerfile}:3: unknown instruction"),
    );
    // A failing RUN names its code; the tag is not made.
    fs::write(ctx.join("Dockerfile"), "FROM demo/busybox\nRUN exit 7\n").unwrap();
    fails(
        &env,
        &["build", "-t", "me/never", c],
        "returned a non-zero code: 7",
    );
    fails(&env, &["image", "inspect", "me/never"], "");
    assert!(Path::new(c).exists());
    // ADD of a URL fetches it (a server on loopback); an unreachable one is a clear
    // error; COPY takes no URL.
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = server.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(mut conn) = conn else { return };
            let mut buf = [0u8; 4096];
            let _ = std::io::Read::read(&mut conn, &mut buf);
            let body = "fetched\n";
            let _ = write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM demo/busybox\nADD http://127.0.0.1:{port}/dir/file.txt /dl/\n"),
    )
    .unwrap();
    env.skiff_ok(&["build", "-t", "me/url", c]);
    assert_eq!(
        env.skiff_ok(&[
            "run",
            "--rm",
            "me/url",
            "stat",
            "-c",
            "%a %s",
            "/dl/file.txt"
        ]),
        "600 8\n"
    );
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = closed.local_addr().unwrap().port();
    drop(closed);
    fs::write(
        ctx.join("Dockerfile"),
        format!("FROM demo/busybox\nADD http://127.0.0.1:{dead}/f /f\n"),
    )
    .unwrap();
    fails(&env, &["build", c], "cannot fetch it");
    fs::write(
        ctx.join("Dockerfile"),
        "FROM demo/busybox\nCOPY http://127.0.0.1/f /f\n",
    )
    .unwrap();
    fails(&env, &["build", c], "ADD fetches URLs");
    // No build container is left behind.
    assert_eq!(env.skiff_ok(&["ps", "-a", "-q"]), "");
}

#[test]
fn ctrl_c_cancels_the_running_step() {
    use std::io::BufRead;
    let env = Env::new();
    let ctx = context(
        &env,
        "slow",
        &[(
            "Dockerfile",
            "FROM demo/busybox\nRUN echo step-$((1+1))-started; sleep 1000\n",
        )],
    );
    let mut child = env
        .skiff_cmd(&["build", "-t", "me/cancelled", ctx.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap()).lines();
    // The RUN's own output: its container runs.
    assert!(
        lines.any(|l| l.unwrap_or_default() == "step-2-started"),
        "{}",
        env.daemon_log()
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the build was cancelled"),
        "{}",
        stderr(&out)
    );
    // Its container is removed, nothing is tagged.
    assert!(env.eventually(20, || env.skiff_ok(&["ps", "-a", "-q"]).is_empty()));
    fails(&env, &["image", "inspect", "me/cancelled"], "");
}

#[test]
fn run_here_documents() {
    let env = Env::new();
    let ctx = context(
        &env,
        "heredoc",
        &[(
            "Dockerfile",
            "FROM demo/busybox\nARG W=world\nRUN <<EOF\nset -e\n# a comment of the script\necho \"hello $W\" > /f\necho $((1<<3)) >> /f\nEOF\nRUN cat <<-'END' > /g\n\tliteral $W\n\tEND\n",
        )],
    );
    let built = env.skiff_ok(&["build", "-t", "me/heredoc", ctx.to_str().unwrap()]);
    assert!(built.contains("STEP 3/4: RUN <<EOF"), "{built}");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/heredoc", "cat", "/f", "/g"]),
        "hello world\n8\nliteral $W\n"
    );
    let bad = ctx.join("Dockerfile.bad");
    fs::write(&bad, "FROM demo/busybox\nRUN <<EOF\necho\n").unwrap();
    let all = fails(
        &env,
        &["build", "-f", bad.to_str().unwrap(), ctx.to_str().unwrap()],
        "the here-document <<EOF has no end",
    );
    assert!(all.contains("Dockerfile.bad:2"), "{all}");
}
