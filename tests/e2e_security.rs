//! End to end: a container is confined by default — docker's capabilities, a seccomp
//! filter — and `--cap-add/--cap-drop`, `--security-opt`, `--read-only`, `--privileged`,
//! `--ulimit` and `--sysctl` change that, for the container's process and for `exec`.

mod common;

use common::{stderr, stdout, Env};

/// docker's default capability set (CHOWN, DAC_OVERRIDE, FSETID, FOWNER, MKNOD, NET_RAW,
/// SETGID, SETUID, SETFCAP, SETPCAP, NET_BIND_SERVICE, SYS_CHROOT, KILL, AUDIT_WRITE).
const DOCKER_CAPS: &str = "00000000a80425fb";

/// The `Key:\tvalue` lines of /proc/self/status, as (key, value).
fn status(out: &str, key: &str) -> String {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_string())
        .unwrap_or_else(|| panic!("no {key} in {out}"))
}

fn run_ok(env: &Env, args: &[&str]) -> String {
    let mut a = vec!["run", "--rm", "--network", "none"];
    a.extend_from_slice(args);
    let out = env.skiff(&a);
    assert!(out.status.success(), "{a:?}: {}", stderr(&out));
    stdout(&out)
}

fn proc_status(env: &Env, flags: &[&str]) -> String {
    let mut a = flags.to_vec();
    a.extend(["demo/busybox", "cat", "/proc/self/status"]);
    run_ok(env, &a)
}

/// All the capabilities this kernel has, as /proc shows the mask.
fn all_caps() -> String {
    let last: u32 = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    format!("{:016x}", (1u64 << (last + 1)) - 1)
}

#[test]
fn default_is_dockers_capabilities_and_a_seccomp_filter() {
    let env = Env::new();
    let s = proc_status(&env, &[]);
    assert_eq!(status(&s, "CapEff"), DOCKER_CAPS, "{s}");
    assert_eq!(status(&s, "CapPrm"), DOCKER_CAPS, "{s}");
    assert_eq!(status(&s, "CapBnd"), DOCKER_CAPS, "{s}");
    assert_eq!(status(&s, "CapInh"), "0000000000000000", "{s}");
    assert_eq!(status(&s, "CapAmb"), "0000000000000000", "{s}");
    assert_eq!(status(&s, "Seccomp"), "2", "{s}");
    assert_eq!(status(&s, "NoNewPrivs"), "0", "{s}");
    // A non-root user keeps them only in its bounding set (docker's semantics).
    let s = proc_status(&env, &["-u", "1000:1000"]);
    assert_eq!(status(&s, "CapEff"), "0000000000000000", "{s}");
    assert_eq!(status(&s, "CapBnd"), DOCKER_CAPS, "{s}");
    assert_eq!(status(&s, "Seccomp"), "2", "{s}");
}

#[test]
fn cap_drop_and_cap_add() {
    let env = Env::new();
    let s = proc_status(&env, &["--cap-drop", "ALL"]);
    assert_eq!(status(&s, "CapEff"), "0000000000000000", "{s}");
    assert_eq!(status(&s, "CapBnd"), "0000000000000000", "{s}");
    let s = proc_status(
        &env,
        &["--cap-drop", "all", "--cap-add", "NET_BIND_SERVICE"],
    );
    assert_eq!(status(&s, "CapEff"), "0000000000000400", "{s}");
    assert_eq!(status(&s, "CapBnd"), "0000000000000400", "{s}");
    let s = proc_status(&env, &["--cap-drop", "CAP_CHOWN", "--cap-add", "sys_admin"]);
    assert_eq!(status(&s, "CapEff"), "00000000a82425fa", "{s}");
    // Without CAP_CHOWN chown fails even for root.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--cap-drop",
        "CHOWN",
        "demo/busybox",
        "sh",
        "-c",
        "touch /tmp/f && chown 5 /tmp/f",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn default_profile_denies_namespaces_unless_unconfined_or_sys_admin() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo/busybox",
        "unshare",
        "-U",
        "true",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Operation not permitted"),
        "{}",
        stderr(&out)
    );
    run_ok(
        &env,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "demo/busybox",
            "unshare",
            "-U",
            "true",
        ],
    );
    let s = proc_status(&env, &["--security-opt", "seccomp=unconfined"]);
    assert_eq!(status(&s, "Seccomp"), "0", "{s}");
    // The capability-conditional rules follow the capability set.
    run_ok(
        &env,
        &[
            "--cap-add",
            "SYS_ADMIN",
            "demo/busybox",
            "unshare",
            "-U",
            "true",
        ],
    );
    // clone without namespace flags (every fork) works under the default filter.
    assert_eq!(
        run_ok(&env, &["demo/busybox", "sh", "-c", "(echo forked) | cat"]).trim(),
        "forked"
    );
}

#[test]
fn custom_profile_with_errno_ret() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 28}]}"#,
    )
    .unwrap();
    let opt = format!("seccomp={}", profile.display());
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--security-opt",
        &opt,
        "demo/busybox",
        "mkdir",
        "/tmp/d",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    // Everything else is allowed by this profile (unshare too).
    run_ok(
        &env,
        &[
            "--security-opt",
            &opt,
            "demo/busybox",
            "unshare",
            "-U",
            "true",
        ],
    );
    // exec gets the same filter.
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "nomk",
        "--network",
        "none",
        "--security-opt",
        &opt,
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = env.skiff(&["exec", "nomk", "mkdir", "/tmp/e"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("No space left on device"),
        "{}",
        stderr(&out)
    );
    let insp = env.inspect("nomk");
    let sec = insp["HostConfig"]["SecurityOpt"][0].as_str().unwrap();
    assert!(
        sec.starts_with("seccomp=") && sec.contains("mkdirat"),
        "{sec}"
    );
    env.skiff(&["rm", "-f", "nomk"]);
}

#[test]
fn exec_gets_the_containers_capabilities_and_filter() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "-d",
        "--name",
        "conf",
        "--network",
        "none",
        "--cap-drop",
        "NET_RAW",
        "demo/busybox",
        "sleep",
        "1000",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let want = "00000000a80405fb"; // docker's set without NET_RAW (13)
    let out = env.skiff(&["exec", "conf", "cat", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert_eq!(status(&s, "CapEff"), want, "{s}");
    assert_eq!(status(&s, "CapBnd"), want, "{s}");
    assert_eq!(status(&s, "Seccomp"), "2", "{s}");
    let out = env.skiff(&["exec", "conf", "unshare", "-U", "true"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // --privileged: every capability, the container's filter still.
    let out = env.skiff(&["exec", "--privileged", "conf", "cat", "/proc/self/status"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = stdout(&out);
    assert_eq!(status(&s, "CapEff"), all_caps(), "{s}");
    assert_eq!(status(&s, "Seccomp"), "2", "{s}");
    env.skiff(&["rm", "-f", "conf"]);
}

#[test]
fn no_new_privileges() {
    let env = Env::new();
    for flag in ["no-new-privileges", "no-new-privileges=true"] {
        let s = proc_status(&env, &["--security-opt", flag]);
        assert_eq!(status(&s, "NoNewPrivs"), "1", "{flag}: {s}");
        assert_eq!(status(&s, "Seccomp"), "2", "{s}");
        assert_eq!(status(&s, "CapEff"), DOCKER_CAPS, "{s}");
    }
    let s = proc_status(&env, &["--security-opt", "no-new-privileges=false"]);
    assert_eq!(status(&s, "NoNewPrivs"), "0", "{s}");
}

#[test]
fn read_only_root_with_writable_tmpfs() {
    let env = Env::new();
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "demo/busybox",
        "touch",
        "/x",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
    let so = run_ok(
        &env,
        &[
            "--read-only",
            "demo/busybox",
            "sh",
            "-c",
            "touch /tmp/a /var/tmp/b /run/c && echo writable",
        ],
    );
    assert_eq!(so.trim(), "writable");
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "--read-only",
        "--read-only-tmpfs=false",
        "demo/busybox",
        "touch",
        "/tmp/a",
    ]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("Read-only file system"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn privileged_can_mount() {
    let env = Env::new();
    // Not without it.
    let out = env.skiff(&[
        "run",
        "--rm",
        "--network",
        "none",
        "demo/busybox",
        "mount",
        "-t",
        "tmpfs",
        "none",
        "/tmp",
    ]);
    assert!(!out.status.success(), "{}", stdout(&out));
    // busybox's words for EPERM from mount(2).
    assert!(
        stderr(&out).contains("permission denied"),
        "{}",
        stderr(&out)
    );
    let so = run_ok(
        &env,
        &[
            "--privileged",
            "demo/busybox",
            "sh",
            "-c",
            "mount -t tmpfs none /tmp && grep -E 'CapEff|Seccomp' /proc/self/status",
        ],
    );
    assert_eq!(status(&so, "CapEff"), all_caps(), "{so}");
    assert_eq!(status(&so, "Seccomp"), "0", "{so}");
    // Host devices the user may open are there (when /dev/fuse is usable here).
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/fuse")
        .is_ok()
    {
        run_ok(
            &env,
            &["--privileged", "demo/busybox", "test", "-c", "/dev/fuse"],
        );
    }
}

#[test]
fn ulimits() {
    let env = Env::new();
    let so = run_ok(
        &env,
        &[
            "--ulimit",
            "nofile=512:1024",
            "demo/busybox",
            "sh",
            "-c",
            "ulimit -n; ulimit -Hn",
        ],
    );
    assert_eq!(so.split_whitespace().collect::<Vec<_>>(), ["512", "1024"]);
    // Default: the hard limit as the soft limit (podman's).
    let so = run_ok(&env, &["demo/busybox", "sh", "-c", "ulimit -n; ulimit -Hn"]);
    let v: Vec<&str> = so.split_whitespace().collect();
    assert_eq!(v.len(), 2, "{so}");
    assert_eq!(v[0], v[1], "{so}");
}

#[test]
fn sysctls() {
    let env = Env::new();
    let so = run_ok(
        &env,
        &[
            "--sysctl",
            "net.ipv4.ip_unprivileged_port_start=555",
            "--sysctl",
            "kernel.shmmni=1234",
            "demo/busybox",
            "cat",
            "/proc/sys/net/ipv4/ip_unprivileged_port_start",
            "/proc/sys/kernel/shmmni",
        ],
    );
    assert_eq!(so.split_whitespace().collect::<Vec<_>>(), ["555", "1234"]);
}

#[test]
fn bad_input_is_a_clear_error() {
    let env = Env::new();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_MAYBE"}]}"#).unwrap();
    let bad_opt = format!("seccomp={}", bad.display());
    let missing_opt = format!("seccomp={}", dir.path().join("none.json").display());
    for (flags, want) in [
        (vec!["--cap-add", "CAP_FLY"], "CAP_FLY"),
        (vec!["--cap-drop", "NOPE"], "NOPE"),
        (vec!["--security-opt", bad_opt.as_str()], "seccomp profile"),
        (vec!["--security-opt", missing_opt.as_str()], "none.json"),
        (vec!["--security-opt", "sandbox=yes"], "sandbox=yes"),
        (vec!["--sysctl", "vm.swappiness=1"], "vm.swappiness"),
        (
            vec!["--sysctl", "net.ipv4.no_such_key=1"],
            "net.ipv4.no_such_key",
        ),
        (vec!["--ulimit", "nofile=10:5"], "soft limit"),
        (vec!["--ulimit", "files=10"], "files"),
    ] {
        let mut a = vec!["run", "--rm", "--network", "none"];
        a.extend(&flags);
        a.extend(["demo/busybox", "true"]);
        let out = env.skiff(&a);
        assert_eq!(out.status.code(), Some(125), "{flags:?}: {}", stderr(&out));
        assert!(stderr(&out).contains(want), "{flags:?}: {}", stderr(&out));
    }
    // Nothing was created by the refused runs.
    assert_eq!(stdout(&env.skiff(&["ps", "-aq"])).trim(), "");
}

#[test]
fn inspect_and_info_show_the_security_settings() {
    let env = Env::new();
    let out = env.skiff(&[
        "create",
        "--name",
        "sec",
        "--cap-add",
        "NET_ADMIN",
        "--cap-drop",
        "MKNOD",
        "--security-opt",
        "no-new-privileges",
        "--read-only",
        "--privileged",
        "--ulimit",
        "nofile=100:200",
        "demo/busybox",
        "true",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let h = &env.inspect("sec")["HostConfig"];
    assert_eq!(h["CapAdd"], serde_json::json!(["NET_ADMIN"]));
    assert_eq!(h["CapDrop"], serde_json::json!(["MKNOD"]));
    assert_eq!(h["SecurityOpt"], serde_json::json!(["no-new-privileges"]));
    assert_eq!(h["ReadonlyRootfs"], true);
    assert_eq!(h["Privileged"], true);
    assert_eq!(h["Ulimits"][0]["Name"], "nofile");
    assert_eq!(h["Ulimits"][0]["Hard"], 200);
    let info: serde_json::Value = serde_json::from_str(&stdout(&env.skiff(&["info"]))).unwrap();
    let opts = info["security_options"].as_array().unwrap();
    assert!(
        opts.iter().any(|o| o == "name=seccomp,profile=builtin"),
        "{info}"
    );
}

/// A static helper that makes calls busybox cannot and prints `name=errno` for each
/// (0 when the call succeeded).
const SYSCALLS_C: &str = r#"
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
static void try(const char *name, long r) { printf("%s=%d\n", name, r < 0 ? errno : 0); }
int main(void) {
    try("keyctl", syscall(SYS_keyctl, 0 /* GET_KEYRING_ID */, -3 /* session */, 0));
    try("add_key", syscall(SYS_add_key, "user", "skiff", "v", 1, -3));
    try("clone3", syscall(435, NULL, 0));
    try("getpid", syscall(SYS_getpid));
    return 0;
}
"#;

#[test]
fn keyring_calls_are_denied_and_clone3_is_enosys() {
    let env = Env::new();
    let dir = env.dir.path();
    std::fs::write(dir.join("syscalls.c"), SYSCALLS_C).unwrap();
    let cc = std::process::Command::new("cc")
        .args(["-static", "-O2", "-o"])
        .arg(dir.join("syscalls"))
        .arg(dir.join("syscalls.c"))
        .output()
        .expect("cc (needed by cargo anyway) runs");
    assert!(cc.status.success(), "cc: {}", stderr(&cc));
    let bin = std::fs::read(dir.join("syscalls")).unwrap();
    let tar = dir.join("sys.tar");
    common::write_busybox_tar(&tar, &[("bin/syscalls", 0, 0, 0o755, &bin)]);
    let out = env.skiff(&["image", "import", tar.to_str().unwrap(), "demo/sys"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let so = run_ok(&env, &["demo/sys", "syscalls"]);
    for want in ["keyctl=1", "add_key=1", "clone3=38", "getpid=0"] {
        assert!(so.lines().any(|l| l == want), "{want} in {so}");
    }
    let so = run_ok(
        &env,
        &[
            "--security-opt",
            "seccomp=unconfined",
            "demo/sys",
            "syscalls",
        ],
    );
    // The kernel's own answers: no EPERM from a filter, EINVAL for clone3(NULL, 0).
    assert!(!so.lines().any(|l| l == "keyctl=1"), "{so}");
    assert!(so.lines().any(|l| l == "clone3=22"), "{so}");
}
