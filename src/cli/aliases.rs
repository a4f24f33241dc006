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

thread_local! {
    /// The top-level commands, built once: building them builds `container` and
    /// `image` again, which must not recurse (they are built without their aliases).
    static TOP_LEVEL: std::cell::RefCell<Option<clap::Command>> =
        const { std::cell::RefCell::new(None) };
    static BUILDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Adds the top-level subcommands `wanted` names to `cmd`, with their aliases.
fn add_commands(
    mut cmd: clap::Command,
    wanted: &'static [(&'static str, &'static [&'static str])],
) -> clap::Command {
    if BUILDING.with(|b| b.get()) {
        return cmd;
    }
    let all = TOP_LEVEL.with(|t| t.borrow().clone());
    let all = match all {
        Some(all) => all,
        None => {
            BUILDING.with(|b| b.set(true));
            let all = Command::augment_subcommands(clap::Command::new("skiff"));
            BUILDING.with(|b| b.set(false));
            TOP_LEVEL.with(|t| *t.borrow_mut() = Some(all.clone()));
            all
        }
    };
    for (name, aliases) in wanted {
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
        let prune = ContainerPruneArgs::augment_args(clap::Command::new("prune"))
            .about("Remove all stopped containers");
        add_commands(cmd, CONTAINER_COMMANDS).subcommand(prune)
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
        add_commands(cmd, IMAGE_COMMANDS)
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
