//! Helpers for the FUSE overlay tests: run a closure as root of a fresh user+mount
//! namespace (subordinate ids mapped, as containers get them), mount our overlay
//! (`skiffd __fuse-mount`) or the kernel's (`userxattr`), and dump a tree to text.

#![allow(dead_code)]

pub mod ops;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use sha2::Digest;

/// Forking from the multi-threaded test harness is only safe while no other test forks.
static FORK_LOCK: Mutex<()> = Mutex::new(());

/// Where skiffd is (see tests/common).
pub fn skiffd() -> PathBuf {
    match std::env::var_os("SKIFF_BIN_DIR") {
        Some(dir) => PathBuf::from(dir).join("skiffd"),
        None => PathBuf::from(env!("CARGO_BIN_EXE_skiffd")),
    }
}

/// Runs `body` as uid 0 of a new user namespace (with the user's subordinate ids) and a
/// new, private mount namespace; returns what it returned. A panic fails the test.
pub fn in_userns(body: impl FnOnce() -> Result<String, String>) -> String {
    let _g = FORK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let (maps, _) = skiff::userns::IdMaps::for_current_user().expect("id maps");
    let out = tempfile::NamedTempFile::new().expect("temp file");
    let out_path = out.path().to_path_buf();
    let code = skiff::runtime::run_in_userns(&maps, move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
                .map_err(|e| format!("unshare(CLONE_NEWNS): {e}"))?;
            mount(
                None::<&str>,
                "/",
                None::<&str>,
                MsFlags::MS_REC | MsFlags::MS_PRIVATE,
                None::<&str>,
            )
            .map_err(|e| format!("make / private: {e}"))?;
            body()
        }));
        let (code, text) = match r {
            Ok(Ok(s)) => (0, s),
            Ok(Err(e)) => (1, e),
            Err(p) => (
                2,
                p.downcast_ref::<String>()
                    .cloned()
                    .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "panic".into()),
            ),
        };
        let _ = fs::write(&out_path, text);
        code
    })
    .expect("run in user namespace");
    let text = fs::read_to_string(out.path()).unwrap_or_default();
    assert_eq!(code, 0, "in the user namespace: {text}");
    text
}

/// Our overlay, served by `skiffd __fuse-mount` until [`Fuse::unmount`].
pub struct Fuse {
    child: Child,
    mnt: PathBuf,
}

const FUSE_SUPER_MAGIC: i64 = 0x6573_5546;

fn fs_type(p: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(p)
        .ok()
        .map(|s| s.filesystem_type().0)
}

impl Fuse {
    /// Mounts layers `lower` (top first) with `upper`/`work` on `mnt`.
    pub fn mount(lower: &[PathBuf], upper: &Path, work: &Path, mnt: &Path) -> Result<Fuse, String> {
        Fuse::mount_cmd(lower, upper, work, mnt, Command::new(skiffd()))
    }

    /// As [`Fuse::mount`], with the server's log at trace level for `skiff::fuse` written
    /// to the file `log`.
    pub fn mount_traced(
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        log: &Path,
    ) -> Result<Fuse, String> {
        let mut cmd = Command::new(skiffd());
        let f = fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        cmd.env("SKIFF_LOG_FILTER", "skiff::fuse=trace").stderr(f);
        Fuse::mount_cmd(lower, upper, work, mnt, cmd)
    }

    fn mount_cmd(
        lower: &[PathBuf],
        upper: &Path,
        work: &Path,
        mnt: &Path,
        mut cmd: Command,
    ) -> Result<Fuse, String> {
        cmd.arg("__fuse-mount")
            .arg("--upper")
            .arg(upper)
            .arg("--work")
            .arg(work);
        cmd.args(lower).arg(mnt);
        // A server started under a strict umask must not apply it to what callers create.
        // SAFETY: umask is async-signal-safe and cannot fail.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::umask(0o077);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn skiffd: {e}"))?;
        let deadline = Instant::now() + Duration::from_secs(20);
        while fs_type(mnt) != Some(FUSE_SUPER_MAGIC) {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!("skiffd __fuse-mount exited: {st}"));
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                return Err("the FUSE mount did not appear".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(Fuse {
            child,
            mnt: mnt.to_path_buf(),
        })
    }

    /// Unmounts and waits for the server to exit.
    pub fn unmount(mut self) -> Result<(), String> {
        // The kernel sends RELEASE of a closed file in the background: the mount can be
        // busy for a moment after the last close.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match umount2(&self.mnt, MntFlags::empty()) {
                Ok(()) => break,
                Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => return Err(format!("umount: {e}")),
            }
        }
        let st = self.child.wait().map_err(|e| e.to_string())?;
        if !st.success() {
            return Err(format!("the FUSE server exited with {st}"));
        }
        Ok(())
    }
}

/// Mounts the kernel's overlayfs with `userxattr`.
pub fn mount_kernel(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    mnt: &Path,
) -> Result<(), String> {
    let lower: Vec<String> = lower.iter().map(|p| p.display().to_string()).collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={},userxattr",
        lower.join(":"),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        mnt,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )
    .map_err(|e| format!("mount overlay: {e}"))
}

/// Unmounts the kernel overlay.
pub fn umount(mnt: &Path) -> Result<(), String> {
    umount2(mnt, MntFlags::empty()).map_err(|e| format!("umount {}: {e}", mnt.display()))
}

/// The xattrs of `p` (not following symlinks), without the overlays' private ones.
pub fn xattrs(p: &Path) -> Vec<(String, Vec<u8>)> {
    let c = CString::new(p.as_os_str().as_bytes()).expect("path");
    let mut buf = vec![0u8; 65536];
    // SAFETY: buffer and length match.
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n <= 0 {
        return Vec::new();
    }
    buf.truncate(n as usize);
    let mut out = Vec::new();
    for name in buf.split(|b| *b == 0).filter(|s| !s.is_empty()) {
        let s = String::from_utf8_lossy(name).to_string();
        if s.starts_with("user.overlay.")
            || s.starts_with("user.skiff.")
            || s.starts_with("trusted.")
        {
            continue;
        }
        let cn = CString::new(name).expect("name");
        let mut v = vec![0u8; 65536];
        // SAFETY: buffer and length match.
        let m = unsafe { libc::lgetxattr(c.as_ptr(), cn.as_ptr(), v.as_mut_ptr().cast(), v.len()) };
        v.truncate(m.max(0) as usize);
        out.push((s, v));
    }
    out.sort();
    out
}

/// One line per entry: path, type, mode, owner, size, links, content hash or link
/// target or device, xattrs. Sorted, recursive, not following symlinks.
pub fn dump(root: &Path) -> String {
    let mut lines = Vec::new();
    walk(root, root, &mut lines);
    lines.sort();
    lines.join("\n")
}

fn walk(root: &Path, dir: &Path, lines: &mut Vec<String>) {
    let mut entries: Vec<_> = match fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(|e| e.ok()).map(|e| e.path()).collect(),
        Err(e) => {
            lines.push(format!("{}: readdir {e}", dir.display()));
            return;
        }
    };
    entries.sort();
    for p in entries {
        let rel = p.strip_prefix(root).unwrap_or(&p).display().to_string();
        let md = match fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(e) => {
                lines.push(format!("{rel}: lstat {e}"));
                continue;
            }
        };
        let ft = md.file_type();
        let (kind, what) = if ft.is_dir() {
            ("d", String::new())
        } else if ft.is_symlink() {
            (
                "l",
                fs::read_link(&p)
                    .map(|t| t.display().to_string())
                    .unwrap_or_default(),
            )
        } else if ft.is_file() {
            let data = fs::read(&p).unwrap_or_default();
            let sum = sha2::Sha256::digest(&data);
            let hex: String = sum.iter().map(|b| format!("{b:02x}")).collect();
            ("f", hex)
        } else if ft.is_fifo() {
            ("p", String::new())
        } else if ft.is_socket() {
            ("s", String::new())
        } else if ft.is_char_device() {
            ("c", format!("{}", md.rdev()))
        } else {
            ("b", format!("{}", md.rdev()))
        };
        let size = if ft.is_dir() { 0 } else { md.size() };
        // Kernel overlayfs hard-links its whiteouts to one shared inode: ignore their nlink.
        let nlink = if ft.is_char_device() && md.rdev() == 0 {
            1
        } else {
            md.nlink()
        };
        lines.push(format!(
            "{rel} {kind} {:o} {}:{} size={size} nlink={} {what} {:?}",
            md.mode() & 0o7777,
            md.uid(),
            md.gid(),
            nlink,
            xattrs(&p)
        ));
        if ft.is_dir() {
            walk(root, &p, lines);
        }
    }
}

/// A script run on a mounted overlay: (mount point, upper dir) → log lines.
pub type Script<'a> = &'a dyn Fn(&Path, &Path) -> Vec<String>;

/// Runs `script(mount, upper)` on our overlay and on the kernel's, each over its own
/// copy of the layers `make_layers(base)` builds (top first) with upper, work and mount
/// dirs under `base/fuse` and `base/kernel`; `setup(dir)` runs first in each (e.g. to
/// mount a small tmpfs there). Returns both logs, ours first.
pub fn differential(
    base: &Path,
    setup: &dyn Fn(&Path) -> Result<(), String>,
    make_layers: &dyn Fn(&Path) -> Result<Vec<PathBuf>, String>,
    script: Script,
) -> Result<(String, String), String> {
    differential_remount(base, setup, make_layers, script, None)
}

/// [`differential`], and when `after` is given, a remount of the same layers and
/// `after(mount, upper)` on it, its log appended to the first.
pub fn differential_remount(
    base: &Path,
    setup: &dyn Fn(&Path) -> Result<(), String>,
    make_layers: &dyn Fn(&Path) -> Result<Vec<PathBuf>, String>,
    script: Script,
    after: Option<Script>,
) -> Result<(String, String), String> {
    let mut logs = Vec::new();
    for which in ["fuse", "kernel"] {
        let b = base.join(which);
        fs::create_dir_all(&b).map_err(|e| format!("mkdir {}: {e}", b.display()))?;
        setup(&b)?;
        for d in ["upper", "work", "mnt"] {
            fs::create_dir_all(b.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let lower = make_layers(&b)?;
        let (upper, work, mnt) = (b.join("upper"), b.join("work"), b.join("mnt"));
        let mut log = Vec::new();
        for (i, run) in std::iter::once(script).chain(after).enumerate() {
            if i > 0 {
                log.push("-- remounted".to_string());
            }
            if which == "fuse" {
                let f = Fuse::mount(&lower, &upper, &work, &mnt)?;
                log.extend(run(&mnt, &upper));
                f.unmount()?;
            } else {
                mount_kernel(&lower, &upper, &work, &mnt)?;
                log.extend(run(&mnt, &upper));
                umount(&mnt)?;
            }
        }
        logs.push(log.join("\n"));
    }
    let kernel = logs.pop().unwrap_or_default();
    let fuse = logs.pop().unwrap_or_default();
    Ok((fuse, kernel))
}

/// Fails with both logs, line by line, when they differ.
pub fn same(fuse: &str, kernel: &str) -> Result<(), String> {
    if fuse == kernel {
        return Ok(());
    }
    let mut report = String::from("the FUSE overlay differs from the kernel overlay:\n");
    let (f, k): (Vec<_>, Vec<_>) = (fuse.lines().collect(), kernel.lines().collect());
    for i in 0..f.len().max(k.len()) {
        let (a, b) = (
            f.get(i).copied().unwrap_or(""),
            k.get(i).copied().unwrap_or(""),
        );
        if a == b {
            report.push_str(&format!("  {a}\n"));
        } else {
            report.push_str(&format!("- fuse:   {a}\n+ kernel: {b}\n"));
        }
    }
    Err(report)
}

/// Runs `f` in a forked child as `uid`:`gid` with no supplementary groups; returns
/// what `f` returned (an errno, 0 for success) or 255 when the ids could not be set.
pub fn as_user(uid: u32, gid: u32, f: impl FnOnce() -> i32) -> i32 {
    // SAFETY: the caller is the single-threaded child of `in_userns`; the child only makes
    // system calls and leaves with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // SAFETY: plain id syscalls, then _exit.
            unsafe {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setgid(gid) != 0
                    || libc::setuid(uid) != 0
                {
                    libc::_exit(255);
                }
                libc::_exit(f())
            }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            match nix::sys::wait::waitpid(child, None) {
                Ok(nix::sys::wait::WaitStatus::Exited(_, code)) => code,
                other => panic!("as_user child: {other:?}"),
            }
        }
        Err(e) => panic!("fork: {e}"),
    }
}

/// The errno of the last failed libc call, as a name-like string.
pub fn last_err() -> String {
    std::io::Error::last_os_error().to_string()
}
