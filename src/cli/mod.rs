//! The `skiff` command line: a thin D-Bus client of skiffd. Every command is one or two
//! calls on the API; flag names and output columns follow docker's. Output goes through
//! `output` (a closed stdout ends skiff quietly), never `println!`.

#![deny(clippy::print_stdout, clippy::print_stderr)]

pub mod aliases;
pub mod attach;
pub mod autopull;
pub mod build;
mod build_context;
pub mod commit;
pub mod completion;
pub mod connect;
pub mod containers;
pub mod control;
pub mod cp;
pub mod create_args;
pub mod doctor;
pub mod ending;
pub mod envfile;
pub mod everyday;
pub mod exec;
pub mod flags;
pub mod format;
pub mod image_args;
pub mod images;
pub mod inspect;
pub mod login;
pub mod output;
pub mod parse;
pub mod precheck;
pub mod progress;
pub mod pull;
pub mod push;
pub mod rows;
pub mod run_config;
pub mod sdnotify;
pub mod security_args;
pub mod stats;
pub mod system;
pub mod table;
pub mod top;
pub mod tty;
pub mod units;
pub mod volumes;

use clap::{Parser, Subcommand};
use output::errln;

pub use create_args::CreateArgs;
pub use image_args::ImageCommand;

/// skiff — rootless containers, served by your own skiffd over D-Bus.
#[derive(Debug, Parser)]
#[command(name = "skiff", version, about)]
pub struct Cli {
    /// D-Bus address of skiffd's bus (default: $SKIFF_BUS_ADDRESS, then the session bus).
    #[arg(long, global = true, value_name = "ADDRESS")]
    pub bus_address: Option<String>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// skiff's commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create and run a container; the exit code is the container's.
    #[command(disable_help_flag = true)]
    Run(parse::RunArgs),
    /// Create a container without starting it; prints its id.
    #[command(disable_help_flag = true)]
    Create {
        /// Print help (-h is --hostname, as in docker).
        #[arg(long, action = clap::ArgAction::Help)]
        help: Option<bool>,
        /// Container flags.
        #[command(flatten)]
        args: CreateArgs,
    },
    /// Start created or stopped containers (output goes to the daemon's log).
    Start {
        /// Attach to the container's output (and wait for it, returning its exit code).
        #[arg(short = 'a', long)]
        attach: bool,
        /// Attach stdin too (with -a).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Keys that detach (docker's grammar, e.g. ctrl-p,ctrl-q; "" = none).
        #[arg(long, default_value = tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Containers (name, id or id prefix).
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Attach to a running container's terminal or output (ctrl-p ctrl-q detaches).
    Attach {
        /// Keys that detach (docker's grammar, e.g. ctrl-p,ctrl-q; "" = none).
        #[arg(long, default_value = tty::DEFAULT_DETACH_KEYS)]
        detach_keys: String,
        /// Do not attach stdin.
        #[arg(long)]
        no_stdin: bool,
        /// Forward signals to a container without a tty.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        sig_proxy: bool,
        /// The container (name, id or id prefix).
        container: String,
    },
    /// Block until containers stop; print their exit codes.
    Wait {
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Kill running containers first.
        #[arg(short = 'f', long)]
        force: bool,
        /// Remove their anonymous volumes too.
        #[arg(short = 'v', long)]
        volumes: bool,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Show details of containers, images or volumes as JSON (or by a Go template).
    Inspect(inspect::InspectArgs),
    /// List containers.
    Ps {
        /// Show all containers (default: running only).
        #[arg(short = 'a', long)]
        all: bool,
        /// Only ids.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Filter: status=, name=, label=KEY[=VALUE], ancestor=, id=.
        #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Output format: table, table TEMPLATE, json, or a Go TEMPLATE
        /// (e.g. '{{.ID}}\t{{.Names}}'; fields .ID .Names .Image .Command .CreatedAt
        /// .RunningFor .Status .State .Ports .Labels .Mounts .Networks).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
        /// Do not truncate ids and commands.
        #[arg(long)]
        no_trunc: bool,
    },
    /// Run a command in a running container; the exit code is the command's.
    Exec {
        /// Keep stdin open (pass skiff's stdin to the process).
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Allocate a pseudo-terminal in the container.
        #[arg(short = 't', long)]
        tty: bool,
        /// Run in the background (output discarded).
        #[arg(short = 'd', long)]
        detach: bool,
        /// Set environment variables (NAME=VALUE).
        #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
        env: Vec<String>,
        /// Working directory inside the container.
        #[arg(short = 'w', long = "workdir")]
        workdir: Option<String>,
        /// User: NAME, UID, NAME:GROUP or UID:GID (names from the container's files).
        #[arg(short = 'u', long = "user")]
        user: Option<String>,
        /// Every capability the user namespace holds (not only the container's).
        #[arg(long)]
        privileged: bool,
        /// The container.
        container: String,
        /// The command and its arguments.
        #[arg(required = true, trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Stop running containers (stop signal, then SIGKILL after the timeout).
    Stop {
        /// Seconds to wait before SIGKILL (default: the container's, else 10).
        #[arg(short = 't', long = "time", value_parser = flags::seconds, allow_hyphen_values = true)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// pause, unpause, generate systemd.
    #[command(flatten)]
    Units(units::UnitCommand),
    /// Send a signal to running containers.
    Kill {
        /// Signal name or number.
        #[arg(short = 's', long, default_value = "KILL")]
        signal: String,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Restart containers.
    Restart {
        /// Seconds to wait before SIGKILL when stopping.
        #[arg(short = 't', long = "time", value_parser = flags::seconds, allow_hyphen_values = true)]
        time: Option<u64>,
        /// Containers.
        #[arg(required = true)]
        containers: Vec<String>,
    },
    /// Rename a container.
    Rename {
        /// The container.
        container: String,
        /// Its new name.
        new_name: String,
    },
    /// Show a container's output (detached runs).
    Logs {
        /// Keep following new output.
        #[arg(short = 'f', long)]
        follow: bool,
        /// Only the last N lines ("all" for everything).
        #[arg(short = 'n', long, default_value = "all", value_parser = flags::tail,
              allow_hyphen_values = true)]
        tail: String,
        /// Only output since this time (RFC 3339, unix seconds, or a duration like 10m).
        #[arg(long)]
        since: Option<String>,
        /// Only output before this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Prefix lines with their time.
        #[arg(short = 't', long)]
        timestamps: bool,
        /// The container.
        container: String,
    },
    /// Copy files between a container (running or stopped) and the host: SRC and DEST
    /// are CONTAINER:PATH or a local path; - is a tar on stdin (SRC) or stdout (DEST).
    Cp(cp::CpArgs),
    /// Create a new image from a container's changes (running or stopped).
    Commit(commit::CommitArgs),
    /// Build an image from a Dockerfile and a context directory (or a tar on stdin).
    Build(build::BuildArgs),
    /// Stream events (docker's vocabulary) until interrupted.
    Events {
        /// Filter: type=, event=, container= (id or name).
        #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
        filters: Vec<String>,
        /// Output format: text (default), json, or a Go TEMPLATE (fields .Type
        /// .Action .Actor.ID .Actor.Attributes .time .timeNano).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// List images.
    Images(image_args::ImagesArgs),
    /// Load images from a docker-archive, oci-archive or OCI layout directory.
    Load(image_args::LoadArgs),
    /// Save images to a docker-archive or oci-archive.
    Save(image_args::SaveArgs),
    /// Give an image another name.
    Tag(image_args::TagArgs),
    /// Remove images (or tags).
    Rmi(image_args::RmiArgs),
    /// Show an image's history.
    History(image_args::HistoryArgs),
    /// Image commands.
    Image {
        /// The image command.
        #[command(subcommand)]
        command: ImageCommand,
    },
    /// Import a rootfs tarball as an image (same as `image import`).
    Import(image_args::ImportArgs),
    /// Pull an image from a registry (docker.io, HOST[:PORT]/..., NAME@sha256:...).
    Pull {
        /// No progress output; print only the image id.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Verify TLS certificates; =false also allows plain HTTP to the registry.
        #[arg(long = "tls-verify", value_name = "BOOL", default_value_t = true,
              action = clap::ArgAction::Set, num_args = 0..=1, require_equals = true,
              default_missing_value = "true")]
        tls_verify: bool,
        /// Auth file with the registry credentials (podman/docker auths format).
        #[arg(long = "authfile", value_name = "FILE")]
        authfile: Option<String>,
        /// Platform to pick from a multi-platform image: OS/ARCH[/VARIANT].
        #[arg(long, value_name = "OS/ARCH")]
        platform: Option<String>,
        /// The image: NAME[:TAG] or NAME@sha256:DIGEST.
        reference: String,
    },
    /// Show the daemon's setup (storage driver, id maps, warnings).
    Info {
        /// A Go TEMPLATE (e.g. '{{.Driver}}'), or json.
        #[arg(short = 'f', long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// Push an image to a registry (HOST[:PORT]/REPO[:TAG]).
    Push(push::PushArgs),
    /// Log in to a registry: check the credentials and store them for pull and push.
    Login(login::LoginArgs),
    /// Remove a registry's stored credentials (--all: every registry's).
    Logout(login::LogoutArgs),
    /// Volume commands.
    Volume {
        /// The volume command.
        #[command(subcommand)]
        command: volumes::VolumeCommand,
    },
    /// Check this host's prerequisites for rootless containers, with the fix for each
    /// problem (needs no daemon; exits 1 when something blocks containers).
    Doctor {
        /// Output format: json (default: a table).
        #[arg(long, value_name = "FORMAT")]
        format: Option<String>,
    },
    /// List a container's published ports, or the host address of one of them.
    Port {
        /// The container.
        container: String,
        /// PORT[/PROTO] to show only that one.
        port: Option<String>,
    },
    /// Show a container's processes (host pids; ps options may follow, default -ef).
    Top(top::TopArgs),
    /// Show containers' resource use (CPU, memory, network, block I/O, tasks).
    Stats(stats::StatsArgs),
    /// Show the client's and skiffd's versions.
    Version(system::VersionArgs),
    /// Disk use, prune, info.
    System {
        /// The system command.
        #[command(subcommand)]
        command: system::SystemCommand,
    },
    /// Container commands (docker's names for the top-level ones, and prune).
    Container {
        /// The container command.
        #[command(subcommand)]
        command: aliases::ContainerCommand,
    },
    /// Print a shell completion script (bash, zsh or fish).
    Completion(completion::CompletionArgs),
    /// Names for the completion scripts.
    #[command(name = "__complete", hide = true)]
    Complete(completion::CompleteArgs),
    /// Writes the man pages into a directory.
    #[command(name = "__man", hide = true)]
    Man(completion::ManArgs),
}

/// A failure the CLI reports: a message and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// Printed as `skiff: Error: ...`.
    pub message: String,
    /// The process exit code.
    pub code: i32,
}

impl Failure {
    /// A failure with exit code 1.
    pub fn msg(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> i32 {
    let result = dispatch(cli).await;
    match result {
        Ok(code) => code,
        Err(f) => {
            errln!("skiff: Error: {}", f.message);
            f.code
        }
    }
}

async fn dispatch(cli: Cli) -> Result<i32, Failure> {
    if let Command::Doctor { format } = &cli.command {
        return doctor::doctor(format.as_deref());
    }
    let command = aliases::unalias(cli.command);
    precheck::check(&command)?;
    let command = match everyday::without_daemon(cli.bus_address.as_deref(), command).await {
        Ok(code) => return code,
        Err(command) => command,
    };
    match &command {
        Command::Login(a) => return login::login(a).await,
        Command::Logout(a) => return login::logout(a),
        _ => {}
    }
    let conn = connect::connect(cli.bus_address.as_deref()).await?;
    match command {
        Command::Run(parse::RunArgs {
            rm,
            detach,
            sig_proxy,
            args,
            ..
        }) => {
            // A run that proxies signals handles them from here on (the image check or
            // pull may wait long); the others keep the default actions. Mostly the image
            // is looked at only when the run call says it is missing (in `run`).
            if !autopull::pull_on_failure(&args.pull) {
                if !detach && sig_proxy {
                    if let Some(code) =
                        autopull::ensure_image_interruptible(&conn, &args.image, &args.pull).await?
                    {
                        return Ok(code);
                    }
                } else {
                    autopull::ensure_image(&conn, &args.image, &args.pull).await?;
                }
            }
            containers::run(&conn, args, rm, detach, sig_proxy).await
        }
        Command::Create { args, .. } => {
            if !autopull::pull_on_failure(&args.pull) {
                autopull::ensure_image(&conn, &args.image, &args.pull).await?;
            }
            containers::create(&conn, args).await
        }
        Command::Start {
            attach: true,
            interactive,
            detach_keys,
            containers,
        } => match containers.as_slice() {
            [one] => containers::start_attached(&conn, one, interactive, &detach_keys).await,
            _ => Err(Failure::msg(
                "start -a attaches to one container: name exactly one",
            )),
        },
        Command::Start { containers, .. } => containers::start(&conn, &containers).await,
        Command::Attach {
            detach_keys,
            no_stdin,
            sig_proxy,
            container,
        } => attach::attach(&conn, &container, no_stdin, &detach_keys, sig_proxy).await,
        Command::Wait { containers } => containers::wait(&conn, &containers).await,
        Command::Rm {
            force,
            volumes,
            containers,
        } => containers::rm(&conn, &containers, force, volumes).await,
        Command::Inspect(a) => inspect::inspect(&conn, &a).await,
        Command::Ps {
            all,
            quiet,
            filters,
            format,
            no_trunc,
        } => {
            let f = format.as_deref().unwrap_or("");
            containers::ps(&conn, all, quiet, &filters, f, no_trunc).await
        }
        Command::Exec {
            interactive,
            tty,
            detach,
            env,
            workdir,
            user,
            privileged,
            container,
            command,
        } => {
            let a = exec::ExecArgs {
                interactive,
                tty,
                detach,
                env,
                workdir,
                user,
                privileged,
            };
            exec::exec(&conn, &container, &command, a).await
        }
        Command::Stop { time, containers } => control::stop(&conn, &containers, time).await,
        Command::Kill { signal, containers } => control::kill(&conn, &containers, &signal).await,
        Command::Units(cmd) => units::dispatch(&conn, cmd).await,
        Command::Restart { time, containers } => control::restart(&conn, &containers, time).await,
        Command::Rename {
            container,
            new_name,
        } => control::rename(&conn, &container, &new_name).await,
        Command::Logs {
            follow,
            tail,
            since,
            until,
            timestamps,
            container,
        } => {
            let opts = control::LogsArgs {
                follow,
                tail,
                since,
                until,
                timestamps,
            };
            control::logs(&conn, &container, opts).await
        }
        Command::Cp(a) => cp::cp(&conn, &a).await,
        Command::Commit(a) => commit::commit(&conn, &a).await,
        Command::Build(a) => build::build(&conn, &a).await,
        Command::Events { filters, format } => {
            control::events(&conn, &filters, format.as_deref()).await
        }
        Command::Images(a)
        | Command::Image {
            command: ImageCommand::Ls(a),
        } => images::list(&conn, &a).await,
        Command::Import(a)
        | Command::Image {
            command: ImageCommand::Import(a),
        } => images::import(&conn, &a).await,
        Command::Load(a)
        | Command::Image {
            command: ImageCommand::Load(a),
        } => images::load(&conn, &a).await,
        Command::Save(a)
        | Command::Image {
            command: ImageCommand::Save(a),
        } => images::save(&conn, &a).await,
        Command::Tag(a)
        | Command::Image {
            command: ImageCommand::Tag(a),
        } => images::tag(&conn, &a).await,
        Command::Rmi(a)
        | Command::Image {
            command: ImageCommand::Rm(a),
        } => images::rmi(&conn, &a).await,
        Command::History(a)
        | Command::Image {
            command: ImageCommand::History(a),
        } => images::history(&conn, &a).await,
        Command::Image {
            command: ImageCommand::Inspect(a),
        } => images::inspect(&conn, &a).await,
        Command::Image {
            command: ImageCommand::Prune(a),
        } => images::prune(&conn, &a).await,
        Command::Pull {
            quiet,
            tls_verify,
            authfile,
            platform,
            reference,
        } => {
            let a = pull::PullArgs {
                quiet,
                tls_verify,
                authfile,
                platform,
                reference,
            };
            pull::pull(&conn, a).await
        }
        Command::Info { format } => inspect::info(&conn, format.as_deref()).await,
        Command::Push(a) => push::push(&conn, &a).await,
        Command::Login(a) => login::login(&a).await,
        Command::Logout(a) => login::logout(&a),
        Command::Volume { command } => volumes::run(&conn, command).await,
        Command::Doctor { format } => doctor::doctor(format.as_deref()),
        Command::Port { container, port } => {
            containers::port(&conn, &container, port.as_deref()).await
        }
        other => everyday::run(&conn, other).await,
    }
}
