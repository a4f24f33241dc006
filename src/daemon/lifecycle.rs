//! Create containers and write their bundles; their removal is in `remove.rs`.

use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::config::{parse_user, ContainerConfig};
use super::container::{Container, Record, State};
use super::events::Event;
use super::{names, spec, Daemon, Error};
use crate::fsutil;
use crate::monitor::{self, MonitorConfig};
use crate::runtime::{exec::DEFAULT_PATH, RootfsPlan};
use crate::timefmt::now_us;
use crate::userns::IdMaps;

/// The container's stdio when the client passes its own (docker run without -d).
pub struct Stdio {
    /// fd 0 of the container.
    pub stdin: OwnedFd,
    /// fd 1.
    pub stdout: OwnedFd,
    /// fd 2.
    pub stderr: OwnedFd,
}

pub use crate::procutil::signal_number;

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
        // A new entrypoint drops the image's CMD; an empty one (`--entrypoint ''`)
        // only clears the image's entrypoint.
        _ if cfg.entrypoint.as_ref().is_some_and(|e| !e.is_empty()) => Vec::new(),
        _ => image_cmd.cloned().unwrap_or_default(),
    };
    entrypoint.into_iter().chain(cmd).collect()
}

/// The image's environment, then the client's, with later keys replacing earlier ones;
/// `PATH` and `HOSTNAME` get docker's defaults (`HOME`, when still unset, comes from the
/// container's passwd when it starts: see `runtime::user`).
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
    out
}

impl Daemon {
    fn name_taken(&self, name: &str) -> bool {
        self.lock().name_taken(name)
    }

    /// Creates a container from `cfg`; returns its id.
    pub async fn create(&self, cfg: ContainerConfig) -> Result<String, Error> {
        self.create_with(cfg, false).await
    }

    /// [`Daemon::create`]; `started_at_once` says the container is started right after
    /// (`RunContainer`): a `run --rm` container's record is then written without fsyncs
    /// (see [`Container::persist_volatile`]).
    pub async fn create_with(
        &self,
        cfg: ContainerConfig,
        started_at_once: bool,
    ) -> Result<String, Error> {
        self.create_as(cfg, started_at_once, None).await
    }

    /// [`Daemon::create_with`] under the id `id` (a new [`names::new_id`]) when given.
    pub(crate) async fn create_as(
        &self,
        mut cfg: ContainerConfig,
        started_at_once: bool,
        id: Option<String>,
    ) -> Result<String, Error> {
        cfg.validate()?;
        if let Some(limits) = super::limits::limits_of(&cfg)? {
            super::limits::check_available(&limits).await?;
        }
        let defaults = self.settings();
        let network_default = cfg.network.is_none();
        let network_reason = if network_default {
            let (mut mode, mut why) = self.default_network();
            if mode == crate::netns::Mode::Pasta {
                if let Some(m) = super::network::udp_pasta_loses(&cfg.port_mappings()?) {
                    mode = crate::netns::Mode::Slirp4netns;
                    why = format!(
                        "slirp4netns for this container: it publishes {m}, whose answers \
                         pasta (Debian 12's 2023.03) loses for loopback clients when the host \
                         and container ports differ"
                    );
                }
            }
            if mode == crate::netns::Mode::Bridge {
                if !crate::userns::shared::shares(cfg.userns.as_deref()) {
                    mode = crate::netns::Mode::Slirp4netns;
                    why = format!(
                        "slirp4netns for this container: --userns {} leaves the shared user \
                         namespace, whose containers share the bridge network",
                        cfg.userns.as_deref().unwrap_or_default()
                    );
                } else if cfg.host_loopback {
                    mode = crate::netns::Mode::Slirp4netns;
                    why = "slirp4netns for this container: --host-loopback needs a slirp4netns \
                           of its own"
                        .into();
                }
            }
            cfg.network = Some(mode.to_string());
            cfg.validate()?; // ports with a daemon default of none/host
            format!("skiffd's default network: {why}")
        } else {
            "chosen with --network".to_string()
        };
        defaults.apply_container_defaults(&mut cfg);
        let store = &self.inner.images;
        let image = store.resolve(&cfg.image)?;
        let image_cfg = store.config(&image.id)?;
        let icfg = image_cfg.config().clone().unwrap_or_default();
        // Labels: the image's, then the client's (docker's merge).
        for (k, v) in icfg.labels().iter().flatten() {
            cfg.labels.entry(k.clone()).or_insert_with(|| v.clone());
        }
        if cfg.stop_signal.is_none() {
            // The image's STOPSIGNAL ("SIGQUIT", "QUIT" or "3").
            cfg.stop_signal = icfg.stop_signal().as_deref().and_then(signal_number);
        }
        let args = merge_command(&cfg, icfg.entrypoint().as_ref(), icfg.cmd().as_ref());
        if args.is_empty() {
            return Err(Error::InvalidConfig(format!(
                "no command specified: image {} has no CMD or ENTRYPOINT; give a command after the image name",
                cfg.image
            )));
        }
        let id = match id {
            Some(id) => id,
            None => names::new_id().map_err(|e| Error::Internal(format!("random id: {e}")))?,
        };
        let mut name = match &cfg.name {
            Some(n) => n.clone(),
            None => names::random_name(|n| self.name_taken(n))
                .map_err(|e| Error::Internal(format!("random name: {e}")))?,
        };
        let hostname = cfg.hostname.clone().unwrap_or_else(|| {
            super::network::default_hostname(&id, cfg.network_mode().ok().flatten())
        });
        let keep_id = cfg.userns.as_deref() == Some("keep-id");
        let user_spec = cfg
            .user
            .clone()
            .or_else(|| {
                // keep-id runs as you (podman's rule), unless a user is given.
                keep_id.then(|| {
                    let m = &self.inner.maps;
                    format!(
                        "{}:{}",
                        m.to_host_uid(0).unwrap_or(0),
                        m.to_host_gid(0).unwrap_or(0)
                    )
                })
            })
            .or_else(|| icfg.user().clone())
            .filter(|u| !u.is_empty());
        let user = match &user_spec {
            Some(u) => parse_user(u).map_err(|e| match cfg.user {
                Some(_) => e,
                None => Error::InvalidConfig(format!("the image's USER: {e}")),
            })?,
            None => (0, 0),
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
        let mut planned = super::mounts::plan(&cfg)?;
        super::mounts::add_image_volumes(
            &mut planned,
            icfg.volumes().as_deref().unwrap_or_default(),
        );
        // A taken name fails before any volume is made (checked again under the lock).
        if cfg.name.is_some() {
            if let Some(holder) = self.lock().holder_of(&name) {
                return Err(Error::NameInUse { name, holder });
            }
        }
        self.prepare_volumes(&mut planned)?;
        let mut record = Record {
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
            user_spec: Some(user_spec.unwrap_or_default()),
            mounts: planned,
            network_default,
            network_reason,
            network_addr: None,
            state: State::default(),
        };
        // The directory appears under its final name only once complete.
        let root = self.inner.opts.paths.containers();
        let tmp = root.join(format!(".tmp-{id}"));
        let dir = root.join(&id);
        {
            // Name check and insertion under one lock, so two creates cannot take one name.
            let mut map = self.lock();
            if let Some(holder) = map.holder_of(&name) {
                if record.config.name.is_some() {
                    return Err(Error::NameInUse { name, holder });
                }
                // A generated name taken by a concurrent create: pick again, under the lock.
                name = names::random_name(|n| map.name_taken(n))
                    .map_err(|e| Error::Internal(format!("random name: {e}")))?;
                record.name = name.clone();
            }
            self.new_container_dir(&tmp, started_at_once)
                .map_err(|e| Error::io(&tmp, e))?;
            // The upper directory is the container's `/` as overlayfs shows it: give it
            // the image root's mode, or users other than root cannot traverse `/`. The
            // container directory itself stays 0700.
            let root_mode = self
                .inner
                .images
                .layer_dirs(&image)
                .first()
                .and_then(|l| std::fs::metadata(l).ok())
                .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7777)
                .unwrap_or(0o755);
            std::fs::set_permissions(
                tmp.join("upper"),
                std::os::unix::fs::PermissionsExt::from_mode(root_mode),
            )
            .map_err(|e| Error::io(&tmp, e))?;
            let c = Container::new(tmp.clone(), record.clone());
            if record.config.auto_remove {
                c.mark_auto_remove()?;
            }
            // `run --rm`: no fsync. The directory still appears whole or not at all
            // (complete under its temporary name, then renamed), so a crash of skiffd
            // (`kill -9`) leaves a complete container or a `.tmp-` leftover, as ever:
            // the page cache outlives the process. Only a crash of the machine can lose
            // the unsynced writes, and then the container is one that was going to be
            // removed anyway: it ran (or was to run) once and nothing runs after a
            // reboot. Start-up then finds its directory missing, a `.tmp-` leftover
            // (collected), a record it loads and removes as any ended `--rm` container,
            // or a torn record: the auto-remove marker made before the record says
            // that directory may be collected too (see `load_containers`). A `create
            // --rm` is not started at once and may wait for its `start` across a
            // reboot: its record is fsync'd as every other.
            if started_at_once && record.config.auto_remove {
                c.persist_volatile(&record)?;
                std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
            } else {
                c.persist(&record)?;
                if !started_at_once {
                    // The second record file made ahead is a start's: a container
                    // created to be started later (or never) keeps none.
                    c.drop_premade();
                }
                std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
                fsutil::sync_dir(&root).map_err(|e| Error::io(&root, e))?;
            }
            map.insert(&id, &name, Arc::new(Container::new(dir, record)));
        }
        self.emit(Event::new(
            "container",
            "create",
            &id,
            &[("name", name), ("image", image.id)],
        ));
        Ok(id)
    }

    pub(crate) fn bundle_dir(&self, id: &str) -> PathBuf {
        self.inner.opts.paths.runtime.join("containers").join(id)
    }

    /// The container's id maps, and the owner translation its FUSE rootfs needs: the
    /// daemon's maps, or with `userns: keep-id` the user's own ids kept (see
    /// `userns::keepid`).
    pub(crate) fn container_maps(
        &self,
        rec: &Record,
    ) -> Result<(IdMaps, Option<crate::userns::keepid::IdRemap>), Error> {
        let default = &self.inner.maps;
        if rec.config.userns.as_deref() != Some("keep-id") {
            return Ok((default.clone(), None));
        }
        let (uid, gid) = (
            default.to_host_uid(0).unwrap_or(0),
            default.to_host_gid(0).unwrap_or(0),
        );
        let inner =
            crate::userns::keepid::keep_id_maps(default, uid, gid).map_err(Error::InvalidConfig)?;
        let remap = crate::userns::keepid::IdRemap {
            disk: default.clone(),
            inner: inner.clone(),
        };
        Ok((inner, Some(remap)))
    }

    #[allow(clippy::too_many_arguments)]
    pub(crate) fn write_bundle(
        &self,
        c: &Container,
        rec: &Record,
        log: crate::monitor::LogConfig,
        client_stdio: bool,
        wait_attach: bool,
        shared_userns: bool,
        bridge: Option<Result<crate::netns::bridge::BridgePlan, super::netshare::NoBridge>>,
    ) -> Result<(PathBuf, Vec<crate::netns::PortMapping>), Error> {
        let bundle = self.bundle_dir(&rec.id);
        // A new bundle (a container's first start: every `run`) is written without
        // temporary files and renames, and has no exit file to remove: the spare bundle
        // with its files made ahead (see `spare`), else a directory made now.
        let fresh = self.take_spare_bundle(&bundle)
            || fsutil::create_private_dir(&bundle).map_err(|e| Error::io(&bundle, e))?;
        let image = self.inner.images.resolve(&rec.image_id)?;
        let (maps, remap) = self.container_maps(rec)?;
        let plan = RootfsPlan {
            driver: self.inner.opts.driver,
            lower: self.inner.images.layer_dirs(&image),
            upper: c.dir.join("upper"),
            work: c.dir.join("work"),
            remap,
        };
        let mut spec = spec::build(rec, &maps, &c.dir.join("rootfs"))?;
        if rec.config.init {
            let init = super::initbin::install(&self.inner.opts.paths.data)?;
            spec::add_init(&mut spec, &init)?;
        }
        // The image's exposed ports matter only with publish-all (`-P`).
        let exposed: Vec<String> = if rec.config.publish_all {
            self.inner
                .images
                .config(&image.id)?
                .config()
                .as_ref()
                .and_then(|c| c.exposed_ports().clone())
                .unwrap_or_default()
        } else {
            Vec::new()
        };
        let (network, ports) = super::network::prepare(rec, &bundle, fresh, &exposed, bridge)?;
        super::network::add_mounts(&mut spec, &bundle, super::network::mode_of(rec))?;
        // The user's mounts last: they cover the generated /etc files, as docker's do.
        let user_mounts = self.volume_spec_mounts(rec)?;
        if !user_mounts.is_empty() {
            let mut all = spec.mounts().clone().unwrap_or_default();
            all.extend(user_mounts);
            spec.set_mounts(Some(all));
        }
        let spec_path = monitor::spec_path(&bundle);
        // The bundle is in the runtime directory: no fsyncs (see fsutil).
        let spec_json = serde_json::to_vec_pretty(&spec)
            .map_err(|e| Error::Internal(format!("the runtime spec: {e}")))?;
        fsutil::put_runtime_file(&spec_path, &spec_json, fresh, None)
            .map_err(|e| Error::io(&spec_path, e))?;
        let mon = MonitorConfig {
            id: rec.id.clone(),
            rootfs: plan,
            stdin: rec.config.interactive && !client_stdio && !rec.config.tty,
            client_stdio,
            wait_attach: wait_attach && !client_stdio,
            log: Some(log),
            network,
            limits: super::limits::limits_of(&rec.config)?,
            shared_userns,
        };
        let mon_path = monitor::config_path(&bundle);
        let mon_json = serde_json::to_vec_pretty(&mon)
            .map_err(|e| Error::Internal(format!("the monitor's configuration: {e}")))?;
        fsutil::put_runtime_file(&mon_path, &mon_json, fresh, None)
            .map_err(|e| Error::io(&mon_path, e))?;
        let exit = monitor::exit_path(&bundle);
        if !fresh {
            match std::fs::remove_file(&exit) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(&exit, e))
                }
                _ => {}
            }
        }
        Ok((bundle, ports))
    }
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
        // `--entrypoint ''` clears the image's entrypoint and keeps its CMD.
        assert_eq!(
            merge_command(&cfg(None, Some(&[])), Some(&iep), Some(&icmd)),
            icmd
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_number("SIGQUIT"), Some(3));
        assert_eq!(signal_number("term"), Some(15));
        assert_eq!(signal_number("9"), Some(9));
        assert_eq!(signal_number("nope"), None);
    }

    #[test]
    fn env_merging_overrides_and_defaults() {
        let env = merge_env(&v(&["A=1", "PATH=/img"]), &v(&["A=2", "B"]), "h");
        assert!(env.contains(&"A=2".to_string()));
        assert!(env.contains(&"B=".to_string()));
        assert!(env.contains(&"PATH=/img".to_string()));
        assert!(env.contains(&"HOSTNAME=h".to_string()));
        // HOME is the runtime's, from the container's passwd.
        assert!(!env.iter().any(|e| e.starts_with("HOME=")));
        assert_eq!(env.iter().filter(|e| e.starts_with("A=")).count(), 1);
    }
}
