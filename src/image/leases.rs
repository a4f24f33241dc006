//! Leases: the images a running build counts on (its bases, the images of its steps),
//! which it holds without the store's collection lock. `rmi` refuses to delete a leased
//! image (naming the build) and `image prune` keeps it, until the build ends. A build
//! takes the lease on an image before it checks that the image is still there, and a
//! removal checks the leases under the index lock it deletes under, so an image is
//! either gone before the build looks (the build fails with "no such image") or kept.
//!
//! Leases live in skiffd's memory: only skiffd deletes images.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// The leases of one store, per build.
#[derive(Debug, Default, Clone)]
pub(crate) struct Leases(Arc<Mutex<HashMap<u64, Holder>>>);

#[derive(Debug)]
struct Holder {
    /// What the build is, for errors (`build -t me/app:1`).
    name: String,
    /// Image ids (hex).
    images: HashSet<String>,
}

static NEXT: AtomicU64 = AtomicU64::new(1);

impl Leases {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Holder>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new holder named `name`; its leases go when the guard is dropped.
    pub(crate) fn holder(&self, name: &str) -> LeaseGuard {
        let key = NEXT.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(
            key,
            Holder {
                name: name.to_string(),
                images: HashSet::new(),
            },
        );
        LeaseGuard {
            leases: self.clone(),
            key,
        }
    }

    /// The name of a holder of image `id`, if one holds it.
    pub(crate) fn held_by(&self, id: &str) -> Option<String> {
        self.lock()
            .values()
            .find(|h| h.images.contains(id))
            .map(|h| h.name.clone())
    }

    /// Every leased image id.
    pub(crate) fn all(&self) -> HashSet<String> {
        self.lock()
            .values()
            .flat_map(|h| h.images.iter().cloned())
            .collect()
    }
}

/// A build's leases (see the module docs); released when dropped.
#[derive(Debug)]
pub struct LeaseGuard {
    leases: Leases,
    key: u64,
}

impl LeaseGuard {
    /// Leases image `id` (hex) until the guard is dropped.
    pub fn hold(&self, id: &str) {
        if let Some(h) = self.leases.lock().get_mut(&self.key) {
            h.images.insert(id.to_string());
        }
    }
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.leases.lock().remove(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn leases_name_their_holder_and_go_with_the_guard() {
        let leases = Leases::default();
        let a = leases.holder("build -t me/a");
        let b = leases.holder("build -t me/b");
        a.hold("x");
        b.hold("y");
        assert_eq!(leases.held_by("x").as_deref(), Some("build -t me/a"));
        assert_eq!(leases.all().len(), 2);
        drop(a);
        assert_eq!(leases.held_by("x"), None);
        assert_eq!(leases.held_by("y").as_deref(), Some("build -t me/b"));
        drop(b);
        assert!(leases.all().is_empty());
    }
}
