//! The `org.skiff.skiff1.Manager` interface at `/org/skiff/skiff1`.

use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectServer, OwnedObjectPath, OwnedVariant};

use super::container::ContainerObject;
use super::image::{ImageObject, Jobs};
use super::options;
use super::stdio::check_fd;
pub use super::stdio::{null_stdio, stdio_of};
use super::{check_flags, container_path, convert, image_path, SkiffError};
use crate::daemon::prespawn::Launch;
use crate::daemon::{ContainerConfig, Daemon};

/// Shared by every object the server exports.
#[derive(Clone)]
pub struct Ctx {
    /// The backend.
    pub daemon: Daemon,
    /// Running jobs.
    pub jobs: Arc<Jobs>,
}

/// The manager object.
pub struct Manager {
    /// Shared context.
    pub ctx: Ctx,
}

fn path(p: String) -> Result<OwnedObjectPath, SkiffError> {
    OwnedObjectPath::try_from(p).map_err(SkiffError::ZBus)
}

fn removal_pairs(r: &crate::image::Removal) -> Vec<(String, String)> {
    r.untagged
        .iter()
        .map(|t| ("untagged".to_string(), t.clone()))
        .chain(r.deleted.iter().map(|d| ("deleted".to_string(), d.clone())))
        .collect()
}

impl Manager {
    /// The containers ListContainers and InspectContainers select: docker's filters, and
    /// flag 1 for stopped ones too.
    fn select(
        &self,
        filters: &[String],
        flags: u64,
    ) -> Result<Vec<crate::daemon::Record>, SkiffError> {
        check_flags(flags, super::LIST_ALL)?;
        let filters = crate::daemon::filters::Filters::parse(filters)?;
        Ok(self
            .ctx
            .daemon
            .list_filtered(flags & super::LIST_ALL != 0, &filters))
    }

    async fn register(
        &self,
        server: &ObjectServer,
        id: &str,
    ) -> Result<OwnedObjectPath, SkiffError> {
        let p = container_path(id);
        server
            .at(
                p.as_str(),
                ContainerObject {
                    ctx: self.ctx.clone(),
                    id: id.to_string(),
                },
            )
            .await?;
        path(p)
    }

    async fn create(
        &self,
        server: &ObjectServer,
        emitter: &SignalEmitter<'_>,
        cfg: ContainerConfig,
        started_at_once: bool,
        id: Option<String>,
    ) -> Result<(String, OwnedObjectPath), SkiffError> {
        let id = self.ctx.daemon.create_as(cfg, started_at_once, id).await?;
        let p = self.register(server, &id).await?;
        Manager::container_new(emitter, &id, p.as_ref()).await?;
        Ok((id, p))
    }
}

/// The manager: creates and finds containers and images.
#[interface(name = "org.skiff.skiff1.Manager")]
impl Manager {
    /// The object path of a container, by full id, unique id prefix or name.
    async fn get_container(&self, name_or_id: &str) -> Result<OwnedObjectPath, SkiffError> {
        let c = self.ctx.daemon.lookup(name_or_id)?;
        path(container_path(&c.id()))
    }

    /// Containers as (id, name, image, state, created µs, path); flag 1 = all, else only
    /// running ones. Filters as docker's (`status=exited`, `name=web`, `label=k[=v]`,
    /// `ancestor=IMAGE`, `id=PREFIX`).
    async fn list_containers(
        &self,
        filters: Vec<String>,
        flags: u64,
    ) -> Result<Vec<(String, String, String, String, u64, OwnedObjectPath)>, SkiffError> {
        self.select(&filters, flags)?
            .into_iter()
            .map(|r| {
                Ok((
                    r.id.clone(),
                    r.name,
                    r.config.image,
                    r.state.status_str().to_string(),
                    r.created,
                    path(container_path(&r.id))?,
                ))
            })
            .collect()
    }

    /// The docker-shaped inspect JSON of every container the filters and flags select
    /// (as ListContainers), as one JSON array: `ps` in one round trip.
    async fn inspect_containers(
        &self,
        filters: Vec<String>,
        flags: u64,
    ) -> Result<String, SkiffError> {
        let recs = self.select(&filters, flags)?;
        let all = self
            .ctx
            .daemon
            .inspect_many(recs.iter().map(|r| r.id.as_str()));
        serde_json::to_string(&all).map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// Creates a container from an `a{sv}` config (keys in docs/dbus-api.md).
    #[zbus(out_args("id", "container"))]
    async fn create_container(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        config: HashMap<String, OwnedVariant>,
        flags: u64,
    ) -> Result<(String, OwnedObjectPath), SkiffError> {
        check_flags(flags, 0)?;
        let json = convert::dict_to_json(&config).map_err(SkiffError::InvalidConfig)?;
        let cfg = ContainerConfig::from_json_value(json)?;
        self.create(server, &emitter, cfg, false, None).await
    }

    /// The JSON twin of `CreateContainer`, for dbus-send and scripts.
    #[zbus(name = "CreateContainerJSON", out_args("id", "container"))]
    async fn create_container_json(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        config_json: &str,
        flags: u64,
    ) -> Result<(String, OwnedObjectPath), SkiffError> {
        check_flags(flags, 0)?;
        let cfg = ContainerConfig::from_json_str(config_json)?;
        self.create(server, &emitter, cfg, false, None).await
    }

    /// Creates and starts a container. `fds` maps the container's fd 0, 1, 2 to fds the
    /// client passes (its own stdio, typically); empty = output logged by the daemon.
    /// Flags: 1 = remove on exit, 2 = kill when the caller leaves the bus, 4 = the caller
    /// attaches right after (no fds; see `Container.Attach`).
    #[zbus(out_args("id", "container"))]
    #[allow(clippy::too_many_arguments)]
    async fn run_container(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        #[zbus(signal_emitter)] emitter: SignalEmitter<'_>,
        config: HashMap<String, OwnedVariant>,
        fds: HashMap<u32, zbus::OwnedFd>,
        flags: u64,
    ) -> Result<(String, OwnedObjectPath), SkiffError> {
        check_flags(
            flags,
            super::RUN_AUTO_REMOVE | super::RUN_KILL_ON_DISCONNECT | super::RUN_ATTACH,
        )?;
        let stdio = stdio_of(fds)?;
        let attach = flags & super::RUN_ATTACH != 0;
        if attach && stdio.is_some() {
            return Err(SkiffError::invalid_args(
                "flag 4 (attach) is for runs without fds: the output goes through Attach",
            ));
        }
        let json = convert::dict_to_json(&config).map_err(SkiffError::InvalidConfig)?;
        let mut cfg = ContainerConfig::from_json_value(json)?;
        if flags & super::RUN_AUTO_REMOVE != 0 {
            cfg.auto_remove = true;
        }
        crate::phase::mark("run-call");
        // The monitor is spawned while the container is created (see daemon::prespawn).
        let id = crate::daemon::names::new_id().map_err(|e| {
            SkiffError::from(crate::daemon::Error::Internal(format!("random id: {e}")))
        })?;
        let launch = if attach {
            Launch::Now(None)
        } else {
            match self.ctx.daemon.prespawn_monitor(&id, &cfg, stdio).await {
                Ok(early) => Launch::Early(early),
                Err(stdio) => Launch::Now(stdio),
            }
        };
        let (id, p) = self.create(server, &emitter, cfg, true, Some(id)).await?;
        crate::phase::mark("created");
        if flags & super::RUN_KILL_ON_DISCONNECT != 0 {
            if let Some(sender) = hdr.sender() {
                super::server::kill_on_disconnect(
                    conn.clone(),
                    self.ctx.daemon.clone(),
                    sender.to_string(),
                    id.clone(),
                );
            }
        }
        if attach {
            self.ctx.daemon.start_for_attach(&id).await?;
        } else {
            self.ctx.daemon.start_launched(&id, launch).await?;
        }
        crate::phase::mark("run-reply");
        Ok((id, p))
    }

    /// Imports a rootfs tarball (plain, gzip or zstd) read from `rootfs_tar` as
    /// `reference`. Options: `wait` (b) — return only when the import is done, with its
    /// errors; `changes` (as) — Dockerfile instructions setting the image config (CMD,
    /// ENTRYPOINT, ENV, WORKDIR, USER, LABEL, EXPOSE, STOPSIGNAL).
    /// Returns the job's id and object.
    #[zbus(out_args("job_id", "job"))]
    #[allow(clippy::too_many_arguments)]
    async fn import_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        rootfs_tar: zbus::OwnedFd,
        reference: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, OwnedObjectPath), SkiffError> {
        let (wait, changes) = options::import(&options)?;
        let fd: OwnedFd = super::stdio::received(rootfs_tar);
        check_fd(&fd, "rootfs_tar")?;
        super::image::start_import(
            &self.ctx,
            conn,
            server,
            fd,
            reference.to_string(),
            changes,
            wait,
        )
        .await
    }

    /// Builds an image from the build context tar read from `context` (plain or gzip),
    /// writing progress (`STEP n/m: …`, RUN output, `--> Using cache …`, the id) to
    /// `output`. Options: `dockerfile` (s: its text; default `Dockerfile` of the
    /// context), `dockerfile-name` (s, for errors), `tags` (as), `build-args` (as,
    /// NAME=VALUE), `target` (s), `no-cache` (b), `wait` (b). Returns the job; its
    /// `Wait()` gives the image id; `Cancel()` stops the running step.
    #[zbus(out_args("job_id", "job"))]
    async fn build_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        context: zbus::OwnedFd,
        output: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, OwnedObjectPath), SkiffError> {
        let context: OwnedFd = super::stdio::received(context);
        check_fd(&context, "context")?;
        let output: OwnedFd = super::stdio::received(output);
        check_fd(&output, "output")?;
        super::build::start_build(&self.ctx, conn, server, context, output, options).await
    }

    /// Loads the images of an archive: a docker-archive or oci-archive (tar, plain or
    /// gzip; a pipe is fine) or an open OCI layout directory. Options: `wait` (b).
    /// Returns the job; its `Wait()` gives the loaded image ids, comma-separated.
    #[zbus(out_args("job_id", "job"))]
    async fn load_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        archive: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, OwnedObjectPath), SkiffError> {
        let wait = options::load(&options)?;
        let fd: OwnedFd = super::stdio::received(archive);
        nix::sys::stat::fstat(fd.as_fd())
            .map_err(|e| SkiffError::invalid_args(format!("archive: bad file descriptor: {e}")))?;
        let daemon = self.ctx.daemon.clone();
        let state = std::sync::Arc::new(super::job::JobState::default());
        let progress = state.progress.clone();
        let work: super::job::JobWork =
            Box::pin(async move { daemon.load_image(fd, progress).await });
        let spec = super::job::JobSpec {
            typ: "load",
            reference: String::new(),
            wait,
            state,
        };
        super::job::start_job(&self.ctx, conn, server, spec, work).await
    }

    /// Writes the images `refs` name to `out` as an archive. Options: `format` (s):
    /// docker-archive (default) or oci-archive. Returns when the archive is written.
    async fn save_image(
        &self,
        refs: Vec<String>,
        out: zbus::OwnedFd,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(), SkiffError> {
        let format = options::save(&options)?;
        let fd: OwnedFd = super::stdio::received(out);
        check_fd(&fd, "out")?;
        Ok(self.ctx.daemon.save_images(&refs, fd, &format).await?)
    }

    /// Points the reference `target` at the image `source` names.
    async fn tag_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        source: &str,
        target: &str,
    ) -> Result<(), SkiffError> {
        let rec = self.ctx.daemon.tag_image(source, target)?;
        super::image::register_image(&self.ctx, server, conn, &rec.id).await;
        Ok(())
    }

    /// Removes an image, or only the tag `reference` when the image has others.
    /// Flag 1 (FORCE): remove an image tagged several times by id, and the containers
    /// using it. Returns ("untagged", ref) and ("deleted", id) pairs.
    async fn remove_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        reference: &str,
        flags: u64,
    ) -> Result<Vec<(String, String)>, SkiffError> {
        check_flags(flags, super::REMOVE_FORCE)?;
        let r = self
            .ctx
            .daemon
            .remove_image(reference, flags & super::REMOVE_FORCE != 0)
            .await?;
        super::image::unregister_images(server, conn, &r.deleted).await;
        Ok(removal_pairs(&r))
    }

    /// Removes dangling images; flag 1 (ALL): every image no container uses; then frees
    /// every blob no image lists that no running job pinned. Returns ("untagged", ref)
    /// and ("deleted", id) pairs, then ("reclaimed", bytes freed as a decimal number).
    async fn prune_images(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        flags: u64,
    ) -> Result<Vec<(String, String)>, SkiffError> {
        check_flags(flags, super::LIST_ALL)?;
        let r = self
            .ctx
            .daemon
            .prune_images(flags & super::LIST_ALL != 0)
            .await?;
        super::image::unregister_images(server, conn, &r.deleted).await;
        let mut pairs = removal_pairs(&r);
        pairs.push(("reclaimed".into(), r.bytes_freed.to_string()));
        Ok(pairs)
    }

    /// Pulls `reference` from its registry. Options: `tls-verify` (b, default true:
    /// HTTPS with verified certificates; plain HTTP only to loopback registries),
    /// `auth-file` (s, absolute path of a podman/docker auth file), `platform` (s,
    /// `os/arch[/variant]`, default ours), `wait` (b: return when the pull is done,
    /// with its error). Returns the job's id and object; the Job reports `Progress`,
    /// `BytesDone`, `BytesTotal`, `BlobsSkipped`, `Digest` and `LayerProgress` signals.
    #[zbus(out_args("job_id", "job"))]
    async fn pull_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        reference: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, OwnedObjectPath), SkiffError> {
        let (req, wait) = options::pull(reference, &options)?;
        super::job::start_pull(&self.ctx, conn, server, req, wait).await
    }

    /// Pushes the image `image` (name, id or id prefix) to `destination`
    /// (`HOST[:PORT]/REPO[:TAG]`; empty: the image's own name). Options: `tls-verify`
    /// (b, default true), `auth-file` (s, absolute path of a podman/docker auth file),
    /// `wait` (b: return when the push is done, with its error). Returns the job's id
    /// and object; the Job (Type "push") reports `Progress`, `BytesDone`, `BytesTotal`,
    /// `BlobsSkipped` (blobs the registry had), `Digest` (the manifest pushed) and
    /// `LayerProgress` signals (waiting, uploading, exists, pushed).
    #[zbus(out_args("job_id", "job"))]
    async fn push_image(
        &self,
        #[zbus(connection)] conn: &Connection,
        #[zbus(object_server)] server: &ObjectServer,
        image: &str,
        destination: &str,
        options: HashMap<String, OwnedVariant>,
    ) -> Result<(u32, OwnedObjectPath), SkiffError> {
        let (req, wait) = options::push(image, destination, &options)?;
        super::job::start_push(&self.ctx, conn, server, req, wait).await
    }

    /// Images as (id, repo tags, created µs, size in bytes, path). Filters:
    /// `dangling=true|false`, `reference=PATTERN` (`*` wildcards). Flag 1 = ALL: with a
    /// build's intermediate images (hidden without it).
    async fn list_images(
        &self,
        filters: Vec<String>,
        flags: u64,
    ) -> Result<Vec<(String, Vec<String>, u64, u64, OwnedObjectPath)>, SkiffError> {
        check_flags(flags, 1)?;
        self.ctx
            .daemon
            .list_images_filtered(&filters, flags & 1 != 0)?
            .into_iter()
            .map(|i| {
                let created = ImageObject::created_us(&i);
                Ok((
                    i.id.clone(),
                    i.repo_tags,
                    created,
                    i.size,
                    path(image_path(&i.id))?,
                ))
            })
            .collect()
    }

    /// The object path of an image by reference, id or id prefix.
    async fn get_image(&self, reference: &str) -> Result<OwnedObjectPath, SkiffError> {
        let img = self.ctx.daemon.image(reference)?;
        path(image_path(&img.id))
    }

    /// Facts about the daemon (storage driver, id maps, warnings) as JSON.
    async fn info(&self) -> Result<String, SkiffError> {
        serde_json::to_string_pretty(&self.ctx.daemon.info())
            .map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// Disk use as docker's `system df` data (JSON): `LayersSize`, `Images` (with
    /// `Size`, `SharedSize`, `Containers`), `Containers` (with `SizeRw`), `Volumes`
    /// (with `UsageData.Size`, `UsageData.RefCount`) and `BuildCache`; bytes.
    async fn disk_usage(&self) -> Result<String, SkiffError> {
        serde_json::to_string(&self.ctx.daemon.disk_usage_async().await?)
            .map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// skiff's version.
    #[zbus(property(emits_changed_signal = "const"))]
    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    /// The API version (bumped on each compatible addition).
    #[zbus(property(emits_changed_signal = "const"), name = "APIVersion")]
    fn api_version(&self) -> u32 {
        super::API_VERSION
    }

    /// Optional features this daemon has.
    #[zbus(property(emits_changed_signal = "const"))]
    fn features(&self) -> Vec<String> {
        vec![
            "fd-stdio".into(),
            "import".into(),
            "tty".into(),
            "attach".into(),
            "load".into(),
            "save".into(),
            "pull".into(),
            "console-size".into(),
            "security".into(),
            "mounts".into(),
            "volumes".into(),
            "copy".into(),
            "commit".into(),
            "build".into(),
            "top".into(),
            "stats".into(),
            "disk-usage".into(),
            "pause".into(),
            "limits".into(),
            "push".into(),
        ]
    }

    /// A container was created.
    #[zbus(signal)]
    pub async fn container_new(
        emitter: &SignalEmitter<'_>,
        id: &str,
        container: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A container was removed.
    #[zbus(signal)]
    pub async fn container_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        container: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// An image was added.
    #[zbus(signal)]
    pub async fn image_new(
        emitter: &SignalEmitter<'_>,
        id: &str,
        image: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// An image was deleted.
    #[zbus(signal)]
    pub async fn image_removed(
        emitter: &SignalEmitter<'_>,
        id: &str,
        image: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A job started.
    #[zbus(signal)]
    pub async fn job_new(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: zbus::ObjectPath<'_>,
    ) -> zbus::Result<()>;

    /// A job ended: result is done, failed or canceled.
    #[zbus(signal)]
    pub async fn job_removed(
        emitter: &SignalEmitter<'_>,
        id: u32,
        job: zbus::ObjectPath<'_>,
        result: &str,
    ) -> zbus::Result<()>;

    /// An event in docker's vocabulary (type, action, id, attributes, time µs).
    #[zbus(signal)]
    pub async fn event(
        emitter: &SignalEmitter<'_>,
        typ: &str,
        action: &str,
        id: &str,
        attributes: HashMap<String, String>,
        time: u64,
    ) -> zbus::Result<()>;
}
