//! Jobs (import, load, pull, push): long work behind a Job object (`super::image::JobObject`).
//! Progress is published as `Phase`/`Progress`/`BytesDone`/`BytesTotal`/`BlobsSkipped`
//! (and a build's `StepsDone`/`StepsTotal`/`Step`) property changes and per-blob `LayerProgress` signals, at most 4 times a second.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectServer, OwnedObjectPath};

use super::image::{register_image, JobObject};
use super::manager::{Ctx, Manager};
use super::{job_path, SkiffError};
use crate::daemon::pull::PullRequest;
use crate::image::progress::{LayerProgress, Phase, Progress, Steps};
use crate::image::ImageRecord;

/// Seconds a finished job's object stays, so that `Wait()` and property reads right
/// after the end work.
const JOB_LINGER_SECS: u64 = 60;

/// How often progress is published (4 Hz).
const TICK: Duration = Duration::from_millis(250);

/// The state of one job shared with its Job object.
#[derive(Debug, Default)]
pub struct JobState {
    /// Filled by the backend as the work goes.
    pub progress: Arc<Progress>,
    digest: Mutex<String>,
    cancel: tokio::sync::Notify,
}

impl JobState {
    /// Cancels the job (`Job.Cancel`): refused once it records its image.
    pub fn cancel(&self) -> Result<(), SkiffError> {
        match self.progress.cancel() {
            Ok(()) => {
                self.cancel.notify_one();
                Ok(())
            }
            Err(Phase::Done) => Err(SkiffError::Cancelled("the job has ended".into())),
            Err(_) => Err(SkiffError::Cancelled(
                "too late: the job is recording its image".into(),
            )),
        }
    }

    /// The manifest digest, once the pull is done.
    pub fn digest(&self) -> String {
        self.digest
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_digest(&self, d: &str) {
        *self.digest.lock().unwrap_or_else(PoisonError::into_inner) = d.to_string();
    }
}

/// Long work a job runs: the images it made, or the backend's error.
pub type JobWork = std::pin::Pin<
    Box<dyn std::future::Future<Output = Result<Vec<ImageRecord>, crate::daemon::Error>> + Send>,
>;

/// What a job is, besides its work.
pub struct JobSpec {
    /// `import`, `load` or `pull`.
    pub typ: &'static str,
    /// The reference it works on (may be empty).
    pub reference: String,
    /// Return only when the job ended (its error as a D-Bus error).
    pub wait: bool,
    /// Its progress, published while the job runs.
    pub state: Arc<JobState>,
}

/// Starts a job doing `work`: a Job object, `JobNew`, the work, `JobRemoved`; the object
/// lingers [`JOB_LINGER_SECS`] after the end. A job that made several images reports
/// their ids comma-separated in `Wait()`.
pub async fn start_job(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    spec: JobSpec,
    work: JobWork,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let id = ctx.jobs.next_id();
    let p = job_path(id);
    let op = OwnedObjectPath::try_from(p.clone()).map_err(SkiffError::ZBus)?;
    let (tx, rx) = watch::channel(None);
    let job = JobObject::new(
        id,
        spec.typ,
        &spec.reference,
        rx.clone(),
        spec.state.clone(),
    );
    server.at(p.as_str(), job).await?;
    let emitter = SignalEmitter::new(conn, super::MANAGER_PATH)?.into_owned();
    Manager::job_new(&emitter, id, op.as_ref()).await?;
    tokio::spawn(publish(server.clone(), p.clone(), spec.state.clone(), rx));
    let (ctx2, conn2, server2, op2) = (ctx.clone(), conn.clone(), server.clone(), op.clone());
    let state = spec.state;
    let work = async move {
        // A cancel drops the work: its downloads and unpack helper stop with it, and
        // reads of its input fail (see `Progress::cancel`).
        let result = tokio::select! {
            r = work => r,
            _ = state.cancel.notified() => Err(crate::daemon::Error::Cancelled),
        };
        let outcome = match &result {
            Ok(imgs) => {
                state.progress.set_phase(Phase::Done);
                for img in imgs {
                    register_image(&ctx2, &server2, &conn2, &img.id).await;
                }
                let ids: Vec<&str> = imgs.iter().map(|i| i.id.as_str()).collect();
                ("done".to_string(), ids.join(","))
            }
            Err(crate::daemon::Error::Cancelled) => {
                tracing::info!("job {id} cancelled");
                ("cancelled".to_string(), "cancelled".to_string())
            }
            Err(e) => ("failed".to_string(), e.to_string()),
        };
        // A last publication, so that watchers see the final counts.
        publish_once(&server2, op2.as_str(), &state, &mut Published::default()).await;
        let _ = Manager::job_removed(&emitter, id, op2.as_ref(), &outcome.0).await;
        tx.send_replace(Some(outcome));
        let path = op2.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(JOB_LINGER_SECS)).await;
            let _ = server2.remove::<JobObject, _>(path.as_str()).await;
        });
        result
    };
    if spec.wait {
        work.await?;
    } else {
        tokio::spawn(work);
    }
    Ok((id, op))
}

/// Starts a pull job; with `wait`, returns when it ended (its error as a D-Bus error).
pub async fn start_pull(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    req: PullRequest,
    wait: bool,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let state = Arc::new(JobState::default());
    let spec = JobSpec {
        typ: "pull",
        reference: req.reference.clone(),
        wait,
        state: state.clone(),
    };
    let daemon = ctx.daemon.clone();
    let work: JobWork = Box::pin(async move {
        let out = daemon.pull_image(&req, state.progress.clone()).await?;
        state.set_digest(&out.manifest_digest);
        Ok(vec![out.image])
    });
    start_job(ctx, conn, server, spec, work).await
}

/// Starts a push job; with `wait`, returns when it ended (its error as a D-Bus error).
/// It ends as ("done", image id); the Job's `Digest` is the manifest pushed.
pub async fn start_push(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    req: crate::daemon::push::PushRequest,
    wait: bool,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let state = Arc::new(JobState::default());
    let spec = JobSpec {
        typ: "push",
        reference: if req.destination.is_empty() {
            req.image.clone()
        } else {
            req.destination.clone()
        },
        wait,
        state: state.clone(),
    };
    let daemon = ctx.daemon.clone();
    let work: JobWork = Box::pin(async move {
        let out = daemon.push_image(&req, state.progress.clone()).await?;
        state.set_digest(&out.digest);
        Ok(vec![out.image])
    });
    start_job(ctx, conn, server, spec, work).await
}

/// Publishes progress every [`TICK`] until the job ends.
async fn publish(
    server: ObjectServer,
    path: String,
    state: Arc<JobState>,
    mut done: watch::Receiver<super::image::JobOutcome>,
) {
    let mut last = Published::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = done.wait_for(|o| o.is_some()) => return,
        }
        publish_once(&server, &path, &state, &mut last).await;
    }
}

/// What was published last.
#[derive(Default, PartialEq)]
struct Published {
    blobs: Vec<LayerProgress>,
    totals: Option<(Phase, u64, u64)>,
    steps: Steps,
    warnings: usize,
}

/// Emits property changes and a `LayerProgress` signal for each blob that changed
/// since `last`.
async fn publish_once(server: &ObjectServer, path: &str, state: &JobState, last: &mut Published) {
    let t = state.progress.totals();
    let now = Published {
        blobs: state.progress.snapshot(),
        totals: Some((t.phase, t.done, t.total)),
        steps: state.progress.steps(),
        warnings: state.progress.warnings().len(),
    };
    if now == *last {
        return;
    }
    let Ok(iface) = server.interface::<_, JobObject>(path).await else {
        return;
    };
    let emitter = iface.signal_emitter();
    for (i, b) in now.blobs.iter().enumerate() {
        if last.blobs.get(i) != Some(b) {
            let _ =
                JobObject::layer_progress(emitter, &b.digest, b.status.as_str(), b.done, b.total)
                    .await;
        }
    }
    let job = iface.get().await;
    let _ = job.phase_changed(emitter).await;
    let _ = job.progress_changed(emitter).await;
    let _ = job.bytes_done_changed(emitter).await;
    let _ = job.bytes_total_changed(emitter).await;
    let _ = job.blobs_skipped_changed(emitter).await;
    let _ = job.digest_changed(emitter).await;
    if now.steps != last.steps {
        let _ = job.steps_done_changed(emitter).await;
        let _ = job.steps_total_changed(emitter).await;
        let _ = job.step_changed(emitter).await;
    }
    if now.warnings != last.warnings {
        let _ = job.warnings_changed(emitter).await;
    }
    *last = now;
}
