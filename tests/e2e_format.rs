//! `--format` Go templates on real containers, images and volumes (every docker field
//! and template function), `table` alignment, template errors; and docker's shapes:
//! inspect's fallback to images and volumes, RestartPolicy, ExitCode reset, ExposedPorts,
//! Networks, history's columns, `run -it` without a terminal, usage exit codes.

mod common;
mod image_support;

use std::io::BufRead;
use std::process::Stdio;

use common::{stderr, stdout, Env};

/// Runs skiff, asserting success; returns stdout.
fn ok(env: &Env, args: &[&str]) -> String {
    let out = env.skiff(args);
    assert!(
        out.status.success(),
        "skiff {args:?}: {}\n{}",
        stderr(&out),
        env.daemon_log()
    );
    stdout(&out)
}

/// Runs skiff, asserting exit code `code`; returns stderr.
fn fails(env: &Env, args: &[&str], code: i32) -> String {
    let out = env.skiff(args);
    assert_eq!(
        out.status.code(),
        Some(code),
        "skiff {args:?}: {}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    stderr(&out)
}

/// One running container `web` (labels, a volume, a restart policy) and a created one.
fn setup() -> (Env, String) {
    let env = Env::new();
    let id = ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "none",
            "-l",
            "b=2",
            "-l",
            "a=1",
            "-e",
            "GREETING=hi there",
            "-v",
            "vol1:/data",
            "--restart",
            "on-failure:3",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    )
    .trim()
    .to_string();
    ok(
        &env,
        &[
            "create",
            "--name",
            "idle",
            "--network",
            "none",
            "demo/busybox",
            "true",
        ],
    );
    (env, id)
}

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
fn inspect_templates_and_docker_shapes() {
    let (env, id) = setup();
    let f = |t: &str| ok(&env, &["inspect", "-f", t, "web"]);
    assert_eq!(f("{{.State.Status}} {{.State.Running}}"), "running true\n");
    let env_json = f("{{json .Config.Env}}");
    let vars: Vec<String> = serde_json::from_str(env_json.trim()).unwrap();
    assert!(
        vars.contains(&"GREETING=hi there".to_string()),
        "{env_json}"
    );
    assert_eq!(f("{{.Id}}"), format!("{id}\n"));
    assert_eq!(f("{{.Name}} {{.Config.Cmd}}"), "/web [sleep 1000]\n");
    assert_eq!(f("{{.Config.Labels}}"), "map[a:1 b:2]\n");
    assert_eq!(
        f("{{index .Config.Labels \"a\"}}|{{index .Config.Labels \"zz\"}}"),
        "1|\n"
    );
    assert_eq!(f("{{.Config.Labels.b}}"), "2\n");
    assert_eq!(
        f("{{range .Mounts}}{{.Type}}:{{.Name}}:{{.Destination}}{{end}}"),
        "volume:vol1:/data\n"
    );
    assert_eq!(
        f("{{range $i, $e := .Config.Cmd}}{{$i}}={{$e}};{{end}}"),
        "0=sleep;1=1000;\n"
    );
    assert_eq!(f("{{join .Config.Cmd \" \"}}"), "sleep 1000\n");
    assert_eq!(f("{{len .Config.Cmd}}"), "2\n");
    assert_eq!(
        f("{{if eq .State.Status \"running\"}}up{{else}}down{{end}}"),
        "up\n"
    );
    assert_eq!(
        f("{{with .HostConfig.RestartPolicy}}{{.Name}}/{{.MaximumRetryCount}}{{end}}"),
        "on-failure/3\n"
    );
    assert_eq!(
        f("{{$s := .State}}{{and $s.Running (ne $s.Pid 0)}} {{or false $s.Status}} {{not $s.Running}} {{lt $s.ExitCode 1}}"),
        "true running false true\n"
    );
    assert_eq!(f("{{println .State.Status}}"), "running\n\n");
    assert_eq!(f("{{.State.Status | printf \"%q\"}}"), "\"running\"\n");
    // Several objects: one line each; a missing one: exit 1, the others printed.
    let out = env.skiff(&["inspect", "-f", "{{.Name}}", "web", "nothere", "idle"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stdout(&out), "/web\n/idle\n");
    assert!(
        stderr(&out).contains("no such object: nothere"),
        "{}",
        stderr(&out)
    );
    // Without -f: the JSON array, as before.
    let v: serde_json::Value = serde_json::from_str(&ok(&env, &["inspect", "web"])).unwrap();
    assert_eq!(v[0]["HostConfig"]["RestartPolicy"]["MaximumRetryCount"], 3);
    assert_eq!(v[0]["NetworkSettings"]["Networks"], serde_json::json!({}));
}

#[test]
fn inspect_falls_back_to_images_and_volumes() {
    let (env, _) = setup();
    let img = ok(
        &env,
        &[
            "inspect",
            "-f",
            "{{.Id}} {{index .RepoTags 0}}",
            "demo/busybox",
        ],
    );
    let image_id = ok(&env, &["images", "-q", "--no-trunc"]);
    assert_eq!(
        img,
        format!("{} docker.io/demo/busybox:latest\n", image_id.trim())
    );
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "--type",
                "image",
                "-f",
                "{{.Os}}",
                "demo/busybox"
            ]
        ),
        "linux\n"
    );
    assert_eq!(
        ok(&env, &["inspect", "-f", "{{.Name}} {{.Driver}}", "vol1"]),
        "vol1 local\n"
    );
    assert_eq!(
        ok(
            &env,
            &["inspect", "--type", "volume", "-f", "{{.Name}}", "vol1"]
        ),
        "vol1\n"
    );
    let e = fails(&env, &["inspect", "--type", "container", "demo/busybox"], 1);
    assert!(e.contains("no such container: demo/busybox"), "{e}");
    let e = fails(&env, &["inspect", "--type", "image", "web"], 1);
    assert!(e.contains("no such image: web"), "{e}");
    let e = fails(&env, &["inspect", "--type", "network", "web"], 125);
    assert!(e.contains("use container, image or volume"), "{e}");
    // image inspect -f too.
    assert_eq!(
        ok(
            &env,
            &[
                "image",
                "inspect",
                "-f",
                "{{.Architecture}}",
                "demo/busybox"
            ]
        ),
        format!(
            "{}\n",
            ok(
                &env,
                &["inspect", "-f", "{{.Architecture}}", "demo/busybox"]
            )
            .trim()
        )
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
fn exit_code_resets_on_start_and_exposed_ports() {
    let env = Env::new();
    // Exits 3 on its first run, sleeps on the next.
    ok(
        &env,
        &[
            "create",
            "--name",
            "twice",
            "--network",
            "none",
            "demo/busybox",
            "sh",
            "-c",
            "test -e /again && exec sleep 1000; touch /again; exit 3",
        ],
    );
    ok(&env, &["start", "twice"]);
    assert_eq!(ok(&env, &["wait", "twice"]).trim(), "3");
    assert_eq!(
        ok(&env, &["inspect", "-f", "{{.State.ExitCode}}", "twice"]),
        "3\n"
    );
    ok(&env, &["start", "twice"]);
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "-f",
                "{{.State.Status}} {{.State.ExitCode}}",
                "twice"
            ]
        ),
        "running 0\n"
    );
    ok(&env, &["rm", "-f", "twice"]);

    // ExposedPorts: the image's EXPOSE, --expose and -p.
    let tar = env.busybox_tar();
    ok(
        &env,
        &[
            "import",
            "-q",
            "--change",
            "EXPOSE 7000",
            tar.to_str().unwrap(),
            "demo/exposing",
        ],
    );
    ok(
        &env,
        &[
            "create",
            "--name",
            "ports",
            "--network",
            "slirp4netns",
            "--expose",
            "90/udp",
            "-p",
            "127.0.0.1:18080:80",
            "demo/exposing",
            "true",
        ],
    );
    assert_eq!(
        ok(
            &env,
            &["inspect", "-f", "{{json .Config.ExposedPorts}}", "ports"]
        ),
        "{\"7000/tcp\":{},\"80/tcp\":{},\"90/udp\":{}}\n"
    );
    // Networks: one entry for the mode; addresses only while running.
    assert_eq!(
        ok(
            &env,
            &[
                "inspect",
                "-f",
                "{{range $k, $v := .NetworkSettings.Networks}}{{$k}}={{$v.IPAddress}};{{end}}",
                "ports"
            ]
        ),
        "slirp4netns=;\n"
    );
}

#[test]
fn networks_of_a_running_container() {
    let env = Env::new();
    ok(
        &env,
        &[
            "run",
            "-d",
            "--name",
            "net",
            "--network",
            "slirp4netns",
            "-p",
            "127.0.0.1::80",
            "demo/busybox",
            "sleep",
            "1000",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(&ok(
        &env,
        &["inspect", "-f", "{{json .NetworkSettings}}", "net"],
    ))
    .unwrap();
    assert_eq!(
        v["Networks"]["slirp4netns"]["IPAddress"], "10.0.2.100",
        "{v}"
    );
    assert_eq!(v["Networks"]["slirp4netns"]["Gateway"], "10.0.2.2", "{v}");
    assert_eq!(v["Networks"]["slirp4netns"]["IPPrefixLen"], 24, "{v}");
    assert_eq!(v["IPAddress"], "10.0.2.100", "{v}");
    // ps's .Ports and .Networks: docker's `IP:PORT->80/tcp`, the port `skiff port` shows.
    let host = ok(&env, &["port", "net", "80"]).trim().to_string();
    assert_eq!(
        ok(&env, &["ps", "--format", "{{.Ports}} {{.Networks}}"]),
        format!("{host}->80/tcp slirp4netns\n")
    );
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
