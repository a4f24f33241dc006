//! A container's record (what `inspect` shows and what survives a daemon restart) and its
//! live state, with the wait conditions docker offers.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::config::ContainerConfig;
use super::Error;
use crate::fsutil;
use crate::timefmt::rfc3339;

/// An empty file in a `--rm` container's directory, made before its first record: the
/// records of `--rm` containers are not all fsync'd (see [`Container::update_state`]),
/// and after a crash of the machine a directory with the marker and a record that
/// cannot be read is collected at start-up instead of kept for the user to look at.
pub const AUTO_REMOVE_MARKER: &str = "auto-remove";

/// Docker's container states.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Created, never started.
    #[default]
    Created,
    /// The command runs.
    Running,
    /// The command ended.
    Exited,
    /// Being removed.
    Removing,
}

impl Status {
    /// The lowercase name docker uses.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Created => "created",
            Status::Running => "running",
            Status::Exited => "exited",
            Status::Removing => "removing",
        }
    }
}

/// The mutable part of a container.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct State {
    /// Current status.
    pub status: Status,
    /// Host pid of the container's init while running.
    pub pid: u32,
    /// Exit code of the last run (docker: 128+N for signal N).
    pub exit_code: i32,
    /// Start of the last run, µs since the epoch (0 = never).
    pub started_at: u64,
    /// End of the last run, µs since the epoch (0 = never).
    pub finished_at: u64,
    /// Why the last start failed, if it did.
    pub error: String,
    /// How many runs have ended (for the `next-exit` wait condition).
    pub exits: u64,
    /// Host pid of the container's monitor while running (to find it again after a
    /// daemon restart).
    #[serde(default)]
    pub monitor_pid: u32,
    /// Restarts done by the restart policy since the user last started it.
    #[serde(default)]
    pub restart_count: u32,
    /// The user stopped it (no restart policy applies until the user starts it).
    #[serde(default)]
    pub stopped_by_user: bool,
    /// Why the current (or last) run is connected by slirp4netns in place of its
    /// default pasta (None: its own mode connects it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_fallback: Option<String>,
    /// The ports published by the current (or last) run, host ports resolved.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<crate::netns::PortMapping>,
    /// The running container is frozen (`skiff pause`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub paused: bool,
}

impl State {
    /// The status as docker shows it: `paused` for a paused running container.
    pub fn status_str(&self) -> &'static str {
        if self.paused && self.status == Status::Running {
            "paused"
        } else {
            self.status.as_str()
        }
    }
}

/// The record's name in a container's directory.
pub(crate) const RECORD_FILE: &str = "container.json";

/// What is persisted in `containers/<id>/container.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// 64 hex digits.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// Creation time, µs since the epoch.
    pub created: u64,
    /// The image id (hex) the container was created from.
    pub image_id: String,
    /// The client's configuration.
    pub config: ContainerConfig,
    /// The resolved command line (entrypoint + cmd).
    pub args: Vec<String>,
    /// The resolved environment.
    pub env: Vec<String>,
    /// The resolved working directory.
    pub workdir: String,
    /// The resolved hostname.
    pub hostname: String,
    /// The numeric user (uid, gid) the configured user gives without the container's
    /// passwd and group files (names count as 0).
    pub user: (u32, u32),
    /// The user as configured (the client's `user`, else the image's `USER`; None for
    /// records written before names were supported): resolved in the container when it
    /// starts, and for execs without `-u`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_spec: Option<String>,
    /// Its mounts: binds, volumes (anonymous ones named) and tmpfs, image VOLUMEs included.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<super::mounts::Planned>,
    /// Its network mode is skiffd's default (not named at create): a pasta that cannot
    /// start is then replaced by slirp4netns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub network_default: bool,
    /// Why its network mode (`inspect`'s `NetworkSettings.NetworkReason`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub network_reason: String,
    /// Its address on the shared network (mode `bridge`) while it runs: taken at each
    /// start, free again at its end (docker's rule: a stopped container has none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network_addr: Option<std::net::Ipv4Addr>,
    /// The state.
    pub state: State,
}

/// A container known to the daemon.
pub struct Container {
    /// Its directory under `$XDG_DATA_HOME/skiff/containers`.
    pub dir: PathBuf,
    record: Mutex<Record>,
    state_tx: watch::Sender<State>,
    /// Serialises start, stop, restart and remove of this container: take it with
    /// [`Container::lock_op`], which refuses a removed container.
    pub op: tokio::sync::Mutex<()>,
    /// Set (under `op`) once a remove has begun: every later operation answers
    /// `NoSuchContainer`, and the record is never written again.
    removed: AtomicBool,
    /// The restart manager's current delay.
    pub backoff: Mutex<Option<std::time::Duration>>,
}

impl Container {
    /// Wraps a record whose directory is `dir`.
    pub fn new(dir: PathBuf, record: Record) -> Container {
        let (state_tx, _) = watch::channel(record.state.clone());
        Container {
            dir,
            record: Mutex::new(record),
            state_tx,
            op: tokio::sync::Mutex::new(()),
            removed: AtomicBool::new(false),
            backoff: Mutex::new(None),
        }
    }

    /// Whether `dir` is a `--rm` container's (it has the [`AUTO_REMOVE_MARKER`]).
    pub fn is_auto_remove_dir(dir: &Path) -> bool {
        dir.join(AUTO_REMOVE_MARKER).exists()
    }

    /// The record file's path.
    pub fn record_path(dir: &Path) -> PathBuf {
        dir.join(RECORD_FILE)
    }

    /// Loads a record, refusing a corrupt or partial one with a message naming the file.
    pub fn load(dir: &Path) -> Result<Container, Error> {
        let path = Self::record_path(dir);
        let data = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
        let record: Record = serde_json::from_slice(&data)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))?;
        Ok(Container::new(dir.to_path_buf(), record))
    }

    /// A copy of the record.
    pub fn snapshot(&self) -> Record {
        match self.record.lock() {
            Ok(r) => r.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The container's id.
    pub fn id(&self) -> String {
        self.id_and_name().0
    }

    /// The container's id and current name (without a copy of the whole record).
    pub fn id_and_name(&self) -> (String, String) {
        let r = match self.record.lock() {
            Ok(r) => r,
            Err(p) => p.into_inner(),
        };
        (r.id.clone(), r.name.clone())
    }

    /// Takes the operation lock; a container removed meanwhile (the caller looked it up
    /// before the remove that held the lock) is `NoSuchContainer`.
    pub async fn lock_op(&self) -> Result<tokio::sync::MutexGuard<'_, ()>, Error> {
        let guard = self.op.lock().await;
        if self.is_removed() {
            return Err(Error::NoSuchContainer(self.id()));
        }
        Ok(guard)
    }

    /// Whether a remove has begun.
    pub fn is_removed(&self) -> bool {
        self.removed.load(Ordering::SeqCst)
    }

    /// The first step of a remove (the caller holds `op`): from now on the container
    /// is gone for every operation, its status is `removing`, and its record file is
    /// never written again (so nothing can bring it back after a daemon restart).
    pub fn begin_removal(&self) {
        let mut guard = match self.record.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        self.removed.store(true, Ordering::SeqCst);
        guard.state.status = Status::Removing;
    }

    /// Changes the record with `f`, persists it atomically and publishes the new state.
    /// A removed container's record is not changed (`NoSuchContainer`).
    pub fn update(&self, f: impl FnOnce(&mut Record)) -> Result<Record, Error> {
        self.change(f, Persist::Durable)
    }

    /// [`Container::update`] for a change of runtime state only (started, ended): the
    /// record is written whole but its rename is not fsync'd (see
    /// [`fsutil::atomic_replace`]): one fsync instead of two on the start path. A crash
    /// of the machine may bring back the previous state, which start-up handles as a
    /// start or an exit the daemon did not live to record. A `--rm` container's record
    /// is written without any fsync (a crash of the machine may tear it: start-up then
    /// collects the directory, see [`AUTO_REMOVE_MARKER`]; it was to be removed at its
    /// end, and nothing runs after a reboot).
    pub fn update_state(&self, f: impl FnOnce(&mut Record)) -> Result<Record, Error> {
        self.change(f, Persist::Whole)
    }

    /// [`Container::update`] without writing the record: for the exit of a `--rm`
    /// container, whose directory goes to the trash right after. Should skiffd die in
    /// between, the record still says running, and start-up finds the monitor gone,
    /// takes the exit code from the exit file and removes the container, as it does
    /// for any `--rm` container that ended while skiffd was down.
    pub fn update_in_memory(&self, f: impl FnOnce(&mut Record)) -> Result<Record, Error> {
        self.change(f, Persist::No)
    }

    fn change(&self, f: impl FnOnce(&mut Record), how: Persist) -> Result<Record, Error> {
        let mut guard = match self.record.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        // Checked under the record's lock, which begin_removal takes too.
        if self.is_removed() {
            return Err(Error::NoSuchContainer(guard.id.clone()));
        }
        f(&mut guard);
        let rec = guard.clone();
        drop(guard);
        self.state_tx.send_replace(rec.state.clone());
        match how {
            Persist::Durable => self.persist(&rec)?,
            Persist::Whole if rec.config.auto_remove => self.persist_volatile(&rec)?,
            Persist::Whole => {
                let path = Self::record_path(&self.dir);
                let data =
                    serde_json::to_vec_pretty(&rec).map_err(|e| Error::Internal(e.to_string()))?;
                fsutil::atomic_replace_premade(&path, &data).map_err(|e| Error::io(&path, e))?;
            }
            Persist::No => {}
        }
        Ok(rec)
    }

    /// Writes the record (atomically).
    pub fn persist(&self, rec: &Record) -> Result<(), Error> {
        let path = Self::record_path(&self.dir);
        let data = serde_json::to_vec_pretty(rec).map_err(|e| Error::Internal(e.to_string()))?;
        fsutil::atomic_write_premade(&path, &data).map_err(|e| Error::io(&path, e))
    }

    /// Writes the record atomically against a crash of skiffd, without fsyncs
    /// ([`fsutil::replace_file`]): for `--rm` containers only, whose directory carries
    /// the [`AUTO_REMOVE_MARKER`] (a crash of the machine may tear the file; start-up
    /// then collects the directory).
    pub fn persist_volatile(&self, rec: &Record) -> Result<(), Error> {
        let path = Self::record_path(&self.dir);
        fsutil::replace_file_premade_json(&path, rec).map_err(|e| Error::io(&path, e))
    }

    /// Removes the empty files made ahead for the record's next writes (see
    /// `fsutil::make_premade`): a container that is not about to start keeps none in
    /// its directory. Failures are only logged: the files are empty, and a later write
    /// still claims or replaces them.
    pub fn drop_premade(&self) {
        if let Err(e) = fsutil::remove_premade(&self.dir, RECORD_FILE) {
            tracing::debug!("the record files made ahead in {}: {e}", self.dir.display());
        }
    }

    /// Makes the [`AUTO_REMOVE_MARKER`] in the container's directory (before its first
    /// record is written).
    pub fn mark_auto_remove(&self) -> Result<(), Error> {
        let path = self.dir.join(AUTO_REMOVE_MARKER);
        std::fs::File::create(&path)
            .map(drop)
            .map_err(|e| Error::io(&path, e))
    }

    /// Subscribes to state changes.
    pub fn watch(&self) -> watch::Receiver<State> {
        self.state_tx.subscribe()
    }

    /// Marks the container as gone for waiters (`removed` condition).
    pub fn mark_removed(&self) {
        self.state_tx.send_modify(|s| s.status = Status::Removing);
    }
}

/// How [`Container::change`] writes the changed record.
#[derive(Clone, Copy)]
enum Persist {
    /// fsync'd file and directory.
    Durable,
    /// fsync'd file, renamed without a directory fsync.
    Whole,
    /// Not written.
    No,
}

/// Docker's wait conditions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitCondition {
    /// Returns at once unless the container is running (the default).
    NotRunning,
    /// Waits for the next end of a run.
    NextExit,
    /// Waits until the container is removed.
    Removed,
}

impl std::str::FromStr for WaitCondition {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "" | "not-running" => Ok(WaitCondition::NotRunning),
            "next-exit" => Ok(WaitCondition::NextExit),
            "removed" => Ok(WaitCondition::Removed),
            other => Err(Error::InvalidArgument(format!(
                "unknown wait condition {other:?}: use not-running, next-exit or removed"
            ))),
        }
    }
}

/// Waits on `rx` until `cond` holds; returns (exit code, finished_at µs). The
/// `next-exit` baseline is taken when this is called, not when the future is first polled.
pub fn wait_for(
    mut rx: watch::Receiver<State>,
    cond: WaitCondition,
) -> impl std::future::Future<Output = (i32, u64)> {
    let start_exits = rx.borrow().exits;
    async move {
        loop {
            {
                let s = rx.borrow_and_update();
                let done = match cond {
                    WaitCondition::NotRunning => s.status != Status::Running,
                    WaitCondition::NextExit => s.exits > start_exits,
                    WaitCondition::Removed => s.status == Status::Removing,
                };
                if done {
                    return (s.exit_code, s.finished_at);
                }
            }
            if rx.changed().await.is_err() {
                let s = rx.borrow();
                return (s.exit_code, s.finished_at);
            }
        }
    }
}

/// docker's `HostConfig.RestartPolicy` of a `--restart` value (`on-failure:3` is
/// `{"Name": "on-failure", "MaximumRetryCount": 3}`).
fn restart_policy(restart: Option<&str>) -> serde_json::Value {
    let spec = restart.filter(|r| !r.is_empty()).unwrap_or("no");
    let (name, count) = match spec.split_once(':') {
        Some((n, c)) => (n, c.parse::<u64>().unwrap_or(0)),
        None => (spec, 0),
    };
    serde_json::json!({ "Name": name, "MaximumRetryCount": count })
}

/// Docker-shaped `inspect` JSON of a record.
pub fn inspect_json(rec: &Record, image_ref: &str) -> serde_json::Value {
    let s = &rec.state;
    let time = |us: u64| {
        if us == 0 {
            "0001-01-01T00:00:00Z".to_string()
        } else {
            rfc3339(us)
        }
    };
    let mut v = serde_json::json!({
        "Id": rec.id,
        "Name": format!("/{}", rec.name),
        "Created": rfc3339(rec.created),
        "Path": rec.args.first().cloned().unwrap_or_default(),
        "Args": rec.args.iter().skip(1).collect::<Vec<_>>(),
        "Image": format!("sha256:{}", rec.image_id),
        "State": {
            "Status": s.status_str(),
            "Running": s.status == Status::Running,
            "Paused": s.paused && s.status == Status::Running,
            "Restarting": false,
            "Dead": false,
            "Pid": s.pid,
            "ExitCode": s.exit_code,
            "Error": s.error,
            "MonitorPid": s.monitor_pid,
            "StartedAt": time(s.started_at),
            "FinishedAt": time(s.finished_at),
        },
        "Config": {
            "Hostname": rec.hostname,
            "User": rec.config.user.clone().unwrap_or_default(),
            "Env": rec.env,
            "Cmd": rec.config.command,
            "Entrypoint": rec.config.entrypoint,
            "Image": image_ref,
            "WorkingDir": rec.workdir,
            "Labels": rec.config.labels,
            "Tty": rec.config.tty,
            "OpenStdin": rec.config.interactive,
        },
        "RestartCount": s.restart_count,
        "HostConfig": {
            "AutoRemove": rec.config.auto_remove,
            "GroupAdd": rec.config.group_add,
            "Init": rec.config.init,
            "ShmSize": rec.config.shm_bytes().ok().flatten().unwrap_or(crate::daemon::spec::DEFAULT_SHM_SIZE),
            "RestartPolicy": restart_policy(rec.config.restart.as_deref()),
            "LogConfig": { "Type": "json-file", "Config": rec.config.log_opts },
        },
    });
    let (binds, mounts, tmpfs) = super::mounts::inspect_host_config(&rec.config);
    v["HostConfig"]["Binds"] = binds;
    v["HostConfig"]["Mounts"] = mounts;
    v["HostConfig"]["Tmpfs"] = tmpfs;
    super::network::extend_inspect(&mut v, rec);
    super::security::extend_inspect(&mut v, rec);
    super::limits::extend_inspect(&mut v, &rec.config);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn wait_conditions() {
        let (tx, rx) = watch::channel(State {
            status: Status::Running,
            ..Default::default()
        });
        let waiter = tokio::spawn(wait_for(rx.clone(), WaitCondition::NextExit));
        let nr = tokio::spawn(wait_for(rx, WaitCondition::NotRunning));
        tx.send_replace(State {
            status: Status::Exited,
            exit_code: 3,
            finished_at: 7,
            exits: 1,
            ..Default::default()
        });
        assert_eq!(waiter.await.unwrap(), (3, 7));
        assert_eq!(nr.await.unwrap(), (3, 7));
    }

    #[tokio::test]
    async fn not_running_returns_at_once_for_created() {
        let (_tx, rx) = watch::channel(State::default());
        assert_eq!(wait_for(rx, WaitCondition::NotRunning).await, (0, 0));
    }

    #[test]
    fn a_removed_container_is_never_written_again() {
        let dir = tempfile::tempdir().unwrap();
        let rec: Record = serde_json::from_value(serde_json::json!({
            "id": "ab", "name": "n", "created": 1, "image_id": "i",
            "config": {"image": "x"}, "args": ["sh"], "env": [], "workdir": "/",
            "hostname": "h", "user": [0, 0], "state": State::default(),
        }))
        .unwrap();
        let c = Container::new(dir.path().to_path_buf(), rec);
        c.update(|r| r.state.exit_code = 1).unwrap();
        assert!(Container::record_path(dir.path()).exists());
        std::fs::remove_file(Container::record_path(dir.path())).unwrap();
        c.begin_removal();
        assert!(c.is_removed());
        assert_eq!(c.snapshot().state.status, Status::Removing);
        let e = c.update(|r| r.state.exit_code = 2).unwrap_err();
        assert!(matches!(e, Error::NoSuchContainer(_)), "{e}");
        assert!(
            !Container::record_path(dir.path()).exists(),
            "written again"
        );
    }

    #[tokio::test]
    async fn the_op_lock_refuses_a_removed_container() {
        let dir = tempfile::tempdir().unwrap();
        let rec: Record = serde_json::from_value(serde_json::json!({
            "id": "ab", "name": "n", "created": 1, "image_id": "i",
            "config": {"image": "x"}, "args": ["sh"], "env": [], "workdir": "/",
            "hostname": "h", "user": [0, 0], "state": State::default(),
        }))
        .unwrap();
        let c = Container::new(dir.path().to_path_buf(), rec);
        let held = c.lock_op().await.unwrap();
        c.begin_removal();
        drop(held);
        assert!(matches!(c.lock_op().await, Err(Error::NoSuchContainer(_))));
    }

    #[test]
    fn corrupt_record_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("container.json"), b"{\"id\": 1").unwrap();
        let e = Container::load(dir.path()).err().unwrap().to_string();
        assert!(e.contains("container.json"), "{e}");
    }
}
