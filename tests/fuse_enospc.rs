//! Write errors of the backing filesystem through the FUSE overlay, against the kernel
//! overlay on the same setup: layers, upper and work dir on a small tmpfs (mounted in
//! the test's own user and mount namespace). Writers must get ENOSPC (or EFBIG) and
//! the size `stat` reports must be what is stored; a failed copy-up or creation must
//! leave the merged tree as it was.

mod fuse_support;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuse_support::{as_user, differential, in_userns, last_err, same};
use nix::mount::{mount, MsFlags};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

fn tmpfs(dir: &Path, opts: &str) -> Result<(), String> {
    mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::empty(),
        Some(opts),
    )
    .map_err(|e| format!("mount tmpfs {opts}: {e}"))
}

fn size(p: &Path) -> String {
    fs::symlink_metadata(p)
        .map(|m| m.size().to_string())
        .unwrap_or_else(|e| e.to_string())
}

/// Writes `chunk`-byte blocks to `fd` until a write fails or `limit` bytes are
/// written; returns (bytes written, the error that stopped it).
fn fill(fd: i32, chunk: usize, limit: u64) -> (u64, String) {
    let buf = vec![0x5au8; chunk];
    let mut total = 0u64;
    while total < limit {
        // SAFETY: a valid buffer of `chunk` bytes.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), chunk) };
        if n < 0 {
            return (total, last_err());
        }
        if n == 0 {
            return (total, "write returned 0".into());
        }
        total += n as u64;
    }
    (total, "limit reached".into())
}

fn open(p: &Path, flags: i32) -> Result<i32, String> {
    // SAFETY: a valid C string.
    let fd = unsafe { libc::open(c(p).as_ptr(), flags | libc::O_CLOEXEC, 0o644) };
    if fd < 0 {
        Err(last_err())
    } else {
        Ok(fd)
    }
}

fn close(fd: i32) -> String {
    // SAFETY: our fd.
    if unsafe { libc::close(fd) } < 0 {
        last_err()
    } else {
        "ok".into()
    }
}

/// A lower layer with a 1 MiB file to copy up and a file to white out.
fn layers(base: &Path) -> Result<Vec<PathBuf>, String> {
    let l = base.join("l");
    fs::create_dir_all(l.join("d")).map_err(|e| format!("mkdir: {e}"))?;
    fs::write(l.join("big"), vec![b'L'; 1 << 20]).map_err(|e| format!("write: {e}"))?;
    for n in ["gone", "d/x", "ren"] {
        fs::write(l.join(n), "lower\n").map_err(|e| format!("write: {e}"))?;
    }
    Ok(vec![l])
}

/// Out of blocks: writes, copy-up, fallocate, truncate; then EFBIG.
fn space_script(m: &Path, upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    for (name, chunk) in [
        ("fill-64k", 65536usize),
        ("fill-1m", 1 << 20),
        ("fill-4k", 4096),
    ] {
        let p = m.join(name);
        match open(&p, libc::O_CREAT | libc::O_WRONLY | libc::O_TRUNC) {
            Ok(fd) => {
                let (n, e) = fill(fd, chunk, 64 << 20);
                let (_, again) = fill(fd, 4096, 4096);
                let close = close(fd);
                let data = fs::read(&p).unwrap_or_default();
                log.push(format!(
                    "{name}: stopped by {e}, next write: {again}, close: {close}; \
                     stat size = written: {}, upper size = written: {}, data intact: {}",
                    size(&p) == n.to_string(),
                    size(&upper.join(name)) == n.to_string(),
                    data.len() as u64 == n && data.iter().all(|b| *b == 0x5a),
                ));
            }
            Err(e) => log.push(format!("{name}: open {e}")),
        }
        let _ = fs::remove_file(&p);
    }
    // Leave less than the 1 MiB lower file free: its copy-up must fail and leave it.
    let hold = m.join("hold");
    if let Ok(fd) = open(&hold, libc::O_CREAT | libc::O_WRONLY) {
        fill(fd, 65536, 64 << 20);
        // Free 256 KiB.
        let len = fs::metadata(&hold).map(|md| md.size()).unwrap_or(0);
        // SAFETY: our fd.
        unsafe { libc::ftruncate(fd, len.saturating_sub(256 << 10) as i64) };
        close(fd);
    }
    let r = open(&m.join("big"), libc::O_WRONLY | libc::O_APPEND).map(close);
    let big = fs::read(m.join("big")).unwrap_or_default();
    log.push(format!(
        "copy-up of 1 MiB with 256 KiB free: {r:?}; reads the lower data: {}; in upper: {}",
        big.len() == 1 << 20 && big.iter().all(|b| *b == b'L'),
        upper.join("big").exists()
    ));
    let r = std::os::unix::fs::chown(m.join("big"), Some(7), Some(7));
    log.push(format!(
        "chown of the lower file (copy-up): {:?}; owner {:?}",
        r.map_err(|e| e.to_string()),
        fs::metadata(m.join("big"))
            .map(|md| (md.uid(), md.gid()))
            .ok()
    ));
    // A value bigger than what is left of the disk: tmpfs keeps xattrs in memory it
    // accounts for separately, so this shows what each overlay passes on.
    let x = m.join("xattr-file");
    let _ = fs::write(&x, "");
    let v = vec![b'v'; 60000];
    // SAFETY: valid C strings and buffer.
    let r = unsafe {
        libc::setxattr(
            c(&x).as_ptr(),
            c(Path::new("user.big")).as_ptr(),
            v.as_ptr().cast(),
            v.len(),
            0,
        )
    };
    log.push(format!(
        "setxattr 60000 bytes when full: {}",
        if r < 0 { last_err() } else { "ok".into() }
    ));
    let r = fs::OpenOptions::new()
        .write(true)
        .open(m.join("big"))
        .and_then(|f| f.set_len(10));
    log.push(format!(
        "truncate of the lower file to 10: {:?}; size {}",
        r.map_err(|e| e.to_string()),
        size(&m.join("big"))
    ));
    let p = m.join("falloc");
    let r = open(&p, libc::O_CREAT | libc::O_RDWR).map(|fd| {
        // SAFETY: our fd.
        let r = unsafe { libc::fallocate(fd, 0, 0, 8 << 20) };
        let e = if r < 0 { last_err() } else { "ok".into() };
        close(fd);
        e
    });
    log.push(format!(
        "fallocate 8 MiB: {r:?}; stat size {} upper size {}",
        size(&p),
        size(&upper.join("falloc"))
    ));
    let r = fs::OpenOptions::new()
        .write(true)
        .open(&p)
        .and_then(|f| f.set_len(1 << 40));
    log.push(format!(
        "truncate to 1 TiB (sparse): {:?}; stat size {} upper size {}",
        r.map_err(|e| e.to_string()),
        size(&p),
        size(&upper.join("falloc"))
    ));
    let _ = fs::remove_file(&p);
    let _ = fs::remove_file(&hold);
    // EFBIG: a writer limited to 8 KiB (RLIMIT_FSIZE), SIGXFSZ ignored.
    let p = m.join("fsize");
    let cp = c(&p);
    let code = as_user(0, 0, || {
        // SAFETY: plain syscalls in the forked child.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: 8192,
                rlim_max: 8192,
            };
            libc::setrlimit(libc::RLIMIT_FSIZE, &lim);
            let fd = libc::open(cp.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
            if fd < 0 {
                return 100;
            }
            let buf = [1u8; 6000];
            if libc::write(fd, buf.as_ptr().cast(), buf.len()) != 6000 {
                return 101;
            }
            // A short write up to the limit, then EFBIG.
            if libc::write(fd, buf.as_ptr().cast(), buf.len()) != 2192 {
                return 102;
            }
            if libc::write(fd, buf.as_ptr().cast(), buf.len()) >= 0 {
                return 103;
            }
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(104)
        }
    });
    log.push(format!(
        "RLIMIT_FSIZE 8 KiB writer: errno {code}; stat size {} upper size {}",
        size(&p),
        size(&upper.join("fsize"))
    ));
    log
}

/// Out of space on the tmpfs the upper layer is on: every writer gets ENOSPC, the
/// size stat reports is what is on disk, a copy-up that does not fit fails and leaves
/// the lower file, fallocate fails, and a file-size limit gives EFBIG.
#[test]
fn writes_copy_up_and_fallocate_get_enospc_and_sizes_stay_true() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential(&base, &|b| tmpfs(b, "size=4m"), &layers, &space_script)?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    println!("{out}");
    for want in [
        "fill-64k: stopped by No space left on device (os error 28), next write: No space left on device (os error 28), close: ok; stat size = written: true, upper size = written: true, data intact: true",
        "fill-1m: stopped by No space left on device",
        "copy-up of 1 MiB with 256 KiB free: Err(\"No space left on device (os error 28)\"); reads the lower data: true; in upper: false",
        "fallocate 8 MiB: Ok(\"No space left on device (os error 28)\"); stat size 0",
        "RLIMIT_FSIZE 8 KiB writer: errno 27; stat size 8192",
    ] {
        assert!(out.contains(want), "want {want:?} in\n{out}");
    }
}

fn names(p: &Path) -> String {
    let mut v: Vec<String> = fs::read_dir(p)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v.join(",")
}

/// Out of inodes: creations fail with ENOSPC and leave the merged tree as it was
/// (whited-out lower files stay hidden, renamed lower files are not uncovered).
fn inodes_script(m: &Path, upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let r = fs::remove_file(m.join("gone")).and_then(|()| fs::remove_file(m.join("d/x")));
    log.push(format!("whiteouts: {r:?}"));
    // Copied up before the disk fills: its rename needs only the whiteout's inode.
    let r = fs::OpenOptions::new()
        .append(true)
        .open(m.join("ren"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, b"up\n"))
        .and_then(|()| fs::write(m.join("mv-src"), "upper\n"))
        .and_then(|()| fs::create_dir(m.join("mv-dir")));
    log.push(format!("copy-up of ren, mv-src, mv-dir: {r:?}"));
    let _ = fs::create_dir(m.join("fill"));
    let mut n = 0;
    let stopped = loop {
        match fs::write(m.join(format!("fill/{n}")), "") {
            Ok(()) => n += 1,
            Err(e) => break e.to_string(),
        }
        if n > 100_000 {
            break "no limit".into();
        }
    };
    log.push(format!("creating files stopped by: {stopped}"));
    // SAFETY (all below): valid C strings.
    unsafe {
        let gone = c(&m.join("gone"));
        let r = libc::mkdir(gone.as_ptr(), 0o755);
        log.push(format!("mkdir over a whiteout: {}", errstr(r)));
        let fd = libc::open(gone.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644);
        log.push(format!("create over a whiteout: {}", errstr(fd)));
        let r = libc::symlink(c(Path::new("t")).as_ptr(), gone.as_ptr());
        log.push(format!("symlink over a whiteout: {}", errstr(r)));
        let r = libc::link(c(&m.join("d")).as_ptr(), gone.as_ptr());
        log.push(format!("link of a dir: {}", errstr(r)));
        let r = libc::link(c(&m.join("ren")).as_ptr(), gone.as_ptr());
        log.push(format!("link over a whiteout: {}", errstr(r)));
        let r = libc::link(c(&m.join("ren")).as_ptr(), c(&m.join("ln")).as_ptr());
        log.push(format!("link: {}", errstr(r)));
        let r = libc::chmod(c(&m.join("big")).as_ptr(), 0o600);
        log.push(format!("chmod of a lower file (copy-up): {}", errstr(r)));
        let r = libc::mkdir(c(&m.join("newdir")).as_ptr(), 0o755);
        log.push(format!("mkdir: {}", errstr(r)));
        let r = libc::rename(c(&m.join("ren")).as_ptr(), c(&m.join("ren2")).as_ptr());
        log.push(format!("rename of a copied-up lower file: {}", errstr(r)));
        let r = libc::rename(c(&m.join("mv-src")).as_ptr(), c(&m.join("gone")).as_ptr());
        log.push(format!(
            "rename of an upper file over a whiteout: {}",
            errstr(r)
        ));
        let r = libc::rename(c(&m.join("mv-dir")).as_ptr(), c(&m.join("d/x")).as_ptr());
        log.push(format!(
            "rename of an upper dir over a whiteout: {}",
            errstr(r)
        ));
    }
    log.push(format!("root: {}", names(m)));
    log.push(format!("d: {}", names(&m.join("d"))));
    log.push(format!("ren: {:?}", fs::read_to_string(m.join("ren"))));
    log.push(format!(
        "gone: {:?}",
        fs::symlink_metadata(m.join("gone")).map(|md| md.file_type())
    ));
    // Free inodes again: everything works.
    let _ = fs::remove_dir_all(m.join("fill"));
    let r = fs::create_dir(m.join("new")).and_then(|()| fs::write(m.join("new/f"), "f"));
    log.push(format!("mkdir after freeing: {r:?}"));
    // With inodes again, the same creations over whiteouts succeed.
    let r = fs::remove_file(m.join("big"))
        .and_then(|()| fs::remove_file(m.join("ren")))
        .and_then(|()| fs::write(m.join("big"), "new big\n"))
        .and_then(|()| fs::hard_link(m.join("big"), m.join("ren")))
        .and_then(|()| fs::remove_dir_all(m.join("d")))
        .and_then(|()| fs::create_dir(m.join("d")))
        .and_then(|()| fs::remove_file(m.join("gone")))
        .and_then(|()| std::os::unix::fs::symlink("big", m.join("gone")));
    log.push(format!(
        "create, link, mkdir, symlink over whiteouts: {r:?}"
    ));
    log.push(format!(
        "ren: {:?} d: {} gone -> {:?}",
        fs::read_to_string(m.join("ren")),
        names(&m.join("d")),
        fs::read_link(m.join("gone"))
    ));
    log.push(format!("root: {}", names(m)));
    log.push(format!("upper:\n{}", fuse_support::dump(upper)));
    log
}

fn errstr(r: i32) -> String {
    if r < 0 {
        last_err()
    } else {
        "ok".into()
    }
}

/// Out of inodes on the upper tmpfs: creations get ENOSPC and nothing hidden comes back.
#[test]
fn creations_out_of_inodes_get_enospc_and_keep_whiteouts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential(
            &base,
            &|b| tmpfs(b, "size=8m,nr_inodes=64"),
            &layers,
            &inodes_script,
        )?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    println!("{out}");
    assert!(
        out.contains("creating files stopped by: No space left on device"),
        "{out}"
    );
    assert!(
        out.contains("mkdir over a whiteout: No space left on device"),
        "{out}"
    );
}
