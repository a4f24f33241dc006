//! Resolving the container's user (`-u NAME[:GROUP]`, `-u UID:GROUPNAME`, `--group-add`)
//! from the container's own `/etc/passwd` and `/etc/group`, the way runc does: inside the
//! runtime, once the container's mounts are in place, reading the files with
//! `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` so that no symlink in the image can
//! make us read a file outside its root.
//!
//! The daemon cannot do this before the spec is written: the files may come from a bind
//! mount or a volume that exists only in the container's mount namespace, and the layers
//! are owned by subordinate ids it cannot always read. So the daemon passes the user as
//! it was given in the spec's annotations ([`USER_ANNOTATION`], [`GROUP_ADD_ANNOTATION`]),
//! beside a numeric best guess in `process.user`, and the runtime's init (or an exec's
//! child) replaces uid, gid and additional gids with what the files say.

use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};

/// The spec annotation with the user as the client gave it (`NAME[:GROUP]`,
/// `UID[:GID]`, mixed, or empty for the image's default, root).
pub const USER_ANNOTATION: &str = "org.skiff.user";
/// The spec annotation with `--group-add`'s groups, comma-separated (names or numbers).
pub const GROUP_ADD_ANNOTATION: &str = "org.skiff.group-add";

/// Files larger than this are refused (a hostile image must not make init read forever).
const MAX_FILE: u64 = 16 << 20;

/// Why a user could not be resolved (docker's messages; the container exits with 125).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UserError {
    /// No passwd entry for a user name.
    #[error("unable to find user {0}: no matching entries in passwd file")]
    NoUser(String),
    /// No group entry for a group name.
    #[error("unable to find group {0}: no matching entries in group file")]
    NoGroup(String),
    /// A number out of range or an empty name.
    #[error("invalid user {0:?}: use NAME, UID, NAME:GROUP or UID:GID")]
    Invalid(String),
    /// Reading the container's file failed.
    #[error("reading the container's {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// What the process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    /// uid in the container.
    pub uid: u32,
    /// gid in the container.
    pub gid: u32,
    /// Supplementary groups (from /etc/group, then `--group-add`), without duplicates.
    pub sgids: Vec<u32>,
    /// The home directory from passwd, if the user has an entry.
    pub home: Option<String>,
}

struct Passwd<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

struct Group<'a> {
    name: &'a str,
    gid: u32,
    members: Vec<&'a str>,
}

fn passwd_entries(data: &str) -> impl Iterator<Item = Passwd<'_>> {
    data.lines().filter_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if l.starts_with('#') || f.len() < 6 {
            return None;
        }
        Some(Passwd {
            name: f[0],
            uid: f[2].parse().ok()?,
            gid: f[3].parse().ok()?,
            home: f[5],
        })
    })
}

fn group_entries(data: &str) -> impl Iterator<Item = Group<'_>> {
    data.lines().filter_map(|l| {
        let f: Vec<&str> = l.trim().split(':').collect();
        if l.starts_with('#') || f.len() < 3 {
            return None;
        }
        Some(Group {
            name: f[0],
            gid: f[2].parse().ok()?,
            members: f
                .get(3)
                .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
                .unwrap_or_default(),
        })
    })
}

/// Resolves `spec` (empty = root) and `group_add` against the contents of the
/// container's passwd and group files (None when a file does not exist), as runc's
/// `GetExecUser` does: a name must have an entry; a number may have none (its gid is
/// then the uid, skiff's numeric rule); supplementary groups come from the group file
/// only when no group is given; `group_add` entries are names or numbers.
pub fn resolve(
    spec: &str,
    group_add: &[String],
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<ExecUser, UserError> {
    let (user_arg, group_arg) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    if group_arg == Some("") {
        return Err(UserError::Invalid(spec.into()));
    }
    let user_num: Option<u32> = if user_arg.is_empty() {
        Some(0)
    } else {
        user_arg.parse().ok()
    };
    if user_num.is_none() && user_arg.chars().all(|c| c.is_ascii_digit()) {
        return Err(UserError::Invalid(spec.into()));
    }
    let entry = passwd.and_then(|p| {
        passwd_entries(p).find(|e| match user_num {
            Some(n) => e.uid == n,
            None => e.name == user_arg,
        })
    });
    let (uid, mut gid, name, home) = match (&entry, user_num) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), Some(e.home.to_string())),
        (None, Some(n)) => (n, n, None, None),
        (None, None) => return Err(UserError::NoUser(user_arg.into())),
    };
    let find_group = |g: &str| -> Result<u32, UserError> {
        let num: Option<u32> = g.parse().ok();
        let found = group.and_then(|data| {
            group_entries(data).find(|e| match num {
                Some(n) => e.gid == n,
                None => e.name == g,
            })
        });
        match (found, num) {
            (Some(e), _) => Ok(e.gid),
            (None, Some(n)) => Ok(n),
            (None, None) => Err(UserError::NoGroup(g.into())),
        }
    };
    let mut sgids = Vec::new();
    match group_arg {
        Some(g) => gid = find_group(g)?,
        None => {
            if let (Some(name), Some(data)) = (name, group) {
                sgids.extend(
                    group_entries(data)
                        .filter(|e| e.members.contains(&name))
                        .map(|e| e.gid),
                );
            }
        }
    }
    for g in group_add {
        sgids.push(find_group(g)?);
    }
    let mut seen = std::collections::HashSet::new();
    sgids.retain(|g| seen.insert(*g));
    Ok(ExecUser {
        uid,
        gid,
        sgids,
        home,
    })
}

/// Reads `path` (absolute, in the container) relative to the current root without
/// following any symlink out of it (`RESOLVE_IN_ROOT`) nor magic links of /proc; None
/// when it does not exist.
pub fn read_in_root(path: &str) -> Result<Option<String>, UserError> {
    let err = |reason: String| UserError::Read {
        path: path.into(),
        reason,
    };
    let root = std::fs::File::open("/").map_err(|e| err(e.to_string()))?;
    #[repr(C)]
    struct OpenHow {
        flags: u64,
        mode: u64,
        resolve: u64,
    }
    const RESOLVE_NO_MAGICLINKS: u64 = 0x02;
    const RESOLVE_IN_ROOT: u64 = 0x10;
    let how = OpenHow {
        flags: (libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64,
        mode: 0,
        resolve: RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS,
    };
    let cpath = std::ffi::CString::new(path).map_err(|e| err(e.to_string()))?;
    // SAFETY: openat2 reads the path and the struct we pass (with its size) and returns a
    // new descriptor or -1.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            std::os::fd::AsRawFd::as_raw_fd(&root),
            cpath.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENOENT) | Some(libc::ENOTDIR) => Ok(None),
            _ => Err(err(e.to_string())),
        };
    }
    // SAFETY: openat2 returned a new descriptor that nothing else owns.
    let file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd as i32) });
    let md = file.metadata().map_err(|e| err(e.to_string()))?;
    if !md.is_file() {
        return Err(err("not a regular file".into()));
    }
    let mut data = Vec::new();
    file.take(MAX_FILE + 1)
        .read_to_end(&mut data)
        .map_err(|e| err(e.to_string()))?;
    if data.len() as u64 > MAX_FILE {
        return Err(err(format!("larger than {MAX_FILE} bytes")));
    }
    Ok(Some(String::from_utf8_lossy(&data).into_owned()))
}

/// Resolves the user against the files of the current root (the container's, after
/// `pivot_root` or `chroot`).
pub fn resolve_in_root(spec: &str, group_add: &[String]) -> Result<ExecUser, UserError> {
    let passwd = read_in_root("/etc/passwd")?;
    let group = read_in_root("/etc/group")?;
    resolve(spec, group_add, passwd.as_deref(), group.as_deref())
}

/// Adds `HOME` to `env` when it has none: the user's home from passwd, else `/root`
/// for root and `/` for others (docker's defaults).
pub fn add_home(env: &mut Vec<String>, user: &ExecUser) {
    if env.iter().any(|e| e.starts_with("HOME=")) {
        return;
    }
    let home = match &user.home {
        Some(h) if !h.is_empty() => h.clone(),
        _ if user.uid == 0 => "/root".into(),
        _ => "/".into(),
    };
    env.push(format!("HOME={home}"));
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        alice:x:1500:1600:Alice:/home/alice:/bin/sh\n\
        # comment\nbroken line\n";
    const GROUP: &str = "root:x:0:\nstaff:x:1600:\nwheel:x:10:alice,bob\n\
        audio:x:29:bob,alice\nalicegrp:x:1700:\n";

    fn r(spec: &str, add: &[&str]) -> Result<ExecUser, UserError> {
        let add: Vec<String> = add.iter().map(|s| s.to_string()).collect();
        resolve(spec, &add, Some(PASSWD), Some(GROUP))
    }

    #[test]
    fn names_give_ids_groups_and_home() {
        let u = r("alice", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1500, 1600));
        assert_eq!(u.sgids, vec![10, 29]);
        assert_eq!(u.home.as_deref(), Some("/home/alice"));
        // A numeric uid with an entry takes its gid and groups.
        assert_eq!(r("1500", &[]).unwrap(), u);
    }

    #[test]
    fn explicit_group_drops_the_supplementary_groups() {
        let u = r("alice:alicegrp", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.sgids.clone()), (1500, 1700, vec![]));
        let u = r("1000:1000", &[]).unwrap();
        assert_eq!((u.uid, u.gid, u.sgids, u.home), (1000, 1000, vec![], None));
        let u = r("1000:staff", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (1000, 1600));
    }

    #[test]
    fn group_add_takes_names_and_numbers() {
        let u = r("1000:1000", &["staff", "4242", "staff"]).unwrap();
        assert_eq!(u.sgids, vec![1600, 4242]);
        assert_eq!(
            r("root", &["nosuch"]).unwrap_err(),
            UserError::NoGroup("nosuch".into())
        );
    }

    #[test]
    fn unknown_names_are_docker_errors() {
        let e = r("bob", &[]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unable to find user bob: no matching entries in passwd file"
        );
        assert_eq!(
            r("alice:nogroup", &[]).unwrap_err().to_string(),
            "unable to find group nogroup: no matching entries in group file"
        );
        // No passwd file at all: names fail, numbers work.
        assert!(matches!(
            resolve("alice", &[], None, None),
            Err(UserError::NoUser(_))
        ));
        assert_eq!(resolve("7", &[], None, None).unwrap().uid, 7);
        assert!(matches!(r("99999999999", &[]), Err(UserError::Invalid(_))));
        assert!(matches!(r("alice:", &[]), Err(UserError::Invalid(_))));
    }

    #[test]
    fn default_is_root_and_home_defaults() {
        let u = r("", &[]).unwrap();
        assert_eq!((u.uid, u.gid), (0, 0));
        let mut env = vec!["PATH=/bin".to_string()];
        add_home(&mut env, &u);
        assert_eq!(env[1], "HOME=/root");
        let mut env = vec!["HOME=/x".to_string()];
        add_home(&mut env, &r("alice", &[]).unwrap());
        assert_eq!(env, vec!["HOME=/x".to_string()]);
        let mut env = vec![];
        add_home(&mut env, &r("1234", &[]).unwrap());
        assert_eq!(env, vec!["HOME=/".to_string()]);
    }

    #[test]
    fn read_in_root_does_not_exist_is_none() {
        assert_eq!(read_in_root("/nonexistent/skiff/file").unwrap(), None);
        assert!(read_in_root("/etc/passwd").unwrap().is_some());
    }
}
