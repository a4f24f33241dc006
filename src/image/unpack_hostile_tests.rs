//! Tests of `unpack.rs` with hostile archives: `..`, absolute names, hard links and
//! symlinks leading out, whiteouts that escape or smuggle overlay xattrs, and the
//! limits, each refused before anything is written outside the target.

use super::*;

#[test]
fn parent_dir_components_fail_the_import() {
    for path in ["../evil", "a/../../evil", "./a/../b"] {
        let mut t = Tar::new();
        t.file(path, 0o644, b"x");
        let (tmp, _d, r) = unpack(&t.bytes(), &opts());
        assert!(expect_unsafe(r, path).contains("'..'"));
        assert!(!tmp.path().join("evil").exists());
    }
}

#[test]
fn absolute_paths_fail_the_import() {
    let mut t = Tar::new();
    t.file("ok", 0o644, b"fine");
    t.file("/tmp/skiff-absolute-test", 0o644, b"x");
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    assert!(expect_unsafe(r, "/tmp/skiff-absolute-test").contains("absolute"));
    assert!(!Path::new("/tmp/skiff-absolute-test").exists());
}

#[test]
fn hard_links_that_escape_fail_the_import() {
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret");
    fs::write(&secret, "s").unwrap();
    let cases = [
        ("abs", secret.to_str().unwrap().to_string(), "absolute"),
        ("up", "../secret".to_string(), "'..'"),
        ("via", "out/secret".to_string(), "outside the layer"),
    ];
    for (name, target, why) in cases {
        let mut t = Tar::new();
        t.symlink("out", outside.path().to_str().unwrap());
        t.hardlink(name, &target);
        let (_t, dest, r) = unpack(&t.bytes(), &opts());
        let reason = expect_unsafe(r, name);
        assert!(
            reason.contains("hard link target") && reason.contains(why),
            "{reason}"
        );
        assert!(!dest.join(name).exists());
        assert_eq!(fs::metadata(&secret).unwrap().nlink(), 1);
    }
    let mut t = Tar::new();
    t.hardlink("dangling", "missing");
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    assert!(matches!(r, Err(Error::InvalidLayer { .. })), "{r:?}");
}

#[test]
fn symlink_then_write_through_never_touches_the_host() {
    let outside = tempfile::tempdir().unwrap();
    let missing = outside.path().join("not-there");
    for target in [outside.path(), missing.as_path()] {
        let mut t = Tar::new();
        t.symlink("evil", target.to_str().unwrap());
        t.file("evil/x", 0o644, b"pwned");
        let (_t, dest, r) = unpack(&t.bytes(), &opts());
        let reason = expect_unsafe(r, "evil/x");
        assert!(reason.contains("\"evil\""), "{reason}");
        assert!(!outside.path().join("x").exists());
        assert!(!missing.exists());
        assert!(fs::symlink_metadata(dest.join("evil"))
            .unwrap()
            .is_symlink());
    }
    // The same through a deferred directory entry.
    let mut t = Tar::new();
    t.symlink("evil", outside.path().to_str().unwrap());
    t.dir("evil/sub/", 0o755);
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    expect_unsafe(r, "evil/sub/");
    assert!(!outside.path().join("sub").exists());
}

#[test]
fn tar_crate_itself_refuses_writing_through_an_outside_symlink() {
    // Our own checks run first; this pins the second line of defence we rely on.
    let outside = tempfile::tempdir().unwrap();
    let mut t = Tar::new();
    t.symlink("evil", outside.path().to_str().unwrap());
    t.file("evil/x", 0o644, b"pwned");
    let bytes = t.bytes();
    let dest = tempfile::tempdir().unwrap();
    let mut ar = Archive::new(&bytes[..]);
    let mut results = Vec::new();
    for e in ar.entries().unwrap() {
        results.push(e.unwrap().unpack_in(dest.path()).map_err(|e| e.to_string()));
    }
    assert!(results[0].is_ok());
    let err = results[1].as_ref().unwrap_err();
    assert!(err.contains("outside of destination"), "{err}");
    assert!(!outside.path().join("x").exists());
}

#[test]
fn whiteouts_cannot_escape_or_smuggle_overlay_xattrs() {
    let mut t = Tar::new();
    t.raw("../.wh.x", EntryType::Regular, 0o644, "", b"");
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    expect_unsafe(r, "../.wh.x");

    let mut t = Tar::new();
    t.symlink("out", "/tmp");
    t.file("out/.wh.victim", 0o644, b"");
    let (_t, _d, r) = unpack(&t.bytes(), &opts());
    expect_unsafe(r, "out/.wh.victim");

    let mut t = Tar::new();
    t.xattr("user.overlay.opaque", b"y");
    t.dir("d", 0o755);
    let (_t, dest, r) = unpack(&t.bytes(), &opts());
    let stats = r.unwrap();
    assert!(
        stats
            .warnings
            .iter()
            .any(|w| w.contains("user.overlay.opaque")),
        "{:?}",
        stats.warnings
    );
    let p = CString::new(dest.join("d").as_os_str().as_bytes()).unwrap();
    // SAFETY: NUL-terminated strings, no buffer (size query).
    let n = unsafe {
        libc::lgetxattr(
            p.as_ptr(),
            c"user.overlay.opaque".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    assert!(n < 0, "the layer's own overlay xattr was applied");
}

#[test]
fn limits_are_enforced_before_writing() {
    let mut t = Tar::new();
    for i in 0..5 {
        t.file(&format!("f{i}"), 0o644, b"0123456789");
    }
    let bytes = t.bytes();
    let o = UnpackOptions {
        max_entries: 3,
        ..opts()
    };
    let (_t, dest, r) = unpack(&bytes, &o);
    let e = r.unwrap_err();
    assert!(matches!(&e, Error::LimitExceeded { what, limit: 3 } if what == "max_entries"));
    assert!(e.to_string().contains("max_entries"), "{e}");
    assert!(dest.join("f2").exists() && !dest.join("f3").exists());

    let o = UnpackOptions {
        max_bytes: 25,
        ..opts()
    };
    let (_t, dest, r) = unpack(&bytes, &o);
    let e = r.unwrap_err();
    assert!(matches!(&e, Error::LimitExceeded { what, limit: 25 } if what == "max_bytes"));
    assert!(dest.join("f1").exists() && !dest.join("f2").exists());

    let o = UnpackOptions {
        max_entries: 5,
        max_bytes: 50,
        ..opts()
    };
    let (_t, _d, r) = unpack(&bytes, &o);
    assert_eq!(r.unwrap().size, 50);
}
