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
    let mut described = std::collections::BTreeMap::new();
    skiff_interfaces(DESCRIPTION, &mut described);
    let expected: String = described.into_values().collect();
    assert_eq!(
        actual.trim(),
        expected.trim(),
        "the D-Bus API changed: if that is intended, put the interfaces above into data/org.skiff.skiff1.xml (inside its <node>; and bump APIVersion for additions)"
    );
}

/// The checked-in description.
const DESCRIPTION: &str = include_str!("../data/org.skiff.skiff1.xml");

/// The description is an introspection document code generators read: well-formed XML
/// (python3's expat parser, which is strict about it; gdbus-codegen is not installed on
/// the test machines), the introspection DOCTYPE, one `<node>` root holding the seven
/// interfaces.
#[test]
fn the_description_is_a_well_formed_introspection_document() {
    let script = "import sys, xml.etree.ElementTree as E\n\
                  root = E.parse(sys.argv[1]).getroot()\n\
                  print(root.tag)\n\
                  for c in root: print(c.tag, c.get('name'))\n";
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/org.skiff.skiff1.xml");
    // The tests may run as another user from a copy of the test binary: parse the text
    // the test was built with.
    let copy = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(copy.path(), DESCRIPTION).unwrap();
    let out = std::process::Command::new(common::require("python3"))
        .args(["-c", script])
        .arg(copy.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{path} is not well-formed XML: {}",
        stderr(&out)
    );
    assert_eq!(
        stdout(&out),
        "node\n\
         interface org.skiff.skiff1.Container\n\
         interface org.skiff.skiff1.Exec\n\
         interface org.skiff.skiff1.Image\n\
         interface org.skiff.skiff1.Job\n\
         interface org.skiff.skiff1.Manager\n\
         interface org.skiff.skiff1.Volume\n\
         interface org.skiff.skiff1.Volumes\n"
    );
    assert!(
        DESCRIPTION.starts_with(
            "<!DOCTYPE node PUBLIC \"-//freedesktop//DTD D-BUS Object Introspection 1.0//EN\""
        ),
        "no introspection DOCTYPE"
    );
}

/// The methods of `top`, `stats` and `system df`, as a D-Bus client other than the CLI
/// sees them.
#[test]
fn top_stats_and_disk_usage_over_the_bus() {
    let env = Env::new();
    let run = env.skiff(&[
        "run",
        "-d",
        "--name",
        "sleeper",
        "demo/busybox",
        "sleep",
        "100",
    ]);
    assert!(run.status.success(), "{}", stderr(&run));
    let created = env.skiff(&["create", "--name", "idle", "demo/busybox", "true"]);
    assert!(created.status.success(), "{}", stderr(&created));
    let path_of = |name: &str| {
        let out = env.dbus_call(
            "/org/skiff/skiff1",
            "org.skiff.skiff1.Manager.GetContainer",
            &[name],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
            .split('\'')
            .find(|s| s.starts_with("/org/skiff/skiff1/container/"))
            .unwrap()
            .to_string()
    };
    let sleeper = path_of("sleeper");
    let stats = env.dbus_call(&sleeper, "org.skiff.skiff1.Container.Stats", &[]);
    assert!(stats.status.success(), "{}", stderr(&stats));
    let text = stdout(&stats);
    for want in [
        "'running': <true>",
        "'name': <'sleeper'>",
        "'pids': <uint64 1>",
        "'cpu': <uint64 ",
        "'read': <uint64 ",
        "'memory': <uint64 ",
        "'sources': <'",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
    let idle = env.dbus_call(&path_of("idle"), "org.skiff.skiff1.Container.Stats", &[]);
    let text = stdout(&idle);
    assert!(
        text.contains("'running': <false>") && !text.contains("'cpu'"),
        "{text}"
    );
    let top = env.dbus_call(
        &sleeper,
        "org.skiff.skiff1.Container.Top",
        &["['-o', 'pid,comm']"],
    );
    assert!(top.status.success(), "{}", stderr(&top));
    let text = stdout(&top);
    assert!(
        text.contains("['PID', 'COMMAND']") && text.contains("'sleep'"),
        "{text}"
    );
    let du = env.dbus_call(
        "/org/skiff/skiff1",
        "org.skiff.skiff1.Manager.DiskUsage",
        &[],
    );
    assert!(du.status.success(), "{}", stderr(&du));
    let text = stdout(&du);
    for want in [
        "LayersSize",
        "\"SizeRw\"",
        "\"BuildCache\":[]",
        "\"/sleeper\"",
    ] {
        assert!(text.contains(want), "{want}: {text}");
    }
}
