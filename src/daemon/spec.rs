//! The backend's half of the OCI contract: a container record becomes an
//! `oci_spec::runtime::Spec` that the runtime executes.

use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    get_default_maskedpaths, get_default_readonly_paths, LinuxBuilder, LinuxIdMapping,
    LinuxIdMappingBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, Mount, MountBuilder,
    ProcessBuilder, RootBuilder, Spec, SpecBuilder, UserBuilder,
};

use super::container::Record;
use super::Error;
use crate::runtime::user::{GROUP_ADD_ANNOTATION, USER_ANNOTATION};
use crate::userns::{IdMapEntry, IdMaps};

fn oci(e: oci_spec::OciSpecError) -> Error {
    Error::Internal(format!("building the runtime spec: {e}"))
}

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Result<Mount, Error> {
    MountBuilder::default()
        .destination(PathBuf::from(dest))
        .typ(typ)
        .source(PathBuf::from(source))
        .options(options.iter().map(|s| s.to_string()).collect::<Vec<_>>())
        .build()
        .map_err(oci)
}

/// The size of `/dev/shm` when `shm-size` is not set (docker's 64 MiB).
pub const DEFAULT_SHM_SIZE: u64 = 64 << 20;

/// Where `--init`'s binary appears in the container (bind-mounted read-only; `/dev` is
/// the container's own tmpfs, so nothing is written into its filesystem).
pub const INIT_PATH: &str = "/dev/init";

/// The mounts every container gets (docker's defaults, minus the cgroup mount, which a
/// rootless container on cgroup v1 cannot have), with a `/dev/shm` of `shm_size` bytes.
pub fn default_mounts(shm_size: u64) -> Result<Vec<Mount>, Error> {
    let shm_opt = format!("size={shm_size}");
    Ok(vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"])?,
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        )?,
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        )?,
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_opt],
        )?,
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        )?,
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", "ro"],
        )?,
    ])
}

fn id_mappings(entries: &[IdMapEntry]) -> Result<Vec<LinuxIdMapping>, Error> {
    entries
        .iter()
        .map(|e| {
            LinuxIdMappingBuilder::default()
                .container_id(e.container_id)
                .host_id(e.host_id)
                .size(e.size)
                .build()
                .map_err(oci)
        })
        .collect()
}

/// Builds the spec for `rec` with its rootfs mounted at `rootfs`.
pub fn build(rec: &Record, maps: &IdMaps, rootfs: &Path) -> Result<Spec, Error> {
    let host_network = rec.config.network.as_deref() == Some("host");
    let mut ns_types = vec![
        LinuxNamespaceType::User,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
    ];
    if !host_network {
        ns_types.push(LinuxNamespaceType::Network);
    }
    let namespaces = ns_types
        .into_iter()
        .map(|t| LinuxNamespaceBuilder::default().typ(t).build().map_err(oci))
        .collect::<Result<Vec<_>, _>>()?;
    let linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .uid_mappings(id_mappings(&maps.uid)?)
        .gid_mappings(id_mappings(&maps.gid)?)
        .masked_paths(get_default_maskedpaths())
        .readonly_paths(get_default_readonly_paths())
        .build()
        .map_err(oci)?;
    // The user as configured, resolved by the runtime from the container's own passwd
    // and group files (see `runtime::user`); process.user holds the numeric guess.
    let mut annotations = std::collections::HashMap::new();
    if let Some(u) = &rec.user_spec {
        annotations.insert(USER_ANNOTATION.to_string(), u.clone());
        if !rec.config.group_add.is_empty() {
            annotations.insert(
                GROUP_ADD_ANNOTATION.to_string(),
                rec.config.group_add.join(","),
            );
        }
    }
    let user = UserBuilder::default()
        .uid(rec.user.0)
        .gid(rec.user.1)
        .build()
        .map_err(oci)?;
    let mut process = ProcessBuilder::default()
        .terminal(rec.config.tty)
        .user(user)
        .args(rec.args.clone())
        .env(rec.env.clone())
        .cwd(PathBuf::from(&rec.workdir))
        .no_new_privileges(false);
    if let (true, Some([rows, cols])) = (rec.config.tty, rec.config.console_size) {
        let size = oci_spec::runtime::BoxBuilder::default()
            .height(u64::from(rows))
            .width(u64::from(cols))
            .build()
            .map_err(oci)?;
        process = process.console_size(size);
    }
    let process = process.build().map_err(oci)?;
    let root = RootBuilder::default()
        .path(rootfs.to_path_buf())
        .readonly(false)
        .build()
        .map_err(oci)?;
    let mut spec = SpecBuilder::default()
        .version("1.2.0")
        .root(root)
        .hostname(rec.hostname.clone())
        .mounts(default_mounts(
            rec.config.shm_bytes()?.unwrap_or(DEFAULT_SHM_SIZE),
        )?)
        .annotations(annotations)
        .process(process)
        .linux(linux)
        .build()
        .map_err(oci)?;
    super::security::apply(rec, &mut spec)?;
    Ok(spec)
}

/// Makes skiff's init (the host file `init_bin`) the container's PID 1: bind-mounted
/// read-only at [`INIT_PATH`], running the command as its child.
pub fn add_init(spec: &mut Spec, init_bin: &Path) -> Result<(), Error> {
    let mut mounts = spec.mounts().clone().unwrap_or_default();
    let src = init_bin
        .to_str()
        .ok_or_else(|| Error::Internal(format!("{} is not UTF-8", init_bin.display())))?;
    mounts.push(mount(
        INIT_PATH,
        "bind",
        src,
        &["bind", "ro", "nosuid", "nodev"],
    )?);
    spec.set_mounts(Some(mounts));
    if let Some(process) = spec.process_mut() {
        let mut args = vec![INIT_PATH.to_string(), "--".to_string()];
        args.extend(process.args().clone().unwrap_or_default());
        process.set_args(Some(args));
    }
    Ok(())
}
