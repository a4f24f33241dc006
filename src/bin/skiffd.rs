//! `skiffd`: the per-user container daemon on the D-Bus session bus.
//!
//! Hidden subcommands (`__monitor`, `__exec`, `__unpack`, `__remove`, `__cp`, `__commit`) are the
//! daemon re-running itself as a fresh single-threaded process for work that forks into
//! namespaces. Their specs come on fd 4, never on the command line.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// skiffd — rootless containers for one user, served on D-Bus as org.skiff.skiff1.
#[derive(Debug, Parser)]
#[command(name = "skiffd", version, about)]
struct Args {
    /// D-Bus address to serve on (default: $SKIFF_BUS_ADDRESS, then the session bus).
    #[arg(long, value_name = "ADDRESS")]
    bus_address: Option<String>,
    /// skiffd's configuration file (default: $XDG_CONFIG_HOME/skiff/skiffd.toml, read if
    /// it exists). Its keys are the names of the flags below without the dashes, lists
    /// for the repeatable ones (registry-mirrors, insecure-registries, default-ulimits)
    /// and a table for log-opts; flags override the file. SIGHUP re-reads it.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Storage driver for container root filesystems: fuse (skiff's FUSE overlay; the
    /// default where /dev/fuse can be opened), overlay (the kernel's, in the user
    /// namespace; the default otherwise) or vfs (a full copy). Changing it needs a restart.
    #[arg(long, value_name = "DRIVER")]
    storage_driver: Option<String>,
    /// Default network mode of new containers: slirp4netns (the default), pasta, none,
    /// host, or auto (pasta where it is installed and works, else slirp4netns).
    #[arg(long, value_name = "MODE")]
    network: Option<String>,
    /// Log filter (tracing's EnvFilter syntax, e.g. debug or skiff=trace; default: RUST_LOG,
    /// then info).
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// A mirror of docker.io (HOST[:PORT]) tried before it; repeat for more, in order.
    #[arg(long = "registry-mirror", value_name = "HOST")]
    registry_mirrors: Vec<String>,
    /// A registry (HOST[:PORT]) reached without verifying TLS, plain HTTP allowed; repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST")]
    insecure_registries: Vec<String>,
    /// A ulimit of new containers that do not set it (NAME=SOFT[:HARD]); repeatable.
    #[arg(long = "default-ulimit", value_name = "ULIMIT")]
    default_ulimits: Vec<String>,
    /// A log option of new containers that do not set it (max-size=10m, max-file=3); repeatable.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    log_opts: Vec<String>,
    /// Most archive members in one image layer (default 1000000).
    #[arg(long, value_name = "N")]
    layer_max_entries: Option<String>,
    /// Most bytes of files in one image layer (default 64g).
    #[arg(long, value_name = "SIZE")]
    layer_max_bytes: Option<String>,
    /// For tests: die (SIGKILL) at this point of a container's start.
    #[arg(long, value_name = "POINT", hide = true)]
    crash_at: Option<String>,
    /// For tests: the bridge network's pool has N addresses (a full pool without 251
    /// containers).
    #[arg(long, value_name = "N", hide = true)]
    bridge_pool: Option<usize>,
    #[command(subcommand)]
    helper: Option<Helper>,
}

#[derive(Debug, Subcommand)]
enum Helper {
    /// The per-container monitor.
    #[command(name = "__monitor", hide = true)]
    Monitor { bundle: PathBuf },
    /// Extract a layer from stdin inside the user namespace (id maps on fd 4).
    #[command(name = "__unpack", hide = true)]
    Unpack { dest: PathBuf },
    /// Run a process in a running container (its spec on fd 4).
    #[command(name = "__exec", hide = true)]
    Exec,
    /// Mount the FUSE overlay on MOUNTPOINT and serve it in the foreground (for tests and
    /// benchmarks; run it as root of a user namespace that owns its mount namespace).
    #[command(name = "__fuse-mount", hide = true)]
    FuseMount {
        /// Lower layers, top first, `:`-separated (overlayfs's lowerdir=).
        #[arg(long)]
        lowerdir: Option<String>,
        /// The writable layer.
        #[arg(long)]
        upper: PathBuf,
        /// The work directory.
        #[arg(long)]
        work: PathBuf,
        /// Event-loop threads (0 = per CPU).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Write one byte to this fd once mounted.
        #[arg(long)]
        ready_fd: Option<i32>,
        /// Lower layers (top first) followed by the mount point.
        #[arg(required = true)]
        paths: Vec<PathBuf>,
    },
    /// Unshare a user namespace and wait for stdin to close (skiffd writes its maps and
    /// keeps it: the namespace default-mapped containers share).
    #[command(name = "__userns", hide = true)]
    Userns,
    /// Hold the shared network of `--network bridge` (its user namespace on fd 3) with
    /// one slirp4netns, until SIGTERM.
    #[command(name = "__netns", hide = true)]
    Netns { dir: PathBuf },
    /// Remove trees owned by subordinate ids (id maps on fd 4).
    #[command(name = "__remove", hide = true)]
    Remove { paths: Vec<PathBuf> },
    /// Copy a tar into or out of a container (its spec on fd 4).
    #[command(name = "__cp", hide = true)]
    Cp,
    /// Write a container's changes as a layer tar on stdout (its spec on fd 4).
    #[command(name = "__commit", hide = true)]
    Commit,
}

fn main() {
    // Whatever descriptors we inherited beyond stdio (a shell's, a service manager's)
    // are not ours to pass on: none reaches a helper or a container. Helpers take the
    // status pipe (fd 3) and their spec (fd 4) before they start anything.
    if let Err(e) = skiff::fdutil::cloexec_from(3) {
        eprintln!("skiffd: cannot mark inherited descriptors close-on-exec: {e}");
        std::process::exit(1);
    }
    let args = Args::parse();
    // Before any thread: it takes NOTIFY_SOCKET out of the environment, so no helper
    // or container inherits it (helpers never notify).
    let notifier = match &args.helper {
        None => skiff::daemon::notify::Notifier::take_from_env(),
        Some(_) => None,
    };
    // Helpers must stay single-threaded (they fork): no runtime, no logging threads
    // (the logger writes each line itself). They log to the daemon's log (see
    // skiff::logging).
    // A monitor started before its bundle was written waits for it first (none coming:
    // it has nothing to do; see skiff::monitor::handoff).
    if matches!(args.helper, Some(Helper::Monitor { .. }))
        && !skiff::monitor::handoff::wait_for_bundle()
    {
        std::process::exit(0)
    }
    if let Some(h) = &args.helper {
        skiff::logging::init_helper(matches!(h, Helper::FuseMount { .. }));
    }
    match &args.helper {
        Some(Helper::Monitor { bundle }) => {
            // Under a user manager: not before skiffd has put us in our own scope.
            skiff::daemon::scope::wait_at_gate();
            std::process::exit(skiff::monitor::main(bundle))
        }
        Some(Helper::Unpack { dest }) => std::process::exit(skiff::helpers::unpack_main(dest)),
        Some(Helper::Exec) => std::process::exit(skiff::helpers::exec_main()),
        Some(Helper::Cp) => std::process::exit(skiff::cp::helper::main()),
        Some(Helper::Commit) => std::process::exit(skiff::helpers::commit_main()),
        Some(Helper::Userns) => std::process::exit(skiff::userns::shared::holder_main()),
        Some(Helper::Netns { dir }) => {
            // Under a user manager: not before skiffd has put us in our own scope.
            skiff::daemon::scope::wait_at_gate();
            std::process::exit(skiff::netns::shared::holder_main(dir))
        }
        Some(Helper::Remove { paths }) => std::process::exit(skiff::helpers::remove_main(paths)),
        Some(Helper::FuseMount {
            lowerdir,
            upper,
            work,
            threads,
            ready_fd,
            paths,
        }) => {
            let mut lower: Vec<PathBuf> = lowerdir
                .iter()
                .flat_map(|l| l.split(':'))
                .filter(|l| !l.is_empty())
                .map(PathBuf::from)
                .collect();
            let mut paths = paths.clone();
            let target = paths.pop().unwrap_or_default();
            lower.extend(paths);
            let spec = skiff::fuse::MountSpec {
                lower,
                upper: upper.clone(),
                work: work.clone(),
                threads: *threads,
                remap: None,
            };
            std::process::exit(skiff::fuse::mount_main(&spec, &target, *ready_fd))
        }
        None => {}
    }
    let paths = skiff::paths::Paths::from_env();
    let (config_path, required) = match &args.config {
        Some(p) => (p.clone(), true),
        None => (skiff::daemon::settings::default_path(&paths), false),
    };
    let flags = skiff::daemon::settings::Flags {
        storage_driver: args.storage_driver.clone(),
        network: args.network.clone(),
        log_level: args.log_level.clone(),
        registry_mirrors: args.registry_mirrors.clone(),
        insecure_registries: args.insecure_registries.clone(),
        default_ulimits: args.default_ulimits.clone(),
        log_opts: args.log_opts.clone(),
        layer_max_entries: args.layer_max_entries.clone(),
        layer_max_bytes: args.layer_max_bytes.clone(),
    };
    let settings =
        match skiff::daemon::settings::Settings::load(&config_path, required, &flags, |k| {
            std::env::var(k).ok()
        }) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("skiffd: {e}");
                std::process::exit(2);
            }
        };
    skiff::logging::init_daemon(&settings.log_level);
    let config = Config {
        path: config_path,
        required,
        flags,
    };
    let notifier = match notifier {
        Some(Ok(n)) => Some(n),
        Some(Err(e)) => {
            tracing::warn!("{e}");
            None
        }
        None => None,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("skiffd: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = rt.block_on(serve(args, paths, settings, config, notifier)) {
        // The log is stderr: one line, not a log line and the same again.
        eprintln!("skiffd: {}", causes(&e));
        std::process::exit(1);
    }
}

/// Where skiffd's settings come from, to re-read them on SIGHUP.
struct Config {
    path: PathBuf,
    required: bool,
    flags: skiff::daemon::settings::Flags,
}

async fn serve(
    args: Args,
    paths: skiff::paths::Paths,
    settings: skiff::daemon::settings::Settings,
    config: Config,
    notifier: Option<skiff::daemon::notify::Notifier>,
) -> anyhow::Result<()> {
    if let Some(point) = &args.crash_at {
        skiff::daemon::strays::set_crash_point(point).map_err(anyhow::Error::msg)?;
    }
    if let Some(n) = args.bridge_pool {
        skiff::netns::bridge::set_pool_limit(n).map_err(anyhow::Error::msg)?;
    }
    // From the start: a SIGHUP while skiffd sets up is a reload (once it serves), not
    // its death (the signal's default action).
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())?;
    let exe = std::env::current_exe().context("cannot find the skiffd executable")?;
    let (driver, driver_reason) = match (settings.storage_driver, settings.source("storage-driver"))
    {
        (Some(d), skiff::daemon::settings::Source::Flag) => {
            (d, "chosen with --storage-driver".to_string())
        }
        (Some(d), _) => (d, format!("chosen in {}", config.path.display())),
        (None, _) => skiff::runtime::RootfsDriver::choose_default(),
    };
    match &settings.file {
        Some(f) => tracing::info!("configuration: {}", f.display()),
        None => tracing::debug!("no {}: defaults and flags", config.path.display()),
    }
    let opts = skiff::daemon::Options {
        paths,
        driver,
        driver_reason,
        monitor_exe: skiff::daemon::Options::monitor_beside(&exe),
        exe,
        settings,
    };
    let address = args.bus_address.or_else(|| {
        std::env::var("SKIFF_BUS_ADDRESS")
            .ok()
            .filter(|a| !a.is_empty())
    });
    if address.is_none() {
        if let Some(why) = skiff::dbus::session::missing() {
            anyhow::bail!(
                "{why}; skiffd serves on your session bus: {}",
                skiff::dbus::session::HOW_TO_GET_A_BUS
            );
        }
    }
    let daemon = skiff::daemon::Daemon::new(opts).context("cannot open skiff's state")?;
    let conn = skiff::dbus::server::serve(daemon.clone(), address.as_deref())
        .await
        .context("cannot serve on D-Bus")?;
    tracing::info!(
        "skiffd {} serving {} as {}",
        env!("CARGO_PKG_VERSION"),
        skiff::dbus::BUS_NAME,
        conn.unique_name()
            .map(|n| n.to_string())
            .unwrap_or_default()
    );
    // The bus name is ours: ready (Type=notify), and a status that follows the containers.
    let notifier = notifier.map(std::sync::Arc::new);
    if let Some(n) = &notifier {
        notify_ready(n.clone(), daemon.clone());
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // One listener for the daemon's life: one made anew per turn would lose a SIGINT that
    // came during a reload.
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    loop {
        tokio::select! {
            _ = int.recv() => break,
            _ = term.recv() => break,
            _ = hup.recv() => reload(&daemon, &config),
        }
    }
    tracing::info!("skiffd stopping; containers keep running under their monitors");
    // Monitors that reported their container's exit end within milliseconds: reap them.
    skiff::daemon::helper::reap_ending(std::time::Duration::from_secs(1)).await;
    daemon.stop_shared_net_if_unused().await;
    // The monitor zygote ends with us (its monitors do not).
    daemon.stop_zygote(std::time::Duration::from_secs(1)).await;
    if let Some(n) = &notifier {
        if let Err(e) = n.stopping("stopping; containers keep running under their monitors") {
            tracing::warn!("{e}");
        }
    }
    Ok(())
}

/// Sends `READY=1` with the containers' status, then a new status on every container
/// event.
fn notify_ready(n: std::sync::Arc<skiff::daemon::notify::Notifier>, daemon: skiff::daemon::Daemon) {
    use skiff::daemon::notify::containers_status;
    // Subscribed before READY: no event between the two is missed.
    let mut events = daemon.subscribe();
    if let Err(e) = n.ready(&containers_status(&daemon)) {
        tracing::warn!("{e}");
        return;
    }
    tokio::spawn(async move {
        loop {
            match events.recv().await {
                Ok(ev) if ev.typ != "container" => continue,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
            }
            if let Err(e) = n.status(&containers_status(&daemon)) {
                tracing::warn!("{e}");
            }
        }
    });
}

/// SIGHUP: re-reads the configuration and applies what can change live; a file that
/// cannot be used leaves the configuration in use as it is.
fn reload(daemon: &skiff::daemon::Daemon, config: &Config) {
    let new = match skiff::daemon::settings::Settings::load(
        &config.path,
        config.required,
        &config.flags,
        |k| std::env::var(k).ok(),
    ) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("reload refused, the configuration in use is kept: {e}");
            return;
        }
    };
    let log_level = new.log_level.clone();
    let (live, restart) = daemon.reload_settings(new);
    if live.contains(&"log-level") {
        if let Err(e) = skiff::logging::set_daemon_filter(&log_level) {
            tracing::error!("log-level {log_level:?}: {e}");
        }
    }
    if live.is_empty() && restart.is_empty() {
        tracing::info!("reloaded {}: nothing changed", config.path.display());
    } else {
        tracing::info!(
            "reloaded {}: changed now: {}; changed, but take effect when skiffd restarts: {}",
            config.path.display(),
            if live.is_empty() {
                "none".to_string()
            } else {
                live.join(", ")
            },
            if restart.is_empty() {
                "none".to_string()
            } else {
                restart.join(", ")
            },
        );
    }
}

/// `e` and its causes, `: `-joined, each cause left out when the text so far already
/// says it (zbus's errors repeat their source in their own message).
fn causes(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for c in e.chain() {
        let c = c.to_string();
        if out.contains(&c) {
            continue;
        }
        if !out.is_empty() {
            out.push_str(": ");
        }
        out.push_str(&c);
    }
    out
}
