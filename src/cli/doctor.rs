//! `skiff doctor`: checks every host prerequisite of rootless containers, client-side
//! (no daemon needed), and says for each problem the exact command that fixes it.
//! Exits 1 when something blocks containers (a `fail`), 0 otherwise.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use super::output::outln;
use serde::Serialize;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something is missing or degraded.
    Warn,
    /// Containers cannot run until it is fixed.
    Fail,
}

/// One check's result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked (a stable short name).
    pub name: &'static str,
    /// The verdict.
    pub status: Level,
    /// What was found.
    pub detail: String,
    /// The command or step that fixes it (empty when nothing to fix).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub fix: String,
}

fn check(
    name: &'static str,
    status: Level,
    detail: impl Into<String>,
    fix: impl Into<String>,
) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.into(),
    }
}

/// The subordinate-id files (`/etc/subuid`, `/etc/subgid`).
const SUBUID: &str = "/etc/subuid";
const SUBGID: &str = "/etc/subgid";
/// The ids a user needs for the usual images (docker and podman use 65536).
const WANT_IDS: u64 = 65536;

/// Runs every check.
pub fn checks() -> Vec<Check> {
    let uid = nix::unistd::getuid();
    let user = nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| uid.to_string());
    let mut out = Vec::new();
    if uid.is_root() {
        out.push(check(
            "user",
            Level::Fail,
            "running as root: skiff is rootless, containers run as a normal user",
            "run skiff and skiffd as a normal user (with subordinate id ranges)",
        ));
    }
    out.push(subid_check(
        "subuid",
        SUBUID,
        &user,
        uid.as_raw(),
        "--add-subuids",
    ));
    out.push(subid_check(
        "subgid",
        SUBGID,
        &user,
        uid.as_raw(),
        "--add-subgids",
    ));
    out.push(setid_helper_check("newuidmap"));
    out.push(setid_helper_check("newgidmap"));
    out.push(userns_check());
    out.push(fuse_check());
    out.push(network_check());
    out.push(runtime_dir_check());
    out.push(bus_check());
    out.push(cgroup_check());
    out.push(storage_check());
    out
}

/// A `user:start:count` line's fields.
fn ranges(text: &str) -> Vec<(String, u64, u64)> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.trim().split(':');
            let owner = f.next()?.to_string();
            let start = f.next()?.trim().parse().ok()?;
            let count = f.next()?.trim().parse().ok()?;
            (!owner.is_empty() && !owner.starts_with('#')).then_some((owner, start, count))
        })
        .collect()
}

fn subid_check(name: &'static str, file: &str, user: &str, uid: u32, flag: &str) -> Check {
    let fix = format!("sudo usermod {flag} 100000-165535 {user}   (a range no other user has)");
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => return check(name, Level::Fail, format!("cannot read {file}: {e}"), fix),
    };
    let all = ranges(&text);
    let uid_s = uid.to_string();
    let mine: Vec<_> = all
        .iter()
        .filter(|(o, _, _)| o == user || *o == uid_s)
        .collect();
    let total: u64 = mine.iter().map(|(_, _, c)| c).sum();
    if total == 0 {
        return check(
            name,
            Level::Fail,
            format!("no range for {user} in {file}"),
            fix,
        );
    }
    // Another user's range over ours: their containers' files would be ours.
    for (_, s, c) in &mine {
        for (o, s2, c2) in &all {
            if o != user && *o != uid_s && s < &(s2 + c2) && s2 < &(s + c) {
                return check(
                    name,
                    Level::Fail,
                    format!(
                        "{user}'s range {s}-{} in {file} overlaps {o}'s {s2}-{}",
                        s + c - 1,
                        s2 + c2 - 1
                    ),
                    format!("give {user} a range of its own: sudo usermod --del-{}s {s}-{} {flag} START-END {user}", &flag[6..flag.len() - 1], s + c - 1),
                );
            }
        }
    }
    let detail = format!("{total} ids for {user} in {file}");
    if total < WANT_IDS {
        return check(
            name,
            Level::Warn,
            format!("{detail}: images with ids up to 65535 need {WANT_IDS}"),
            fix,
        );
    }
    check(name, Level::Ok, detail, "")
}

fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .chain(["/usr/sbin".into(), "/sbin".into()])
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether `path` carries file capabilities (the `security.capability` xattr).
fn has_file_caps(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: a size query (null buffer, length 0) on a NUL-terminated path.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.capability".as_ptr(),
            std::ptr::null_mut(),
            0,
        )
    };
    n > 0
}

fn setid_helper_check(tool: &'static str) -> Check {
    let Some(path) = find_in_path(tool) else {
        return check(
            tool,
            Level::Fail,
            format!("{tool} not found"),
            "sudo apt-get install uidmap",
        );
    };
    let Ok(md) = std::fs::metadata(&path) else {
        return check(
            tool,
            Level::Fail,
            format!("cannot stat {}", path.display()),
            "sudo apt-get install --reinstall uidmap",
        );
    };
    // Root-owned; or, seen from inside a user namespace that does not map root (where
    // root's files show as the overflow uid), owned by the overflow uid.
    let overflow = read_sysctl("/proc/sys/kernel/overflowuid").and_then(|s| s.parse().ok());
    let setuid_root =
        md.permissions().mode() & 0o4000 != 0 && (md.uid() == 0 || Some(md.uid()) == overflow);
    if setuid_root {
        return check(
            tool,
            Level::Ok,
            format!("{} is setuid root", path.display()),
            "",
        );
    }
    if has_file_caps(&path) {
        return check(
            tool,
            Level::Ok,
            format!("{} has file capabilities", path.display()),
            "",
        );
    }
    check(
        tool,
        Level::Fail,
        format!("{} is neither setuid root nor has file capabilities: containers cannot get your subordinate ids", path.display()),
        format!("sudo chown root {p} && sudo chmod u+s {p}   (or: sudo setcap cap_set{}id+ep {p})", if tool == "newuidmap" { "u" } else { "g" }, p = path.display()),
    )
}

fn read_sysctl(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn userns_check() -> Check {
    const NAME: &str = "userns";
    if read_sysctl("/proc/sys/kernel/unprivileged_userns_clone").as_deref() == Some("0") {
        return check(NAME, Level::Fail, "kernel.unprivileged_userns_clone = 0", "sudo sysctl -w kernel.unprivileged_userns_clone=1 (and set it in /etc/sysctl.d/ to keep it)");
    }
    if read_sysctl("/proc/sys/user/max_user_namespaces").as_deref() == Some("0") {
        return check(
            NAME,
            Level::Fail,
            "user.max_user_namespaces = 0",
            "sudo sysctl -w user.max_user_namespaces=15000 (and in /etc/sysctl.d/)",
        );
    }
    let apparmor = read_sysctl("/proc/sys/kernel/apparmor_restrict_unprivileged_userns");
    // Try it: a child that unshares a user namespace.
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: only unshare(2), async-signal-safe, between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    match cmd.status() {
        Ok(s) if s.success() => check(NAME, Level::Ok, "unprivileged user namespaces work", ""),
        r => {
            let why = match r {
                Err(e) => e.to_string(),
                Ok(s) => s.to_string(),
            };
            let fix = if apparmor.as_deref() == Some("1") {
                "AppArmor restricts them (kernel.apparmor_restrict_unprivileged_userns = 1): \
                 sudo sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, or an AppArmor \
                 profile allowing userns for skiffd"
            } else {
                "allow unprivileged user namespaces (kernel.unprivileged_userns_clone=1, \
                 user.max_user_namespaces > 0; in a container: run it with user namespaces allowed)"
            };
            check(
                NAME,
                Level::Fail,
                format!("cannot create a user namespace: {why}"),
                fix,
            )
        }
    }
}

fn fuse_check() -> Check {
    const NAME: &str = "fuse";
    let fix = "sudo apt-get install fuse3 && sudo chmod 0666 /dev/fuse";
    let dev = match std::fs::OpenOptions::new().read(true).write(true).open("/dev/fuse") {
        Ok(f) => f,
        Err(e) => {
            return check(
                NAME,
                Level::Warn,
                format!("/dev/fuse cannot be opened ({e}): the storage driver falls back to the kernel's overlay"),
                fix,
            )
        }
    };
    drop(dev);
    match fuse_mount_in_userns() {
        Ok(()) => check(NAME, Level::Ok, "/dev/fuse works and a FUSE mount succeeds in a user namespace (skiff's FUSE overlay works)", ""),
        Err(e) => check(
            NAME,
            Level::Warn,
            format!("/dev/fuse opens but a FUSE mount in a user namespace fails ({e}): use --storage-driver overlay"),
            "a kernel of 4.18 or later with FUSE in user namespaces (in a container: allow the fuse mount)",
        ),
    }
}

/// Mounts a FUSE file system (no server: the mount itself is the test) in a child in
/// new user and mount namespaces, which both end with it.
fn fuse_mount_in_userns() -> std::io::Result<()> {
    let dir = nix::unistd::mkdtemp(&std::env::temp_dir().join("skiff-doctor-XXXXXX"))?;
    let result = fuse_mount_at(&dir);
    let _ = std::fs::remove_dir(&dir);
    result
}

fn fuse_mount_at(dir: &Path) -> std::io::Result<()> {
    let uid = nix::unistd::getuid().as_raw();
    // Everything the child needs is made before the fork (no allocation after it).
    let uid_map = format!("0 {uid} 1");
    let gid_map = format!("0 {} 1", nix::unistd::getgid().as_raw());
    let target = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())
        .map_err(std::io::Error::other)?;
    // The FUSE fd must be opened inside the new user namespace (the kernel refuses one
    // of another namespace); it goes on a fixed number so `data` can be made here.
    const FUSE_FD: i32 = 100;
    let data = std::ffi::CString::new(format!("fd={FUSE_FD},rootmode=40000,user_id=0,group_id=0"))
        .map_err(std::io::Error::other)?;
    let mut cmd = std::process::Command::new("/bin/true");
    // SAFETY: only async-signal-safe calls (unshare, open, write, close, mount) between
    // fork and exec, on buffers made before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let err = std::io::Error::last_os_error;
            if libc::unshare(libc::CLONE_NEWUSER | libc::CLONE_NEWNS) != 0 {
                return Err(err());
            }
            for (file, text) in [
                (c"/proc/self/uid_map", uid_map.as_bytes()),
                (c"/proc/self/setgroups", b"deny".as_slice()),
                (c"/proc/self/gid_map", gid_map.as_bytes()),
            ] {
                let f = libc::open(file.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                if f < 0 {
                    return Err(err());
                }
                let n = libc::write(f, text.as_ptr().cast(), text.len());
                libc::close(f);
                if n < 0 {
                    return Err(err());
                }
            }
            let fd = libc::open(c"/dev/fuse".as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
            if fd < 0 || libc::dup2(fd, FUSE_FD) < 0 {
                return Err(err());
            }
            let flags = libc::MS_NOSUID | libc::MS_NODEV;
            if libc::mount(
                c"skiff-doctor".as_ptr(),
                target.as_ptr(),
                c"fuse".as_ptr(),
                flags,
                data.as_ptr().cast(),
            ) != 0
            {
                return Err(err());
            }
            Ok(())
        });
    }
    let status = cmd.status()?;
    if status.success() {
        Ok(())
    } else {
        Err(std::io::Error::other(format!(
            "the test mount's child: {status}"
        )))
    }
}

fn network_check() -> Check {
    const NAME: &str = "network";
    let slirp = find_in_path("slirp4netns");
    let pasta = find_in_path("pasta");
    match (slirp, pasta) {
        (Some(_), Some(_)) => check(NAME, Level::Ok, "slirp4netns and pasta are installed", ""),
        (Some(_), None) => check(
            NAME,
            Level::Ok,
            "slirp4netns is installed (the default network; pasta is not)",
            "sudo apt-get install passt   (pasta: --network pasta, faster published ports)",
        ),
        (None, Some(_)) => check(
            NAME,
            Level::Warn,
            "pasta is installed, slirp4netns (the default network) is not: pasta is used",
            "sudo apt-get install slirp4netns   (the default network)",
        ),
        (None, None) => check(
            NAME,
            Level::Warn,
            "neither slirp4netns nor pasta: containers get only --network none or host",
            "sudo apt-get install slirp4netns passt",
        ),
    }
}

fn runtime_dir_check() -> Check {
    const NAME: &str = "xdg_runtime_dir";
    let fix = "log in through a PAM session (ssh, login, machinectl shell USER@) that sets \
               XDG_RUNTIME_DIR, or export XDG_RUNTIME_DIR to a 0700 directory of yours";
    let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) else {
        return check(
            NAME,
            Level::Warn,
            "XDG_RUNTIME_DIR is not set: skiff keeps its runtime state in /tmp/skiff-UID",
            fix,
        );
    };
    let dir = PathBuf::from(dir);
    match std::fs::metadata(&dir) {
        Ok(md)
            if md.uid() == nix::unistd::getuid().as_raw()
                && md.permissions().mode() & 0o077 == 0 =>
        {
            check(
                NAME,
                Level::Ok,
                format!("{} (yours, 0700)", dir.display()),
                "",
            )
        }
        Ok(_) => check(
            NAME,
            Level::Warn,
            format!("{} is not yours or not 0700", dir.display()),
            fix,
        ),
        Err(e) => check(NAME, Level::Warn, format!("{}: {e}", dir.display()), fix),
    }
}

fn bus_check() -> Check {
    const NAME: &str = "session_bus";
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    let manager = runtime
        .as_ref()
        .map(|r| r.join("systemd/private"))
        .filter(|p| p.exists());
    let bus = std::env::var("SKIFF_BUS_ADDRESS")
        .ok()
        .or_else(|| std::env::var("DBUS_SESSION_BUS_ADDRESS").ok())
        .filter(|a| !a.is_empty())
        .or_else(|| {
            let p = runtime.as_ref()?.join("bus");
            p.exists().then(|| format!("unix:path={}", p.display()))
        });
    match (bus, manager) {
        (Some(b), Some(_)) => check(NAME, Level::Ok, format!("session bus {b}; a systemd user manager runs (systemctl --user start skiffd)"), ""),
        (Some(b), None) => check(NAME, Level::Ok, format!("session bus {b} (no systemd user manager: start skiffd yourself)"), ""),
        (None, _) => check(
            NAME,
            Level::Warn,
            "no session bus (no DBUS_SESSION_BUS_ADDRESS, no $XDG_RUNTIME_DIR/bus): skiff and skiffd cannot meet",
            crate::dbus::session::HOW_TO_GET_A_BUS,
        ),
    }
}

fn cgroup_check() -> Check {
    const NAME: &str = "cgroups";
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    let Some(path) = own.lines().find_map(|l| l.strip_prefix("0::")) else {
        return check(
            NAME,
            Level::Warn,
            "no cgroup v2 hierarchy: no resource limits, no cgroup per container",
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2)",
        );
    };
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        "/sys/fs/cgroup"
    } else if Path::new("/sys/fs/cgroup/unified/cgroup.controllers").exists() {
        "/sys/fs/cgroup/unified"
    } else {
        return check(
            NAME,
            Level::Warn,
            "cgroup v2 is not mounted",
            "boot with systemd.unified_cgroup_hierarchy=1 (cgroup v2)",
        );
    };
    let dir = format!("{root}{path}");
    let mine = std::fs::metadata(&dir)
        .map(|m| m.uid() == nix::unistd::getuid().as_raw())
        .unwrap_or(false);
    let controllers =
        std::fs::read_to_string(format!("{dir}/cgroup.controllers")).unwrap_or_default();
    let hybrid = root.ends_with("unified");
    if !mine {
        return check(
            NAME,
            Level::Warn,
            format!("your cgroup {dir} is not delegated to you: no resource limits"),
            "run under a systemd user manager (systemctl --user, Delegate=yes) on cgroup v2",
        );
    }
    if controllers.trim().is_empty() || hybrid {
        return check(
            NAME,
            Level::Warn,
            format!(
                "{dir} is yours but has no controllers{}: --memory/--cpus/--pids-limit unavailable",
                if hybrid {
                    " (cgroup v1/hybrid host)"
                } else {
                    ""
                }
            ),
            "boot with systemd.unified_cgroup_hierarchy=1 and delegate controllers: \
             a drop-in with Delegate=cpu cpuset io memory pids for user@.service",
        );
    }
    check(
        NAME,
        Level::Ok,
        format!("{dir} is delegated to you with: {}", controllers.trim()),
        "",
    )
}

fn storage_check() -> Check {
    let (driver, why) = crate::runtime::RootfsDriver::choose_default();
    check("storage_driver", Level::Ok, format!("{driver}: {why}"), "")
}

/// `skiff doctor [--format json]`: prints the checks; 1 when one fails.
pub fn doctor(format: Option<&str>) -> Result<i32, super::Failure> {
    let all = checks();
    let failed = all.iter().any(|c| c.status == Level::Fail);
    match format {
        Some("json") => {
            let s = serde_json::to_string_pretty(&all)
                .map_err(|e| super::Failure::msg(format!("cannot encode the checks: {e}")))?;
            outln!("{s}");
        }
        None | Some("table") => {
            for c in &all {
                let tag = match c.status {
                    Level::Ok => "ok  ",
                    Level::Warn => "warn",
                    Level::Fail => "FAIL",
                };
                outln!("{tag} {:<16} {}", c.name, c.detail);
                if !c.fix.is_empty() {
                    outln!("     {:<16} fix: {}", "", c.fix);
                }
            }
            if failed {
                outln!("\nContainers cannot run until every FAIL is fixed.");
            }
        }
        Some(f) => {
            return Err(super::Failure::msg(format!(
                "unknown format {f:?}: use --format json (or leave it out for a table)"
            )))
        }
    }
    Ok(i32::from(failed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subid_lines_parse() {
        let r = ranges("alice:100000:65536\n# c\nbob:165536:65536\nbad\n");
        assert_eq!(r.len(), 2);
        assert_eq!(r[1], ("bob".to_string(), 165536, 65536));
    }
}
