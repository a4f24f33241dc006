//! `-v`/`--mount`/`--tmpfs` into config keys, and `skiff volume create|ls|inspect|rm|prune`.

use std::collections::HashMap;

use clap::{Args, Subcommand};
use zbus::{Connection, OwnedVariant, Variant};

use super::connect::fail;
use super::output::{errln, outln};
use super::Failure;
use crate::dbus::proxy::VolumesProxy;

/// `skiff volume ...`.
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume (a random name when none is given); prints its name.
    Create {
        /// Set labels (KEY=VALUE).
        #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// The name.
        name: Option<String>,
    },
    /// List volumes.
    #[command(alias = "list")]
    Ls(LsArgs),
    /// Show volumes as JSON (or by a Go template).
    Inspect {
        /// A Go TEMPLATE applied to each volume (e.g. '{{.Mountpoint}}'), or json.
        #[arg(short = 'f', long, value_name = "FORMAT")]
        format: Option<String>,
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove volumes (refused while a container uses one).
    #[command(alias = "remove")]
    Rm {
        /// Do not fail when a volume does not exist.
        #[arg(short = 'f', long)]
        force: bool,
        /// Volumes.
        #[arg(required = true)]
        volumes: Vec<String>,
    },
    /// Remove unused anonymous volumes (all unused ones with -a).
    Prune {
        /// All unused volumes, named ones too.
        #[arg(short = 'a', long)]
        all: bool,
        /// Do not ask (skiff never asks: accepted for docker's scripts).
        #[arg(short = 'f', long)]
        force: bool,
        /// Filter: label=KEY[=VALUE], label!=KEY[=VALUE].
        #[arg(long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
    },
}

/// `volume ls` flags.
#[derive(Debug, Args)]
pub struct LsArgs {
    /// Only names.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Filter: name=, label=KEY[=VALUE], label!=, dangling=true|false, driver=local.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
    /// Output format: table, table TEMPLATE, json, or a Go TEMPLATE (fields .Name
    /// .Driver .Scope .Mountpoint .Labels).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
}

fn ov<'a>(v: impl Into<Variant<'a>>) -> Result<OwnedVariant, Failure> {
    OwnedVariant::try_from(v.into()).map_err(|e| Failure::msg(format!("encoding the config: {e}")))
}

fn usage(message: String) -> Failure {
    Failure { message, code: 125 }
}

/// docker's `--mount` CSV (`type=bind,source=/a,target=/b,readonly`) as a config object.
pub fn parse_mount_flag(s: &str) -> Result<HashMap<String, OwnedVariant>, Failure> {
    let mut m: HashMap<String, OwnedVariant> = HashMap::new();
    for field in s.split(',').filter(|f| !f.is_empty()) {
        let (k, v) = match field.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (field, None),
        };
        let boolean = |v: Option<&str>| match v {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(other) => Err(usage(format!(
                "--mount {s:?}: invalid value {other:?} for {k}: use true or false"
            ))),
        };
        let value = |v: Option<&str>| {
            v.map(str::to_string).ok_or_else(|| {
                usage(format!(
                    "--mount {s:?}: invalid field {field:?}: must be a key=value pair"
                ))
            })
        };
        let (key, val) = match k {
            "type" => ("type", ov(value(v)?)?),
            "source" | "src" => ("source", ov(value(v)?)?),
            "target" | "destination" | "dst" => ("target", ov(value(v)?)?),
            "readonly" | "ro" => ("readonly", ov(boolean(v)?)?),
            "bind-propagation" => ("bind-propagation", ov(value(v)?)?),
            "volume-nocopy" => ("volume-nocopy", ov(boolean(v)?)?),
            "tmpfs-size" => ("tmpfs-size", ov(value(v)?)?),
            "tmpfs-mode" => ("tmpfs-mode", ov(value(v)?)?),
            // SELinux and macOS hints: nothing to do here.
            "consistency" | "bind-nonrecursive" | "z" | "Z" => continue,
            other => {
                return Err(usage(format!(
                    "--mount {s:?}: unknown field {other:?} (known: type, source, target, \
                     readonly, bind-propagation, volume-nocopy, tmpfs-size, tmpfs-mode)"
                )))
            }
        };
        m.insert(key.to_string(), val);
    }
    if !m.contains_key("type") {
        m.insert("type".into(), ov("volume")?);
    }
    if !m.contains_key("target") {
        return Err(usage(format!("--mount {s:?}: target is required")));
    }
    Ok(m)
}

/// Adds `binds`, `mounts` and `tmpfs` to a create config.
pub(super) fn add_mount_keys(
    m: &mut HashMap<&'static str, OwnedVariant>,
    binds: &[String],
    mounts: &[String],
    tmpfs: &[String],
) -> Result<(), Failure> {
    if !binds.is_empty() {
        m.insert("binds", ov(binds.to_vec())?);
    }
    if !mounts.is_empty() {
        let list = mounts
            .iter()
            .map(|s| parse_mount_flag(s))
            .collect::<Result<Vec<_>, _>>()?;
        m.insert("mounts", ov(list)?);
    }
    if !tmpfs.is_empty() {
        let map: HashMap<String, String> = tmpfs
            .iter()
            .map(|t| match t.split_once(':') {
                Some((d, o)) => (d.to_string(), o.to_string()),
                None => (t.clone(), String::new()),
            })
            .collect();
        m.insert("tmpfs", ov(map)?);
    }
    Ok(())
}

async fn proxy(conn: &Connection) -> Result<VolumesProxy<'_>, Failure> {
    VolumesProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(|e| fail(e, 1))
}

/// The inspect JSON of the volume named exactly `name`, if there is one.
async fn find(p: &VolumesProxy<'_>, name: &str) -> Result<Option<serde_json::Value>, zbus::Error> {
    let text = p.list_volumes(&[&format!("name={name}")], 0).await?;
    let all: Vec<serde_json::Value> = serde_json::from_str(&text)
        .map_err(|e| zbus::Error::Failure(format!("bad JSON from skiffd: {e}")))?;
    Ok(all.into_iter().find(|x| x["Name"] == name))
}

/// The inspect JSON of the volume `name`, if there is one.
pub async fn inspect_one(
    conn: &Connection,
    name: &str,
) -> Result<Option<serde_json::Value>, zbus::Error> {
    let p = VolumesProxy::builder(conn)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await?;
    find(&p, name).await
}

/// Runs a `skiff volume` command.
pub async fn run(conn: &Connection, cmd: VolumeCommand) -> Result<i32, Failure> {
    let p = proxy(conn).await?;
    match cmd {
        VolumeCommand::Create { labels, name } => {
            let mut map = HashMap::new();
            for l in &labels {
                let (k, v) = l.split_once('=').unwrap_or((l.as_str(), ""));
                map.insert(k, v);
            }
            let (name, _) = p
                .create_volume(name.as_deref().unwrap_or(""), map, 0)
                .await
                .map_err(|e| fail(e, 1))?;
            outln!("{name}");
            Ok(0)
        }
        VolumeCommand::Ls(a) => {
            let format = a.format.as_deref().unwrap_or("");
            super::format::check(format, &super::rows::VOLUMES)?;
            let filters: Vec<&str> = a.filters.iter().map(String::as_str).collect();
            let text = p.list_volumes(&filters, 0).await.map_err(|e| fail(e, 1))?;
            let vols: Vec<serde_json::Value> =
                serde_json::from_str(&text).map_err(|e| Failure::msg(e.to_string()))?;
            if a.quiet {
                vols.iter()
                    .for_each(|v| outln!("{}", v["Name"].as_str().unwrap_or("")));
                return Ok(0);
            }
            let rows: Vec<serde_json::Value> = vols.iter().map(super::rows::volume_row).collect();
            super::format::print(format, &rows, &super::rows::VOLUMES)?;
            Ok(0)
        }
        VolumeCommand::Inspect { format, volumes } => {
            super::format::check_inspect(format.as_deref())?;
            let mut out = Vec::new();
            let mut code = 0;
            for v in &volumes {
                match find(&p, v).await.map_err(|e| fail(e, 1))? {
                    Some(x) => out.push(x),
                    None => {
                        errln!("skiff: Error: no such volume: {v}");
                        code = 1;
                    }
                }
            }
            super::format::print_inspect(format.as_deref(), &out)?;
            Ok(code)
        }
        VolumeCommand::Rm { force, volumes } => {
            let mut code = 0;
            for v in &volumes {
                match p.remove_volume(v, u64::from(force)).await {
                    Ok(()) => outln!("{v}"),
                    Err(e) => {
                        errln!("skiff: Error: {}", super::connect::describe(&e));
                        code = 1;
                    }
                }
            }
            Ok(code)
        }
        VolumeCommand::Prune {
            all,
            force: _,
            mut filters,
        } => {
            if all {
                filters.push("all=true".into());
            }
            let f: Vec<&str> = filters.iter().map(String::as_str).collect();
            let (names, freed) = p.prune_volumes(&f, 0).await.map_err(|e| fail(e, 1))?;
            if !names.is_empty() {
                outln!("Deleted Volumes:");
                names.iter().for_each(|n| outln!("{n}"));
                outln!("");
            }
            outln!("Total reclaimed space: {}", super::table::human_size(freed));
            Ok(0)
        }
    }
}
