//! Published ports: docker's `-p` syntax, the checks done before a container starts
//! (port in use, privileged port) and the choice of a free host port for `-p CTR` / `-P`.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::Error;

/// A transport protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

fn is_zero(p: &u16) -> bool {
    *p == 0
}

/// One published port: `host_ip:host_port` on the host goes to `container_port` inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; empty means all addresses (`0.0.0.0`).
    #[serde(default)]
    pub host_ip: String,
    /// The host port; 0 until a free one is chosen at start.
    pub host_port: u16,
    /// With a host range for one container port (`8000-8010:80`): the range's last
    /// port, `host_port` its first; the first free one is chosen at start. 0 otherwise.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub host_port_end: u16,
    /// The port inside the container.
    pub container_port: u16,
    /// tcp or udp.
    #[serde(default)]
    pub proto: Proto,
}

impl PortMapping {
    /// The address the host side binds (`0.0.0.0` when none was given).
    pub fn bind_ip(&self) -> Result<IpAddr, Error> {
        if self.host_ip.is_empty() {
            return Ok(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        }
        self.host_ip
            .parse()
            .map_err(|_| Error::Port(format!("{:?} is not an IP address", self.host_ip)))
    }

    /// Docker's `80/tcp` key.
    pub fn container_key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto.as_str())
    }

    /// The host address as printed before a port (`0.0.0.0`, `[::1]`).
    pub fn host_display_ip(&self) -> String {
        match self.bind_ip() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]"),
            Ok(ip) => ip.to_string(),
            Err(_) => self.host_ip.clone(),
        }
    }

    /// The host port, or `8000-8010` for a host range not resolved yet.
    pub fn host_port_display(&self) -> String {
        if self.host_port_end > self.host_port {
            format!("{}-{}", self.host_port, self.host_port_end)
        } else {
            self.host_port.to_string()
        }
    }

    /// The host side as `skiff port` prints it (`0.0.0.0:8080`, `[::1]:8080`).
    pub fn host_display(&self) -> String {
        format!("{}:{}", self.host_display_ip(), self.host_port_display())
    }

    /// Whether the host address is an IPv6 one.
    pub fn is_ipv6(&self) -> bool {
        matches!(self.bind_ip(), Ok(IpAddr::V6(_)))
    }
}

impl fmt::Display for PortMapping {
    /// `0.0.0.0:8080->80/tcp`, as `docker ps` shows it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}->{}", self.host_display(), self.container_key())
    }
}

fn parse_port(s: &str, what: &str, spec: &str) -> Result<u16, Error> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err(Error::Port(format!(
            "invalid {what} {s:?} in {spec:?}: expected a number from 1 to 65535"
        ))),
    }
}

/// The most ports one range may publish (each is a forward in the helper).
pub const MAX_RANGE: u32 = 1024;

/// `N` or `A-B` (inclusive, `A <= B`).
fn parse_range(s: &str, what: &str, spec: &str) -> Result<(u16, u16), Error> {
    let (a, b) = match s.split_once('-') {
        Some((a, b)) => (parse_port(a, what, spec)?, parse_port(b, what, spec)?),
        None => {
            let p = parse_port(s, what, spec)?;
            (p, p)
        }
    };
    if a > b {
        return Err(Error::Port(format!(
            "invalid {what} range {s:?} in {spec:?}: the first port must not exceed the last"
        )));
    }
    if u32::from(b - a) >= MAX_RANGE {
        return Err(Error::Port(format!(
            "{what} range {s:?} in {spec:?} is too long: at most {MAX_RANGE} ports per range"
        )));
    }
    Ok((a, b))
}

/// Splits `[[IP:][HOST]:]CTR` (after the protocol was taken off) into its three parts;
/// an IPv6 address goes in brackets.
fn split_spec<'a>(rest: &'a str, spec: &str) -> Result<(String, &'a str, &'a str), Error> {
    let (ip, rest) = if let Some(after) = rest.strip_prefix('[') {
        let (ip, tail) = after.split_once("]:").ok_or_else(|| {
            Error::Port(format!(
                "bad IPv6 address in {spec:?}: write it in brackets, e.g. [::1]:8080:80"
            ))
        })?;
        (ip.to_string(), tail)
    } else {
        match rest.matches(':').count() {
            0 | 1 => (String::new(), rest),
            2 => {
                let (ip, tail) = rest.split_once(':').unwrap_or(("", rest));
                (ip.to_string(), tail)
            }
            _ => {
                return Err(Error::Port(format!(
                    "invalid port specification {spec:?}: use \
                     [[IP:][HOST]:]CONTAINER[/PROTO] (an IPv6 address goes in brackets)"
                )))
            }
        }
    };
    let (host, ctr) = match rest.split_once(':') {
        Some((h, c)) => (h, c),
        None => ("", rest),
    };
    if !ip.is_empty() && ip.parse::<IpAddr>().is_err() {
        return Err(Error::Port(format!(
            "{ip:?} in {spec:?} is not an IP address"
        )));
    }
    Ok((ip, host, ctr))
}

/// Parses one `-p` value: `[[IP:][HOST]:]CTR[/tcp|/udp]`, where HOST and CTR may be
/// ranges (`8000-8002:80-82`, one mapping per port; a host range with one container
/// port publishes it on the first free host port of the range, as docker does).
pub fn parse_publish(spec: &str) -> Result<Vec<PortMapping>, Error> {
    let (rest, proto) = match spec.rsplit_once('/') {
        Some((r, "tcp")) => (r, Proto::Tcp),
        Some((r, "udp")) => (r, Proto::Udp),
        Some((_, p)) => {
            return Err(Error::Port(format!(
                "unsupported protocol {p:?} in {spec:?}: use tcp or udp"
            )))
        }
        None => (spec, Proto::Tcp),
    };
    let (ip, host, ctr) = split_spec(rest, spec)?;
    let (c0, c1) = parse_range(ctr, "container port", spec)?;
    let one = |host_port: u16, host_port_end: u16, container_port: u16| PortMapping {
        host_ip: ip.clone(),
        host_port,
        host_port_end,
        container_port,
        proto,
    };
    // No host port, or 0: chosen at start.
    if host.is_empty() || host == "0" {
        return Ok((c0..=c1).map(|c| one(0, 0, c)).collect());
    }
    let (h0, h1) = parse_range(host, "host port", spec)?;
    if c0 == c1 {
        let end = if h1 > h0 { h1 } else { 0 };
        return Ok(vec![one(h0, end, c0)]);
    }
    if h1 - h0 != c1 - c0 {
        return Err(Error::Port(format!(
            "the host range {host} ({} ports) and the container range {ctr} ({} ports) of \
             {spec:?} differ in length: give ranges of the same length, e.g. 8000-8002:80-82",
            h1 - h0 + 1,
            c1 - c0 + 1
        )));
    }
    Ok((c0..=c1).zip(h0..=h1).map(|(c, h)| one(h, 0, c)).collect())
}

impl FromStr for PortMapping {
    type Err = Error;

    /// Parses a `-p` value that names a single port (see [`parse_publish`]).
    fn from_str(spec: &str) -> Result<PortMapping, Error> {
        let mut v = parse_publish(spec)?;
        match v.len() {
            1 => Ok(v.remove(0)),
            _ => Err(Error::Port(format!(
                "{spec:?} names a range of ports where one was expected"
            ))),
        }
    }
}

/// The lowest port an unprivileged user may bind (`net.ipv4.ip_unprivileged_port_start`).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

enum Held {
    Tcp(TcpListener),
    Udp(UdpSocket),
}

fn bind(m: &PortMapping) -> Result<Held, Error> {
    let addr = SocketAddr::new(m.bind_ip()?, m.host_port);
    let r = match m.proto {
        Proto::Tcp => TcpListener::bind(addr).map(Held::Tcp),
        Proto::Udp => UdpSocket::bind(addr).map(Held::Udp),
    };
    r.map_err(|e| match e.raw_os_error() {
        Some(libc::EADDRINUSE) => Error::PortInUse(format!(
            "host port {}/{} is already in use (publishing {m})",
            m.host_display(),
            m.proto.as_str()
        )),
        Some(libc::EACCES) if m.host_port < unprivileged_port_start() => Error::Port(format!(
            "cannot publish host port {}: ports below {} are privileged \
             (net.ipv4.ip_unprivileged_port_start); choose a higher host port, or allow it \
             with `sudo sysctl net.ipv4.ip_unprivileged_port_start={}`",
            m.host_port,
            unprivileged_port_start(),
            m.host_port
        )),
        Some(libc::EADDRNOTAVAIL) => Error::Port(format!(
            "cannot publish on {}: the address is not on this host",
            m.host_display()
        )),
        _ => Error::Port(format!("cannot bind host port {}: {e}", m.host_display())),
    })
}

/// Checks that every host port can be bound (so a conflict fails the start with a clear
/// error before any helper runs) and chooses free host ports for mappings without one
/// (and within the range of those with a host range). Two mappings of the same host
/// port and protocol are refused.
pub fn resolve(ports: &mut [PortMapping]) -> Result<(), Error> {
    // Hold every socket until all are checked, so chosen ports are all distinct.
    let mut held = Vec::with_capacity(ports.len());
    for i in 0..ports.len() {
        let taken = |port: u16, proto: Proto| {
            ports[..i]
                .iter()
                .any(|o| o.host_port == port && o.proto == proto)
        };
        let m = &ports[i];
        if m.host_port_end > m.host_port {
            // The first free port of the range.
            let mut found = None;
            for port in m.host_port..=m.host_port_end {
                if taken(port, m.proto) {
                    continue;
                }
                let try_m = PortMapping {
                    host_port: port,
                    host_port_end: 0,
                    ..m.clone()
                };
                match bind(&try_m) {
                    Ok(sock) => {
                        found = Some((try_m, sock));
                        break;
                    }
                    Err(Error::PortInUse(_)) => continue,
                    Err(e) => return Err(e),
                }
            }
            let Some((chosen, sock)) = found else {
                return Err(Error::PortInUse(format!(
                    "no host port of {}:{}-{}/{} is free (publishing {} in the container)",
                    m.host_display_ip(),
                    m.host_port,
                    m.host_port_end,
                    m.proto.as_str(),
                    m.container_port
                )));
            };
            ports[i] = chosen;
            held.push(sock);
            continue;
        }
        if m.host_port != 0 && taken(m.host_port, m.proto) {
            return Err(Error::PortInUse(format!(
                "host port {}/{} is published twice",
                m.host_port,
                m.proto.as_str()
            )));
        }
        let sock = bind(m)?;
        if m.host_port == 0 {
            let local = match &sock {
                Held::Tcp(l) => l.local_addr(),
                Held::Udp(u) => u.local_addr(),
            }
            .map_err(|e| Error::Port(format!("reading a chosen port: {e}")))?;
            ports[i].host_port = local.port();
        }
        held.push(sock);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> PortMapping {
        s.parse().unwrap()
    }

    #[test]
    fn docker_forms_parse() {
        assert_eq!(
            p("8080:80"),
            PortMapping {
                host_ip: String::new(),
                host_port: 8080,
                host_port_end: 0,
                container_port: 80,
                proto: Proto::Tcp
            }
        );
        let m = p("127.0.0.1:9000:53/udp");
        assert_eq!(
            (m.host_ip.as_str(), m.host_port, m.container_port, m.proto),
            ("127.0.0.1", 9000, 53, Proto::Udp)
        );
        assert_eq!(p("80").host_port, 0);
        assert_eq!(p("127.0.0.1::80").host_port, 0);
        assert_eq!(p("127.0.0.1::80").host_ip, "127.0.0.1");
        assert_eq!(p("[::1]:8080:80").host_ip, "::1");
        assert_eq!(p("[::1]:8080:80").host_display(), "[::1]:8080");
        assert_eq!(p("8080:80").to_string(), "0.0.0.0:8080->80/tcp");
    }

    #[test]
    fn bad_forms_are_refused() {
        for bad in [
            "",
            "0",
            "x:80",
            "80/sctp",
            "a.b:1:2",
            "1:2:3:4",
            "70000",
            "[::1:80",
            "::1:8080:80",
            "82-80",
            "8000-:80",
            "1-2000",
        ] {
            assert!(parse_publish(bad).is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn ranges_expand_to_one_mapping_per_port() {
        let v = parse_publish("8000-8002:80-82/udp").unwrap();
        let pairs: Vec<(u16, u16, Proto)> = v
            .iter()
            .map(|m| (m.host_port, m.container_port, m.proto))
            .collect();
        assert_eq!(
            pairs,
            vec![
                (8000, 80, Proto::Udp),
                (8001, 81, Proto::Udp),
                (8002, 82, Proto::Udp)
            ]
        );
        let v = parse_publish("127.0.0.1:8000-8001:80-81").unwrap();
        assert_eq!(v.len(), 2);
        assert!(v.iter().all(|m| m.host_ip == "127.0.0.1"));
        let v = parse_publish("[::1]:9000-9001:90-91").unwrap();
        assert_eq!(v[1].host_display(), "[::1]:9001");
        // Container range only: host ports chosen at start.
        let v = parse_publish("80-82").unwrap();
        assert!(v.iter().all(|m| m.host_port == 0) && v.len() == 3);
        // A host range for one port: the first free one, chosen at start.
        let v = parse_publish("8000-8010:80").unwrap();
        assert_eq!((v[0].host_port, v[0].host_port_end), (8000, 8010));
        assert_eq!(v[0].host_display(), "0.0.0.0:8000-8010");
        let e = parse_publish("8000-8001:80-82").unwrap_err().to_string();
        assert!(e.contains("differ in length"), "{e}");
        assert!(parse_publish("8000:80-82").is_err());
        assert!("80-81".parse::<PortMapping>().is_err());
    }

    #[test]
    fn a_host_range_takes_its_first_free_port() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = l.local_addr().unwrap().port();
        if busy == u16::MAX {
            return;
        }
        let mut ports = parse_publish(&format!("127.0.0.1:{busy}-{}:80", busy + 1)).unwrap();
        match resolve(&mut ports) {
            Ok(()) => {
                assert_eq!(ports[0].host_port, busy + 1);
                assert_eq!(ports[0].host_port_end, 0);
            }
            // busy + 1 happened to be taken by someone else too.
            Err(e) => assert!(e.to_string().contains("no host port"), "{e}"),
        }
    }

    #[test]
    fn a_port_in_use_is_a_clear_error_and_free_ports_are_chosen() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let mut ports = vec![p(&format!("127.0.0.1:{port}:80"))];
        let e = resolve(&mut ports).unwrap_err();
        assert!(matches!(e, Error::PortInUse(_)), "{e}");
        assert!(e.to_string().contains(&port.to_string()), "{e}");
        let mut ports = vec![
            p("127.0.0.1::80"),
            p("127.0.0.1::81"),
            p("127.0.0.1::53/udp"),
        ];
        resolve(&mut ports).unwrap();
        assert!(ports.iter().all(|m| m.host_port != 0));
        assert_ne!(ports[0].host_port, ports[1].host_port);
        let mut twice = vec![p("127.0.0.1:40000:80"), p("127.0.0.1:40000:81")];
        assert!(resolve(&mut twice).is_err());
    }

    #[test]
    fn privileged_ports_explain_the_sysctl() {
        if unprivileged_port_start() <= 1 || unsafe { libc::geteuid() } == 0 {
            return; // root, or every port is unprivileged here
        }
        let mut ports = vec![p("127.0.0.1:1:80")];
        let e = resolve(&mut ports).unwrap_err().to_string();
        assert!(e.contains("ip_unprivileged_port_start"), "{e}");
    }
}
