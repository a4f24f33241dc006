//! End to end, with podman 4 as the oracle: the `/etc/resolv.conf`, `/etc/hosts` and
//! `/etc/hostname` a container sees with `--network none` and `--network host`.
//! - none: no resolv.conf is put in (the image's own stays, or there is none), and
//!   `--dns*` flags are refused; the hostname (and `--add-host` names) resolve as in
//!   podman, the hostname on 127.0.0.1;
//! - host: the host's resolvers, the host's hosts file with the `--add-host` entries
//!   first, and the host's hostname unless `--hostname` is given.
//!
//! The hosts files are compared by the address each name resolves to (the first line
//! naming it), not byte for byte. No traffic.

mod common;
mod podman_support;

use common::{stderr, stdout, write_busybox_tar, Env};
use podman_support::Podman;

/// What a container shows of the three files: its resolv.conf's lines (or that it has
/// none), its hostname (the command's and the file's), and the address each of `names`
/// resolves to in /etc/hosts.
fn look(names: &[&str]) -> String {
    format!(
        "if test -e /etc/resolv.conf; then grep -v '^#' /etc/resolv.conf; \
         else echo no resolv.conf; fi; echo hostname $(hostname) $(cat /etc/hostname); \
         for n in {}; do awk -v n=$n '/^[^#]/ {{ for (i = 2; i <= NF; i++) if ($i == n) \
         {{ print n, $1; exit }} }}' /etc/hosts; done",
        names.join(" ")
    )
}

/// Runs `args` + `IMAGE sh -c SCRIPT` in podman and in skiff; asserts both succeed with
/// the same output and returns it.
fn same(podman: &Podman, env: &Env, args: &[&str], image: &str, script: &str) -> String {
    let mut all = vec!["run", "--rm"];
    all.extend_from_slice(args);
    all.extend_from_slice(&[image, "sh", "-c", script]);
    let want = stdout(&podman.run(&all));
    let got = env.skiff_ok(&all);
    assert_eq!(got, want, "skiff and podman differ for {args:?}");
    want
}

#[test]
fn network_none_and_host_files_match_podman() {
    let mut env = Env::bus_only();
    env.start_daemon();
    let podman = Podman::new(env.dir.path(), "vfs");
    // An image with a resolv.conf of its own, and one without.
    let with = env.dir.path().join("with.tar");
    write_busybox_tar(
        &with,
        &[("etc/resolv.conf", 0, 0, 0o644, b"nameserver 192.0.2.99\n")],
    );
    let without = env.busybox_tar();
    for (tar, name) in [(&with, "demo/with"), (&without, "demo/without")] {
        podman.run(&["import", "-q", tar.to_str().unwrap(), name]);
        env.skiff_ok(&["import", tar.to_str().unwrap(), name]);
    }
    let host_name = nix::unistd::gethostname()
        .expect("gethostname")
        .to_string_lossy()
        .into_owned();

    // none: the image's resolv.conf, or none at all.
    let args = ["--network", "none", "--hostname", "myhost"];
    let out = same(&podman, &env, &args, "demo/with", &look(&[]));
    assert!(out.starts_with("nameserver 192.0.2.99\n"), "{out}");
    let names = ["localhost", "myhost", "db"];
    let args = [
        "--network",
        "none",
        "--hostname",
        "myhost",
        "--add-host",
        "db:192.0.2.7",
    ];
    let out = same(&podman, &env, &args, "demo/without", &look(&names));
    assert!(
        out.starts_with("no resolv.conf\nhostname myhost myhost\nlocalhost 127.0.0.1\n"),
        "{out}"
    );
    assert!(out.contains("myhost 127.0.0.1\ndb 192.0.2.7\n"), "{out}");
    // An --add-host entry comes first: it wins over the others.
    let args = [
        "--network",
        "none",
        "--hostname",
        "myhost",
        "--add-host",
        "localhost:192.0.2.8",
    ];
    let out = same(&podman, &env, &args, "demo/without", &look(&["localhost"]));
    assert!(out.ends_with("localhost 192.0.2.8\n"), "{out}");
    // No network, no DNS: the flags are refused, with what to do.
    for flag in [
        ["--dns", "192.0.2.9"],
        ["--dns-search", "x.test"],
        ["--dns-option", "ndots:3"],
    ] {
        let mut args = vec!["run", "--rm", "--network", "none"];
        args.extend_from_slice(&flag);
        args.extend_from_slice(&["demo/without", "true"]);
        let p = podman.output(&args);
        assert!(!p.status.success(), "podman accepted {flag:?}");
        let s = env.skiff(&args);
        assert!(
            !s.status.success() && stderr(&s).contains(flag[0]) && stderr(&s).contains("none"),
            "skiff: {flag:?}: {}{}",
            stdout(&s),
            stderr(&s)
        );
    }

    // host: the host's files, the host's hostname.
    let names = ["localhost", &host_name, "db"];
    let out = same(
        &podman,
        &env,
        &["--network", "host", "--add-host", "db:192.0.2.7"],
        "demo/with",
        &look(&names),
    );
    assert!(
        out.contains(&format!("hostname {host_name} {host_name}\n"))
            && out.contains("db 192.0.2.7\n"),
        "{out}"
    );
    let args = [
        "--network",
        "host",
        "--hostname",
        "myhost",
        "--add-host",
        "localhost:192.0.2.8",
    ];
    let out = same(&podman, &env, &args, "demo/without", &look(&["localhost"]));
    assert!(out.contains("hostname myhost myhost\n"), "{out}");
    assert!(out.ends_with("localhost 192.0.2.8\n"), "{out}");
}
