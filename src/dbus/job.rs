//! Pull jobs: a Job object (`super::image::JobObject`) whose progress is published as
//! `Progress`/`BytesDone`/`BytesTotal`/`BlobsSkipped` property changes and per-blob
//! `LayerProgress` signals, at most 4 times a second.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::watch;
use zbus::object_server::SignalEmitter;
use zbus::{Connection, ObjectServer, OwnedObjectPath};

use super::image::{register_image, JobObject};
use super::manager::{Ctx, Manager};
use super::{job_path, SkiffError};
use crate::daemon::pull::PullRequest;
use crate::image::registry::{LayerProgress, Progress};

/// Seconds a finished job's object stays, so that `Wait()` and property reads right
/// after the end work.
const JOB_LINGER_SECS: u64 = 60;

/// How often progress is published (4 Hz).
const TICK: Duration = Duration::from_millis(250);

/// The state of one pull job shared with its Job object.
#[derive(Debug, Default)]
pub struct PullJob {
    /// Filled by the downloader.
    pub progress: Arc<Progress>,
    digest: Mutex<String>,
}

impl PullJob {
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

/// Starts a pull job; with `wait`, returns when it ended (its error as a D-Bus error).
pub async fn start_pull(
    ctx: &Ctx,
    conn: &Connection,
    server: &ObjectServer,
    req: PullRequest,
    wait: bool,
) -> Result<(u32, OwnedObjectPath), SkiffError> {
    let id = ctx.jobs.next_id();
    let p = job_path(id);
    let op = OwnedObjectPath::try_from(p.clone()).map_err(SkiffError::ZBus)?;
    let (tx, rx) = watch::channel(None);
    let state = Arc::new(PullJob::default());
    server
        .at(
            p.as_str(),
            JobObject::new(id, "pull", &req.reference, rx.clone(), Some(state.clone())),
        )
        .await?;
    let emitter = SignalEmitter::new(conn, super::MANAGER_PATH)?.into_owned();
    Manager::job_new(&emitter, id, op.as_ref()).await?;
    tokio::spawn(publish(
        server.clone(),
        p.clone(),
        state.clone(),
        rx.clone(),
    ));
    let (ctx2, conn2, server2, op2) = (ctx.clone(), conn.clone(), server.clone(), op.clone());
    let work = async move {
        let result = ctx2.daemon.pull_image(&req, state.progress.clone()).await;
        let outcome = match &result {
            Ok(out) => {
                state.set_digest(&out.manifest_digest);
                register_image(&ctx2, &server2, &conn2, &out.image.id).await;
                ("done".to_string(), out.image.id.clone())
            }
            Err(e) => ("failed".to_string(), e.to_string()),
        };
        // A last publication, so that watchers see the final counts.
        publish_once(&server2, op2.as_str(), &state, &mut Vec::new()).await;
        let _ = Manager::job_removed(&emitter, id, op2.as_ref(), &outcome.0).await;
        tx.send_replace(Some(outcome));
        let path = op2.to_string();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(JOB_LINGER_SECS)).await;
            let _ = server2.remove::<JobObject, _>(path.as_str()).await;
        });
        result
    };
    if wait {
        work.await?;
    } else {
        tokio::spawn(work);
    }
    Ok((id, op))
}

/// Publishes progress every [`TICK`] until the job ends.
async fn publish(
    server: ObjectServer,
    path: String,
    state: Arc<PullJob>,
    mut done: watch::Receiver<super::image::JobOutcome>,
) {
    let mut last: Vec<LayerProgress> = Vec::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = done.wait_for(|o| o.is_some()) => return,
        }
        publish_once(&server, &path, &state, &mut last).await;
    }
}

/// Emits property changes and a `LayerProgress` signal for each blob that changed
/// since `last`.
async fn publish_once(
    server: &ObjectServer,
    path: &str,
    state: &PullJob,
    last: &mut Vec<LayerProgress>,
) {
    let now = state.progress.snapshot();
    if now == *last {
        return;
    }
    let Ok(iface) = server.interface::<_, JobObject>(path).await else {
        return;
    };
    let emitter = iface.signal_emitter();
    for (i, b) in now.iter().enumerate() {
        if last.get(i) != Some(b) {
            let _ =
                JobObject::layer_progress(emitter, &b.digest, b.status.as_str(), b.done, b.total)
                    .await;
        }
    }
    let job = iface.get().await;
    let _ = job.progress_changed(emitter).await;
    let _ = job.bytes_done_changed(emitter).await;
    let _ = job.bytes_total_changed(emitter).await;
    let _ = job.blobs_skipped_changed(emitter).await;
    let _ = job.digest_changed(emitter).await;
    *last = now;
}
