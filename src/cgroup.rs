//! A container's own cgroup v2 directory, when it has one: the monitor runs in the
//! transient scope `skiff-<id>.scope` that skiffd asked the user manager for
//! (`daemon::scope`, `Delegate=yes`), and splits it into two leaves, `monitor/` (itself,
//! its network and FUSE helpers) and `container/` (the container's init and everything
//! it starts). `container/` is what teardown kills (`cgroup.kill`), what pause freezes
//! (`cgroup.freeze`, core cgroup v2 files that need no controller) and where resource
//! limits go (`memory.max`, `cpu.max`, `pids.max`, when those controllers are
//! delegated). Without a scope (no user manager) a container has no cgroup of its own
//! and none of this applies.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// The leaf that holds the container's processes.
pub const CONTAINER_LEAF: &str = "container";
/// The leaf that holds the monitor and its helpers.
pub const MONITOR_LEAF: &str = "monitor";

/// Errors handling a container's cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// A cgroup file could not be read or written.
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    /// Resource limits were asked for where they cannot be applied.
    #[error("{0}")]
    NotSupported(String),
    /// The kernel did not reach the state asked for in time.
    #[error("{0}")]
    Timeout(String),
}

fn io(path: &Path, e: std::io::Error) -> CgroupError {
    CgroupError::Io(path.display().to_string(), e)
}

/// Resource limits for a container's cgroup (cgroup v2 values).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// `memory.max` in bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// `cpu.max`: quota and period in µs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<(u64, u64)>,
    /// `pids.max` (None: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
}

impl Limits {
    /// Whether no limit is set.
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// The controllers these limits need.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() {
            c.push("memory");
        }
        if self.cpu.is_some() {
            c.push("cpu");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        c
    }
}

/// Where the cgroup v2 (unified) hierarchy is mounted: `/sys/fs/cgroup` on a v2-only
/// host, `/sys/fs/cgroup/unified` on a hybrid one; None without one.
pub fn unified_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    visible_cgroup2(&info)
}

/// The mount point of the cgroup2 mount of `mountinfo` that no later mount hides. A
/// mount on the same point or on a directory above it hides the earlier ones there,
/// which mountinfo still lists: e.g. a hybrid host's `/sys/fs/cgroup/unified` under a
/// cgroup2 mounted over `/sys/fs/cgroup` (a cgroup namespace's own view).
fn visible_cgroup2(mountinfo: &str) -> Option<PathBuf> {
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS... - FSTYPE SOURCE SUPER
    let mounts: Vec<(&str, &str)> = mountinfo
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            Some((
                pre.split_whitespace().nth(4)?,
                post.split_whitespace().next()?,
            ))
        })
        .collect();
    let hides = |later: &str, point: &str| {
        later == point
            || later == "/"
            || point
                .strip_prefix(later)
                .is_some_and(|rest| rest.starts_with('/'))
    };
    mounts
        .iter()
        .enumerate()
        .rev()
        .find(|(i, (point, fstype))| {
            *fstype == "cgroup2" && !mounts[i + 1..].iter().any(|(later, _)| hides(later, point))
        })
        .map(|(_, (point, _))| PathBuf::from(point))
}

/// The unified-hierarchy cgroup of `pid` ("self" for ours) as a path under the mount.
pub fn cgroup_of(pid: &str) -> Option<PathBuf> {
    let mount = unified_mount()?;
    let s = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let rel = s.lines().find_map(|l| l.strip_prefix("0::"))?;
    Some(mount.join(rel.trim_start_matches('/')))
}

/// The container cgroup of container `id` whose init is `pid`, if that process is in
/// one (it then runs in `skiff-<id>.scope/container`).
pub fn container_cgroup(id: &str, pid: u32) -> Option<PathBuf> {
    let cg = cgroup_of(&pid.to_string())?;
    let scope = cg.parent()?;
    (cg.file_name()? == CONTAINER_LEAF
        && scope.file_name()? == format!("skiff-{id}.scope").as_str())
    .then_some(cg)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|e| io(path, e))
}

/// The controllers a cgroup can hand to its children (`cgroup.controllers`).
pub fn available_controllers(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("cgroup.controllers"))
        .unwrap_or_default()
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

/// How to delegate controllers to a systemd user manager.
pub const DELEGATE_HINT: &str = "delegate them to your user manager: as root, `systemctl edit \
     user@.service` with `[Service]` `Delegate=cpu cpuset io memory pids`, then log in again \
     (on a cgroup v1 or hybrid host, boot with systemd.unified_cgroup_hierarchy=1 first)";

/// In the monitor, first thing: when it runs in its container's scope, moves itself to
/// `monitor/`, makes `container/` and applies `limits` there; returns `container/`. When
/// it does not run in a scope, returns None, or an error when limits were asked for.
pub fn set_up(id: &str, limits: &Limits) -> Result<Option<PathBuf>, CgroupError> {
    let own = cgroup_of("self");
    let scope_name = format!("skiff-{id}.scope");
    let scope = match own {
        Some(p) if p.file_name().is_some_and(|n| n == scope_name.as_str()) => p,
        _ => {
            if limits.is_empty() {
                return Ok(None);
            }
            return Err(CgroupError::NotSupported(format!(
                "resource limits need the container in a cgroup of its own, and its monitor \
                 is not in {scope_name}: run skiffd as a systemd user service \
                 (systemctl --user start skiffd) on a host with cgroup v2"
            )));
        }
    };
    let container = match split_scope(&scope) {
        Ok(c) => c,
        // Without limits the container can run in the scope as it is (as before scopes
        // were split): only pause and cgroup.kill are then unavailable.
        Err(e) if limits.is_empty() => {
            tracing::warn!("{e}: the container gets no cgroup of its own");
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    if !limits.is_empty() {
        let have = available_controllers(&scope);
        let missing: Vec<&str> = limits
            .controllers()
            .into_iter()
            .filter(|c| !have.iter().any(|h| h == c))
            .collect();
        if !missing.is_empty() {
            return Err(CgroupError::NotSupported(format!(
                "the {} controller{} not delegated to {scope_name}: {DELEGATE_HINT}",
                missing.join(", "),
                if missing.len() == 1 { " is" } else { "s are" }
            )));
        }
        let enable: Vec<String> = limits
            .controllers()
            .iter()
            .map(|c| format!("+{c}"))
            .collect();
        write(&scope.join("cgroup.subtree_control"), &enable.join(" "))?;
        if let Some(m) = limits.memory {
            write(&container.join("memory.max"), &m.to_string())?;
        }
        if let Some((quota, period)) = limits.cpu {
            write(&container.join("cpu.max"), &format!("{quota} {period}"))?;
        }
        if let Some(p) = limits.pids {
            write(&container.join("pids.max"), &p.to_string())?;
        }
    }
    Ok(Some(container))
}

/// Makes `monitor/` and `container/` in the scope and moves us into `monitor/`;
/// returns `container/`. On failure nothing is left behind.
fn split_scope(scope: &Path) -> Result<PathBuf, CgroupError> {
    let monitor = scope.join(MONITOR_LEAF);
    let container = scope.join(CONTAINER_LEAF);
    let made = [&monitor, &container]
        .into_iter()
        .try_for_each(|d| match std::fs::create_dir(d) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => Err(io(d, e)),
            _ => Ok(()),
        });
    let moved = made.and_then(|()| {
        write(
            &monitor.join("cgroup.procs"),
            &std::process::id().to_string(),
        )
    });
    if moved.is_err() {
        let _ = std::fs::remove_dir(&container);
        let _ = std::fs::remove_dir(&monitor);
    }
    moved.map(|()| container)
}

/// Moves `pid` (and its threads) into the cgroup `dir`.
pub fn add_process(dir: &Path, pid: i32) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.procs"), &pid.to_string())
}

/// Kills every process in `dir` (`cgroup.kill`; frozen ones too).
pub fn kill(dir: &Path) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.kill"), "1")
}

/// A key of `cgroup.events` ("populated", "frozen").
fn event(dir: &Path, key: &str) -> Option<bool> {
    let s = std::fs::read_to_string(dir.join("cgroup.events")).ok()?;
    s.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim() == "1")
    })
}

/// Whether the cgroup is frozen.
pub fn is_frozen(dir: &Path) -> bool {
    event(dir, "frozen").unwrap_or(false)
}

/// Polls `cgroup.events` until `key` is `want` (or the cgroup is gone).
fn wait_event(dir: &Path, key: &str, want: bool, timeout: Duration) -> Result<(), CgroupError> {
    let deadline = Instant::now() + timeout;
    loop {
        match event(dir, key) {
            None => return Ok(()),
            Some(v) if v == want => return Ok(()),
            Some(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::Timeout(format!(
                "{}: {key} did not become {} within {timeout:?}",
                dir.display(),
                u8::from(want)
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Freezes (`true`) or thaws the cgroup and waits until the kernel has done it.
pub fn freeze(dir: &Path, frozen: bool, timeout: Duration) -> Result<(), CgroupError> {
    write(&dir.join("cgroup.freeze"), if frozen { "1" } else { "0" })?;
    wait_event(dir, "frozen", frozen, timeout)
}

/// Kills what is left in `dir`, waits until it is empty and removes it.
pub fn tear_down(dir: &Path, timeout: Duration) -> Result<(), CgroupError> {
    if event(dir, "populated") == Some(true) {
        kill(dir)?;
        wait_event(dir, "populated", false, timeout)?;
    }
    match std::fs::remove_dir(dir) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(dir, e)),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_name_their_controllers() {
        let l = Limits {
            memory: Some(1 << 20),
            cpu: None,
            pids: Some(10),
        };
        assert_eq!(l.controllers(), vec!["memory", "pids"]);
        assert!(!l.is_empty());
        assert!(Limits::default().is_empty());
    }

    /// mountinfo lines: (mount point, file system type).
    fn mountinfo(mounts: &[(&str, &str)]) -> String {
        mounts
            .iter()
            .enumerate()
            .map(|(i, (point, fstype))| {
                format!(
                    "{} 1 0:{i} / {point} rw,relatime - {fstype} {fstype} rw\n",
                    20 + i
                )
            })
            .collect()
    }

    #[test]
    fn the_unified_mount_is_the_visible_cgroup2_one() {
        let hybrid = [
            ("/", "ext4"),
            ("/sys", "sysfs"),
            ("/sys/fs/cgroup", "tmpfs"),
            ("/sys/fs/cgroup/memory", "cgroup"),
            ("/sys/fs/cgroup/unified", "cgroup2"),
            ("/sys/fs/cgroup/systemd", "cgroup"),
        ];
        assert_eq!(
            visible_cgroup2(&mountinfo(&hybrid)),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // A cgroup2 mounted over /sys/fs/cgroup (scripts/user-manager.sh's namespace):
        // the hybrid host's unified mount is still listed, hidden under it.
        let mut over = hybrid.to_vec();
        over.push(("/sys/fs/cgroup", "cgroup2"));
        over.push(("/run/systemd", "tmpfs"));
        assert_eq!(
            visible_cgroup2(&mountinfo(&over)),
            Some(PathBuf::from("/sys/fs/cgroup"))
        );
        // Hidden by a later mount of another type, e.g. a tmpfs over /sys/fs/cgroup.
        let mut hidden = hybrid.to_vec();
        hidden.push(("/sys/fs/cgroup", "tmpfs"));
        assert_eq!(visible_cgroup2(&mountinfo(&hidden)), None);
        // /sys/fs/cgroup2 is not under /sys/fs/cgroup.
        let beside = [("/sys/fs/cgroup2", "cgroup2"), ("/sys/fs/cgroup", "tmpfs")];
        assert_eq!(
            visible_cgroup2(&mountinfo(&beside)),
            Some(PathBuf::from("/sys/fs/cgroup2"))
        );
        assert_eq!(visible_cgroup2(&mountinfo(&[("/", "ext4")])), None);
    }

    #[test]
    fn a_process_outside_a_scope_has_no_container_cgroup() {
        // The test process is in no skiff scope.
        assert_eq!(container_cgroup("abc", std::process::id()), None);
    }
}
