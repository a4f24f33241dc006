//! End to end: `top`, `stats`, `version`, `system df` and `system prune` against real
//! containers with known workloads.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;

use common::{stderr, stdout, write_busybox_tar, Env};

fn json_lines(out: &std::process::Output) -> Vec<serde_json::Value> {
    stdout(out)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect()
}

fn run_d(env: &Env, name: &str, cmd: &[&str]) {
    let mut args = vec!["run", "-d", "--name", name, "demo/busybox"];
    args.extend(cmd);
    let out = env.skiff(&args);
    assert!(out.status.success(), "{}", stderr(&out));
}

#[test]
fn top_shows_the_containers_processes_with_host_pids() {
    let env = Env::new();
    run_d(
        &env,
        "toptest",
        &["sh", "-c", "sleep 1001 & sleep 1002 & wait"],
    );
    let init = env.inspect("toptest")["State"]["Pid"].as_u64().unwrap();
    assert!(init > 1);
    // The two sleeps are started by the shell: wait for them.
    let mut last = String::new();
    assert!(
        env.eventually(10, || {
            last = stdout(&env.skiff(&["top", "toptest"]));
            // Both sleeps have exec'd (a forked shell shows as `sh -c ...` until then).
            let mut cmds: Vec<&str> = last
                .lines()
                .skip(1)
                .filter_map(|l| l.split_whitespace().nth(7))
                .collect();
            cmds.sort_unstable();
            cmds == ["sh", "sleep", "sleep"]
        }),
        "{last}"
    );
    let lines: Vec<&str> = last.lines().collect();
    let titles: Vec<&str> = lines[0].split_whitespace().collect();
    assert_eq!(
        titles,
        ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
    );
    // Exactly the container's three processes: the shell (its init, by host pid) and
    // the two sleeps, children of it.
    assert_eq!(lines.len(), 4, "{last}");
    let pids: Vec<u64> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().nth(1).unwrap().parse().unwrap())
        .collect();
    assert!(pids.contains(&init), "{init} not in {pids:?}");
    let sleeps: Vec<&&str> = lines[1..]
        .iter()
        .filter(|l| l.split_whitespace().nth(7) == Some("sleep"))
        .collect();
    assert_eq!(sleeps.len(), 2, "{last}");
    for s in sleeps {
        assert_eq!(
            s.split_whitespace().nth(2).unwrap(),
            init.to_string(),
            "{s}"
        );
    }
    // ps options pass through.
    let o = env.skiff(&["top", "toptest", "-o", "pid,comm"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert_eq!(
        text.lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        ["PID", "COMMAND"]
    );
    assert!(
        text.contains(&format!("{init}")) && text.contains("sleep"),
        "{text}"
    );
    let aux = stdout(&env.skiff(&["top", "toptest", "aux"]));
    assert!(aux.starts_with("USER") && aux.contains("%CPU"), "{aux}");
    assert_eq!(aux.lines().count(), 4, "{aux}");
    // Without a PID column skiff asks ps for one and drops it again.
    let comm = stdout(&env.skiff(&["top", "toptest", "-o", "comm"]));
    assert_eq!(
        comm.lines().collect::<Vec<_>>(),
        ["COMMAND", "sh", "sleep", "sleep"]
    );
    let json = env.skiff(&["top", "--format", "json", "toptest"]);
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["Titles"][1], "PID");
    assert_eq!(v["Processes"].as_array().unwrap().len(), 3);
    // Bad ps options: ps's own complaint; a stopped container: an error.
    let bad = env.skiff(&["top", "toptest", "--no-such-ps-option"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("ps --no-such-ps-option"),
        "{}",
        stderr(&bad)
    );
    assert!(env.skiff(&["kill", "toptest"]).status.success());
    assert!(env.eventually(10, || env.inspect("toptest")["State"]["Status"] == "exited"));
    let stopped = env.skiff(&["top", "toptest"]);
    assert_eq!(stopped.status.code(), Some(1));
    assert!(
        stderr(&stopped).contains("is not running"),
        "{}",
        stderr(&stopped)
    );
}

fn percent(v: &serde_json::Value) -> f64 {
    v.as_str().unwrap().trim_end_matches('%').parse().unwrap()
}

#[test]
fn stats_reads_cpu_memory_pids_and_io_of_known_workloads() {
    let env = Env::new();
    run_d(&env, "busy", &["sh", "-c", "while :; do :; done"]);
    run_d(
        &env,
        "idle",
        &["sh", "-c", "sleep 1000 & sleep 1001 & wait"],
    );
    let c = env.skiff(&["create", "--name", "never", "demo/busybox", "true"]);
    assert!(c.status.success());
    assert!(env.eventually(10, || {
        stdout(&env.skiff(&["top", "idle", "-o", "pid"]))
            .lines()
            .count()
            == 4
    }));
    let out = env.skiff(&[
        "stats",
        "--no-stream",
        "--format",
        "json",
        "busy",
        "idle",
        "never",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = json_lines(&out);
    assert_eq!(rows.len(), 3, "{}", stdout(&out));
    let (busy, idle, never) = (&rows[0], &rows[1], &rows[2]);
    assert_eq!(busy["Name"], "busy");
    assert_eq!(busy["Container"], "busy");
    assert_eq!(busy["ID"].as_str().unwrap().len(), 12);
    assert!(percent(&busy["CPUPerc"]) > 0.0, "{busy}");
    assert_eq!(busy["PIDs"], "1");
    assert_eq!(idle["PIDs"], "3", "{idle}");
    for r in [busy, idle] {
        for k in ["MemUsage", "NetIO", "BlockIO"] {
            let v = r[k].as_str().unwrap();
            assert!(v.contains(" / ") && v != "--", "{k}: {r}");
        }
        // A few hundred kB of a host's memory may round to 0.00%: only its form.
        assert!(percent(&r["MemPerc"]) >= 0.0, "{r}");
        assert!(!r["MemUsage"].as_str().unwrap().starts_with("0B"), "{r}");
    }
    // A container that does not run reads as docker shows it: dashes.
    assert_eq!(never["CPUPerc"], "--");
    assert_eq!(never["PIDs"], "--");
    // The table: docker's columns.
    let table = stdout(&env.skiff(&["stats", "--no-stream", "--no-trunc"]));
    let header = table.lines().next().unwrap();
    for col in [
        "CONTAINER ID",
        "NAME",
        "CPU %",
        "MEM USAGE / LIMIT",
        "MEM %",
        "NET I/O",
        "BLOCK I/O",
        "PIDS",
    ] {
        assert!(header.contains(col), "{header}");
    }
    // Only the running ones by default, all with -a; full ids with --no-trunc.
    assert_eq!(table.lines().count(), 3, "{table}");
    assert!(table
        .lines()
        .any(|l| l.split_whitespace().next().unwrap().len() == 64));
    let all = stdout(&env.skiff(&["stats", "-a", "--no-stream"]));
    assert_eq!(all.lines().count(), 4, "{all}");
    let missing = env.skiff(&["stats", "--no-stream", "nosuch"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("nosuch"));
    // Streaming: a new reading every second, until interrupted.
    let mut child = env
        .skiff_cmd(&["stats", "--format", "json", "busy"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    for _ in 0..2 {
        let l = lines.next().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["Name"], "busy");
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // Go templates, as every list command takes them.
    let t = stdout(&env.skiff(&[
        "stats",
        "--no-stream",
        "--format",
        "{{.Name}}={{.PIDs}}",
        "busy",
    ]));
    let (name, pids) = t.trim().split_once('=').unwrap();
    assert_eq!(name, "busy", "{t}");
    assert!(pids.parse::<u64>().unwrap() >= 1, "{t}");
    let t = stdout(&env.skiff(&[
        "stats",
        "--no-stream",
        "--format",
        "table {{.Name}}\t{{.PIDs}}",
        "busy",
    ]));
    assert!(t.starts_with("NAME "), "{t}");
    assert!(t.lines().nth(1).unwrap().starts_with("busy "), "{t}");
    let bad = env.skiff(&["stats", "--no-stream", "--format", "{{.Name", "busy"]);
    assert_eq!(bad.status.code(), Some(125), "{}", stderr(&bad));
}

#[test]
fn version_reports_client_and_daemon() {
    let env = Env::new();
    let out = env.skiff(&["version", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for side in ["Client", "Server"] {
        let s = &v[side];
        assert_eq!(s["Version"], env!("CARGO_PKG_VERSION"), "{v}");
        assert_eq!(s["ApiVersion"], skiff::dbus::API_VERSION.to_string());
        assert!(
            s["RustVersion"].as_str().unwrap().starts_with("rustc "),
            "{v}"
        );
        assert!(!s["GitCommit"].as_str().unwrap().is_empty());
        assert_eq!(s["Os"], "linux");
        assert!(!s["Arch"].as_str().unwrap().is_empty());
    }
    let text = stdout(&env.skiff(&["version"]));
    assert!(text.starts_with("Client:\n Version:"), "{text}");
    assert!(
        text.contains("Server: skiffd\n Engine:\n  Version:"),
        "{text}"
    );
    assert!(text.contains("API version:"), "{text}");
    let t = stdout(&env.skiff(&["version", "-f", "{{.Server.ApiVersion}} {{.Client.Os}}"]));
    assert_eq!(
        t.trim(),
        format!("{} linux", skiff::dbus::API_VERSION),
        "{t}"
    );
    // Without skiffd: the client's part, then the error.
    let bus = Env::bus_only();
    let out = bus.skiff(&["version"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).starts_with("Client:"), "{}", stdout(&out));
    assert!(!stdout(&out).contains("Server"));
    assert!(
        stderr(&out).contains("skiffd is not running"),
        "{}",
        stderr(&out)
    );
}

fn df(env: &Env) -> serde_json::Value {
    let out = env.skiff(&["system", "df", "-v", "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn df_rows(env: &Env) -> Vec<serde_json::Value> {
    let rows = json_lines(&env.skiff(&["system", "df", "--format", "json"]));
    // The same rows through a template.
    let t = stdout(&env.skiff(&["system", "df", "--format", "{{.Type}}:{{.TotalCount}}"]));
    let want: Vec<String> = rows
        .iter()
        .map(|r| {
            format!(
                "{}:{}",
                r["Type"].as_str().unwrap(),
                r["TotalCount"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(t.lines().collect::<Vec<_>>(), want, "{t}");
    rows
}

#[test]
fn system_df_follows_images_containers_and_volumes() {
    let env = Env::new();
    let before = df(&env);
    let layers = before["LayersSize"].as_u64().unwrap();
    assert!(layers > 100_000, "{before}");
    assert_eq!(before["Images"][0]["Size"].as_u64().unwrap(), layers);
    let rows = df_rows(&env);
    let types: Vec<&str> = rows.iter().map(|r| r["Type"].as_str().unwrap()).collect();
    assert_eq!(
        types,
        ["Images", "Containers", "Local Volumes", "Build Cache"]
    );
    assert_eq!(rows[0]["TotalCount"], "1");
    assert_eq!(rows[0]["Active"], "0");
    assert!(
        rows[0]["Reclaimable"].as_str().unwrap().ends_with("(100%)"),
        "{}",
        rows[0]
    );

    // Another image (one more layer) adds its size; removing it takes it away.
    let tar = env.dir.path().join("more.tar");
    let blob = vec![7u8; 300_000];
    write_busybox_tar(&tar, &[("big", 0, 0, 0o644, &blob)]);
    assert!(env
        .skiff(&["import", tar.to_str().unwrap(), "more:1"])
        .status
        .success());
    let more = df(&env)["LayersSize"].as_u64().unwrap();
    assert!(more >= layers + 300_000, "{more} vs {layers}");
    assert_eq!(df_rows(&env)[0]["TotalCount"], "2");
    assert!(env.skiff(&["rmi", "more:1"]).status.success());
    assert_eq!(df(&env)["LayersSize"].as_u64().unwrap(), layers);

    // A container's writes and a volume's contents count; used ones are active.
    assert!(env.skiff(&["volume", "create", "vol"]).status.success());
    let w = env.skiff(&[
        "run",
        "--name",
        "writer",
        "-v",
        "vol:/data",
        "demo/busybox",
        "sh",
        "-c",
        "head -c 200000 /dev/zero > /written && head -c 100000 /dev/zero > /data/f",
    ]);
    assert!(w.status.success(), "{}", stderr(&w));
    let du = df(&env);
    let c = &du["Containers"][0];
    assert_eq!(c["Names"][0], "/writer");
    assert!(c["SizeRw"].as_u64().unwrap() >= 200_000, "{c}");
    assert_eq!(du["Images"][0]["Containers"], 1);
    let v = &du["Volumes"][0];
    assert_eq!(v["Name"], "vol");
    assert!(v["UsageData"]["Size"].as_u64().unwrap() >= 100_000, "{v}");
    assert_eq!(v["UsageData"]["RefCount"], 1);
    let rows = df_rows(&env);
    assert_eq!(rows[0]["Active"], "1");
    assert_eq!(
        (rows[1]["TotalCount"].as_str(), rows[1]["Active"].as_str()),
        (Some("1"), Some("0"))
    );
    assert!(
        rows[1]["Reclaimable"].as_str().unwrap().ends_with("(100%)"),
        "{}",
        rows[1]
    );
    assert_eq!(rows[2]["Active"], "1");
    let table = stdout(&env.skiff(&["system", "df"]));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("TYPE") && lines[0].contains("RECLAIMABLE"),
        "{table}"
    );
    assert!(lines[2].starts_with("Containers"), "{table}");
    let verbose = stdout(&env.skiff(&["system", "df", "-v"]));
    for part in [
        "Images space usage:",
        "Containers space usage:",
        "Local Volumes space usage:",
        "writer",
        "vol",
    ] {
        assert!(verbose.contains(part), "{verbose}");
    }
    assert!(env.skiff(&["rm", "writer"]).status.success());
    assert_eq!(df(&env)["Containers"].as_array().unwrap().len(), 0);
}

fn names(env: &Env, args: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = stdout(&env.skiff(args))
        .lines()
        .map(str::to_string)
        .collect();
    v.sort();
    v
}

fn import_variant(env: &Env, name: &str, content: &[u8]) {
    let tar = env
        .dir
        .path()
        .join(format!("{}.tar", name.replace([':', '/'], "_")));
    write_busybox_tar(&tar, &[("variant", 0, 0, 0o644, content)]);
    let out = env.skiff(&["import", tar.to_str().unwrap(), name]);
    assert!(out.status.success(), "{}", stderr(&out));
}

fn prune_with_stdin(env: &Env, args: &[&str], input: &str) -> std::process::Output {
    let mut child = env
        .skiff_cmd(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn system_prune_removes_exactly_what_it_says() {
    let env = Env::new();
    run_d(&env, "keep", &["sleep", "1000"]);
    assert!(env
        .skiff(&["run", "--name", "exited", "demo/busybox", "true"])
        .status
        .success());
    assert!(env
        .skiff(&[
            "create",
            "--name",
            "created",
            "-v",
            "/anon",
            "demo/busybox",
            "true"
        ])
        .status
        .success());
    assert!(env.skiff(&["volume", "create", "named"]).status.success());
    // A dangling image (its name moved to a newer one) and an unused tagged one.
    import_variant(&env, "dang:1", b"old");
    import_variant(&env, "dang:1", b"new");
    import_variant(&env, "unused:1", b"unused");
    assert_eq!(
        names(&env, &["images", "-q", "--filter", "dangling=true"]).len(),
        1
    );
    let images_before = names(&env, &["images", "-q"]).len();
    assert_eq!(images_before, 4);

    // The prompt: "n" keeps everything.
    let no = prune_with_stdin(&env, &["system", "prune"], "n\n");
    assert!(no.status.success(), "{}", stderr(&no));
    assert!(
        stdout(&no).contains("WARNING! This will remove:"),
        "{}",
        stdout(&no)
    );
    assert!(stdout(&no).contains("Are you sure you want to continue? [y/N]"));
    assert_eq!(names(&env, &["ps", "-a", "-q"]).len(), 3);

    // "y": stopped containers and dangling images go; volumes and used or tagged images stay.
    let yes = prune_with_stdin(&env, &["system", "prune"], "y\n");
    assert!(yes.status.success(), "{}", stderr(&yes));
    let text = stdout(&yes);
    assert!(text.contains("Deleted Containers:"), "{text}");
    assert!(
        text.contains("Deleted Images:") && text.contains("deleted: sha256:"),
        "{text}"
    );
    assert!(text.contains("Total reclaimed space: "), "{text}");
    let ps: Vec<String> = stdout(&env.skiff(&["ps", "-a", "--format", "json"]))
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["Names"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(ps, ["keep"]);
    assert_eq!(names(&env, &["images", "-q"]).len(), 3);
    assert!(names(&env, &["images", "-q", "--filter", "dangling=true"]).is_empty());
    let vols = names(&env, &["volume", "ls", "-q"]);
    assert_eq!(vols.len(), 2, "{vols:?}");

    // --volumes: the unused anonymous volume goes, the named one stays.
    let v = env.skiff(&["system", "prune", "-f", "--volumes"]);
    assert!(v.status.success(), "{}", stderr(&v));
    assert!(stdout(&v).contains("Deleted Volumes:"), "{}", stdout(&v));
    assert_eq!(names(&env, &["volume", "ls", "-q"]), ["named"]);
    assert_eq!(names(&env, &["images", "-q"]).len(), 3);

    // -a: every image no container uses; the running container's stays.
    let a = env.skiff(&["system", "prune", "-a", "-f"]);
    assert!(a.status.success(), "{}", stderr(&a));
    let left = stdout(&env.skiff(&["images", "--format", "json"]));
    let left: serde_json::Value = serde_json::from_str(&left).unwrap();
    let tags: Vec<&str> = left
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|i| {
            i["RepoTags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap())
        })
        .collect();
    assert_eq!(tags.len(), 1, "{tags:?}");
    assert!(tags[0].contains("demo/busybox"), "{tags:?}");
    assert_eq!(env.inspect("keep")["State"]["Status"], "running");

    // container prune: the same for containers alone.
    assert!(env
        .skiff(&["run", "--name", "done", "demo/busybox", "true"])
        .status
        .success());
    let cp = env.skiff(&["container", "prune", "-f"]);
    assert!(cp.status.success(), "{}", stderr(&cp));
    assert!(
        stdout(&cp).starts_with("Deleted Containers:\n"),
        "{}",
        stdout(&cp)
    );
    assert_eq!(names(&env, &["ps", "-a", "-q"]).len(), 1);
}
