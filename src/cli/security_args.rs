//! The confinement flags of `run`/`create` (--cap-add, --cap-drop, --security-opt,
//! --privileged, --read-only, --read-only-tmpfs, --ulimit, --sysctl) and their config keys.

use std::collections::HashMap;

use zbus::{OwnedVariant, Variant};

use super::Failure;

/// Confinement flags.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct SecurityArgs {
    /// Add a capability to docker's default set (CAP_NAME, NAME or ALL).
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a capability from docker's default set (CAP_NAME, NAME or ALL).
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// no-new-privileges[=true|false], seccomp=unconfined or seccomp=PROFILE.json
    /// (docker's JSON profile format).
    #[arg(long = "security-opt", value_name = "OPT")]
    pub security_opt: Vec<String>,
    /// Every capability the user namespace holds, no seccomp filter, no masked paths,
    /// the host's devices you may open.
    #[arg(long)]
    pub privileged: bool,
    /// Mount the container's root filesystem read-only.
    #[arg(long = "read-only")]
    pub read_only: bool,
    /// With --read-only: writable tmpfs on /tmp, /var/tmp and /run (default true).
    #[arg(long = "read-only-tmpfs", value_name = "BOOL", num_args = 0..=1,
          default_missing_value = "true", action = clap::ArgAction::Set)]
    pub read_only_tmpfs: Option<bool>,
    /// Resource limit NAME=SOFT[:HARD] (e.g. nofile=4096:8192; -1 = unlimited).
    #[arg(long = "ulimit", value_name = "NAME=SOFT[:HARD]")]
    pub ulimits: Vec<String>,
    /// Namespaced kernel parameter KEY=VALUE (net.*, kernel.shm*, kernel.msg*, ...).
    #[arg(long = "sysctl", value_name = "KEY=VALUE")]
    pub sysctls: Vec<String>,
}

/// docker's exit code for a `run`/`create` that fails before the container exists.
fn usage(message: String) -> Failure {
    Failure { message, code: 125 }
}

fn ov<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(format!("encoding the config: {e}")))
}

/// `seccomp=FILE` becomes `seccomp=` + the file's JSON (docker's client does the same:
/// the daemon may not see the client's files).
fn security_opt(opt: &str) -> Result<String, Failure> {
    let Some(path) = opt
        .strip_prefix("seccomp=")
        .or_else(|| opt.strip_prefix("seccomp:"))
    else {
        return Ok(opt.to_string());
    };
    if path == "unconfined" || path.trim_start().starts_with('{') {
        return Ok(opt.to_string());
    }
    let json = std::fs::read_to_string(path).map_err(|e| {
        usage(format!(
            "--security-opt seccomp={path}: cannot read the profile: {e}"
        ))
    })?;
    Ok(format!("seccomp={json}"))
}

/// Adds the flags' config keys to `m`.
pub fn insert(
    a: &SecurityArgs,
    m: &mut HashMap<&'static str, OwnedVariant>,
) -> Result<(), Failure> {
    for (key, list) in [
        ("cap-add", &a.cap_add),
        ("cap-drop", &a.cap_drop),
        ("ulimits", &a.ulimits),
    ] {
        if !list.is_empty() {
            m.insert(key, ov(list.clone())?);
        }
    }
    if !a.security_opt.is_empty() {
        let opts = a
            .security_opt
            .iter()
            .map(|o| security_opt(o))
            .collect::<Result<Vec<_>, _>>()?;
        m.insert("security-opt", ov(opts)?);
    }
    if a.privileged {
        m.insert("privileged", ov(true)?);
    }
    if a.read_only {
        m.insert("read-only", ov(true)?);
    }
    if let Some(t) = a.read_only_tmpfs {
        m.insert("read-only-tmpfs", ov(t)?);
    }
    if !a.sysctls.is_empty() {
        let map = a
            .sysctls
            .iter()
            .map(|s| match s.split_once('=') {
                Some((k, v)) => Ok((k.to_string(), v.to_string())),
                None => Err(usage(format!("--sysctl {s:?}: use KEY=VALUE"))),
            })
            .collect::<Result<HashMap<String, String>, _>>()?;
        m.insert("sysctls", ov(map)?);
    }
    Ok(())
}
