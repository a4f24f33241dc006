//! `skiff version`, `skiff system df|prune|info` and `skiff container prune`. Each
//! builds docker-shaped rows (serde_json values with docker's field names) first and
//! prints them after, as a table or JSON.

use std::io::BufRead;

use clap::{Args, Subcommand};
use zbus::Connection;

use super::connect::{describe, fail};
use super::output::outln;
use super::table::human_size;
use super::{table, Failure};

/// `skiff version`.
#[derive(Debug, Args, Clone)]
pub struct VersionArgs {
    /// Output format: table (default), json, or a Go TEMPLATE on {Client, Server}
    /// (e.g. '{{.Server.Version}}').
    #[arg(short = 'f', long, default_value = "table")]
    pub format: String,
}

/// `skiff system ...`.
#[derive(Debug, Subcommand)]
pub enum SystemCommand {
    /// Show the disk space images, containers and volumes use.
    Df(DfArgs),
    /// Remove stopped containers, dangling images (-a: every unused image) and, with
    /// --volumes, unused anonymous volumes.
    Prune(SystemPruneArgs),
    /// Show the daemon's setup (as `skiff info`).
    Info {
        /// A Go TEMPLATE (e.g. '{{.Driver}}'), or json.
        #[arg(short = 'f', long, value_name = "FORMAT")]
        format: Option<String>,
    },
}

/// `skiff system df`.
#[derive(Debug, Args, Clone)]
pub struct DfArgs {
    /// Show each image, container and volume.
    #[arg(short = 'v', long)]
    pub verbose: bool,
    /// Output format: table (default), json (one object per line), a Go TEMPLATE (fields
    /// .Type .TotalCount .Active .Size .Reclaimable) or `table TEMPLATE`; -v takes table or
    /// json only.
    #[arg(long, default_value = "table")]
    pub format: String,
}

/// `system df`'s summary rows: docker's fields and default table.
const DF_TABLE: super::format::Table<'static> = super::format::Table {
    default: "table {{.Type}}\t{{.TotalCount}}\t{{.Active}}\t{{.Size}}\t{{.Reclaimable}}",
    headers: &[
        ("Type", "TYPE"),
        ("TotalCount", "TOTAL"),
        ("Active", "ACTIVE"),
        ("Size", "SIZE"),
        ("Reclaimable", "RECLAIMABLE"),
    ],
};

/// `skiff system prune`.
#[derive(Debug, Args, Clone)]
pub struct SystemPruneArgs {
    /// Remove every image no container uses, not only dangling ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Remove unused anonymous volumes too.
    #[arg(long)]
    pub volumes: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `skiff container prune`.
#[derive(Debug, Args, Clone)]
pub struct ContainerPruneArgs {
    /// Do not ask for confirmation.
    #[arg(short = 'f', long)]
    pub force: bool,
}

fn check_format(format: &str) -> Result<(), Failure> {
    if matches!(format, "table" | "json") {
        Ok(())
    } else {
        Err(Failure::msg(format!(
            "unknown format {format:?}: use table or json"
        )))
    }
}

/// The client's half of `version`, with docker's field names.
pub fn client_version() -> serde_json::Value {
    let os_arch = crate::daemon::os_arch();
    let (os, arch) = os_arch.split_once('/').unwrap_or((&os_arch, ""));
    serde_json::json!({
        "Version": env!("CARGO_PKG_VERSION"),
        "ApiVersion": crate::dbus::API_VERSION.to_string(),
        "GitCommit": env!("SKIFF_GIT_COMMIT"),
        "RustVersion": env!("SKIFF_RUSTC_VERSION"),
        "Os": os,
        "Arch": arch,
    })
}

/// skiffd's half of `version`, from its `Info` and `APIVersion`.
async fn server_version(conn: &Connection) -> Result<serde_json::Value, zbus::Error> {
    let mgr = super::connect::manager(conn).await?;
    let info: serde_json::Value = serde_json::from_str(&mgr.info().await?)
        .map_err(|e| zbus::Error::Failure(e.to_string()))?;
    let api = mgr.api_version().await?;
    let os_arch = info["os_arch"].as_str().unwrap_or("");
    let (os, arch) = os_arch.split_once('/').unwrap_or((os_arch, ""));
    Ok(serde_json::json!({
        "Version": info["version"],
        "ApiVersion": api.to_string(),
        "GitCommit": info["git_commit"],
        "RustVersion": info["rust_version"],
        "Os": os,
        "Arch": arch,
    }))
}

fn version_lines(v: &serde_json::Value, indent: &str) {
    let s = |k: &str| v[k].as_str().unwrap_or("").to_string();
    outln!("{indent}Version:           {}", s("Version"));
    outln!("{indent}API version:       {}", s("ApiVersion"));
    outln!("{indent}Rust version:      {}", s("RustVersion"));
    outln!("{indent}Git commit:        {}", s("GitCommit"));
    outln!("{indent}OS/Arch:           {}/{}", s("Os"), s("Arch"));
}

/// `skiff version`: the client's part always; the daemon's when it answers (else the
/// error, exit 1, as docker).
pub async fn version(bus: Option<&str>, a: &VersionArgs) -> Result<i32, Failure> {
    let template = !matches!(a.format.as_str(), "table" | "json");
    if template {
        super::format::check_inspect(Some(&a.format))?;
    }
    let client = client_version();
    let server = match super::connect::connect(bus).await {
        Ok(conn) => server_version(&conn).await.map_err(|e| describe(&e)),
        Err(f) => Err(f.message),
    };
    if a.format == "json" || template {
        let v = serde_json::json!({
            "Client": client,
            "Server": server.as_ref().ok(),
        });
        if template {
            let text = super::format::render_inspect(Some(&a.format), &[v])?;
            super::output::text(&text);
        } else {
            outln!("{v}");
        }
    } else {
        outln!("Client:");
        version_lines(&client, " ");
        if let Ok(s) = &server {
            outln!("");
            outln!("Server: skiffd");
            outln!(" Engine:");
            version_lines(s, "  ");
        }
    }
    match server {
        Ok(_) => Ok(0),
        Err(e) => Err(Failure::msg(e)),
    }
}

async fn disk_usage(conn: &Connection) -> Result<serde_json::Value, Failure> {
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let text = mgr.disk_usage().await.map_err(|e| fail(e, 1))?;
    serde_json::from_str(&text).map_err(|e| Failure::msg(format!("bad JSON from skiffd: {e}")))
}

fn u(v: &serde_json::Value) -> u64 {
    v.as_u64().unwrap_or(0)
}

fn with_percent(reclaimable: u64, total: u64) -> String {
    match reclaimable.saturating_mul(100).checked_div(total) {
        Some(p) => format!("{} ({p}%)", human_size(reclaimable)),
        None => human_size(reclaimable),
    }
}

/// docker's `system df` summary rows: `Type`, `TotalCount`, `Active`, `Size`,
/// `Reclaimable` (text, as docker's `--format json` gives them).
pub fn df_rows(du: &serde_json::Value) -> Vec<serde_json::Value> {
    let empty = Vec::new();
    let list = |k: &str| du[k].as_array().unwrap_or(&empty).clone();
    let (images, containers, volumes) = (list("Images"), list("Containers"), list("Volumes"));
    let layers = u(&du["LayersSize"]);
    let used: u64 = images
        .iter()
        .filter(|i| u(&i["Containers"]) > 0)
        .map(|i| u(&i["Size"]).saturating_sub(u(&i["SharedSize"])))
        .sum();
    let c_size: u64 = containers.iter().map(|c| u(&c["SizeRw"])).sum();
    let c_free: u64 = containers
        .iter()
        .filter(|c| c["State"] != "running")
        .map(|c| u(&c["SizeRw"]))
        .sum();
    let v_size: u64 = volumes.iter().map(|v| u(&v["UsageData"]["Size"])).sum();
    let v_free: u64 = volumes
        .iter()
        .filter(|v| u(&v["UsageData"]["RefCount"]) == 0)
        .map(|v| u(&v["UsageData"]["Size"]))
        .sum();
    let row = |t: &str, total: usize, active: usize, size: u64, free: String| {
        serde_json::json!({
            "Type": t, "TotalCount": total.to_string(), "Active": active.to_string(),
            "Size": human_size(size), "Reclaimable": free,
        })
    };
    vec![
        row(
            "Images",
            images.len(),
            images.iter().filter(|i| u(&i["Containers"]) > 0).count(),
            layers,
            with_percent(layers.saturating_sub(used), layers),
        ),
        row(
            "Containers",
            containers.len(),
            containers
                .iter()
                .filter(|c| c["State"] == "running")
                .count(),
            c_size,
            with_percent(c_free, c_size),
        ),
        row(
            "Local Volumes",
            volumes.len(),
            volumes
                .iter()
                .filter(|v| u(&v["UsageData"]["RefCount"]) > 0)
                .count(),
            v_size,
            with_percent(v_free, v_size),
        ),
        row("Build Cache", 0, 0, 0, human_size(0)),
    ]
}

/// `skiff system df`.
pub async fn df(conn: &Connection, a: &DfArgs) -> Result<i32, Failure> {
    if a.verbose {
        check_format(&a.format)?;
    } else {
        super::format::check(&a.format, &DF_TABLE)?;
    }
    let du = disk_usage(conn).await?;
    let rows = df_rows(&du);
    if a.format == "json" {
        if a.verbose {
            outln!("{du}");
        } else {
            for r in &rows {
                outln!("{r}");
            }
        }
        return Ok(0);
    }
    if !a.verbose {
        super::format::print(&a.format, &rows, &DF_TABLE)?;
        return Ok(0);
    }
    let empty = Vec::new();
    outln!("Images space usage:");
    outln!("");
    let mut irows = Vec::new();
    for i in du["Images"].as_array().unwrap_or(&empty) {
        let id = i["Id"].as_str().unwrap_or("").trim_start_matches("sha256:");
        let short: String = id.chars().take(12).collect();
        let (size, shared) = (u(&i["Size"]), u(&i["SharedSize"]));
        let created = i["Created"]
            .as_str()
            .and_then(crate::timefmt::parse_rfc3339)
            .map(crate::timefmt::human_ago)
            .unwrap_or_default();
        let tags: Vec<String> = i["RepoTags"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        let tags = if tags.is_empty() {
            vec!["<none>:<none>".to_string()]
        } else {
            tags
        };
        for t in tags {
            let (repo, tag) = super::rows::split_tag(&t);
            irows.push(vec![
                repo.to_string(),
                tag.to_string(),
                short.clone(),
                created.clone(),
                human_size(size),
                human_size(shared),
                human_size(size.saturating_sub(shared)),
                u(&i["Containers"]).to_string(),
            ]);
        }
    }
    table::print(
        &[
            "REPOSITORY",
            "TAG",
            "IMAGE ID",
            "CREATED",
            "SIZE",
            "SHARED SIZE",
            "UNIQUE SIZE",
            "CONTAINERS",
        ],
        &irows,
    );
    outln!("");
    outln!("Containers space usage:");
    outln!("");
    let mut crows = Vec::new();
    for c in du["Containers"].as_array().unwrap_or(&empty) {
        let id: String = c["Id"].as_str().unwrap_or("").chars().take(12).collect();
        let name = c["Names"][0].as_str().unwrap_or("").trim_start_matches('/');
        crows.push(vec![
            id,
            c["Image"].as_str().unwrap_or("").to_string(),
            format!("\"{}\"", c["Command"].as_str().unwrap_or("")),
            human_size(u(&c["SizeRw"])),
            crate::timefmt::human_ago(u(&c["Created"]) * 1_000_000),
            c["State"].as_str().unwrap_or("").to_string(),
            name.to_string(),
        ]);
    }
    table::print(
        &[
            "CONTAINER ID",
            "IMAGE",
            "COMMAND",
            "SIZE",
            "CREATED",
            "STATUS",
            "NAMES",
        ],
        &crows,
    );
    outln!("");
    outln!("Local Volumes space usage:");
    outln!("");
    let mut vrows = Vec::new();
    for v in du["Volumes"].as_array().unwrap_or(&empty) {
        vrows.push(vec![
            v["Name"].as_str().unwrap_or("").to_string(),
            u(&v["UsageData"]["RefCount"]).to_string(),
            human_size(u(&v["UsageData"]["Size"])),
        ]);
    }
    table::print(&["VOLUME NAME", "LINKS", "SIZE"], &vrows);
    outln!("");
    outln!("Build cache usage: 0B");
    Ok(0)
}

/// Asks `question` and reads y/N from stdin (docker's prompt); end of input is no.
fn confirm(warning: &str) -> bool {
    super::output::text(&format!(
        "{warning}\nAre you sure you want to continue? [y/N] "
    ));
    let mut answer = String::new();
    if std::io::stdin().lock().read_line(&mut answer).is_err() {
        return false;
    }
    matches!(answer.trim(), "y" | "Y" | "yes" | "Yes" | "YES")
}

/// Removes every container that does not run; returns their ids and the bytes freed.
async fn prune_containers(conn: &Connection) -> Result<(Vec<String>, u64), Failure> {
    let du = disk_usage(conn).await?;
    let empty = Vec::new();
    let mut removed = Vec::new();
    let mut freed = 0;
    for c in du["Containers"].as_array().unwrap_or(&empty) {
        if matches!(c["State"].as_str(), Some("running" | "removing")) {
            continue;
        }
        let id = c["Id"].as_str().unwrap_or("");
        let r = async {
            let p = super::containers::container(conn, id).await?;
            p.remove(0).await
        }
        .await;
        match r {
            Ok(()) => {
                removed.push(id.to_string());
                freed += u(&c["SizeRw"]);
            }
            // Started or removed meanwhile: not ours to prune any more.
            Err(e) => tracing::debug!("prune: {id}: {}", describe(&e)),
        }
    }
    Ok((removed, freed))
}

fn print_section(title: &str, items: &[String]) {
    if items.is_empty() {
        return;
    }
    outln!("{title}:");
    for i in items {
        outln!("{i}");
    }
    outln!("");
}

/// `skiff container prune`.
pub async fn container_prune(conn: &Connection, a: &ContainerPruneArgs) -> Result<i32, Failure> {
    if !a.force && !confirm("WARNING! This will remove all stopped containers.") {
        return Ok(0);
    }
    let (ids, freed) = prune_containers(conn).await?;
    print_section("Deleted Containers", &ids);
    outln!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

/// `skiff system prune`.
pub async fn system_prune(conn: &Connection, a: &SystemPruneArgs) -> Result<i32, Failure> {
    if !a.force {
        let mut w = String::from("WARNING! This will remove:\n  - all stopped containers\n");
        if a.volumes {
            w.push_str("  - all anonymous volumes not used by at least one container\n");
        }
        if a.all {
            w.push_str("  - all images without at least one container associated to them\n");
        } else {
            w.push_str("  - all dangling images\n");
        }
        if !confirm(&w) {
            return Ok(0);
        }
    }
    let (ids, mut freed) = prune_containers(conn).await?;
    print_section("Deleted Containers", &ids);
    if a.volumes {
        let vols = super::connect::manager(conn)
            .await
            .map_err(|e| fail(e, 1))?;
        let vols = crate::dbus::proxy::VolumesProxy::builder(vols.inner().connection())
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build()
            .await
            .map_err(|e| fail(e, 1))?;
        let (names, bytes) = vols.prune_volumes(&[], 0).await.map_err(|e| fail(e, 1))?;
        freed += bytes;
        print_section("Deleted Volumes", &names);
    }
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let flags = if a.all { crate::dbus::LIST_ALL } else { 0 };
    let pairs = mgr.prune_images(flags).await.map_err(|e| fail(e, 1))?;
    let mut lines = Vec::new();
    for (kind, what) in pairs {
        if kind == "reclaimed" {
            freed += what.parse::<u64>().unwrap_or(0);
        } else if kind == "deleted" {
            lines.push(format!("deleted: sha256:{what}"));
        } else {
            lines.push(format!("{kind}: {what}"));
        }
    }
    print_section("Deleted Images", &lines);
    outln!("Total reclaimed space: {}", human_size(freed));
    Ok(0)
}

/// Runs the `system` commands.
pub async fn run(conn: &Connection, cmd: SystemCommand) -> Result<i32, Failure> {
    match cmd {
        SystemCommand::Df(a) => df(conn, &a).await,
        SystemCommand::Prune(a) => system_prune(conn, &a).await,
        SystemCommand::Info { format } => super::inspect::info(conn, format.as_deref()).await,
    }
}
