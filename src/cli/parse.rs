//! Parsing the command line, with a short way for `skiff run`.
//!
//! clap builds the whole command tree before it parses: every command with every flag
//! (`run` and `create` alone have ~100), ~0.4 ms and ~0.5 MiB of heap at each start of
//! the CLI, much of a `run --rm IMG true`'s client-side time. A command line that starts
//! with `run` is first parsed by a tree that holds only `run` (the same [`RunArgs`] and
//! the same global flag): when that parse succeeds its result is what the whole tree
//! gives (the unit tests compare them). Anything else, errors and `--help` included,
//! is parsed by the whole tree, so messages, suggestions and help are the whole
//! tree's.

use std::ffi::OsString;

use clap::{Args, Parser, Subcommand};

use super::{Cli, Command, CreateArgs};

/// `skiff run`'s own flags, and the container's.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Print help (-h is --hostname, as in docker).
    #[arg(long, action = clap::ArgAction::Help)]
    pub help: Option<bool>,
    /// Remove the container when it exits.
    #[arg(long)]
    pub rm: bool,
    /// Run in the background and print the container id.
    #[arg(short = 'd', long)]
    pub detach: bool,
    /// Forward SIGINT, SIGTERM, SIGHUP, SIGQUIT, SIGUSR1/2 to the container (a second
    /// Ctrl-C leaves and kills it).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub sig_proxy: bool,
    /// Container flags.
    #[command(flatten)]
    pub args: CreateArgs,
}

/// The tree of `skiff run` alone (its help is never shown: see the module's doc).
#[derive(Debug, Parser)]
#[command(name = "skiff")]
struct RunOnly {
    /// As [`Cli::bus_address`].
    #[arg(long, global = true, value_name = "ADDRESS")]
    bus_address: Option<String>,
    #[command(subcommand)]
    command: RunCommand,
}

#[derive(Debug, Subcommand)]
enum RunCommand {
    #[command(disable_help_flag = true)]
    Run(RunArgs),
}

/// Parses the process's command line.
pub fn parse() -> Result<Cli, clap::Error> {
    parse_from(std::env::args_os().collect())
}

/// Parses `argv` (the program name first).
pub fn parse_from(argv: Vec<OsString>) -> Result<Cli, clap::Error> {
    if let Some(cli) = run_only(&argv) {
        return Ok(cli);
    }
    <Cli as Parser>::try_parse_from(argv)
}

/// `argv` parsed by the `run`-only tree, when it starts with `run` and parses there.
fn run_only(argv: &[OsString]) -> Option<Cli> {
    if argv.get(1).is_none_or(|a| a != "run") {
        return None;
    }
    let parsed = RunOnly::try_parse_from(argv).ok()?;
    let RunCommand::Run(args) = parsed.command;
    Some(Cli {
        bus_address: parsed.bus_address,
        command: Command::Run(args),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(s: &[&str]) -> Vec<OsString> {
        std::iter::once("skiff")
            .chain(s.iter().copied())
            .map(OsString::from)
            .collect()
    }

    #[test]
    fn the_run_only_tree_gives_what_the_whole_tree_gives() {
        let lines: &[&[&str]] = &[
            &["run", "--rm", "busybox", "true"],
            &["run", "--rm", "--network", "none", "busybox", "true"],
            &[
                "run", "-it", "--name", "x", "-e", "A=1", "-v", "/a:/b:ro", "img", "sh", "-c",
                "echo hi",
            ],
            &["run", "-d", "-p", "8080:80", "--restart", "always", "nginx"],
            &["run", "--bus-address", "unix:path=/x", "img"],
            &["run", "--sig-proxy=false", "img", "--", "--rm", "-d"],
            &["run", "img", "ls", "-l", "--help"],
            &[
                "run",
                "--user",
                "1000:1000",
                "-w",
                "/tmp",
                "--entrypoint",
                "",
                "img",
            ],
        ];
        for l in lines {
            let fast = run_only(&argv(l)).unwrap_or_else(|| panic!("not parsed fast: {l:?}"));
            let whole = <Cli as Parser>::try_parse_from(argv(l)).unwrap();
            assert_eq!(format!("{fast:?}"), format!("{whole:?}"), "{l:?}");
        }
    }

    #[test]
    fn errors_help_and_other_commands_go_to_the_whole_tree() {
        for l in [
            &["run", "--help"][..],
            &["run"],
            &["run", "--no-such-flag", "img"],
            &["run", "--rm"],
            &["--bus-address", "x", "run", "img"],
            &["ps", "-a"],
            &["container", "run", "img"],
        ] {
            assert!(run_only(&argv(l)).is_none(), "{l:?}");
        }
        // Through the whole tree, the same as before: the error is clap's of `skiff run`.
        let e = parse_from(argv(&["run", "--no-such-flag", "img"])).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::UnknownArgument);
        assert!(e.to_string().contains("Usage: skiff run"), "{e}");
        let e = parse_from(argv(&["run", "--help"])).unwrap_err();
        assert_eq!(e.kind(), clap::error::ErrorKind::DisplayHelp);
        assert!(e.to_string().contains("Create and run a container"), "{e}");
        assert!(parse_from(argv(&["--bus-address", "x", "run", "img"])).is_ok());
    }
}
