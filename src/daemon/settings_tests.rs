use super::*;

fn load(text: &str, flags: &Flags) -> Result<Settings, SettingsError> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiffd.toml");
    std::fs::write(&path, text).unwrap();
    Settings::load(&path, true, flags, |_| None)
}

#[test]
fn defaults_without_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Settings::load(
        &dir.path().join("none.toml"),
        false,
        &Flags::default(),
        |_| None,
    )
    .unwrap();
    assert_eq!(s.file, None);
    assert_eq!(s.network, Mode::Slirp4netns);
    assert_eq!(s.log_level, "info");
    assert!(s.sources.values().all(|v| *v == Source::Default));
    // --config names a file that must exist.
    assert!(Settings::load(
        &dir.path().join("none.toml"),
        true,
        &Flags::default(),
        |_| None
    )
    .is_err());
}

#[test]
fn file_values_and_flags_over_them() {
    let text = r#"
# a comment
storage-driver = "vfs"
network = "none"
log-level = "debug"
registry-mirrors = ["https://mirror.example:5000/"]
insecure-registries = ["reg.lan:5000"]
default-ulimits = ["nofile=1000:2000"]
log-opts = { max-size = "1m", max-file = "2" }
layer-max-entries = 10
layer-max-bytes = "1m"
"#;
    let s = load(text, &Flags::default()).unwrap();
    assert_eq!(s.storage_driver, Some(RootfsDriver::Vfs));
    assert_eq!(s.network, Mode::None);
    assert_eq!(s.registry_mirrors, vec!["mirror.example:5000"]);
    assert!(s.is_insecure("reg.lan:5000"));
    assert_eq!(s.layer_max_bytes, 1 << 20);
    assert_eq!(s.layer_max_entries, 10);
    assert!(s.sources.values().all(|v| *v == Source::File));
    let flags = Flags {
        network: Some("host".into()),
        default_ulimits: vec!["nproc=5".into()],
        ..Default::default()
    };
    let s = load(text, &flags).unwrap();
    assert_eq!(s.network, Mode::Host);
    assert_eq!(s.default_ulimits, vec!["nproc=5"]);
    assert_eq!(s.source("network"), Source::Flag);
    assert_eq!(s.source("log-level"), Source::File);
    let d = s.describe();
    assert_eq!(d["network"]["source"], "flag");
    assert_eq!(d["network"]["value"], "host");
}

#[test]
fn errors_name_file_line_and_column() {
    for (text, line, col, needle) in [
        ("network = \"none\"\ncolour = \"red\"\n", 2, 1, "colour"),
        ("\n\nstorage-driver = \"zfs\"\n", 3, 18, "storage-driver"),
        ("log-opts = { size = \"1m\" }\n", 1, 12, "log-opts"),
        (
            "default-ulimits = [\"nofile=x\"]\n",
            1,
            19,
            "default-ulimits",
        ),
        ("layer-max-entries = -1\n", 1, 21, "layer-max-entries"),
        ("network = [\n", 1, 12, ""),
    ] {
        let e = load(text, &Flags::default()).unwrap_err().to_string();
        assert!(
            e.contains(&format!("skiffd.toml:{line}:{col}: ")) && e.contains(needle),
            "{text:?}: {e}"
        );
        assert!(e.contains("fix the file"), "{e}");
    }
    let e = load(
        "",
        &Flags {
            network: Some("wifi".into()),
            ..Default::default()
        },
    )
    .unwrap_err()
    .to_string();
    assert!(e.starts_with("--network: "), "{e}");
}

#[test]
fn reload_diff_and_container_defaults() {
    let a = load("network = \"none\"\n", &Flags::default()).unwrap();
    let b = load(
        "network = \"host\"\nstorage-driver = \"vfs\"\ndefault-ulimits = [\"nofile=5\", \"nproc=7\"]\nlog-opts = { max-size = \"1m\" }\n",
        &Flags::default(),
    )
    .unwrap();
    let (live, restart) = a.reload_diff(&b);
    assert_eq!(live, vec!["network", "default-ulimits", "log-opts"]);
    assert_eq!(restart, vec!["storage-driver"]);
    let mut cfg = crate::daemon::ContainerConfig {
        ulimits: vec!["nproc=9".into()],
        ..Default::default()
    };
    b.apply_container_defaults(&mut cfg);
    assert_eq!(cfg.ulimits, vec!["nofile=5", "nproc=9"]);
    assert_eq!(cfg.log_opts["max-size"], "1m");
}

#[test]
fn environment_below_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("skiffd.toml");
    let env = |k: &str| match k {
        "RUST_LOG" => Some("warn".to_string()),
        "SKIFF_LAYER_MAX_ENTRIES" => Some("7".to_string()),
        _ => None,
    };
    let s = Settings::load(&path, false, &Flags::default(), env).unwrap();
    assert_eq!(
        (s.log_level.as_str(), s.source("log-level")),
        ("warn", Source::Env)
    );
    assert_eq!(s.layer_max_entries, 7);
    std::fs::write(&path, "log-level = \"debug\"\n").unwrap();
    let s = Settings::load(&path, false, &Flags::default(), env).unwrap();
    assert_eq!(
        (s.log_level.as_str(), s.source("log-level")),
        ("debug", Source::File)
    );
}
