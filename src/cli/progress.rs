//! Following an image job (pull, push, load, import) to its end with progress bars
//! (indicatif, on stderr when it is a terminal): one bar for the input stream of a load
//! or import, one per blob for its download and then its extraction. Ctrl-C cancels
//! the job.
//!
//! The watcher subscribes to the job signals *before* the call that starts the job, so
//! that nothing is missed, and keeps only the signals of the job it follows. It listens
//! for Ctrl-C from then on too, through one listener for its whole life: one made anew
//! per wait would lose a SIGINT delivered between two waits (tokio hands a signal only
//! to the listeners that exist when it arrives), and the CLI would wait for a job that
//! nobody cancels.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::time::Duration;

use futures_util::StreamExt;
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use zbus::{Connection, MatchRule, Message, MessageStream, OwnedObjectPath, OwnedVariant};

use super::connect::fail;
use super::Failure;
use crate::dbus::proxy::JobProxy;

const JOB_INTERFACE: &str = "org.skiff.skiff1.Job";

/// What a job's end looked like to its watcher.
#[derive(Debug)]
pub struct Followed {
    /// "done" or "failed".
    pub result: String,
    /// The image ids (comma-separated) or the error message.
    pub detail: String,
    /// Blobs downloaded (pull).
    pub fetched: usize,
    /// Each blob's last status (`digest`, `status`), in the order first seen.
    pub blobs: Vec<(String, String)>,
}

/// Signals of jobs, subscribed before the job starts.
pub struct JobWatcher {
    layers: MessageStream,
    props: MessageStream,
    interrupt: tokio::signal::unix::Signal,
}

impl JobWatcher {
    /// Subscribes to `LayerProgress` and the Job properties' changes.
    pub async fn subscribe(conn: &Connection) -> Result<JobWatcher, Failure> {
        let layers = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(JOB_INTERFACE)
            .member("LayerProgress")
            .build()
            .map_err(|e| fail(e, 1))?;
        let props = MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface("org.freedesktop.DBus.Properties")
            .member("PropertiesChanged")
            .add_arg(JOB_INTERFACE)
            .build()
            .map_err(|e| fail(e, 1))?;
        let interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .map_err(|e| Failure::msg(format!("cannot handle SIGINT: {e}")))?;
        let queue = NonZeroUsize::new(256);
        Ok(JobWatcher {
            layers: MessageStream::for_match_rule(layers, conn, queue)
                .await
                .map_err(|e| fail(e, 1))?,
            props: MessageStream::for_match_rule(props, conn, queue)
                .await
                .map_err(|e| fail(e, 1))?,
            interrupt,
        })
    }

    /// Follows the job at `path` until it ends, with bars when `show`. `input` names the
    /// input stream of a load or import ("archive", "tarball"), shown as its own bar.
    /// Ctrl-C cancels the job (`Job.Cancel`) and waits for its end; a cancelled job is
    /// a failure with exit code 130.
    pub async fn follow(
        mut self,
        conn: &Connection,
        path: &OwnedObjectPath,
        input: Option<&str>,
        show: bool,
    ) -> Result<Followed, Failure> {
        let job = job_proxy(conn, path).await?;
        let mut bars = Bars::new(input, show);
        let wait = job.wait();
        tokio::pin!(wait);
        let mut interrupted = false;
        let (result, detail) = loop {
            tokio::select! {
                r = &mut wait => break r.map_err(|e| fail(e, 1))?,
                Some(Ok(msg)) = self.layers.next() => bars.layer_signal(&msg, path),
                Some(Ok(msg)) = self.props.next() => bars.props_signal(&msg, path),
                Some(()) = self.interrupt.recv(), if !interrupted => {
                    interrupted = true;
                    // Too late (the image is being recorded) is not an error: the job
                    // then ends normally.
                    if let Err(e) = job.cancel().await {
                        let _ = bars.multi.println(format!("not cancelled: {}", fail(e, 1).message));
                    }
                }
            }
        };
        // Signals already queued belong to this job's end: drain them without waiting.
        let quiet = Duration::from_millis(50);
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, self.layers.next()).await {
            bars.layer_signal(&msg, path);
        }
        while let Ok(Some(Ok(msg))) = tokio::time::timeout(quiet, self.props.next()).await {
            bars.props_signal(&msg, path);
        }
        bars.finish(result == "done");
        for w in job.warnings().await.unwrap_or_default() {
            super::output::errln!("WARNING: {w}");
        }
        if result == "cancelled" {
            return Err(Failure {
                message: "cancelled: no image was recorded".into(),
                code: 130,
            });
        }
        Ok(Followed {
            result,
            detail,
            fetched: bars.fetched(),
            blobs: bars
                .blobs
                .iter()
                .map(|b| (b.digest.clone(), b.status.clone()))
                .collect(),
        })
    }
}

/// A proxy of the job at `path` that reads properties afresh.
pub async fn job_proxy<'a>(
    conn: &'a Connection,
    path: &'a OwnedObjectPath,
) -> Result<JobProxy<'a>, Failure> {
    JobProxy::builder(conn)
        .path(path.clone())
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| fail(e, 1))
}

fn is_from(msg: &Message, path: &OwnedObjectPath) -> bool {
    msg.header().path().map(|p| p.as_str()) == Some(path.as_str())
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

const BAR: &str = "{prefix:25} {wide_bar} {bytes}/{total_bytes} {msg}";
const SPINNER: &str = "{prefix:25} {spinner} {bytes} {msg}";

/// One blob's bar.
struct BlobBar {
    digest: String,
    bar: ProgressBar,
    status: String,
    downloaded: bool,
}

/// The bars of one job.
struct Bars {
    multi: MultiProgress,
    input: Option<(ProgressBar, bool)>,
    input_total: u64,
    blobs: Vec<BlobBar>,
}

impl Bars {
    fn new(input: Option<&str>, show: bool) -> Bars {
        let target = if show {
            ProgressDrawTarget::stderr_with_hz(4)
        } else {
            ProgressDrawTarget::hidden()
        };
        let multi = MultiProgress::with_draw_target(target);
        let input = input.map(|what| {
            let bar = multi.add(ProgressBar::new_spinner());
            bar.set_style(style(SPINNER));
            bar.set_prefix(format!("Reading {what}"));
            (bar, false)
        });
        Bars {
            multi,
            input,
            input_total: 0,
            blobs: Vec::new(),
        }
    }

    fn layer_signal(&mut self, msg: &Message, path: &OwnedObjectPath) {
        if !is_from(msg, path) {
            return;
        }
        if let Ok((digest, status, done, total)) =
            msg.body().deserialize::<(String, String, u64, u64)>()
        {
            self.update(&digest, &status, done, total);
        }
    }

    fn props_signal(&mut self, msg: &Message, path: &OwnedObjectPath) {
        if !is_from(msg, path) {
            return;
        }
        let Ok((_, changed, _)) = msg
            .body()
            .deserialize::<(String, HashMap<String, OwnedVariant>, Vec<String>)>()
        else {
            return;
        };
        let Some((bar, finished)) = &mut self.input else {
            return;
        };
        for (name, value) in changed {
            match name.as_str() {
                "BytesTotal" => {
                    if let Ok(total) = u64::try_from(value) {
                        if total > 0 && self.input_total == 0 {
                            bar.set_style(style(BAR));
                        }
                        self.input_total = total;
                        bar.set_length(total);
                    }
                }
                "BytesDone" => {
                    if let Ok(done) = u64::try_from(value) {
                        bar.set_position(done);
                    }
                }
                "Phase" => {
                    let phase = String::try_from(value).unwrap_or_default();
                    if !*finished && !matches!(phase.as_str(), "starting" | "reading") {
                        bar.finish_with_message("done");
                        *finished = true;
                    }
                }
                _ => {}
            }
        }
    }

    fn update(&mut self, digest: &str, status: &str, done: u64, total: u64) {
        let short = digest.strip_prefix("sha256:").unwrap_or(digest);
        let short = short[..short.len().min(12)].to_string();
        let idx = match self.blobs.iter().position(|b| b.digest == digest) {
            Some(i) => i,
            None => {
                let bar = self.multi.add(ProgressBar::new(total));
                bar.set_style(style(BAR));
                self.blobs.push(BlobBar {
                    digest: digest.to_string(),
                    bar,
                    status: String::new(),
                    downloaded: false,
                });
                self.blobs.len() - 1
            }
        };
        let b = &mut self.blobs[idx];
        let (prefix, message) = match status {
            "waiting" if b.status.is_empty() => ("Copying blob", "waiting"),
            "downloading" => ("Copying blob", ""),
            "skipped" => ("Copying blob", "already present"),
            "done" => ("Copying blob", "downloaded"),
            "extracting" => ("Extracting  ", ""),
            "extracted" => ("Extracting  ", "done"),
            "present" => ("Extracting  ", "already extracted"),
            "uploading" => ("Pushing blob", ""),
            "exists" => ("Pushing blob", "Layer already exists"),
            "pushed" => ("Pushing blob", "pushed"),
            "mounted" => ("Pushing blob", "mounted from another repository"),
            "waiting" => ("Extracting  ", "waiting"),
            _ => ("Blob        ", ""),
        };
        if matches!(status, "downloading" | "done") {
            b.downloaded = true;
        }
        b.bar.set_prefix(format!("{prefix} {short}"));
        b.bar.set_length(total);
        b.bar.set_position(done.min(total));
        b.bar.set_message(message);
        b.status = status.to_string();
    }

    fn fetched(&self) -> usize {
        self.blobs.iter().filter(|b| b.downloaded).count()
    }

    /// Finishes every bar: as done when the job succeeded, else where it stopped.
    fn finish(&self, ok: bool) {
        let bars = self.input.iter().map(|(b, _)| b);
        for bar in bars.chain(self.blobs.iter().map(|b| &b.bar)) {
            if bar.is_finished() {
                continue;
            }
            if ok {
                if bar.length().unwrap_or(0) == 0 {
                    bar.set_length(bar.position());
                }
                bar.finish();
            } else {
                bar.abandon();
            }
        }
    }
}
