//! The OCI image configuration of an import: built from the `--change` instructions,
//! serialised canonically (its sha256 is the image id), with the platform and time it
//! records; and the random names of staging files.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};

use oci_spec::image::{
    Arch, ConfigBuilder, HistoryBuilder, ImageConfiguration, ImageConfigurationBuilder, Os,
    RootFsBuilder,
};

use super::{Error, ImageChanges};

pub(crate) fn build_config(
    diff_id: &str,
    created: &str,
    changes: &ImageChanges,
) -> Result<ImageConfiguration, Error> {
    let oci = |context: &str| {
        let context = context.to_string();
        move |source| Error::Oci { context, source }
    };
    let mut cfg = ConfigBuilder::default();
    if let Some(cmd) = &changes.cmd {
        cfg = cfg.cmd(cmd.clone());
    }
    if let Some(ep) = &changes.entrypoint {
        cfg = cfg.entrypoint(ep.clone());
    }
    if !changes.env.is_empty() {
        cfg = cfg.env(changes.env.clone());
    }
    if let Some(w) = &changes.workdir {
        cfg = cfg.working_dir(w.clone());
    }
    if let Some(u) = &changes.user {
        cfg = cfg.user(u.clone());
    }
    if !changes.labels.is_empty() {
        let labels: HashMap<String, String> = changes.labels.clone().into_iter().collect();
        cfg = cfg.labels(labels);
    }
    if let Some(s) = &changes.stop_signal {
        cfg = cfg.stop_signal(s.clone());
    }
    if !changes.exposed_ports.is_empty() {
        cfg = cfg.exposed_ports(changes.exposed_ports.clone());
    }
    if !changes.volumes.is_empty() {
        cfg = cfg.volumes(changes.volumes.clone());
    }
    let rootfs = RootFsBuilder::default()
        .typ("layers")
        .diff_ids(vec![diff_id.to_string()])
        .build()
        .map_err(oci("building the image rootfs"))?;
    let history = HistoryBuilder::default()
        .created(created)
        .created_by("skiff import")
        .build()
        .map_err(oci("building the image history"))?;
    ImageConfigurationBuilder::default()
        .created(created)
        .architecture(Arch::from(oci_arch()))
        .os(Os::Linux)
        .config(cfg.build().map_err(oci("building the image config"))?)
        .rootfs(rootfs)
        .history(vec![history])
        .build()
        .map_err(oci("building the image configuration"))
}

/// JSON with object keys sorted (labels are a `HashMap` in oci-spec), so the bytes
/// and hence the image id do not depend on hash order.
pub(crate) fn canonical_json(config: &ImageConfiguration) -> Result<Vec<u8>, Error> {
    let encode = |e: serde_json::Error| Error::io("encoding the image config", io::Error::other(e));
    let value = serde_json::to_value(config).map_err(encode)?;
    serde_json::to_vec(&value).map_err(encode)
}

/// The OCI (GOARCH) name of the architecture this binary runs on.
pub fn oci_arch() -> &'static str {
    let big = cfg!(target_endian = "big");
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "x86" => "386",
        "aarch64" if big => "arm64be",
        "aarch64" => "arm64",
        "arm" => "arm",
        "powerpc64" if big => "ppc64",
        "powerpc64" => "ppc64le",
        "powerpc" => "ppc",
        "mips64" if big => "mips64",
        "mips64" => "mips64le",
        "mips" if big => "mips",
        "mips" => "mipsle",
        "loongarch64" => "loong64",
        "riscv32" => "riscv",
        "sparc64" => "sparc64",
        other => other,
    }
}

/// 16 random bytes from the kernel, as hex.
pub(crate) fn random_hex() -> Result<String, Error> {
    let mut buf = [0u8; 16];
    File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut buf))
        .map_err(|e| Error::io("reading /dev/urandom", e))?;
    Ok(super::hex(&buf))
}

/// The current time as RFC 3339 UTC (fixed width, so it sorts).
pub fn now_rfc3339() -> String {
    crate::timefmt::rfc3339(crate::timefmt::now_us())
}
