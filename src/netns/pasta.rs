//! pasta (from passt): connects the container's network namespace to the host's stack
//! by translating layer-2 frames to ordinary host sockets, copying the host's addresses
//! and routes. Published ports are its own `-t`/`-u` options. pasta daemonizes once the
//! namespace is configured (the launcher's exit is the "ready" signal); the daemon is
//! re-parented to the monitor (a child subreaper), which stops it when the container ends.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

use super::ports::{PortMapping, Proto};
use super::{read_log, Error, Helper, NetPlan};

/// The container's IPv4 address (pasta's gateway is slirp4netns's host address,
/// 10.0.2.2, so host.containers.internal is the same in both modes).
pub const ADDR: &str = "10.0.2.100";
/// The container's IPv6 address, when the host has IPv6.
pub const ADDR6: &str = "fd53:6b69:6666::100";
/// The container's IPv6 gateway (pasta), in the same /64.
pub const GATEWAY6: &str = "fd53:6b69:6666::2";

/// Whether the host has an IPv6 default route (pasta then enables IPv6).
pub fn has_ipv6_default_route() -> bool {
    std::fs::read_to_string("/proc/net/ipv6_route")
        .map(|t| {
            t.lines().any(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 9 && f[0].bytes().all(|b| b == b'0') && f[1] == "00" && f[9] != "lo"
            })
        })
        .unwrap_or(false)
}

/// How long pasta may take to end after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);

/// A running pasta.
pub struct Pasta {
    pid: Option<Pid>,
    pidfile: PathBuf,
    log: PathBuf,
    /// It publishes ports (its end must be waited for: see [`Helper::begin_stop`]).
    publishes: bool,
}

/// pasta's port option value for one mapping: `[ADDR/]HOST:CTR`.
pub fn port_spec(m: &PortMapping) -> String {
    if m.host_ip.is_empty() {
        format!("{}:{}", m.host_port, m.container_port)
    } else {
        format!("{}/{}:{}", m.host_ip, m.host_port, m.container_port)
    }
}

/// The options every pasta of skiff's gets: configure the namespace, quietly, with the
/// container's own address (see [`args`]).
pub fn base_args() -> Vec<String> {
    let mut a: Vec<String> = vec!["--config-net".into(), "--quiet".into()];
    // An address of the container's own rather than a copy of the host's (pasta's
    // default): pasta shows a client that connects from the host's address as coming
    // from the gateway when the container has that address too. With its own one the
    // container sees the client's real address, and has slirp4netns's layout.
    a.extend(
        [
            "--address",
            ADDR,
            "--netmask",
            "24",
            "--gateway",
            super::slirp::HOST_ADDR,
        ]
        .map(String::from),
    );
    if has_ipv6_default_route() {
        a.extend(["--address", ADDR6, "--gateway", GATEWAY6].map(String::from));
    }
    a
}

/// pasta's stderr without its syslog noise, on one line.
pub fn stderr_summary(text: &str) -> String {
    text.lines()
        .filter(|l| !l.starts_with("Failed to send") && !l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("; ")
}

/// The command-line arguments (without the program name) for `plan` and target `pid`.
pub fn args(plan: &NetPlan, pid: i32, pidfile: &str, log: &str) -> Vec<String> {
    let mut a = base_args();
    a.extend(["--pid", pidfile, "--log-file", log].map(String::from));
    if !plan.host_loopback {
        // No gateway-to-host mapping, and no forwarding of the host's bound ports into
        // the namespace: the host's loopback services stay out of reach.
        a.extend(["--no-map-gw", "-T", "none", "-U", "none"].map(String::from));
    }
    let mut tcp = 0;
    let mut udp = 0;
    for m in &plan.ports {
        let flag = match m.proto {
            Proto::Tcp => {
                tcp += 1;
                "-t"
            }
            Proto::Udp => {
                udp += 1;
                "-u"
            }
        };
        a.push(flag.into());
        a.push(port_spec(m));
    }
    // pasta's default is "auto" (every port bound inside): publish only what was asked.
    if tcp == 0 {
        a.extend(["-t", "none"].map(String::from));
    }
    if udp == 0 {
        a.extend(["-u", "none"].map(String::from));
    }
    a.push(pid.to_string());
    a
}

/// Starts pasta for the namespaces of `pid`.
pub fn start(plan: &NetPlan, pid: i32) -> Result<Pasta, Error> {
    let pidfile = plan.run_dir.join("pasta.pid");
    let log = plan.run_dir.join("pasta.log");
    let _ = std::fs::remove_file(&pidfile);
    File::create(&log).map_err(|e| Error::io(&log, e))?;
    let argv = args(
        plan,
        pid,
        &pidfile.to_string_lossy(),
        &log.to_string_lossy(),
    );
    let out = Command::new("pasta")
        .args(&argv)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| Error::Helper(format!("cannot run pasta: {e} (install the passt package)")))?;
    let mut pasta = Pasta {
        pid: None,
        pidfile,
        log,
        publishes: !plan.ports.is_empty(),
    };
    pasta.pid = std::fs::read_to_string(&pasta.pidfile)
        .ok()
        .and_then(|s| s.trim().parse::<i32>().ok())
        .map(Pid::from_raw);
    if !out.status.success() || pasta.pid.is_none() {
        let stderr = stderr_summary(&String::from_utf8_lossy(&out.stderr));
        let why = if stderr.is_empty() {
            read_log(&pasta.log)
        } else {
            stderr
        };
        pasta.stop();
        return Err(Error::Helper(format!(
            "pasta failed ({}): {why}",
            out.status
        )));
    }
    tracing::debug!(pid, "pasta ready");
    crate::phase::mark("network-ready");
    Ok(pasta)
}

impl Helper for Pasta {
    fn stop(&mut self) {
        if let Some(pid) = self.pid.take() {
            crate::phase::mark("network-stop");
            let _ = kill(pid, Signal::SIGTERM);
            // It is our child now (we are a subreaper): wait for its end, and reap it.
            if !super::wait_gone(pid, STOP_TIMEOUT) {
                let _ = kill(pid, Signal::SIGKILL);
                super::wait_gone(pid, STOP_TIMEOUT);
            }
            crate::phase::mark("network-stopped");
        }
        let _ = std::fs::remove_file(&self.pidfile);
        let _ = std::fs::remove_file(&self.log);
    }

    fn begin_stop(&mut self) -> Option<Pid> {
        if self.publishes {
            self.stop();
            return None;
        }
        let pid = self.pid.take()?;
        crate::phase::mark("network-stop");
        // SIGKILL, not SIGTERM: nobody waits to kill it later, and it has nothing to
        // save (its files are ours, removed here).
        let _ = kill(pid, Signal::SIGKILL);
        let _ = std::fs::remove_file(&self.pidfile);
        let _ = std::fs::remove_file(&self.log);
        Some(pid)
    }
}

impl Drop for Pasta {
    fn drop(&mut self) {
        self.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_and_isolation_flags() {
        let plan = NetPlan {
            mode: super::super::Mode::Pasta,
            ports: vec![
                "127.0.0.1:8080:80".parse().unwrap(),
                "9090:90/udp".parse().unwrap(),
            ],
            host_loopback: false,
            run_dir: PathBuf::from("/x"),
            fallback: false,
            slirp_flags: None,
            bridge: None,
        };
        let a = args(&plan, 42, "/x/p", "/x/l").join(" ");
        assert!(a.contains("-t 127.0.0.1/8080:80"), "{a}");
        assert!(a.contains("-u 9090:90"), "{a}");
        assert!(a.contains("--no-map-gw -T none -U none"), "{a}");
        assert!(a.ends_with(" 42"), "{a}");
        let open = NetPlan {
            host_loopback: true,
            ports: vec![],
            ..plan
        };
        let a = args(&open, 42, "/x/p", "/x/l").join(" ");
        assert!(!a.contains("--no-map-gw"), "{a}");
        assert!(a.contains("-t none") && a.contains("-u none"), "{a}");
    }
}
