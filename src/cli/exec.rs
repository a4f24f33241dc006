//! `skiff exec`: a command in a running container, with the caller's stdio.

use std::collections::HashMap;
use std::os::fd::AsFd;

use futures_util::StreamExt;
use zbus::{Connection, OwnedVariant, Variant};

use super::connect::{error_name, fail};
use super::containers::container;
use super::Failure;

/// Flags of `skiff exec`.
pub struct ExecArgs {
    /// -i
    pub interactive: bool,
    /// -d
    pub detach: bool,
    /// -e
    pub env: Vec<String>,
    /// -w
    pub workdir: Option<String>,
    /// -u
    pub user: Option<String>,
}

fn exec_failure(e: zbus::Error) -> Failure {
    let code = match error_name(&e).as_deref() {
        Some("org.skiff.Error.CommandNotFound") => 127,
        Some("org.skiff.Error.CommandNotExecutable") => 126,
        _ => 125,
    };
    fail(e, code)
}

/// Runs the command; returns its exit code.
pub async fn exec(
    conn: &Connection,
    name: &str,
    command: &[String],
    a: ExecArgs,
) -> Result<i32, Failure> {
    let ov = |v: Variant<'_>| OwnedVariant::try_from(v).map_err(|e| Failure::msg(e.to_string()));
    let mut options: HashMap<&str, OwnedVariant> = HashMap::new();
    if !a.env.is_empty() {
        options.insert("env", ov(Variant::from(a.env.clone()))?);
    }
    if let Some(w) = &a.workdir {
        options.insert("workdir", ov(Variant::from(w.as_str()))?);
    }
    if let Some(u) = &a.user {
        options.insert("user", ov(Variant::from(u.as_str()))?);
    }
    let c = container(conn, name).await.map_err(exec_failure)?;
    let mgr = super::connect::manager(conn).await.map_err(exec_failure)?;
    // Subscribe first: a quick command may end before Exec's reply.
    let mut events = mgr.receive_event().await.map_err(exec_failure)?;
    let null =
        std::fs::File::open("/dev/null").map_err(|e| Failure::msg(format!("/dev/null: {e}")))?;
    let (stdin, stdout, stderr) = (std::io::stdin(), std::io::stdout(), std::io::stderr());
    let mut fds: HashMap<u32, zbus::Fd<'_>> = HashMap::new();
    if !a.detach {
        fds.insert(
            0,
            if a.interactive {
                stdin.as_fd().into()
            } else {
                null.as_fd().into()
            },
        );
        fds.insert(1, stdout.as_fd().into());
        fds.insert(2, stderr.as_fd().into());
    }
    let argv: Vec<&str> = command.iter().map(String::as_str).collect();
    let (id, _) = c.exec(&argv, options, fds).await.map_err(exec_failure)?;
    if a.detach {
        return Ok(0);
    }
    while let Some(sig) = events.next().await {
        let Ok(ev) = sig.args() else { continue };
        if *ev.action() == "exec_die" && ev.attributes().get("execID") == Some(&id) {
            return Ok(ev
                .attributes()
                .get("exitCode")
                .and_then(|c| c.parse().ok())
                .unwrap_or(125));
        }
    }
    Err(Failure {
        message: "lost the connection to skiffd before the command ended".into(),
        code: 125,
    })
}
