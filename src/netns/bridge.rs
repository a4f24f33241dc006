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
//! shared slirp4netns's `add_hostfwd` to the container's address, removed when the
//! container stops.

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

/// A container attached to the shared network: its relay and UDP forwards.
pub struct Bridged {
    relay: Option<Relay>,
    forwards: Vec<u64>,
    api: PathBuf,
}

/// The first address of the pool, then up to [`LAST`] (a lone container has
/// slirp4netns's usual 10.0.2.100), then from [`FIRST_LOW`].
pub const FIRST: u8 = 100;
/// The last address of the pool.
pub const LAST: u8 = 254;
/// Where the pool goes on after [`LAST`] (below: the gateway .2 and DNS .3).
pub const FIRST_LOW: u8 = 4;

/// The first host number free in `taken` (in pool order), if any.
pub fn free_host(taken: &std::collections::BTreeSet<u8>) -> Option<u8> {
    (FIRST..=LAST)
        .chain(FIRST_LOW..FIRST)
        .find(|n| !taken.contains(n))
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
    let (relay, forwards) = super::slirp::publish_to(&api, addr, ports, pid)?;
    if !ports.is_empty() {
        crate::phase::mark("ports-added");
    }
    Ok(Bridged {
        relay,
        forwards,
        api,
    })
}

impl Helper for Bridged {
    fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
        for id in std::mem::take(&mut self.forwards) {
            super::slirp::remove_hostfwd(&self.api, id);
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
    use std::collections::BTreeSet;

    #[test]
    fn the_pool_starts_at_100_and_wraps_below_it() {
        let mut taken = BTreeSet::new();
        assert_eq!(free_host(&taken), Some(100));
        taken.extend(100..=254);
        assert_eq!(free_host(&taken), Some(4));
        taken.extend(4..100);
        assert_eq!(free_host(&taken), None);
        assert_eq!(host_of(addr_of(7)), Some(7));
        assert_eq!(host_of(Ipv4Addr::new(10, 0, 2, 2)), None);
        assert_eq!(host_of(Ipv4Addr::new(10, 0, 3, 7)), None);
    }
}
