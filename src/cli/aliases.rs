//! docker's management commands as real aliases: `skiff container ls|rm|run|…` and
//! `skiff image pull|…` are the top-level commands themselves (the same clap definition,
//! parsed into the same [`Command`] and run by the same code), plus `container prune`.

use clap::{ArgMatches, Args, FromArgMatches, Subcommand};

use super::system::ContainerPruneArgs;
use super::Command;

/// The top-level commands `skiff container` offers, each with docker's extra names.
/// Commands not (yet) in [`Command`] are left out.
pub const CONTAINER_COMMANDS: &[(&str, &[&str])] = &[
    ("ps", &["ls", "list"]),
    ("inspect", &[]),
    ("rm", &["remove"]),
    ("start", &[]),
    ("stop", &[]),
    ("kill", &[]),
    ("restart", &[]),
    ("logs", &[]),
    ("exec", &[]),
    ("run", &[]),
    ("create", &[]),
    ("wait", &[]),
    ("port", &[]),
    ("top", &[]),
    ("stats", &[]),
    ("cp", &[]),
    ("rename", &[]),
    ("attach", &[]),
    ("pause", &[]),
    ("unpause", &[]),
    ("commit", &[]),
    ("export", &[]),
    ("update", &[]),
    ("diff", &[]),
];

/// The top-level commands `skiff image` offers beyond its own (`ImageCommand`).
pub const IMAGE_COMMANDS: &[(&str, &[&str])] = &[("pull", &[]), ("push", &[]), ("build", &[])];

/// Adds the top-level subcommands `wanted` names to `cmd`, with their aliases. Run
/// deferred (`clap::Command::defer`): only when the group is used (or help, completion
/// scripts and man pages are made), so other commands pay nothing for it; and building
/// the top-level commands here does not build this group again.
fn add_commands(
    mut cmd: clap::Command,
    wanted: &'static [(&'static str, &'static [&'static str])],
) -> clap::Command {
    let all = Command::augment_subcommands(clap::Command::new("skiff"));
    for (name, aliases) in wanted {
        if cmd.find_subcommand(name).is_some() {
            // The group has a command of its own by that name.
            continue;
        }
        if let Some(sub) = all.find_subcommand(name) {
            cmd = cmd.subcommand(sub.clone().visible_aliases(aliases.iter().copied()));
        }
    }
    cmd
}

fn offered(wanted: &[(&str, &[&str])], name: &str) -> bool {
    wanted
        .iter()
        .any(|(n, aliases)| *n == name || aliases.contains(&name))
}

/// `skiff container …`.
#[derive(Debug)]
pub enum ContainerCommand {
    /// `container prune`.
    Prune(ContainerPruneArgs),
    /// A top-level command under its management name.
    Same(Box<Command>),
}

impl FromArgMatches for ContainerCommand {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        match m.subcommand() {
            Some(("prune", sub)) => Ok(Self::Prune(ContainerPruneArgs::from_arg_matches(sub)?)),
            _ => Ok(Self::Same(Box::new(Command::from_arg_matches(m)?))),
        }
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Subcommand for ContainerCommand {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| {
            let prune = ContainerPruneArgs::augment_args(clap::Command::new("prune"))
                .about("Remove all stopped containers");
            add_commands(cmd, CONTAINER_COMMANDS).subcommand(prune)
        })
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        name == "prune" || offered(CONTAINER_COMMANDS, name)
    }
}

/// The top-level commands `skiff image` offers (flattened into `ImageCommand`).
#[derive(Debug)]
pub struct ImageMore(pub Box<Command>);

impl FromArgMatches for ImageMore {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        Ok(Self(Box::new(Command::from_arg_matches(m)?)))
    }

    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        *self = Self::from_arg_matches(m)?;
        Ok(())
    }
}

impl Subcommand for ImageMore {
    fn augment_subcommands(cmd: clap::Command) -> clap::Command {
        cmd.defer(|cmd| add_commands(cmd, IMAGE_COMMANDS))
    }

    fn augment_subcommands_for_update(cmd: clap::Command) -> clap::Command {
        Self::augment_subcommands(cmd)
    }

    fn has_subcommand(name: &str) -> bool {
        offered(IMAGE_COMMANDS, name)
    }
}

/// The command an alias stands for: `container X` and `image X` become `X`.
pub fn unalias(cmd: Command) -> Command {
    match cmd {
        Command::Container {
            command: ContainerCommand::Same(c),
        } => unalias(*c),
        Command::Image {
            command: super::ImageCommand::More(ImageMore(c)),
        } => unalias(*c),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::cli::Cli;

    #[test]
    fn the_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parsed(args: &[&str]) -> String {
        let cli = Cli::try_parse_from(std::iter::once("skiff").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        format!("{:?}", unalias(cli.command))
    }

    #[test]
    fn aliases_parse_into_the_top_level_commands() {
        let pairs: &[(&[&str], &[&str])] = &[
            (&["container", "ls", "-a"], &["ps", "-a"]),
            (&["container", "list", "-q"], &["ps", "-q"]),
            (
                &["container", "remove", "-f", "x", "y"],
                &["rm", "-f", "x", "y"],
            ),
            (
                &["container", "run", "--rm", "img", "echo", "-n"],
                &["run", "--rm", "img", "echo", "-n"],
            ),
            (
                &["container", "top", "web", "-o", "pid"],
                &["top", "web", "-o", "pid"],
            ),
            (
                &["container", "exec", "-i", "web", "sh"],
                &["exec", "-i", "web", "sh"],
            ),
            (
                &["image", "pull", "-q", "busybox"],
                &["pull", "-q", "busybox"],
            ),
        ];
        for (alias, cmd) in pairs {
            assert_eq!(parsed(alias), parsed(cmd), "{alias:?}");
        }
        assert!(parsed(&["container", "prune", "-f"]).contains("Prune"));
        // Not every top-level command is a container command.
        assert!(Cli::try_parse_from(["skiff", "container", "images"]).is_err());
        assert!(Cli::try_parse_from(["skiff", "image", "ps"]).is_err());
    }
}
