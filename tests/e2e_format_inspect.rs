//! docker's shapes through `--format` and inspect: inspect's fallback to images and
//! volumes, RestartPolicy, ExitCode reset, ExposedPorts, Networks.

mod common;
mod format_support;

use common::{stderr, stdout, Env};
use format_support::{fails, ok, setup};

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
