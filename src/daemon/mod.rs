//! The backend: everything skiffd does, with no knowledge of D-Bus. The API layer
//! (`crate::dbus`) decodes a request, calls one method here and encodes the answer; any
//! other front end (a REST shim, tests) calls the same methods.
//!
//! Flow of a container: create (verify the config, resolve the image, merge its config,
//! name and id, write the record atomically, register, `create` event) → start (write the
//! OCI spec and the monitor's config into the runtime bundle, spawn the monitor, wait for
//! it to report that the command runs, `start` event) → the monitor reports the exit
//! (`die` event; auto-remove) → remove (`destroy` event, files removed, from inside the
//! user namespace when they belong to subordinate ids).

mod adopt;
pub mod archives;
mod attach;
pub mod build;
pub mod commit;
pub mod config;
pub mod container;
pub mod control;
pub mod copy;
mod ended;
pub mod error;
pub mod events;
pub mod exec;
mod failed_jobs;
pub mod filters;
mod freeze;
pub mod helper;
mod image_catalog;
pub mod images;
pub mod initbin;
mod layer_repair;
pub mod lifecycle;
pub mod limits;
pub mod logs;
pub mod mounts;
pub mod names;
mod netshare;
pub mod network;
pub mod notify;
pub mod pause;
pub mod prespawn;
pub mod pull;
pub mod push;
mod remove;
pub mod restart;
pub mod scope;
pub mod seccomp_profile;
pub mod security;
pub mod settings;
mod spare;
pub mod spawn;
pub mod spec;
pub mod strays;
pub mod supervise;
mod table;
pub mod usage;
mod userns_holder;
pub mod volume_ops;
pub mod volumes;
pub mod zygote;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::sync::broadcast;

pub use config::ContainerConfig;
pub use container::{Container, Record, Status, WaitCondition};
pub use error::Error;
pub use events::Event;

use crate::image::ImageStore;
use crate::paths::Paths;
use crate::runtime::RootfsDriver;
use crate::userns::IdMaps;

/// How the daemon is set up.
#[derive(Debug, Clone)]
pub struct Options {
    /// The XDG directories.
    pub paths: Paths,
    /// The storage driver for container rootfs.
    pub driver: RootfsDriver,
    /// Why that driver (for `skiff info`).
    pub driver_reason: String,
    /// The skiffd executable, re-run for the helpers.
    pub exe: PathBuf,
    /// The effective configuration at start (file and flags); the daemon keeps the live
    /// copy, where all but the storage driver can change ([`Daemon::reload_settings`]).
    pub settings: settings::Settings,
    /// The monitor's executable: `skiff-monitor` next to `exe` (see
    /// [`Options::monitor_beside`]), else `exe` itself (its `__monitor` helper).
    pub monitor_exe: PathBuf,
}

impl Options {
    /// The monitor executable for the daemon `exe`: `skiff-monitor` in the same
    /// directory when it is there (installed, or staged beside skiffd), else `exe`,
    /// which runs the same monitor as its hidden `__monitor` helper.
    pub fn monitor_beside(exe: &std::path::Path) -> PathBuf {
        exe.parent()
            .map(|dir| dir.join(crate::monitor::PROCESS_NAME))
            .filter(|m| m.is_file())
            .unwrap_or_else(|| exe.to_path_buf())
    }
}

/// The backend. Cheap to clone; all clones share one state.
#[derive(Clone)]
pub struct Daemon {
    inner: Arc<Inner>,
}

struct Inner {
    opts: Options,
    /// The live settings (the reloadable part of `opts.settings`).
    settings: std::sync::RwLock<settings::Settings>,
    maps: IdMaps,
    maps_json: String,
    /// Why newuidmap/newgidmap cannot be used, if they cannot.
    preflight: Result<(), String>,
    images: ImageStore,
    /// The containers, by id and by name.
    containers: Mutex<table::Table>,
    events: broadcast::Sender<Event>,
    execs: exec::ExecTable,
    volumes: volumes::VolumeStore,
    /// The network mode skiffd chooses when none is configured, and why: found once, by
    /// a trial of pasta started in the background with the daemon.
    default_network: Arc<std::sync::OnceLock<(crate::netns::Mode, String)>>,
    /// The user namespace that default-mapped containers share (made on first use).
    shared_userns: userns_holder::SharedUserns,
    /// The shared network's holder (`--network bridge`), once started or re-adopted.
    shared_net: netshare::SharedNet,
    /// A container directory made ahead of the next create.
    spare: spare::Spare,
    /// The monitor zygote (started at the first monitor's spawn).
    zygote: zygote::Client,
    /// A bundle made ahead of a first start (in the runtime directory).
    spare_bundle: spare::Spare,
}

/// Facts about the daemon for `skiff info`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Info {
    /// skiff's version.
    pub version: String,
    /// The git commit skiffd was built from ("unknown" outside a git checkout).
    pub git_commit: String,
    /// The rustc that built skiffd.
    pub rust_version: String,
    /// The OS and CPU architecture (Go's names, as docker prints them).
    pub os_arch: String,
    /// The storage driver.
    pub storage_driver: String,
    /// Why this storage driver is active.
    pub storage_driver_reason: String,
    /// The network mode of new containers that name none.
    pub network: String,
    /// Why that network mode.
    pub network_reason: String,
    /// Data directory.
    pub data_dir: String,
    /// Runtime directory.
    pub runtime_dir: String,
    /// The uid map containers get.
    pub uid_map: Vec<crate::userns::IdMapEntry>,
    /// The gid map containers get.
    pub gid_map: Vec<crate::userns::IdMapEntry>,
    /// The security options containers get by default (docker's `SecurityOptions`).
    pub security_options: Vec<String>,
    /// `--userns keep-id` support and cost, per storage driver.
    pub userns_keep_id: BTreeMap<String, String>,
    /// The overlay driver's keep-id layer copies and the disk they use.
    pub keep_id_copies: crate::image::keepid_copies::KeepIdCopies,
    /// The configuration file read (`null`: none, the defaults and flags apply).
    pub config_file: Option<String>,
    /// The effective configuration: each key's value and where it came from
    /// (`default`, `env`, `file` or `flag`).
    pub config: BTreeMap<String, serde_json::Value>,
    /// Warnings about the host's setup.
    pub warnings: Vec<String>,
}

/// `linux/amd64`: the OS and CPU architecture with Go's names, as docker prints them.
pub fn os_arch() -> String {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    };
    format!("{}/{arch}", std::env::consts::OS)
}

impl Daemon {
    /// Opens the stores, works out the id maps and loads the containers on disk.
    pub fn new(opts: Options) -> Result<Daemon, Error> {
        for dir in [
            &opts.paths.data,
            &opts.paths.runtime,
            &opts.paths.containers(),
        ] {
            crate::fsutil::ensure_private_dir(dir).map_err(|e| Error::io(dir, e))?;
        }
        let (maps, warnings) =
            IdMaps::for_current_user().map_err(|e| Error::IdMapping(e.to_string()))?;
        for w in &warnings {
            tracing::warn!("{w}");
        }
        let preflight = maps.preflight().map_err(|e| e.to_string());
        if let Err(e) = &preflight {
            tracing::error!("{e}");
        }
        let maps_json = serde_json::to_string(&maps).map_err(|e| Error::Internal(e.to_string()))?;
        let images = ImageStore::open(&opts.paths.images())?;
        let volumes = volumes::VolumeStore::open(&opts.paths.volumes())?;
        let (events, _) = broadcast::channel(1024);
        let spare = spare::Spare::new(opts.paths.data.join("spare"));
        let spare_bundle = spare::Spare::bundles(opts.paths.runtime.join("spare"));
        let daemon = Daemon {
            inner: Arc::new(Inner {
                settings: std::sync::RwLock::new(opts.settings.clone()),
                opts,
                maps,
                maps_json,
                preflight,
                images,
                containers: Mutex::new(table::Table::default()),
                events,
                execs: Default::default(),
                volumes,
                default_network: Default::default(),
                shared_userns: Default::default(),
                shared_net: Default::default(),
                spare,
                zygote: Default::default(),
                spare_bundle,
            }),
        };
        if daemon.settings().network_auto {
            // The trial takes tens of ms: off the start-up path (the first create or
            // `info` waits for it if it has not ended yet).
            let d = daemon.clone();
            std::thread::spawn(move || {
                d.default_network();
            });
        }
        // Before anything uses a layer (containers, jobs, the collection).
        daemon.repair_unsynced_layers();
        daemon.load_containers();
        daemon.collect_image_garbage();
        daemon.collect_volume_leftovers();
        Ok(daemon)
    }

    /// Daemon facts for `info`.
    pub fn info(&self) -> Info {
        let o = &self.inner.opts;
        let settings = self.settings();
        let mut warnings = Vec::new();
        if let Err(e) = &self.inner.preflight {
            warnings.push(e.clone());
        }
        if self.inner.maps.uid.len() < 2 {
            warnings.push("no subordinate uid range: containers get a single uid".into());
        }
        let (network, network_reason) = self.default_network();
        let mut config = settings.describe();
        // The setting as given: `auto` stays `auto` (the choice is `network` above).
        if let Some(v) = config.get_mut("network").filter(|_| !settings.network_auto) {
            v["value"] = network.to_string().into();
        }
        Info {
            version: env!("CARGO_PKG_VERSION").into(),
            git_commit: env!("SKIFF_GIT_COMMIT").into(),
            rust_version: env!("SKIFF_RUSTC_VERSION").into(),
            os_arch: os_arch(),
            storage_driver: o.driver.to_string(),
            storage_driver_reason: o.driver_reason.clone(),
            network: network.to_string(),
            network_reason,
            data_dir: o.paths.data.display().to_string(),
            runtime_dir: o.paths.runtime.display().to_string(),
            uid_map: self.inner.maps.uid.clone(),
            gid_map: self.inner.maps.gid.clone(),
            security_options: security::info_options(),
            userns_keep_id: RootfsDriver::ALL
                .iter()
                .map(|d| (d.to_string(), d.keep_id_support().to_string()))
                .collect(),
            keep_id_copies: self.inner.images.keep_id_copies(),
            config_file: settings.file.as_ref().map(|f| f.display().to_string()),
            config,
            warnings,
        }
    }

    /// The network mode of containers that name none, and why: the configured one
    /// (`network` in skiffd.toml, `--network`; `auto`: pasta where it works, else
    /// slirp4netns, [`crate::netns::choose`]), else slirp4netns (pasta where only it is
    /// installed).
    pub fn default_network(&self) -> (crate::netns::Mode, String) {
        let s = self.settings();
        if s.network_auto {
            return self
                .inner
                .default_network
                .get_or_init(|| {
                    let (mode, why) = crate::netns::choose::choose_default();
                    tracing::info!("default network: {why}");
                    (mode, why)
                })
                .clone();
        }
        match s.source("network") {
            settings::Source::Default
                if crate::netns::choose::find_in_path("slirp4netns").is_none()
                    && crate::netns::choose::find_in_path("pasta").is_some() =>
            {
                (
                    crate::netns::Mode::Pasta,
                    "pasta: slirp4netns, the default, is not installed".into(),
                )
            }
            settings::Source::Default => (
                crate::netns::Mode::Bridge,
                "bridge: the default: the containers of the shared user namespace (no \
                 --userns) share one network connected by one slirp4netns, each with an \
                 address of its own; others get a slirp4netns of their own (network = \
                 \"auto\" in skiffd.toml makes pasta the default where it works: published \
                 ports at near loopback speed that keep the client's address, for a slower \
                 start and more memory per container; docs/configuration.md)"
                    .into(),
            ),
            settings::Source::Flag => (s.network, "chosen with skiffd --network".into()),
            _ => (
                s.network,
                match &s.file {
                    Some(f) => format!("chosen in {}", f.display()),
                    None => "configured".into(),
                },
            ),
        }
    }

    /// The live settings.
    pub fn settings(&self) -> settings::Settings {
        match self.inner.settings.read() {
            Ok(s) => s.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces the live settings with `new` (re-read on SIGHUP); the storage driver
    /// keeps its value (it needs a restart). Returns the keys changed live and those
    /// that need a restart.
    pub fn reload_settings(
        &self,
        mut new: settings::Settings,
    ) -> (Vec<&'static str>, Vec<&'static str>) {
        let mut cur = match self.inner.settings.write() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let diff = cur.reload_diff(&new);
        new.storage_driver = cur.storage_driver;
        if let Some(src) = cur.sources.get("storage-driver").copied() {
            new.sources.insert("storage-driver", src);
        }
        *cur = new;
        diff
    }

    /// Subscribes to the event stream (docker's vocabulary).
    pub fn subscribe(&self) -> broadcast::Receiver<Event> {
        self.inner.events.subscribe()
    }

    fn emit(&self, event: Event) {
        tracing::debug!(?event, "event");
        let _ = self.inner.events.send(event);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, table::Table> {
        match self.inner.containers.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Finds a container by full id, name or unique id prefix.
    pub fn lookup(&self, name_or_id: &str) -> Result<Arc<Container>, Error> {
        let map = self.lock();
        if let Some(c) = map.get(name_or_id).or_else(|| map.by_name(name_or_id)) {
            return Ok(c.clone());
        }
        if !name_or_id.is_empty() && name_or_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            let hits: Vec<_> = map
                .iter()
                .filter(|(id, _)| id.starts_with(name_or_id))
                .map(|(id, c)| (id.clone(), c.clone()))
                .collect();
            match hits.len() {
                0 => {}
                1 => return Ok(hits[0].1.clone()),
                _ => {
                    return Err(Error::AmbiguousContainer {
                        prefix: name_or_id.into(),
                        candidates: hits
                            .into_iter()
                            .map(|(id, _)| id[..12].to_string())
                            .collect(),
                    })
                }
            }
        }
        Err(Error::NoSuchContainer(name_or_id.into()))
    }

    /// All containers' records, newest first.
    pub fn list(&self, all: bool) -> Vec<Record> {
        self.list_filtered(all, &filters::Filters::default())
    }

    /// Containers matching `filters` (running ones only unless `all` or a status filter),
    /// newest first.
    pub fn list_filtered(&self, all: bool, filters: &filters::Filters) -> Vec<Record> {
        let all = all || filters.wants_status();
        let mut recs: Vec<Record> = self
            .lock()
            .values()
            .map(|c| c.snapshot())
            .filter(|r| all || r.state.status == Status::Running)
            .filter(|r| filters.matches(r))
            .collect();
        recs.sort_by_key(|r| std::cmp::Reverse(r.created));
        recs
    }

    /// Docker-shaped inspect JSON.
    pub fn inspect(&self, name_or_id: &str) -> Result<serde_json::Value, Error> {
        self.inspect_cached(name_or_id, &mut HashMap::new())
    }

    /// Docker-shaped inspect JSON of several containers (`ps`): each image's config is
    /// read once, not once per container. Containers gone meanwhile are left out.
    pub fn inspect_many<'a>(
        &self,
        ids: impl IntoIterator<Item = &'a str>,
    ) -> Vec<serde_json::Value> {
        let mut exposed = HashMap::new();
        ids.into_iter()
            .filter_map(|id| self.inspect_cached(id, &mut exposed).ok())
            .collect()
    }

    /// [`Daemon::inspect`], with the image EXPOSE ports already read kept in `exposed`.
    fn inspect_cached(
        &self,
        name_or_id: &str,
        exposed: &mut HashMap<String, Vec<String>>,
    ) -> Result<serde_json::Value, Error> {
        let c = self.lookup(name_or_id)?;
        let rec = c.snapshot();
        let mut v = container::inspect_json(&rec, &rec.config.image);
        // The image's EXPOSE ports (a container outlives nothing of its image: an image
        // gone missing only leaves them out).
        let image_exposed = exposed.entry(rec.image_id.clone()).or_insert_with(|| {
            self.inner
                .images
                .config(&rec.image_id)
                .ok()
                .and_then(|c| c.config().as_ref().and_then(|c| c.exposed_ports().clone()))
                .unwrap_or_default()
        });
        network::extend_exposed(&mut v, &rec, image_exposed);
        v["LogPath"] = supervise::log_path(&c.dir).display().to_string().into();
        v["Mounts"] = self.inspect_mounts(&rec);
        Ok(v)
    }

    /// Waits until `cond` holds; returns (exit code, finished_at µs).
    pub async fn wait(&self, name_or_id: &str, cond: WaitCondition) -> Result<(i32, u64), Error> {
        let c = self.lookup(name_or_id)?;
        Ok(container::wait_for(c.watch(), cond).await)
    }
}

#[cfg(test)]
mod tests {
    use super::Options;

    #[test]
    fn the_monitor_is_skiff_monitor_beside_skiffd_else_skiffd_itself() {
        let dir = tempfile::tempdir().unwrap();
        let skiffd = dir.path().join("skiffd");
        std::fs::write(&skiffd, b"").unwrap();
        // Not installed: skiffd runs the monitor itself (`skiffd __monitor BUNDLE`).
        assert_eq!(Options::monitor_beside(&skiffd), skiffd);
        // A directory of that name is not the binary.
        std::fs::create_dir(dir.path().join("skiff-monitor")).unwrap();
        assert_eq!(Options::monitor_beside(&skiffd), skiffd);
        std::fs::remove_dir(dir.path().join("skiff-monitor")).unwrap();
        std::fs::write(dir.path().join("skiff-monitor"), b"").unwrap();
        assert_eq!(
            Options::monitor_beside(&skiffd),
            dir.path().join("skiff-monitor")
        );
    }
}
