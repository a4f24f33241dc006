//! `skiff inspect` (containers, then images, then volumes, as docker; `--type` picks
//! one) and `skiff info`, with `--format` Go templates.

use clap::Args;
use serde_json::Value;
use zbus::Connection;

use super::connect::{describe, error_name, fail};
use super::format;
use super::output::errln;
use super::Failure;

/// `inspect` flags.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A Go TEMPLATE applied to each object (e.g. '{{.State.Status}}'), or json.
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Only objects of this type: container, image or volume.
    #[arg(long = "type", value_name = "TYPE")]
    pub typ: Option<String>,
    /// Accepted for docker's scripts (sizes are not computed).
    #[arg(short = 's', long)]
    pub size: bool,
    /// Names or ids.
    #[arg(required = true)]
    pub names: Vec<String>,
}

/// What kind of object a lookup may find.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Container,
    Image,
    Volume,
}

/// Why one lookup found nothing: not there (try the next kind), or a real failure.
enum Miss {
    Absent,
    Failed(zbus::Error),
}

fn miss(e: zbus::Error, absent: &[&str]) -> Miss {
    match error_name(&e) {
        Some(n) if absent.contains(&n.as_str()) => Miss::Absent,
        _ => Miss::Failed(e),
    }
}

async fn container_json(conn: &Connection, name: &str) -> Result<Value, Miss> {
    let c = super::containers::container(conn, name)
        .await
        .map_err(|e| miss(e, &["org.skiff.Error.NoSuchContainer"]))?;
    let text = c
        .inspect()
        .await
        .map_err(|e| miss(e, &["org.skiff.Error.NoSuchContainer"]))?;
    serde_json::from_str(&text)
        .map_err(|e| Miss::Failed(zbus::Error::Failure(format!("bad JSON from skiffd: {e}"))))
}

async fn image_json(conn: &Connection, name: &str) -> Result<Value, Miss> {
    let absent = [
        "org.skiff.Error.NoSuchImage",
        "org.skiff.Error.InvalidReference",
    ];
    super::images::inspect_one(conn, name)
        .await
        .map_err(|e| miss(e, &absent))
}

async fn volume_json(conn: &Connection, name: &str) -> Result<Value, Miss> {
    match super::volumes::inspect_one(conn, name).await {
        Ok(Some(v)) => Ok(v),
        Ok(None) => Err(Miss::Absent),
        Err(e) => Err(miss(e, &["org.skiff.Error.NoSuchVolume"])),
    }
}

/// `skiff inspect [-f FORMAT] [--type container|image|volume] NAME...`.
pub async fn inspect(conn: &Connection, a: &InspectArgs) -> Result<i32, Failure> {
    format::check_inspect(a.format.as_deref())?;
    let kinds: &[Kind] = match a.typ.as_deref() {
        None | Some("") => &[Kind::Container, Kind::Image, Kind::Volume],
        Some("container") => &[Kind::Container],
        Some("image") => &[Kind::Image],
        Some("volume") => &[Kind::Volume],
        Some(other) => {
            return Err(Failure {
                message: format!(
                    "{other:?} is not a valid value for --type: use container, image or volume"
                ),
                code: 125,
            })
        }
    };
    let mut found = Vec::new();
    let mut code = 0;
    'names: for name in &a.names {
        for &k in kinds {
            let r = match k {
                Kind::Container => container_json(conn, name).await,
                Kind::Image => image_json(conn, name).await,
                Kind::Volume => volume_json(conn, name).await,
            };
            match r {
                Ok(v) => {
                    found.push(v);
                    continue 'names;
                }
                Err(Miss::Absent) => {}
                Err(Miss::Failed(e)) => {
                    errln!("skiff: Error: {}", describe(&e));
                    code = 1;
                    continue 'names;
                }
            }
        }
        let what = match kinds {
            [Kind::Container] => "container",
            [Kind::Image] => "image",
            [Kind::Volume] => "volume",
            _ => "object",
        };
        errln!("skiff: Error: no such {what}: {name}");
        code = 1;
    }
    format::print_inspect(a.format.as_deref(), &found)?;
    Ok(code)
}

/// `skiff info [-f FORMAT]`: skiffd's facts, with docker's field names added for
/// templates (`.Driver`, `.ServerVersion`, `.Containers`, `.ContainersRunning`,
/// `.ContainersStopped`, `.Images`, `.SecurityOptions`, `.Warnings`...).
pub async fn info(conn: &Connection, format: Option<&str>) -> Result<i32, Failure> {
    format::check_inspect(format)?;
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let text = mgr.info().await.map_err(|e| fail(e, 1))?;
    let Some(format) = format.filter(|f| !f.trim().is_empty()) else {
        super::output::outln!("{text}");
        return Ok(0);
    };
    let mut v: Value = serde_json::from_str(&text)
        .map_err(|e| Failure::msg(format!("bad JSON from skiffd: {e}")))?;
    let containers = mgr
        .list_containers(&[], crate::dbus::LIST_ALL)
        .await
        .map_err(|e| fail(e, 1))?;
    let running = mgr
        .list_containers(&[], 0)
        .await
        .map_err(|e| fail(e, 1))?
        .len();
    // Every image, a build's intermediate ones too (as docker's info counts them).
    let images = mgr.list_images(&[], 1).await.map_err(|e| fail(e, 1))?;
    let s = |k: &str| v[k].clone();
    let extra = serde_json::json!({
        "Driver": s("storage_driver"),
        "ServerVersion": s("version"),
        "DockerRootDir": s("data_dir"),
        "SecurityOptions": s("security_options"),
        "Warnings": s("warnings"),
        "Containers": containers.len(),
        "ContainersRunning": running,
        "ContainersPaused": 0,
        "ContainersStopped": containers.len() - running.min(containers.len()),
        "Images": images.len(),
        "OSType": "linux",
        "Architecture": std::env::consts::ARCH,
        "NCPU": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        "Name": nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default(),
    });
    if let (Some(o), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        for (k, x) in e {
            o.insert(k.clone(), x.clone());
        }
    }
    if format.trim() == "json" {
        super::output::outln!("{v}");
        return Ok(0);
    }
    let t = format::Template::parse(format)?;
    super::output::outln!("{}", t.execute(&v)?);
    Ok(0)
}
