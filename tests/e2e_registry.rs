//! End to end: the registry commands around `pull` — `--platform` refusals, auto-pull on
//! `run`/`create` (`--pull missing|always|never`) — against a real docker-registry on
//! 127.0.0.1, as the unprivileged user.

mod common;
mod registry_support;

use std::path::PathBuf;

use common::{stderr, stdout, Env};
use registry_support::{Auth, ImageSpec, LayerBuilder, Layout, Registry};

fn our_arch() -> String {
    skiff::image::store::oci_arch().to_string()
}

/// An architecture that is not ours.
fn other_arch() -> &'static str {
    if our_arch() == "s390x" {
        "ppc64le"
    } else {
        "s390x"
    }
}

/// A busybox image for `arch` whose CMD prints `text`, tagged `tag` in a new layout.
fn image(env: &Env, name: &str, arch: &str, text: &str) -> (PathBuf, serde_json::Value) {
    let dir = env.dir.path().join(name);
    let layout = Layout::new(&dir);
    let base = LayerBuilder::default().busybox().finish();
    let top = LayerBuilder::default()
        .file("text", 0o644, text.as_bytes())
        .finish();
    let desc = layout.image(&ImageSpec {
        arch: arch.to_string(),
        layers: vec![base, top],
        cmd: vec!["cat".into(), "/text".into()],
    });
    layout.tag("v1", &desc);
    (dir, desc)
}

fn ok(env: &Env, args: &[&str]) -> (String, String) {
    let out = env.skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?} failed: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    (stdout(&out), stderr(&out))
}

fn image_count(env: &Env) -> usize {
    let (out, _) = ok(env, &["images", "-q"]);
    out.lines().filter(|l| !l.trim().is_empty()).count()
}

#[test]
fn a_platform_the_registry_does_not_have_is_refused() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let other = other_arch();
    let base = image_count(&env);

    // A single-platform image whose config says another architecture: refused with
    // --platform naming ours, and stored nothing.
    let (dir, _) = image(&env, "foreign", other, "foreign\n");
    reg.push(&dir, "v1", "test/foreign:1");
    let reference = format!("{}/test/foreign:1", reg.addr);
    let ours = format!("linux/{}", our_arch());
    let out = env.skiff(&["pull", "--platform", &ours, &reference]);
    assert!(!out.status.success(), "pulled a {other} image as {ours}");
    let e = stderr(&out);
    assert!(
        e.contains(&format!("no image for the platform {ours}"))
            && e.contains(&format!("only an image for linux/{other}")),
        "{e}"
    );
    assert_eq!(image_count(&env), base, "nothing was stored");
    // Asked for by its own platform, it is pulled.
    ok(
        &env,
        &[
            "pull",
            "-q",
            "--platform",
            &format!("linux/{other}"),
            &reference,
        ],
    );
    assert_eq!(image_count(&env), base + 1);
    // Without --platform it is taken with a warning, as docker does.
    let env2 = Env::new();
    let (_, err) = ok(&env2, &["pull", &reference]);
    assert!(err.contains("does not match this host's"), "{err}");

    // An index without the platform asked for: refused, naming what it has.
    let dir = env.dir.path().join("multi");
    let layout = Layout::new(&dir);
    let mut descs = Vec::new();
    for (arch, text) in [(other, "foreign\n"), (our_arch().as_str(), "native\n")] {
        let base = LayerBuilder::default().busybox().finish();
        let top = LayerBuilder::default()
            .file("text", 0o644, text.as_bytes())
            .finish();
        descs.push(layout.image(&ImageSpec {
            arch: arch.to_string(),
            layers: vec![base, top],
            cmd: vec!["cat".into(), "/text".into()],
        }));
    }
    let index = layout.index(&descs);
    layout.tag("multi", &index);
    reg.push(&dir, "multi", "test/multi:1");
    let multi = format!("{}/test/multi:1", reg.addr);
    for cmd in [
        vec!["pull", "--platform", "linux/mips64le", multi.as_str()],
        vec![
            "run",
            "--rm",
            "--platform",
            "linux/mips64le",
            multi.as_str(),
        ],
    ] {
        let out = env.skiff(&cmd);
        assert!(!out.status.success(), "{cmd:?}");
        let e = stderr(&out);
        assert!(
            e.contains("no image for the platform linux/mips64le")
                && e.contains(&format!("linux/{other}"))
                && e.contains(&ours),
            "{cmd:?}: {e}"
        );
    }
    assert_eq!(image_count(&env), base + 1, "nothing more was stored");
}

#[test]
fn run_and_create_pull_a_missing_image_as_the_pull_policy_says() {
    let env = Env::new();
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let (one, _) = image(&env, "one", &our_arch(), "one\n");
    reg.push(&one, "v1", "test/app:1");
    let reference = format!("{}/test/app:1", reg.addr);

    // --pull never of a missing image: docker's error and exit code, nothing pulled.
    for cmd in ["run", "create"] {
        let out = env.skiff(&[cmd, "--pull", "never", &reference]);
        assert_eq!(out.status.code(), Some(125), "{cmd}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(&format!("No such image: {reference}")),
            "{}",
            stderr(&out)
        );
    }
    assert_eq!(reg.blob_gets(), 0, "--pull never reached the registry");

    // Missing (the default): pulled with the pull's summary on stderr, then run; stdout
    // is the container's alone.
    let out = env.skiff(&["run", "--rm", &reference]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    assert_eq!(stdout(&out), "one\n");
    let e = stderr(&out);
    assert!(
        e.contains(&format!("Unable to find image '{reference}' locally"))
            && e.contains("Fetched 3 blob(s)"),
        "{e}"
    );
    let gets = reg.blob_gets();
    assert_eq!(gets, 3);

    // The tag moves on in the registry; present locally, the default does not pull.
    let (two, _) = image(&env, "two", &our_arch(), "two\n");
    reg.push(&two, "v1", "test/app:1");
    let (out, e) = ok(&env, &["run", "--rm", &reference]);
    assert_eq!(out, "one\n");
    assert!(!e.contains("Unable to find"), "{e}");
    assert_eq!(reg.blob_gets(), gets, "nothing pulled");
    let (out, _) = ok(&env, &["run", "--rm", "--pull", "never", &reference]);
    assert_eq!(out, "one\n");

    // always: pulled again (the new top layer and config only), then run.
    let (out, e) = ok(&env, &["run", "--rm", "--pull", "always", &reference]);
    assert_eq!(out, "two\n");
    assert!(
        e.contains("Fetched 2 blob(s)") && e.contains("skipped 1"),
        "{e}"
    );

    // create pulls too, and prints only the container id on stdout.
    let other = format!("{}/test/other:1", reg.addr);
    reg.push(&one, "v1", "test/other:1");
    let (out, e) = ok(&env, &["create", "--name", "c1", &other]);
    assert_eq!(out.trim().len(), 64, "only the id on stdout: {out:?}");
    assert!(e.contains("Unable to find image"), "{e}");
    let (out, _) = ok(&env, &["start", "-a", "c1"]);
    assert_eq!(out, "one\n");

    // A pull that fails fails the run with docker's 125.
    let out = env.skiff(&["run", "--rm", &format!("{}/test/nope:1", reg.addr)]);
    assert_eq!(out.status.code(), Some(125), "{}", stderr(&out));
    assert!(stderr(&out).contains("no such image"), "{}", stderr(&out));
}
