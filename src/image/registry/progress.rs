//! Progress of one pull, shared between the downloaders and whoever reports it (the
//! D-Bus Job object polls [`Progress::snapshot`]).

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Where one blob (config or layer) of a pull stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LayerStatus {
    /// Queued, not started.
    Waiting,
    /// Bytes are arriving.
    Downloading,
    /// Already in the store: not downloaded.
    Skipped,
    /// Downloaded and verified.
    Done,
}

impl LayerStatus {
    /// `waiting`, `downloading`, `skipped` or `done`.
    pub fn as_str(self) -> &'static str {
        match self {
            LayerStatus::Waiting => "waiting",
            LayerStatus::Downloading => "downloading",
            LayerStatus::Skipped => "skipped",
            LayerStatus::Done => "done",
        }
    }
}

/// One blob of a pull.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerProgress {
    /// `sha256:<hex>`.
    pub digest: String,
    /// Its size (from the manifest).
    pub total: u64,
    /// Bytes downloaded so far.
    pub done: u64,
    /// Where it stands.
    pub status: LayerStatus,
}

/// The progress of a pull. Before the manifest is resolved there are no blobs.
#[derive(Debug, Default)]
pub struct Progress {
    blobs: Mutex<Option<Vec<LayerProgress>>>,
}

/// Totals over all blobs of a pull.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Totals {
    /// Bytes downloaded.
    pub done: u64,
    /// Bytes to download (blobs not already present).
    pub total: u64,
    /// Blobs skipped because the store had them.
    pub skipped: usize,
    /// Blobs downloaded (or being downloaded).
    pub fetched: usize,
    /// `done / total` in [0, 1]; -1 while unknown (manifest not resolved yet).
    pub fraction: f64,
}

impl Progress {
    fn lock(&self) -> MutexGuard<'_, Option<Vec<LayerProgress>>> {
        self.blobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Declares the blobs: `(digest, size, already present)`.
    pub fn set_blobs(&self, blobs: &[(String, u64, bool)]) {
        *self.lock() = Some(
            blobs
                .iter()
                .map(|(d, size, present)| LayerProgress {
                    digest: d.clone(),
                    total: *size,
                    done: 0,
                    status: if *present {
                        LayerStatus::Skipped
                    } else {
                        LayerStatus::Waiting
                    },
                })
                .collect(),
        );
    }

    /// Records `n` more bytes of blob `idx`.
    pub fn advance(&self, idx: usize, n: u64) {
        if let Some(b) = self.lock().as_mut().and_then(|v| v.get_mut(idx)) {
            b.done += n;
            b.status = LayerStatus::Downloading;
        }
    }

    /// Sets the status of blob `idx`.
    pub fn set_status(&self, idx: usize, status: LayerStatus) {
        if let Some(b) = self.lock().as_mut().and_then(|v| v.get_mut(idx)) {
            b.status = status;
        }
    }

    /// Forgets bytes counted for blob `idx` (its download restarts).
    pub fn reset(&self, idx: usize) {
        if let Some(b) = self.lock().as_mut().and_then(|v| v.get_mut(idx)) {
            b.done = 0;
        }
    }

    /// The blobs, in manifest order (config first); empty before resolution.
    pub fn snapshot(&self) -> Vec<LayerProgress> {
        self.lock().clone().unwrap_or_default()
    }

    /// Sums over the blobs.
    pub fn totals(&self) -> Totals {
        let guard = self.lock();
        let Some(blobs) = guard.as_ref() else {
            return Totals {
                fraction: -1.0,
                ..Totals::default()
            };
        };
        let mut t = Totals::default();
        for b in blobs {
            if b.status == LayerStatus::Skipped {
                t.skipped += 1;
            } else {
                t.fetched += 1;
                t.total += b.total;
                t.done += b.done.min(b.total);
            }
        }
        t.fraction = if t.total == 0 {
            1.0
        } else {
            t.done as f64 / t.total as f64
        };
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_count_only_what_is_downloaded() {
        let p = Progress::default();
        assert_eq!(p.totals().fraction, -1.0);
        p.set_blobs(&[
            ("sha256:a".into(), 10, true),
            ("sha256:b".into(), 100, false),
            ("sha256:c".into(), 300, false),
        ]);
        p.advance(1, 100);
        p.set_status(1, LayerStatus::Done);
        p.advance(2, 50);
        let t = p.totals();
        assert_eq!((t.done, t.total, t.skipped, t.fetched), (150, 400, 1, 2));
        assert!((t.fraction - 0.375).abs() < 1e-9);
        p.reset(2);
        assert_eq!(p.totals().done, 100);
        let s = p.snapshot();
        assert_eq!(s[0].status, LayerStatus::Skipped);
        assert_eq!(s[2].status, LayerStatus::Downloading);
        p.set_blobs(&[("sha256:a".into(), 10, true)]);
        assert_eq!(p.totals().fraction, 1.0);
    }
}
