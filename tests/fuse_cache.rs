//! The FUSE overlay's caches never give a stale answer. The kernel keeps lower-layer data
//! in its page cache (`FOPEN_KEEP_CACHE`), attributes, entries (positive and negative),
//! symlink targets (`FUSE_CACHE_SYMLINKS`) and directory listings (`FOPEN_CACHE_DIR`)
//! for long; the server caches merged listings and xattr names. Every test here first
//! reads through those caches, then changes the file through the mount (a copy-up, a
//! truncation, a rename, an unlink, a new symlink, a new xattr), and reads again: the
//! change must be seen, as on the kernel's overlayfs (the oracle). And the per-file
//! `security.selinux` question of `ls -l` is answered ENOTSUP, so the caller stops asking,
//! while every other xattr keeps working. New and copied-up upper files have their
//! recorded inode number and xattr names cached by the server, so listing them and
//! writing to them does not look them up again. Runs unprivileged, as root of a user
//! namespace.

mod fuse_support;

use std::ffi::CString;
use std::fs;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirEntryExt, MetadataExt};
use std::path::{Path, PathBuf};

use fuse_support::{differential, in_userns, last_err, same, Fuse};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// The value of xattr `name` of `p` (not following symlinks), or the error.
fn getx(p: &Path, name: &str) -> String {
    let n = CString::new(name).expect("name without NUL");
    let mut buf = [0u8; 256];
    // SAFETY: valid C strings and a buffer of the size given.
    let r = unsafe {
        libc::lgetxattr(
            c(p).as_ptr(),
            n.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if r < 0 {
        return last_err();
    }
    String::from_utf8_lossy(&buf[..r as usize]).into_owned()
}

/// Sets xattr `name` of `p` to `v` (not following symlinks): "ok" or the error.
fn setx(p: &Path, name: &str, v: &str) -> String {
    let n = CString::new(name).expect("name without NUL");
    // SAFETY: valid C strings and a buffer of the size given.
    let r = unsafe { libc::lsetxattr(c(p).as_ptr(), n.as_ptr(), v.as_ptr().cast(), v.len(), 0) };
    if r < 0 {
        last_err()
    } else {
        "ok".into()
    }
}

fn read(p: &Path) -> String {
    match fs::read(p) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => e.to_string(),
    }
}

fn size(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("size {}", m.len()),
        Err(e) => e.to_string(),
    }
}

fn list(p: &Path) -> String {
    match fs::read_dir(p) {
        Ok(rd) => {
            let mut v: Vec<String> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            v.sort();
            v.join(",")
        }
        Err(e) => e.to_string(),
    }
}

fn readlink(p: &Path) -> String {
    match fs::read_link(p) {
        Ok(t) => t.display().to_string(),
        Err(e) => e.to_string(),
    }
}

/// One lower layer: a file, a directory with two files, a symlink, a 1 MiB file.
fn layers(base: &Path) -> Result<Vec<PathBuf>, String> {
    let l = base.join("l");
    fs::create_dir_all(l.join("d")).map_err(|e| format!("mkdir: {e}"))?;
    let w = |p: &str, data: &[u8]| fs::write(l.join(p), data).map_err(|e| format!("{p}: {e}"));
    w("f", b"old\n")?;
    w("t", b"truncate me\n")?;
    w("d/g", b"g\n")?;
    w("d/k", b"k\n")?;
    w("big", &vec![b'a'; 1 << 20])?;
    std::os::unix::fs::symlink("t1", l.join("s")).map_err(|e| format!("symlink: {e}"))?;
    Ok(vec![l])
}

/// Reads everything once (filling the caches), changes it through the mount, reads again.
fn script(m: &Path, _upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let (f, t, d, s, big) = (
        m.join("f"),
        m.join("t"),
        m.join("d"),
        m.join("s"),
        m.join("big"),
    );
    let ino_f = fs::metadata(&f).map(|m| m.ino()).unwrap_or(0);
    // Fill the caches: data, attributes, a negative entry, a listing, a symlink target.
    for _ in 0..2 {
        log.push(format!("read f: {:?} {}", read(&f), size(&f)));
        log.push(format!("read big: {}", read(&big).len()));
        log.push(format!("stat n (absent): {}", size(&m.join("n"))));
        log.push(format!("list d: {}", list(&d)));
        log.push(format!("readlink s: {}", readlink(&s)));
        log.push(format!("user.x of f: {}", getx(&f, "user.x")));
    }
    // Copy-up by an append: data, size and inode number as seen through the mount.
    let r = fs::OpenOptions::new()
        .append(true)
        .open(&f)
        .and_then(|mut h| h.write_all(b"new\n"));
    log.push(format!("append f: {r:?}"));
    log.push(format!("read f: {:?} {}", read(&f), size(&f)));
    let ino_after = fs::metadata(&f).map(|m| m.ino()).unwrap_or(1);
    log.push(format!("f keeps its inode: {}", ino_f == ino_after));
    // A write in the middle of a big lower file whose pages are all cached.
    let r = fs::OpenOptions::new()
        .write(true)
        .open(&big)
        .and_then(|mut h| {
            h.seek(SeekFrom::Start(4096 * 7 + 10))?;
            h.write_all(b"ZZ")
        });
    log.push(format!("write big: {r:?}"));
    let mut buf = Vec::new();
    let r = fs::File::open(&big).and_then(|mut h| h.read_to_end(&mut buf));
    let at = 4096 * 7 + 8;
    log.push(format!(
        "read big: {r:?} {:?}",
        String::from_utf8_lossy(buf.get(at..at + 6).unwrap_or_default())
    ));
    // A truncating open of a cached lower file.
    let _ = read(&t);
    let r = fs::write(&t, "x");
    log.push(format!(
        "truncate t: {r:?} then {:?} {}",
        read(&t),
        size(&t)
    ));
    // Names: a rename out of a cached listing, an unlink, a create over a negative entry.
    log.push(format!(
        "rename d/g d/h: {:?}",
        fs::rename(d.join("g"), d.join("h"))
    ));
    log.push(format!("list d: {}", list(&d)));
    log.push(format!("read d/g: {:?}", read(&d.join("g"))));
    log.push(format!("read d/h: {:?}", read(&d.join("h"))));
    log.push(format!(
        "rename d/k over f: {:?}",
        fs::rename(d.join("k"), &f)
    ));
    log.push(format!("read f: {:?} {}", read(&f), size(&f)));
    log.push(format!("create n: {:?}", fs::write(m.join("n"), "n\n")));
    log.push(format!("read n: {:?}", read(&m.join("n"))));
    log.push(format!("unlink n: {:?}", fs::remove_file(m.join("n"))));
    log.push(format!("read n: {:?}", read(&m.join("n"))));
    // A new target for a cached symlink.
    log.push(format!("rm s: {:?}", fs::remove_file(&s)));
    let r = std::os::unix::fs::symlink("t2", &s);
    log.push(format!("ln -s t2 s: {r:?} then {}", readlink(&s)));
    // A new xattr on a file whose (empty) list of names was cached.
    log.push(format!("user.x of f before: {}", getx(&f, "user.x")));
    log.push(format!("set user.x of f: {}", setx(&f, "user.x", "1")));
    log.push(format!("user.x of f: {}", getx(&f, "user.x")));
    log.push(format!("list d: {}", list(&d)));
    log.push(format!("list /: {}", list(m)));
    log
}

/// Whatever was read (and cached) before, a change made through the mount is seen
/// afterwards, exactly as on the kernel's overlayfs.
#[test]
fn cached_reads_see_every_change_made_through_the_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential(&base, &|_| Ok(()), &layers, &script)?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    for want in [
        "read f: \"old\\nnew\\n\" size 8",
        "f keeps its inode: true",
        "read big: Ok(1048576) \"aaZZaa\"",
        "truncate t: Ok(()) then \"x\" size 1",
        "list d: h,k",
        "read f: \"k\\n\" size 2",
        "ln -s t2 s: Ok(()) then t2",
        "user.x of f: 1",
    ] {
        assert!(out.contains(want), "want {want:?} in\n{out}");
    }
}

/// `security.selinux` of a file without a label is ENOTSUP (so `ls -l` asks once per
/// mount, not once per file); a file's other xattrs, and a label a layer does have, are
/// still answered.
#[test]
fn absent_selinux_label_is_enotsup_and_other_xattrs_still_answer() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let l = base.join("l");
        for d in ["l", "upper", "work", "mnt"] {
            fs::create_dir_all(base.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        fs::write(l.join("f"), "f\n").map_err(|e| e.to_string())?;
        let set = setx(&l.join("f"), "user.a", "1");
        if set != "ok" {
            return Err(format!("user.a on the lower layer: {set}"));
        }
        let m = base.join("mnt");
        let fuse = Fuse::mount(&[l], &base.join("upper"), &base.join("work"), &m)?;
        let f = m.join("f");
        let mut log = Vec::new();
        for _ in 0..2 {
            log.push(format!("selinux of f: {}", getx(&f, "security.selinux")));
            log.push(format!("selinux of /: {}", getx(&m, "security.selinux")));
            log.push(format!("user.a of f: {}", getx(&f, "user.a")));
            log.push(format!("user.b of f: {}", getx(&f, "user.b")));
        }
        log.push(format!("set user.b of f: {}", setx(&f, "user.b", "2")));
        log.push(format!("user.b of f after: {}", getx(&f, "user.b")));
        log.push(format!(
            "selinux of f after: {}",
            getx(&f, "security.selinux")
        ));
        fuse.unmount()?;
        Ok(log.join("\n"))
    });
    let enotsup = std::io::Error::from_raw_os_error(libc::ENOTSUP).to_string();
    let enodata = std::io::Error::from_raw_os_error(libc::ENODATA).to_string();
    for want in [
        format!("selinux of f: {enotsup}"),
        format!("selinux of /: {enotsup}"),
        "user.a of f: 1".to_string(),
        format!("user.b of f: {enodata}"),
        "set user.b of f: ok".to_string(),
        "user.b of f after: 2".to_string(),
        format!("selinux of f after: {enotsup}"),
    ] {
        assert!(out.contains(&want), "want {want:?} in\n{out}");
    }
}

/// Files made through the mount (and a copied-up one) are listed and written without
/// the server reading their recorded inode number (`user.skiff.ino`) or listing their
/// xattrs again (the kernel asks for `security.capability` at a new file's first write),
/// and they still show the right inode numbers: their own, and for the copied-up file
/// the lower one. The server's trace log counts those reads.
#[test]
fn new_upper_files_are_listed_and_written_without_rereading_their_xattrs() {
    const FILES: usize = 40;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let l = base.join("l");
        for d in ["l", "upper", "work", "mnt"] {
            fs::create_dir_all(base.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        fs::write(l.join("low"), "low\n").map_err(|e| e.to_string())?;
        let lower_ino = fs::metadata(l.join("low"))
            .map_err(|e| e.to_string())?
            .ino();
        let m = base.join("mnt");
        let log = base.join("server.log");
        let fuse = Fuse::mount_traced(&[l], &base.join("upper"), &base.join("work"), &m, &log)?;
        let d = m.join("new");
        fs::create_dir(&d).map_err(|e| format!("mkdir new: {e}"))?;
        for i in 0..FILES {
            fs::write(d.join(format!("f{i}")), format!("{i}\n"))
                .map_err(|e| format!("f{i}: {e}"))?;
        }
        // The copy-up records the lower inode number; the listing reads it back.
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(m.join("low"))
            .map_err(|e| format!("open low: {e}"))?;
        f.write_all(b"more\n").map_err(|e| format!("append: {e}"))?;
        drop(f);
        let mut shown = Vec::new();
        for p in [m.join("low"), d.clone()] {
            shown.push((
                p.clone(),
                fs::symlink_metadata(&p).map_err(|e| e.to_string())?.ino(),
            ));
        }
        for e in fs::read_dir(&d).map_err(|e| format!("readdir: {e}"))? {
            let e = e.map_err(|e| e.to_string())?;
            let ino = e.metadata().map_err(|e| e.to_string())?.ino();
            if ino != e.ino() {
                return Err(format!(
                    "{:?}: readdir says {} and stat {ino}",
                    e.path(),
                    e.ino()
                ));
            }
            shown.push((e.path(), ino));
        }
        fuse.unmount()?;
        let mut text = Vec::new();
        for (p, ino) in shown {
            let rel = p.strip_prefix(&m).map_err(|e| e.to_string())?;
            let own = fs::symlink_metadata(base.join("upper").join(rel))
                .map_err(|e| e.to_string())?
                .ino();
            let want = if rel == Path::new("low") {
                lower_ino
            } else {
                own
            };
            text.push(format!("{} inode right: {}", rel.display(), ino == want));
        }
        let log = fs::read_to_string(&log).map_err(|e| e.to_string())?;
        let count = |what: &str| log.lines().filter(|l| l.contains(what)).count();
        text.push(format!(
            "recorded inode reads: {}",
            count("reading the recorded inode number")
        ));
        text.push(format!("xattr listings: {}", count("listing xattr names")));
        Ok(text.join("\n"))
    });
    assert_eq!(
        out.lines()
            .filter(|l| l.ends_with("inode right: true"))
            .count(),
        FILES + 2,
        "{out}"
    );
    // The copy-up records the number it writes, so it is never read back. The one
    // listing allowed is the copied-up file's (its cached names are dropped at copy-up);
    // before, each new file was listed once and read back at every lookup.
    assert!(out.contains("recorded inode reads: 0"), "{out}");
    let listings: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("xattr listings: "))
        .and_then(|n| n.parse().ok())
        .unwrap_or(usize::MAX);
    assert!(listings <= 1, "{out}");
}

/// Files created write-only, then written, read and written again while another handle
/// has their pages cached (a create-only handle writes directly, see
/// `fuse::ops::create_open_flags`).
fn write_only_script(m: &Path, _upper: &Path) -> Vec<String> {
    use std::os::unix::fs::{FileExt, OpenOptionsExt, PermissionsExt};
    let mut log = Vec::new();
    let create = |name: &str, mode: u32, append: bool| {
        fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(!append)
            .append(append)
            .mode(mode)
            .open(m.join(name))
    };
    // A reader's cached pages are dropped by the writer's later writes.
    let r = create("w", 0o644, false).and_then(|mut w| {
        w.write_all(b"abcdef")?;
        let reader = fs::File::open(m.join("w"))?;
        let mut buf = [0u8; 6];
        reader.read_exact_at(&mut buf, 0)?;
        let first = String::from_utf8_lossy(&buf).into_owned();
        w.write_all_at(b"XY", 1)?;
        w.write_all(b"gh")?;
        let mut again = Vec::new();
        fs::File::open(m.join("w"))?.read_to_end(&mut again)?;
        reader.read_exact_at(&mut buf, 0)?;
        Ok(format!(
            "{first} then {} / {}",
            String::from_utf8_lossy(&buf),
            String::from_utf8_lossy(&again)
        ))
    });
    log.push(format!("w: {r:?} {}", size(&m.join("w"))));
    let r = create("a", 0o600, true).and_then(|mut a| {
        a.write_all(b"1")?;
        a.write_all(b"2")
    });
    log.push(format!(
        "append a: {r:?} then {:?} {}",
        read(&m.join("a")),
        size(&m.join("a"))
    ));
    // Set-id bits of a new file, and a writer that may not keep them.
    for (name, mode) in [("x", 0o755), ("s", 0o4755), ("g", 0o2775)] {
        let r = create(name, mode, false).and_then(|mut f| f.write_all(b"data"));
        let shown = fs::symlink_metadata(m.join(name)).map(|st| st.permissions().mode() & 0o7777);
        log.push(format!(
            "{name}: {r:?} mode {shown:?} {:?}",
            read(&m.join(name))
        ));
    }
    // Set-id bits given while a write-only handle is open, then a write through it.
    let r = create("late", 0o755, false).and_then(|mut f| {
        f.write_all(b"a")?;
        fs::set_permissions(m.join("late"), fs::Permissions::from_mode(0o4755))?;
        f.write_all(b"b")
    });
    let shown = fs::symlink_metadata(m.join("late")).map(|st| st.permissions().mode() & 0o7777);
    log.push(format!(
        "late: {r:?} mode {shown:?} {:?}",
        read(&m.join("late"))
    ));
    log.push(format!("list /: {}", list(m)));
    log
}

/// A file created write-only is written without the kernel's kill-priv question (a
/// GETXATTR of `security.capability` at each new file's first write: one round trip per
/// created file, counted in the server's trace log), and what it reads, and what other
/// handles read, is what the kernel's overlayfs shows.
#[test]
fn files_created_write_only_are_written_without_the_kill_priv_question() {
    const FILES: usize = 20;
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) =
            differential(&base.join("diff"), &|_| Ok(()), &layers, &write_only_script)?;
        same(&fuse, &kernel)?;
        let b = base.join("traced");
        for d in ["l", "upper", "work", "mnt"] {
            fs::create_dir_all(b.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
        }
        let (m, log) = (b.join("mnt"), b.join("server.log"));
        let f = Fuse::mount_traced(&[b.join("l")], &b.join("upper"), &b.join("work"), &m, &log)?;
        for i in 0..FILES {
            fs::write(m.join(format!("f{i}")), format!("{i}\n"))
                .map_err(|e| format!("f{i}: {e}"))?;
        }
        let mut back = 0;
        for i in 0..FILES {
            back += usize::from(read(&m.join(format!("f{i}"))) == format!("{i}\n"));
        }
        f.unmount()?;
        let log = fs::read_to_string(&log).map_err(|e| e.to_string())?;
        let asked = log
            .lines()
            .filter(|l| l.contains("getxattr asked") && l.contains("security.capability"))
            .count();
        Ok(format!(
            "{fuse}\nread back: {back}\nkill-priv questions: {asked}"
        ))
    });
    assert!(out.contains(&format!("read back: {FILES}")), "{out}");
    assert!(out.contains("kill-priv questions: 0"), "{out}");
    for want in [
        "w: Ok(\"abcdef then aXYdef / aXYdefgh\") size 8",
        "append a: Ok(()) then \"12\" size 2",
    ] {
        assert!(out.contains(want), "want {want:?} in\n{out}");
    }
}
