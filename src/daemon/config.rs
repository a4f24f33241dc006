//! The container configuration a client sends: one serde struct behind both the D-Bus
//! `a{sv}` dictionary and its JSON twin. Unknown keys are refused, naming the key; keys
//! the API reserves for features still to come are refused with "not supported yet".

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::restart::RestartPolicy;
use super::Error;

/// A container's configuration, as given by the client (docker's flags in `a{sv}` form).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct ContainerConfig {
    /// Image reference or id (required).
    pub image: String,
    /// Container name; random `adjective_surname` when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Overrides the image's CMD.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Vec<String>>,
    /// Overrides the image's ENTRYPOINT (and then drops the image's CMD, as docker does).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// `K=V` pairs added after the image's environment.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Working directory inside the container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<String>,
    /// `NAME`, `UID`, `NAME:GROUP` or `UID:GID` (names from the container's
    /// `/etc/passwd` and `/etc/group`, resolved when it starts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// More supplementary groups (names from the container's `/etc/group`, or numbers).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_add: Vec<String>,
    /// Run skiff's minimal init as PID 1 (reaps zombies, forwards signals).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub init: bool,
    /// The user namespace: absent or `""` for the default mapping (0 is you, 1.. your
    /// subordinate ids, in the user namespace all such containers share), `private` for
    /// the default mapping in a namespace of the container's own, `keep-id` for your own
    /// uid and gid as the same numbers inside.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub userns: Option<String>,
    /// Size of the `/dev/shm` tmpfs (docker's sizes: `64m`, `1g`; default 64m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shm_size: Option<String>,
    /// Hostname; defaults to the first 12 hex digits of the id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// `slirp4netns`, `pasta`, `none` (loopback only) or `host`; the daemon's default
    /// (`skiffd --network`, slirp4netns) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// Published ports, docker's `-p`: `[[IP:][HOST]:]CONTAINER[/tcp|/udp]`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<String>,
    /// More ports the container exposes (docker's `--expose`: `PORT[-END][/PROTO]`),
    /// published by `publish-all` like the image's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose: Vec<String>,
    /// Publish every port the image exposes on a free host port (`-P`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub publish_all: bool,
    /// DNS servers for resolv.conf (replace the default ones).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns: Vec<String>,
    /// DNS search domains (replace the host's; `.` for none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_search: Vec<String>,
    /// resolv.conf options (replace the host's).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dns_option: Vec<String>,
    /// Extra /etc/hosts entries, `NAME:IP`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub add_host: Vec<String>,
    /// Let the container reach the host's loopback (as host.containers.internal).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub host_loopback: bool,
    /// Remove the container when it exits.
    #[serde(default)]
    pub auto_remove: bool,
    /// Allocate a pseudo-terminal (from the container's devpts), held by the monitor;
    /// clients reach it through `Container.Attach`.
    #[serde(default)]
    pub tty: bool,
    /// The pty's window size `[rows, cols]` when the command starts (docker's
    /// ConsoleSize); with `tty` only. `Container.Resize` on a stopped tty container
    /// replaces it for the next start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_size: Option<[u16; 2]>,
    /// Keep stdin open: with passed fds, the client's stdin; otherwise a pipe the
    /// monitor feeds from attached clients.
    #[serde(default)]
    pub interactive: bool,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<String>,
    /// Signal number sent by stop (default SIGTERM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_signal: Option<i32>,
    /// Seconds stop waits before SIGKILL (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_timeout: Option<u64>,
    /// docker's `-v` strings: `SRC:DST[:OPTS]`, `VOLUME:DST[:OPTS]` or an anonymous `DST`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<String>,
    /// docker's `--mount` objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<super::mounts::MountConfig>,
    /// docker's `--tmpfs`: target → options (`size=64m,mode=1777`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tmpfs: BTreeMap<String, String>,
    /// json-file log options: `max-size` (e.g. 10m) and `max-file`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub log_opts: BTreeMap<String, String>,
    /// Capabilities added to docker's default set (`ALL`, names with or without `CAP_`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_add: Vec<String>,
    /// Capabilities removed from docker's default set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cap_drop: Vec<String>,
    /// docker's `--security-opt`: `no-new-privileges[=true|false]`, `seccomp=unconfined`
    /// or `seccomp=` followed by a profile's JSON text.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security_opt: Vec<String>,
    /// Every capability the user namespace holds, no seccomp filter, no masked paths, the
    /// host's devices the user may open.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub privileged: bool,
    /// Mount the root filesystem read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub read_only: bool,
    /// With `read-only`: writable tmpfs on /tmp, /var/tmp and /run (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_only_tmpfs: Option<bool>,
    /// Resource limits, docker's `--ulimit`: `NAME=SOFT[:HARD]` (-1 = unlimited).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<String>,
    /// Namespaced kernel parameters (`net.*`, `kernel.msg*`, `kernel.shm*`, ...).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sysctls: BTreeMap<String, String>,
    /// Memory limit (docker's sizes: `512m`, `1g`): the cgroup's `memory.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5): the cgroup's `cpu.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    /// Most processes at once (`-1` or 0: unlimited): the cgroup's `pids.max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids_limit: Option<i64>,
}

impl ContainerConfig {
    /// Decodes a configuration from a JSON value, naming the offending key on errors.
    pub fn from_json_value(value: serde_json::Value) -> Result<ContainerConfig, Error> {
        let cfg: ContainerConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            Error::InvalidConfig(if path == "." {
                e.inner().to_string()
            } else {
                format!("key \"{path}\": {}", e.inner())
            })
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Decodes a configuration from JSON text (the `CreateContainerJSON` twin).
    pub fn from_json_str(s: &str) -> Result<ContainerConfig, Error> {
        let value: serde_json::Value = serde_json::from_str(s)
            .map_err(|e| Error::InvalidConfig(format!("not valid JSON: {e}")))?;
        if !value.is_object() {
            return Err(Error::InvalidConfig(
                "the configuration must be a JSON object".into(),
            ));
        }
        Self::from_json_value(value)
    }

    /// Checks values that serde's types cannot.
    pub fn validate(&self) -> Result<(), Error> {
        if self.image.is_empty() {
            return Err(Error::InvalidConfig("key \"image\" is required".into()));
        }
        if let Some(name) = &self.name {
            validate_name(name)?;
        }
        for kv in &self.env {
            if kv.is_empty() || kv.starts_with('=') {
                return Err(Error::InvalidConfig(format!(
                    "key \"env\": {kv:?} is not of the form NAME=VALUE"
                )));
            }
        }
        if let Some(h) = &self.hostname {
            if h.is_empty() || h.len() > 64 || h.contains('/') || h.contains('\0') {
                return Err(Error::InvalidConfig(format!(
                    "key \"hostname\": {h:?} is not a valid hostname (1 to 64 characters)"
                )));
            }
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') {
                return Err(Error::InvalidConfig(format!(
                    "key \"workdir\": {w:?} must be an absolute path"
                )));
            }
        }
        self.validate_network()?;
        if self.console_size.is_some() && !self.tty {
            return Err(Error::InvalidConfig(
                "key \"console-size\": only a container with a tty (key \"tty\") has a console size"
                    .into(),
            ));
        }
        if let Some(u) = &self.user {
            parse_user(u)?;
        }
        for g in &self.group_add {
            if !valid_name(g)
                || (g.chars().all(|c| c.is_ascii_digit()) && g.parse::<u32>().is_err())
            {
                return Err(Error::InvalidConfig(format!(
                    "key \"group-add\": {g:?} is not a group name or number"
                )));
            }
        }
        self.shm_bytes()?;
        if !matches!(
            self.userns.as_deref(),
            None | Some("") | Some("keep-id") | Some(crate::userns::shared::PRIVATE)
        ) {
            return Err(Error::InvalidConfig(format!(
                "key \"userns\": {:?} is not supported: use \"keep-id\", \"private\" or leave it out",
                self.userns.as_deref().unwrap_or_default()
            )));
        }
        let policy = self.restart_policy()?;
        if self.auto_remove && policy != RestartPolicy::No {
            return Err(Error::InvalidConfig(
                "keys \"auto-remove\" and \"restart\" conflict: a container removed on exit cannot be restarted".into(),
            ));
        }
        if let Some(sig) = self.stop_signal {
            if nix::sys::signal::Signal::try_from(sig).is_err() {
                return Err(Error::InvalidConfig(format!(
                    "key \"stop-signal\": {sig} is not a signal number"
                )));
            }
        }
        self.log_limits()?;
        super::limits::limits_of(self)?;
        super::security::validate(self)?;
        super::mounts::plan(self)?;
        Ok(())
    }

    /// The `/dev/shm` size in bytes, when set.
    pub fn shm_bytes(&self) -> Result<Option<u64>, Error> {
        self.shm_size
            .as_deref()
            .map(|v| {
                parse_size(v).filter(|n| *n > 0).ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "key \"shm-size\": {v:?} is not a size greater than 0 (e.g. 64m, 1g)"
                    ))
                })
            })
            .transpose()
    }

    /// The restart policy.
    pub fn restart_policy(&self) -> Result<RestartPolicy, Error> {
        self.restart.as_deref().unwrap_or("no").parse()
    }

    /// `max-size` in bytes (0 = unlimited) and `max-file` from the log options.
    pub fn log_limits(&self) -> Result<(u64, u32), Error> {
        let mut size = 0;
        let mut files = 1;
        for (k, v) in &self.log_opts {
            match k.as_str() {
                "max-size" => {
                    size = parse_size(v).ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "key \"log-opts\": max-size {v:?} is not a size (e.g. 10m, 512k, 1g)"
                        ))
                    })?
                }
                "max-file" => {
                    files = v.parse().ok().filter(|n| *n >= 1).ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "key \"log-opts\": max-file {v:?} must be a number of at least 1"
                        ))
                    })?
                }
                other => {
                    return Err(Error::InvalidConfig(format!(
                        "key \"log-opts\": unknown option {other:?} (known: max-size, max-file)"
                    )))
                }
            }
        }
        Ok((size, files))
    }
}

/// Parses docker's sizes: `100`, `512k`, `10m`, `1g` (binary units).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

impl ContainerConfig {
    /// The network mode, if one is set.
    pub fn network_mode(&self) -> Result<Option<crate::netns::Mode>, Error> {
        self.network
            .as_deref()
            .map(|n| {
                n.parse()
                    .map_err(|e: String| Error::InvalidConfig(format!("key \"network\": {e}")))
            })
            .transpose()
    }

    /// The published ports, parsed (host ports may still be 0: chosen at start).
    pub fn port_mappings(&self) -> Result<Vec<crate::netns::PortMapping>, Error> {
        let mut out = Vec::new();
        for p in &self.publish {
            out.extend(
                crate::netns::ports::parse_publish(p)
                    .map_err(|e| Error::InvalidConfig(format!("key \"publish\": {e}")))?,
            );
        }
        Ok(out)
    }

    /// The `expose` ports, parsed (`PORT[-END][/PROTO]`, host ports 0).
    pub fn exposed_mappings(&self) -> Result<Vec<crate::netns::PortMapping>, Error> {
        let mut out = Vec::new();
        for p in &self.expose {
            if p.contains(':') {
                return Err(Error::InvalidConfig(format!(
                    "key \"expose\": {p:?} names a host address or port: use PORT[-END][/PROTO], \
                     and --publish for host ports"
                )));
            }
            out.extend(
                crate::netns::ports::parse_publish(p)
                    .map_err(|e| Error::InvalidConfig(format!("key \"expose\": {e}")))?,
            );
        }
        Ok(out)
    }

    fn validate_network(&self) -> Result<(), Error> {
        let mode = self.network_mode()?;
        let ports = self.port_mappings()?;
        self.exposed_mappings()?;
        if let Some(m) = mode.filter(|m| !m.has_helper()) {
            if !ports.is_empty() || self.publish_all {
                return Err(Error::InvalidConfig(format!(
                    "ports cannot be published with network mode \"{m}\": use slirp4netns or pasta"
                )));
            }
        }
        if mode == Some(crate::netns::Mode::None) {
            let flags = [
                ("dns", self.dns.is_empty()),
                ("dns-search", self.dns_search.is_empty()),
                ("dns-option", self.dns_option.is_empty()),
            ];
            if let Some((key, _)) = flags.iter().find(|(_, empty)| !empty) {
                return Err(Error::InvalidConfig(format!(
                    "key \"{key}\" (--{key}) conflicts with network mode \"none\": a container \
                     without a network resolves no names; drop --{key} or choose another network"
                )));
            }
        }
        for d in &self.dns {
            if d.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::InvalidConfig(format!(
                    "key \"dns\": {d:?} is not an IP address"
                )));
            }
        }
        for h in &self.add_host {
            if crate::netns::files::split_add_host(h).is_none() {
                return Err(Error::InvalidConfig(format!(
                    "key \"add-host\": {h:?} is not of the form NAME:IP"
                )));
            }
        }
        for v in self.dns_search.iter().chain(&self.dns_option) {
            if v.is_empty() || v.contains(char::is_whitespace) {
                return Err(Error::InvalidConfig(format!(
                    "keys \"dns-search\"/\"dns-option\": {v:?} must be one word"
                )));
            }
        }
        Ok(())
    }
}

/// Docker's container-name rule: `[a-zA-Z0-9][a-zA-Z0-9_.-]+`.
pub fn validate_name(name: &str) -> Result<(), Error> {
    let mut chars = name.chars();
    let ok = name.len() >= 2
        && chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if ok {
        Ok(())
    } else {
        Err(Error::InvalidConfig(format!(
            "key \"name\": {name:?} is not a valid container name: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]+"
        )))
    }
}

/// Checks `--user` (`NAME`, `UID`, `NAME:GROUP`, `UID:GID`, mixed; names are resolved
/// from the container's `/etc/passwd` and `/etc/group` when it starts) and returns the
/// numeric ids it gives without those files: a name counts as 0, a missing group as
/// the uid.
pub fn parse_user(user: &str) -> Result<(u32, u32), Error> {
    let bad = || {
        Error::InvalidConfig(format!(
            "key \"user\": {user:?} is not a user: use NAME, UID, NAME:GROUP or UID:GID"
        ))
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let id = |part: &str| -> Result<u32, Error> {
        if !valid_name(part) {
            return Err(bad());
        }
        match part.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) if part.chars().all(|c| c.is_ascii_digit()) => Err(bad()),
            Err(_) => Ok(0),
        }
    };
    let uid = id(u)?;
    let gid = match g {
        Some(g) => id(g)?,
        None => uid,
    };
    Ok((uid, gid))
}

/// A user or group name (or number) as passwd and group files can hold: not empty, no
/// `:`, `,`, whitespace or control characters.
fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && !s
            .chars()
            .any(|c| c == ':' || c == ',' || c.is_whitespace() || c.is_control())
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
