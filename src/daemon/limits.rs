//! Resource limits (`memory`, `cpus`, `pids-limit`): checked when a container is
//! created, applied by its monitor in the container's cgroup (`crate::cgroup`). They
//! need a cgroup of the container's own — a scope of a systemd user manager — with the
//! controllers delegated; otherwise creation fails with `NotSupported`, saying which
//! controller is missing and how to delegate it.

use crate::cgroup::{self, Limits};

use super::config::{parse_size, ContainerConfig};
use super::Error;

/// cpu.max's period (µs), as docker's `--cpus`.
const CPU_PERIOD: u64 = 100_000;

/// The limits a configuration asks for (None: none), its values checked.
pub fn limits_of(cfg: &ContainerConfig) -> Result<Option<Limits>, Error> {
    let mut l = Limits::default();
    if let Some(m) = &cfg.memory {
        l.memory = Some(parse_size(m).filter(|n| *n > 0).ok_or_else(|| {
            Error::InvalidConfig(format!(
                "key \"memory\": {m:?} is not a size greater than 0 (e.g. 512m, 1g)"
            ))
        })?);
    }
    if let Some(c) = cfg.cpus {
        if !c.is_finite() || c <= 0.0 || c > 1024.0 {
            return Err(Error::InvalidConfig(format!(
                "key \"cpus\": {c} is not a number of CPUs greater than 0 (e.g. 0.5, 2)"
            )));
        }
        let quota = ((c * CPU_PERIOD as f64).round() as u64).max(1000);
        l.cpu = Some((quota, CPU_PERIOD));
    }
    match cfg.pids_limit {
        Some(n) if n > 0 => l.pids = Some(n as u64),
        Some(n) if n < -1 => {
            return Err(Error::InvalidConfig(format!(
                "key \"pids-limit\": {n} is not a number of processes (-1 or 0: unlimited)"
            )))
        }
        _ => {}
    }
    Ok((!l.is_empty()).then_some(l))
}

/// Whether the limits can be applied to the containers this skiffd starts: it must run
/// under a user manager (containers then get scopes), and the scopes' slice must offer
/// the controllers.
pub async fn check_available(limits: &Limits) -> Result<(), Error> {
    let flags = |l: &Limits| {
        let mut f = Vec::new();
        if l.memory.is_some() {
            f.push("--memory");
        }
        if l.cpu.is_some() {
            f.push("--cpus");
        }
        if l.pids.is_some() {
            f.push("--pids-limit");
        }
        f.join(", ")
    };
    if !super::scope::has_manager().await {
        return Err(Error::NotSupported(format!(
            "{} need{} a cgroup of the container's own, and skiffd does not run under a \
             systemd user manager, so containers get none: run skiffd as a user service \
             (systemctl --user start skiffd; see systemd/README.md) on a host with cgroup v2 \
             and the controllers delegated",
            flags(limits),
            if limits.controllers().len() == 1 {
                "s"
            } else {
                ""
            }
        )));
    }
    // The scopes go beside skiffd's own unit, in the same slice.
    let slice = cgroup::cgroup_of("self").and_then(|p| p.parent().map(|p| p.to_path_buf()));
    let have = slice
        .as_deref()
        .map(cgroup::available_controllers)
        .unwrap_or_default();
    let missing: Vec<&str> = limits
        .controllers()
        .into_iter()
        .filter(|c| !have.iter().any(|h| h == c))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    Err(Error::NotSupported(format!(
        "{} cannot be applied: the {} cgroup controller{} not delegated to your user \
         manager (this host's cgroup v2 offers {} there); {}",
        flags(limits),
        missing.join(", "),
        if missing.len() == 1 { " is" } else { "s are" },
        if have.is_empty() {
            "none".to_string()
        } else {
            have.join(" ")
        },
        cgroup::DELEGATE_HINT
    )))
}

/// docker's `HostConfig.Memory` (bytes), `NanoCpus` and `PidsLimit` (0: none).
pub fn extend_inspect(v: &mut serde_json::Value, cfg: &ContainerConfig) {
    let l = limits_of(cfg).ok().flatten().unwrap_or_default();
    let hc = &mut v["HostConfig"];
    hc["Memory"] = serde_json::json!(l.memory.unwrap_or(0));
    hc["NanoCpus"] = serde_json::json!(l
        .cpu
        .map(|(quota, period)| quota * 1_000_000_000 / period)
        .unwrap_or(0));
    hc["PidsLimit"] = serde_json::json!(l.pids.unwrap_or(0));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(memory: Option<&str>, cpus: Option<f64>, pids: Option<i64>) -> ContainerConfig {
        ContainerConfig {
            image: "x".into(),
            memory: memory.map(str::to_string),
            cpus,
            pids_limit: pids,
            ..Default::default()
        }
    }

    #[test]
    fn values_become_cgroup_limits() {
        let l = limits_of(&cfg(Some("512m"), Some(1.5), Some(100)))
            .unwrap()
            .unwrap();
        assert_eq!(l.memory, Some(512 << 20));
        assert_eq!(l.cpu, Some((150_000, 100_000)));
        assert_eq!(l.pids, Some(100));
        let mut v = serde_json::json!({"HostConfig": {}});
        extend_inspect(&mut v, &cfg(Some("512m"), Some(1.5), Some(100)));
        assert_eq!(v["HostConfig"]["NanoCpus"], 1_500_000_000u64);
        assert_eq!(v["HostConfig"]["Memory"], 512u64 << 20);
        assert_eq!(limits_of(&cfg(None, None, Some(-1))).unwrap(), None);
        assert_eq!(limits_of(&cfg(None, None, None)).unwrap(), None);
    }

    #[test]
    fn bad_values_name_the_key() {
        for (c, key) in [
            (cfg(Some("lots"), None, None), "memory"),
            (cfg(None, Some(0.0), None), "cpus"),
            (cfg(None, Some(f64::NAN), None), "cpus"),
            (cfg(None, None, Some(-5)), "pids-limit"),
        ] {
            let e = limits_of(&c).unwrap_err().to_string();
            assert!(e.contains(key), "{e}");
        }
    }
}
