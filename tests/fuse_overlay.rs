//! The FUSE overlay (`skiffd __fuse-mount`) against the kernel's overlayfs: the same
//! script of operations on identical layers, then the merged trees and the upper dirs
//! must match. Plus behaviour the differential test cannot see (inode numbers, open
//! unlinked files, mmap, remounts, the on-disk whiteout format). Runs unprivileged: each
//! test works as root of its own user namespace with the user's subordinate ids.

mod fuse_support;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use fuse_support::ops::{mknod, removexattr, setxattr, sys, xattrs_raw};
use fuse_support::{dump, in_userns, mount_kernel, umount, xattrs, Fuse};

/// Two lower layers exercising merging, whiteouts (0/0 char devices, as kernel overlay
/// writes them) and an opaque directory. Built inside the namespace.
fn make_layers(base: &Path) -> Result<Vec<PathBuf>, String> {
    let l1 = base.join("l1");
    let l2 = base.join("l2");
    let w = |p: PathBuf, s: &str| sys(&format!("write {}", p.display()), fs::write(&p, s));
    for d in ["etc", "dir/sub", "olddir/y", "deldir", "dir2", "empty"] {
        sys("mkdir", fs::create_dir_all(l2.join(d)))?;
    }
    for d in ["dir", "dir2", "extra"] {
        sys("mkdir", fs::create_dir_all(l1.join(d)))?;
    }
    w(l2.join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\n")?;
    w(l2.join("etc/hosts"), "127.0.0.1 localhost\n")?;
    w(l2.join("dir/a"), "A\n")?;
    w(l2.join("dir/b"), "B\n")?;
    w(l2.join("dir/sub/c"), "C\n")?;
    w(l2.join("olddir/x"), "X\n")?;
    w(l2.join("olddir/y/z"), "Z\n")?;
    for i in 0..5 {
        w(l2.join(format!("deldir/{i}")), "d\n")?;
    }
    w(l2.join("dir2/old"), "hidden by the opaque dir\n")?;
    w(l2.join("big"), &"0123456789abcdef".repeat(65536))?;
    w(l2.join("mode"), "m\n")?;
    sys(
        "chmod",
        fs::set_permissions(l2.join("mode"), fs::Permissions::from_mode(0o640)),
    )?;
    w(l2.join("xat"), "x\n")?;
    sys("setxattr", setxattr(&l2.join("xat"), "user.foo", b"bar"))?;
    sys(
        "symlink",
        std::os::unix::fs::symlink("etc/passwd", l2.join("sym")),
    )?;
    mknod(&l2.join("fifo"), libc::S_IFIFO | 0o644, 0)?;
    sys(
        "chown",
        std::os::unix::fs::lchown(l2.join("etc/hosts"), Some(100), Some(100)),
    )?;
    // The top layer: overrides, a whiteout and an opaque dir.
    w(l1.join("dir/a"), "A1\n")?;
    mknod(&l1.join("dir/b"), libc::S_IFCHR, 0)?;
    w(l1.join("dir2/new"), "N\n")?;
    sys(
        "opaque",
        setxattr(&l1.join("dir2"), "user.overlay.opaque", b"y"),
    )?;
    w(l1.join("extra/e"), "E\n")?;
    Ok(vec![l1, l2])
}

fn copy_tree(src: &Path, dst: &Path) -> std::io::Result<()> {
    fs::create_dir(dst)?;
    for e in fs::read_dir(src)? {
        let e = e?;
        let (s, d) = (e.path(), dst.join(e.file_name()));
        let md = fs::symlink_metadata(&s)?;
        if md.is_dir() {
            copy_tree(&s, &d)?;
        } else if md.file_type().is_symlink() {
            std::os::unix::fs::symlink(fs::read_link(&s)?, &d)?;
        } else {
            fs::copy(&s, &d)?;
        }
        std::os::unix::fs::lchown(&d, Some(md.uid()), Some(md.gid()))?;
        if !md.file_type().is_symlink() {
            fs::set_permissions(&d, fs::Permissions::from_mode(md.mode() & 0o7777))?;
        }
    }
    Ok(())
}

/// `mv` as coreutils does it: rename, and on EXDEV copy then remove.
fn mv(src: &Path, dst: &Path) -> String {
    match fs::rename(src, dst) {
        Ok(()) => "ok".into(),
        Err(e) if e.raw_os_error() == Some(libc::EXDEV) => {
            let r = copy_tree(src, dst).and_then(|()| fs::remove_dir_all(src));
            format!("EXDEV then copy: {r:?}")
        }
        Err(e) => format!("{e}"),
    }
}

/// The script of operations; returns a log of what each returned.
fn script(m: &Path) -> Vec<String> {
    let log = std::cell::RefCell::new(Vec::new());
    let note = |what: &str, r: std::io::Result<String>| {
        log.borrow_mut().push(format!(
            "{what}: {}",
            r.unwrap_or_else(|e| format!("error {e}"))
        ));
    };
    note("read passwd", fs::read_to_string(m.join("etc/passwd")));
    note("read dir/a", fs::read_to_string(m.join("dir/a")));
    note("read whited-out dir/b", fs::read_to_string(m.join("dir/b")));
    note(
        "list dir2",
        fs::read_dir(m.join("dir2")).map(|rd| {
            let mut v: Vec<_> = rd
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().to_string())
                .collect();
            v.sort();
            v.join(",")
        }),
    );
    note(
        "append hosts",
        OpenOptions::new()
            .append(true)
            .open(m.join("etc/hosts"))
            .and_then(|mut f| f.write_all(b"10.0.0.1 x\n"))
            .map(|_| String::new()),
    );
    note(
        "truncate big",
        OpenOptions::new()
            .write(true)
            .open(m.join("big"))
            .and_then(|f| f.set_len(10))
            .map(|_| String::new()),
    );
    note(
        "O_TRUNC sub/c",
        OpenOptions::new()
            .write(true)
            .truncate(true)
            .open(m.join("dir/sub/c"))
            .and_then(|mut f| f.write_all(b"new\n"))
            .map(|_| String::new()),
    );
    note(
        "chmod mode",
        fs::set_permissions(m.join("mode"), fs::Permissions::from_mode(0o600))
            .map(|_| String::new()),
    );
    note(
        "chown passwd",
        std::os::unix::fs::lchown(m.join("etc/passwd"), Some(1000), Some(1000))
            .map(|_| String::new()),
    );
    note(
        "setxattr xat",
        setxattr(&m.join("xat"), "user.bar", b"baz").map(|_| String::new()),
    );
    note(
        "removexattr xat",
        removexattr(&m.join("xat"), "user.foo").map(|_| String::new()),
    );
    note(
        "unlink dir/a",
        fs::remove_file(m.join("dir/a")).map(|_| String::new()),
    );
    note(
        "unlink copied-up hosts",
        fs::remove_file(m.join("etc/hosts")).map(|_| String::new()),
    );
    note(
        "rm -rf deldir",
        fs::remove_dir_all(m.join("deldir")).map(|_| String::new()),
    );
    note(
        "mkdir over whiteout",
        fs::create_dir(m.join("deldir"))
            .and_then(|_| fs::write(m.join("deldir/fresh"), "f\n"))
            .map(|_| String::new()),
    );
    note(
        "rename lower file",
        fs::rename(m.join("dir/sub/c"), m.join("dir/c2")).map(|_| String::new()),
    );
    note(
        "rename over lower file",
        fs::rename(m.join("mode"), m.join("xat")).map(|_| String::new()),
    );
    note(
        "rename fifo",
        fs::rename(m.join("fifo"), m.join("dir/fifo2")).map(|_| String::new()),
    );
    log.borrow_mut().push(format!(
        "mv olddir newdir: {}",
        mv(&m.join("olddir"), &m.join("newdir"))
    ));
    note(
        "rmdir non-empty merged",
        fs::remove_dir(m.join("dir")).map(|_| String::new()),
    );
    note(
        "mkdir new",
        fs::create_dir(m.join("new")).map(|_| String::new()),
    );
    note(
        "hard link",
        fs::write(m.join("new/f"), "one\n")
            .and_then(|_| fs::hard_link(m.join("new/f"), m.join("new/g")))
            .map(|_| String::new()),
    );
    note(
        "write via link",
        OpenOptions::new()
            .append(true)
            .open(m.join("new/g"))
            .and_then(|mut f| f.write_all(b"two\n"))
            .and_then(|_| fs::read_to_string(m.join("new/f"))),
    );
    note(
        "nlink",
        fs::metadata(m.join("new/f")).map(|md| md.nlink().to_string()),
    );
    note(
        "link lower file",
        fs::hard_link(m.join("dir/c2"), m.join("new/c3")).map(|_| String::new()),
    );
    note(
        "symlink",
        std::os::unix::fs::symlink("../etc/passwd", m.join("new/sym")).map(|_| String::new()),
    );
    log.borrow_mut().push(format!(
        "mkfifo: {:?}",
        mknod(&m.join("new/fifo"), libc::S_IFIFO | 0o600, 0)
    ));
    log.borrow_mut().push(format!(
        "mknod socket: {:?}",
        mknod(&m.join("new/sock"), libc::S_IFSOCK | 0o600, 0)
    ));
    note(
        "unlink open file",
        (|| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(true)
                .open(m.join("new/tmp"))?;
            f.write_all(b"before ")?;
            fs::remove_file(m.join("new/tmp"))?;
            f.write_all(b"after")?;
            f.seek(SeekFrom::Start(0))?;
            let mut s = String::new();
            f.read_to_string(&mut s)?;
            Ok(s)
        })(),
    );
    note(
        "rename open lower file",
        (|| {
            let mut f = OpenOptions::new()
                .read(true)
                .write(true)
                .open(m.join("extra/e"))?;
            fs::rename(m.join("extra/e"), m.join("extra/e2"))?;
            f.seek(SeekFrom::End(0))?;
            f.write_all(b"after rename\n")?;
            drop(f);
            fs::read_to_string(m.join("extra/e2"))
        })(),
    );
    note(
        "O_APPEND passwd",
        OpenOptions::new()
            .append(true)
            .open(m.join("etc/passwd"))
            .and_then(|mut f| f.write_all(b"x\n"))
            .and_then(|_| fs::read_to_string(m.join("etc/passwd"))),
    );
    note(
        "rename upper dir",
        fs::rename(m.join("new"), m.join("new2")).map(|_| String::new()),
    );
    note(
        "rmdir lower empty dir",
        fs::remove_dir(m.join("empty")).map(|_| String::new()),
    );
    note(
        "rename over whiteout",
        fs::write(m.join("t"), "t\n")
            .and_then(|_| fs::rename(m.join("t"), m.join("dir/a")))
            .map(|_| String::new()),
    );
    log.into_inner()
}

/// Runs the script on our overlay and on the kernel's over identical layers.
#[test]
fn same_result_as_kernel_overlayfs() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let mut results = Vec::new();
        for which in ["fuse", "kernel"] {
            let b = base.join(which);
            for d in ["upper", "work", "mnt"] {
                sys("mkdir", fs::create_dir_all(b.join(d)))?;
            }
            let lower = make_layers(&b)?;
            let (upper, work, mnt) = (b.join("upper"), b.join("work"), b.join("mnt"));
            let before = dump(&lower[1]);
            let (log, merged) = if which == "fuse" {
                let f = Fuse::mount(&lower, &upper, &work, &mnt)?;
                let log = script(&mnt);
                let merged = dump(&mnt);
                f.unmount()?;
                (log, merged)
            } else {
                mount_kernel(&lower, &upper, &work, &mnt)?;
                let log = script(&mnt);
                let merged = dump(&mnt);
                umount(&mnt)?;
                (log, merged)
            };
            if dump(&lower[1]) != before {
                return Err(format!("{which}: the lower layer changed"));
            }
            results.push((log.join("\n"), merged, dump(&upper)));
        }
        // Our upper dir must read the same through the kernel overlay (shared format).
        let b = base.join("fuse");
        let lower = vec![b.join("l1"), b.join("l2")];
        let kwork = b.join("kwork");
        sys("mkdir", fs::create_dir_all(&kwork))?;
        mount_kernel(&lower, &b.join("upper"), &kwork, &b.join("mnt"))?;
        let through_kernel = dump(&b.join("mnt"));
        umount(&b.join("mnt"))?;
        let (f, k) = (&results[0], &results[1]);
        let mut report = String::new();
        for (what, a, b) in [
            ("log", &f.0, &k.0),
            ("merged", &f.1, &k.1),
            ("upper", &f.2, &k.2),
            ("fuse upper via kernel", &through_kernel, &k.1),
        ] {
            if a != b {
                report.push_str(&format!(
                    "=== {what} differs\n--- fuse\n{a}\n--- kernel\n{b}\n"
                ));
            }
        }
        let _ = fs::remove_dir_all(&base);
        if report.is_empty() {
            Ok(f.0.clone())
        } else {
            Err(report)
        }
    });
    assert!(out.contains("read dir/a: A1"), "{out}");
    assert!(out.contains("write via link: one\ntwo"), "{out}");
    assert!(out.contains("unlink open file: before after"), "{out}");
    assert!(
        out.contains("rename open lower file: E\nafter rename\n"),
        "{out}"
    );
}

/// A file's st_ino is the same across lookups, hard links, copy-up and remounts; data
/// written through a shared mapping and fsync'd is there after a remount; statfs works;
/// whiteouts and opaque dirs are written as kernel overlayfs writes them.
#[test]
fn inodes_mmap_fsync_statfs_and_on_disk_format() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    in_userns(move || {
        for d in ["upper", "work", "mnt"] {
            sys("mkdir", fs::create_dir_all(base.join(d)))?;
        }
        let lower = make_layers(&base)?;
        let (upper, work, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
        let ino = |p: &str| {
            fs::symlink_metadata(mnt.join(p))
                .map(|m| m.ino())
                .map_err(|e| format!("stat {p}: {e}"))
        };
        let f = Fuse::mount(&lower, &upper, &work, &mnt)?;
        let before: Vec<u64> = ["etc/passwd", "dir/sub/c", "dir", "etc", "big"]
            .iter()
            .map(|p| ino(p))
            .collect::<Result<_, _>>()?;
        // Copy-up by chmod (file) and by creating a file in a lower dir (dir).
        sys(
            "chmod",
            fs::set_permissions(mnt.join("etc/passwd"), fs::Permissions::from_mode(0o600)),
        )?;
        sys("create", fs::write(mnt.join("etc/new"), "n"))?;
        sys("write", fs::write(mnt.join("dir/sub/c"), "changed"))?;
        let after: Vec<u64> = ["etc/passwd", "dir/sub/c", "dir", "etc", "big"]
            .iter()
            .map(|p| ino(p))
            .collect::<Result<_, _>>()?;
        if before != after {
            return Err(format!(
                "st_ino changed on copy-up: {before:?} -> {after:?}"
            ));
        }
        sys(
            "link",
            fs::hard_link(mnt.join("etc/new"), mnt.join("new-link")),
        )?;
        if ino("etc/new")? != ino("new-link")? {
            return Err("hard links have different inodes".into());
        }
        // Shared writable mmap of a lower file (copied up at open), then fsync.
        {
            let file = sys(
                "open big",
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(mnt.join("big")),
            )?;
            // SAFETY: a fresh shared mapping of an open file, unmapped below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    4096,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    std::os::fd::AsRawFd::as_raw_fd(&file),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                return Err(format!("mmap: {}", std::io::Error::last_os_error()));
            }
            // SAFETY: p maps 4096 writable bytes.
            unsafe {
                std::ptr::copy_nonoverlapping(b"MAPPED".as_ptr(), p.cast::<u8>(), 6);
                libc::msync(p, 4096, libc::MS_SYNC);
                libc::munmap(p, 4096);
            }
            sys("fsync", file.sync_all())?;
        }
        let head = sys("read big", fs::read(mnt.join("big")))?;
        if &head[..8] != b"MAPPED67" {
            return Err(format!("mmap write not seen by read: {:?}", &head[..8]));
        }
        let st = nix::sys::statvfs::statvfs(&mnt).map_err(|e| format!("statvfs: {e}"))?;
        if st.blocks() == 0 {
            return Err("statfs reports no blocks".into());
        }
        sys("rm", fs::remove_file(mnt.join("dir/a")))?;
        sys("rm -r", fs::remove_dir_all(mnt.join("olddir")))?;
        sys("mkdir", fs::create_dir(mnt.join("olddir")))?;
        // Unlinked while open: still readable and writable through the fd.
        let mut open = sys(
            "open",
            OpenOptions::new()
                .read(true)
                .write(true)
                .open(mnt.join("etc/new")),
        )?;
        sys("rm open", fs::remove_file(mnt.join("etc/new")))?;
        sys("write unlinked", open.write_all(b"+"))?;
        drop(open);
        f.unmount()?;
        let wh = sys("stat whiteout", fs::symlink_metadata(upper.join("dir/a")))?;
        if !std::os::unix::fs::FileTypeExt::is_char_device(&wh.file_type()) || wh.rdev() != 0 {
            return Err("a whiteout is not a 0/0 character device".into());
        }
        let opq = xattrs_raw(&upper.join("olddir"), "user.overlay.opaque");
        if opq.as_deref() != Some(b"y".as_slice()) {
            return Err(format!("olddir is not opaque: {opq:?}"));
        }
        let f = Fuse::mount(&lower, &upper, &work, &mnt)?;
        let remounted: Vec<u64> = ["etc/passwd", "dir/sub/c", "dir", "etc", "big"]
            .iter()
            .map(|p| ino(p))
            .collect::<Result<_, _>>()?;
        if before != remounted {
            return Err(format!(
                "st_ino changed across remount: {before:?} -> {remounted:?}"
            ));
        }
        let head = sys("read big", fs::read(mnt.join("big")))?;
        if &head[..6] != b"MAPPED" {
            return Err("mmap write lost across remount".into());
        }
        if mnt.join("etc/new").exists()
            || !mnt.join("new-link").exists()
            || mnt.join("dir/a").exists()
        {
            return Err("names wrong after remount".into());
        }
        if fs::read_dir(mnt.join("olddir"))
            .map(|rd| rd.count())
            .unwrap_or(99)
            != 0
        {
            return Err("the re-created dir shows lower entries".into());
        }
        let x = xattrs(&mnt.join("xat"));
        if x != vec![("user.foo".to_string(), b"bar".to_vec())] {
            return Err(format!("xattrs through the overlay: {x:?}"));
        }
        f.unmount()?;
        let _ = fs::remove_dir_all(&base);
        Ok(String::new())
    });
}

/// A big lower file reads as on disk, cold and from the page cache; a write while a
/// reader still holds the lower file open (copy-up under an open, cached file) is seen
/// by everyone and lands in the upper copy.
#[test]
fn big_lower_files_read_right_and_a_write_beside_an_open_reader() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    in_userns(move || {
        let l = base.join("l");
        for d in ["l", "upper", "work", "mnt"] {
            sys("mkdir", fs::create_dir_all(base.join(d)))?;
        }
        let data: Vec<u8> = (0..48u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
            .collect();
        sys("write", fs::write(l.join("big"), &data))?;
        let (upper, work, mnt) = (base.join("upper"), base.join("work"), base.join("mnt"));
        let f = Fuse::mount(std::slice::from_ref(&l), &upper, &work, &mnt)?;
        for pass in ["cold", "warm"] {
            if sys("read", fs::read(mnt.join("big")))? != data {
                return Err(format!("{pass} read differs from the lower file"));
            }
        }
        f.unmount()?;
        let f = Fuse::mount(std::slice::from_ref(&l), &upper, &work, &mnt)?;
        let mut reader = sys("open", fs::File::open(mnt.join("big")))?;
        let mut head = vec![0u8; 1 << 20];
        sys("read head", reader.read_exact(&mut head))?;
        let at = 6u64 << 20;
        {
            let mut w = sys(
                "open rw",
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .open(mnt.join("big")),
            )?;
            sys("seek", w.seek(SeekFrom::Start(at)))?;
            sys("write", w.write_all(b"WRITTEN"))?;
        }
        let mut rest = Vec::new();
        sys("read rest", reader.read_to_end(&mut rest))?;
        let mut want = data.clone();
        want[at as usize..at as usize + 7].copy_from_slice(b"WRITTEN");
        let got = sys("read all", fs::read(mnt.join("big")))?;
        if got != want {
            return Err("the write was lost, or the data is wrong".into());
        }
        drop(reader);
        f.unmount()?;
        if sys("read upper", fs::read(upper.join("big")))? != want {
            return Err("the upper copy is wrong".into());
        }
        let _ = fs::remove_dir_all(&base);
        Ok(String::new())
    });
}
