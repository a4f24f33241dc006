//! Commands on running containers: stop, kill, restart, rename, logs, and the event stream.

use super::output::outln;
use std::collections::HashMap;
use std::os::fd::OwnedFd;

use futures_util::StreamExt;
use zbus::{Connection, OwnedVariant, Variant};

use super::connect::{describe, fail};
use super::containers::{container, each};
use super::Failure;
use crate::timefmt::{now_us, parse_rfc3339, rfc3339};

/// A signal by name (`KILL`, `SIGKILL`) or number.
pub fn parse_signal(s: &str) -> Result<i32, Failure> {
    crate::procutil::signal_number(s).ok_or_else(|| {
        Failure::msg(format!(
            "invalid signal {s:?}: {}",
            crate::procutil::SIGNAL_HINT
        ))
    })
}

fn timeout_us(secs: Option<u64>) -> u64 {
    secs.map(|s| s.saturating_mul(1_000_000))
        .unwrap_or(u64::MAX)
}

/// `skiff stop`.
pub async fn stop(conn: &Connection, names: &[String], time: Option<u64>) -> Result<i32, Failure> {
    each(conn, names, |c, name| async move {
        c.stop(timeout_us(time), 0).await?;
        outln!("{name}");
        Ok(())
    })
    .await
}

/// `skiff kill`.
pub async fn kill(conn: &Connection, names: &[String], signal: &str) -> Result<i32, Failure> {
    let sig = parse_signal(signal)?;
    each(conn, names, |c, name| async move {
        c.kill("main", sig).await?;
        outln!("{name}");
        Ok(())
    })
    .await
}

/// `skiff restart`.
pub async fn restart(
    conn: &Connection,
    names: &[String],
    time: Option<u64>,
) -> Result<i32, Failure> {
    each(conn, names, |c, name| async move {
        c.restart(timeout_us(time), 0).await?;
        outln!("{name}");
        Ok(())
    })
    .await
}

/// `skiff rename`.
pub async fn rename(conn: &Connection, name: &str, new_name: &str) -> Result<i32, Failure> {
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    c.rename(new_name).await.map_err(|e| fail(e, 1))?;
    Ok(0)
}

/// Arguments of `skiff logs`.
pub struct LogsArgs {
    /// -f
    pub follow: bool,
    /// --tail
    pub tail: String,
    /// --since
    pub since: Option<String>,
    /// --until
    pub until: Option<String>,
    /// -t
    pub timestamps: bool,
}

/// A point in time as docker takes it: RFC 3339, unix seconds, or a duration ago
/// (`10s`, `5m`, `2h`).
pub fn parse_time(s: &str) -> Result<u64, Failure> {
    if let Some(us) = parse_rfc3339(s) {
        return Ok(us);
    }
    if let Ok(secs) = s.parse::<f64>() {
        return Ok((secs * 1e6) as u64);
    }
    let (num, unit) = s.split_at(s.len().saturating_sub(1));
    let mult = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        _ => 0,
    };
    match num.parse::<u64>() {
        Ok(n) if mult > 0 => Ok(now_us().saturating_sub(n * mult * 1_000_000)),
        _ => Err(Failure::msg(format!(
            "bad time {s:?}: use RFC 3339, unix seconds, or a duration like 10m"
        ))),
    }
}

/// `skiff logs`.
pub async fn logs(conn: &Connection, name: &str, a: LogsArgs) -> Result<i32, Failure> {
    let ov =
        |v: Variant<'static>| OwnedVariant::try_from(v).map_err(|e| Failure::msg(e.to_string()));
    let mut opts: HashMap<&str, OwnedVariant> = HashMap::new();
    opts.insert("follow", ov(Variant::from(a.follow))?);
    opts.insert("timestamps", ov(Variant::from(a.timestamps))?);
    if a.tail != "all" {
        let n: u32 = a
            .tail
            .parse()
            .map_err(|_| Failure::msg(format!("--tail {:?}: give a number or \"all\"", a.tail)))?;
        opts.insert("tail", ov(Variant::from(n))?);
    }
    if let Some(s) = &a.since {
        opts.insert("since", ov(Variant::from(parse_time(s)?))?);
    }
    if let Some(u) = &a.until {
        opts.insert("until", ov(Variant::from(parse_time(u)?))?);
    }
    let c = container(conn, name).await.map_err(|e| fail(e, 1))?;
    let (out, err) = c.open_logs(opts).await.map_err(|e| fail(e, 1))?;
    // Plain blocking copies, one thread per stream: the pipes end with the logs.
    let copy = |fd: zbus::OwnedFd, to_err: bool| {
        std::thread::spawn(move || {
            let fd: OwnedFd = fd.into();
            let mut src = std::fs::File::from(fd);
            let r = if to_err {
                std::io::copy(&mut src, &mut std::io::stderr().lock())
            } else {
                let mut o = std::io::stdout().lock();
                let r = std::io::copy(&mut src, &mut o);
                let _ = std::io::Write::flush(&mut o);
                r
            };
            r.map(drop)
        })
    };
    let (a, b) = (copy(out, false), copy(err, true));
    for h in [a, b] {
        match h.join() {
            Ok(Ok(())) => {}
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
            Ok(Err(e)) => return Err(Failure::msg(format!("reading logs: {e}"))),
            Err(_) => return Err(Failure::msg("reading logs: a copy thread failed")),
        }
    }
    Ok(0)
}

/// `skiff events`: prints events as they come, until interrupted.
pub async fn events(
    conn: &Connection,
    filters: &[String],
    format: Option<&str>,
) -> Result<i32, Failure> {
    let format = format.unwrap_or("text");
    let template = match format.trim() {
        "" | "text" | "json" => None,
        t => Some(super::format::Template::parse(
            &t.replace("\\t", "\t").replace("\\n", "\n"),
        )?),
    };
    let mut by_key: HashMap<String, Vec<String>> = HashMap::new();
    for f in filters {
        let (k, v) = f
            .split_once('=')
            .ok_or_else(|| Failure::msg(format!("bad filter {f:?}: use key=value")))?;
        if !matches!(k, "type" | "event" | "container") {
            return Err(Failure::msg(format!(
                "unknown event filter {k:?} (known: type, event, container)"
            )));
        }
        by_key.entry(k.to_string()).or_default().push(v.to_string());
    }
    let mgr = super::connect::manager(conn)
        .await
        .map_err(|e| fail(e, 1))?;
    let mut stream = mgr.receive_event().await.map_err(|e| fail(e, 1))?;
    while let Some(sig) = stream.next().await {
        let Ok(a) = sig.args() else { continue };
        let (typ, action, id) = (
            a.typ().to_string(),
            a.action().to_string(),
            a.id().to_string(),
        );
        let attrs = a.attributes().clone();
        let ok = by_key.iter().all(|(k, vals)| {
            vals.iter().any(|v| match k.as_str() {
                "type" => typ == *v,
                "event" => action == *v,
                "container" => {
                    typ == "container"
                        && (id.starts_with(v.as_str()) || attrs.get("name") == Some(v))
                }
                _ => false,
            })
        });
        if !ok {
            continue;
        }
        let time = *a.time();
        let line = || {
            serde_json::json!({
                "Type": typ, "Action": action,
                "Actor": {"ID": id, "Attributes": attrs},
                "Status": action, "ID": id,
                "From": attrs.get("image").cloned().unwrap_or_default(),
                "Scope": "local",
                "time": time / 1_000_000, "timeNano": time as u128 * 1000,
            })
        };
        if let Some(t) = &template {
            outln!("{}", t.execute(&line())?);
        } else if format.trim() == "json" {
            outln!("{}", line());
        } else {
            let mut keys: Vec<_> = attrs.iter().collect();
            keys.sort();
            let attrs: Vec<String> = keys.into_iter().map(|(k, v)| format!("{k}={v}")).collect();
            outln!(
                "{} {typ} {action} {id} ({})",
                rfc3339(time),
                attrs.join(", ")
            );
        }
    }
    Err(Failure::msg(describe(&zbus::Error::Failure(
        "the connection to the bus closed".into(),
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_and_number() {
        assert_eq!(parse_signal("KILL").unwrap(), 9);
        assert_eq!(parse_signal("sigterm").unwrap(), 15);
        assert_eq!(parse_signal("2").unwrap(), 2);
        assert!(parse_signal("NOPE").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn times() {
        assert_eq!(
            parse_time("2026-01-01T00:00:00Z").unwrap(),
            1_767_225_600_000_000
        );
        assert_eq!(parse_time("10").unwrap(), 10_000_000);
        let ago = parse_time("10m").unwrap();
        assert!(now_us() - ago >= 600_000_000);
        assert!(parse_time("soon").is_err());
    }
}
