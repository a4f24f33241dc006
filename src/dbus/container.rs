//! The `org.skiff.skiff1.Container` interface, one object per container at
//! `/org/skiff/skiff1/container/<id>`.

use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::time::Duration;

use zbus::{interface, OwnedVariant, Variant};

use super::manager::{stdio_of, Ctx};
use super::{check_flags, SkiffError};
use crate::daemon::logs::LogOptions;
use crate::daemon::{Record, WaitCondition};

/// `t` µs with UINT64_MAX meaning "the container's default".
fn timeout_of(us: u64) -> Option<Duration> {
    (us != u64::MAX).then(|| Duration::from_micros(us))
}

/// Decodes OpenLogs' options: follow b, since t, until t, tail u, timestamps b.
fn log_options(options: &HashMap<String, OwnedVariant>) -> Result<LogOptions, SkiffError> {
    let mut o = LogOptions::default();
    for (k, v) in options {
        match (k.as_str(), &**v) {
            ("follow", Variant::Bool(b)) => o.follow = *b,
            ("timestamps", Variant::Bool(b)) => o.timestamps = *b,
            ("since", Variant::U64(t)) => o.since = *t,
            ("until", Variant::U64(t)) => o.until = *t,
            ("tail", Variant::U32(n)) => o.tail = Some(*n as usize),
            (key @ ("follow" | "timestamps" | "since" | "until" | "tail"), other) => {
                return Err(SkiffError::invalid_args(format!(
                    "log option {key:?} has the wrong type {}",
                    other.value_signature()
                )))
            }
            (other, _) => {
                return Err(SkiffError::invalid_args(format!(
                    "unknown log option {other:?} (known: follow, since, until, tail, timestamps)"
                )))
            }
        }
    }
    Ok(o)
}

/// Checks a window size from a client.
pub(crate) fn window_size(rows: u32, cols: u32) -> Result<(u16, u16), SkiffError> {
    match (u16::try_from(rows), u16::try_from(cols)) {
        (Ok(r), Ok(c)) if r > 0 && c > 0 => Ok((r, c)),
        _ => Err(SkiffError::invalid_args(format!(
            "window size {rows}x{cols}: rows and cols must be 1 to 65535"
        ))),
    }
}

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
    /// Flag 4: the caller attaches right after (no fds), as `RunContainer`'s.
    async fn start(&self, fds: HashMap<u32, zbus::OwnedFd>, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, super::RUN_ATTACH)?;
        let stdio = stdio_of(fds)?;
        if flags & super::RUN_ATTACH != 0 {
            if stdio.is_some() {
                return Err(SkiffError::invalid_args(
                    "flag 4 (attach) is for starts without fds",
                ));
            }
            return Ok(self.ctx.daemon.start_for_attach(&self.id).await?);
        }
        Ok(self.ctx.daemon.start(&self.id, stdio).await?)
    }

    /// Waits for a condition: "" or "not-running" (returns at once unless running),
    /// "next-exit", "removed". Returns the exit code and the end time (µs).
    #[zbus(out_args("exit_code", "finished_at"))]
    async fn wait(&self, condition: &str) -> Result<(i32, u64), SkiffError> {
        let cond: WaitCondition = condition.parse()?;
        crate::phase::mark2("wait-call", condition);
        let r = self.ctx.daemon.wait(&self.id, cond).await?;
        crate::phase::mark2("wait-reply", condition);
        Ok(r)
    }

    /// Stops the container: its stop signal, then SIGKILL after `timeout` µs
    /// (UINT64_MAX = the container's stop-timeout, default 10 s).
    async fn stop(&self, timeout: u64, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, 0)?;
        Ok(self.ctx.daemon.stop(&self.id, timeout_of(timeout)).await?)
    }

    /// Stops (as `Stop`) and starts the container again.
    async fn restart(&self, timeout: u64, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, 0)?;
        Ok(self
            .ctx
            .daemon
            .restart(&self.id, timeout_of(timeout))
            .await?)
    }

    /// Renames the container.
    async fn rename(&self, name: &str) -> Result<(), SkiffError> {
        Ok(self.ctx.daemon.rename(&self.id, name)?)
    }

    /// The container's logs as two pipes (stdout, stderr); end-of-file ends them.
    /// Options: follow b, since t (µs), until t (µs), tail u, timestamps b.
    #[zbus(out_args("stdout", "stderr"))]
    async fn open_logs(
        &self,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(zbus::OwnedFd, zbus::OwnedFd), SkiffError> {
        let opts = log_options(&options)?;
        let (out, err): (OwnedFd, OwnedFd) = self.ctx.daemon.open_logs(&self.id, opts)?;
        Ok((out.into(), err.into()))
    }

    /// Runs a new process in the running container (all its namespaces, its root, its
    /// user unless `user` is given). `fds` are the process's 0/1/2 (missing = /dev/null).
    /// Options: env as, workdir s, user s, tty b, privileged b. The exec's end comes as an `exec_die` event
    /// (with `execID`, `exitCode`) and through `Exec.Wait()`.
    #[zbus(out_args("exec_id", "exec"))]
    async fn exec(
        &self,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        argv: Vec<String>,
        options: HashMap<String, OwnedVariant>,
        fds: HashMap<u32, zbus::OwnedFd>,
    ) -> Result<(String, zbus::OwnedObjectPath), SkiffError> {
        let cfg = super::exec::exec_config(argv, &options)?;
        let stdio = match stdio_of(fds)? {
            Some(s) => s,
            None => super::manager::null_stdio()?,
        };
        super::exec::start(&self.ctx, server, &self.id, cfg, stdio).await
    }

    /// A connection to the running container's monitor (`AF_UNIX SOCK_SEQPACKET`, the
    /// attach protocol of docs/dbus-api.md): the container's pty or stdout/stderr, its
    /// stdin, resizes and its exit code, with no daemon in between. Several clients may
    /// attach at once; output written before the first one attached is replayed to it.
    /// `flags` must be 0.
    #[zbus(out_args("socket"))]
    async fn attach(&self, flags: u64) -> Result<zbus::OwnedFd, SkiffError> {
        check_flags(flags, 0)?;
        let fd: OwnedFd = self.ctx.daemon.attach(&self.id)?;
        Ok(fd.into())
    }

    /// Sets the window size of a tty container's pty: at once while it runs, else for
    /// its next start (before the command runs).
    async fn resize(&self, rows: u32, cols: u32) -> Result<(), SkiffError> {
        let (rows, cols) = window_size(rows, cols)?;
        Ok(self.ctx.daemon.resize(&self.id, rows, cols)?)
    }

    /// Sends a signal to the container's main process; `whom` must be "main" or "".
    async fn kill(&self, whom: &str, signal: i32) -> Result<(), SkiffError> {
        if !matches!(whom, "" | "main") {
            return Err(SkiffError::NotSupported(format!(
                "kill whom={whom:?}: only \"main\" for now"
            )));
        }
        Ok(self.ctx.daemon.kill(&self.id, signal)?)
    }

    /// Freezes every process of the running container (cgroup v2 `cgroup.freeze`; needs
    /// the container's own cgroup, else `NotSupported` saying why).
    async fn pause(&self) -> Result<(), SkiffError> {
        Ok(self.ctx.daemon.pause(&self.id).await?)
    }

    /// Thaws a paused container.
    async fn unpause(&self) -> Result<(), SkiffError> {
        Ok(self.ctx.daemon.unpause(&self.id).await?)
    }

    /// Removes the container; flag 1 = force (kill it if it runs).
    async fn remove(&self, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, super::REMOVE_FORCE | super::REMOVE_VOLUMES)?;
        Ok(self
            .ctx
            .daemon
            .remove_with(
                &self.id,
                flags & super::REMOVE_FORCE != 0,
                flags & super::REMOVE_VOLUMES != 0,
            )
            .await?)
    }

    /// Extracts the tar read from `input` at `path` in the container (running or
    /// stopped; relative paths start at its `/`). Options: `mode` (s): "extract" (the
    /// default: the entries go into `path`, an existing directory, owners kept),
    /// "tree" (the stream holds one file or directory, placed by docker's cp rules) or
    /// "contents" (as tree, a directory's contents). Returns when done, with warnings
    /// (entries skipped).
    #[zbus(out_args("warnings"))]
    async fn copy_to(
        &self,
        input: zbus::OwnedFd,
        path: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<Vec<String>, SkiffError> {
        let mut mode = crate::cp::Mode::Extract;
        for (k, v) in &options {
            match (k.as_str(), &**v) {
                ("mode", Variant::Str(s)) => {
                    mode = s.parse().map_err(SkiffError::invalid_args)?;
                }
                (other, _) => {
                    return Err(SkiffError::invalid_args(format!(
                        "unknown or mistyped copy option {other:?} (known: mode s)"
                    )))
                }
            }
        }
        let fd: OwnedFd = super::stdio::received(input);
        super::stdio::check_fd(&fd, "input")?;
        Ok(self.ctx.daemon.copy_to(&self.id, fd, path, mode).await?)
    }

    /// Writes a tar of `path` in the container (running or stopped) to `output`: its
    /// top entry is the file or directory itself, under its base name, with the
    /// container's owners. Options: `follow` (b): follow a symlink `path` names (else
    /// the link is copied). Returns when the archive is written.
    async fn copy_from(
        &self,
        path: &str,
        output: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), SkiffError> {
        let mut follow = false;
        for (k, v) in &options {
            match (k.as_str(), &**v) {
                ("follow", Variant::Bool(b)) => follow = *b,
                (other, _) => {
                    return Err(SkiffError::invalid_args(format!(
                        "unknown or mistyped copy option {other:?} (known: follow b)"
                    )))
                }
            }
        }
        let fd: OwnedFd = super::stdio::received(output);
        super::stdio::check_fd(&fd, "output")?;
        Ok(self
            .ctx
            .daemon
            .copy_from(&self.id, path, fd, follow)
            .await?)
    }

    /// docker's top: the host's `ps` run with `ps_args` (empty = `-ef`), cut to the
    /// container's processes (host pids). Returns ps's titles and one array of fields
    /// per process. Fails when the container does not run.
    #[zbus(out_args("titles", "processes"))]
    async fn top(
        &self,
        ps_args: Vec<String>,
    ) -> Result<(Vec<String>, Vec<Vec<String>>), SkiffError> {
        Ok(self.ctx.daemon.top(&self.id, &ps_args).await?)
    }

    /// One reading of the container's resource use (docs/dbus-api.md): `id` s, `name`
    /// s, `running` b, and while it runs `read` t (CLOCK_MONOTONIC ns of the reading),
    /// `cpu` t (ns used), `memory` t, `memory_limit` t, `net_rx` t, `net_tx` t,
    /// `block_read` t, `block_write` t (bytes), `pids` t, `sources` s. A number that
    /// is unavailable is left out.
    async fn stats(&self) -> Result<HashMap<String, OwnedVariant>, SkiffError> {
        let (rec, sample) = self.ctx.daemon.stats(&self.id).await?;
        super::convert::stats_dict(&rec, sample.as_ref())
    }

    /// Commits the container's changes (running or stopped) as a new image named
    /// `reference` ("" for an untagged one). Options: `changes` (as): Dockerfile
    /// instructions applied to the image config (CMD, ENTRYPOINT, ENV, WORKDIR, USER,
    /// LABEL, EXPOSE, VOLUME, STOPSIGNAL); `message` (s), `author` (s): the history
    /// entry's comment and author; `pause` (b, default true): freeze a running
    /// container while its layer is read, where it has a cgroup scope of its own.
    /// Returns the new image's id.
    #[zbus(out_args("image_id"))]
    async fn commit(
        &self,
        #[zbus(connection)] conn: &zbus::Connection,
        #[zbus(object_server)] server: &zbus::ObjectServer,
        reference: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<String, SkiffError> {
        let mut opts = crate::daemon::commit::CommitOptions {
            reference: Some(reference.to_string()),
            pause: true,
            ..Default::default()
        };
        for (k, v) in &options {
            match (k.as_str(), &**v) {
                ("message", Variant::Str(s)) => opts.message = Some(s.to_string()),
                ("author", Variant::Str(s)) => opts.author = Some(s.to_string()),
                ("pause", Variant::Bool(b)) => opts.pause = *b,
                ("changes", v) => {
                    let list: Vec<String> = v
                        .try_clone()
                        .ok()
                        .and_then(|v| v.try_into().ok())
                        .ok_or_else(|| {
                            SkiffError::invalid_args(
                                "option \"changes\" must be an array of strings",
                            )
                        })?;
                    for c in &list {
                        crate::image::changes::apply_change(&mut opts.changes, c)
                            .map_err(|e| SkiffError::invalid_args(e.to_string()))?;
                    }
                }
                (other, _) => {
                    return Err(SkiffError::invalid_args(format!(
                        "unknown or mistyped commit option {other:?} (known: changes as, \
                         message s, author s, pause b)"
                    )))
                }
            }
        }
        let rec = self.ctx.daemon.commit_container(&self.id, opts).await?;
        super::image::register_image(&self.ctx, server, conn, &rec.id).await;
        Ok(rec.id)
    }

    /// Docker-shaped JSON: Id, Name, State{...}, Config, HostConfig.
    async fn inspect(&self) -> Result<String, SkiffError> {
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
            .map(|r| r.state.status_str().to_string())
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

    /// Restarts made by the restart policy.
    #[zbus(property)]
    fn restart_count(&self) -> u32 {
        self.record()
            .map(|r| r.state.restart_count)
            .unwrap_or_default()
    }
}
