//! A container's confinement, from its config to its spec: docker's default capability
//! set with `cap-add`/`cap-drop`, `security-opt` (no-new-privileges, seccomp profile),
//! `privileged`, `read-only` (+ tmpfs), `ulimits` and `sysctls`.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    Capabilities, Capability, LinuxCapabilitiesBuilder, Mount, MountBuilder, PosixRlimit,
    PosixRlimitBuilder, PosixRlimitType, Spec,
};

use super::config::ContainerConfig;
use super::container::Record;
use super::seccomp_profile::Profile;
use super::Error;
use crate::runtime::{caps, rlimits};

/// docker's default capabilities.
pub const DEFAULT_CAPS: [&str; 14] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "FSETID",
    "FOWNER",
    "MKNOD",
    "NET_RAW",
    "SETGID",
    "SETUID",
    "SETFCAP",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "KILL",
    "AUDIT_WRITE",
];

/// docker's default set as a mask.
pub fn default_caps() -> u64 {
    DEFAULT_CAPS
        .iter()
        .filter_map(|n| caps::number(n))
        .fold(0, |m, c| m | 1 << c)
}

/// The seccomp choice of `security-opt`.
#[derive(Debug, Clone, PartialEq)]
pub enum Seccomp {
    /// skiff's default profile.
    Default,
    /// No filter.
    Unconfined,
    /// A profile's JSON text.
    Profile(String),
}

/// `security-opt`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityOpts {
    /// `no-new-privileges`.
    pub no_new_privileges: bool,
    /// The seccomp profile.
    pub seccomp: Seccomp,
}

fn bad(key: &str, msg: String) -> Error {
    Error::InvalidConfig(format!("key \"{key}\": {msg}"))
}

/// Parses `security-opt` (docker's `--security-opt`; `:` is accepted for `=`).
pub fn security_opts(cfg: &ContainerConfig) -> Result<SecurityOpts, Error> {
    let mut o = SecurityOpts {
        no_new_privileges: false,
        seccomp: Seccomp::Default,
    };
    for opt in &cfg.security_opt {
        let (k, v) = match opt.split_once(['=', ':']) {
            Some((k, v)) => (k, Some(v)),
            None => (opt.as_str(), None),
        };
        match (k, v) {
            ("no-new-privileges", None) => o.no_new_privileges = true,
            ("no-new-privileges", Some(v)) => {
                o.no_new_privileges = v.parse().map_err(|_| {
                    bad(
                        "security-opt",
                        format!("no-new-privileges={v:?}: use true or false"),
                    )
                })?
            }
            ("seccomp", Some("unconfined")) => o.seccomp = Seccomp::Unconfined,
            ("seccomp", Some(json)) if json.trim_start().starts_with('{') => {
                Profile::parse(json)?;
                o.seccomp = Seccomp::Profile(json.to_string());
            }
            ("seccomp", _) => {
                return Err(bad(
                    "security-opt",
                    "seccomp takes \"unconfined\" or a profile's JSON text (skiff's \
                     --security-opt seccomp=FILE reads the file)"
                        .into(),
                ))
            }
            ("label" | "apparmor", _) => {
                return Err(bad(
                    "security-opt",
                    format!("{k} is not supported (skiff has no LSM support)"),
                ))
            }
            _ => {
                return Err(bad(
                    "security-opt",
                    format!(
                        "unknown option {opt:?} (known: no-new-privileges[=true|false], \
                         seccomp=unconfined|PROFILE)"
                    ),
                ))
            }
        }
    }
    Ok(o)
}

fn cap_list(key: &str, names: &[String]) -> Result<(bool, u64), Error> {
    let mut all = false;
    let mut m = 0;
    for n in names {
        if n.eq_ignore_ascii_case("ALL") {
            all = true;
            continue;
        }
        let c = caps::number(n).ok_or_else(|| {
            bad(
                key,
                format!("unknown capability {n:?} (names as in capabilities(7), with or without CAP_, or ALL)"),
            )
        })?;
        m |= 1 << c;
    }
    Ok((all, m))
}

/// The container's capability mask: docker's default set, or everything with
/// `privileged`; `cap-drop` then `cap-add` (`ALL` in either).
pub fn cap_mask(cfg: &ContainerConfig) -> Result<u64, Error> {
    let all = caps::all_mask();
    if cfg.privileged {
        return Ok(all);
    }
    let (drop_all, drop) = cap_list("cap-drop", &cfg.cap_drop)?;
    let (add_all, add) = cap_list("cap-add", &cfg.cap_add)?;
    let mut m = if drop_all { 0 } else { default_caps() & !drop };
    if add_all {
        m = all & !drop;
    }
    Ok((m | add) & all)
}

/// `ulimits`, parsed: `NAME=SOFT[:HARD]`, -1 = unlimited.
pub fn ulimits(cfg: &ContainerConfig) -> Result<Vec<PosixRlimit>, Error> {
    let mut out: Vec<PosixRlimit> = Vec::new();
    for u in &cfg.ulimits {
        let (name, vals) = u.split_once('=').ok_or_else(|| {
            bad(
                "ulimits",
                format!("{u:?} is not of the form NAME=SOFT[:HARD]"),
            )
        })?;
        let typ = rlimits::NAMES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                let known: Vec<&str> = rlimits::NAMES.iter().map(|(n, _)| *n).collect();
                bad(
                    "ulimits",
                    format!("unknown limit {name:?} (known: {})", known.join(", ")),
                )
            })?;
        let num = |s: &str| -> Result<u64, Error> {
            match s {
                "-1" | "unlimited" => Ok(u64::MAX),
                _ => s.parse().map_err(|_| {
                    bad(
                        "ulimits",
                        format!("{u:?}: {s:?} is not a number (or -1 for unlimited)"),
                    )
                }),
            }
        };
        let (soft, hard) = match vals.split_once(':') {
            Some((s, h)) => (num(s)?, num(h)?),
            None => (num(vals)?, num(vals)?),
        };
        if soft > hard {
            return Err(bad(
                "ulimits",
                format!("{u:?}: the soft limit is above the hard limit"),
            ));
        }
        out.retain(|l| l.typ() != typ);
        out.push(rlimit(typ, soft, hard)?);
    }
    Ok(out)
}

fn rlimit(typ: PosixRlimitType, soft: u64, hard: u64) -> Result<PosixRlimit, Error> {
    PosixRlimitBuilder::default()
        .typ(typ)
        .soft(soft)
        .hard(hard)
        .build()
        .map_err(|e| Error::Internal(format!("building an rlimit: {e}")))
}

/// IPC-namespace sysctls (docker's list).
const IPC_SYSCTLS: [&str; 8] = [
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Checks that each sysctl is namespaced and the container has that namespace.
fn validate_sysctls(cfg: &ContainerConfig) -> Result<(), Error> {
    let host_net = cfg.network.as_deref() == Some("host");
    for key in cfg.sysctls.keys() {
        let ok_name = !key.is_empty()
            && key.split('.').all(|c| {
                !c.is_empty()
                    && c.chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || "_-".contains(ch))
            });
        if !ok_name {
            return Err(bad("sysctls", format!("{key:?} is not a sysctl name")));
        }
        let allowed = IPC_SYSCTLS.contains(&key.as_str())
            || key.starts_with("fs.mqueue.")
            || key == "kernel.domainname"
            || key.starts_with("net.");
        if !allowed {
            return Err(bad(
                "sysctls",
                format!(
                    "{key:?} is not namespaced, so a container cannot set it; allowed: \
                     net.* (with a network namespace of its own), {}, fs.mqueue.*, \
                     kernel.domainname",
                    IPC_SYSCTLS.join(", ")
                ),
            ));
        }
        if key.starts_with("net.") && host_net {
            return Err(bad(
                "sysctls",
                format!(
                    "{key:?} cannot be set with network mode \"host\" (it would be the host's)"
                ),
            ));
        }
        // Per-interface keys name the container's interfaces, which the host may lack;
        // the container's start reports those if they are wrong.
        let per_interface = [
            "net.ipv4.conf.",
            "net.ipv6.conf.",
            "net.ipv4.neigh.",
            "net.ipv6.neigh.",
        ]
        .iter()
        .any(|p| key.starts_with(p));
        let proc = Path::new("/proc/sys").join(key.replace('.', "/"));
        if !per_interface && !proc.exists() {
            return Err(bad(
                "sysctls",
                format!("unknown sysctl {key:?} (no {})", proc.display()),
            ));
        }
    }
    Ok(())
}

/// Checks every security key of the config.
pub fn validate(cfg: &ContainerConfig) -> Result<(), Error> {
    cap_mask(cfg)?;
    security_opts(cfg)?;
    ulimits(cfg)?;
    validate_sysctls(cfg)?;
    if cfg.read_only_tmpfs.is_some() && !cfg.read_only {
        return Err(bad(
            "read-only-tmpfs",
            "only applies with \"read-only\"".into(),
        ));
    }
    Ok(())
}

fn cap_set(mask: u64) -> Capabilities {
    (0..64u32)
        .filter(|c| mask & (1 << c) != 0)
        .filter_map(|c| serde_json::from_value::<Capability>(serde_json::json!(caps::name(c))).ok())
        .collect()
}

fn tmpfs(dest: &str, mode: &str) -> Result<Mount, Error> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ("tmpfs")
        .source(PathBuf::from("tmpfs"))
        .options(
            ["rw", "nosuid", "nodev", mode]
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>(),
        )
        .build()
        .map_err(|e| Error::Internal(format!("building a mount: {e}")))
}

/// Device nodes below /dev that the user may open, other than the defaults every
/// container has (for `privileged`).
fn host_devices() -> Vec<PathBuf> {
    const SKIP: [&str; 12] = [
        "null", "zero", "full", "tty", "random", "urandom", "ptmx", "console", "pts", "shm",
        "mqueue", "fd",
    ];
    use std::os::unix::fs::FileTypeExt;
    let mut out = Vec::new();
    let mut dirs = vec![(PathBuf::from("/dev"), 0)];
    while let Some((dir, depth)) = dirs.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let name = e.file_name();
            if depth == 0 && SKIP.iter().any(|s| name == *s) {
                continue;
            }
            let Ok(ft) = e.file_type() else { continue };
            let path = e.path();
            if ft.is_dir() && depth < 2 {
                dirs.push((path, depth + 1));
            } else if (ft.is_char_device() || ft.is_block_device())
                && (nix::unistd::access(&path, nix::unistd::AccessFlags::R_OK).is_ok()
                    || nix::unistd::access(&path, nix::unistd::AccessFlags::W_OK).is_ok())
            {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// Applies the record's confinement to its spec.
pub fn apply(rec: &Record, spec: &mut Spec) -> Result<(), Error> {
    let cfg = &rec.config;
    let mask = cap_mask(cfg)?;
    let opts = security_opts(cfg)?;
    let set = cap_set(mask);
    let capabilities = LinuxCapabilitiesBuilder::default()
        .bounding(set.clone())
        .effective(set.clone())
        .permitted(set)
        .inheritable(Capabilities::new())
        .ambient(Capabilities::new())
        .build()
        .map_err(|e| Error::Internal(format!("building capabilities: {e}")))?;
    // Default RLIMIT_NOFILE: skiffd's hard limit as both limits (podman's).
    let mut limits = ulimits(cfg)?;
    if !limits
        .iter()
        .any(|l| l.typ() == PosixRlimitType::RlimitNofile)
    {
        if let Ok((_, hard)) = rlimits::get(PosixRlimitType::RlimitNofile) {
            limits.push(rlimit(PosixRlimitType::RlimitNofile, hard, hard)?);
        }
    }
    if let Some(p) = spec.process_mut() {
        p.set_capabilities(Some(capabilities));
        p.set_no_new_privileges(Some(opts.no_new_privileges));
        p.set_rlimits(Some(limits));
    }
    let seccomp = match (&opts.seccomp, cfg.privileged) {
        (Seccomp::Unconfined, _) | (Seccomp::Default, true) => None,
        (Seccomp::Default, false) => Some(Profile::default_profile().to_oci(mask)?),
        (Seccomp::Profile(json), _) => Some(Profile::parse(json)?.to_oci(mask)?),
    };
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    if cfg.read_only && cfg.read_only_tmpfs.unwrap_or(true) {
        mounts.push(tmpfs("/tmp", "mode=1777")?);
        mounts.push(tmpfs("/var/tmp", "mode=1777")?);
        mounts.push(tmpfs("/run", "mode=755")?);
    }
    if cfg.privileged {
        for dev in host_devices() {
            mounts.push(
                MountBuilder::default()
                    .destination(dev.clone())
                    .typ("bind")
                    .source(dev)
                    .options(vec!["bind".to_string(), "nosuid".to_string()])
                    .build()
                    .map_err(|e| Error::Internal(format!("building a mount: {e}")))?,
            );
        }
    }
    spec.set_mounts(Some(mounts));
    if let Some(root) = spec.root_mut() {
        root.set_readonly(Some(cfg.read_only));
    }
    if let Some(linux) = spec.linux_mut() {
        linux.set_seccomp(seccomp);
        if !cfg.sysctls.is_empty() {
            linux.set_sysctl(Some(cfg.sysctls.clone().into_iter().collect()));
        }
        if cfg.privileged {
            linux.set_masked_paths(None);
            linux.set_readonly_paths(None);
        }
    }
    Ok(())
}

/// Adds docker's HostConfig security fields to `inspect`.
pub fn extend_inspect(v: &mut serde_json::Value, rec: &Record) {
    let c = &rec.config;
    let h = &mut v["HostConfig"];
    let list = |l: &[String]| -> serde_json::Value {
        if l.is_empty() {
            serde_json::Value::Null
        } else {
            l.into()
        }
    };
    h["CapAdd"] = list(&c.cap_add);
    h["CapDrop"] = list(&c.cap_drop);
    h["SecurityOpt"] = list(&c.security_opt);
    h["Privileged"] = c.privileged.into();
    h["ReadonlyRootfs"] = c.read_only.into();
    h["Ulimits"] = ulimits(c)
        .unwrap_or_default()
        .iter()
        .map(|l| {
            serde_json::json!({
                "Name": rlimits::name(l.typ()),
                "Soft": l.soft() as i64,
                "Hard": l.hard() as i64,
            })
        })
        .collect::<Vec<_>>()
        .into();
    h["Sysctls"] = serde_json::to_value(&c.sysctls).unwrap_or_default();
}

/// The security options in force, for `info` (docker's `SecurityOptions` form).
pub fn info_options() -> Vec<String> {
    let mut v = vec![
        "name=rootless".to_string(),
        "name=seccomp,profile=builtin".to_string(),
    ];
    if !cfg!(target_arch = "x86_64") {
        v.pop();
    }
    v.push(format!(
        "name=capabilities,default={}",
        DEFAULT_CAPS.map(|c| format!("CAP_{c}")).join(",")
    ));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: serde_json::Value) -> Result<ContainerConfig, Error> {
        let mut v = v;
        v["image"] = json!("x");
        ContainerConfig::from_json_value(v)
    }

    #[test]
    fn capability_arithmetic() {
        let c = |v| cap_mask(&cfg(v).unwrap()).unwrap();
        assert_eq!(c(json!({})), default_caps());
        assert_eq!(default_caps().count_ones(), 14);
        assert_eq!(c(json!({"cap-drop": ["ALL"]})), 0);
        assert_eq!(
            c(json!({"cap-drop": ["all"], "cap-add": ["net_bind_service"]})),
            1 << 10
        );
        assert_eq!(c(json!({"cap-drop": ["CAP_CHOWN"]})), default_caps() & !1);
        assert_eq!(
            c(json!({"cap-add": ["ALL"], "cap-drop": ["SYS_ADMIN"]})),
            caps::all_mask() & !(1 << 21)
        );
        assert_eq!(c(json!({"privileged": true})), caps::all_mask());
        let e = cfg(json!({"cap-add": ["CAP_FLY"]}))
            .unwrap_err()
            .to_string();
        assert!(e.contains("CAP_FLY") && e.contains("cap-add"), "{e}");
    }

    #[test]
    fn security_opts_ulimits_and_sysctls() {
        let o =
            security_opts(&cfg(json!({"security-opt": ["no-new-privileges"]})).unwrap()).unwrap();
        assert!(o.no_new_privileges);
        let o = security_opts(
            &cfg(json!({"security-opt": ["no-new-privileges=false", "seccomp=unconfined"]}))
                .unwrap(),
        )
        .unwrap();
        assert!(!o.no_new_privileges);
        assert_eq!(o.seccomp, Seccomp::Unconfined);
        for bad in [
            json!({"security-opt": ["seccomp=/tmp/x.json"]}),
            json!({"security-opt": ["seccomp={\"defaultAction\": 1}"]}),
            json!({"security-opt": ["bogus"]}),
            json!({"ulimits": ["nofile=10:5"]}),
            json!({"ulimits": ["files=10"]}),
            json!({"ulimits": ["nofile"]}),
            json!({"sysctls": {"vm.swappiness": "1"}}),
            json!({"sysctls": {"net.ipv4.ip_forward": "1"}, "network": "host"}),
            json!({"sysctls": {"net.ipv4.no_such_thing": "1"}}),
            json!({"read-only-tmpfs": false}),
        ] {
            assert!(cfg(bad.clone()).is_err(), "{bad}");
        }
        let c = cfg(json!({"ulimits": ["nofile=4096:8192", "core=-1"]})).unwrap();
        let l = ulimits(&c).unwrap();
        assert_eq!((l[0].soft(), l[0].hard()), (4096, 8192));
        assert_eq!(l[1].hard(), u64::MAX);
        assert!(
            cfg(json!({"sysctls": {"net.ipv4.ip_forward": "1", "kernel.shmmni": "100"}})).is_ok()
        );
    }
}
