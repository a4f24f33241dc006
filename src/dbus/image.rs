//! Image objects (`/org/skiff/skiff1/image/<id>`) and job objects
//! (`/org/skiff/skiff1/job/<n>`) for long work such as imports.

use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::sync::watch;
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
    async fn inspect(&self) -> Result<String, SkiffError> {
        let v = self.ctx.daemon.inspect_image(&self.id)?;
        serde_json::to_string_pretty(&v).map_err(|e| SkiffError::Failed(e.to_string()))
    }

    /// The image's history (its config's, newest first) as a JSON array of objects
    /// with Created, CreatedBy, Comment, EmptyLayer.
    async fn history(&self) -> Result<String, SkiffError> {
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
    /// Its progress (see `super::job`).
    state: Arc<super::job::JobState>,
}

impl JobObject {
    /// A job object; `state` carries its progress.
    pub(crate) fn new(
        id: u32,
        typ: &str,
        reference: &str,
        done: watch::Receiver<JobOutcome>,
        state: Arc<super::job::JobState>,
    ) -> JobObject {
        JobObject {
            id,
            typ: typ.to_string(),
            reference: reference.to_string(),
            done,
            state,
        }
    }
}

/// Long-running work: an import, load or pull.
#[interface(name = "org.skiff.skiff1.Job")]
impl JobObject {
    /// Waits for the end: ("done", image id), ("failed", message) or ("cancelled",
    /// "cancelled").
    #[zbus(out_args("result", "image_id"))]
    async fn wait(&self) -> Result<(String, String), SkiffError> {
        let mut rx = self.done.clone();
        let out = rx
            .wait_for(|o| o.is_some())
            .await
            .map_err(|_| SkiffError::Failed("the job vanished".into()))?;
        Ok(out.clone().unwrap_or_default())
    }

    /// Cancels the job: it ends as "cancelled" and leaves no image. Refused
    /// (`org.skiff.Error.Cancelled`) once the job records its image, or after its end.
    async fn cancel(&self) -> Result<(), SkiffError> {
        if self.done.borrow().is_some() {
            return Err(SkiffError::Cancelled("the job has ended".into()));
        }
        self.state.cancel()
    }

    /// The job id.
    #[zbus(property(emits_changed_signal = "const"))]
    fn id(&self) -> u32 {
        self.id
    }

    /// "import", "load" or "pull".
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

    // ---- Progress (see super::job). Emitted at most 4 times a second while the job
    // runs, and once more at its end. ----

    /// starting (a pull resolving its manifest), downloading (pull), reading (the input
    /// of a load or import), extracting, committing, done. A failed job stays in the
    /// phase it failed in.
    #[zbus(property)]
    fn phase(&self) -> String {
        self.state.progress.totals().phase.as_str().to_string()
    }

    /// How far the current phase is, in [0, 1]; -1 while unknown.
    #[zbus(property)]
    fn progress(&self) -> f64 {
        self.state.progress.totals().fraction
    }

    /// Bytes downloaded (pull), read from the input (load, import; a build while it
    /// reads its context), or copied by COPY/ADD (a build running its steps) so far.
    #[zbus(property)]
    fn bytes_done(&self) -> u64 {
        self.state.progress.totals().done
    }

    /// Bytes to download (blobs the store lacks) or the input's size; 0 while unknown
    /// (an input read from a pipe, until it ends). A build running its steps: the bytes
    /// of files its COPY/ADD steps started so far copy.
    #[zbus(property)]
    fn bytes_total(&self) -> u64 {
        self.state.progress.totals().total
    }

    /// Blobs not downloaded because the store had them.
    #[zbus(property)]
    fn blobs_skipped(&self) -> u32 {
        u32::try_from(self.state.progress.totals().skipped).unwrap_or(u32::MAX)
    }

    /// The manifest digest of a pulled image, once known ("" before and for other jobs).
    #[zbus(property)]
    fn digest(&self) -> String {
        self.state.digest()
    }

    /// A build's steps finished (built or found in the cache); 0 for other jobs.
    #[zbus(property)]
    fn steps_done(&self) -> u32 {
        self.state.progress.steps().done
    }

    /// A build's steps in all (the stages' instructions up to the target); 0 for other
    /// jobs and before the Dockerfile is read.
    #[zbus(property)]
    fn steps_total(&self) -> u32 {
        self.state.progress.steps().total
    }

    /// The step a build runs, as its output shows it (`STEP 3/6: RUN make`); "" before
    /// the first and for other jobs.
    #[zbus(property)]
    fn step(&self) -> String {
        self.state.progress.steps().current
    }

    /// Warnings for the user so far (e.g. device nodes skipped in a layer), in order.
    #[zbus(property)]
    fn warnings(&self) -> Vec<String> {
        self.state.progress.warnings()
    }

    /// One blob's progress: digest, status, bytes done, bytes total. Download statuses
    /// (pull): waiting, downloading, skipped (the store had it), done. Extraction
    /// statuses (every job, layers only; bytes are the compressed blob's, as consumed):
    /// waiting, extracting, extracted, present (extracted before).
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
    let state = Arc::new(super::job::JobState::default());
    let progress = state.progress.clone();
    let work: super::job::JobWork = Box::pin(async move {
        daemon
            .import_image(fd, &r, changes, progress)
            .await
            .map(|i| vec![i])
    });
    let spec = super::job::JobSpec {
        typ: "import",
        reference,
        wait,
        state,
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
