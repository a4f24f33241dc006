//! Writing the id maps of a process that has just entered a new user
//! namespace.
//!
//! * Running as root (effective uid 0), both maps are written directly to
//!   `/proc/PID/uid_map` and `/proc/PID/gid_map`.
//! * Otherwise the kernel only lets a process map its own id, so a map with
//!   subordinate ids goes through the setuid helpers `newuidmap` /
//!   `newgidmap` from shadow-utils. A single-id map is written directly; for
//!   the gid map that requires writing `deny` to `/proc/PID/setgroups` first,
//!   which is avoided whenever `newgidmap` is used so that supplementary
//!   groups keep working in the container. The uid and gid cases are decided
//!   separately.

use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::idmap::{IdMapEntry, IdMaps, MAX_EXTENTS};
use super::Error;

/// Directories searched for the helpers after those of `PATH`.
const FALLBACK_DIRS: [&str; 3] = ["/usr/bin", "/usr/sbin", "/bin"];

/// The kernel accepts a map only in one write of less than a page.
const MAX_MAP_BYTES: usize = 4095;

const CAP_SETGID: u32 = 6;
const CAP_SETUID: u32 = 7;

/// Which of the two maps is being handled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Uid,
    Gid,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Uid => "uid",
            Kind::Gid => "gid",
        }
    }

    fn helper(self) -> &'static str {
        match self {
            Kind::Uid => "newuidmap",
            Kind::Gid => "newgidmap",
        }
    }

    fn map_file(self) -> &'static str {
        match self {
            Kind::Uid => "uid_map",
            Kind::Gid => "gid_map",
        }
    }

    fn subid_file(self) -> &'static str {
        match self {
            Kind::Uid => "/etc/subuid",
            Kind::Gid => "/etc/subgid",
        }
    }
}

/// The file capability a helper at `path` needs: `cap_setgid` for
/// `newgidmap`, `cap_setuid` otherwise.
pub(crate) fn capability_for(path: &Path) -> &'static str {
    if path.file_name() == Some(OsStr::new("newgidmap")) {
        "cap_setgid"
    } else {
        "cap_setuid"
    }
}

/// How a helper run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
struct HelperOutput {
    success: bool,
    /// e.g. `exit status: 1`.
    status: String,
    /// Its standard error (or, if empty, standard output), trimmed.
    message: String,
}

/// The side effects of applying maps, so that the decisions can be tested
/// without privileges.
trait MapWriter {
    /// Writes `data` to the `/proc` file `path` in a single `write()`.
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()>;
    /// Runs `helper` with `args` and reports how it ended.
    fn run_helper(&self, helper: &Path, args: &[String]) -> io::Result<HelperOutput>;
    /// Finds a privileged helper named `name` (see [`find_helper`]).
    fn find_helper(&self, name: &str) -> Result<PathBuf, Error>;
    /// The effective uid of this process.
    fn euid(&self) -> u32;
    /// The effective gid of this process.
    fn egid(&self) -> u32;
}

/// The real system: `/proc` writes, helper processes, real credentials.
struct System;

impl MapWriter for System {
    fn write_file(&self, path: &Path, data: &str) -> io::Result<()> {
        let mut file = std::fs::OpenOptions::new().write(true).open(path)?;
        let written = file.write(data.as_bytes())?;
        if written != data.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {written} of {} bytes", data.len()),
            ));
        }
        Ok(())
    }

    fn run_helper(&self, helper: &Path, args: &[String]) -> io::Result<HelperOutput> {
        let output = Command::new(helper)
            .args(args)
            .stdin(Stdio::null())
            .output()?;
        let mut message = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if message.is_empty() {
            message = String::from_utf8_lossy(&output.stdout).trim().to_string();
        }
        Ok(HelperOutput {
            success: output.status.success(),
            status: output.status.to_string(),
            message,
        })
    }

    fn find_helper(&self, name: &str) -> Result<PathBuf, Error> {
        find_helper(name)
    }

    fn euid(&self) -> u32 {
        nix::unistd::geteuid().as_raw()
    }

    fn egid(&self) -> u32 {
        nix::unistd::getegid().as_raw()
    }
}

impl IdMaps {
    /// Writes these maps for process `pid`, which must have just called
    /// `unshare(CLONE_NEWUSER)` and not have its maps written yet.
    ///
    /// As root the maps are written directly. Otherwise each map that holds
    /// more than the caller's own id is handed to `newuidmap` / `newgidmap`,
    /// and a single-id map is written directly (for gids after writing
    /// `deny` to `/proc/PID/setgroups`, as the kernel requires).
    pub fn apply(&self, pid: i32) -> Result<(), Error> {
        self.apply_with(&System, pid)
    }

    /// Checks, without changing anything, that the helpers [`IdMaps::apply`]
    /// would run are installed and privileged, and that the maps can be
    /// written. Meant for reporting problems when the daemon starts.
    pub fn preflight(&self) -> Result<(), Error> {
        self.preflight_with(&System)
    }

    fn preflight_with(&self, sys: &dyn MapWriter) -> Result<(), Error> {
        check_map(Kind::Uid, &self.uid)?;
        check_map(Kind::Gid, &self.gid)?;
        if sys.euid() == 0 {
            check_direct_size(Kind::Uid, &self.uid)?;
            check_direct_size(Kind::Gid, &self.gid)?;
            return Ok(());
        }
        if needs_helper(&self.uid, sys.euid()) {
            sys.find_helper(Kind::Uid.helper())?;
        }
        if needs_helper(&self.gid, sys.egid()) {
            sys.find_helper(Kind::Gid.helper())?;
        }
        Ok(())
    }

    fn apply_with(&self, sys: &dyn MapWriter, pid: i32) -> Result<(), Error> {
        if pid <= 0 {
            return Err(Error::InvalidPid { pid });
        }
        check_map(Kind::Uid, &self.uid)?;
        check_map(Kind::Gid, &self.gid)?;
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));

        if sys.euid() == 0 {
            write_direct(sys, &proc_dir, Kind::Uid, &self.uid)?;
            return write_direct(sys, &proc_dir, Kind::Gid, &self.gid);
        }

        if needs_helper(&self.uid, sys.euid()) {
            run_helper(sys, Kind::Uid, pid, &self.uid)?;
        } else {
            write_direct(sys, &proc_dir, Kind::Uid, &self.uid)?;
        }

        if needs_helper(&self.gid, sys.egid()) {
            // newgidmap decides about setgroups itself; leaving it allowed
            // keeps the container's supplementary groups working.
            run_helper(sys, Kind::Gid, pid, &self.gid)
        } else {
            deny_setgroups(sys, &proc_dir)?;
            write_direct(sys, &proc_dir, Kind::Gid, &self.gid)
        }
    }
}

/// Whether an unprivileged writer with effective id `own` needs a helper:
/// the kernel lets it write directly only one line mapping one id, its own.
fn needs_helper(map: &[IdMapEntry], own: u32) -> bool {
    !matches!(map, [only] if only.size == 1 && only.host_id == own)
}

/// Rejects maps that the kernel would refuse whatever the privileges.
fn check_map(kind: Kind, map: &[IdMapEntry]) -> Result<(), Error> {
    if map.is_empty() {
        return Err(Error::InvalidMap {
            kind: kind.name(),
            reason: "it is empty; it needs at least the line mapping container id 0".to_string(),
        });
    }
    if map.len() > MAX_EXTENTS {
        return Err(Error::InvalidMap {
            kind: kind.name(),
            reason: format!(
                "it has {} lines but the kernel accepts at most {MAX_EXTENTS}; \
                 merge subordinate ranges in {}",
                map.len(),
                kind.subid_file()
            ),
        });
    }
    Ok(())
}

/// Rejects maps too long for the one write the kernel accepts.
fn check_direct_size(kind: Kind, map: &[IdMapEntry]) -> Result<String, Error> {
    let data = format_map(map);
    if data.len() > MAX_MAP_BYTES {
        return Err(Error::InvalidMap {
            kind: kind.name(),
            reason: format!(
                "it is {} bytes but the kernel accepts at most {MAX_MAP_BYTES} in one write; \
                 use fewer, larger subordinate ranges in {}",
                data.len(),
                kind.subid_file()
            ),
        });
    }
    Ok(data)
}

/// The map in the `/proc/PID/uid_map` format: `CONTAINER HOST SIZE` lines.
fn format_map(map: &[IdMapEntry]) -> String {
    map.iter()
        .map(|e| format!("{} {} {}\n", e.container_id, e.host_id, e.size))
        .collect()
}

fn write_direct(
    sys: &dyn MapWriter,
    proc_dir: &Path,
    kind: Kind,
    map: &[IdMapEntry],
) -> Result<(), Error> {
    let data = check_direct_size(kind, map)?;
    let path = proc_dir.join(kind.map_file());
    tracing::debug!(path = %path.display(), map = %data.trim_end(), "writing id map");
    sys.write_file(&path, &data)
        .map_err(|source| Error::WriteMap { path, source })
}

fn deny_setgroups(sys: &dyn MapWriter, proc_dir: &Path) -> Result<(), Error> {
    let path = proc_dir.join("setgroups");
    tracing::debug!(path = %path.display(), "writing deny");
    match sys.write_file(&path, "deny") {
        Ok(()) => Ok(()),
        // Kernels before 3.19 have no setgroups file and need no denial.
        Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(Error::WriteMap { path, source }),
    }
}

fn run_helper(sys: &dyn MapWriter, kind: Kind, pid: i32, map: &[IdMapEntry]) -> Result<(), Error> {
    let path = sys.find_helper(kind.helper())?;
    let mut args = Vec::with_capacity(1 + 3 * map.len());
    args.push(pid.to_string());
    for entry in map {
        args.push(entry.container_id.to_string());
        args.push(entry.host_id.to_string());
        args.push(entry.size.to_string());
    }
    tracing::debug!(helper = %path.display(), ?args, "running id map helper");
    let output = sys
        .run_helper(&path, &args)
        .map_err(|source| Error::HelperSpawn {
            path: path.clone(),
            source,
        })?;
    if output.success {
        return Ok(());
    }
    let message = if output.message.is_empty() {
        "(it printed no message)".to_string()
    } else {
        output.message
    };
    Err(Error::HelperFailed {
        name: kind.helper().to_string(),
        status: output.status,
        stderr: message,
        hint: format!(
            "check that {file} gives your user ranges covering every host {id} of the map \
             (grep \"^$(id -un):\" {file}), that no other user's range overlaps them, and that \
             {helper} is setuid root (ls -l {helper})",
            file = kind.subid_file(),
            id = kind.name(),
            helper = path.display(),
        ),
    })
}

/// Finds the helper `name` (`newuidmap` or `newgidmap`) in the absolute
/// directories of `PATH`, then in `/usr/bin`, `/usr/sbin` and `/bin`, and
/// checks that it is privileged enough to map subordinate ids.
///
/// The first privileged copy wins. If copies exist but none is privileged,
/// the error is [`Error::HelperNotPrivileged`] for the first one; if there
/// is none, [`Error::HelperMissing`].
pub fn find_helper(name: &str) -> Result<PathBuf, Error> {
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect())
        .unwrap_or_default();
    dirs.extend(FALLBACK_DIRS.iter().map(PathBuf::from));
    find_helper_in(name, &dirs)
}

fn find_helper_in(name: &str, dirs: &[PathBuf]) -> Result<PathBuf, Error> {
    let cap = if name == "newgidmap" {
        CAP_SETGID
    } else {
        CAP_SETUID
    };
    let mut unprivileged = None;
    // Relative PATH entries are skipped: a helper must not depend on the cwd.
    for dir in dirs.iter().filter(|dir| dir.is_absolute()) {
        let candidate = dir.join(name);
        let Ok(metadata) = std::fs::metadata(&candidate) else {
            continue;
        };
        if !metadata.is_file() || metadata.mode() & 0o111 == 0 {
            continue;
        }
        let has_cap = read_cap_xattr(&candidate).is_some_and(|data| cap_xattr_grants(&data, cap));
        match check_privileged(&candidate, metadata.mode(), metadata.uid(), has_cap) {
            Ok(()) => {
                tracing::debug!(helper = %candidate.display(), "found id map helper");
                return Ok(candidate);
            }
            Err(err) => {
                tracing::debug!(%err, "skipping unprivileged helper");
                unprivileged.get_or_insert(err);
            }
        }
    }
    Err(unprivileged.unwrap_or_else(|| Error::HelperMissing {
        name: name.to_string(),
    }))
}

/// Whether a helper with permission bits `mode`, owned by `owner`, can map
/// subordinate ids: it must be setuid root or carry the needed file
/// capability (`has_cap`).
fn check_privileged(path: &Path, mode: u32, owner: u32, has_cap: bool) -> Result<(), Error> {
    const S_ISUID: u32 = 0o4000;
    if (mode & S_ISUID != 0 && owner == 0) || has_cap {
        Ok(())
    } else {
        Err(Error::HelperNotPrivileged {
            path: path.to_path_buf(),
        })
    }
}

/// The raw `security.capability` extended attribute of `path`, if any.
fn read_cap_xattr(path: &Path) -> Option<Vec<u8>> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut buf = [0u8; 64];
    // SAFETY: both names are NUL-terminated and `buf` is valid for
    // `buf.len()` bytes for the duration of the call.
    let len = unsafe {
        libc::getxattr(
            c_path.as_ptr(),
            c"security.capability".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let len = usize::try_from(len).ok()?;
    buf.get(..len).map(<[u8]>::to_vec)
}

/// Whether a `security.capability` value (`struct vfs_cap_data`, revision
/// 1, 2 or 3, little-endian) puts capability `cap` (< 32) in the permitted set.
fn cap_xattr_grants(data: &[u8], cap: u32) -> bool {
    let word = |index: usize| -> Option<u32> {
        let bytes = data.get(index * 4..index * 4 + 4)?;
        Some(u32::from_le_bytes(bytes.try_into().ok()?))
    };
    let (Some(magic), Some(permitted)) = (word(0), word(1)) else {
        return false;
    };
    let min_len = match magic & 0xFF00_0000 {
        0x0100_0000 => 12,
        0x0200_0000 => 20,
        0x0300_0000 => 24,
        _ => return false,
    };
    data.len() >= min_len && cap < 32 && permitted & (1 << cap) != 0
}

#[cfg(test)]
mod tests;
