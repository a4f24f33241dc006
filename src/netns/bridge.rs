//! A container on the shared network (`--network bridge`, see [`super::shared`]): the
//! monitor forks a child that joins the container's user namespace (the shared one)
//! and the shared network namespace, adds a veth pair whose host end is a port of the
//! bridge and whose other end is the container's `eth0`, then sets `eth0` up in the
//! container's namespace with the container's address and a default route to
//! slirp4netns's gateway. A few netlink messages instead of a slirp4netns per
//! container. The pair goes with the container's namespace.
//!
//! Published TCP ports go through the monitor's relay (as with slirp4netns, the client's
//! address kept, connecting to the container's own address); UDP ports through the
//! shared slirp4netns's `add_hostfwd` to the container's address (recorded for a new
//! slirp4netns, see [`super::hostfwds`]), removed when the container stops.

use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::forward::Relay;
use super::ports::PortMapping;
use super::{link, shared, Error, Helper};

/// The network's prefix length (slirp4netns's 10.0.2.0/24).
pub const PREFIX: u8 = 24;
/// The gateway: slirp4netns's host address.
pub const GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

/// What the monitor needs to put a container on the shared network (in its plan).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgePlan {
    /// The holder's state (where the shared namespaces are).
    pub holder: shared::State,
    /// The holder's directory (slirp4netns's API socket is there).
    pub dir: PathBuf,
    /// The container's address.
    pub addr: Ipv4Addr,
}

/// A container attached to the shared network: its relay and whether slirp4netns
/// forwards ports to it.
pub struct Bridged {
    relay: Option<Relay>,
    forwards: bool,
    dir: PathBuf,
    addr: Ipv4Addr,
}

/// The first address of the pool, then up to [`LAST`] (a lone container has
/// slirp4netns's usual 10.0.2.100), then from [`FIRST_LOW`].
pub const FIRST: u8 = 100;
/// The last address of the pool.
pub const LAST: u8 = 254;
/// Where the pool goes on after [`LAST`] (below: the gateway .2 and DNS .3).
pub const FIRST_LOW: u8 = 4;

/// How many addresses the pool has ([`FIRST`]..=[`LAST`] and [`FIRST_LOW`]..[`FIRST`]).
pub const POOL_SIZE: usize = (LAST - FIRST_LOW + 1) as usize;

/// For tests (skiffd's hidden `--bridge-pool N`): the pool's size.
static POOL_LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Limits the pool to `n` addresses (for tests: a full pool without 251 containers).
/// Call it before the daemon starts.
pub fn set_pool_limit(n: usize) -> Result<(), String> {
    if n == 0 || n > POOL_SIZE {
        return Err(format!(
            "--bridge-pool {n}: give 1 to {POOL_SIZE} addresses"
        ));
    }
    POOL_LIMIT
        .set(n)
        .map_err(|_| "--bridge-pool given twice".to_string())
}

/// How many addresses of the pool may be in use at once ([`POOL_SIZE`] but in tests).
pub fn pool_limit() -> usize {
    POOL_LIMIT.get().copied().unwrap_or(POOL_SIZE)
}

/// The addresses of the pool in use, as a bit per host number: taking the first free
/// one looks at four words, whatever the number of containers.
#[derive(Debug, Clone)]
pub struct Pool {
    used: [u64; 4],
    /// How many addresses may be in use (the pool's size, smaller for tests).
    limit: usize,
    count: usize,
}

impl Default for Pool {
    fn default() -> Pool {
        Pool::with_limit(POOL_SIZE)
    }
}

impl Pool {
    /// An empty pool of which at most `limit` addresses may be in use at once.
    pub fn with_limit(limit: usize) -> Pool {
        Pool {
            used: [0; 4],
            limit: limit.min(POOL_SIZE),
            count: 0,
        }
    }

    /// How many addresses may be in use at once.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Takes the first free host number in pool order ([`FIRST`]..=[`LAST`], then
    /// [`FIRST_LOW`]..[`FIRST`]); None when the pool is full.
    pub fn take(&mut self) -> Option<u8> {
        if self.count >= self.limit {
            return None;
        }
        let n = self
            .first_free(FIRST, LAST)
            .or_else(|| self.first_free(FIRST_LOW, FIRST - 1))?;
        self.mark(n);
        Some(n)
    }

    /// Marks host number `n` as in use (an address found in a record at start-up);
    /// false when it is not in the pool or already in use.
    pub fn take_this(&mut self, n: u8) -> bool {
        if !(FIRST_LOW..=LAST).contains(&n) || self.is_used(n) {
            return false;
        }
        self.mark(n);
        true
    }

    /// Frees host number `n`.
    pub fn release(&mut self, n: u8) {
        if self.is_used(n) {
            self.used[usize::from(n / 64)] &= !(1u64 << (n % 64));
            self.count -= 1;
        }
    }

    /// How many addresses are in use.
    pub fn in_use(&self) -> usize {
        self.count
    }

    fn is_used(&self, n: u8) -> bool {
        self.used[usize::from(n / 64)] & (1u64 << (n % 64)) != 0
    }

    fn mark(&mut self, n: u8) {
        self.used[usize::from(n / 64)] |= 1u64 << (n % 64);
        self.count += 1;
    }

    /// The lowest free host number in `lo..=hi`.
    fn first_free(&self, lo: u8, hi: u8) -> Option<u8> {
        for w in usize::from(lo / 64)..=usize::from(hi / 64) {
            let base = (w * 64) as u16;
            // The bits of this word within lo..=hi.
            let from = u16::from(lo).saturating_sub(base).min(64);
            let to = (u16::from(hi) + 1 - base).min(64);
            let mut mask = if to >= 64 { u64::MAX } else { (1u64 << to) - 1 };
            mask &= !((1u64 << from) - 1);
            let free = !self.used[w] & mask;
            if free != 0 {
                return Some((base + free.trailing_zeros() as u16) as u8);
            }
        }
        None
    }
}

/// The address of host number `n` on the network.
pub fn addr_of(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 2, n)
}

/// The host number of `addr` if it is on the network's pool.
pub fn host_of(addr: Ipv4Addr) -> Option<u8> {
    let o = addr.octets();
    (o[0] == 10 && o[1] == 0 && o[2] == 2 && o[3] >= FIRST_LOW && o[3] <= LAST).then_some(o[3])
}

/// Puts the container whose init is `pid` on the shared network and publishes `ports`.
/// Call it while the monitor has one thread (it forks).
pub fn attach(b: &BridgePlan, ports: &[PortMapping], pid: i32) -> Result<Bridged, Error> {
    if !b.holder.alive() {
        return Err(Error::Helper(format!(
            "the shared network's holder (pid {}) is gone",
            b.holder.pid
        )));
    }
    let user = shared::open_ns(Path::new(&format!("/proc/{pid}/ns/user")))?;
    let net = shared::open_ns(Path::new(&format!("/proc/{pid}/ns/net")))?;
    let shared_net = shared::open_ns(&b.holder.netns_path())?;
    let (u, c, s) = (user.as_raw_fd(), net.as_raw_fd(), shared_net.as_raw_fd());
    let host_name = format!("skv{pid}");
    let addr = b.addr;
    link::in_child("connecting the container to the shared network", || {
        link::join(u, libc::CLONE_NEWUSER).map_err(|e| (1, e))?;
        link::join(s, libc::CLONE_NEWNET).map_err(|e| (2, e))?;
        let br = link::index_of(link::BRIDGE).map_err(|e| (3, e))?;
        link::send(&link::new_veth(&host_name, br, c)).map_err(|e| (4, e))?;
        link::join(c, libc::CLONE_NEWNET).map_err(|e| (5, e))?;
        let eth = link::index_of(link::GUEST_IF).map_err(|e| (6, e))?;
        link::send(&link::configure_guest(eth, addr, PREFIX, GATEWAY)).map_err(|e| (7, e))
    })?;
    drop((user, net, shared_net));
    crate::phase::mark("network-ready");
    let api = b.dir.join(shared::API_NAME);
    // From before the first forward is added until it is recorded: a holder that
    // restarts slirp4netns meanwhile re-adds it once it is in the record.
    let lock = if ports.is_empty() {
        None
    } else {
        match super::hostfwds::Lock::shared(&b.dir) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::warn!("a restarted shared slirp4netns may miss these ports: {e}");
                None
            }
        }
    };
    let (relay, forwards) = super::slirp::publish_to(&api, addr, ports, pid)?;
    let bridged = Bridged {
        relay,
        forwards: !forwards.is_empty(),
        dir: b.dir.clone(),
        addr,
    };
    super::hostfwds::hold("forwards-added");
    if let Some(lock) = lock.as_ref().filter(|_| bridged.forwards) {
        // For a new slirp4netns, should this one die (its holder adds them again).
        let ports: Vec<PortMapping> = forwards.into_iter().map(|(_, m)| m).collect();
        if let Err(e) = lock.record(addr, &ports) {
            tracing::warn!("a restarted shared slirp4netns will not forward them again: {e}");
        }
    }
    drop(lock);
    if !ports.is_empty() {
        crate::phase::mark("ports-added");
    }
    Ok(bridged)
}

impl Helper for Bridged {
    fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
        if std::mem::take(&mut self.forwards) {
            // By address, not by the ids slirp4netns gave: a restarted slirp4netns gave
            // others (the address is ours until skiffd sees our end).
            if let Err(e) = super::hostfwds::withdraw(&self.dir, self.addr) {
                tracing::warn!("the shared slirp4netns's forwards to {}: {e}", self.addr);
            }
        }
    }
}

impl Drop for Bridged {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_starts_at_100_and_wraps_below_it() {
        let mut pool = Pool::default();
        assert_eq!(pool.take(), Some(100));
        for n in 101..=254 {
            assert_eq!(pool.take(), Some(n));
        }
        assert_eq!(pool.take(), Some(4));
        for n in 5..100 {
            assert_eq!(pool.take(), Some(n));
        }
        assert_eq!(pool.in_use(), POOL_SIZE);
        assert_eq!(pool.take(), None);
        // A freed address is the next one taken.
        pool.release(130);
        pool.release(130);
        assert_eq!(pool.in_use(), POOL_SIZE - 1);
        assert_eq!(pool.take(), Some(130));
        pool.release(64);
        pool.release(63);
        assert_eq!(pool.take(), Some(63));
        assert_eq!(pool.take(), Some(64));
        assert_eq!(host_of(addr_of(7)), Some(7));
        assert_eq!(host_of(Ipv4Addr::new(10, 0, 2, 2)), None);
        assert_eq!(host_of(Ipv4Addr::new(10, 0, 3, 7)), None);
    }

    #[test]
    fn addresses_found_at_start_up_are_kept_and_the_limit_holds() {
        let mut pool = Pool::with_limit(2);
        assert!(pool.take_this(100));
        assert!(!pool.take_this(100));
        assert!(!pool.take_this(2));
        assert!(!pool.take_this(255));
        assert_eq!(pool.take(), Some(101));
        assert_eq!(pool.take(), None);
        pool.release(100);
        assert_eq!(pool.take(), Some(100));
    }
}
