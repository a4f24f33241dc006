//! POSIX details of the FUSE overlay (`skiffd __fuse-mount`) against the kernel's
//! overlayfs, the oracle: modes at creation under each umask, set-id bits, names longer
//! than NAME_MAX, `.` and `..` in listings with their inode numbers, directory link
//! counts, and `mknod c 0 0` (the whiteout marker). Each script runs on both overlays
//! over identical layers and the logs must be equal. Runs unprivileged, as root of a
//! user namespace with the user's subordinate ids.

mod fuse_support;

use std::ffi::CString;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_support::{as_user, differential, differential_remount, in_userns, last_err, same};

fn c(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path without NUL")
}

/// A libc call's result as text: "ok" or the error.
fn res(r: libc::c_int) -> String {
    if r < 0 {
        last_err()
    } else {
        "ok".into()
    }
}

/// `mode uid:gid` of `p` (not following symlinks), or the error.
fn meta(p: &Path) -> String {
    match fs::symlink_metadata(p) {
        Ok(m) => format!("{:o} {}:{}", m.mode() & 0o7777, m.uid(), m.gid()),
        Err(e) => e.to_string(),
    }
}

fn open_creat(p: &Path, mode: u32) -> String {
    // SAFETY: a valid C string; the fd is closed at once.
    let fd = unsafe { libc::open(c(p).as_ptr(), libc::O_CREAT | libc::O_WRONLY, mode) };
    if fd < 0 {
        return last_err();
    }
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    "ok".into()
}

/// One lower layer: a plain dir with two subdirs and a file, a lower dir to merge into.
fn small_layers(base: &Path) -> Result<Vec<PathBuf>, String> {
    let l = base.join("l");
    for d in ["low/s1", "low/s2", "merged/m1", "sgid", "cu/s1"] {
        fs::create_dir_all(l.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    fs::write(l.join("low/f"), "f\n").map_err(|e| format!("write: {e}"))?;
    fs::write(l.join("file"), "x\n").map_err(|e| format!("write: {e}"))?;
    fs::create_dir(l.join("bigl")).map_err(|e| format!("mkdir: {e}"))?;
    for i in 0..300 {
        fs::write(
            l.join(format!("bigl/lower-entry-with-a-long-name-{i:04}")),
            "",
        )
        .map_err(|e| format!("write: {e}"))?;
    }
    // A set-group-ID directory of group 2000, as images have them (e.g. /var/mail).
    std::os::unix::fs::lchown(l.join("sgid"), Some(0), Some(2000))
        .map_err(|e| format!("chown: {e}"))?;
    fs::set_permissions(l.join("sgid"), fs::Permissions::from_mode(0o2777))
        .map_err(|e| format!("chmod: {e}"))?;
    // A directory in two lower layers (merged without an upper part).
    let top = base.join("top");
    for (layer, d) in [(&top, "two/a"), (&l, "two/b"), (&l, "two/c")] {
        fs::create_dir_all(layer.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    Ok(vec![top, l])
}

/// Creation under umask 0, 002, 022 and 077 (file, dir, fifo, by open(O_CREAT),
/// mkdir, mknod), then set-id bits at creation: as root, and as a user outside the
/// group of a set-group-ID directory (the kernel strips S_ISGID for them).
fn modes_script(m: &Path, _upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    for umask in [0o000, 0o002, 0o022, 0o077] {
        // SAFETY: umask cannot fail.
        unsafe { libc::umask(umask) };
        let d = m.join(format!("u{umask:03o}"));
        // SAFETY: valid C strings.
        let mk = unsafe { libc::mkdir(c(&d).as_ptr(), 0o777) };
        let f = open_creat(&d.join("f"), 0o666);
        // SAFETY: valid C string.
        let p = unsafe { libc::mknod(c(&d.join("p")).as_ptr(), libc::S_IFIFO | 0o666, 0) };
        // A lower dir gets the new entries too (copy-up of the parent first).
        let lf = open_creat(&m.join(format!("low/f{umask:03o}")), 0o666);
        log.push(format!(
            "umask {umask:03o}: mkdir {} {} | open {f} {} | mknod {} {} | in lower dir {lf} {}",
            res(mk),
            meta(&d),
            meta(&d.join("f")),
            res(p),
            meta(&d.join("p")),
            meta(&m.join(format!("low/f{umask:03o}"))),
        ));
    }
    // SAFETY: as above.
    unsafe { libc::umask(0) };
    for mode in [0o4777, 0o2777, 0o6755, 0o2755, 0o1777] {
        let p = m.join(format!("setid{mode:o}"));
        log.push(format!(
            "root open(O_CREAT, {mode:o}): {} {}",
            open_creat(&p, mode),
            meta(&p)
        ));
    }
    // SAFETY: valid C strings.
    let r = unsafe { libc::mkdir(c(&m.join("dirsgid")).as_ptr(), 0o2777) };
    log.push(format!(
        "mkdir 2777: {} {}",
        res(r),
        meta(&m.join("dirsgid"))
    ));
    // In the set-group-ID dir of group 2000: as root, as a member-less user 1000.
    let sg = m.join("sgid");
    log.push(format!(
        "root in sgid dir: {} {}",
        open_creat(&sg.join("root-f"), 0o2755),
        meta(&sg.join("root-f"))
    ));
    // SAFETY: valid C string.
    let r = unsafe { libc::mkdir(c(&sg.join("root-d")).as_ptr(), 0o755) };
    log.push(format!(
        "root mkdir in sgid dir: {} {}",
        res(r),
        meta(&sg.join("root-d"))
    ));
    let user_f = sg.join("user-f");
    let r = as_user(1000, 1000, || {
        // SAFETY: umask and open on a valid C string; the fd is closed.
        unsafe {
            libc::umask(0);
            let fd = libc::open(c(&user_f).as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o2755);
            if fd < 0 {
                return std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
            }
            libc::close(fd);
        }
        0
    });
    log.push(format!(
        "user 1000 in sgid dir (02755): {r} {}",
        meta(&user_f)
    ));
    let user_x = sg.join("user-noexec");
    let r = as_user(1000, 1000, || {
        // SAFETY: as above.
        unsafe {
            libc::umask(0);
            let fd = libc::open(c(&user_x).as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o4644);
            if fd < 0 {
                return std::io::Error::last_os_error().raw_os_error().unwrap_or(1);
            }
            libc::close(fd);
        }
        0
    });
    log.push(format!(
        "user 1000 in sgid dir (04644): {r} {}",
        meta(&user_x)
    ));
    // SAFETY: as above.
    unsafe { libc::umask(0o022) };
    log
}

/// Modes at creation follow the caller's umask alone (not the server's too), and
/// set-user-ID/set-group-ID bits given at creation are kept, with the kernel's own rule
/// for S_ISGID in a set-group-ID directory whose group the creator is not in.
#[test]
fn creation_modes_umask_and_setid_bits_as_the_kernel_overlay() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        // (Fuse::mount starts the server under umask 077: it must not apply it.)
        let (fuse, kernel) = differential(&base, &|_| Ok(()), &small_layers, &modes_script)?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    for want in [
        "umask 000: mkdir ok 777 0:0 | open ok 666 0:0 | mknod ok 666 0:0 | in lower dir ok 666",
        "umask 002: mkdir ok 775 0:0 | open ok 664 0:0",
        "root open(O_CREAT, 4777): ok 4777 0:0",
        "root open(O_CREAT, 6755): ok 6755 0:0",
    ] {
        assert!(out.contains(want), "want {want:?} in\n{out}");
    }
}

/// Lookups of a name longer than 255 bytes fail with ENAMETOOLONG (not ENOENT), for
/// every call that looks a name up; 255 bytes work.
fn names_script(m: &Path, _upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let long = m.join("n".repeat(256));
    let ok255 = m.join("n".repeat(255));
    let other = m.join("file");
    let cl = c(&long);
    // SAFETY (all below): valid C strings and buffers.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        log.push(format!("stat: {}", res(libc::lstat(cl.as_ptr(), &mut st))));
        log.push(format!("chmod: {}", res(libc::chmod(cl.as_ptr(), 0o644))));
        log.push(format!("chown: {}", res(libc::lchown(cl.as_ptr(), 1, 1))));
        log.push(format!("truncate: {}", res(libc::truncate(cl.as_ptr(), 0))));
        log.push(format!(
            "open: {}",
            res(libc::open(cl.as_ptr(), libc::O_RDONLY))
        ));
        log.push(format!("unlink: {}", res(libc::unlink(cl.as_ptr()))));
        log.push(format!("rmdir: {}", res(libc::rmdir(cl.as_ptr()))));
        log.push(format!(
            "link to: {}",
            res(libc::link(c(&other).as_ptr(), cl.as_ptr()))
        ));
        log.push(format!(
            "link from: {}",
            res(libc::link(cl.as_ptr(), c(&m.join("x")).as_ptr()))
        ));
        log.push(format!(
            "rename from: {}",
            res(libc::rename(cl.as_ptr(), c(&m.join("x")).as_ptr()))
        ));
        log.push(format!(
            "rename to: {}",
            res(libc::rename(c(&other).as_ptr(), cl.as_ptr()))
        ));
        log.push(format!("create: {}", open_creat(&long, 0o644)));
        log.push(format!("mkdir: {}", res(libc::mkdir(cl.as_ptr(), 0o755))));
        log.push(format!(
            "symlink: {}",
            res(libc::symlink(c(&other).as_ptr(), cl.as_ptr()))
        ));
        log.push(format!(
            "readlink: {:?}",
            fs::read_link(&long).map_err(|e| e.to_string())
        ));
        log.push(format!(
            "255 bytes: {} {}",
            open_creat(&ok255, 0o644),
            meta(&ok255)
        ));
    }
    log
}

#[test]
fn names_longer_than_255_bytes_give_enametoolong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential(&base, &|_| Ok(()), &small_layers, &names_script)?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    for want in [
        "stat: File name too long",
        "unlink: File name too long",
        "255 bytes: ok 644",
    ] {
        assert!(out.contains(want), "want {want:?} in\n{out}");
    }
}

/// `readdir` of `dir` through glibc: (name, d_ino) with `.` and `..`.
fn entries(dir: &Path) -> Result<Vec<(String, u64)>, String> {
    let mut d = nix::dir::Dir::open(
        dir,
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_DIRECTORY,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|e| format!("opendir {}: {e}", dir.display()))?;
    let mut out = Vec::new();
    for e in d.iter() {
        let e = e.map_err(|e| format!("readdir {}: {e}", dir.display()))?;
        out.push((e.file_name().to_string_lossy().to_string(), e.ino()));
    }
    Ok(out)
}

/// For each directory: `.` and `..` present, whether every d_ino is the inode number
/// stat reports (`.` the dir's, `..` its parent's), and the link count.
fn listing_script(m: &Path, upper: &Path) -> Vec<String> {
    let _ = fs::create_dir_all(m.join("new/a/b"));
    let _ = fs::create_dir(m.join("new/c"));
    let _ = fs::create_dir(m.join("merged/up"));
    let _ = fs::write(m.join("merged/uf"), "u");
    // Copy-up of a lower file (its inode number is kept in the upper copy's xattr).
    let _ = fs::write(m.join("file"), "changed");
    // Copy-up of the files of a big lower dir: after a remount they are upper entries
    // whose inode number is the one kept in an xattr, and all but the first few are
    // listed by plain READDIR.
    for i in 0..300 {
        let _ = fs::write(
            m.join(format!("bigl/lower-entry-with-a-long-name-{i:04}")),
            "c",
        );
    }
    // Copy-up of a lower directory with a subdirectory.
    let _ = fs::write(m.join("cu/f"), "");
    // Many entries: the kernel asks for the later ones by plain READDIR.
    let _ = fs::create_dir(m.join("many"));
    for i in 0..300 {
        let _ = fs::write(m.join(format!("many/entry-with-a-longer-name-{i:04}")), "");
    }
    list_dirs(m, upper)
}

/// The listing checks of [`listing_script`] alone (after a remount, the listings are
/// read from disk again).
fn list_dirs(m: &Path, _upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    let ino = |p: &Path| fs::symlink_metadata(p).map(|md| md.ino()).unwrap_or(0);
    for d in [
        "", "low", "low/s1", "merged", "cu", "new", "new/a", "many", "bigl",
    ] {
        let dir = m.join(d);
        let parent = dir.join("..");
        match entries(&dir) {
            Ok(ents) => {
                let names: Vec<&str> = ents.iter().map(|(n, _)| n.as_str()).collect();
                let dots = names.contains(&".") && names.contains(&"..");
                let mut wrong = Vec::new();
                for (n, i) in &ents {
                    let want = match n.as_str() {
                        // The mount root's `..` is outside the overlay (the kernel's
                        // gives the upper dir's real parent): only nonzero matters.
                        ".." if d.is_empty() => *i,
                        "." => ino(&dir),
                        ".." => ino(&parent),
                        _ => ino(&dir.join(n)),
                    };
                    if *i != want || *i == 0 {
                        wrong.push(format!("{n}={i}/{want}"));
                    }
                }
                wrong.truncate(5);
                let nlink = fs::symlink_metadata(&dir).map(|m| m.nlink()).unwrap_or(0);
                log.push(format!(
                    "/{d}: {} entries, dot and dotdot: {dots}, d_ino != st_ino: {wrong:?}, nlink {nlink}",
                    ents.len()
                ));
            }
            Err(e) => log.push(format!("/{d}: {e}")),
        }
    }
    log
}

/// `.` and `..` are listed with their real inode numbers, every entry's d_ino is the
/// st_ino stat gives, and directories count their links as the kernel overlay does.
#[test]
fn dot_entries_inode_numbers_and_directory_link_counts() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential_remount(
            &base,
            &|_| Ok(()),
            &small_layers,
            &listing_script,
            Some(&list_dirs),
        )?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    assert!(
        out.contains("/new: 4 entries, dot and dotdot: true, d_ino != st_ino: [], nlink 4"),
        "{out}"
    );
    assert!(
        out.contains("/many: 302 entries, dot and dotdot: true"),
        "{out}"
    );
}

/// `mknod NAME c 0 0` is refused with EPERM (it is the whiteout marker); other nodes work.
fn mknod_script(m: &Path, upper: &Path) -> Vec<String> {
    let mut log = Vec::new();
    for (name, mode, dev) in [
        ("wh", libc::S_IFCHR | 0o644, 0),
        ("low/wh", libc::S_IFCHR | 0o644, 0),
        ("fifo", libc::S_IFIFO | 0o644, 0),
    ] {
        let p = m.join(name);
        // SAFETY: a valid C string.
        let r = unsafe { libc::mknod(c(&p).as_ptr(), mode, dev) };
        log.push(format!(
            "mknod {name}: {} merged: {} upper: {}",
            res(r),
            meta(&p),
            meta(&upper.join(name))
        ));
    }
    log
}

#[test]
fn mknod_of_the_whiteout_device_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential(&base, &|_| Ok(()), &small_layers, &mknod_script)?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    assert!(out.contains("mknod wh: Operation not permitted"), "{out}");
}

/// Whiteouts made in one mount, then new names over them after a remount (the server
/// then knows them only from the listing it reads): a file by open(O_CREAT), a
/// directory by mkdir, a rename onto one, a hard link onto one.
fn whiteout_script(m: &Path, _upper: &Path) -> Vec<String> {
    vec![
        format!("rm low/f: {:?}", fs::remove_file(m.join("low/f"))),
        format!("rmdir low/s1: {:?}", fs::remove_dir(m.join("low/s1"))),
        format!("rm file: {:?}", fs::remove_file(m.join("file"))),
        format!("rmdir low/s2: {:?}", fs::remove_dir(m.join("low/s2"))),
        format!("new: {:?}", fs::write(m.join("low/n"), "n\n")),
    ]
}

fn over_whiteouts(m: &Path, upper: &Path) -> Vec<String> {
    let ls = |d: &str| {
        let mut v: Vec<String> = fs::read_dir(m.join(d))
            .map(|rd| {
                rd.filter_map(|e| e.ok())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v.join(",")
    };
    let mut log = vec![format!("low before: {}", ls("low"))];
    log.push(format!(
        "create low/f: {}",
        open_creat(&m.join("low/f"), 0o644)
    ));
    log.push(format!(
        "mkdir low/s1: {:?}",
        fs::create_dir(m.join("low/s1"))
    ));
    log.push(format!(
        "rename onto file: {:?}",
        fs::rename(m.join("low/n"), m.join("file"))
    ));
    log.push(format!(
        "link onto low/s2: {:?}",
        fs::hard_link(m.join("file"), m.join("low/s2"))
    ));
    log.push(format!("low after: {} | /: {}", ls("low"), ls("")));
    log.push(format!(
        "low/s1 entries: {} | file: {:?}",
        ls("low/s1"),
        fs::read_to_string(m.join("file"))
    ));
    for n in ["low/f", "low/s1", "file", "low/s2"] {
        log.push(format!(
            "{n}: {} upper {}",
            meta(&m.join(n)),
            meta(&upper.join(n))
        ));
    }
    log
}

/// New names over whiteouts of an earlier mount, as the kernel overlay makes them.
#[test]
fn new_names_over_whiteouts_of_an_earlier_mount() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) = differential_remount(
            &base,
            &|_| Ok(()),
            &small_layers,
            &whiteout_script,
            Some(&over_whiteouts),
        )?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    assert!(out.contains("create low/f: ok"), "{out}");
    assert!(out.contains("mkdir low/s1: Ok(())"), "{out}");
}
