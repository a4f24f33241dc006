//! Running the everyday commands (top, stats, version, system, container prune,
//! completion, man), kept out of `mod.rs`'s dispatch.

use zbus::Connection;

use super::aliases::ContainerCommand;
use super::{Command, Failure};

/// Runs the commands that need no connection to skiffd (or make their own); returns the
/// command unchanged when it needs one.
pub async fn without_daemon(
    bus: Option<&str>,
    cmd: Command,
) -> Result<Result<i32, Failure>, Command> {
    match cmd {
        Command::Version(a) => Ok(super::system::version(bus, &a).await),
        Command::Completion(a) => Ok(super::completion::completion(&a)),
        Command::Man(a) => Ok(super::completion::man(&a)),
        other => Err(other),
    }
}

/// Runs the everyday commands that talk to skiffd.
pub async fn run(conn: &Connection, cmd: Command) -> Result<i32, Failure> {
    match cmd {
        Command::Top(a) => super::top::top(conn, &a).await,
        Command::Stats(a) => super::stats::stats(conn, &a).await,
        Command::System { command } => super::system::run(conn, command).await,
        Command::Container {
            command: ContainerCommand::Prune(a),
        } => super::system::container_prune(conn, &a).await,
        Command::Complete(a) => super::completion::names(conn, &a).await,
        other => Err(Failure::msg(format!(
            "internal error: no handler for {other:?}"
        ))),
    }
}
