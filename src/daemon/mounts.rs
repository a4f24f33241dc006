//! A container's mounts: docker's three ways to ask for them (`binds`, the `-v` strings;
//! `mounts`, the `--mount` objects; `tmpfs`, target → options) checked with docker's
//! messages and merged into one list, which becomes OCI spec mounts (the runtime's
//! contract) and docker's `inspect` fields.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, MountBuilder};
use serde::{Deserialize, Serialize};

use super::config::{parse_size, ContainerConfig};
use super::Error;

/// One `--mount`: docker's fields.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct MountConfig {
    /// `bind`, `volume` or `tmpfs`.
    #[serde(rename = "type")]
    pub typ: String,
    /// Host path (bind), volume name (volume; none = a new anonymous volume), nothing (tmpfs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Absolute path in the container.
    pub target: String,
    /// Mount read-only.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub readonly: bool,
    /// Bind mounts: `rprivate` (default), `private`, `rshared`, `shared`, `rslave`, `slave`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bind_propagation: Option<String>,
    /// Volumes: do not seed a new volume with the image's content.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub volume_nocopy: bool,
    /// tmpfs: size limit (`64m`, bytes when no unit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_size: Option<String>,
    /// tmpfs: mode in octal (`1777`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tmpfs_mode: Option<String>,
}

/// The kind of a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A host path.
    Bind,
    /// A named or anonymous volume.
    Volume,
    /// A tmpfs.
    Tmpfs,
}

/// One mount of a container, as recorded at create.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Planned {
    /// Bind, volume or tmpfs.
    pub kind: Kind,
    /// Host path (bind) or volume name (empty until an anonymous volume is named).
    pub source: String,
    /// Absolute path in the container.
    pub target: String,
    /// Read-only.
    pub readonly: bool,
    /// Propagation (binds and volumes).
    pub propagation: String,
    /// No copy-up of the image's content into a new volume.
    pub nocopy: bool,
    /// A volume made for this container alone (`-v /path`, `--mount type=volume` without
    /// source, the image's VOLUME): removed with it by `rm -v` and `--rm`.
    pub anonymous: bool,
    /// tmpfs options (`size=…`, `mode=…`, flags).
    pub tmpfs_options: Vec<String>,
    /// docker's `Mode` field of inspect (the `-v` options as given).
    pub mode: String,
}

const PROPAGATIONS: [&str; 6] = [
    "private", "rprivate", "shared", "rshared", "slave", "rslave",
];

fn invalid(msg: String) -> Error {
    Error::InvalidConfig(msg)
}

/// docker's rule for local volume names.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// The message docker gives for a bad volume name (`-v ./dir:/x` lands here).
pub fn bad_volume_name(name: &str) -> String {
    format!(
        "{name:?} includes invalid characters for a local volume name, only \
         \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host \
         directory, use absolute path"
    )
}

/// A target: absolute, not `/`, normalised (`/a/./b/` → `/a/b`; `..` refused).
fn check_target(key: &str, target: &str) -> Result<String, Error> {
    if !target.starts_with('/') {
        return Err(invalid(format!(
            "key \"{key}\": invalid mount path: {target:?} mount path must be absolute"
        )));
    }
    let p = Path::new(target);
    if p.components().any(|c| c == Component::ParentDir) {
        return Err(invalid(format!(
            "key \"{key}\": invalid mount path: {target:?} must not contain \"..\""
        )));
    }
    let norm: PathBuf = p.components().collect();
    if norm == Path::new("/") {
        return Err(invalid(format!(
            "key \"{key}\": invalid specification: destination can't be '/'"
        )));
    }
    Ok(norm.display().to_string())
}

fn check_bind_source(key: &str, src: &str) -> Result<(), Error> {
    if !src.starts_with('/') {
        return Err(invalid(format!(
            "key \"{key}\": invalid mount config for type \"bind\": invalid mount path: \
             {src:?} mount path must be absolute"
        )));
    }
    if std::fs::metadata(src).is_err() {
        return Err(invalid(format!(
            "key \"{key}\": invalid mount config for type \"bind\": bind source path does \
             not exist: {src}"
        )));
    }
    Ok(())
}

/// Parses one `-v` string: `SRC:DST[:OPTS]`, `NAME:DST[:OPTS]` or an anonymous `DST`.
pub fn parse_bind(spec: &str) -> Result<Planned, Error> {
    let parts: Vec<&str> = spec.split(':').collect();
    let bad = || {
        invalid(format!(
            "key \"binds\": invalid volume specification: '{spec}'"
        ))
    };
    let (src, dst, opts) = match parts.as_slice() {
        [dst] => ("", *dst, ""),
        [src, dst] => (*src, *dst, ""),
        [src, dst, opts] => (*src, *dst, *opts),
        _ => return Err(bad()),
    };
    if dst.is_empty() || (parts.len() > 1 && src.is_empty()) {
        return Err(bad());
    }
    let target = check_target("binds", dst)?;
    let mut readonly = false;
    let mut propagation = String::new();
    let mut nocopy = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => readonly = true,
            "rw" => readonly = false,
            // SELinux relabelling and macOS consistency hints: nothing to do here.
            "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            "nocopy" => nocopy = true,
            p if PROPAGATIONS.contains(&p) => propagation = p.to_string(),
            other => {
                return Err(invalid(format!(
                    "key \"binds\": invalid mode: {other} (in '{spec}'; known: ro, rw, z, Z, \
                     nocopy, [r]private, [r]shared, [r]slave)"
                )))
            }
        }
    }
    let (kind, anonymous) = if src.is_empty() {
        (Kind::Volume, true)
    } else if src.starts_with('/') {
        check_bind_source("binds", src)?;
        (Kind::Bind, false)
    } else if valid_volume_name(src) {
        (Kind::Volume, false)
    } else {
        return Err(invalid(format!(
            "key \"binds\": create {src}: {}",
            bad_volume_name(src)
        )));
    };
    if kind == Kind::Bind && nocopy {
        return Err(invalid(format!(
            "key \"binds\": invalid mode: nocopy is for volumes, not the host path in '{spec}'"
        )));
    }
    if kind == Kind::Bind && propagation.is_empty() {
        propagation = "rprivate".into();
    }
    Ok(Planned {
        kind,
        source: src.to_string(),
        target,
        readonly,
        propagation,
        nocopy,
        anonymous,
        tmpfs_options: Vec::new(),
        mode: opts.to_string(),
    })
}

fn parse_mount(m: &MountConfig) -> Result<Planned, Error> {
    let target = check_target("mounts", &m.target)?;
    let field = |typ: &str, f: &str| {
        invalid(format!(
            "key \"mounts\": invalid mount config for type \"{typ}\": field {f} must not be specified"
        ))
    };
    let mut p = Planned {
        kind: Kind::Bind,
        source: m.source.clone().unwrap_or_default(),
        target,
        readonly: m.readonly,
        propagation: String::new(),
        nocopy: false,
        anonymous: false,
        tmpfs_options: Vec::new(),
        mode: String::new(),
    };
    if m.typ != "tmpfs" && (m.tmpfs_size.is_some() || m.tmpfs_mode.is_some()) {
        return Err(field(&m.typ, "TmpfsOptions"));
    }
    if m.typ != "bind" && m.bind_propagation.is_some() {
        return Err(field(&m.typ, "BindOptions"));
    }
    if m.typ != "volume" && m.volume_nocopy {
        return Err(field(&m.typ, "VolumeOptions"));
    }
    match m.typ.as_str() {
        "bind" => {
            if p.source.is_empty() {
                return Err(invalid(
                    "key \"mounts\": invalid mount config for type \"bind\": field Source must not be empty".into(),
                ));
            }
            check_bind_source("mounts", &p.source)?;
            let prop = m.bind_propagation.as_deref().unwrap_or("rprivate");
            if !PROPAGATIONS.contains(&prop) {
                return Err(invalid(format!(
                    "key \"mounts\": invalid propagation mode: {prop} (use one of {})",
                    PROPAGATIONS.join(", ")
                )));
            }
            p.propagation = prop.into();
        }
        "volume" => {
            p.kind = Kind::Volume;
            p.nocopy = m.volume_nocopy;
            p.anonymous = p.source.is_empty();
            if !p.anonymous && !valid_volume_name(&p.source) {
                return Err(invalid(format!(
                    "key \"mounts\": {}",
                    bad_volume_name(&p.source)
                )));
            }
        }
        "tmpfs" => {
            p.kind = Kind::Tmpfs;
            if !p.source.is_empty() {
                return Err(field("tmpfs", "Source"));
            }
            p.tmpfs_options = default_tmpfs_options();
            if let Some(s) = &m.tmpfs_size {
                let bytes = parse_size(s).ok_or_else(|| {
                    invalid(format!(
                        "key \"mounts\": tmpfs-size {s:?} is not a size (e.g. 64m, 512k, 1g)"
                    ))
                })?;
                p.tmpfs_options.push(format!("size={bytes}"));
            }
            if let Some(mode) = &m.tmpfs_mode {
                check_mode("mounts", mode)?;
                p.tmpfs_options.push(format!("mode={mode}"));
            }
        }
        other => {
            return Err(invalid(format!(
                "key \"mounts\": mount type unknown: {other:?} (use bind, volume or tmpfs)"
            )))
        }
    }
    Ok(p)
}

fn check_mode(key: &str, mode: &str) -> Result<(), Error> {
    match u32::from_str_radix(mode, 8) {
        Ok(m) if m <= 0o7777 => Ok(()),
        _ => Err(invalid(format!(
            "key \"{key}\": tmpfs mode {mode:?} is not an octal file mode (e.g. 1777)"
        ))),
    }
}

/// docker's options for a tmpfs that names none.
fn default_tmpfs_options() -> Vec<String> {
    ["rw", "noexec", "nosuid", "nodev"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// The options of `--tmpfs /run:OPTS`: docker's mount flags plus `size=` and `mode=`.
fn parse_tmpfs(target: &str, opts: &str) -> Result<Planned, Error> {
    let target = check_target("tmpfs", target)?;
    let mut options = default_tmpfs_options();
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let (k, v) = o.split_once('=').unwrap_or((o, ""));
        match k {
            "size" => {
                let bytes = parse_size(v).ok_or_else(|| {
                    invalid(format!(
                        "key \"tmpfs\": {target}: size {v:?} is not a size (e.g. 64m, 512k, 1g)"
                    ))
                })?;
                options.push(format!("size={bytes}"));
            }
            "mode" => {
                check_mode("tmpfs", v)?;
                options.push(o.to_string());
            }
            "nr_inodes" | "uid" | "gid" => options.push(o.to_string()),
            "ro" | "rw" | "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime"
            | "noatime" | "relatime" | "strictatime" | "nodiratime" | "sync" | "async"
                if v.is_empty() =>
            {
                options.push(o.to_string())
            }
            _ => {
                return Err(invalid(format!(
                    "key \"tmpfs\": {target}: unknown tmpfs option {o:?} (known: size, mode, \
                     nr_inodes, uid, gid, ro, rw, [no]exec, [no]suid, [no]dev, atime flags)"
                )))
            }
        }
    }
    let readonly = options.iter().rev().find(|o| *o == "ro" || *o == "rw") == Some(&"ro".into());
    Ok(Planned {
        kind: Kind::Tmpfs,
        source: String::new(),
        target,
        readonly,
        propagation: String::new(),
        nocopy: false,
        anonymous: false,
        tmpfs_options: options,
        mode: opts.to_string(),
    })
}

/// Checks and merges the three mount keys of `cfg` (no volume is created here).
pub fn plan(cfg: &ContainerConfig) -> Result<Vec<Planned>, Error> {
    let mut out = Vec::new();
    for b in &cfg.binds {
        out.push(parse_bind(b)?);
    }
    for m in &cfg.mounts {
        out.push(parse_mount(m)?);
    }
    for (target, opts) in &cfg.tmpfs {
        out.push(parse_tmpfs(target, opts)?);
    }
    let mut seen = BTreeSet::new();
    for p in &out {
        if !seen.insert(p.target.clone()) {
            return Err(invalid(format!("Duplicate mount point: {}", p.target)));
        }
    }
    Ok(out)
}

/// Adds an anonymous volume for each of the image's `VOLUME`s no mount covers.
pub fn add_image_volumes(planned: &mut Vec<Planned>, image_volumes: &[String]) {
    for v in image_volumes {
        let Ok(target) = check_target("image VOLUME", v) else {
            tracing::warn!("ignoring the image's VOLUME {v:?}: not an absolute path");
            continue;
        };
        if planned.iter().any(|p| p.target == target) {
            continue;
        }
        planned.push(Planned {
            kind: Kind::Volume,
            source: String::new(),
            target,
            readonly: false,
            propagation: String::new(),
            nocopy: false,
            anonymous: true,
            tmpfs_options: Vec::new(),
            mode: String::new(),
        });
    }
}

fn oci(e: oci_spec::OciSpecError) -> Error {
    Error::Internal(format!("building the runtime spec: {e}"))
}

/// The OCI mount of `p`; `volume_dir` is the volume's data directory, `copy_up` whether
/// the runtime seeds it with the image's content first.
pub fn oci_mount(p: &Planned, volume_dir: Option<&Path>, copy_up: bool) -> Result<Mount, Error> {
    let mut options: Vec<String> = Vec::new();
    let (typ, source) = match p.kind {
        Kind::Tmpfs => {
            options.extend(p.tmpfs_options.iter().cloned());
            ("tmpfs", PathBuf::from("tmpfs"))
        }
        Kind::Bind | Kind::Volume => {
            options.push("rbind".into());
            if p.readonly {
                options.push("ro".into());
            }
            options.push(if p.propagation.is_empty() {
                "rprivate".into()
            } else {
                p.propagation.clone()
            });
            if copy_up {
                options.push(crate::runtime::rootfs::COPY_UP.into());
            }
            let src = match (p.kind, volume_dir) {
                (Kind::Volume, Some(d)) => d.to_path_buf(),
                _ => PathBuf::from(&p.source),
            };
            ("bind", src)
        }
    };
    MountBuilder::default()
        .destination(PathBuf::from(&p.target))
        .typ(typ)
        .source(source)
        .options(options)
        .build()
        .map_err(oci)
}

/// docker's `.Mounts` entries.
pub fn inspect_mounts(
    planned: &[Planned],
    volume_dir: impl Fn(&str) -> PathBuf,
) -> serde_json::Value {
    let items: Vec<serde_json::Value> = planned
        .iter()
        .map(|p| match p.kind {
            Kind::Bind => serde_json::json!({
                "Type": "bind", "Source": p.source, "Destination": p.target,
                "Mode": p.mode, "RW": !p.readonly, "Propagation": p.propagation,
            }),
            Kind::Volume => serde_json::json!({
                "Type": "volume", "Name": p.source,
                "Source": volume_dir(&p.source).display().to_string(),
                "Destination": p.target, "Driver": "local", "Mode": p.mode,
                "RW": !p.readonly, "Propagation": "",
            }),
            Kind::Tmpfs => serde_json::json!({
                "Type": "tmpfs", "Source": "", "Destination": p.target,
                "Mode": p.mode, "RW": !p.readonly, "Propagation": "",
            }),
        })
        .collect();
    serde_json::Value::Array(items)
}

/// docker's `.HostConfig.Binds`, `.Mounts` and `.Tmpfs`.
pub fn inspect_host_config(
    cfg: &ContainerConfig,
) -> (serde_json::Value, serde_json::Value, serde_json::Value) {
    let binds = if cfg.binds.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(cfg.binds)
    };
    let mounts: Vec<serde_json::Value> = cfg
        .mounts
        .iter()
        .map(|m| {
            let mut v = serde_json::json!({
                "Type": m.typ, "Source": m.source.clone().unwrap_or_default(),
                "Target": m.target, "ReadOnly": m.readonly,
            });
            if let Some(p) = &m.bind_propagation {
                v["BindOptions"] = serde_json::json!({"Propagation": p});
            }
            if m.volume_nocopy {
                v["VolumeOptions"] = serde_json::json!({"NoCopy": true});
            }
            if m.tmpfs_size.is_some() || m.tmpfs_mode.is_some() {
                let mut t = serde_json::json!({});
                if let Some(s) = m.tmpfs_size.as_deref().and_then(parse_size) {
                    t["SizeBytes"] = s.into();
                }
                if let Some(mode) = m
                    .tmpfs_mode
                    .as_deref()
                    .and_then(|s| u32::from_str_radix(s, 8).ok())
                {
                    t["Mode"] = mode.into();
                }
                v["TmpfsOptions"] = t;
            }
            v
        })
        .collect();
    let mounts = if mounts.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::Value::Array(mounts)
    };
    let tmpfs = if cfg.tmpfs.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::json!(cfg.tmpfs.iter().collect::<BTreeMap<_, _>>())
    };
    (binds, mounts, tmpfs)
}

#[cfg(test)]
#[path = "mounts_tests.rs"]
mod tests;
