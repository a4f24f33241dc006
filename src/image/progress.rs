//! Progress of one image job (pull, push, load, import), shared between the workers and
//! whoever reports it (the D-Bus Job object polls [`Progress::snapshot`] and
//! [`Progress::totals`]).
//!
//! A job goes through phases: a pull resolves its manifest (`starting`) and downloads
//! blobs (`downloading`); a load or import reads its input stream (`reading`); all three
//! then extract the layers the store lacks (`extracting`), record the image
//! (`committing`) and end (`done`). A push uploads blobs (`uploading`) and ends. Bytes
//! are counted twice over, and reported apart: the transfer (downloaded, uploaded or
//! read), and the extraction of each layer (compressed bytes of its blob consumed by the
//! unpack helper).

use std::io::{self, Read};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Not started, or resolving a pull's manifest.
    #[default]
    Starting,
    /// Downloading blobs (pull).
    Downloading,
    /// Uploading blobs (push).
    Uploading,
    /// Reading the input stream (load, import).
    Reading,
    /// Extracting layers.
    Extracting,
    /// Running a build's steps (`building`).
    Building,
    /// Recording the image.
    Committing,
    /// Ended well.
    Done,
}

impl Phase {
    /// `starting`, `downloading`, `uploading`, `reading`, `extracting`, `building`,
    /// `committing` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Starting => "starting",
            Phase::Downloading => "downloading",
            Phase::Uploading => "uploading",
            Phase::Reading => "reading",
            Phase::Extracting => "extracting",
            Phase::Building => "building",
            Phase::Committing => "committing",
            Phase::Done => "done",
        }
    }
}

/// Where one blob (config or layer) of a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// Queued, not started (download or extraction).
    Waiting,
    /// Bytes are arriving.
    Downloading,
    /// Already in the store: not downloaded.
    Skipped,
    /// Downloaded and verified.
    Done,
    /// Being extracted.
    Extracting,
    /// Extracted and its diff id verified.
    Extracted,
    /// The layer was extracted before (another image has it): nothing to do.
    Present,
    /// Bytes are being sent to the registry (push).
    Uploading,
    /// The registry has the blob already: not uploaded (push).
    Exists,
    /// Uploaded, and accepted by the registry under its digest (push).
    Pushed,
    /// Mounted from another repository of the registry: not uploaded (push).
    Mounted,
}

impl LayerStatus {
    /// `waiting`, `downloading`, `skipped`, `done`, `extracting`, `extracted`,
    /// `present`, `uploading`, `exists`, `pushed` or `mounted`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerStatus::Waiting => "waiting",
            LayerStatus::Downloading => "downloading",
            LayerStatus::Skipped => "skipped",
            LayerStatus::Done => "done",
            LayerStatus::Extracting => "extracting",
            LayerStatus::Extracted => "extracted",
            LayerStatus::Present => "present",
            LayerStatus::Uploading => "uploading",
            LayerStatus::Exists => "exists",
            LayerStatus::Pushed => "pushed",
            LayerStatus::Mounted => "mounted",
        }
    }
}

/// One blob of a job, in its download or its extraction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// `sha256:<hex>` of the blob.
    pub digest: String,
    /// Its size.
    pub total: u64,
    /// Bytes downloaded, or consumed by the extraction, so far.
    pub done: u64,
    /// Where it stands.
    pub status: LayerStatus,
}

#[derive(Debug, Default)]
struct State {
    phase: Phase,
    /// A pull's downloads; `None` before the manifest is resolved and for other jobs.
    blobs: Option<Vec<LayerProgress>>,
    /// The extraction, once planned.
    layers: Vec<LayerProgress>,
    /// Size of the input stream of a load or import, when known (a regular file).
    input_total: Option<u64>,
    /// A client cancelled the job.
    cancelled: bool,
}

/// The progress of one job.
#[derive(Debug, Default)]
pub struct Progress {
    state: Mutex<State>,
    /// Bytes read from the input stream (load, import).
    read: AtomicU64,
    /// Warnings for the client (e.g. device nodes skipped in a layer).
    warnings: Mutex<Vec<String>>,
    /// A build's steps, once it runs them.
    steps: Mutex<Option<Steps>>,
    /// Bytes of files a build's COPY/ADD steps have written into their layers.
    copied: AtomicU64,
    /// Bytes of files the COPY/ADD steps started so far copy.
    copy_total: AtomicU64,
}

/// Where a build stands in its Dockerfile.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Steps {
    /// Steps finished (built or found in the cache).
    pub done: u32,
    /// Steps of the build (the instructions of the stages up to the target).
    pub total: u32,
    /// The step running (`STEP n/m: INSTRUCTION` as written); empty before the first.
    pub current: String,
}

impl Progress {
    /// Enters [`Phase::Building`] of a build of `total` steps.
    pub fn start_steps(&self, total: u32) {
        *self.steps.lock().unwrap_or_else(PoisonError::into_inner) = Some(Steps {
            total,
            ..Steps::default()
        });
        self.lock().phase = Phase::Building;
    }

    /// Step `n` (1-based) starts: `text` is its line.
    pub fn begin_step(&self, n: u32, text: &str) {
        if let Some(s) = self
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            s.done = n.saturating_sub(1);
            s.current = text.to_string();
        }
    }

    /// The current step ended well.
    pub fn end_step(&self) {
        if let Some(s) = self
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_mut()
        {
            s.done = (s.done + 1).min(s.total);
        }
    }

    /// The build's steps (default for other jobs).
    pub fn steps(&self) -> Steps {
        self.steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .unwrap_or_default()
    }

    /// A COPY/ADD step will copy `n` bytes of files.
    pub fn add_copy_total(&self, n: u64) {
        self.copy_total.fetch_add(n, Ordering::Relaxed);
    }

    /// A COPY/ADD step copied `n` more bytes; fails once the job is cancelled, which
    /// stops the copy.
    pub fn copied(&self, n: u64) -> io::Result<()> {
        if self.is_cancelled() {
            return Err(io::Error::other("the job was cancelled"));
        }
        self.copied.fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

impl Progress {
    /// Adds a warning for the client (the Job's `Warnings`).
    pub fn warn(&self, msg: impl Into<String>) {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(msg.into());
    }

    /// The warnings so far.
    pub fn warnings(&self) -> Vec<String> {
        self.warnings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }
}

/// Totals over a job.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    /// The phase.
    pub phase: Phase,
    /// Bytes transferred: downloaded (pull) or read from the input (load, import).
    pub done: u64,
    /// Bytes to transfer: blobs not already present, or the input's size; 0 while
    /// unknown (a pipe still being read).
    pub total: u64,
    /// Blobs skipped because the store had them.
    pub skipped: usize,
    /// Blobs downloaded (or being downloaded).
    pub fetched: usize,
    /// How far the current phase is, in [0, 1]; -1 while unknown.
    pub fraction: f64,
}

fn new_entry(digest: &str, total: u64, status: LayerStatus) -> LayerProgress {
    LayerProgress {
        digest: digest.to_string(),
        total,
        done: 0,
        status,
    }
}

fn ratio(done: u64, total: u64) -> f64 {
    if total == 0 {
        1.0
    } else {
        done.min(total) as f64 / total as f64
    }
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Enters `phase`.
    pub fn set_phase(&self, phase: Phase) {
        self.lock().phase = phase;
    }

    /// Cancels the job unless it is already recording its image (or ended): then the
    /// phase it is in is returned. The work stops at its next cancellation point
    /// ([`Progress::enter_commit`], reads through [`CountingReader`]).
    pub fn cancel(&self) -> Result<(), Phase> {
        let mut s = self.lock();
        match s.phase {
            Phase::Committing | Phase::Done => Err(s.phase),
            _ => {
                s.cancelled = true;
                Ok(())
            }
        }
    }

    /// Whether a client cancelled the job.
    pub fn is_cancelled(&self) -> bool {
        self.lock().cancelled
    }

    /// Enters [`Phase::Committing`] unless the job was cancelled (false then): past this
    /// point a job can no longer be cancelled, so an image is recorded only by a job
    /// that will report success.
    pub fn enter_commit(&self) -> bool {
        let mut s = self.lock();
        if s.cancelled {
            return false;
        }
        s.phase = Phase::Committing;
        true
    }

    /// Declares a pull's blobs, `(digest, size, already present)`, and enters
    /// [`Phase::Downloading`].
    pub fn set_blobs(&self, blobs: &[(String, u64, bool)]) {
        let mut s = self.lock();
        s.phase = Phase::Downloading;
        s.blobs = Some(
            blobs
                .iter()
                .map(|(d, size, present)| {
                    let status = if *present {
                        LayerStatus::Skipped
                    } else {
                        LayerStatus::Waiting
                    };
                    new_entry(d, *size, status)
                })
                .collect(),
        );
    }

    /// Records `n` more downloaded bytes of blob `idx`.
    pub fn advance(&self, idx: usize, n: u64) {
        if let Some(b) = self.lock().blobs.as_mut().and_then(|v| v.get_mut(idx)) {
            b.done += n;
            b.status = LayerStatus::Downloading;
        }
    }

    /// Declares a push's blobs, `(digest, size)`, all waiting, and enters
    /// [`Phase::Uploading`].
    pub fn set_push_blobs(&self, blobs: &[(String, u64)]) {
        let mut s = self.lock();
        s.phase = Phase::Uploading;
        s.blobs = Some(
            blobs
                .iter()
                .map(|(d, size)| new_entry(d, *size, LayerStatus::Waiting))
                .collect(),
        );
    }

    /// Records `n` more uploaded bytes of blob `idx`.
    pub fn upload(&self, idx: usize, n: u64) {
        if let Some(b) = self.lock().blobs.as_mut().and_then(|v| v.get_mut(idx)) {
            b.done += n;
            b.status = LayerStatus::Uploading;
        }
    }

    /// Sets the download status of blob `idx`.
    pub fn set_status(&self, idx: usize, status: LayerStatus) {
        if let Some(b) = self.lock().blobs.as_mut().and_then(|v| v.get_mut(idx)) {
            b.status = status;
        }
    }

    /// Forgets bytes counted for blob `idx` (its download restarts).
    pub fn reset(&self, idx: usize) {
        if let Some(b) = self.lock().blobs.as_mut().and_then(|v| v.get_mut(idx)) {
            b.done = 0;
        }
    }

    /// Enters [`Phase::Reading`] of an input of `total` bytes (`None`: unknown).
    pub fn start_reading(&self, total: Option<u64>) {
        let mut s = self.lock();
        s.phase = Phase::Reading;
        s.input_total = total;
    }

    /// Records `n` more bytes read from the input.
    pub fn read(&self, n: u64) {
        self.read.fetch_add(n, Ordering::Relaxed);
    }

    /// Declares the layers of an image, `(blob digest, blob size, already extracted)`,
    /// and enters [`Phase::Extracting`]. Layers declared by an earlier image of the same
    /// job (a load of several images) stay; returns the index of each given layer.
    pub fn plan_extraction(&self, layers: &[(String, u64, bool)]) -> Vec<usize> {
        let mut s = self.lock();
        s.phase = Phase::Extracting;
        // The input was read whole: its size is now known.
        if s.blobs.is_none() && s.input_total.is_none() {
            s.input_total = Some(self.read.load(Ordering::Relaxed));
        }
        let mut out = Vec::with_capacity(layers.len());
        for (digest, size, present) in layers {
            if let Some(i) = s.layers.iter().position(|l| &l.digest == digest) {
                out.push(i);
                continue;
            }
            let status = if *present {
                LayerStatus::Present
            } else {
                LayerStatus::Waiting
            };
            s.layers.push(new_entry(digest, *size, status));
            out.push(s.layers.len() - 1);
        }
        out
    }

    /// Records that the extraction of layer `idx` has consumed `pos` bytes of its blob.
    pub fn extract_position(&self, idx: usize, pos: u64) {
        if let Some(l) = self.lock().layers.get_mut(idx) {
            if l.status == LayerStatus::Waiting || l.status == LayerStatus::Extracting {
                l.status = LayerStatus::Extracting;
                l.done = pos.min(l.total);
            }
        }
    }

    /// Marks layer `idx` extracted (or found extracted meanwhile).
    pub fn extract_done(&self, idx: usize) {
        if let Some(l) = self.lock().layers.get_mut(idx) {
            l.done = l.total;
            l.status = LayerStatus::Extracted;
        }
    }

    /// The blobs' downloads in manifest order (config first), then the layers'
    /// extractions; empty before anything is known.
    pub fn snapshot(&self) -> Vec<LayerProgress> {
        let s = self.lock();
        let mut out = s.blobs.clone().unwrap_or_default();
        out.extend(s.layers.iter().cloned());
        out
    }

    /// Sums over the job.
    pub fn totals(&self) -> Totals {
        let s = self.lock();
        let mut t = Totals {
            phase: s.phase,
            ..Totals::default()
        };
        let steps = self
            .steps
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        match &s.blobs {
            // A build: its transfer is what COPY/ADD copy.
            _ if steps.is_some() => {
                t.done = self.copied.load(Ordering::Relaxed);
                t.total = self.copy_total.load(Ordering::Relaxed);
            }
            Some(blobs) => {
                for b in blobs {
                    if matches!(
                        b.status,
                        LayerStatus::Skipped | LayerStatus::Exists | LayerStatus::Mounted
                    ) {
                        t.skipped += 1;
                    } else {
                        t.fetched += 1;
                        t.total += b.total;
                        t.done += b.done.min(b.total);
                    }
                }
            }
            None => {
                t.done = self.read.load(Ordering::Relaxed);
                t.total = s.input_total.unwrap_or(0);
            }
        }
        t.fraction = match s.phase {
            Phase::Starting => -1.0,
            Phase::Downloading | Phase::Uploading => ratio(t.done, t.total),
            Phase::Reading => match s.input_total {
                Some(total) => ratio(t.done, total),
                None => -1.0,
            },
            Phase::Extracting => {
                let (mut done, mut total) = (0, 0);
                for l in s.layers.iter().filter(|l| l.status != LayerStatus::Present) {
                    done += l.done.min(l.total);
                    total += l.total;
                }
                ratio(done, total)
            }
            Phase::Building => match &steps {
                Some(st) if st.total > 0 => f64::from(st.done) / f64::from(st.total),
                _ => -1.0,
            },
            Phase::Committing | Phase::Done => 1.0,
        };
        t
    }
}

/// A reader that counts what it reads into a job's [`Progress`] (the input of a load
/// or import).
pub struct CountingReader<R> {
    inner: R,
    progress: Arc<Progress>,
}

impl<R> CountingReader<R> {
    /// Counts reads of `inner` into `progress`.
    pub fn new(inner: R, progress: Arc<Progress>) -> CountingReader<R> {
        CountingReader { inner, progress }
    }
}

impl<R: Read> Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.progress.is_cancelled() {
            return Err(io::Error::other("the job was cancelled"));
        }
        let n = self.inner.read(buf)?;
        self.progress.read(n as u64);
        Ok(n)
    }
}

#[cfg(test)]
#[path = "progress_tests.rs"]
mod tests;
