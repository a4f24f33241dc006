//! The API stability gate: the interfaces skiffd exports must match the checked-in
//! description in data/org.skiff.skiff1.xml (doc comments aside). A deliberate change to
//! the API updates that file in the same commit (and bumps APIVersion for additions).

mod common;

use common::{stderr, stdout, Env};

/// The `org.skiff.skiff1.*` interfaces found in an introspection (zbus includes the
/// whole subtree), each once, by name, without comments.
fn skiff_interfaces(xml: &str, found: &mut std::collections::BTreeMap<String, String>) {
    let mut out = String::new();
    let mut name = String::new();
    let mut in_comment = false;
    let mut in_iface = false;
    for line in xml.lines() {
        let t = line.trim();
        if t.starts_with("<!--") {
            in_comment = !t.ends_with("-->");
            continue;
        }
        if in_comment {
            in_comment = !t.ends_with("-->");
            continue;
        }
        if t.starts_with("<interface name=\"org.skiff.skiff1.") {
            in_iface = true;
            name = t.to_string();
            out.clear();
        }
        if in_iface && !t.is_empty() {
            out.push_str(t);
            out.push('\n');
        }
        if in_iface && t == "</interface>" {
            in_iface = false;
            found.insert(name.clone(), out.clone());
        }
    }
}

#[test]
fn exported_interfaces_match_the_checked_in_description() {
    let env = Env::new();
    let created = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.CreateContainer",
        &["{'image': <'demo/busybox'>, 'command': <['true']>}", "0"],
    );
    assert!(created.status.success(), "{}", stderr(&created));
    let container = stdout(&created)
        .split('\'')
        .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
        .unwrap()
        .to_string();
    let image = stdout(&env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.GetImage",
        &["demo/busybox"],
    ))
    .split('\'')
    .find(|s| s.starts_with("/org/skiff/skiff1/image/"))
    .unwrap()
    .to_string();
    // An exec's object lingers for a minute after it ended.
    let run = env.skiff(&[
        "run",
        "-d",
        "--name",
        "gate",
        "demo/busybox",
        "sleep",
        "100",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    assert!(env.eventually(5, || env.inspect("gate")["State"]["Status"] == "running"));
    assert!(env.skiff(&["exec", "gate", "true"]).status.success());
    assert!(env.skiff(&["volume", "create", "gatevol"]).status.success());
    // The import of Env::new() was job 1; its object lingers for a minute.
    let mut found = std::collections::BTreeMap::new();
    for path in [
        "/org/skiff/skiff1",
        container.as_str(),
        image.as_str(),
        "/org/skiff/skiff1/job/1",
        "/org/skiff/skiff1/volume/gatevol",
    ] {
        let out = std::process::Command::new(common::require("gdbus"))
            .args([
                "introspect",
                "--address",
                &env.address,
                "--dest",
                "org.skiff.skiff1",
                "--object-path",
                path,
                "--xml",
            ])
            .output()
            .unwrap();
        assert!(out.status.success(), "{path}: {}", stderr(&out));
        skiff_interfaces(&stdout(&out), &mut found);
    }
    let actual: String = found.into_values().collect();
    assert_eq!(actual.matches("<interface ").count(), 7, "{actual}");
    let expected = include_str!("../data/org.skiff.skiff1.xml");
    assert_eq!(
        actual.trim(),
        expected.trim(),
        "the D-Bus API changed: if that is intended, replace data/org.skiff.skiff1.xml with the text above (and bump APIVersion for additions)"
    );
}
