//! Containers' monitors out of skiffd's own unit: when skiffd runs as a systemd user
//! service, each new monitor is moved into a transient scope `skiff-<id>.scope` of the
//! user manager (StartTransientUnit on the user bus), before it
//! runs anything. `systemctl --user stop/restart skiffd` then ends only skiffd (the
//! unit's cgroup holds nothing else) and `systemctl --user status skiff-<id>.scope`
//! shows the container's processes. Without a user manager nothing changes.

use std::os::fd::{FromRawFd, OwnedFd};
use std::time::Duration;

use tokio::sync::OnceCell;
use zbus::Variant as Value;

/// The user manager's connection, if skiffd runs as one of its services.
static MANAGER: OnceCell<Option<zbus::Connection>> = OnceCell::const_new();

/// How long the manager gets to move a monitor into its scope.
const MOVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Errors placing a monitor in its scope (the monitor then stays where it is).
#[derive(Debug, thiserror::Error)]
pub enum ScopeError {
    /// The manager refused or failed the call.
    #[error("the user manager could not create {0}: {1}")]
    Call(String, #[source] zbus::Error),
    /// The manager took the call but the process did not arrive in the scope.
    #[error("process {0} did not arrive in {1}")]
    NotMoved(u32, String),
}

/// The unit name of a container's scope.
pub fn unit_name(id: &str) -> String {
    format!("skiff-{id}.scope")
}

/// Whether skiffd runs as a service of a user manager: systemd gave it an invocation
/// id and its cgroup is a `.service`. Returns the user bus (`$XDG_RUNTIME_DIR/bus`),
/// where the manager is `org.freedesktop.systemd1`.
fn under_user_manager() -> Option<std::path::PathBuf> {
    std::env::var_os("INVOCATION_ID")?;
    let cgroup = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    if !cgroup.lines().any(|l| l.trim_end().ends_with(".service")) {
        return None;
    }
    let runtime = std::env::var_os("XDG_RUNTIME_DIR")?;
    let bus = std::path::Path::new(&runtime).join("bus");
    bus.exists().then_some(bus)
}

async fn manager() -> Option<&'static zbus::Connection> {
    MANAGER
        .get_or_init(|| async {
            let socket = under_user_manager()?;
            let address = format!("unix:path={}", socket.display());
            let conn = zbus::connection::Builder::address(address.as_str())
                .build()
                .await;
            match conn {
                Ok(c) => {
                    tracing::info!(
                        "running under a user manager: containers get scopes of their own"
                    );
                    Some(c)
                }
                Err(e) => {
                    tracing::warn!("cannot reach the user manager at {address}: {e}");
                    None
                }
            }
        })
        .await
        .as_ref()
}

/// Whether skiffd runs under a user manager that gives containers scopes.
pub async fn has_manager() -> bool {
    manager().await.is_some()
}

/// A gate the spawned monitor waits at (before it runs anything)
/// until [`place`] has put it in its scope.
pub struct Gate {
    /// The end the child reads; give it to [`super::helper::HelperRun::spawn_gated`].
    pub child_end: OwnedFd,
    /// The end [`place`] opens the gate with.
    pub open_end: OwnedFd,
}

/// A gate when there is a user manager to place monitors with (else `None`: spawn as
/// before).
pub async fn gate() -> Option<Gate> {
    manager().await?;
    let (child_end, open_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).ok()?;
    Some(Gate {
        child_end,
        open_end,
    })
}

/// Moves `pid` (the gated monitor of container `id`) into `skiff-<id>.scope`, then
/// opens the gate — also when that failed: the container then runs in skiffd's unit,
/// as without a manager.
pub async fn place(open_end: OwnedFd, pid: u32, id: &str) {
    let name = unit_name(id);
    // zbus calls have no timeout of their own: a manager that does not answer must not
    // hold the container's start.
    match tokio::time::timeout(2 * MOVE_TIMEOUT, start_scope(&name, pid, id)).await {
        Ok(Ok(())) => tracing::debug!("monitor {pid} in {name}"),
        Ok(Err(e)) => tracing::warn!("{e}; the container stays in skiffd's cgroup"),
        Err(_) => tracing::warn!(
            "the user manager did not create {name} in time; the container stays in skiffd's cgroup"
        ),
    }
    // One byte (or the end of the pipe) lets the monitor go on.
    let _ = nix::unistd::write(&open_end, b"g");
}

async fn start_scope(name: &str, pid: u32, id: &str) -> Result<(), ScopeError> {
    let Some(conn) = manager().await else {
        return Ok(());
    };
    let description = format!("skiff container {}", &id[..id.len().min(12)]);
    let props: Vec<(&str, Value<'_>)> = vec![
        ("Description", Value::from(description.as_str())),
        ("PIDs", Value::from(vec![pid])),
        ("Delegate", Value::from(true)),
        ("CollectMode", Value::from("inactive-or-failed")),
    ];
    let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
    conn.call_method(
        Some("org.freedesktop.systemd1"),
        "/org/freedesktop/systemd1",
        Some("org.freedesktop.systemd1.Manager"),
        "StartTransientUnit",
        &(name, "fail", props, aux),
    )
    .await
    .map_err(|e| ScopeError::Call(name.to_string(), e))?;
    // The job moves the process; wait until it has (it runs at once).
    let deadline = tokio::time::Instant::now() + MOVE_TIMEOUT;
    let needle = format!("/{name}");
    loop {
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        if cg.lines().any(|l| l.trim_end().ends_with(&needle)) {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ScopeError::NotMoved(pid, name.to_string()));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The monitor's descriptor for the gate.
pub const GATE_FD: std::os::fd::RawFd = 6;
/// Set (to [`GATE_FD`]) in a gated monitor's environment.
pub const GATE_ENV: &str = "SKIFF_SCOPE_GATE_FD";

/// In a monitor, first thing: when it was started gated, waits until skiffd opens the
/// gate (it is then in its scope), and closes it. Does nothing otherwise.
pub fn wait_at_gate() {
    if std::env::var_os(GATE_ENV).is_none() {
        return;
    }
    std::env::remove_var(GATE_ENV);
    // SAFETY: GATE_FD was given to us by skiffd for this alone; we own it from here.
    let fd = unsafe { OwnedFd::from_raw_fd(GATE_FD) };
    let mut b = [0u8; 1];
    // Until a byte, the end (skiffd gone) or an error other than EINTR: then go on.
    while let Err(nix::errno::Errno::EINTR) = nix::unistd::read(&fd, &mut b) {}
}
