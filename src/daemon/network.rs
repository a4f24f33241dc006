//! The daemon's side of container networking: before each start, choose and check the
//! host ports, write resolv.conf/hosts/hostname into the bundle and bind-mount them, and
//! tell the monitor what to connect; afterwards, show the ports in `inspect`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{MountBuilder, Spec};

use super::container::{Record, Status};
use super::netshare::NoBridge;
use super::Error;
use crate::netns::{self, files::FileParams, Mode, NetPlan, PortMapping};

fn net_error(e: netns::Error) -> Error {
    match e {
        netns::Error::Port(m) | netns::Error::PortInUse(m) => Error::Runtime(m),
        other => Error::Runtime(other.to_string()),
    }
}

/// The container's network mode (records from before networking said `none` by default).
pub fn mode_of(rec: &Record) -> Mode {
    rec.config
        .network_mode()
        .ok()
        .flatten()
        .unwrap_or(Mode::None)
}

/// The mode that connects the container now: its own, or slirp4netns when that
/// replaced a default pasta that could not start (see [`netns::connect`]).
pub fn mode_in_use(rec: &Record) -> Mode {
    match (&rec.state.network_fallback, rec.state.status) {
        (Some(_), Status::Running) => Mode::Slirp4netns,
        _ => mode_of(rec),
    }
}

/// The first IPv4 UDP port of `ports` whose host port differs from (or is chosen apart
/// from) its container port: pasta 2023.03 (Debian 12) drops the container's answers
/// to a loopback client of such a port, so a default network is slirp4netns for it.
pub fn udp_pasta_loses(ports: &[PortMapping]) -> Option<&PortMapping> {
    ports
        .iter()
        .find(|m| m.proto == netns::Proto::Udp && !m.is_ipv6() && m.host_port != m.container_port)
}

/// A container's hostname when none is given: the host's with `--network host` (as in
/// podman and docker), else the first 12 hex digits of its id.
pub fn default_hostname(id: &str, mode: Option<Mode>) -> String {
    if mode == Some(Mode::Host) {
        match nix::unistd::gethostname() {
            Ok(h) if !h.is_empty() => return h.to_string_lossy().into_owned(),
            Ok(_) => {}
            Err(e) => tracing::warn!("the host's hostname for a --network host container: {e}"),
        }
    }
    id[..12].to_string()
}

/// Why the container has the network it has (for `inspect`).
pub fn reason(rec: &Record) -> String {
    match (&rec.state.network_fallback, rec.state.status) {
        (Some(why), Status::Running) => format!("{}; this run: {why}", rec.network_reason),
        _ => rec.network_reason.clone(),
    }
}

/// After a start: why the monitor connected slirp4netns in place of the default pasta
/// (the file it left in `bundle`), if it did.
pub fn fallback_of(bundle: &Path) -> Option<String> {
    std::fs::read_to_string(bundle.join(netns::FALLBACK_FILE)).ok()
}

/// Prepares the network of a start: the ports to publish (the requested ones, then the
/// image's exposed ports with `publish-all`), checked and with free host ports chosen;
/// the generated files in `bundle` (`fresh`: just made, see
/// [`crate::fsutil::put_runtime_file`]); and the monitor's plan (`None` without a helper).
/// `bridge`: for mode `bridge`, the shared network to join, or why it cannot be used:
/// the container then gets a slirp4netns of its own for this run (the reason is left in
/// the bundle's [`netns::FALLBACK_FILE`], which `inspect` shows), or the start fails
/// ([`NoBridge::Refused`]).
pub fn prepare(
    rec: &Record,
    bundle: &Path,
    fresh: bool,
    exposed: &[String],
    bridge: Option<Result<netns::bridge::BridgePlan, NoBridge>>,
) -> Result<(Option<NetPlan>, Vec<PortMapping>), Error> {
    let mut mode = mode_of(rec);
    let fallback_file = bundle.join(netns::FALLBACK_FILE);
    if !fresh {
        // The last run's reason, if any (the monitor writes a pasta's again).
        let _ = std::fs::remove_file(&fallback_file);
    }
    let bridge = match (mode, bridge) {
        (Mode::Bridge, Some(Ok(b))) => Some(b),
        (Mode::Bridge, Some(Err(NoBridge::Refused(why)))) => return Err(Error::Runtime(why)),
        (Mode::Bridge, other) => {
            let why = match other {
                Some(Err(NoBridge::Fallback(why))) => why,
                _ => "no shared network".into(),
            };
            let why =
                format!("the shared network cannot be used ({why}), slirp4netns used instead");
            tracing::warn!("network of {}: {why}", rec.name);
            crate::fsutil::put_runtime_file(&fallback_file, why.as_bytes(), fresh, None)
                .map_err(|e| Error::io(&fallback_file, e))?;
            mode = Mode::Slirp4netns;
            None
        }
        _ => None,
    };
    let mut ports = rec.config.port_mappings()?;
    if rec.config.publish_all {
        let mut all = rec.config.exposed_mappings()?;
        for e in exposed {
            all.extend(netns::ports::parse_publish(e).map_err(net_error)?);
        }
        for m in all {
            if !ports
                .iter()
                .any(|p| p.container_port == m.container_port && p.proto == m.proto)
            {
                ports.push(m);
            }
        }
    }
    if matches!(mode, Mode::Slirp4netns | Mode::Bridge) {
        if let Some(m) = ports
            .iter()
            .find(|m| m.is_ipv6() && m.proto == netns::Proto::Udp)
        {
            return Err(Error::Runtime(format!(
                "cannot publish {m}: slirp4netns forwards UDP from IPv4 host addresses only; \
                 use --network pasta for IPv6 UDP ports"
            )));
        }
    }
    if mode.has_helper() {
        netns::ports::resolve(&mut ports).map_err(net_error)?;
    }
    let params = FileParams {
        mode,
        hostname: rec.hostname.clone(),
        dns: rec.config.dns.clone(),
        dns_search: rec.config.dns_search.clone(),
        dns_options: rec.config.dns_option.clone(),
        add_hosts: rec.config.add_host.clone(),
        host_loopback: rec.config.host_loopback,
        addr: bridge.as_ref().map(|b| b.addr),
    };
    netns::files::write_all(bundle, &params, fresh).map_err(net_error)?;
    let fallback = rec.network_default && mode == Mode::Pasta;
    let plan = mode.has_helper().then(|| NetPlan {
        mode,
        ports: ports.clone(),
        host_loopback: rec.config.host_loopback,
        run_dir: bundle.to_path_buf(),
        fallback,
        // Asked once by skiffd rather than by each monitor (a fork and exec less on
        // the start's critical path).
        slirp_flags: (mode == Mode::Slirp4netns || fallback).then(netns::slirp::supported_flags),
        bridge: bridge.clone(),
    });
    Ok((plan, ports))
}

/// Adds the bind mounts of the files generated for network `mode` (in `bundle`) to the
/// spec.
pub fn add_mounts(spec: &mut Spec, bundle: &Path, mode: Mode) -> Result<(), Error> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    for name in netns::files::names(mode) {
        let m = MountBuilder::default()
            .destination(PathBuf::from("/etc").join(name))
            .typ("bind")
            .source(bundle.join(name))
            .options(vec!["rbind".to_string(), "rprivate".to_string()])
            .build()
            .map_err(|e| Error::Internal(format!("building the runtime spec: {e}")))?;
        mounts.push(m);
    }
    spec.set_mounts(Some(mounts));
    Ok(())
}

/// Adds docker's `NetworkSettings.Ports` (while running) and `HostConfig.PortBindings`.
pub fn extend_inspect(v: &mut serde_json::Value, rec: &Record) {
    let mut bindings = serde_json::Map::new();
    for m in rec.config.port_mappings().unwrap_or_default() {
        let entry = bindings
            .entry(m.container_key())
            .or_insert_with(|| serde_json::json!([]));
        if let Some(a) = entry.as_array_mut() {
            a.push(serde_json::json!({
                "HostIp": m.host_ip,
                "HostPort": if m.host_port == 0 { String::new() } else { m.host_port_display() },
            }));
        }
    }
    let mut ports = serde_json::Map::new();
    if rec.state.status == Status::Running {
        for m in &rec.state.ports {
            let entry = ports
                .entry(m.container_key())
                .or_insert_with(|| serde_json::json!([]));
            if let Some(a) = entry.as_array_mut() {
                a.push(serde_json::json!({
                    "HostIp": m.bind_ip().map(|i| i.to_string()).unwrap_or_default(),
                    "HostPort": m.host_port.to_string(),
                }));
            }
        }
    }
    let mode = mode_in_use(rec);
    v["HostConfig"]["NetworkMode"] = mode.as_str().into();
    v["HostConfig"]["PortBindings"] = bindings.into();
    v["HostConfig"]["PublishAllPorts"] = rec.config.publish_all.into();
    v["HostConfig"]["Dns"] = rec.config.dns.clone().into();
    v["HostConfig"]["DnsSearch"] = rec.config.dns_search.clone().into();
    v["HostConfig"]["DnsOptions"] = rec.config.dns_option.clone().into();
    v["HostConfig"]["ExtraHosts"] = rec.config.add_host.clone().into();
    let bridge_ip = rec.network_addr.map(|a| a.to_string()).unwrap_or_default();
    let ip = match (mode, rec.state.status) {
        (Mode::Slirp4netns, Status::Running) => netns::slirp::GUEST_ADDR,
        (Mode::Pasta, Status::Running) => netns::pasta::ADDR,
        (Mode::Bridge, Status::Running) => bridge_ip.as_str(),
        _ => "",
    };
    let running = rec.state.status == Status::Running && !ip.is_empty();
    let gateway = if running { netns::slirp::HOST_ADDR } else { "" };
    let prefix = if running { 24 } else { 0 };
    let mut networks = serde_json::Map::new();
    if mode != Mode::None {
        networks.insert(
            mode.as_str().to_string(),
            serde_json::json!({
                "NetworkID": mode.as_str(),
                "IPAddress": ip,
                "IPPrefixLen": prefix,
                "Gateway": gateway,
                "MacAddress": "",
                "Aliases": null,
            }),
        );
    }
    v["NetworkSettings"] = serde_json::json!({
        "NetworkMode": mode.as_str(),
        "NetworkReason": reason(rec),
        "Ports": ports,
        "IPAddress": ip,
        "IPPrefixLen": prefix,
        "Gateway": gateway,
        "Networks": networks,
    });
}

/// docker's `Config.ExposedPorts` (`{"80/tcp": {}}`): the image's EXPOSE ports, the
/// `--expose` ones and the published ones.
pub fn extend_exposed(v: &mut serde_json::Value, rec: &Record, image_exposed: &[String]) {
    let mut keys: Vec<String> = image_exposed
        .iter()
        .map(|p| {
            if p.contains('/') {
                p.to_ascii_lowercase()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    let configured = rec
        .config
        .exposed_mappings()
        .unwrap_or_default()
        .into_iter()
        .chain(rec.config.port_mappings().unwrap_or_default());
    keys.extend(configured.map(|m| m.container_key()));
    let map: serde_json::Map<String, serde_json::Value> = keys
        .into_iter()
        .map(|k| (k, serde_json::json!({})))
        .collect();
    v["Config"]["ExposedPorts"] = map.into();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_ipv4_udp_ports_on_another_host_port_avoid_the_default_pasta() {
        let p = |s: &str| -> PortMapping { s.parse().unwrap() };
        assert!(udp_pasta_loses(&[p("8080:80"), p("5353:5353/udp")]).is_none());
        assert!(udp_pasta_loses(&[p("[::1]:5300:53/udp")]).is_none());
        assert_eq!(
            udp_pasta_loses(&[p("80"), p("127.0.0.1:5300:53/udp")]).map(|m| m.host_port),
            Some(5300)
        );
        // A host port skiffd chooses at start may differ too.
        assert!(udp_pasta_loses(&[p("53/udp")]).is_some());
    }
}
