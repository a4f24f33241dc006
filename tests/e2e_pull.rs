//! End to end: `skiff pull` from a real registry (Debian's docker-registry on
//! 127.0.0.1, images pushed with skopeo), as the unprivileged user (with credentials:
//! e2e_pull_auth).

mod common;
mod pull_support;
mod registry_support;

use std::time::Duration;

use common::{stderr, stdout, Env};
use pull_support::{our_arch, pull_ok, run_ok, two_layer_image};
use registry_support::{noise, Auth, Gate, ImageSpec, LayerBuilder, Layout, Registry, Throttle};

#[test]
fn pull_by_tag_and_digest_skips_present_blobs_and_runs() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let layout = two_layer_image(&env, "layout");
    let pushed = reg.push(&layout, "v1", "test/busybox:v1");
    let reference = format!("{}/test/busybox:v1", reg.addr);

    let (id, err) = pull_ok(&env, &[&reference]);
    assert_eq!(id.len(), 64, "the image id is printed: {id:?}");
    assert!(
        err.contains("Fetched 3 blob(s)") && err.contains("skipped 0"),
        "{err}"
    );
    assert!(err.contains(&format!("Digest: {pushed}")), "{err}");
    let gets = reg.blob_gets();
    assert_eq!(
        gets,
        3,
        "config and two layers fetched once:\n{}",
        reg.logs()
    );

    let images = run_ok(&env, &["images"]);
    assert!(
        images.contains(&format!("{}/test/busybox", reg.addr)) && images.contains("v1"),
        "{images}"
    );
    // The pulled image runs, with both layers and its config's CMD.
    let out = run_ok(&env, &["run", "--rm", &reference, "echo", "ok"]);
    assert_eq!(out.trim(), "ok");
    let out = run_ok(&env, &["run", "--rm", &reference]);
    assert_eq!(out, "hello from layer two\n");

    // Pulling again downloads no blob.
    let (id2, err) = pull_ok(&env, &[&reference]);
    assert_eq!(id2, id);
    assert!(
        err.contains("Fetched 0 blob(s)") && err.contains("skipped 3"),
        "{err}"
    );
    assert_eq!(reg.blob_gets(), gets, "no blob fetched again");

    // By digest: the same image, found by the digest the registry knows it by.
    let by_digest = format!("{}/test/busybox@{pushed}", reg.addr);
    let (id3, _) = pull_ok(&env, &["-q", &by_digest]);
    assert_eq!(id3, id);
    let out = run_ok(&env, &["run", "--rm", &by_digest, "cat", "/etc/motd"]);
    assert_eq!(out, "pulled\n");

    // Over D-Bus, with wait: the Job tells how much it skipped.
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &[&reference, "{'wait': <true>, 'tls-verify': <true>}"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let job = stdout(&out);
    let path = job
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/job/"))
        .unwrap_or_else(|| panic!("no job path in {job}"))
        .to_string();
    let prop = |name: &str| {
        let out = env.dbus_call(
            &path,
            "org.freedesktop.DBus.Properties.Get",
            &["org.skiff.skiff1.Job", name],
        );
        stdout(&out)
    };
    assert!(
        prop("BlobsSkipped").contains("uint32 3"),
        "{}",
        prop("BlobsSkipped")
    );
    assert!(
        prop("BytesDone").contains("uint64 0"),
        "{}",
        prop("BytesDone")
    );
    assert!(prop("Progress").contains("1.0"), "{}", prop("Progress"));
    assert!(prop("Digest").contains(&pushed), "{}", prop("Digest"));
}

#[test]
fn unknown_tags_repos_and_registries_are_clear_errors() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let layout = two_layer_image(&env, "layout");
    reg.push(&layout, "v1", "test/busybox:v1");

    let out = env.skiff(&["pull", &format!("{}/test/busybox:nope", reg.addr)]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(e.contains("no such image") && e.contains(":nope"), "{e}");

    let out = env.skiff(&["pull", "-q", &format!("{}/test/other:v1", reg.addr)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));

    let missing = format!("sha256:{}", "0".repeat(64));
    let out = env.skiff(&["pull", &format!("{}/test/busybox@{missing}", reg.addr)]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));

    // Nobody listens on this port.
    let port = registry_support::free_port();
    let out = env.skiff(&["pull", &format!("127.0.0.1:{port}/x:1")]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the registry"),
        "{}",
        stderr(&out)
    );

    let out = env.skiff(&["pull", "127.0.0.1:5000/Bad:tag"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lowercase"), "{}", stderr(&out));

    // The D-Bus error names.
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &[
            &format!("{}/test/busybox:nope", reg.addr),
            "{'wait': <true>}",
        ],
    );
    assert!(
        stderr(&out).contains("org.skiff.Error.NoSuchImage"),
        "{}",
        stderr(&out)
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &["a//b", "{'wait': <true>}"],
    );
    assert!(
        stderr(&out).contains("org.skiff.Error.InvalidReference"),
        "{}",
        stderr(&out)
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &[&format!("127.0.0.1:{port}/x:1"), "{'wait': <true>}"],
    );
    assert!(
        stderr(&out).contains("org.skiff.Error.PullFailed"),
        "{}",
        stderr(&out)
    );
    let out = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.PullImage",
        &["x", "{'colour': <'red'>}"],
    );
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));
    // Nothing was recorded.
    let images = run_ok(&env, &["images"]);
    assert!(!images.contains("test/busybox"), "{images}");
}

#[test]
fn an_index_resolves_to_our_platform() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let dir = env.dir.path().join("multi");
    let layout = Layout::new(&dir);
    let other = if our_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    };
    let mut descs = Vec::new();
    for (arch, text) in [(other, "foreign\n"), (our_arch().as_str(), "native\n")] {
        let base = LayerBuilder::default().busybox().finish();
        let top = LayerBuilder::default()
            .file("arch", 0o644, text.as_bytes())
            .finish();
        descs.push(layout.image(&ImageSpec {
            arch: arch.to_string(),
            layers: vec![base, top],
            cmd: vec!["cat".into(), "/arch".into()],
        }));
    }
    let index = layout.index(&descs);
    layout.tag("multi", &index);
    let pushed = reg.push(&dir, "multi", "test/multi:1");
    let reference = format!("{}/test/multi:1", reg.addr);

    let (native_id, err) = pull_ok(&env, &[&reference]);
    let native_manifest = descs[1]["digest"].as_str().unwrap();
    assert!(err.contains(&format!("Digest: {native_manifest}")), "{err}");
    assert_eq!(run_ok(&env, &["run", "--rm", &reference]), "native\n");

    // The index digest pulls the same; --platform picks another one.
    let by_index = format!("{}/test/multi@{pushed}", reg.addr);
    let (same, _) = pull_ok(&env, &["-q", &by_index]);
    assert_eq!(same, native_id);
    // ... and names it afterwards (a repo digest, not a tag).
    assert_eq!(run_ok(&env, &["run", "--rm", &by_index]), "native\n");
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(&env, &["image", "inspect", &by_index])).unwrap();
    let inspect = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    assert_eq!(inspect["RepoTags"], serde_json::json!([reference]));
    assert!(
        inspect["RepoDigests"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!(by_index)),
        "{inspect}"
    );
    let (foreign_id, _) = pull_ok(
        &env,
        &["-q", "--platform", &format!("linux/{other}"), &reference],
    );
    assert_ne!(foreign_id, native_id);
    let out = env.skiff(&["pull", "--platform", "linux/mips64le", &reference]);
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("no image for the platform linux/mips64le") && e.contains(other),
        "{e}"
    );
    let out = env.skiff(&["pull", "--platform", "linux", &reference]);
    assert!(stderr(&out).contains("os/arch"), "{}", stderr(&out));
}

#[test]
fn a_pull_killed_midway_leaves_nothing_and_the_next_one_resumes() {
    let mut env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let dir = env.dir.path().join("big");
    let layout = Layout::new(&dir);
    let base = LayerBuilder::default().busybox().finish();
    let big = LayerBuilder::default()
        .file("big.bin", 0o644, &noise(8 << 20, 7))
        .finish();
    let desc = layout.image(&ImageSpec {
        arch: our_arch(),
        layers: vec![base, big],
        cmd: vec!["true".into()],
    });
    layout.tag("big", &desc);
    reg.push(&dir, "big", "test/big:1");
    let proxy = Throttle::start(&reg.addr);
    let reference = format!("{}/test/big:1", proxy.addr);

    let blobs = env.data().join("storage/blobs/sha256");
    let count = || std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
    // (Env::new imported demo/busybox: its blobs are there already.)
    let before = count();
    let mut child = env
        .skiff_cmd(&["pull", "-q", &reference])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Wait until the small blobs (config, busybox layer) are in the store and the big
    // one is on its way, then crash the daemon.
    assert!(
        env.eventually(60, || count() >= before + 2),
        "small blobs never arrived in {blobs:?}: {}",
        env.daemon_log()
    );
    std::thread::sleep(Duration::from_millis(300));
    env.kill_daemon();
    let _ = child.wait();
    let n = count();
    assert!(
        n < before + 3,
        "the big blob was not complete yet: {n} blobs"
    );

    env.start_daemon();
    let images = run_ok(&env, &["images"]);
    assert!(
        !images.contains("test/big"),
        "no half image visible:\n{images}"
    );

    proxy
        .slow
        .store(false, std::sync::atomic::Ordering::Relaxed);
    let (id, err) = pull_ok(&env, &[&reference]);
    assert!(
        err.contains("Fetched 1 blob(s)") && err.contains("skipped 2"),
        "{err}"
    );
    assert_eq!(
        run_ok(&env, &["run", "--rm", &id, "echo", "ok"]).trim(),
        "ok"
    );
}

#[test]
fn a_pull_by_digest_is_untagged_and_named_only_by_that_repository() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let layout = two_layer_image(&env, "layout");
    let pushed = reg.push(&layout, "v1", "test/busybox:v1");
    let by_digest = format!("{}/test/busybox@{pushed}", reg.addr);
    let (id, _) = pull_ok(&env, &["-q", &by_digest]);

    // Docker's view: the repository, TAG <none>; no '@' anywhere as a tag.
    let images = run_ok(&env, &["images"]);
    let row = images
        .lines()
        .find(|l| l.contains(&id[..12]))
        .unwrap_or_else(|| panic!("{id} not listed:\n{images}"));
    let cols: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cols[..2],
        [format!("{}/test/busybox", reg.addr).as_str(), "<none>"],
        "{images}"
    );
    assert!(!images.contains('@'), "{images}");
    // Untagged is dangling (docker's dangling: no tag).
    let dangling = run_ok(&env, &["images", "-q", "--filter", "dangling=true"]);
    assert!(dangling.contains(&id[..12]), "{dangling}");
    let inspect: serde_json::Value =
        serde_json::from_str(&run_ok(&env, &["image", "inspect", &by_digest])).unwrap();
    let inspect = if inspect.is_array() {
        &inspect[0]
    } else {
        &inspect
    };
    assert_eq!(inspect["RepoTags"], serde_json::json!([]), "{inspect}");
    assert_eq!(inspect["RepoDigests"], serde_json::json!([by_digest]));

    // It runs by digest; the same digest under another repository names nothing.
    assert_eq!(
        run_ok(&env, &["run", "--rm", &by_digest, "cat", "/etc/motd"]),
        "pulled\n"
    );
    for other in [
        format!("{}/test/other@{pushed}", reg.addr),
        format!("test/busybox@{pushed}"),
    ] {
        let out = env.skiff(&["image", "inspect", &other]);
        assert!(!out.status.success(), "{other} resolved");
        assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
    }

    // rmi by digest: its only name, so the image goes.
    let out = run_ok(&env, &["rmi", &by_digest]);
    assert!(out.contains(&id), "{out}");
    assert!(!run_ok(&env, &["images", "-q"]).contains(&id[..12]));
}

/// An rmi that comes while a pull has skipped a blob the removed image held neither
/// frees the blob under the pull (which then failed with a missing blob) nor waits for
/// the download: the pull pinned its blobs. The pull is stopped deterministically: the
/// answer to its request for the one blob it lacks is held until the rmi is done.
#[test]
fn rmi_during_a_pull_does_not_free_the_blobs_it_skipped() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let dir = env.dir.path().join("layout");
    let layout = Layout::new(&dir);
    let base = || LayerBuilder::default().busybox().finish();
    let a = layout.image(&ImageSpec {
        arch: our_arch(),
        layers: vec![base()],
        cmd: vec!["true".into()],
    });
    layout.tag("a", &a);
    let top = LayerBuilder::default()
        .file("hello", 0o644, b"b survived\n")
        .finish();
    let b = layout.image(&ImageSpec {
        arch: our_arch(),
        layers: vec![base(), top],
        cmd: vec!["cat".into(), "/hello".into()],
    });
    layout.tag("b", &b);
    reg.push(&dir, "a", "test/a:1");
    reg.push(&dir, "b", "test/b:1");
    let manifest: serde_json::Value = serde_json::from_slice(
        &std::fs::read(
            dir.join("blobs/sha256")
                .join(b["digest"].as_str().unwrap().trim_start_matches("sha256:")),
        )
        .unwrap(),
    )
    .unwrap();
    let layers = manifest["layers"].as_array().unwrap();
    let shared = layers[0]["digest"].as_str().unwrap().to_string();
    let own = layers[1]["digest"].as_str().unwrap();
    let a_ref = format!("{}/test/a:1", reg.addr);
    pull_ok(&env, &["-q", &a_ref]);
    let blob = env
        .data()
        .join("storage/blobs/sha256")
        .join(shared.trim_start_matches("sha256:"));
    assert!(blob.is_file(), "a's layer is b's base layer");

    let gate = Gate::start(&reg.addr, own.trim_start_matches("sha256:"));
    let b_ref = format!("{}/test/b:1", gate.addr);
    let pull = env
        .skiff_cmd(&["pull", &b_ref])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    assert!(
        env.eventually(60, || gate.seen()),
        "the pull never asked for its own layer: {}",
        env.daemon_log()
    );
    // The pull has decided the base layer is present. Now remove its only other user:
    // the rmi ends while the pull still waits for its download.
    let mut rmi = env
        .skiff_cmd(&["rmi", &a_ref])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let ended = env.eventually(60, || matches!(rmi.try_wait(), Ok(Some(_))));
    if !ended {
        gate.open();
    }
    assert!(ended, "the rmi waited for the pull's download");
    let removed = rmi.wait_with_output().unwrap();
    assert!(removed.status.success(), "{}", stderr(&removed));
    assert!(
        blob.is_file(),
        "the rmi freed the blob the pull counts on: {}",
        env.daemon_log()
    );
    gate.open();
    let pulled = pull.wait_with_output().unwrap();
    assert!(
        pulled.status.success(),
        "the pull failed: {}\n{}",
        stderr(&pulled),
        env.daemon_log()
    );
    assert!(
        stderr(&pulled).contains("skipped 1"),
        "the base layer was skipped: {}",
        stderr(&pulled)
    );
    assert!(blob.is_file(), "b still uses the shared layer blob");
    let images = run_ok(&env, &["images"]);
    assert!(!images.contains("test/a"), "{images}");
    assert_eq!(run_ok(&env, &["run", "--rm", &b_ref]), "b survived\n");
}
