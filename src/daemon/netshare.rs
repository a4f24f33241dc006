//! skiffd's side of the shared network (`--network bridge`, see
//! [`crate::netns::shared`]): starts the holder (`skiff-monitor __netns`, or skiffd's helper of that name without skiff-monitor) with the shared user
//! namespace, or re-adopts the one a previous skiffd left (with its user namespace: new
//! containers then join the old ones' network), allocates the containers' addresses and
//! stops the holder at shutdown when no container uses it.

use std::collections::BTreeSet;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncReadExt;

use super::container::Status;
use super::Daemon;
use crate::fdutil;
use crate::netns::bridge::{self, BridgePlan};
use crate::netns::{shared, Mode};

/// How long the holder may take to get its network up.
const START_TIMEOUT: Duration = Duration::from_secs(15);

/// The holder skiffd uses, once started or re-adopted.
#[derive(Default)]
pub(crate) struct SharedNet(tokio::sync::Mutex<Option<shared::State>>);

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
                *self.inner.shared_net.0.lock().await = Some(st);
                Some(fd)
            }
            Err(e) => {
                tracing::warn!("the shared network's holder {}: {e}", st.pid);
                None
            }
        }
    }

    /// The plan that puts `addr` on the shared network: the holder started (with the
    /// shared user namespace) if it is not running. Err: why it cannot be used.
    pub(crate) async fn shared_net_plan(
        &self,
        addr: Option<std::net::Ipv4Addr>,
    ) -> Result<BridgePlan, String> {
        let addr = addr.ok_or("the container has no address on the shared network")?;
        let userns = self.shared_userns().await.map_err(|e| e.to_string())?;
        let mut held = self.inner.shared_net.0.lock().await;
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
        Ok(BridgePlan {
            holder: state,
            dir,
            addr,
        })
    }

    /// A free address of the shared network, given the containers in `map` (called
    /// under the containers' lock, so two creates never take one address).
    pub(crate) fn free_bridge_addr(
        map: &std::collections::BTreeMap<String, std::sync::Arc<super::container::Container>>,
    ) -> Option<std::net::Ipv4Addr> {
        let taken: BTreeSet<u8> = map
            .values()
            .filter_map(|c| c.snapshot().network_addr)
            .filter_map(bridge::host_of)
            .collect();
        bridge::free_host(&taken).map(bridge::addr_of)
    }

    /// After a run on the shared network: drops the shared slirp4netns's forwards to
    /// `addr` that are left (its monitor removes them as it stops, unless it died).
    pub(crate) async fn drop_bridge_forwards(&self, addr: Option<std::net::Ipv4Addr>) {
        let Some(addr) = addr else {
            return;
        };
        let Some(st) = self.inner.shared_net.0.lock().await.clone() else {
            return;
        };
        if !st.alive() {
            return;
        }
        let api = self.shared_net_dir().join(shared::API_NAME);
        let dropped = tokio::task::spawn_blocking(move || {
            crate::netns::slirp::remove_forwards_to(&api, addr)
        })
        .await;
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
        let known = self.inner.shared_net.0.lock().await.clone();
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
