//! What an idle server gives back: the merged listings its directories cached and the
//! spare room of its tables, before the allocator's free pages go back to the kernel
//! (`monitor::heap::wait_readable_trimming`).
//!
//! A listing is what made lookups cheap during a burst (one readdir of each layer per
//! directory, then no stat per absent name), but once the container is idle the kernel
//! answers from its own dentry cache (entries and negative entries live for [`TTL`]), so
//! the listings mostly sit there: busybox's `/bin` alone, ~400 names, held ~60 KiB of
//! heap in each idle container's server. The next request that needs one reads it again.
//!
//! Safe to drop at any time the namespace lock is held exclusively: every change of a
//! directory's entries is made on disk first and then mirrored into its cached listing,
//! so a listing read again from disk is the one that was dropped (up to the order of
//! names, which readdir's snapshot takes from the listing). The lock keeps requests
//! that read or change listings out while we drop them; while a request in flight holds
//! it (shared or exclusively), nothing is shed.
//!
//! [`TTL`]: super::node::TTL

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use super::node::{DirSnapshot, Node, Overlay};

/// What [`Shedder::shed`] released.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Shed {
    /// Directories whose cached listing was dropped.
    pub listings: usize,
}

/// A handle on the overlay's state that the thread watching for idleness keeps (the
/// overlay itself belongs to the FUSE session).
#[derive(Debug, Clone)]
pub struct Shedder {
    ns: Arc<RwLock<()>>,
    nodes: Arc<Mutex<HashMap<u64, Arc<Node>>>>,
    dirs: Arc<Mutex<HashMap<u64, DirSnapshot>>>,
    upper_inos: Arc<Mutex<HashMap<u64, u64>>>,
}

impl Overlay {
    /// The handle the idle watcher sheds this overlay's caches with.
    pub fn shedder(&self) -> Shedder {
        Shedder {
            ns: self.ns.clone(),
            nodes: self.nodes.clone(),
            dirs: self.dirs.clone(),
            upper_inos: self.upper_inos.clone(),
        }
    }

    /// How many directories hold a cached listing.
    pub fn listing_count(&self) -> usize {
        let nodes: Vec<Arc<Node>> = self.table().values().cloned().collect();
        nodes.iter().filter(|n| n.lock().listing.is_some()).count()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Shedder {
    /// Drops every cached listing and gives the tables' spare room back, holding new
    /// requests back meanwhile. Does nothing while a request holds the namespace lock
    /// (the server is not idle then; the watcher tries again at its next idle look, and
    /// never waits behind a request).
    pub fn shed(&self) -> Shed {
        let _ns = match self.ns.try_write() {
            Ok(g) => g,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return Shed::default(),
        };
        // The table's lock is taken before a node's elsewhere (forget): never the other
        // way round, so the nodes are collected first and locked one by one after.
        let nodes: Vec<Arc<Node>> = {
            let mut table = lock(&self.nodes);
            table.shrink_to_fit();
            table.values().filter(|n| n.is_dir).cloned().collect()
        };
        let mut shed = Shed::default();
        for n in &nodes {
            if n.lock().listing.take().is_some() {
                shed.listings += 1;
            }
        }
        lock(&self.dirs).shrink_to_fit();
        lock(&self.upper_inos).shrink_to_fit();
        shed
    }
}
