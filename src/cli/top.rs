//! `skiff top CONTAINER [ps OPTIONS]`: the container's processes, as the host's `ps`
//! shows them (host pids, docker's columns by default: `ps -ef`).

use clap::Args;
use zbus::Connection;

use super::connect::fail;
use super::containers::container;
use super::output::outln;
use super::{table, Failure};

/// `skiff top`.
#[derive(Debug, Args, Clone)]
pub struct TopArgs {
    /// Output format: table (default) or json (docker's {"Titles", "Processes"}).
    #[arg(long, default_value = "table")]
    pub format: String,
    /// The container (name, id or id prefix).
    pub container: String,
    /// Options for ps (default: -ef), e.g. aux, -o pid,comm.
    #[arg(
        trailing_var_arg = true,
        allow_hyphen_values = true,
        value_name = "PS OPTIONS"
    )]
    pub ps_args: Vec<String>,
}

/// docker's top JSON: `{"Titles": [...], "Processes": [[...], ...]}`.
pub fn rows(titles: &[String], processes: &[Vec<String>]) -> serde_json::Value {
    serde_json::json!({ "Titles": titles, "Processes": processes })
}

/// `skiff top`.
pub async fn top(conn: &Connection, a: &TopArgs) -> Result<i32, Failure> {
    if !matches!(a.format.as_str(), "table" | "json") {
        return Err(Failure::msg(format!(
            "unknown format {:?}: use table or json",
            a.format
        )));
    }
    let c = container(conn, &a.container)
        .await
        .map_err(|e| fail(e, 1))?;
    let args: Vec<&str> = a.ps_args.iter().map(String::as_str).collect();
    let (titles, processes) = c.top(&args).await.map_err(|e| fail(e, 1))?;
    if a.format == "json" {
        outln!("{}", rows(&titles, &processes));
        return Ok(0);
    }
    let header: Vec<&str> = titles.iter().map(String::as_str).collect();
    table::print(&header, &processes);
    Ok(0)
}
