//! `Container.Exec` and the `org.skiff.skiff1.Exec` objects (`/org/skiff/skiff1/exec/<id>`).

use std::collections::HashMap;
use std::time::Duration;

use zbus::{interface, ObjectServer, OwnedObjectPath, OwnedVariant, Variant};

use super::manager::Ctx;
use super::{container_path, SkiffError, MANAGER_PATH};
use crate::daemon::exec::ExecConfig;

/// How long an ended exec's object stays.
const LINGER: Duration = Duration::from_secs(60);

/// The object path of an exec.
pub fn exec_path(id: &str) -> String {
    format!("{MANAGER_PATH}/exec/{id}")
}

/// Decodes Exec's options: env as, workdir s, user s, tty b, console-size au.
pub fn exec_config(
    argv: Vec<String>,
    options: &HashMap<String, OwnedVariant>,
) -> Result<ExecConfig, SkiffError> {
    let mut cfg = ExecConfig {
        argv,
        ..Default::default()
    };
    for (k, v) in options {
        let json = super::convert::variant_to_json(k, v).map_err(SkiffError::invalid_args)?;
        let bad = || {
            SkiffError::invalid_args(format!(
                "exec option {k:?} has the wrong type {}",
                v.value_signature()
            ))
        };
        match k.as_str() {
            "env" => cfg.env = serde_json::from_value(json).map_err(|_| bad())?,
            "workdir" => cfg.workdir = Some(serde_json::from_value(json).map_err(|_| bad())?),
            "user" => cfg.user = Some(serde_json::from_value(json).map_err(|_| bad())?),
            "tty" => match &**v {
                Variant::Bool(b) => cfg.tty = *b,
                _ => return Err(bad()),
            },
            "console-size" => {
                let [rows, cols]: [u16; 2] = serde_json::from_value(json).map_err(|_| {
                    SkiffError::invalid_args(format!(
                        "exec option \"console-size\" must be an array of two numbers \
                         [rows, cols] below 65536 (au), got {}",
                        v.value_signature()
                    ))
                })?;
                cfg.console_size = Some((rows, cols));
            }
            other => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown exec option {other:?} (known: env, workdir, user, tty, console-size)"
                )))
            }
        }
    }
    if let Some(w) = &cfg.workdir {
        if !w.starts_with('/') {
            return Err(SkiffError::invalid_args(format!(
                "workdir {w:?} must be absolute"
            )));
        }
    }
    Ok(cfg)
}

/// Starts an exec and exports its object.
pub async fn start(
    ctx: &Ctx,
    server: &ObjectServer,
    container: &str,
    cfg: ExecConfig,
    stdio: crate::daemon::lifecycle::Stdio,
) -> Result<(String, OwnedObjectPath), SkiffError> {
    let exec = ctx.daemon.exec(container, cfg, stdio).await?;
    let p = exec_path(&exec.id);
    server
        .at(
            p.as_str(),
            ExecObject {
                ctx: ctx.clone(),
                id: exec.id.clone(),
            },
        )
        .await?;
    let path = OwnedObjectPath::try_from(p.clone()).map_err(SkiffError::ZBus)?;
    let server = server.clone();
    let e = exec.clone();
    tokio::spawn(async move {
        e.wait().await;
        tokio::time::sleep(LINGER).await;
        let _ = server.remove::<ExecObject, _>(p.as_str()).await;
    });
    Ok((exec.id.clone(), path))
}

/// An exec's object.
pub struct ExecObject {
    ctx: Ctx,
    id: String,
}

/// A process started in a running container.
#[interface(name = "org.skiff.skiff1.Exec")]
impl ExecObject {
    /// Waits for the process to end; returns its exit code (128+N for signal N).
    async fn wait(&self) -> Result<i32, SkiffError> {
        let e = self.ctx.daemon.exec_by_id(&self.id)?;
        Ok(e.wait().await)
    }

    /// Sends a signal to the process.
    async fn kill(&self, signal: i32) -> Result<(), SkiffError> {
        Ok(self.ctx.daemon.kill_exec(&self.id, signal)?)
    }

    /// The pty master of a tty exec (option `tty: true`) and the slave's path inside
    /// the container. Output written before this call waits in the pty. The client
    /// resizes with TIOCSWINSZ on the master, or with `Resize`.
    #[zbus(name = "OpenPTY", out_args("master", "pty_path"))]
    async fn open_pty(&self) -> Result<(zbus::OwnedFd, String), SkiffError> {
        let e = self.ctx.daemon.exec_by_id(&self.id)?;
        let (fd, path) = e.open_pty()?;
        Ok((fd.into(), path))
    }

    /// Sets the window size of the exec's pty.
    async fn resize(&self, rows: u32, cols: u32) -> Result<(), SkiffError> {
        let (rows, cols) = super::container::window_size(rows, cols)?;
        let e = self.ctx.daemon.exec_by_id(&self.id)?;
        Ok(e.resize(rows, cols)?)
    }

    /// The exec's id.
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// The container's object.
    #[zbus(property(emits_changed_signal = "const"))]
    fn container(&self) -> OwnedObjectPath {
        let id = self
            .ctx
            .daemon
            .exec_by_id(&self.id)
            .map(|e| e.container.clone())
            .unwrap_or_default();
        OwnedObjectPath::try_from(container_path(&id)).unwrap_or_default()
    }

    /// The command.
    #[zbus(property(emits_changed_signal = "const"))]
    fn argv(&self) -> Vec<String> {
        self.ctx
            .daemon
            .exec_by_id(&self.id)
            .map(|e| e.argv.clone())
            .unwrap_or_default()
    }

    /// Whether the process still runs.
    #[zbus(property(emits_changed_signal = "false"))]
    fn running(&self) -> bool {
        self.ctx
            .daemon
            .exec_by_id(&self.id)
            .map(|e| e.exit.borrow().is_none())
            .unwrap_or(false)
    }

    /// The exit code (-1 while running).
    #[zbus(property(emits_changed_signal = "false"))]
    fn exit_code(&self) -> i32 {
        self.ctx
            .daemon
            .exec_by_id(&self.id)
            .ok()
            .and_then(|e| *e.exit.borrow())
            .unwrap_or(-1)
    }
}
