//! The `org.skiff.skiff1.Container` interface, one object per container at
//! `/org/skiff/skiff1/container/<id>`.

use std::collections::HashMap;

use zbus::message::Header;
use zbus::{interface, Connection};

use super::manager::{stdio_of, Ctx};
use super::{check_flags, SkiffError};
use crate::daemon::{Record, WaitCondition};

/// A container's object.
pub struct ContainerObject {
    /// Shared context.
    pub ctx: Ctx,
    /// The container's id.
    pub id: String,
}

impl ContainerObject {
    fn record(&self) -> Option<Record> {
        self.ctx.daemon.lookup(&self.id).ok().map(|c| c.snapshot())
    }
}

/// A container: start it, wait for it, remove it, inspect it.
#[interface(name = "org.skiff.skiff1.Container")]
impl ContainerObject {
    /// Starts the container. `fds` as in `Manager.RunContainer` (empty = logged output).
    async fn start(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        fds: HashMap<u32, zbus::OwnedFd>,
        flags: u64,
    ) -> Result<(), SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        check_flags(flags, 0)?;
        let stdio = stdio_of(fds)?;
        Ok(self.ctx.daemon.start(&self.id, stdio).await?)
    }

    /// Waits for a condition: "" or "not-running" (returns at once unless running),
    /// "next-exit", "removed". Returns the exit code and the end time (µs).
    #[zbus(out_args("exit_code", "finished_at"))]
    async fn wait(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        condition: &str,
    ) -> Result<(i32, u64), SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        let cond: WaitCondition = condition.parse()?;
        Ok(self.ctx.daemon.wait(&self.id, cond).await?)
    }

    /// Sends a signal to the container's main process; `whom` must be "main" or "".
    async fn kill(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        whom: &str,
        signal: i32,
    ) -> Result<(), SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        if !matches!(whom, "" | "main") {
            return Err(SkiffError::NotSupported(format!(
                "kill whom={whom:?}: only \"main\" for now"
            )));
        }
        Ok(self.ctx.daemon.kill(&self.id, signal)?)
    }

    /// Removes the container; flag 1 = force (kill it if it runs).
    async fn remove(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        flags: u64,
    ) -> Result<(), SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        check_flags(flags, super::REMOVE_FORCE)?;
        Ok(self
            .ctx
            .daemon
            .remove(&self.id, flags & super::REMOVE_FORCE != 0)
            .await?)
    }

    /// Docker-shaped JSON: Id, Name, State{...}, Config, HostConfig.
    async fn inspect(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        let v = self.ctx.daemon.inspect(&self.id)?;
        serde_json::to_string_pretty(&v).map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// The full id.
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// The name.
    #[zbus(property)]
    fn name(&self) -> String {
        self.record().map(|r| r.name).unwrap_or_default()
    }

    /// The image as the client named it.
    #[zbus(property(emits_changed_signal = "const"))]
    fn image(&self) -> String {
        self.record().map(|r| r.config.image).unwrap_or_default()
    }

    /// The image's id.
    #[zbus(property(emits_changed_signal = "const"))]
    fn image_id(&self) -> String {
        self.record().map(|r| r.image_id).unwrap_or_default()
    }

    /// The command line.
    #[zbus(property(emits_changed_signal = "const"))]
    fn command(&self) -> Vec<String> {
        self.record().map(|r| r.args).unwrap_or_default()
    }

    /// Creation time, µs since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> u64 {
        self.record().map(|r| r.created).unwrap_or_default()
    }

    /// created, running, exited or removing.
    #[zbus(property)]
    fn state(&self) -> String {
        self.record()
            .map(|r| r.state.status.as_str().to_string())
            .unwrap_or_else(|| "removing".into())
    }

    /// Host pid of the container's init (0 when not running).
    #[zbus(property)]
    fn pid(&self) -> u32 {
        self.record().map(|r| r.state.pid).unwrap_or_default()
    }

    /// Exit code of the last run.
    #[zbus(property)]
    fn exit_code(&self) -> i32 {
        self.record().map(|r| r.state.exit_code).unwrap_or_default()
    }

    /// Start of the last run, µs since the epoch.
    #[zbus(property)]
    fn started_at(&self) -> u64 {
        self.record()
            .map(|r| r.state.started_at)
            .unwrap_or_default()
    }

    /// End of the last run, µs since the epoch.
    #[zbus(property)]
    fn finished_at(&self) -> u64 {
        self.record()
            .map(|r| r.state.finished_at)
            .unwrap_or_default()
    }
}
