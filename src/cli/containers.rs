//! Container commands: run, create, start, wait, rm, inspect, ps.

use super::output::{errln, outln};
use std::collections::HashMap;
use std::os::fd::AsFd;

use zbus::Connection;

use super::autopull::AfterFailure;
use super::connect::{error_name, fail};
use super::run_config::config;
use super::{CreateArgs, Failure};
use crate::dbus::proxy::ContainerProxy;

/// docker's exit codes for a `run` that failed before the command ran.
pub(super) fn run_failure(e: zbus::Error) -> Failure {
    let code = match error_name(&e).as_deref() {
        Some("org.skiff.Error.CommandNotFound") => 127,
        Some("org.skiff.Error.CommandNotExecutable") => 126,
        _ => 125,
    };
    fail(e, code)
}

/// docker's exit code for a `create` that failed.
fn create_failure(e: zbus::Error) -> Failure {
    fail(e, 125)
}

/// After a failed run or create call: pulls a missing image (see
/// [`super::autopull::after_failed_call`]) or fails with `failure(e)`.
pub(super) async fn pull_after(
    conn: &Connection,
    args: &CreateArgs,
    e: zbus::Error,
    interruptible: bool,
    failure: fn(zbus::Error) -> Failure,
) -> Result<AfterFailure, Failure> {
    super::autopull::after_failed_call(conn, &args.image, &args.pull, e, interruptible, failure)
        .await
}

/// The signals `skiff run` forwards to the container.
const PROXIED: [i32; 6] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Receives the proxied signals.
struct SignalProxy {
    rx: tokio::sync::mpsc::UnboundedReceiver<i32>,
}

impl SignalProxy {
    fn new() -> Result<SignalProxy, Failure> {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        for &signo in &PROXIED {
            let mut stream =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(signo))
                    .map_err(|e| Failure::msg(format!("cannot handle signal {signo}: {e}")))?;
            let tx = tx.clone();
            tokio::spawn(async move {
                while stream.recv().await.is_some() {
                    if tx.send(signo).is_err() {
                        break;
                    }
                }
            });
        }
        Ok(SignalProxy { rx })
    }
}

/// The next signal received, or never when not proxying.
async fn next_signal(proxy: &mut Option<SignalProxy>) -> Option<i32> {
    match proxy {
        Some(p) => p.rx.recv().await,
        None => std::future::pending().await,
    }
}

/// `skiff run`.
pub async fn run(
    conn: &Connection,
    args: CreateArgs,
    rm: bool,
    detach: bool,
    sig_proxy: bool,
) -> Result<i32, Failure> {
    let mut args = args;
    let notify = super::sdnotify::SdNotify::prepare(&mut args, detach)?;
    let mgr = super::connect::manager(conn).await.map_err(run_failure)?;
    if detach {
        let mut pulled = false;
        let (id, _) = loop {
            match mgr
                .run_container(config(&args, rm)?, HashMap::new(), 0)
                .await
            {
                Ok(r) => break r,
                Err(e) if !pulled => match pull_after(conn, &args, e, false, run_failure).await? {
                    AfterFailure::Retry => pulled = true,
                    AfterFailure::Exit(code) => return Ok(code),
                },
                Err(e) => return Err(run_failure(e)),
            }
        };
        outln!("{id}");
        if let Some(n) = &notify {
            n.started();
        }
        return Ok(0);
    }
    // Subscribe before the call: the container may exit before the reply arrives, and
    // signals sent during the call are delivered before its reply. Drained at once (see
    // `ending`).
    let mut endings = super::ending::Endings::subscribe(conn)
        .await
        .map_err(run_failure)?;
    if args.tty {
        return super::attach::run_tty(conn, &mgr, endings, &args, rm, sig_proxy).await;
    }
    let null;
    let own_stdin = std::io::stdin();
    let stdin = if args.interactive {
        own_stdin.as_fd()
    } else {
        null = std::fs::File::open("/dev/null")
            .map_err(|e| Failure::msg(format!("/dev/null: {e}")))?;
        null.as_fd()
    };
    let stdout = std::io::stdout();
    let stderr = std::io::stderr();
    let fds = || -> HashMap<u32, zbus::Fd<'_>> {
        HashMap::from([
            (0, stdin.into()),
            (1, stdout.as_fd().into()),
            (2, stderr.as_fd().into()),
        ])
    };
    let flags =
        crate::dbus::RUN_KILL_ON_DISCONNECT | if rm { crate::dbus::RUN_AUTO_REMOVE } else { 0 };
    // Signals to skiff go to the container (docker's sig-proxy); installed before the
    // container starts, so none is lost to skiff's own default action.
    let mut proxy = if sig_proxy {
        Some(SignalProxy::new()?)
    } else {
        None
    };
    // A signal during the call ends the CLI: there is no container to forward it to
    // yet, and skiffd kills the container when we go.
    let mut pulled = false;
    let (id, path) = loop {
        let r = tokio::select! {
            r = mgr.run_container(config(&args, rm)?, fds(), flags) => r,
            Some(signo) = next_signal(&mut proxy) => return Ok(128 + signo),
        };
        match r {
            Ok(r) => break r,
            Err(e) if !pulled => match pull_after(conn, &args, e, sig_proxy, run_failure).await? {
                AfterFailure::Retry => pulled = true,
                AfterFailure::Exit(code) => return Ok(code),
            },
            Err(e) => return Err(run_failure(e)),
        }
    };
    if let Some(n) = &notify {
        n.started();
    }
    let target = ContainerProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
        .map_err(run_failure)?;
    let waited = super::ending::wait_call(&target, rm);
    tokio::pin!(waited);
    let mut code = None;
    let mut interrupts = 0;
    let mut terms = 0;
    loop {
        let ending = tokio::select! {
            c = &mut waited => return Ok(c),
            ev = endings.next_for(&id) => match ev { Some(ev) => ev, None => break },
            Some(signo) = next_signal(&mut proxy) => {
                let twice = match signo {
                    libc::SIGINT => { interrupts += 1; interrupts >= 2 }
                    libc::SIGTERM => { terms += 1; terms >= 2 }
                    _ => false,
                };
                if twice {
                    // A second Ctrl-C or SIGTERM: leave; skiffd kills the container when
                    // we go.
                    errln!("skiff: signalled twice: stopping the container");
                    return Ok(128 + signo);
                }
                if target.kill("main", signo).await.is_err()
                    && matches!(signo, libc::SIGINT | libc::SIGTERM)
                {
                    // Nothing runs to take it: the container is ending or gone.
                    return Ok(code.unwrap_or(128 + signo));
                }
                continue;
            }
        };
        match ending {
            super::ending::Ending::Died(c) => {
                code = Some(c);
                if !rm {
                    break;
                }
            }
            // With --rm, return once nothing of the container is left.
            super::ending::Ending::Destroyed if rm => break,
            super::ending::Ending::Destroyed => {}
        }
    }
    code.ok_or_else(|| Failure {
        message: "lost the connection to skiffd before the container exited".into(),
        code: 125,
    })
}

/// `skiff create`.
pub async fn create(conn: &Connection, args: CreateArgs) -> Result<i32, Failure> {
    super::sdnotify::refuse_for_create(&args)?;
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 125))?;
    let mut pulled = false;
    let (id, _) = loop {
        match mgr.create_container(config(&args, false)?, 0).await {
            Ok(r) => break r,
            Err(e) if !pulled => match pull_after(conn, &args, e, false, create_failure).await? {
                AfterFailure::Retry => pulled = true,
                AfterFailure::Exit(code) => return Ok(code),
            },
            Err(e) => return Err(create_failure(e)),
        }
    };
    outln!("{id}");
    Ok(0)
}

/// A proxy for the container `name` (name, id or id prefix).
pub async fn container<'a>(
    conn: &'a Connection,
    name: &str,
) -> Result<ContainerProxy<'a>, zbus::Error> {
    let mgr = super::connect::manager(conn).await?;
    let path = mgr.get_container(name).await?;
    // No property cache: one round trip less per command.
    ContainerProxy::builder(conn)
        .path(path)
        .cache_properties(zbus::proxy::CacheProperties::No)
        .build()
        .await
}

/// Runs `f` for each container name, printing errors and returning 1 if any failed.
pub async fn each<'c, F, Fut>(conn: &'c Connection, names: &[String], f: F) -> Result<i32, Failure>
where
    F: Fn(ContainerProxy<'c>, String) -> Fut,
    Fut: std::future::Future<Output = Result<(), zbus::Error>>,
{
    let mut code = 0;
    for name in names {
        let r = match container(conn, name).await {
            Ok(c) => f(c, name.clone()).await,
            Err(e) => Err(e),
        };
        if let Err(e) = r {
            errln!("skiff: Error: {}", super::connect::describe(&e));
            code = 1;
        }
    }
    Ok(code)
}

/// `skiff start -a [-i]`: starts one container and attaches to it; returns its exit
/// code.
pub async fn start_attached(
    conn: &Connection,
    name: &str,
    interactive: bool,
    detach_keys: &str,
) -> Result<i32, Failure> {
    let keys = super::tty::parse_detach_keys(detach_keys).map_err(Failure::msg)?;
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    // A tty container's pty starts with our terminal's size (a container without a tty
    // refuses the resize: nothing to do then).
    if let Some((rows, cols)) = super::tty::window_size() {
        let _ = c.resize(u32::from(rows), u32::from(cols)).await;
    }
    c.start(HashMap::new(), crate::dbus::RUN_ATTACH)
        .await
        .map_err(run_failure)?;
    let opts = super::attach::SessionOpts {
        stdin: interactive,
        detach_keys: keys,
        sig_proxy: Some(&c),
    };
    super::attach::attach_to(&c, opts).await
}

/// `skiff start`.
pub async fn start(conn: &Connection, names: &[String]) -> Result<i32, Failure> {
    each(conn, names, |c, name| async move {
        c.start(HashMap::new(), 0).await?;
        outln!("{name}");
        Ok(())
    })
    .await
}

/// `skiff wait`.
pub async fn wait(conn: &Connection, names: &[String]) -> Result<i32, Failure> {
    each(conn, names, |c, _| async move {
        let (code, _) = c.wait("not-running").await?;
        outln!("{code}");
        Ok(())
    })
    .await
}

/// `skiff rm`.
pub async fn rm(
    conn: &Connection,
    names: &[String],
    force: bool,
    volumes: bool,
) -> Result<i32, Failure> {
    let flags = (u64::from(force) * crate::dbus::REMOVE_FORCE)
        | (u64::from(volumes) * crate::dbus::REMOVE_VOLUMES);
    each(conn, names, |c, name| async move {
        c.remove(flags).await?;
        outln!("{name}");
        Ok(())
    })
    .await
}

/// `skiff ps`.
pub async fn ps(
    conn: &Connection,
    all: bool,
    quiet: bool,
    filters: &[String],
    format: &str,
    no_trunc: bool,
) -> Result<i32, Failure> {
    super::format::check(format, &super::rows::PS)?;
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let filters: Vec<&str> = filters.iter().map(String::as_str).collect();
    let flags = if all { crate::dbus::LIST_ALL } else { 0 };
    if quiet {
        let list = mgr
            .list_containers(&filters, flags)
            .await
            .map_err(|e| fail(e, 1))?;
        for (id, ..) in &list {
            let n = if no_trunc { id.len() } else { 12.min(id.len()) };
            outln!("{}", &id[..n]);
        }
        return Ok(0);
    }
    // One round trip for the whole table, however many containers there are.
    let json = mgr
        .inspect_containers(&filters, flags)
        .await
        .map_err(|e| fail(e, 1))?;
    let list: Vec<serde_json::Value> = serde_json::from_str(&json)
        .map_err(|e| Failure::msg(format!("bad JSON from skiffd: {e}")))?;
    let rows: Vec<serde_json::Value> = list
        .iter()
        .map(|v| super::rows::ps_row(v, port_lines(v).join(", "), no_trunc))
        .collect();
    super::format::print(format, &rows, &super::rows::PS)?;
    Ok(0)
}

/// `(container key, host address)` pairs of inspect's `NetworkSettings.Ports`, sorted.
fn published(v: &serde_json::Value) -> Vec<(String, String)> {
    let mut out = Vec::new();
    if let Some(ports) = v["NetworkSettings"]["Ports"].as_object() {
        for (key, hosts) in ports {
            for h in hosts.as_array().into_iter().flatten() {
                let ip = h["HostIp"].as_str().unwrap_or("0.0.0.0");
                let port = h["HostPort"].as_str().unwrap_or("");
                let host = if ip.contains(':') {
                    format!("[{ip}]:{port}")
                } else {
                    format!("{ip}:{port}")
                };
                out.push((key.clone(), host));
            }
        }
    }
    out.sort_by_key(|(k, h)| {
        let n: u32 = k
            .split('/')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        (n, k.clone(), h.clone())
    });
    out
}

/// `0.0.0.0:8080->80/tcp` for each published port (docker ps's PORTS column).
fn port_lines(v: &serde_json::Value) -> Vec<String> {
    published(v)
        .into_iter()
        .map(|(k, h)| format!("{h}->{k}"))
        .collect()
}

/// `skiff port CONTAINER [PORT[/PROTO]]`.
pub async fn port(conn: &Connection, name: &str, filter: Option<&str>) -> Result<i32, Failure> {
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    let json = c.inspect().await.map_err(|e| fail(e, 1))?;
    let v: serde_json::Value = serde_json::from_str(&json)
        .map_err(|e| Failure::msg(format!("bad JSON from skiffd: {e}")))?;
    let want = filter.map(|f| {
        if f.contains('/') {
            f.to_string()
        } else {
            format!("{f}/tcp")
        }
    });
    let list = published(&v);
    let mut shown = 0;
    for (key, host) in &list {
        match &want {
            Some(w) if w == key => outln!("{host}"),
            Some(_) => continue,
            None => outln!("{key} -> {host}"),
        }
        shown += 1;
    }
    if shown == 0 {
        if let Some(w) = want {
            return Err(Failure::msg(format!(
                "no public port '{w}' published for {name}"
            )));
        }
    }
    Ok(0)
}
