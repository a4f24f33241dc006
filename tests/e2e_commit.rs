//! End to end: `skiff commit` — a container that creates, modifies, deletes files,
//! replaces a directory, makes hard links and changes owners is committed (running and
//! stopped) on every storage driver; a container of the new image sees exactly what the
//! original saw. The layer is in OCI form (`.wh.` whiteouts, opaque markers), `--change`
//! reaches the config, `-m`/`-a` the history.

mod common;

use std::io::Read;

use common::{stderr, Env};

fn env_with(driver: &str) -> Env {
    let mut env = Env::bus_only();
    env.start_daemon_with(&["--storage-driver", driver]);
    let tar = env.busybox_tar();
    env.skiff_ok(&["import", tar.to_str().unwrap(), "demo/busybox"]);
    env
}

/// The changes: a new file, an appended one, a deleted one, a directory removed and
/// made again (opaque), hard links, other owners, a symlink, a deleted directory.
const CHANGES: &str = "echo created > /created; \
    echo more >> /etc/passwd; \
    rm /etc/not-executable; \
    rm -rf /home/user && mkdir -p /home/user && echo fresh > /home/user/new && \
    chown 1000:1000 /home/user/new; \
    echo hl > /hl1 && ln /hl1 /hl2; \
    mkdir /d && echo x > /d/owned && chown 1000:1000 /d /d/owned && chmod 600 /d/owned; \
    ln -s /etc/passwd /d/link; \
    rm -rf /var; \
    touch /ready";

/// What a container sees of its own files: every path (but the per-container mounts),
/// with owner and mode, and sizes and content digests of regular files.
const VIEW: &str = "cd / && find / -xdev | grep -v -e '^/etc/hostname$' -e '^/etc/hosts$' \
    -e '^/etc/resolv.conf$' -e '^/ready$' | sort | while read p; do \
    if [ -f \"$p\" ] && [ ! -L \"$p\" ]; then stat -c '%n %u:%g %a %s' \"$p\"; md5sum \"$p\"; \
    else stat -c '%n %u:%g %a %F' \"$p\"; fi; done; \
    [ \"$(stat -c %i /hl1)\" = \"$(stat -c %i /hl2)\" ] && echo hardlinked";

fn view_of_image(env: &Env, image: &str) -> String {
    env.skiff_ok(&["run", "--rm", image, "sh", "-c", VIEW])
}

/// The member names of the image's top layer, from `skiff save`.
fn top_layer_names(env: &Env, image: &str) -> Vec<String> {
    let out = env.dir.path().join("saved.tar");
    env.skiff_ok(&["save", "-o", out.to_str().unwrap(), image]);
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(std::fs::File::open(&out).unwrap());
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let p = e.path().unwrap().display().to_string();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(p, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    let layers = manifest[0]["Layers"].as_array().unwrap();
    let top = layers.last().unwrap().as_str().unwrap();
    let mut names = Vec::new();
    let mut a = tar::Archive::new(&files[top][..]);
    for e in a.entries().unwrap() {
        names.push(e.unwrap().path().unwrap().display().to_string());
    }
    names
}

fn commit_and_compare(driver: &str) {
    let env = env_with(driver);
    env.skiff_ok(&[
        "run",
        "-d",
        "--name",
        "box",
        "demo/busybox",
        "sh",
        "-c",
        &format!("{CHANGES}; sleep 1000"),
    ]);
    assert!(
        env.eventually(20, || env
            .skiff(&["exec", "box", "test", "-f", "/ready"])
            .status
            .success()),
        "{driver}: the changes were not made: {}",
        env.daemon_log()
    );
    let original = env.skiff_ok(&["exec", "box", "sh", "-c", VIEW]);
    assert!(original.contains("/created 0:0 644 8"), "{original}");
    assert!(original.contains("/d/owned 1000:1000 600 2"), "{original}");
    assert!(original.contains("hardlinked"), "{original}");
    assert!(!original.contains("/etc/not-executable"), "{original}");
    assert!(!original.contains("/home/user/owned"), "{original}");

    // Running (paused where it can be).
    let id = env.skiff_ok(&["commit", "box", "me/running:1"]);
    assert!(id.trim().starts_with("sha256:"), "{id}");
    assert_eq!(
        view_of_image(&env, "me/running:1"),
        original,
        "{driver}: the committed image differs from the running container"
    );

    // Stopped.
    env.skiff_ok(&["stop", "-t", "1", "box"]);
    env.skiff_ok(&["commit", "box", "me/stopped:1"]);
    assert_eq!(
        view_of_image(&env, "me/stopped:1"),
        original,
        "{driver}: the committed image differs from the stopped container"
    );

    // The top layer holds the changes in OCI form, owners as the container saw them.
    let names = top_layer_names(&env, "me/stopped:1");
    for want in [
        "etc/.wh.not-executable",
        ".wh.var",
        "created",
        "etc/passwd",
        "home/user/new",
        "hl2",
    ] {
        assert!(
            names.iter().any(|n| n.trim_end_matches('/') == want),
            "{driver}: {want} not in the layer: {names:?}"
        );
    }
    // Overlay drivers record the replaced directory as opaque; vfs as whiteouts.
    let opaque = names.iter().any(|n| n == "home/user/.wh..wh..opq");
    let whiteout = names.iter().any(|n| n == "home/user/.wh.owned");
    assert!(opaque || whiteout, "{driver}: {names:?}");
    assert!(
        !names.iter().any(|n| n.starts_with("bin/")),
        "{driver}: unchanged files in the layer: {names:?}"
    );
}

#[test]
fn commit_on_fuse() {
    commit_and_compare("fuse");
}

#[test]
fn commit_on_overlay() {
    commit_and_compare("overlay");
}

#[test]
fn commit_on_vfs() {
    commit_and_compare("vfs");
}

#[test]
fn commit_changes_message_author_and_history() {
    let env = Env::new();
    env.skiff_ok(&[
        "run",
        "--name",
        "ctr",
        "demo/busybox",
        "sh",
        "-c",
        "echo hi > /f",
    ]);
    env.skiff_ok(&[
        "commit",
        "-c",
        r#"CMD ["/bin/sh", "-c", "echo $GREETING; cat /f"]"#,
        "-c",
        "ENV GREETING=hello",
        "-c",
        "LABEL team=boats",
        "-c",
        "EXPOSE 8080",
        "-c",
        "WORKDIR /tmp",
        "-m",
        "added f",
        "-a",
        "Jane <jane@example.com>",
        "ctr",
        "me/changed",
    ]);
    assert_eq!(env.skiff_ok(&["run", "--rm", "me/changed"]), "hello\nhi\n");
    assert_eq!(
        env.skiff_ok(&["run", "--rm", "me/changed", "pwd"]),
        "/tmp\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&env.skiff_ok(&["image", "inspect", "me/changed"])).unwrap();
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
    assert_eq!(
        img["RootFS"]["Layers"].as_array().unwrap().len(),
        2,
        "{img}"
    );
    // `--format json` prints one object a line, as docker's.
    let history = env.skiff_ok(&["history", "--no-trunc", "--format", "json", "me/changed"]);
    let newest: serde_json::Value = serde_json::from_str(history.lines().next().unwrap()).unwrap();
    assert_eq!(newest["Comment"], "added f", "{history}");
    assert!(
        newest["CreatedBy"]
            .as_str()
            .unwrap_or_default()
            .contains("echo hi > /f"),
        "{history}"
    );

    // Untagged: only the id.
    let id = env.skiff_ok(&["commit", "ctr"]);
    let id = id.trim().trim_start_matches("sha256:");
    assert_eq!(id.len(), 64, "{id}");
    env.skiff_ok(&["run", "--rm", id, "cat", "/f"]);

    // Bad input is refused with the reason, and nothing is recorded.
    let before = env.skiff_ok(&["images", "-q"]);
    let out = env.skiff(&["commit", "-c", "RUN make", "ctr", "me/bad"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("RUN is not supported"),
        "{}",
        stderr(&out)
    );
    let out = env.skiff(&["commit", "nosuch", "me/bad"]);
    assert!(
        stderr(&out).contains("no such container"),
        "{}",
        stderr(&out)
    );
    assert_eq!(env.skiff_ok(&["images", "-q"]), before);
}
