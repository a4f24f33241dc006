//! Image objects (`/org/skiff/skiff1/image/<id>`) and job objects
//! (`/org/skiff/skiff1/job/<n>`) for long work such as imports.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
use zbus::message::Header;
use zbus::object_server::SignalEmitter;
use zbus::{interface, Connection, ObjectServer, OwnedObjectPath};

use super::manager::{Ctx, Manager};
use super::{image_path, SkiffError};
use crate::image::ImageRecord;
use crate::timefmt::parse_rfc3339;

/// Allocates job ids.
#[derive(Default)]
pub struct Jobs {
    next: AtomicU32,
}

impl Jobs {
    pub(crate) fn next_id(&self) -> u32 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// An image's object.
pub struct ImageObject {
    /// Shared context.
    pub ctx: Ctx,
    /// The image id (hex).
    pub id: String,
}

impl ImageObject {
    /// The creation time of an image record in µs since the epoch (0 if unparsable).
    pub fn created_us(rec: &ImageRecord) -> u64 {
        parse_rfc3339(&rec.created).unwrap_or(0)
    }

    fn record(&self) -> Option<ImageRecord> {
        self.ctx.daemon.image(&self.id).ok()
    }
}

/// An image.
#[interface(name = "org.skiff.skiff1.Image")]
impl ImageObject {
    /// The image as JSON (Id, RepoTags, RepoDigests, Created, Size, Architecture, Os,
    /// Config, RootFS layers, Manifest digest, History).
    async fn inspect(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        let v = self.ctx.daemon.inspect_image(&self.id)?;
        serde_json::to_string_pretty(&v).map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// The image's history (its config's, newest first) as a JSON array of objects
    /// with Created, CreatedBy, Comment, EmptyLayer.
    async fn history(
        &self,
        #[zbus(header)] hdr: Header<'_>,
        #[zbus(connection)] conn: &Connection,
    ) -> Result<String, SkiffError> {
        self.ctx.caller.check(&hdr, conn).await?;
        let v = self.ctx.daemon.image_history(&self.id)?;
        serde_json::to_string_pretty(&v).map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// name@digest references.
    #[zbus(property)]
    fn repo_digests(&self) -> Vec<String> {
        self.record().map(|r| r.repo_digests).unwrap_or_default()
    }

    /// The id (hex of the config's sha256).
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> String {
        self.id.clone()
    }

    /// name:tag references.
    #[zbus(property)]
    fn repo_tags(&self) -> Vec<String> {
        self.record().map(|r| r.repo_tags).unwrap_or_default()
    }

    /// Creation time, µs since the epoch.
    #[zbus(property(emits_changed_signal = "const"))]
    fn created(&self) -> u64 {
        self.record()
            .map(|r| Self::created_us(&r))
            .unwrap_or_default()
    }

    /// Size of the layers in bytes.
    #[zbus(property(emits_changed_signal = "const"))]
    fn size(&self) -> u64 {
        self.record().map(|r| r.size).unwrap_or_default()
    }
}

/// How a job ended: ("done", image id) or ("failed", message).
pub(crate) type JobOutcome = Option<(String, String)>;

/// A job's object.
pub struct JobObject {
    id: u32,
    typ: String,
    reference: String,
    done: watch::Receiver<JobOutcome>,
    /// Progress of a pull (see `super::job`); None for other jobs.
    pull: Option<Arc<super::job::PullJob>>,
}

// ---- Progress of pulls (registry work; see super::job) ----
impl JobObject {
    /// A job object; `pull` carries a pull's progress.
    pub(crate) fn new(
        id: u32,
        typ: &str,
        reference: &str,
        done: watch::Receiver<JobOutcome>,
        pull: Option<Arc<super::job::PullJob>>,
    ) -> JobObject {
        JobObject {
            id,
            typ: typ.to_string(),
            reference: reference.to_string(),
            done,
            pull,
        }
    }
}

/// Long-running work (an import).
#[interface(name = "org.skiff.skiff1.Job")]
impl JobObject {
    /// Waits for the end: ("done", image id) or ("failed", message).
    #[zbus(out_args("result", "image_id"))]
    async fn wait(&self) -> Result<(String, String), SkiffError> {
        let mut rx = self.done.clone();
        let out = rx
            .wait_for(|o| o.is_some())
            .await
            .map_err(|_| SkiffError::Failed("the job vanished".into()))?;
        Ok(out.clone().unwrap_or_default())
    }

    /// Jobs cannot be cancelled yet.
    async fn cancel(&self) -> Result<(), SkiffError> {
        Err(SkiffError::NotSupported(
            "cancelling jobs is not supported yet".into(),
        ))
    }

    /// The job id.
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> u32 {
        self.id
    }

    /// "import".
    #[zbus(property(emits_changed_signal = "const"), name = "Type")]
    fn typ(&self) -> String {
        self.typ.clone()
    }

    /// The image reference the job works on.
    #[zbus(property(emits_changed_signal = "const"))]
    fn reference(&self) -> String {
        self.reference.clone()
    }

    /// "running" or "done".
    #[zbus(property(emits_changed_signal = "false"))]
    fn state(&self) -> String {
        if self.done.borrow().is_some() {
            "done"
        } else {
            "running"
        }
        .into()
    }

    // ---- Progress of pulls (registry work; see super::job). Emitted at most 4 times a
    // second while the job runs. Jobs without byte counts report -1 / 0. ----

    /// Fraction done in [0, 1]; -1 while unknown.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.pull
            .as_ref()
            .map(|p| p.progress.totals().fraction)
            .unwrap_or(-1.0)
    }

    /// Bytes downloaded so far.
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.pull
            .as_ref()
            .map(|p| p.progress.totals().done)
            .unwrap_or(0)
    }

    /// Bytes to download (blobs the store lacks), 0 while unknown.
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.pull
            .as_ref()
            .map(|p| p.progress.totals().total)
            .unwrap_or(0)
    }

    /// Blobs not downloaded because the store had them.
    #[zbus(property)]
    fn blobs_skipped(&self) -> u32 {
        self.pull
            .as_ref()
            .map(|p| u32::try_from(p.progress.totals().skipped).unwrap_or(u32::MAX))
            .unwrap_or(0)
    }

    /// The manifest digest of a pulled image, once known ("" before).
    #[zbus(property)]
    fn digest(&self) -> String {
        self.pull.as_ref().map(|p| p.digest()).unwrap_or_default()
    }

    /// One blob's progress: digest, status (waiting|downloading|skipped|done), bytes
    /// done, bytes total.
    #[zbus(signal)]
    pub async fn layer_progress(
        emitter: &SignalEmitter<'_>,
        digest: &str,
        status: &str,
        done: u64,
        total: u64,
    ) -> zbus::Result<()>;
}

/// Registers an image's object (no-op when it exists) and announces it.
pub async fn register_image(ctx: &Ctx, server: &ObjectServer, conn: &Connection, id: &str) {
    let p = image_path(id);
    let added = server
        .at(
            p.as_str(),
            ImageObject {
                ctx: ctx.clone(),
                id: id.to_string(),
            },
        )
        .await;
    if let (Ok(None), Ok(emitter)) = (added, SignalEmitter::new(conn, super::MANAGER_PATH)) {
        if let Ok(op) = zbus::ObjectPath::try_from(p.as_str()) {
            let _ = Manager::image_new(&emitter, id, op).await;
        }
    }
}

/// Starts an import job; with `wait`, returns when it ended (its error as a D-Bus error).
pub async fn start_import(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    fd: OwnedFd,
    reference: String,
    changes: crate::image::ImageChanges,
    wait: bool,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let daemon = ctx.daemon.clone();
    let r = reference.clone();
    let work: super::job::JobWork =
        Box::pin(async move { daemon.import_image(fd, &r, changes).await.map(|i| vec![i]) });
    let spec = super::job::JobSpec {
        typ: "import",
        reference,
        wait,
        pull: None,
    };
    super::job::start_job(ctx, conn, server, spec, work).await
}

/// Removes the objects of deleted images and announces it.
pub async fn unregister_images(server: &ObjectServer, conn: &Connection, ids: &[String]) {
    for id in ids {
        let p = image_path(id);
        let removed = server.remove::<ImageObject, _>(p.as_str()).await;
        if let (Ok(true), Ok(emitter), Ok(op)) = (
            removed,
            SignalEmitter::new(conn, super::MANAGER_PATH),
            zbus::ObjectPath::try_from(p.as_str()),
        ) {
            let _ = Manager::image_removed(&emitter, id, op).await;
        }
    }
}
