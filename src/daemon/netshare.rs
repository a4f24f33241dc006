//! skiffd's side of the shared network (`--network bridge`, see
//! [`crate::netns::shared`]): starts the holder (`skiff-monitor __netns`, or skiffd's helper of that name without skiff-monitor) with the shared user
//! namespace, or re-adopts the one a previous skiffd left (with its user namespace: new
//! containers then join the old ones' network), gives each container an address for
//! each of its runs (as docker does: taken at start, free again at its end, whatever
//! the end) and stops the holder at shutdown when no container uses it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::container::{Container, Record, Status};
use super::{Daemon, Error};
use crate::fdutil;
use crate::netns::bridge::{self, BridgePlan, Pool};
use crate::netns::{shared, Mode};

/// How long the holder may take to get its network up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The holder skiffd uses, once started or re-adopted, and the addresses in use.
#[derive(Default)]
pub(crate) struct SharedNet {
    holder: tokio::sync::Mutex<Option<shared::State>>,
    /// Built from the records at first use (all are loaded by then: see
    /// [`Daemon::leases`]).
    leases: std::sync::Mutex<Option<Leases>>,
}

/// The addresses of the shared network held by containers: one per running (or
/// starting) container, found by its id.
struct Leases {
    pool: Pool,
    by_id: HashMap<String, u8>,
}

/// Why a start does not get the shared network.
#[derive(Debug)]
pub enum NoBridge {
    /// It runs with a slirp4netns of its own this time; why.
    Fallback(String),
    /// The start fails (an explicit `--network bridge` with a full pool).
    Refused(String),
}

impl From<&str> for NoBridge {
    fn from(why: &str) -> NoBridge {
        NoBridge::Fallback(why.to_string())
    }
}

impl From<String> for NoBridge {
    fn from(why: String) -> NoBridge {
        NoBridge::Fallback(why)
    }
}

/// Frees the address a start took unless the container ran ([`Lease::keep`]): every
/// way out of a start that did not get as far as running lets it go.
pub(crate) struct Lease {
    daemon: Daemon,
    container: std::sync::Arc<Container>,
    kept: bool,
}

impl Lease {
    /// The container runs: its address stays until its end ([`Daemon::bridge_run_ended`]).
    pub(crate) fn keep(mut self) {
        self.kept = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if !self.kept && self.container.snapshot().state.status != Status::Running {
            self.daemon.release_bridge_addr(&self.container, true);
        }
    }
}

impl Daemon {
    /// The holder's directory (its state file, slirp4netns's socket and log).
    pub(crate) fn shared_net_dir(&self) -> PathBuf {
        self.inner.opts.paths.runtime.join("network")
    }

    /// The user namespace of a holder a previous skiffd left running, which becomes
    /// ours (see [`Daemon::shared_userns`]); None when there is no such holder.
    pub(crate) async fn readopt_shared_net(&self) -> Option<OwnedFd> {
        let st = shared::State::load_alive(&self.shared_net_dir())?;
        match shared::open_ns(&st.userns_path()) {
            Ok(fd) => {
                tracing::info!(
                    pid = st.pid,
                    "re-adopted the shared network and its user namespace"
                );
                *self.inner.shared_net.holder.lock().await = Some(st);
                Some(fd)
            }
            Err(e) => {
                tracing::warn!("the shared network's holder {}: {e}", st.pid);
                None
            }
        }
    }

    /// The plan that puts the container `c` (its record `rec`) on the shared network for
    /// a start: the holder started (with the shared user namespace) if it is not
    /// running, and an address taken for this run (kept in the record in memory: the
    /// start's record write persists it). Err: why it cannot be used.
    pub(crate) async fn shared_net_plan(
        &self,
        c: &std::sync::Arc<Container>,
        rec: &Record,
    ) -> Result<BridgePlan, NoBridge> {
        let userns = self.shared_userns().await.map_err(|e| e.to_string())?;
        let mut held = self.inner.shared_net.holder.lock().await;
        let dir = self.shared_net_dir();
        let state = match held.as_ref().filter(|s| s.alive()) {
            Some(s) => s.clone(),
            None => {
                if held.is_some() {
                    tracing::warn!("the shared network's holder is gone; starting another");
                }
                let s = spawn_holder(&self.inner.opts.monitor_exe, &dir, userns).await?;
                tracing::info!(pid = s.pid, "started the shared network");
                *held = Some(s.clone());
                s
            }
        };
        drop(held);
        let addr = match self.take_bridge_addr(&rec.id) {
            Some(a) => a,
            None => return Err(self.pool_full(rec)),
        };
        if let Err(e) = c.update_in_memory(|r| r.network_addr = Some(addr)) {
            self.release_bridge_addr(c, false);
            return Err(NoBridge::Refused(e.to_string()));
        }
        Ok(BridgePlan {
            holder: state,
            dir,
            addr,
        })
    }

    /// A guard that frees the address [`Daemon::shared_net_plan`] takes for `c` if its
    /// start fails before the container runs.
    pub(crate) fn bridge_lease(&self, c: &std::sync::Arc<Container>) -> Lease {
        Lease {
            daemon: self.clone(),
            container: c.clone(),
            kept: false,
        }
    }

    /// Why a start does not get an address: the default network then falls back to a
    /// slirp4netns of the container's own for this run; an explicit `--network bridge`
    /// fails, as docker's start does when its network's pool is full.
    fn pool_full(&self, rec: &Record) -> NoBridge {
        let limit = self.leases().as_ref().map_or(0, |l| l.pool.limit());
        let full = format!(
            "no available IPv4 addresses on the bridge network's pool (10.0.2.0/24: all \
             {limit} addresses are held by running containers)"
        );
        if rec.network_default {
            NoBridge::Fallback(full)
        } else {
            NoBridge::Refused(format!(
                "cannot start {}: {full}; stop or remove a container on the bridge network \
                 (stopped containers hold no address), or create this one with --network \
                 slirp4netns (a slirp4netns of its own)",
                rec.name
            ))
        }
    }

    /// The address index, built from the records at first use: the running containers'
    /// addresses are taken; a stopped container's (a record from before addresses were
    /// freed at the end of a run) is dropped.
    fn leases(&self) -> std::sync::MutexGuard<'_, Option<Leases>> {
        let mut guard = match self.inner.shared_net.leases.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if guard.is_none() {
            let limit = bridge::pool_limit();
            let mut l = Leases {
                pool: Pool::with_limit(limit),
                by_id: HashMap::new(),
            };
            let containers: Vec<_> = self.lock().values().cloned().collect();
            for c in containers {
                let r = c.snapshot();
                let Some(addr) = r.network_addr else { continue };
                let running = r.state.status == Status::Running;
                match bridge::host_of(addr) {
                    Some(n) if running && l.pool.take_this(n) => {
                        l.by_id.insert(r.id.clone(), n);
                    }
                    _ if running => {
                        tracing::warn!("{}: its address {addr} is taken twice", r.name)
                    }
                    _ => {
                        if let Err(e) = c.update_state(|r| r.network_addr = None) {
                            tracing::warn!("{}: dropping its old address: {e}", r.name);
                        }
                    }
                }
            }
            *guard = Some(l);
        }
        guard
    }

    /// Takes an address for container `id` (the one it holds if it holds one); None
    /// when the pool is full.
    fn take_bridge_addr(&self, id: &str) -> Option<Ipv4Addr> {
        let mut guard = self.leases();
        let l = guard.as_mut()?;
        if let Some(n) = l.by_id.get(id) {
            return Some(bridge::addr_of(*n));
        }
        let n = l.pool.take()?;
        l.by_id.insert(id.to_string(), n);
        Some(bridge::addr_of(n))
    }

    /// Frees the address container `c` holds, if any, and drops it from its record (in
    /// memory; written too with `persist`).
    pub(crate) fn release_bridge_addr(&self, c: &Container, persist: bool) {
        let id = c.id();
        if let Some(l) = self.leases().as_mut() {
            if let Some(n) = l.by_id.remove(&id) {
                l.pool.release(n);
            }
        }
        if c.snapshot().network_addr.is_none() {
            return;
        }
        let clear = |r: &mut Record| r.network_addr = None;
        let done = if persist {
            c.update_state(clear)
        } else {
            c.update_in_memory(clear)
        };
        match done {
            Ok(_) | Err(Error::NoSuchContainer(_)) => {}
            Err(e) => tracing::warn!("dropping the address of {id}: {e}"),
        }
    }

    /// At the end of a run (`before`: the record as it ran): drops the shared
    /// slirp4netns's forwards to its address that are left (its monitor removes them as
    /// it stops, unless it died) and frees the address (in the record in memory: the
    /// exit's record write persists it).
    pub(crate) async fn bridge_run_ended(&self, c: &Container, before: &Record) {
        // UDP ports always go through slirp4netns; TCP ports only when the relay could not
        // keep client addresses, and then they are in the monitor's record of its
        // forwards, which a monitor that died leaves behind.
        let forwarded = |addr: Option<Ipv4Addr>| {
            before
                .state
                .ports
                .iter()
                .any(|m| m.proto == crate::netns::Proto::Udp)
                || addr.is_some_and(|a| {
                    crate::netns::hostfwds::path(&self.shared_net_dir(), a).exists()
                })
        };
        if super::network::mode_in_use(before) == Mode::Bridge
            && !before.state.ports.is_empty()
            && forwarded(before.network_addr)
        {
            self.drop_bridge_forwards(before.network_addr).await;
        }
        self.release_bridge_addr(c, false);
    }

    /// After a run on the shared network: drops the shared slirp4netns's forwards to
    /// `addr` that are left (its monitor removes them as it stops, unless it died).
    async fn drop_bridge_forwards(&self, addr: Option<Ipv4Addr>) {
        let Some(addr) = addr else {
            return;
        };
        let dir = self.shared_net_dir();
        let alive = self
            .inner
            .shared_net
            .holder
            .lock()
            .await
            .as_ref()
            .is_some_and(|st| st.alive());
        if !alive {
            // Its slirp4netns went with it: only the record is left.
            crate::netns::hostfwds::forget(&dir, addr);
            return;
        }
        let dropped =
            tokio::task::spawn_blocking(move || crate::netns::hostfwds::withdraw(&dir, addr)).await;
        match dropped {
            Ok(Ok(0)) => tracing::debug!("no forward to {addr} left"),
            Ok(Ok(n)) => tracing::info!("dropped {n} forward(s) to {addr} left by a dead monitor"),
            Ok(Err(e)) => tracing::warn!("the shared slirp4netns's forwards to {addr}: {e}"),
            Err(e) => tracing::warn!("the shared slirp4netns's forwards to {addr}: {e}"),
        }
    }

    /// At shutdown: stops the holder (ours, or one a previous skiffd left) unless a
    /// running container is on the shared network (it then stays for them, and for the
    /// next skiffd to re-adopt).
    pub async fn stop_shared_net_if_unused(&self) {
        // A holder left by a previous skiffd counts too, even if this one never started
        // a container on it (it re-adopts it only then).
        let known = self.inner.shared_net.holder.lock().await.clone();
        let Some(st) = known.or_else(|| shared::State::load_alive(&self.shared_net_dir())) else {
            return;
        };
        let used = self.lock().values().any(|c| {
            let r = c.snapshot();
            r.state.status == Status::Running && super::network::mode_in_use(&r) == Mode::Bridge
        });
        if used {
            tracing::info!("the shared network stays: containers use it");
            return;
        }
        if st.alive() {
            tracing::info!(pid = st.pid, "stopping the shared network");
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(st.pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            let pid = nix::unistd::Pid::from_raw(st.pid);
            let _ = tokio::task::spawn_blocking(move || {
                crate::netns::wait_gone(pid, Duration::from_secs(3))
            })
            .await;
        }
    }
}

/// Runs `exe __netns DIR` with the shared user namespace on its fd 3 and waits until
/// its network is up; its state.
async fn spawn_holder(
    exe: &std::path::Path,
    dir: &std::path::Path,
    userns: OwnedFd,
) -> Result<shared::State, String> {
    crate::fsutil::ensure_private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(shared::HOLDER_ARG)
        .arg(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("RUST_LOG");
    let mut fds = vec![(userns, shared::USERNS_FD)];
    if let Some(log) = crate::logging::for_helper(cmd.as_std_mut(), "network") {
        fds.push(log);
    }
    // Under a user manager the holder waits until it is in a scope of its own (as the
    // monitors do): stopping skiffd's unit must not take the containers' network along.
    let gate = super::scope::gate().await;
    let open_end = match gate {
        Some(g) => {
            cmd.env(super::scope::GATE_ENV, super::scope::GATE_FD.to_string());
            fds.push((g.child_end, super::scope::GATE_FD));
            Some(g.open_end)
        }
        None => None,
    };
    fdutil::pass_fds(&mut cmd, fds);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {} __netns: {e}", exe.display()))?;
    if let (Some(open_end), Some(pid)) = (open_end, child.id()) {
        super::scope::place(open_end, pid, &format!("network-{pid}")).await;
    }
    let mut out = child.stdout.take().ok_or("no stdout pipe")?;
    let mut ready = [0u8; 1];
    let got = tokio::time::timeout(START_TIMEOUT, out.read_exact(&mut ready)).await;
    if !matches!(got, Ok(Ok(_))) {
        let _ = child.start_kill();
        let mut err = String::new();
        if let Some(mut e) = child.stderr.take() {
            let _ = e.read_to_string(&mut err).await;
        }
        let _ = child.wait().await;
        let err = err.trim();
        return Err(if err.is_empty() {
            "the shared network's holder did not start".into()
        } else {
            format!("the shared network's holder failed: {err}")
        });
    }
    let state =
        shared::State::load_alive(dir).ok_or("the shared network's holder wrote no state")?;
    // It runs on in a session of its own; tokio reaps it whenever it ends.
    drop(child);
    Ok(state)
}
