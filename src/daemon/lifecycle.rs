//! Create, start, supervise, kill and remove containers.

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::Stdio as StdStdio;
use std::sync::Arc;

use nix::sys::signal::Signal;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::config::{parse_user, ContainerConfig};
use super::container::{Container, Record, State, Status};
use super::events::Event;
use super::{names, spec, Daemon, Error};
use crate::fsutil;
use crate::monitor::{self, ExitRecord, MonitorConfig};
use crate::runtime::{exec::DEFAULT_PATH, RootfsPlan};
use crate::timefmt::now_us;

/// The container's stdio when the client passes its own (docker run without -d).
pub struct Stdio {
    /// fd 0 of the container.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

/// Merges the image's entrypoint and cmd with the client's, the way docker does: a given
/// entrypoint replaces the image's and drops its cmd; a given command replaces the cmd.
pub fn merge_command(
    cfg: &ContainerConfig,
    image_entrypoint: Option<&Vec<String>>,
    image_cmd: Option<&Vec<String>>,
) -> Vec<String> {
    let entrypoint: Vec<String> = match &cfg.entrypoint {
        Some(e) => e.clone(),
        None => image_entrypoint.cloned().unwrap_or_default(),
    };
    let cmd: Vec<String> = match &cfg.command {
        Some(c) if !c.is_empty() => c.clone(),
        _ if cfg.entrypoint.is_some() => Vec::new(),
        _ => image_cmd.cloned().unwrap_or_default(),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The image's environment, then the client's, with later keys replacing earlier ones;
/// `PATH`, `HOSTNAME` and `HOME` get docker's defaults.
pub fn merge_env(image_env: &[String], cfg_env: &[String], hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |kv: &str| {
        let key = kv.split('=').next().unwrap_or(kv);
        let kv = if kv.contains('=') {
            kv.to_string()
        } else {
            format!("{kv}=")
        };
        if let Some(slot) = out.iter_mut().find(|e| e.split('=').next() == Some(key)) {
            *slot = kv;
        } else {
            out.push(kv);
        }
    };
    set(&format!("PATH={DEFAULT_PATH}"));
    for kv in image_env.iter().chain(cfg_env) {
        set(kv);
    }
    set(&format!("HOSTNAME={hostname}"));
    if !out.iter().any(|e| e.starts_with("HOME=")) {
        out.push("HOME=/root".into());
    }
    out
}

impl Daemon {
    fn name_taken(&self, name: &str) -> bool {
        self.lock().values().any(|c| c.snapshot().name == name)
    }

    /// Creates a container from `cfg`; returns its id.
    pub async fn create(&self, mut cfg: ContainerConfig) -> Result<String, Error> {
        cfg.validate()?;
        if cfg.network.is_none() {
            cfg.network = Some(self.inner.opts.network.to_string());
            cfg.validate()?; // ports with a daemon default of none/host
        }
        let store = &self.inner.images;
        let image = store.resolve(&cfg.image)?;
        let image_cfg = store.config(&image.id)?;
        let icfg = image_cfg.config().clone().unwrap_or_default();
        let args = merge_command(&cfg, icfg.entrypoint().as_ref(), icfg.cmd().as_ref());
        if args.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "no command specified: image {} has no CMD or ENTRYPOINT; give a command after the image name",
                cfg.image
            )));
        }
        let id = names::new_id().map_err(|e| Error::Internal(format!("random id: {e}")))?;
        let name = match &cfg.name {
            Some(n) => n.clone(),
            None => names::random_name(|n| self.name_taken(n))
                .map_err(|e| Error::Internal(format!("random name: {e}")))?,
        };
        let hostname = cfg.hostname.clone().unwrap_or_else(|| id[..12].to_string());
        let user = match cfg.user.as_deref().or(icfg.user().as_deref()) {
            Some(u) if !u.is_empty() => parse_user(u)?,
            _ => (0, 0),
        };
        let workdir = cfg
            .workdir
            .clone()
            .or_else(|| icfg.working_dir().clone().filter(|w| !w.is_empty()))
            .unwrap_or_else(|| "/".into());
        let env = merge_env(
            icfg.env().as_deref().unwrap_or_default(),
            &cfg.env,
            &hostname,
        );
        let record = Record {
            id: id.clone(),
            name: name.clone(),
            created: now_us(),
            image_id: image.id.clone(),
            config: cfg,
            args,
            env,
            workdir,
            hostname,
            user,
            state: State::default(),
        };
        // The directory appears under its final name only once complete.
        let root = self.inner.opts.paths.containers();
        let tmp = root.join(format!(".tmp-{id}"));
        let dir = root.join(&id);
        {
            // Name check and insertion under one lock, so two creates cannot take one name.
            let mut map = self.lock();
            if map.values().any(|c| c.snapshot().name == name) {
                return Err(Error::NameInUse(name));
            }
            for sub in ["upper", "work", "rootfs"] {
                fsutil::ensure_private_dir(&tmp.join(sub)).map_err(|e| Error::io(&tmp, e))?;
            }
            let c = Container::new(tmp.clone(), record.clone());
            c.persist(&record)?;
            std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            fsutil::sync_dir(&root).map_err(|e| Error::io(&root, e))?;
            map.insert(id.clone(), Arc::new(Container::new(dir, record)));
        }
        self.emit(Event::new(
            "container",
            "create",
            &id,
            &[("name", name), ("image", image.id)],
        ));
        Ok(id)
    }

    fn bundle_dir(&self, id: &str) -> PathBuf {
        self.inner.opts.paths.runtime.join("containers").join(id)
    }

    fn write_bundle(
        &self,
        c: &Container,
        rec: &Record,
    ) -> Result<(PathBuf, Vec<crate::netns::PortMapping>), Error> {
        let bundle = self.bundle_dir(&rec.id);
        fsutil::ensure_private_dir(&bundle).map_err(|e| Error::io(&bundle, e))?;
        let image = self.inner.images.resolve(&rec.image_id)?;
        let plan = RootfsPlan {
            driver: self.inner.opts.driver,
            lower: self.inner.images.layer_dirs(&image),
            upper: c.dir.join("upper"),
            work: c.dir.join("work"),
        };
        let mut spec = spec::build(rec, &self.inner.maps, &c.dir.join("rootfs"))?;
        let exposed: Vec<String> = self
            .inner
            .images
            .config(&image.id)?
            .config()
            .as_ref()
            .and_then(|c| c.exposed_ports().clone())
            .unwrap_or_default();
        let (network, ports) = super::network::prepare(rec, &bundle, &exposed)?;
        super::network::add_mounts(&mut spec, &bundle)?;
        let spec_path = monitor::spec_path(&bundle);
        fsutil::atomic_write_json(&spec_path, &spec).map_err(|e| Error::io(&spec_path, e))?;
        let mon = MonitorConfig {
            id: rec.id.clone(),
            rootfs: plan,
            network,
        };
        let mon_path = monitor::config_path(&bundle);
        fsutil::atomic_write_json(&mon_path, &mon).map_err(|e| Error::io(&mon_path, e))?;
        let exit = monitor::exit_path(&bundle);
        match std::fs::remove_file(&exit) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::io(&exit, e)),
            _ => {}
        }
        Ok((bundle, ports))
    }

    /// Starts a created or exited container. With `stdio`, the client's fds are the
    /// container's; without, stdin is /dev/null and output goes to `console.log`.
    /// Returns once the command runs, or with the reason it could not start.
    pub async fn start(&self, name_or_id: &str, stdio: Option<Stdio>) -> Result<(), Error> {
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if rec.state.status == Status::Running {
            return Err(Error::ContainerRunning(rec.name));
        }
        let (bundle, ports) = match self.write_bundle(&c, &rec) {
            Ok(b) => b,
            // E.g. a published port in use: nothing ran; record why (and honour --rm).
            Err(e) => {
                let _ = c.update(|r| r.state.error = e.to_string());
                if rec.config.auto_remove {
                    let _ = self.remove(&rec.id, true).await;
                }
                return Err(e);
            }
        };
        let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::Internal(format!("pipe: {e}")))?;
        let (stdin, stdout, stderr): (StdStdio, StdStdio, StdStdio) = match stdio {
            Some(s) => (s.stdin.into(), s.stdout.into(), s.stderr.into()),
            None => {
                let log_path = c.dir.join("console.log");
                let log = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&log_path)
                    .map_err(|e| Error::io(&log_path, e))?;
                let log2 = log.try_clone().map_err(|e| Error::io(&log_path, e))?;
                (StdStdio::null(), log.into(), log2.into())
            }
        };
        let mut cmd = tokio::process::Command::new(&self.inner.opts.exe);
        cmd.arg("__monitor")
            .arg(&bundle)
            .stdin(stdin)
            .stdout(stdout)
            .stderr(stderr)
            .env_remove("RUST_LOG");
        let status_fd = write_end.as_raw_fd();
        // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setsid() < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if status_fd == monitor::STATUS_FD {
                    libc::fcntl(status_fd, libc::F_SETFD, 0);
                } else if libc::dup2(status_fd, monitor::STATUS_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd
            .spawn()
            .map_err(|e| Error::Runtime(format!("cannot start the container monitor: {e}")))?;
        drop(write_end);
        let receiver = tokio::net::unix::pipe::Receiver::from_owned_fd(read_end)
            .map_err(|e| Error::Internal(format!("status pipe: {e}")))?;
        let mut lines = BufReader::new(receiver).lines();
        let first = lines.next_line().await.ok().flatten();
        let status: Option<monitor::Status> = first.and_then(|l| serde_json::from_str(&l).ok());
        match status {
            Some(monitor::Status::Started { pid }) => {
                let rec = c.update(|r| {
                    r.state.status = Status::Running;
                    r.state.pid = pid as u32;
                    r.state.started_at = now_us();
                    r.state.error.clear();
                    r.state.ports = ports;
                })?;
                self.emit(Event::new(
                    "container",
                    "start",
                    &rec.id,
                    &[("name", rec.name.clone())],
                ));
                let daemon = self.clone();
                tokio::spawn(async move {
                    let mut code = None;
                    while let Ok(Some(line)) = lines.next_line().await {
                        if let Ok(monitor::Status::Exited { code: c }) = serde_json::from_str(&line)
                        {
                            code = Some(c);
                        }
                    }
                    daemon.monitor_ended(c, child, code, String::new()).await;
                });
                Ok(())
            }
            Some(monitor::Status::Failed { code, message }) => {
                self.monitor_ended(c, child, Some(code), message.clone())
                    .await;
                Err(match code {
                    127 => Error::CommandNotFound(message),
                    126 => Error::CommandNotExecutable(message),
                    _ => Error::Runtime(message),
                })
            }
            _ => {
                let msg = "the container monitor ended before the container started".to_string();
                self.monitor_ended(c, child, None, msg.clone()).await;
                Err(Error::Runtime(msg))
            }
        }
    }

    /// Records the end of a run: reaps the monitor, takes the exit code (from the status
    /// pipe, else the exit file), emits `die` and removes an auto-remove container.
    async fn monitor_ended(
        &self,
        c: Arc<Container>,
        mut child: tokio::process::Child,
        code: Option<i32>,
        error: String,
    ) {
        let _ = child.wait().await;
        let id = c.id();
        let from_file = read_exit_file(&monitor::exit_path(&self.bundle_dir(&id)));
        let (code, error) = match (code, from_file) {
            (Some(code), _) => (code, error),
            (None, Some(rec)) => (rec.exit_code, rec.error),
            (None, None) => (
                125,
                "the container monitor died without recording an exit".into(),
            ),
        };
        let rec = match c.update(|r| {
            r.state.status = Status::Exited;
            r.state.pid = 0;
            r.state.exit_code = code;
            r.state.finished_at = now_us();
            r.state.error = error;
            r.state.exits += 1;
        }) {
            Ok(rec) => rec,
            Err(e) => {
                tracing::error!("recording the exit of {id}: {e}");
                c.snapshot()
            }
        };
        self.emit(Event::new(
            "container",
            "die",
            &id,
            &[("name", rec.name.clone()), ("exitCode", code.to_string())],
        ));
        if rec.config.auto_remove {
            if let Err(e) = self.remove(&id, true).await {
                tracing::error!("auto-removing {id}: {e}");
            }
        }
    }

    /// Sends `signal` to the container's init.
    pub fn kill(&self, name_or_id: &str, signal: i32) -> Result<(), Error> {
        let rec = self.lookup(name_or_id)?.snapshot();
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        let sig = Signal::try_from(signal)
            .map_err(|_| Error::InvalidArgument(format!("invalid signal number {signal}")))?;
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(rec.state.pid as i32), sig)
            .map_err(|e| Error::Runtime(format!("kill {}: {e}", rec.name)))
    }

    /// Removes a container; a running one only with `force` (it is killed first).
    pub async fn remove(&self, name_or_id: &str, force: bool) -> Result<(), Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        if rec.state.status == Status::Running {
            if !force {
                return Err(Error::ContainerRunning(rec.name));
            }
            let _ = self.kill(&rec.id, libc::SIGKILL);
            super::container::wait_for(c.watch(), super::WaitCondition::NotRunning).await;
        }
        if self.lock().remove(&rec.id).is_none() {
            return Ok(()); // removed concurrently
        }
        // Take the directory out of the store first: a crash after this leaves a `.rm-`
        // leftover, collected at start-up, never a half-removed container.
        let root = self.inner.opts.paths.containers();
        let doomed = root.join(format!(".rm-{}", rec.id));
        let renamed = std::fs::rename(&c.dir, &doomed).is_ok();
        let _ = fsutil::sync_dir(&root);
        let _ = std::fs::remove_dir_all(self.bundle_dir(&rec.id));
        if renamed {
            self.remove_tree(&doomed).await;
        }
        c.mark_removed();
        self.emit(Event::new(
            "container",
            "destroy",
            &rec.id,
            &[("name", rec.name)],
        ));
        Ok(())
    }

    /// Removes a directory tree that may hold files owned by subordinate ids: first as
    /// ourselves (fast, and enough when the container wrote nothing), else from inside
    /// the user namespace.
    pub(crate) async fn remove_tree(&self, path: &Path) {
        let p = path.to_path_buf();
        let direct = tokio::task::spawn_blocking(move || std::fs::remove_dir_all(&p)).await;
        if matches!(direct, Ok(Ok(()))) {
            return;
        }
        let out = tokio::process::Command::new(&self.inner.opts.exe)
            .arg("__remove")
            .arg("--maps")
            .arg(&self.inner.maps_json)
            .arg(path)
            .stdin(StdStdio::null())
            .output()
            .await;
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => tracing::error!(
                "removing {}: {}",
                path.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => tracing::error!("removing {}: {e}", path.display()),
        }
    }

    /// Loads the containers on disk; corrupt entries are reported and skipped, leftovers
    /// of interrupted creates and removes are collected.
    pub(crate) fn load_containers(&self) {
        let root = self.inner.opts.paths.containers();
        let entries = match std::fs::read_dir(&root) {
            Ok(e) => e,
            Err(e) => {
                tracing::error!("reading {}: {e}", root.display());
                return;
            }
        };
        let mut leftovers = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            let path = entry.path();
            if name.starts_with(".tmp-") || name.starts_with(".rm-") {
                leftovers.push(path);
                continue;
            }
            match Container::load(&path) {
                Ok(c) => {
                    let rec = c.snapshot();
                    if rec.state.status == Status::Running {
                        let exit = read_exit_file(&monitor::exit_path(&self.bundle_dir(&rec.id)));
                        let _ = c.update(|r| {
                            r.state.status = Status::Exited;
                            r.state.pid = 0;
                            match exit {
                                Some(e) => {
                                    r.state.exit_code = e.exit_code;
                                    r.state.finished_at = e.finished_at;
                                }
                                None => {
                                    r.state.exit_code = 255;
                                    r.state.error =
                                        "the daemon restarted while the container ran".into();
                                }
                            }
                        });
                    }
                    self.lock().insert(rec.id.clone(), Arc::new(c));
                }
                Err(e) => tracing::error!("skipping container {name}: {e}"),
            }
        }
        if !leftovers.is_empty() {
            let daemon = self.clone();
            tokio::spawn(async move {
                for p in leftovers {
                    tracing::info!("collecting leftover {}", p.display());
                    daemon.remove_tree(&p).await;
                }
            });
        }
    }
}

fn read_exit_file(path: &Path) -> Option<ExitRecord> {
    let data = std::fs::read(path).ok()?;
    serde_json::from_slice(&data).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(cmd: Option<&[&str]>, ep: Option<&[&str]>) -> ContainerConfig {
        ContainerConfig {
            image: "x".into(),
            command: cmd.map(|c| c.iter().map(|s| s.to_string()).collect()),
            entrypoint: ep.map(|c| c.iter().map(|s| s.to_string()).collect()),
            ..Default::default()
        }
    }

    fn v(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_merging_follows_docker() {
        let iep = v(&["/entry"]);
        let icmd = v(&["default"]);
        assert_eq!(
            merge_command(&cfg(None, None), Some(&iep), Some(&icmd)),
            v(&["/entry", "default"])
        );
        assert_eq!(
            merge_command(&cfg(Some(&["x"]), None), Some(&iep), Some(&icmd)),
            v(&["/entry", "x"])
        );
        assert_eq!(
            merge_command(&cfg(None, Some(&["/new"])), Some(&iep), Some(&icmd)),
            v(&["/new"])
        );
        assert_eq!(
            merge_command(&cfg(Some(&["a"]), Some(&["/new"])), None, Some(&icmd)),
            v(&["/new", "a"])
        );
        assert!(merge_command(&cfg(None, None), None, None).is_empty());
    }

    #[test]
    fn env_merging_overrides_and_defaults() {
        let env = merge_env(&v(&["A=1", "PATH=/img"]), &v(&["A=2", "B"]), "h");
        assert!(env.contains(&"A=2".to_string()));
        assert!(env.contains(&"B=".to_string()));
        assert!(env.contains(&"PATH=/img".to_string()));
        assert!(env.contains(&"HOSTNAME=h".to_string()));
        assert!(env.contains(&"HOME=/root".to_string()));
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    }
}
