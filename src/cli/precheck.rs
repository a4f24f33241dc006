//! Checks of a command line that need no daemon, made before connecting to it: a bad
//! `--format` template (exit 125) and `-it` without a terminal on stdin ("the input
//! device is not a TTY", exit 1) fail the same whether skiffd runs or not, and before
//! anything is done.

use super::format;
use super::rows;
use super::{Command, Failure, ImageCommand};
use crate::cli::volumes::VolumeCommand;

fn no_tty(tty: bool, interactive: bool, detach: bool) -> Result<(), Failure> {
    if tty && interactive && !detach && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
        return Err(Failure::msg("the input device is not a TTY"));
    }
    Ok(())
}

fn events_format(f: Option<&str>) -> Result<(), Failure> {
    match f.map(str::trim) {
        None | Some("" | "text" | "json") => Ok(()),
        Some(t) => format::Template::parse(&t.replace("\\t", "\t").replace("\\n", "\n"))
            .map(drop)
            .map_err(Failure::from),
    }
}

/// Checks `cmd` before skiff connects to skiffd.
pub fn check(cmd: &Command) -> Result<(), Failure> {
    let list =
        |f: &Option<String>, t: &format::Table<'_>| format::check(f.as_deref().unwrap_or(""), t);
    match cmd {
        Command::Run(r) => no_tty(r.args.tty, r.args.interactive, r.detach),
        Command::Exec {
            tty,
            interactive,
            detach,
            ..
        } => no_tty(*tty, *interactive, *detach),
        Command::Ps { format, .. } => list(format, &rows::PS),
        Command::Images(a)
        | Command::Image {
            command: ImageCommand::Ls(a),
        } => list(&a.format, &rows::IMAGES),
        Command::History(a)
        | Command::Image {
            command: ImageCommand::History(a),
        } => list(&a.format, &rows::HISTORY),
        Command::Image {
            command: ImageCommand::Inspect(a),
        } => format::check_inspect(a.format.as_deref()),
        Command::Inspect(a) => format::check_inspect(a.format.as_deref()),
        Command::Info { format } => format::check_inspect(format.as_deref()),
        Command::Events { format, .. } => events_format(format.as_deref()),
        Command::Volume {
            command: VolumeCommand::Ls(a),
        } => list(&a.format, &rows::VOLUMES),
        Command::Volume {
            command: VolumeCommand::Inspect { format, .. },
        } => format::check_inspect(format.as_deref()),
        _ => Ok(()),
    }
}
