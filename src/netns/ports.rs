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

/// One published port: `host_ip:host_port` on the host goes to `container_port` inside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address to listen on; empty means all addresses (`0.0.0.0`).
    #[serde(default)]
    pub host_ip: String,
    /// The host port; 0 until a free one is chosen at start.
    pub host_port: u16,
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

    /// The host side as `skiff port` prints it (`0.0.0.0:8080`, `[::1]:8080`).
    pub fn host_display(&self) -> String {
        match self.bind_ip() {
            Ok(IpAddr::V6(ip)) => format!("[{ip}]:{}", self.host_port),
            Ok(ip) => format!("{ip}:{}", self.host_port),
            Err(_) => format!("{}:{}", self.host_ip, self.host_port),
        }
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
        Ok(p) if p > 0 || what == "host port" => Ok(p),
        _ => Err(Error::Port(format!(
            "invalid {what} {s:?} in {spec:?}: expected a number from 1 to 65535"
        ))),
    }
}

impl FromStr for PortMapping {
    type Err = Error;

    /// Parses `[[IP:][HOST]:]CTR[/tcp|/udp]`; an IPv6 address goes in brackets.
    fn from_str(spec: &str) -> Result<PortMapping, Error> {
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
        let (ip, rest) = if let Some(after) = rest.strip_prefix('[') {
            let (ip, tail) = after
                .split_once("]:")
                .ok_or_else(|| Error::Port(format!("bad IPv6 address in {spec:?}")))?;
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
                        "invalid port specification {spec:?}: use [[IP:][HOST]:]CONTAINER[/PROTO]"
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
        let container_port = parse_port(ctr, "container port", spec)?;
        let host_port = if host.is_empty() {
            0
        } else {
            parse_port(host, "host port", spec)?
        };
        Ok(PortMapping {
            host_ip: ip,
            host_port,
            container_port,
            proto,
        })
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
/// error before any helper runs) and chooses free host ports for mappings without one.
/// Two mappings of the same host port and protocol are refused.
pub fn resolve(ports: &mut [PortMapping]) -> Result<(), Error> {
    // Hold every socket until all are checked, so chosen ports are all distinct.
    let mut held = Vec::with_capacity(ports.len());
    for i in 0..ports.len() {
        let m = &ports[i];
        if m.host_port != 0
            && ports[..i]
                .iter()
                .any(|o| o.host_port == m.host_port && o.proto == m.proto)
        {
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
            "", "0", "x:80", "80/sctp", "a.b:1:2", "1:2:3:4", "70000", "[::1:80",
        ] {
            assert!(bad.parse::<PortMapping>().is_err(), "{bad:?} parsed");
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
