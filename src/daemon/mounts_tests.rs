//! Unit tests of the mount specs' parsing (`mounts.rs`).

use super::*;

#[test]
fn bind_strings() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display().to_string();
    let p = parse_bind(&format!("{d}:/src:ro,Z")).unwrap();
    assert_eq!(
        (p.kind, p.readonly, p.target.as_str()),
        (Kind::Bind, true, "/src")
    );
    assert_eq!(p.propagation, "rprivate");
    let p = parse_bind("data:/var/lib/x/").unwrap();
    assert_eq!(
        (p.kind, p.anonymous, p.target.as_str()),
        (Kind::Volume, false, "/var/lib/x")
    );
    let p = parse_bind("/scratch").unwrap();
    assert_eq!((p.kind, p.anonymous), (Kind::Volume, true));
    for (bad, needle) in [
        ("./rel:/x", "includes invalid characters"),
        (
            "/does/not/exist/skiff:/x",
            "bind source path does not exist: /does/not/exist/skiff",
        ),
        ("v:rel", "mount path must be absolute"),
        ("v:/", "destination can't be '/'"),
        ("v:/x:bogus", "invalid mode: bogus"),
        ("a:b:c:d", "invalid volume specification"),
        ("v:/a/../b", "must not contain"),
    ] {
        let e = parse_bind(bad).unwrap_err().to_string();
        assert!(e.contains(needle), "{bad}: {e}");
    }
}

#[test]
fn mount_objects_and_tmpfs() {
    let m = MountConfig {
        typ: "tmpfs".into(),
        target: "/run".into(),
        tmpfs_size: Some("1m".into()),
        tmpfs_mode: Some("1777".into()),
        ..Default::default()
    };
    let p = parse_mount(&m).unwrap();
    assert!(p.tmpfs_options.contains(&"size=1048576".to_string()));
    let bad = MountConfig {
        typ: "tmpfs".into(),
        source: Some("x".into()),
        target: "/run".into(),
        ..Default::default()
    };
    assert!(parse_mount(&bad)
        .unwrap_err()
        .to_string()
        .contains("Source"));
    let bad = MountConfig {
        typ: "nfs".into(),
        target: "/run".into(),
        ..Default::default()
    };
    assert!(parse_mount(&bad)
        .unwrap_err()
        .to_string()
        .contains("mount type unknown"));
    let p = parse_tmpfs("/t", "size=16m,exec").unwrap();
    assert!(p.tmpfs_options.contains(&"size=16777216".to_string()));
    assert!(parse_tmpfs("/t", "size=lots").is_err());
    assert!(parse_tmpfs("/t", "frob")
        .unwrap_err()
        .to_string()
        .contains("frob"));
}

#[test]
fn duplicates_and_image_volumes() {
    let cfg = ContainerConfig {
        image: "x".into(),
        binds: vec!["a:/d".into(), "b:/d/".into()],
        ..Default::default()
    };
    assert!(plan(&cfg)
        .unwrap_err()
        .to_string()
        .contains("Duplicate mount point: /d"));
    let mut p = vec![parse_bind("a:/data").unwrap()];
    add_image_volumes(&mut p, &["/data".into(), "/logs".into()]);
    assert_eq!(p.len(), 2);
    assert!(p[1].anonymous && p[1].target == "/logs");
}
