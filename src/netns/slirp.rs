//! slirp4netns: a TAP device in the container's network namespace, backed by a userspace
//! TCP/IP stack on the host side. Started by the monitor from outside the namespaces (it
//! joins the user and network namespaces of the container's init by pid), it reports on
//! `--ready-fd` when `tap0` is configured and exits when `--exit-fd` reaches end-of-file:
//! the write end is held by the monitor only, so the helper cannot outlive it. Published
//! TCP ports go through the monitor's relay ([`super::forward`]), which keeps the
//! client's address; UDP ports are added with `add_hostfwd` on its API socket.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use nix::fcntl::OFlag;

use super::connector::Connector;
use super::forward::{Relay, Route, Target};
use super::ports::{PortMapping, Proto};
use super::{read_log, wait_readable, Error, Helper, NetPlan};

/// The container's address on slirp4netns's default network (10.0.2.0/24).
pub const GUEST_ADDR: &str = "10.0.2.100";
const GUEST_ADDR_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 100);
/// slirp4netns's DNS forwarder.
pub const DNS_ADDR: &str = "10.0.2.3";
/// The host as seen from the container (only reachable with host loopback allowed).
pub const HOST_ADDR: &str = "10.0.2.2";
const HOST_ADDR_V4: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);

const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long slirp4netns may take to end once its exit fd is closed.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
const API_NAME: &str = "slirp4netns.sock";

/// A running slirp4netns.
pub struct Slirp {
    child: Option<Child>,
    exit_w: Option<OwnedFd>,
    /// Its ready fd's read end, until [`Slirp::finish`] saw it ready.
    ready: Option<File>,
    api: PathBuf,
    log: PathBuf,
    /// Relays the ports slirp4netns does not forward itself.
    relay: Option<Relay>,
    /// It publishes ports (its end must be waited for: see [`Helper::begin_stop`]).
    publishes: bool,
}

/// Which optional flags this slirp4netns understands (from its `--help`), asked once
/// per process (skiffd passes them to each monitor in the plan).
pub fn supported_flags() -> Vec<String> {
    static FLAGS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
    FLAGS.get_or_init(ask_flags).clone()
}

fn ask_flags() -> Vec<String> {
    let help = Command::new("slirp4netns")
        .arg("--help")
        .stdin(Stdio::null())
        .output()
        .map(|o| {
            let mut s = String::from_utf8_lossy(&o.stdout).to_string();
            s.push_str(&String::from_utf8_lossy(&o.stderr));
            s
        })
        .unwrap_or_default();
    [
        "--enable-sandbox",
        "--enable-seccomp",
        "--disable-host-loopback",
    ]
    .into_iter()
    .filter(|f| help.contains(f))
    .map(String::from)
    .collect()
}

/// Spawns slirp4netns `cmd` (its arguments saying `--ready-fd=3 --exit-fd=4`) with
/// `ready_w` on its fd 3 and `exit_r` on its fd 4; our copies of both are closed once
/// it runs.
pub(crate) fn spawn_with_pipes(
    cmd: &mut Command,
    ready_w: OwnedFd,
    exit_r: OwnedFd,
) -> Result<Child, Error> {
    let (rw, er) = (ready_w.as_raw_fd(), exit_r.as_raw_fd());
    // SAFETY: only async-signal-safe fcntl/dup2 between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // Move both above 4 first so neither dup2 clobbers the other.
            let a = libc::fcntl(rw, libc::F_DUPFD_CLOEXEC, 10);
            let b = libc::fcntl(er, libc::F_DUPFD_CLOEXEC, 10);
            if a < 0 || b < 0 || libc::dup2(a, 3) < 0 || libc::dup2(b, 4) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        Error::Helper(format!(
            "cannot run slirp4netns: {e} (install the slirp4netns package)"
        ))
    })?;
    drop(ready_w);
    drop(exit_r);
    Ok(child)
}

/// Starts slirp4netns for the namespaces of `pid` and adds the plan's port forwards.
pub fn start(plan: &NetPlan, pid: i32) -> Result<Slirp, Error> {
    spawn(plan, pid)?.finish(&plan.ports, pid)
}

/// Starts slirp4netns for the namespaces of `pid` without waiting for it:
/// [`Slirp::finish`] waits until it is ready and adds the port forwards. `pid` must stay
/// until then (slirp4netns joins its namespaces on the way).
pub fn spawn(plan: &NetPlan, pid: i32) -> Result<Slirp, Error> {
    let api = plan.run_dir.join(API_NAME);
    let log = plan.run_dir.join("slirp4netns.log");
    let _ = std::fs::remove_file(&api);
    let log_file = File::create(&log).map_err(|e| Error::io(&log, e))?;
    let log_err = log_file.try_clone().map_err(|e| Error::io(&log, e))?;
    let (ready_r, ready_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let (exit_r, exit_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| Error::sys("pipe", e))?;
    let flags = match &plan.slirp_flags {
        Some(f) => f.clone(),
        None => supported_flags(),
    };
    let mut cmd = Command::new("slirp4netns");
    cmd.args(["--configure", "--mtu=65520"]);
    for f in &flags {
        if f == "--disable-host-loopback" && plan.host_loopback {
            continue;
        }
        cmd.arg(f);
    }
    // A relative socket path from the bundle: the absolute one can exceed sun_path's
    // 108 bytes.
    cmd.current_dir(&plan.run_dir)
        .args(["--api-socket", API_NAME])
        .args(["--ready-fd=3", "--exit-fd=4"]);
    cmd.arg(pid.to_string())
        .arg("tap0")
        .stdin(Stdio::null())
        .stdout(log_file)
        .stderr(log_err);
    let child = spawn_with_pipes(&mut cmd, ready_w, exit_r)?;
    crate::phase::mark("network-spawned");
    Ok(Slirp {
        child: Some(child),
        exit_w: Some(exit_w),
        ready: Some(File::from(ready_r)),
        api,
        log,
        relay: None,
        publishes: !plan.ports.is_empty(),
    })
}

impl Slirp {
    /// Waits until slirp4netns is ready (its tap0 configured in the namespace) and adds
    /// the forwards of `ports` (`pid`: the container's init, for the relay's sockets).
    pub fn finish(mut self, ports: &[PortMapping], pid: i32) -> Result<Slirp, Error> {
        let Some(mut ready) = self.ready.take() else {
            return Ok(self);
        };
        let ok = wait_readable(&ready, READY_TIMEOUT) && {
            let mut b = [0u8; 1];
            matches!(ready.read(&mut b), Ok(1))
        };
        if !ok {
            let status = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
                .map(|s| format!(" ({s})"))
                .unwrap_or_default();
            let why = format!("{}{status}", read_log(&self.log));
            self.stop();
            return Err(Error::Helper(format!(
                "slirp4netns did not get ready: {why}"
            )));
        }
        tracing::debug!(pid, "slirp4netns ready");
        crate::phase::mark("network-ready");
        if let Err(e) = publish(&mut self, ports, pid) {
            self.stop();
            return Err(e);
        }
        if !ports.is_empty() {
            crate::phase::mark("ports-added");
        }
        Ok(self)
    }
}

/// Whether `m` goes through the monitor's relay rather than slirp4netns when the
/// relay cannot keep the client's address (its routing could not be set up): TCP ports
/// on a loopback host address (slirp4netns would show their clients, all on the host,
/// as 10.0.2.2: there is no client address to keep, and the relay is several times
/// faster) and on IPv6 host addresses (slirp4netns's API takes IPv4 only).
pub fn relayed(m: &PortMapping) -> bool {
    m.proto == Proto::Tcp && (m.is_ipv6() || m.bind_ip().is_ok_and(|ip| ip.is_loopback()))
}

/// Adds the forwards of `ports` to slirp4netns's `api` socket for a container at
/// `guest` (see [`publish_to`]); the relay is the helper's.
fn publish(slirp: &mut Slirp, ports: &[PortMapping], pid: i32) -> Result<(), Error> {
    let (relay, _) = publish_to(&slirp.api, GUEST_ADDR_V4, ports, pid)?;
    slirp.relay = relay;
    Ok(())
}

/// A forward slirp4netns made: its id and port.
pub type Forward = (u64, PortMapping);

/// Adds the forwards of `ports` for the container whose init is `pid` and whose address
/// in slirp4netns's network is `guest`. TCP ports go through a relay thread with sockets
/// made in the container's namespace by a factory process forked here (the monitor has
/// no other thread yet), bound to the client's address; UDP ports through slirp4netns
/// itself (`add_hostfwd` on its `api` socket, which keeps the client's address too). If
/// the factory cannot set up the routing that keeps addresses, TCP ports on other than
/// loopback and IPv6 host addresses fall back to `add_hostfwd` (slower, the address
/// kept). Returns the relay, if any, and the forwards slirp4netns made (their ids and
/// ports).
pub fn publish_to(
    api: &Path,
    guest: Ipv4Addr,
    ports: &[PortMapping],
    pid: i32,
) -> Result<(Option<Relay>, Vec<Forward>), Error> {
    if let Some(m) = ports.iter().find(|m| m.is_ipv6() && m.proto == Proto::Udp) {
        return Err(Error::Port(format!(
            "cannot publish {m}: slirp4netns forwards UDP from IPv4 host addresses only; \
             use --network pasta for IPv6 UDP ports"
        )));
    }
    let tcp: Vec<u16> = ports
        .iter()
        .filter(|m| m.proto == Proto::Tcp)
        .map(|m| m.container_port)
        .collect();
    let connector = if tcp.is_empty() {
        None
    } else {
        Some(Arc::new(Connector::start(pid, &tcp)?))
    };
    let as_client = match connector.as_ref().map(|c| c.transparent()) {
        Some(Ok(())) => true,
        Some(Err(why)) => {
            tracing::warn!("published ports: {why}; slirp4netns forwards them (slower)");
            false
        }
        None => false,
    };
    let mut routes = Vec::new();
    let mut ids = Vec::new();
    for m in ports {
        let Some(c) = connector
            .as_ref()
            .filter(|_| m.proto == Proto::Tcp && (as_client || relayed(m)))
        else {
            match add_hostfwd(api, m, guest) {
                Ok(id) => ids.push((id, m.clone())),
                Err(e) => {
                    for (id, _) in ids {
                        remove_hostfwd(api, id);
                    }
                    return Err(e);
                }
            }
            continue;
        };
        let listener = match TcpListener::bind(SocketAddr::new(m.bind_ip()?, m.host_port)) {
            Ok(l) => l,
            Err(e) => {
                for (id, _) in ids {
                    remove_hostfwd(api, id);
                }
                return Err(Error::PortInUse(format!("cannot publish {m}: {e}")));
            }
        };
        let target = if as_client {
            Target::AsClient {
                connector: c.clone(),
                addr: SocketAddrV4::new(guest, m.container_port),
                stand_in: HOST_ADDR_V4,
            }
        } else {
            Target::Inside(
                c.clone(),
                SocketAddr::new(IpAddr::V4(guest), m.container_port),
            )
        };
        routes.push(Route { listener, target });
    }
    let relay = if routes.is_empty() {
        None
    } else {
        Some(Relay::start(routes)?)
    };
    Ok((relay, ids))
}

/// One request to slirp4netns's API socket `api`; its answer.
fn api_call(api: &Path, req: &serde_json::Value) -> Result<serde_json::Value, Error> {
    // Connect through /proc/self/fd/N of the directory: short, whatever its length.
    let dir = api.parent().unwrap_or(Path::new("."));
    let name = api.file_name().unwrap_or_default().to_string_lossy();
    let dirfd = File::open(dir).map_err(|e| Error::io(dir, e))?;
    let short = format!("/proc/self/fd/{}/{name}", dirfd.as_raw_fd());
    let mut sock = UnixStream::connect(&short).map_err(|e| Error::io(api, e))?;
    drop(dirfd);
    sock.set_read_timeout(Some(READY_TIMEOUT))
        .map_err(|e| Error::io(api, e))?;
    sock.write_all(req.to_string().as_bytes())
        .and_then(|_| sock.shutdown(std::net::Shutdown::Write))
        .map_err(|e| Error::io(api, e))?;
    let mut resp = String::new();
    sock.read_to_string(&mut resp)
        .map_err(|e| Error::io(api, e))?;
    serde_json::from_str(&resp)
        .map_err(|e| Error::Helper(format!("slirp4netns API answered {resp:?}: {e}")))
}

/// Asks slirp4netns to forward `m` to `guest` (one JSON request per connection); the
/// forward's id.
pub(crate) fn add_hostfwd(api: &Path, m: &PortMapping, guest: Ipv4Addr) -> Result<u64, Error> {
    let req = serde_json::json!({
        "execute": "add_hostfwd",
        "arguments": {
            "proto": m.proto.as_str(),
            "host_addr": m.bind_ip()?.to_string(),
            "host_port": m.host_port,
            "guest_addr": guest.to_string(),
            "guest_port": m.container_port,
        }
    });
    let v = api_call(api, &req)?;
    if let Some(r) = v.get("return") {
        return Ok(r["id"].as_u64().unwrap_or(0));
    }
    let desc = v["error"]["desc"]
        .as_str()
        .map(String::from)
        .unwrap_or_else(|| v.to_string());
    Err(Error::PortInUse(format!(
        "cannot publish {m}: slirp4netns: {desc} (is host port {} in use?)",
        m.host_display()
    )))
}

/// One forward of a slirp4netns (an entry of its `list_hostfwd`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default)]
pub struct HostFwd {
    /// Its id.
    pub id: u64,
    /// `tcp` or `udp`.
    pub proto: String,
    /// The host address it listens on.
    pub host_addr: String,
    /// The host port.
    pub host_port: u16,
    /// The guest address it forwards to.
    pub guest_addr: String,
    /// The guest port.
    pub guest_port: u16,
}

impl HostFwd {
    /// Whether this is the forward of `m` to `guest`.
    pub fn is(&self, m: &PortMapping, guest: Ipv4Addr) -> bool {
        self.proto == m.proto.as_str()
            && m.bind_ip().is_ok_and(|ip| self.host_addr == ip.to_string())
            && self.host_port == m.host_port
            && self.guest_addr == guest.to_string()
            && self.guest_port == m.container_port
    }
}

/// The forwards of slirp4netns at `api`.
pub fn list_hostfwds(api: &Path) -> Result<Vec<HostFwd>, Error> {
    let v = api_call(api, &serde_json::json!({"execute": "list_hostfwd"}))?;
    // slirp4netns 1.2 answers `{"entries": […]}`, without the `return` of the others.
    let entries = match v.get("return") {
        Some(r) => &r["entries"],
        None => &v["entries"],
    };
    serde_json::from_value(entries.clone())
        .map_err(|e| Error::Helper(format!("slirp4netns API listed {entries}: {e}")))
}

/// Drops every forward of slirp4netns (at `api`) to `guest`: the UDP ports of a
/// container on the shared network as it stops (or after its monitor died). Returns
/// how many there were.
pub fn remove_forwards_to(api: &Path, guest: Ipv4Addr) -> Result<usize, Error> {
    let guest = guest.to_string();
    let ids: Vec<u64> = list_hostfwds(api)?
        .into_iter()
        .filter(|f| f.guest_addr == guest)
        .map(|f| f.id)
        .collect();
    for id in &ids {
        remove_hostfwd(api, *id);
    }
    Ok(ids.len())
}

/// Asks slirp4netns to drop its forward `id` (a shared slirp4netns outlives the
/// container); failures are logged.
pub fn remove_hostfwd(api: &Path, id: u64) {
    let req = serde_json::json!({"execute": "remove_hostfwd", "arguments": {"id": id}});
    match api_call(api, &req) {
        Ok(v) if v.get("return").is_some() => {}
        Ok(v) => tracing::warn!("slirp4netns: removing forward {id}: {v}"),
        Err(e) => tracing::warn!("slirp4netns: removing forward {id}: {e}"),
    }
}

impl Helper for Slirp {
    fn stop(&mut self) {
        if let Some(mut relay) = self.relay.take() {
            relay.stop();
        }
        // End-of-file on the exit fd makes slirp4netns quit; wait for it, then clean up.
        if self.exit_w.take().is_some() {
            crate::phase::mark("network-stop");
        }
        if let Some(mut child) = self.child.take() {
            let pid = nix::unistd::Pid::from_raw(child.id() as i32);
            if !super::wait_gone(pid, STOP_TIMEOUT) {
                let _ = child.kill();
                let _ = child.wait();
            }
            crate::phase::mark("network-stopped");
        }
        self.remove_files();
    }

    fn begin_stop(&mut self) -> Option<nix::unistd::Pid> {
        if self.publishes || self.relay.is_some() {
            self.stop();
            return None;
        }
        // End-of-file on the exit fd makes it quit; its end is not waited for (the
        // `Child` handle does not wait or kill when dropped).
        self.exit_w.take()?;
        crate::phase::mark("network-stop");
        let child = self.child.take()?;
        self.remove_files();
        Some(nix::unistd::Pid::from_raw(child.id() as i32))
    }
}

impl Slirp {
    fn remove_files(&self) {
        let _ = std::fs::remove_file(&self.api);
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Slirp {
    fn drop(&mut self) {
        self.stop();
    }
}
