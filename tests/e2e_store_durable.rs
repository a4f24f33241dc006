//! End to end: a layer is on disk, or durably marked as maybe not, before anything
//! names it. A crash of the machine cannot be made in a test, but what makes the store
//! survive one can be watched for real: skiffd runs under `strace -f`, and for every
//! layer an import, a load and a commit install, the trace must show, in this order,
//! the unpack helper that wrote the layer's files ending, the marker
//! `unsynced/<hex>` written (its temporary file fsynced, renamed, its directory
//! fsynced), the rename of the layer's staging directory to `layers/<hex>`, the write
//! of the `images.json` that names it; and, later (off the reply path), a `syncfs(2)`
//! of the store's filesystem followed by the marker's removal. Without the marker, the
//! index could name a layer whose files were still in the page cache: after a power
//! loss, a store saying "layer present" over empty or missing files, and nothing at the
//! next start to tell (the repair it drives is tested in e2e_store_repair).

mod common;
mod image_support;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::{require, Env};
use image_support::multi_layer_archive;

/// `strace -f` attached to the running skiffd (threads and every process it starts
/// from now on), writing to `log`; returns once strace reports it is attached.
fn attach_strace(pid: u32, log: &Path) -> Child {
    let mut child = Command::new(require("strace"))
        .args([
            "-f",
            "-b",
            "execve",
            "-y",
            "-s",
            "4096",
            "-v",
            "-e",
            "signal=none",
            "-e",
        ])
        .arg("trace=execve,wait4,syncfs,rename,renameat,renameat2,fsync,unlink,unlinkat")
        .arg("-o")
        .arg(log)
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("strace");
    let mut err = BufReader::new(child.stderr.take().expect("strace's stderr"));
    let mut line = String::new();
    loop {
        line.clear();
        let n = err.read_line(&mut line).expect("reading strace's stderr");
        assert!(n > 0, "strace ended before it attached to skiffd {pid}");
        if line.contains("attached") {
            break;
        }
    }
    // Drain the rest (a line per thread attached), so strace never blocks on the pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    child
}

/// Detaches strace (SIGINT: it flushes its log and leaves skiffd running).
fn detach(mut strace: Child) {
    // SAFETY: kill on the pid of our own child, not reaped yet.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
}

/// One line of an `strace -f -o` log: `PID rest`.
fn split_pid(line: &str) -> Option<(u32, &str)> {
    let (pid, rest) = line.split_once(' ')?;
    Some((pid.parse().ok()?, rest.trim_start()))
}

/// The quoted strings of a syscall line, in order.
fn quoted(s: &str) -> Vec<&str> {
    s.split('"').skip(1).step_by(2).collect()
}

/// Checks the order (see the module docs) for every layer installed in `log`; returns
/// how many layers were checked.
fn check_layers_synced_before_named(log: &str) -> usize {
    let lines: Vec<&str> = log.lines().collect();
    // Completed calls: a call strace split ("<unfinished ...>" then "<... resumed>")
    // counts at its resumption, its first half is kept for the arguments.
    let mut unfinished: HashMap<u32, String> = HashMap::new();
    // (line index, pid, whole call) of each completed call or exit.
    let mut events: Vec<(usize, u32, String)> = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some((pid, rest)) = split_pid(line) else {
            continue;
        };
        if let Some(head) = rest.strip_suffix("<unfinished ...>") {
            // An execve strace detached at may never be resumed: it was made.
            if head.starts_with("execve(") {
                events.push((i, pid, head.to_string()));
            }
            unfinished.insert(pid, head.to_string());
            continue;
        }
        if rest.starts_with("<... ") {
            let head = unfinished.remove(&pid).unwrap_or_default();
            let tail = rest.split_once("resumed>").map_or("", |(_, t)| t);
            events.push((i, pid, format!("{head}{tail}")));
            continue;
        }
        events.push((i, pid, rest.to_string()));
    }
    let succeeded = |call: &str| call.trim_end().ends_with("= 0");
    // The unpack helpers: the staging tree each wrote, and where it ended.
    let mut helper_of: HashMap<String, u32> = HashMap::new();
    let mut exited_at: HashMap<u32, usize> = HashMap::new();
    for (i, pid, call) in &events {
        // (strace detaches at the execve: the line ends "<detached ...>".)
        if call.starts_with("execve(") && call.contains("\"__unpack\"") {
            if let Some(diff) = quoted(call).into_iter().find(|a| a.ends_with("/diff")) {
                helper_of.insert(diff.trim_end_matches("/diff").to_string(), *pid);
            }
        }
        // skiffd reaping it (strace leaves the helpers at their execve: a traced
        // process loses newuidmap's set-uid bit).
        if call.starts_with("wait4(") {
            let reaped = call
                .rsplit_once("= ")
                .and_then(|(_, r)| r.trim().parse::<u32>().ok());
            if let Some(p) = reaped.filter(|p| *p > 0) {
                exited_at.insert(p, *i);
            }
        }
    }
    let mut checked = 0;
    for (at, _, call) in &events {
        if !call.starts_with("rename") || !succeeded(call) {
            continue;
        }
        let args = quoted(call);
        let (Some(from), Some(to)) = (args.first(), args.get(1)) else {
            continue;
        };
        let Some((root, _)) = to.split_once("/layers/") else {
            continue;
        };
        if !from.contains("/tmp/import-") || to.ends_with("/keepid") || to.contains("/keepid/") {
            continue;
        }
        let helper = helper_of
            .get(*from)
            .unwrap_or_else(|| panic!("no unpack helper wrote {from} in the trace:\n{log}"));
        let ended = exited_at
            .get(helper)
            .unwrap_or_else(|| panic!("the unpack helper {helper} of {from} did not end:\n{log}"));
        // The marker: its temporary file fsynced, renamed to unsynced/<hex>, the
        // directory fsynced, all after the helper ended and before the layer's name.
        let hex = to.rsplit('/').next().unwrap_or_default();
        let marker = format!("{root}/unsynced/{hex}");
        let marker_dir = format!("<{root}/unsynced>");
        let marked_at = events
            .iter()
            .rev()
            .find(|(i, _, c)| {
                *i > *ended
                    && i < at
                    && c.starts_with("rename")
                    && succeeded(c)
                    && quoted(c).get(1) == Some(&marker.as_str())
            })
            .map(|(i, _, c)| (*i, quoted(c)[0].to_string()));
        let Some((marked_at, marker_tmp)) = marked_at else {
            panic!(
                "the layer {to} was renamed into the store (line {}) with no marker {marker} \
                 written after its unpack helper ended (line {}): a power loss could leave \
                 its name over missing files, unnoticed\n{log}",
                at + 1,
                ended + 1
            );
        };
        let tmp_synced = events.iter().any(|(i, _, c)| {
            *i > *ended
                && *i < marked_at
                && c.starts_with("fsync(")
                && c.contains(&format!("<{marker_tmp}>"))
                && succeeded(c)
        });
        assert!(
            tmp_synced,
            "the marker {marker} was not fsynced before its rename\n{log}"
        );
        let dir_synced = events.iter().any(|(i, _, c)| {
            *i > marked_at
                && i < at
                && c.starts_with("fsync(")
                && c.contains(&marker_dir)
                && succeeded(c)
        });
        assert!(
            dir_synced,
            "the directory of the marker {marker} was not fsynced before the layer {to} was \
             named\n{log}"
        );
        // Later: a sync of the store's filesystem, then the marker's removal.
        let synced_at = events
            .iter()
            .find(|(i, _, c)| {
                i > at
                    && c.starts_with("syncfs(")
                    && c.contains(&format!("<{root}"))
                    && succeeded(c)
            })
            .map(|(i, _, _)| *i)
            .unwrap_or_else(|| panic!("no syncfs of the store after the layer {to}\n{log}"));
        let removed = events.iter().any(|(i, _, c)| {
            *i > synced_at
                && c.starts_with("unlink")
                && succeeded(c)
                && quoted(c).first() == Some(&marker.as_str())
        });
        assert!(
            removed,
            "the marker {marker} was not removed after a syncfs\n{log}"
        );
        let early = events.iter().any(|(i, _, c)| {
            *i < synced_at && c.starts_with("unlink") && quoted(c).first() == Some(&marker.as_str())
        });
        assert!(
            !early,
            "the marker {marker} was removed before a syncfs\n{log}"
        );
        // The index naming it comes after.
        let index = format!("{root}/images.json");
        let named_later = events.iter().any(|(i, _, c)| {
            i > at
                && c.starts_with("rename")
                && succeeded(c)
                && quoted(c).get(1) == Some(&index.as_str())
        });
        assert!(
            named_later,
            "no images.json written after the layer {to}:\n{log}"
        );
        checked += 1;
    }
    checked
}

#[test]
fn layers_are_synced_before_the_index_names_them() {
    let mut env = Env::bus_only();
    env.start_daemon();
    let tar = env.busybox_tar();
    let archive = multi_layer_archive(&env, "demo/multi:1");
    let log = env.dir.path().join("strace.log");
    let strace = attach_strace(env.daemon_pid(), &log);

    // An import (one layer), a load (three layers, extracted in parallel), a commit
    // (the build's RUN and COPY steps install their layers the same way).
    env.skiff_ok(&["image", "import", tar.to_str().unwrap(), "demo/busybox"]);
    env.skiff_ok(&["load", "-i", archive.to_str().unwrap()]);
    env.skiff_ok(&[
        "run",
        "--name",
        "box",
        "demo/busybox",
        "sh",
        "-c",
        "echo new > /new",
    ]);
    env.skiff_ok(&["commit", "box", "me/box:1"]);
    // The background sync removes the markers: wait for it (it runs while skiffd
    // replies, so only here is the trace complete).
    let unsynced = env.data().join("storage/unsynced");
    let empty = || std::fs::read_dir(&unsynced).map_or(true, |mut d| d.next().is_none());
    assert!(
        env.eventually(60, empty),
        "markers still in {unsynced:?}\n{}",
        env.daemon_log()
    );
    detach(strace);

    let trace = std::fs::read_to_string(&log).expect("the strace log");
    let checked = check_layers_synced_before_named(&trace);
    let layers: usize = ["demo/busybox", "demo/multi:1", "me/box:1"]
        .iter()
        .map(|i| {
            let v: serde_json::Value =
                serde_json::from_str(&env.skiff_ok(&["image", "inspect", i]))
                    .expect("inspect JSON");
            v[0]["RootFS"]["Layers"].as_array().map_or(0, Vec::len)
        })
        .sum();
    // Every layer of the three images is new here (the commit adds one on busybox's).
    assert_eq!(
        checked,
        layers - 1,
        "not every layer installed was seen in the trace:\n{trace}"
    );
}
