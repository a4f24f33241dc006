//! End to end: skiffd's configuration file (`$XDG_CONFIG_HOME/skiff/skiffd.toml`),
//! flags over it, refusals with file:line, and SIGHUP reloads, as the unprivileged user.

mod common;
mod registry_support;

use std::path::PathBuf;
use std::process::Stdio;

use common::{bin, stderr, stdout, Env};
use registry_support::{Auth, ImageSpec, LayerBuilder, Layout, Registry};

fn config_file(env: &Env) -> PathBuf {
    let dir = env.dir.path().join("config/skiff");
    std::fs::create_dir_all(&dir).unwrap();
    dir.join("skiffd.toml")
}

/// Replaces the file atomically (a reload never reads half of it).
fn write_config(env: &Env, text: &str) {
    let path = config_file(env);
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &path).unwrap();
}

fn info(env: &Env) -> serde_json::Value {
    let out = env.skiff(&["info"]);
    assert!(out.status.success(), "skiff info: {}", stderr(&out));
    serde_json::from_str(&stdout(&out)).unwrap()
}

/// `(value, source)` of a configuration key in `skiff info`.
fn setting(env: &Env, key: &str) -> (serde_json::Value, String) {
    let i = info(env);
    let c = &i["config"][key];
    (
        c["value"].clone(),
        c["source"].as_str().unwrap_or("").to_string(),
    )
}

fn import_busybox(env: &Env) {
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "import failed: {}", stderr(&out));
}

fn run_out(env: &Env, args: &[&str]) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    let out = env.skiff(&all);
    assert!(
        out.status.success(),
        "skiff {all:?}: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    stdout(&out).trim().to_string()
}

fn hup(env: &Env) {
    let pid = env.daemon_pid();
    // SAFETY: a signal to the daemon this test started.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGHUP) }, 0);
}

#[test]
fn file_values_take_effect_and_flags_override_them() {
    let mut env = Env::bus_only();
    write_config(
        &env,
        "# skiffd's settings\nnetwork = \"none\"\ndefault-ulimits = [\"nofile=1000:1000\"]\n\
         log-opts = { max-size = \"1m\", max-file = \"2\" }\n",
    );
    env.start_daemon();
    import_busybox(&env);
    let i = info(&env);
    assert_eq!(
        i["config_file"].as_str(),
        Some(config_file(&env).to_str().unwrap()),
        "{i}"
    );
    assert_eq!(setting(&env, "network"), ("none".into(), "file".into()));
    assert_eq!(setting(&env, "storage-driver").1, "default");
    // The file's defaults reach a new container: its ulimit, its network, its log options.
    assert_eq!(
        run_out(&env, &["demo/busybox", "sh", "-c", "ulimit -n"]),
        "1000"
    );
    assert_eq!(
        run_out(&env, &["demo/busybox", "ls", "/sys/class/net"]),
        "lo",
        "network none from the file"
    );
    let out = env.skiff(&["create", "--name", "c1", "demo/busybox", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let c1 = env.inspect("c1");
    assert_eq!(
        c1["HostConfig"]["LogConfig"]["Config"]["max-size"], "1m",
        "{c1}"
    );
    // A container's own ulimit wins over the default.
    assert_eq!(
        run_out(
            &env,
            &[
                "--ulimit",
                "nofile=500:500",
                "demo/busybox",
                "sh",
                "-c",
                "ulimit -n"
            ]
        ),
        "500"
    );

    // Flags override the file.
    env.stop_daemon();
    env.start_daemon_with(&["--default-ulimit", "nofile=900:900"]);
    assert_eq!(
        setting(&env, "default-ulimits"),
        (serde_json::json!(["nofile=900:900"]), "flag".into())
    );
    assert_eq!(setting(&env, "network").1, "file");
    assert_eq!(
        run_out(&env, &["demo/busybox", "sh", "-c", "ulimit -n"]),
        "900"
    );
}

#[test]
fn unknown_keys_and_bad_values_are_refused_with_file_and_line() {
    let env = Env::bus_only();
    let start = |extra: &[&str]| {
        // A skiffd that took the file would serve on: `timeout` ends it (and the test fails).
        let out = std::process::Command::new(common::require("timeout"))
            .arg("20")
            .arg(bin("skiffd"))
            .args(extra)
            .envs(env.envs())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status, stderr(&out))
    };
    let path = config_file(&env);
    let path = path.to_str().unwrap();
    write_config(&env, "network = \"none\"\n\nlog-levle = \"debug\"\n");
    let (status, err) = start(&[]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("{path}:3:1: unknown key `log-levle`"))
            && err.contains("fix the file"),
        "{err}"
    );
    write_config(&env, "default-ulimits = [\"nofile=lots\"]\n");
    let (status, err) = start(&[]);
    assert!(!status.success(), "{err}");
    assert!(
        err.contains(&format!("{path}:1:19: key \"default-ulimits\"")),
        "{err}"
    );
    // --config names the file; a missing one is an error, not the defaults.
    let other = env.dir.path().join("other.toml");
    let (status, err) = start(&["--config", other.to_str().unwrap()]);
    assert!(!status.success() && err.contains("other.toml"), "{err}");
    // A bad flag too.
    write_config(&env, "");
    let (status, err) = start(&["--network", "wifi"]);
    assert!(!status.success() && err.contains("--network"), "{err}");
}

/// A `library/mirrored:v1` image in a local registry, which skiff reaches only as a
/// mirror of docker.io (there is no docker.io here).
fn mirror_registry(env: &Env) -> Registry {
    let reg = Registry::start(&env.dir.path().join("reg"), Auth::None);
    let dir = env.dir.path().join("layout");
    let layout = Layout::new(&dir);
    let desc = layout.image(&ImageSpec {
        arch: skiff::image::store::oci_arch().to_string(),
        layers: vec![LayerBuilder::default().busybox().finish()],
        cmd: vec!["true".into()],
    });
    layout.tag("v1", &desc);
    reg.push(&dir, "v1", "library/mirrored:v1");
    reg
}

#[test]
fn sighup_changes_the_log_level_and_a_registry_mirror_live() {
    let mut env = Env::bus_only();
    let reg = mirror_registry(&env);
    // The file's log level wins over the harness's RUST_LOG=debug.
    write_config(&env, "log-level = \"info\"\n");
    env.start_daemon();
    assert_eq!(setting(&env, "log-level"), ("info".into(), "file".into()));
    let out = env.skiff(&["pull", "mirrored:v1"]);
    assert!(!out.status.success(), "no docker.io and no mirror yet");
    assert!(
        !env.daemon_log().contains(" DEBUG "),
        "info level: {}",
        env.daemon_log()
    );

    write_config(
        &env,
        &format!(
            "log-level = \"debug\"\nregistry-mirrors = [\"{}\"]\n",
            reg.addr
        ),
    );
    hup(&env);
    assert!(
        env.eventually(20, || env.daemon_log().contains("reloaded")),
        "{}",
        env.daemon_log()
    );
    let log = env.daemon_log();
    assert!(
        log.contains("changed now: log-level, registry-mirrors"),
        "{log}"
    );
    assert_eq!(setting(&env, "log-level"), ("debug".into(), "file".into()));
    assert_eq!(
        setting(&env, "registry-mirrors"),
        (serde_json::json!([reg.addr]), "file".into())
    );
    let out = env.skiff(&["pull", "mirrored:v1"]);
    assert!(
        out.status.success(),
        "pull through the mirror: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    let log = env.daemon_log();
    assert!(
        log.contains(&format!("from the mirror {}", reg.addr)),
        "{log}"
    );
    assert!(log.contains(" DEBUG "), "debug level now: {log}");
}

#[test]
fn a_bad_file_on_reload_keeps_the_configuration_in_use() {
    let mut env = Env::bus_only();
    write_config(&env, "network = \"none\"\n");
    env.start_daemon();
    write_config(&env, "network = \"none\"\nbogus = 1\n");
    hup(&env);
    assert!(
        env.eventually(20, || env.daemon_log().contains("reload refused")),
        "{}",
        env.daemon_log()
    );
    let log = env.daemon_log();
    assert!(
        log.contains("skiffd.toml:2:1: unknown key `bogus`"),
        "{log}"
    );
    assert_eq!(setting(&env, "network"), ("none".into(), "file".into()));
    // A change that needs a restart is reported, and not applied.
    write_config(&env, "network = \"host\"\nstorage-driver = \"vfs\"\n");
    hup(&env);
    assert!(
        env.eventually(20, || env
            .daemon_log()
            .contains("take effect when skiffd restarts: storage-driver")),
        "{}",
        env.daemon_log()
    );
    assert_eq!(setting(&env, "network"), ("host".into(), "file".into()));
    let i = info(&env);
    assert_ne!(i["storage_driver"], "vfs", "{i}");
    assert_ne!(i["config"]["storage-driver"]["value"], "vfs", "{i}");
}

#[test]
fn layer_limits_from_the_file_reach_the_unpack_helper_and_reload_live() {
    let mut env = Env::bus_only();
    write_config(&env, "layer-max-entries = 10\n");
    env.start_daemon();
    let tar = env.busybox_tar();
    let import = || env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    let out = import();
    assert!(
        !out.status.success(),
        "a busybox tree has more than 10 entries"
    );
    assert!(
        stderr(&out).contains("limit of 10") && stderr(&out).contains("layer-max-entries"),
        "{}",
        stderr(&out)
    );
    write_config(&env, "layer-max-entries = 100000\n");
    hup(&env);
    assert!(
        env.eventually(20, || setting(&env, "layer-max-entries").0 == 100000),
        "{}",
        env.daemon_log()
    );
    let out = import();
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
}

/// A `docker-registry` on 127.0.0.1 that speaks only TLS, with a self-signed
/// certificate (no CA trusts it), holding `test/tls:v1`; killed on drop.
struct TlsRegistry {
    child: std::process::Child,
    addr: String,
}

impl Drop for TlsRegistry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tls_registry(env: &Env) -> TlsRegistry {
    use std::process::Command;
    let dir = env.dir.path().join("tlsreg");
    std::fs::create_dir_all(dir.join("storage")).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let out = Command::new(common::require("openssl"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", stderr(&out));
    let addr = format!("127.0.0.1:{}", registry_support::free_port());
    let config = format!(
        "version: 0.1\nlog:\n  level: info\nstorage:\n  filesystem:\n    rootdirectory: {}\n\
         http:\n  addr: {addr}\n  tls:\n    certificate: {}\n    key: {}\n",
        dir.join("storage").display(),
        cert.display(),
        key.display()
    );
    std::fs::write(dir.join("config.yml"), config).unwrap();
    let child = Command::new(common::require("docker-registry"))
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("registry.log")).unwrap())
        .spawn()
        .unwrap();
    let reg = TlsRegistry { child, addr };
    assert!(
        env.eventually(20, || std::net::TcpStream::connect(&reg.addr).is_ok()),
        "docker-registry did not listen"
    );
    let layout = env.dir.path().join("tlslayout");
    let l = Layout::new(&layout);
    let desc = l.image(&ImageSpec {
        arch: skiff::image::store::oci_arch().to_string(),
        layers: vec![LayerBuilder::default().busybox().finish()],
        cmd: vec!["true".into()],
    });
    l.tag("v1", &desc);
    let out = Command::new(common::require("skopeo"))
        .args([
            "--insecure-policy",
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
        ])
        .arg(format!("oci:{}:v1", layout.display()))
        .arg(format!("docker://{}/test/tls:v1", reg.addr))
        .env("TMPDIR", &dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "skopeo: {}", stderr(&out));
    reg
}

#[test]
fn insecure_registries_from_the_file_skip_tls_verification_after_a_reload() {
    let mut env = Env::bus_only();
    let reg = tls_registry(&env);
    let reference = format!("{}/test/tls:v1", reg.addr);
    env.start_daemon();
    let out = env.skiff(&["pull", &reference]);
    assert!(
        !out.status.success(),
        "a self-signed certificate is refused by default"
    );
    write_config(&env, &format!("insecure-registries = [\"{}\"]\n", reg.addr));
    hup(&env);
    assert!(
        env.eventually(20, || setting(&env, "insecure-registries").1 == "file"),
        "{}",
        env.daemon_log()
    );
    let out = env.skiff(&["pull", &reference]);
    assert!(
        out.status.success(),
        "insecure registry: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
}

/// A push that fails says "push", not "pull": the TLS hint names `push --tls-verify=false`
/// and the error travels as `org.skiff.Error.PushFailed`, for a TLS-only registry with a
/// self-signed certificate and for a loopback port nothing listens on. With
/// `--tls-verify=false` the same push goes through.
#[test]
fn a_failed_push_says_push_and_is_push_failed() {
    let mut env = Env::bus_only();
    let reg = tls_registry(&env);
    env.start_daemon();
    let tar = env.busybox_tar();
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dest = format!("{}/test/pushed:v1", reg.addr);

    let out = env.skiff(&["push", "demo/busybox", &dest]);
    assert!(
        !out.status.success(),
        "pushed over an untrusted certificate"
    );
    let e = stderr(&out);
    assert!(e.contains("push with --tls-verify=false"), "{e}");
    assert!(!e.contains("pull"), "{e}");

    let push = |dest: &str| {
        env.dbus_call(
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.PushImage",
            &["demo/busybox", dest, "{'wait': <true>}"],
        )
    };
    let out = push(&dest);
    assert!(
        stderr(&out).contains("GDBus.Error:org.skiff.Error.PushFailed: "),
        "{}",
        stderr(&out)
    );
    let unreachable = format!("127.0.0.1:{}/test/pushed:v1", registry_support::free_port());
    let out = push(&unreachable);
    let e = stderr(&out);
    assert!(
        e.contains("GDBus.Error:org.skiff.Error.PushFailed: ") && e.contains("cannot reach"),
        "{e}"
    );

    let out = env.skiff(&["push", "--tls-verify=false", "demo/busybox", &dest]);
    assert!(
        out.status.success(),
        "{}\n{}",
        stderr(&out),
        env.daemon_log()
    );
}
