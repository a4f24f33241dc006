//! Freezing a container for `commit --pause`: through the cgroup v2 freezer of its
//! own scope (`skiff-<id>.scope`, where a user manager put its monitor and processes).
//! A container without such a scope (it runs in skiffd's cgroup) is not frozen: that
//! would freeze skiffd too. Never touches cgroup v1 hierarchies.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// How long the freezer may take to report the scope frozen.
const FREEZE_WAIT: Duration = Duration::from_secs(2);

/// A frozen scope; thawed when dropped.
pub(crate) struct Frozen {
    dir: PathBuf,
}

impl Frozen {
    /// Freezes the scope of container `id` whose init is `pid`; `None` (with a log
    /// line) when it has no scope of its own or the freezer refuses.
    pub(crate) fn try_freeze(id: &str, pid: i32) -> Option<Frozen> {
        let dir = scope_dir(id, pid)?;
        if let Err(e) = std::fs::write(dir.join("cgroup.freeze"), b"1") {
            tracing::info!(
                "commit: cannot freeze {}: {e}; committing it running",
                dir.display()
            );
            return None;
        }
        let frozen = Frozen { dir };
        let start = std::time::Instant::now();
        while start.elapsed() < FREEZE_WAIT {
            let events =
                std::fs::read_to_string(frozen.dir.join("cgroup.events")).unwrap_or_default();
            if events.lines().any(|l| l.trim() == "frozen 1") {
                return Some(frozen);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::info!(
            "commit: {} did not freeze in time; committing it as it is",
            frozen.dir.display()
        );
        Some(frozen)
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.freeze"), b"0") {
            tracing::error!("thawing {}: {e}", self.dir.display());
        }
    }
}

/// The cgroup v2 directory of the container's own scope, if it has one.
fn scope_dir(id: &str, pid: i32) -> Option<PathBuf> {
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    let path = cg.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let scope = format!("skiff-{id}.scope");
    if Path::new(path).file_name()?.to_str()? != scope {
        tracing::info!("commit: container {id} has no scope of its own; committing it running");
        return None;
    }
    let root = if Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        Path::new("/sys/fs/cgroup")
    } else {
        Path::new("/sys/fs/cgroup/unified")
    };
    let dir = root.join(path.trim_start_matches('/'));
    dir.join("cgroup.freeze").exists().then_some(dir)
}
