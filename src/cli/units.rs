//! skiff and systemd: `pause`/`unpause` (the container's cgroup frozen), `generate
//! systemd` (a unit for an existing container), the resource-limit flags of
//! `run`/`create`, and `--sdnotify` for `skiff run` as a service's main process.

use std::collections::HashMap;

use clap::{Args, Subcommand};
use zbus::{Connection, OwnedVariant, Variant};

use super::containers::{container, each};
use super::output::outln;
use super::Failure;
use crate::units::quote::quote;

/// Flags of `run`/`create` for resource limits and the service manager.
#[derive(Debug, Args, Clone, Default)]
pub struct UnitArgs {
    /// Memory limit (e.g. 512m, 1g): needs the memory controller delegated.
    #[arg(short = 'm', long = "memory", value_name = "SIZE")]
    pub memory: Option<String>,
    /// CPUs (e.g. 1.5): needs the cpu controller delegated.
    #[arg(long = "cpus", value_name = "N")]
    pub cpus: Option<f64>,
    /// Most processes at once (-1: unlimited): needs the pids controller delegated.
    #[arg(long = "pids-limit", value_name = "N", allow_hyphen_values = true)]
    pub pids_limit: Option<i64>,
    /// Under a service manager ($NOTIFY_SOCKET): conmon (READY=1 once the container
    /// has started; the default), container (the container's process gets
    /// NOTIFY_SOCKET and sends READY=1 itself) or ignore.
    #[arg(long = "sdnotify", value_name = "MODE")]
    pub sdnotify: Option<String>,
}

/// Adds the limit keys to a run/create config.
pub(super) fn add_limits(
    args: &UnitArgs,
    m: &mut HashMap<&'static str, OwnedVariant>,
) -> Result<(), Failure> {
    let ov = |v: Variant<'_>| {
        OwnedVariant::try_from(v).map_err(|e| Failure::msg(format!("encoding the config: {e}")))
    };
    if let Some(mem) = &args.memory {
        m.insert("memory", ov(Variant::from(mem.as_str()))?);
    }
    if let Some(c) = args.cpus {
        m.insert("cpus", ov(Variant::from(c))?);
    }
    if let Some(p) = args.pids_limit {
        m.insert("pids-limit", ov(Variant::from(p))?);
    }
    Ok(())
}

/// Commands about pausing and systemd.
#[derive(Debug, Subcommand)]
pub enum UnitCommand {
    /// Freeze every process of running containers (their cgroup).
    Pause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Thaw paused containers.
    Unpause {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Generate files for other tools.
    #[command(subcommand)]
    Generate(GenerateCommand),
}

/// What `skiff generate` makes.
#[derive(Debug, Subcommand)]
pub enum GenerateCommand {
    /// Print a systemd user unit that starts and stops an existing container.
    Systemd {
        /// Seconds `stop` waits before SIGKILL (default: the container's, else 10).
        #[arg(short = 't', long = "time")]
        time: Option<u64>,
        /// The container (name or id).
        container: String,
    },
}

/// Runs a [`UnitCommand`].
pub async fn dispatch(conn: &Connection, cmd: UnitCommand) -> Result<i32, Failure> {
    match cmd {
        UnitCommand::Pause { containers } => {
            each(conn, &containers, |c, name| async move {
                c.pause().await?;
                outln!("{name}");
                Ok(())
            })
            .await
        }
        UnitCommand::Unpause { containers } => {
            each(conn, &containers, |c, name| async move {
                c.unpause().await?;
                outln!("{name}");
                Ok(())
            })
            .await
        }
        UnitCommand::Generate(GenerateCommand::Systemd { time, container: n }) => {
            generate_systemd(conn, &n, time).await
        }
    }
}

/// The `skiff` binary the unit runs: this one.
fn own_path() -> String {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| "skiff".into())
}

/// `skiff generate systemd NAME|ID` (podman's shape: `container-NAME.service`, starting
/// and stopping the container as it is; skiff's foreground `start -a` is the main
/// process, since the container runs in a scope of its own).
async fn generate_systemd(
    conn: &Connection,
    name: &str,
    time: Option<u64>,
) -> Result<i32, Failure> {
    let c = container(conn, name)
        .await
        .map_err(|e| Failure::msg(super::connect::describe(&e)))?;
    let json = c
        .inspect()
        .await
        .map_err(|e| Failure::msg(super::connect::describe(&e)))?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Failure::msg(format!("bad JSON from skiffd: {e}")))?;
    let cname = v["Name"].as_str().unwrap_or(name).trim_start_matches('/');
    let id = v["Id"].as_str().unwrap_or_default();
    let timeout = time.unwrap_or(10);
    let skiff = quote(&own_path());
    let q = quote(cname);
    let policy = v["HostConfig"]["RestartPolicy"]["Name"]
        .as_str()
        .unwrap_or("no");
    let mut out = format!(
        "# container-{cname}.service\n# generated by skiff generate systemd {name}\n\
         # container {id}\n"
    );
    if policy != "no" {
        out.push_str(&format!(
            "# Note: the container's own restart policy ({policy}) also applies; systemd's \
             Restart= below is meant to replace it.\n"
        ));
    }
    out.push_str(&format!(
        "\n[Unit]\nDescription=skiff container {cname}\nWants=network-online.target\n\
         After=network-online.target skiffd.service\n\n[Service]\n\
         Environment=SKIFF_SYSTEMD_UNIT=%n\nRestart=on-failure\nTimeoutStopSec={}\n\
         ExecStart={skiff} start --attach {q}\nExecStop={skiff} stop -t {timeout} {q}\n\
         ExecStopPost={skiff} stop -t {timeout} {q}\nSuccessExitStatus=143 137\n\
         Type=simple\n\n[Install]\nWantedBy=default.target\n",
        timeout + 60
    ));
    outln!("{}", out.trim_end());
    Ok(0)
}
