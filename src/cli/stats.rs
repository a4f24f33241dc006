//! `skiff stats`: containers' CPU, memory, network, block I/O and tasks, from skiffd's
//! `Container.Stats` readings (docker's columns; "--" where a number is unavailable).
//! The CPU percentage is the CPU time used between two readings over the time between
//! them, as docker computes it (100% = one CPU busy).

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Duration;

use clap::Args;
use zbus::{Connection, OwnedVariant};

use super::connect::fail;
use super::containers::container;
use super::output::errln;
use super::Failure;

/// How long between two readings.
const INTERVAL: Duration = Duration::from_secs(1);

/// `skiff stats`.
#[derive(Debug, Args, Clone)]
pub struct StatsArgs {
    /// Show all containers (default: running ones).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Print one reading and exit (default: refresh every second until interrupted).
    #[arg(long)]
    pub no_stream: bool,
    /// Do not truncate ids.
    #[arg(long)]
    pub no_trunc: bool,
    /// Output format: table (default), json (one object per container and line), a Go
    /// TEMPLATE (fields .ID .Container .Name .CPUPerc .MemUsage .MemPerc .NetIO .BlockIO
    /// .PIDs) or `table TEMPLATE`.
    #[arg(long, default_value = "table")]
    pub format: String,
    /// Containers (default: every running one, or every one with -a).
    pub containers: Vec<String>,
}

/// One container's reading, as the API gives it.
type Reading = HashMap<String, OwnedVariant>;

fn num(r: &Reading, k: &str) -> Option<u64> {
    r.get(k).and_then(|v| u64::try_from(v).ok())
}

fn text(r: &Reading, k: &str) -> String {
    r.get(k)
        .and_then(|v| <&str>::try_from(v).ok())
        .unwrap_or_default()
        .to_string()
}

/// Sizes in binary units as docker prints memory (`1.504MiB`, 4 significant digits).
pub fn binary_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    format!("{}{}", significant(v, 4), UNITS[u])
}

/// Sizes in decimal units with 3 significant digits, as docker prints I/O (`1.2kB`).
pub fn decimal_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u < UNITS.len() - 1 {
        v /= 1000.0;
        u += 1;
    }
    format!("{}{}", significant(v, 3), UNITS[u])
}

/// Go's `%.Ng`: N significant digits, no trailing zeros.
fn significant(v: f64, digits: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let mag = v.abs().log10().floor() as i32;
    let decimals = (digits - 1 - mag).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// docker's stats row for one container: `ID`, `Name`, `Container`, `CPUPerc`,
/// `MemUsage`, `MemPerc`, `NetIO`, `BlockIO`, `PIDs` ("--" where unavailable). `prev` is
/// the container's previous reading (for the CPU percentage).
pub fn row(
    asked: &str,
    now: &Reading,
    prev: Option<&Reading>,
    no_trunc: bool,
) -> serde_json::Value {
    let id = text(now, "id");
    let short = if no_trunc {
        id.clone()
    } else {
        id.chars().take(12).collect()
    };
    let running = now
        .get("running")
        .and_then(|v| bool::try_from(v).ok())
        .unwrap_or(false);
    let dash = || "--".to_string();
    let pair = |a: &str, b: &str, f: fn(u64) -> String| match (num(now, a), num(now, b)) {
        (Some(x), Some(y)) if running => format!("{} / {}", f(x), f(y)),
        _ => dash(),
    };
    let cpu = match (prev, num(now, "cpu"), num(now, "read")) {
        (Some(p), Some(c), Some(t)) if running => match (num(p, "cpu"), num(p, "read")) {
            (Some(pc), Some(pt)) if t > pt => {
                format!(
                    "{:.2}%",
                    c.saturating_sub(pc) as f64 * 100.0 / (t - pt) as f64
                )
            }
            _ => dash(),
        },
        _ => dash(),
    };
    let mem_perc = match (num(now, "memory"), num(now, "memory_limit")) {
        (Some(m), Some(l)) if running && l > 0 => format!("{:.2}%", m as f64 * 100.0 / l as f64),
        _ => dash(),
    };
    let pids = match num(now, "pids") {
        Some(n) if running => n.to_string(),
        _ => dash(),
    };
    serde_json::json!({
        "Container": if asked.is_empty() { short.clone() } else { asked.to_string() },
        "ID": short,
        "Name": text(now, "name"),
        "CPUPerc": cpu,
        "MemUsage": pair("memory", "memory_limit", binary_size),
        "MemPerc": mem_perc,
        "NetIO": pair("net_rx", "net_tx", decimal_size),
        "BlockIO": pair("block_read", "block_write", decimal_size),
        "PIDs": pids,
    })
}

/// `stats`' rows: docker's fields and default table.
pub const TABLE: super::format::Table<'static> = super::format::Table {
    default: "table {{.ID}}\t{{.Name}}\t{{.CPUPerc}}\t{{.MemUsage}}\t{{.MemPerc}}\t{{.NetIO}}\t{{.BlockIO}}\t{{.PIDs}}",
    headers: &[
        ("ID", "CONTAINER ID"),
        ("Container", "CONTAINER"),
        ("Name", "NAME"),
        ("CPUPerc", "CPU %"),
        ("MemUsage", "MEM USAGE / LIMIT"),
        ("MemPerc", "MEM %"),
        ("NetIO", "NET I/O"),
        ("BlockIO", "BLOCK I/O"),
        ("PIDs", "PIDS"),
    ],
};

/// The containers to read this round: those named, else the running ones (all with -a).
async fn targets(conn: &Connection, a: &StatsArgs) -> Result<Vec<(String, String)>, Failure> {
    if !a.containers.is_empty() {
        return Ok(a
            .containers
            .iter()
            .map(|n| (n.clone(), n.clone()))
            .collect());
    }
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let flags = if a.all { crate::dbus::LIST_ALL } else { 0 };
    let list = mgr
        .list_containers(&[], flags)
        .await
        .map_err(|e| fail(e, 1))?;
    Ok(list
        .into_iter()
        .map(|(id, ..)| (id, String::new()))
        .collect())
}

/// Reads every target; a named container that is gone is an error, a listed one that
/// went away in between is left out.
async fn read_all(
    conn: &Connection,
    targets: &[(String, String)],
    named: bool,
) -> Result<Vec<(String, String, Reading)>, Failure> {
    let mut out = Vec::new();
    for (key, asked) in targets {
        let r = async { container(conn, key).await?.stats().await }.await;
        match r {
            Ok(r) => out.push((key.clone(), asked.clone(), r)),
            Err(e) if named => return Err(fail(e, 1)),
            Err(_) => {}
        }
    }
    Ok(out)
}

/// `skiff stats`.
pub async fn stats(conn: &Connection, a: &StatsArgs) -> Result<i32, Failure> {
    super::format::check(&a.format, &TABLE)?;
    let named = !a.containers.is_empty();
    let clear = !a.no_stream && a.format == "table" && std::io::stdout().is_terminal();
    let mut prev: HashMap<String, Reading> = HashMap::new();
    let mut first = true;
    loop {
        let list = targets(conn, a).await?;
        let readings = read_all(conn, &list, named).await?;
        if first {
            // The CPU needs two readings: the first frame waits for the second.
            first = false;
            prev = readings.into_iter().map(|(k, _, r)| (k, r)).collect();
            tokio::time::sleep(INTERVAL).await;
            continue;
        }
        let rows: Vec<serde_json::Value> = readings
            .iter()
            .map(|(k, asked, r)| row(asked, r, prev.get(k), a.no_trunc))
            .collect();
        if clear {
            super::output::text("\x1b[2J\x1b[H");
        }
        super::format::print(&a.format, &rows, &TABLE)?;
        if a.no_stream {
            return Ok(0);
        }
        if named && readings.is_empty() {
            errln!("skiff: no container to read");
            return Ok(1);
        }
        prev = readings.into_iter().map(|(k, _, r)| (k, r)).collect();
        tokio::time::sleep(INTERVAL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_as_docker() {
        assert_eq!(binary_size(1_577_058), "1.504MiB");
        assert_eq!(binary_size(8_196_000_000), "7.633GiB");
        assert_eq!(binary_size(0), "0B");
        assert_eq!(decimal_size(1_200), "1.2kB");
        assert_eq!(decimal_size(648), "648B");
        assert_eq!(decimal_size(12_345_678), "12.3MB");
    }

    #[test]
    fn unavailable_numbers_are_dashes() {
        let mut r: Reading = HashMap::new();
        let ov = |v: zbus::Variant<'static>| OwnedVariant::try_from(v).unwrap();
        r.insert("id".into(), ov("abcdef0123456789".into()));
        r.insert("name".into(), ov("web".into()));
        r.insert("running".into(), ov(true.into()));
        r.insert("read".into(), ov(2_000_000_000u64.into()));
        r.insert("cpu".into(), ov(1_500_000_000u64.into()));
        r.insert("memory".into(), ov(1024u64.into()));
        r.insert("memory_limit".into(), ov(4096u64.into()));
        r.insert("pids".into(), ov(3u64.into()));
        let mut p = r.clone();
        p.insert("read".into(), ov(1_000_000_000u64.into()));
        p.insert("cpu".into(), ov(1_000_000_000u64.into()));
        let v = row("", &r, Some(&p), false);
        assert_eq!(v["ID"], "abcdef012345");
        assert_eq!(v["CPUPerc"], "50.00%");
        assert_eq!(v["MemUsage"], "1KiB / 4KiB");
        assert_eq!(v["MemPerc"], "25.00%");
        assert_eq!(v["NetIO"], "--");
        assert_eq!(v["BlockIO"], "--");
        assert_eq!(v["PIDs"], "3");
        assert_eq!(row("", &r, None, false)["CPUPerc"], "--");
    }
}
