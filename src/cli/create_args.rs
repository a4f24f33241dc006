//! The flags `run` and `create` share.

use clap::Args;

use super::{autopull, flags, security_args, units};

/// Flags shared by `run` and `create`.
#[derive(Debug, Args, Clone)]
pub struct CreateArgs {
    /// Assign a name to the container.
    #[arg(long)]
    pub name: Option<String>,
    /// Set environment variables (NAME=VALUE; NAME alone takes skiff's value).
    #[arg(short = 'e', long = "env", value_name = "NAME=VALUE")]
    pub env: Vec<String>,
    /// Read environment variables from a file (docker's format: NAME=VALUE or NAME
    /// lines, # comments); -e wins over it.
    #[arg(long = "env-file", value_name = "FILE")]
    pub env_file: Vec<std::path::PathBuf>,
    /// Working directory inside the container.
    #[arg(short = 'w', long = "workdir")]
    pub workdir: Option<String>,
    /// User: NAME, UID, NAME:GROUP or UID:GID (names from the container's /etc/passwd
    /// and /etc/group).
    #[arg(short = 'u', long = "user")]
    pub user: Option<String>,
    /// Add a supplementary group (name from the container's /etc/group, or number).
    #[arg(long = "group-add", value_name = "GROUP")]
    pub group_add: Vec<String>,
    /// Run skiff's init as PID 1: it reaps zombies and forwards signals to the command.
    #[arg(long)]
    pub init: bool,
    /// User namespace: keep-id maps your uid and gid to the same numbers inside (and
    /// runs as you); private: the default mapping in a namespace of the container's
    /// own; default: 0 is you, 1.. your subordinate ids, in the namespace all default
    /// containers share.
    #[arg(long, value_name = "MODE")]
    pub userns: Option<String>,
    /// Size of /dev/shm (e.g. 64m, 1g; default 64m).
    #[arg(long = "shm-size", value_name = "SIZE")]
    pub shm_size: Option<String>,
    /// Container hostname (default: the first 12 digits of its id).
    #[arg(short = 'h', long = "hostname")]
    pub hostname: Option<String>,
    /// Override the image's ENTRYPOINT ('' clears it; the image's CMD then runs alone).
    #[arg(long)]
    pub entrypoint: Option<String>,
    /// Network mode: bridge, slirp4netns, pasta, none or host (skiffd's default: bridge,
    /// one slirp4netns shared by the containers of the shared user namespace, others
    /// get slirp4netns; with skiffd's `network = "auto"`, pasta where it works).
    #[arg(long, alias = "net")]
    pub network: Option<String>,
    /// Publish a container's port(s) to the host: [[IP:][HOST]:]CONTAINER[/tcp|/udp];
    /// HOST and CONTAINER may be ranges (8000-8002:80-82), IP may be IPv6 ([::1]).
    #[arg(short = 'p', long = "publish", value_name = "PORTS")]
    pub publish: Vec<String>,
    /// Publish every port the image exposes (and --expose adds) on a free host port.
    #[arg(short = 'P', long = "publish-all")]
    pub publish_all: bool,
    /// Expose a port or a range of ports (PORT[-END][/PROTO]) for --publish-all.
    #[arg(long = "expose", value_name = "PORTS")]
    pub expose: Vec<String>,
    /// DNS server for /etc/resolv.conf.
    #[arg(long = "dns", value_name = "IP")]
    pub dns: Vec<String>,
    /// DNS search domain for /etc/resolv.conf.
    #[arg(long = "dns-search", value_name = "DOMAIN")]
    pub dns_search: Vec<String>,
    /// DNS option for /etc/resolv.conf.
    #[arg(long = "dns-option", value_name = "OPTION")]
    pub dns_option: Vec<String>,
    /// Add a line to /etc/hosts (NAME:IP).
    #[arg(long = "add-host", value_name = "NAME:IP")]
    pub add_host: Vec<String>,
    /// Let the container reach services on the host's loopback, as
    /// host.containers.internal (slirp4netns: allow_host_loopback).
    #[arg(long = "host-loopback")]
    pub host_loopback: bool,
    /// Set labels (KEY=VALUE).
    #[arg(short = 'l', long = "label", value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Keep stdin open (pass skiff's stdin to the container).
    #[arg(short = 'i', long)]
    pub interactive: bool,
    /// Allocate a pseudo-terminal (with -i: an interactive shell; detach with ctrl-p ctrl-q).
    #[arg(short = 't', long)]
    pub tty: bool,
    /// Restart policy: no, on-failure[:N], always, unless-stopped.
    #[arg(long)]
    pub restart: Option<String>,
    /// Signal to stop the container with (name or number; default SIGTERM).
    #[arg(long)]
    pub stop_signal: Option<String>,
    /// Seconds to wait for the stop signal before SIGKILL (default 10).
    #[arg(long, value_parser = flags::seconds, allow_hyphen_values = true)]
    pub stop_timeout: Option<u64>,
    /// Bind mount a host path or mount a volume: SRC:DST[:ro|rw|z|Z|nocopy|PROPAGATION],
    /// VOLUME:DST[:OPTS], or DST alone for a new anonymous volume.
    #[arg(short = 'v', long = "volume", value_name = "SRC:DST[:OPTS]")]
    pub volumes: Vec<String>,
    /// Mount (docker's CSV): type=bind|volume|tmpfs,source=,target=,readonly,
    /// bind-propagation=,volume-nocopy,tmpfs-size=,tmpfs-mode=.
    #[arg(long = "mount", value_name = "FIELDS")]
    pub mounts: Vec<String>,
    /// Mount a tmpfs: DST[:size=64m,mode=1777,...].
    #[arg(long = "tmpfs", value_name = "DST[:OPTS]")]
    pub tmpfs: Vec<String>,
    /// Log options: max-size=SIZE, max-file=N.
    #[arg(long = "log-opt", value_name = "KEY=VALUE")]
    pub log_opts: Vec<String>,
    /// Confinement flags.
    #[command(flatten)]
    pub security: security_args::SecurityArgs,
    /// Resource limits and --sdnotify.
    #[command(flatten)]
    pub units: units::UnitArgs,
    /// `--pull` and `--platform`.
    #[command(flatten)]
    pub pull: autopull::PullFlags,
    /// The image.
    pub image: String,
    /// The command and its arguments (default: the image's CMD).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub command: Vec<String>,
}
