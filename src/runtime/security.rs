//! What confines the container's process, from the spec: resource limits, capabilities,
//! no_new_privs and the seccomp filter. Prepared (and the filter compiled) before the
//! fork, applied by init and by exec around the switch to the spec's user:
//!
//! 1. [`Prepared::before_user_switch`]: resource limits, the bounding set (both need
//!    privileges of the namespace's root), and PR_SET_KEEPCAPS so the permitted set
//!    survives setuid to a non-root user;
//! 2. [`Prepared::after_user_switch`], last before execve: ambient set, effective/
//!    permitted/inheritable sets, no_new_privs, then the seccomp filter. Without
//!    no_new_privs the kernel loads a filter only for a holder of CAP_SYS_ADMIN, so when
//!    the final set lacks it, it is kept until the filter is loaded and dropped by one
//!    last capset(2) (which the filter must allow, as docker's profile does).
//!
//! The execve that follows gives a non-root user no capabilities (docker's semantics:
//! they stay in its bounding set only).

use std::path::{Path, PathBuf};

use oci_spec::runtime::{PosixRlimit, Process, Spec};

use super::caps::{self, CapSets};
use super::seccomp::{self, Filter};
use super::{rlimits, Error};

/// The confinement of one process, checked and compiled.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    rlimits: Vec<PosixRlimit>,
    caps: CapSets,
    no_new_privs: bool,
    seccomp: Option<Filter>,
}

/// Where compiled seccomp programs are cached (`$XDG_RUNTIME_DIR/skiff/seccomp`).
pub fn seccomp_cache_dir() -> PathBuf {
    crate::paths::Paths::from_env().runtime.join("seccomp")
}

impl Prepared {
    /// Reads the spec's process and `linux.seccomp`; compiles (or finds in `cache`) the
    /// filter.
    pub fn of_spec(spec: &Spec, cache: Option<&Path>) -> Result<Prepared, Error> {
        let Some(process) = spec.process() else {
            return Ok(Prepared::default());
        };
        let seccomp = spec
            .linux()
            .as_ref()
            .and_then(|l| l.seccomp().as_ref())
            .map(|s| seccomp::compile_cached(s, cache))
            .transpose()
            .map_err(|e| Error::Spec(e.to_string()))?;
        Ok(Prepared {
            seccomp,
            ..Self::of_process(process)?
        })
    }

    fn of_process(p: &Process) -> Result<Prepared, Error> {
        Ok(Prepared {
            rlimits: p.rlimits().clone().unwrap_or_default(),
            caps: p
                .capabilities()
                .as_ref()
                .map(CapSets::of)
                .transpose()?
                .unwrap_or_default(),
            no_new_privs: p.no_new_privileges().unwrap_or(false),
            seccomp: None,
        })
    }

    /// Every capability (`exec --privileged`); limits and filter stay the container's.
    pub fn with_all_caps(self) -> Prepared {
        Prepared {
            caps: CapSets::all(),
            ..self
        }
    }

    /// Step 1: limits and bounding set; keeps the permitted set across setuid.
    pub fn before_user_switch(&self) -> Result<(), Error> {
        rlimits::apply(&self.rlimits)?;
        if let Some(b) = self.caps.bounding {
            caps::drop_bounding(b)?;
        }
        // SAFETY: PR_SET_KEEPCAPS takes an integer (cleared again by execve).
        if unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) } != 0 {
            return Err(Error::io(
                "PR_SET_KEEPCAPS",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    }

    /// Step 2, last before execve: capabilities, no_new_privs, seccomp.
    pub fn after_user_switch(&self) -> Result<(), Error> {
        let (cur_e, cur_p, cur_i) = caps::get()?;
        let effective = self.caps.effective.unwrap_or(cur_e);
        let permitted = self.caps.permitted.unwrap_or(cur_p);
        let inheritable = self.caps.inheritable.unwrap_or(cur_i);
        let admin = 1u64 << caps::SYS_ADMIN;
        // Keep CAP_SYS_ADMIN until the filter is in when the kernel requires it.
        let bridge = self.seccomp.is_some()
            && !self.no_new_privs
            && effective & admin == 0
            && cur_p & admin != 0;
        let extra = if bridge { admin } else { 0 };
        caps::set(effective | extra, permitted | extra, inheritable)?;
        if let Some(a) = self.caps.ambient {
            caps::set_ambient(a)?;
        }
        if self.no_new_privs {
            // SAFETY: PR_SET_NO_NEW_PRIVS takes integers.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err(Error::io(
                    "PR_SET_NO_NEW_PRIVS",
                    std::io::Error::last_os_error(),
                ));
            }
        }
        if let Some(f) = &self.seccomp {
            seccomp::load(f).map_err(|e| Error::io("load the seccomp filter", e))?;
        }
        if bridge {
            caps::set(effective, permitted, inheritable).map_err(|e| {
                Error::Setup(format!(
                    "{e} (after loading the seccomp filter: the profile must allow capset)"
                ))
            })?;
        }
        Ok(())
    }
}

/// Writes the spec's `linux.sysctl` into /proc/sys (after pivot_root, before /proc/sys is
/// made read-only). Keys use dots (`net.ipv4.ip_forward`); a key with `/` or `..` is
/// refused, so a value is only ever written below /proc/sys.
pub fn apply_sysctls(spec: &Spec) -> Result<(), Error> {
    let Some(map) = spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (key, value) in map {
        if key.is_empty() || key.contains('/') || key.split('.').any(|c| c.is_empty()) {
            return Err(Error::Spec(format!("invalid sysctl name {key:?}")));
        }
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value.as_bytes()).map_err(|e| {
            Error::Setup(format!(
                "sysctl {key}={value}: {e} (is it namespaced, and does the container have \
                 its own namespace for it?)"
            ))
        })?;
    }
    Ok(())
}

/// Makes the root read-only when the spec's `root.readonly` says so (after the mounts
/// below it are in place), keeping its nosuid/nodev/noexec flags.
pub fn readonly_root(spec: &Spec) -> Result<(), Error> {
    if !spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false)
    {
        return Ok(());
    }
    use nix::mount::MsFlags;
    use nix::sys::statvfs::{statvfs, FsFlags};
    let cur = statvfs("/")
        .map_err(|e| Error::sys("statvfs /", e))?
        .flags();
    let mut flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    for (f, m) in [
        (FsFlags::ST_NOSUID, MsFlags::MS_NOSUID),
        (FsFlags::ST_NODEV, MsFlags::MS_NODEV),
        (FsFlags::ST_NOEXEC, MsFlags::MS_NOEXEC),
    ] {
        if cur.contains(f) {
            flags |= m;
        }
    }
    nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>).map_err(|e| {
        Error::Mount {
            target: "/ (read-only)".into(),
            fstype: "bind".into(),
            source: e,
        }
    })
}
