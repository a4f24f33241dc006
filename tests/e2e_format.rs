//! `--format` Go templates on real containers, images and volumes (every docker field
//! and template function), `table` alignment, template errors; history's columns,
//! `run -it` without a terminal, usage exit codes. Inspect's shapes are in
//! e2e_format_inspect.rs.

mod common;
mod format_support;
mod image_support;

use std::io::BufRead;
use std::process::Stdio;

use common::{stderr, Env};
use format_support::{fails, ok, setup};

#[test]
fn ps_fields_functions_and_tables() {
    let (env, id) = setup();
    let out = ok(
        &env,
        &[
            "ps",
            "--format",
            "{{.ID}}|{{.Names}}|{{.Image}}|{{.Command}}|{{.State}}|{{.Labels}}|{{.Mounts}}|{{.Networks}}|{{.LocalVolumes}}",
        ],
    );
    assert_eq!(
        out,
        format!(
            "{}|web|demo/busybox|\"sleep 1000\"|running|a=1,b=2|vol1|none|1\n",
            &id[..12]
        )
    );
    let out = ok(
        &env,
        &[
            "ps",
            "--format",
            "{{.Status}}|{{.RunningFor}}|{{.CreatedAt}}",
        ],
    );
    let parts: Vec<&str> = out.trim().split('|').collect();
    assert!(parts[0].starts_with("Up "), "{out}");
    assert!(parts[1].ends_with(" ago"), "{out}");
    // docker's time format: 2024-01-02 15:04:05 +0000 UTC
    let at = parts[2];
    assert!(
        at.len() == 29 && at.ends_with(" +0000 UTC") && at.as_bytes()[10] == b' ',
        "{at}"
    );
    // -a, --no-trunc, and docker's \t.
    let out = ok(
        &env,
        &["ps", "-a", "--no-trunc", "--format", "{{.Names}}\\t{{.ID}}"],
    );
    assert!(out.contains(&format!("web\t{id}\n")), "{out:?}");
    assert!(out.contains("idle\t"), "{out:?}");
    // {{json .}} and json: docker's row fields.
    let line = ok(&env, &["ps", "--format", "{{json .}}"]);
    let v: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(v["Names"], "web");
    assert_eq!(v["Labels"], "a=1,b=2");
    let json = ok(&env, &["ps", "--format", "json"]);
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(json.trim()).unwrap(),
        v
    );
    // table TEMPLATE: docker's headers, columns aligned as Go's tabwriter does (each
    // column as wide as its widest cell plus 3, at least 10).
    let out = ok(
        &env,
        &[
            "ps",
            "-a",
            "--format",
            "table {{.Names}}\t{{.State}}\t{{.ID}}",
        ],
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert_eq!(lines[0], "NAMES     STATE     CONTAINER ID", "{out}");
    for l in &lines[1..] {
        assert_eq!(l.len(), 32, "{out}");
        assert!(["web", "idle"].contains(&l[..10].trim_end()), "{out}");
        assert!(
            ["running", "created"].contains(&l[10..20].trim_end()),
            "{out}"
        );
        assert!(l[20..].chars().all(|c| c.is_ascii_hexdigit()), "{out}");
    }
    // The default table is docker's.
    let out = ok(&env, &["ps"]);
    assert!(out.starts_with("CONTAINER ID   IMAGE"), "{out}");
    let header = out.lines().next().unwrap();
    let row = out.lines().nth(1).unwrap();
    // (PORTS is empty: --network none.)
    for col in ["IMAGE", "COMMAND", "CREATED", "STATUS", "NAMES"] {
        let at = header.find(col).unwrap();
        assert_ne!(row.as_bytes()[at], b' ', "{col} misaligned:\n{out}");
        assert_eq!(row.as_bytes()[at - 1], b' ', "{col} misaligned:\n{out}");
    }
    let again = ok(&env, &["ps", "--format", "table"]);
    assert_eq!(again.lines().next(), Some(header));
    // Functions on a row.
    let out = ok(
        &env,
        &[
            "ps",
            "--format",
            "{{upper .Names}} {{lower \"AB\"}} {{title .State}} {{len .Names}} {{index (split .Labels \",\") 1}} {{join (split .Labels \",\") \"+\"}} {{printf \"%-5s|%3d\" .Names 7}}",
        ],
    );
    assert_eq!(out, "WEB ab Running 3 b=2 a=1+b=2 web  |  7\n");
    // docker's .Label method of a row.
    assert_eq!(
        ok(
            &env,
            &["ps", "--format", "{{.Label \"b\"}}|{{.Label \"zz\"}}"]
        ),
        "2|\n"
    );
}

#[test]
fn images_info_volumes_and_events() {
    let (env, _) = setup();
    ok(&env, &["tag", "demo/busybox", "demo/other:2"]);
    let out = ok(&env, &["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let mut names: Vec<&str> = out.lines().collect();
    names.sort();
    // Names as stored (podman's: with the registry).
    assert_eq!(
        names,
        ["docker.io/demo/busybox:latest", "docker.io/demo/other:2"]
    );
    let out = ok(
        &env,
        &[
            "images",
            "--format",
            "{{.Repository}} {{.ID}} {{.Digest}} {{.Size}} {{.CreatedAt}}|{{.CreatedSince}}",
        ],
    );
    let id = ok(&env, &["images", "-q"]).trim().to_string();
    let digests = ok(
        &env,
        &[
            "image",
            "inspect",
            "-f",
            "{{json .RepoDigests}}",
            "demo/busybox",
        ],
    );
    let digests: Vec<String> = serde_json::from_str(digests.trim()).unwrap();
    for l in out.lines() {
        let (repo, l) = l.split_once(' ').unwrap();
        let p: Vec<&str> = l.splitn(4, ' ').collect();
        assert_eq!(p[0], id, "{out}");
        // The repo digest of the row's repository, else <none>.
        let want = digests
            .iter()
            .find_map(|d| d.strip_prefix(&format!("{repo}@")))
            .unwrap_or("<none>");
        assert_eq!(p[1], want, "{out}");
        assert!(p[2].ends_with("B"), "{out}");
        let (at, since) = p[3].split_once('|').unwrap();
        assert!(at.ends_with(" +0000 UTC"), "{out}");
        assert!(since.ends_with("ago"), "{out}");
    }
    let table = ok(
        &env,
        &["images", "--format", "table {{.Repository}}\t{{.Tag}}"],
    );
    assert!(
        table.starts_with("REPOSITORY               TAG\n"),
        "{table}"
    );
    assert!(
        table.contains("docker.io/demo/busybox   latest\n"),
        "{table}"
    );
    let out = ok(&env, &["images"]);
    assert!(
        out.starts_with("REPOSITORY               TAG       IMAGE ID       CREATED"),
        "{out}"
    );

    // info: docker's names on skiffd's facts.
    let info: serde_json::Value = serde_json::from_str(&ok(&env, &["info"])).unwrap();
    assert_eq!(
        ok(&env, &["info", "-f", "{{.Driver}}"]).trim(),
        info["storage_driver"].as_str().unwrap()
    );
    assert_eq!(
        ok(
            &env,
            &[
                "info",
                "--format",
                "{{.Containers}} {{.ContainersRunning}} {{.ContainersStopped}} {{.Images}}"
            ]
        ),
        "2 1 1 1\n"
    );
    assert_eq!(
        ok(&env, &["info", "-f", "{{.ServerVersion}}"]).trim(),
        info["version"].as_str().unwrap()
    );

    // volume ls and inspect.
    ok(&env, &["volume", "create", "-l", "k=v", "vol2"]);
    let out = ok(
        &env,
        &[
            "volume",
            "ls",
            "--format",
            "{{.Name}} {{.Driver}} {{.Scope}} {{.Labels}}",
        ],
    );
    assert_eq!(out, "vol1 local local \nvol2 local local k=v\n");
    let out = ok(&env, &["volume", "ls"]);
    assert_eq!(
        out,
        "DRIVER    VOLUME NAME\nlocal     vol1\nlocal     vol2\n"
    );
    let mp = ok(
        &env,
        &[
            "volume",
            "inspect",
            "-f",
            "{{.Mountpoint}} {{.Labels.k}}",
            "vol2",
        ],
    );
    assert!(mp.ends_with("/volumes/vol2/_data v\n"), "{mp}");

    // events with a template: wait until the stream is subscribed (a created container
    // shows up), then check a line.
    let mut child = env
        .skiff_cmd(&[
            "events",
            "--filter",
            "type=container",
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.Attributes.name}} {{len .Actor.ID}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let pipe = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for l in std::io::BufReader::new(pipe).lines() {
            let Ok(l) = l else { break };
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    let mut line = None;
    for i in 0..100 {
        let name = format!("probe{i}");
        ok(
            &env,
            &[
                "create",
                "--name",
                &name,
                "--network",
                "none",
                "demo/busybox",
                "true",
            ],
        );
        if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(500)) {
            line = Some(l);
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    let line = line.expect("no event");
    let re_ok = line.starts_with("container create probe") && line.ends_with(" 64");
    assert!(re_ok, "{line}");
}

#[test]
fn history_columns() {
    let mut env = Env::bus_only();
    env.start_daemon();
    let archive = image_support::multi_layer_archive(&env, "demo/multi:1");
    ok(&env, &["load", "-i", archive.to_str().unwrap()]);
    let out = ok(&env, &["history", "demo/multi:1"]);
    let header = out.lines().next().unwrap();
    for col in ["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"] {
        assert!(header.contains(col), "{out}");
    }
    assert!(header.starts_with("IMAGE "), "{out}");
    let id = ok(
        &env,
        &["images", "-q", "--filter", "reference=demo/multi:1"],
    );
    let rows = ok(
        &env,
        &[
            "history",
            "--format",
            "{{.ID}}|{{.Size}}|{{.CreatedBy}}",
            "demo/multi:1",
        ],
    );
    let rows: Vec<&str> = rows.lines().collect();
    assert!(rows.len() >= 3, "{rows:?}");
    assert!(rows[0].starts_with(&format!("{}|", id.trim())), "{rows:?}");
    for r in &rows[1..] {
        assert!(r.starts_with("<missing>|"), "{rows:?}");
    }
    // Layers have sizes (the busybox layer is the biggest); empty entries 0B.
    let sizes: Vec<&str> = rows.iter().map(|r| r.split('|').nth(1).unwrap()).collect();
    assert!(
        sizes.iter().any(|s| s.ends_with("MB") || s.ends_with("kB")),
        "{sizes:?}"
    );
    let q = ok(&env, &["history", "-q", "demo/multi:1"]);
    assert_eq!(q.lines().next().unwrap(), id.trim());
}

#[test]
fn template_errors_tty_and_usage_exit_codes() {
    let (env, _) = setup();
    let e = fails(&env, &["ps", "--format", "{{.Names"], 125);
    assert!(
        e.contains("template parsing error: template: :1: unclosed action"),
        "{e}"
    );
    let e = fails(&env, &["inspect", "-f", "{{.Stat.Status}}", "web"], 125);
    assert!(
        e.contains("executing \"\" at <.Stat.Status>: can't evaluate field Stat"),
        "{e}"
    );
    let e = fails(&env, &["images", "--format", "{{nosuch .ID}}"], 125);
    assert!(e.contains("function \"nosuch\" not defined"), "{e}");
    let e = fails(&env, &["ps", "--format", "{{index .Names 99}}"], 125);
    assert!(e.contains("index out of range: 99"), "{e}");
    fails(&env, &["info", "-f", "{{if}}"], 125);
    fails(&env, &["volume", "ls", "--format", "{{end}}"], 125);
    fails(&env, &["events", "--format", "{{.Type"], 125);
    fails(&env, &["history", "--format", "{{.ID", "demo/busybox"], 125);

    // run -it without a terminal: docker's words and exit 1; nothing is created.
    let before = ok(&env, &["ps", "-a", "-q"]);
    let out = env
        .skiff_cmd(&["run", "-it", "--name", "notty", "demo/busybox", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("the input device is not a TTY"),
        "{}",
        stderr(&out)
    );
    assert_eq!(ok(&env, &["ps", "-a", "-q"]), before);
    let out = env
        .skiff_cmd(&["exec", "-it", "web", "true"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the input device is not a TTY"));

    // Usage errors: 125 (docker's), with what the flag takes.
    fails(
        &env,
        &["run", "--no-such-flag", "demo/busybox", "true"],
        125,
    );
    fails(
        &env,
        &["create", "--no-such-flag", "demo/busybox", "true"],
        125,
    );
    let e = fails(
        &env,
        &["run", "--stop-timeout", "soon", "demo/busybox", "true"],
        125,
    );
    assert!(e.contains("not a number of seconds"), "{e}");
    let e = fails(
        &env,
        &["create", "--stop-timeout", "-3", "demo/busybox", "true"],
        125,
    );
    assert!(e.contains("0 or more"), "{e}");
    let e = fails(&env, &["logs", "--tail", "-5", "web"], 125);
    assert!(
        e.contains("-5 is negative") && e.contains("or \"all\""),
        "{e}"
    );
    let e = fails(&env, &["stop", "-t", "-1", "web"], 125);
    assert!(e.contains("-1 is negative"), "{e}");
    fails(&env, &["ps", "--bogus"], 125);
    assert_eq!(ok(&env, &["ps", "-a", "-q"]), before);
}
