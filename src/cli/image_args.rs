//! Arguments of the image commands.

use clap::{Args, Subcommand};

use super::aliases;

/// `images`, `image ls`.
#[derive(Debug, Args)]
pub struct ImagesArgs {
    /// Also a build's intermediate images (untagged, another image was built on them).
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Only ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// Output format: table, table TEMPLATE, json, or a Go TEMPLATE (fields .ID
    /// .Repository .Tag .Digest .CreatedSince .CreatedAt .Size).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Show full ids (sha256:...).
    #[arg(long)]
    pub no_trunc: bool,
    /// Show the repo digests.
    #[arg(long)]
    pub digests: bool,
    /// dangling=true|false or reference=PATTERN (`*` wildcards); repeatable.
    #[arg(short = 'f', long = "filter", value_name = "KEY=VALUE")]
    pub filters: Vec<String>,
}

/// `import`, `image import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The rootfs tarball (plain, gzip or zstd), or - for stdin.
    pub file: String,
    /// NAME[:TAG] for the image.
    pub reference: String,
    /// A Dockerfile instruction for the image config: CMD, ENTRYPOINT, ENV, WORKDIR,
    /// USER, LABEL, EXPOSE, STOPSIGNAL (e.g. 'CMD ["/bin/sh"]'); repeatable.
    #[arg(short = 'c', long = "change", value_name = "INSTRUCTION")]
    pub changes: Vec<String>,
    /// No progress bars: only the image id.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `load`, `image load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    /// The archive (docker-archive or oci-archive, plain or gzip) or OCI layout
    /// directory; stdin when absent.
    #[arg(short = 'i', long = "input", value_name = "FILE")]
    pub input: Option<String>,
    /// No progress bars: print only the loaded image ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
}

/// `save`, `image save`.
#[derive(Debug, Args)]
pub struct SaveArgs {
    /// The archive to write (stdout when absent; it must not be a terminal).
    #[arg(short = 'o', long = "output", value_name = "FILE")]
    pub output: Option<String>,
    /// docker-archive (default) or oci-archive.
    #[arg(long, default_value = "docker-archive")]
    pub format: String,
    /// The images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `tag`, `image tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    /// The image.
    pub source: String,
    /// New names for it.
    #[arg(required = true)]
    pub targets: Vec<String>,
}

/// `rmi`, `image rm`.
#[derive(Debug, Args)]
pub struct RmiArgs {
    /// Remove images used by containers (and those containers), or tagged several
    /// times when named by id.
    #[arg(short = 'f', long)]
    pub force: bool,
    /// The images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `image inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A Go TEMPLATE applied to each image (e.g. '{{.Id}}'), or json.
    #[arg(short = 'f', long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// The images.
    #[arg(required = true)]
    pub images: Vec<String>,
}

/// `history`, `image history`.
#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// Output format: table, table TEMPLATE, json, or a Go TEMPLATE (fields .ID
    /// .CreatedSince .CreatedAt .CreatedBy .Size .Comment).
    #[arg(long, value_name = "FORMAT")]
    pub format: Option<String>,
    /// Do not truncate ids and CREATED BY.
    #[arg(long)]
    pub no_trunc: bool,
    /// Only the ids.
    #[arg(short = 'q', long)]
    pub quiet: bool,
    /// The image.
    pub image: String,
}

/// `image prune`.
#[derive(Debug, Args)]
pub struct PruneArgs {
    /// Remove every image no container uses, not only dangling ones.
    #[arg(short = 'a', long)]
    pub all: bool,
    /// Accepted for compatibility (skiff does not ask).
    #[arg(short = 'f', long)]
    pub force: bool,
}

/// `skiff image ...`.
#[derive(Debug, Subcommand)]
pub enum ImageCommand {
    /// Import a rootfs tarball (plain, gzip or zstd; - for stdin) as NAME[:TAG].
    Import(ImportArgs),
    /// List images.
    #[command(alias = "list")]
    Ls(ImagesArgs),
    /// Load images from a docker-archive, oci-archive or OCI layout directory.
    Load(LoadArgs),
    /// Save images to a docker-archive or oci-archive.
    Save(SaveArgs),
    /// Give an image another name.
    Tag(TagArgs),
    /// Remove images (or tags).
    #[command(alias = "rmi")]
    Rm(RmiArgs),
    /// Show images as JSON.
    Inspect(InspectArgs),
    /// Show an image's history.
    History(HistoryArgs),
    /// Remove dangling images (with -a, every image no container uses).
    Prune(PruneArgs),
    /// The top-level image commands (pull, ...).
    #[command(flatten)]
    More(aliases::ImageMore),
}
