//! Pins: blobs a running job counts on without holding the store's collection lock.
//!
//! A pull decides early which blobs the store already has, then downloads the others,
//! which can take minutes. Rather than hold the collection lock all that time (so that
//! an `rmi` would wait for the download), the pull pins every blob of the image before
//! it checks for their presence, and unpins them once the image is recorded (or the
//! pull failed). Removal never deletes a pinned blob: it stays unreferenced and the
//! collection at the next start frees it if nothing recorded it meanwhile. Both the
//! pinning and each deletion happen under the pins' mutex, so a blob is either deleted
//! before the pull looks for it (and downloaded again) or kept.
//!
//! Pins live in skiffd's memory: only skiffd deletes blobs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The pinned digests of one store, with a count per digest (several jobs can pin
/// the same blob).
#[derive(Debug, Default, Clone)]
pub(crate) struct Pins(Arc<Mutex<HashMap<String, usize>>>);

impl Pins {
    /// The pinned digests, locked: hold the guard while deleting blobs.
    pub(crate) fn lock(&self) -> MutexGuard<'_, HashMap<String, usize>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pins `digests` until the returned guard is dropped.
    pub(crate) fn pin(&self, digests: impl IntoIterator<Item = String>) -> PinGuard {
        let digests: Vec<String> = digests.into_iter().collect();
        let mut map = self.lock();
        for d in &digests {
            *map.entry(d.clone()).or_insert(0) += 1;
        }
        PinGuard {
            pins: self.clone(),
            digests,
        }
    }
}

/// Blobs pinned by one job; unpinned when dropped.
#[derive(Debug)]
pub struct PinGuard {
    pins: Pins,
    digests: Vec<String>,
}

impl PinGuard {
    /// Pins `digest` too (a blob the job learns of later, such as a manifest).
    pub fn add(&mut self, digest: &str) {
        *self.pins.lock().entry(digest.to_string()).or_insert(0) += 1;
        self.digests.push(digest.to_string());
    }
}

impl Drop for PinGuard {
    fn drop(&mut self) {
        let mut map = self.pins.lock();
        for d in &self.digests {
            if let Some(n) = map.get_mut(d) {
                *n -= 1;
                if *n == 0 {
                    map.remove(d);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_count_per_digest_and_go_with_their_guards() {
        let pins = Pins::default();
        let a = pins.pin(["sha256:x".to_string(), "sha256:y".to_string()]);
        let mut b = pins.pin(["sha256:x".to_string()]);
        b.add("sha256:z");
        assert_eq!(pins.lock().get("sha256:x"), Some(&2));
        drop(a);
        assert_eq!(pins.lock().get("sha256:x"), Some(&1));
        assert!(!pins.lock().contains_key("sha256:y"));
        assert!(pins.lock().contains_key("sha256:z"));
        drop(b);
        assert!(pins.lock().is_empty());
    }
}
