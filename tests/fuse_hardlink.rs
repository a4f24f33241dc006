//! Hard-linked files of a lower layer on the FUSE overlay (`skiffd __fuse-mount`) against
//! the kernel's overlayfs (without `index`, the default), the oracle: before copy-up all
//! names show one inode number and the lower link count; a write through one name
//! copies up that name only (the link is broken: the other names keep the lower data,
//! also through a descriptor opened before the write), and the names' inode numbers and
//! link counts then change as the kernel overlay's do. Runs unprivileged, as root of a
//! user namespace with the user's subordinate ids.

mod fuse_support;

use std::collections::HashMap;
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use fuse_support::{differential_remount, in_userns, same};

/// One lower layer with `hl/a`, its hard links `hl/b` and `other/c` (as image layers have
/// them, e.g. busybox's applets or git's helpers), and a plain file `hl/solo`.
fn layers(base: &Path) -> Result<Vec<PathBuf>, String> {
    let l = base.join("l");
    for d in ["hl", "other"] {
        fs::create_dir_all(l.join(d)).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    fs::write(l.join("hl/a"), "old\n").map_err(|e| format!("write: {e}"))?;
    fs::write(l.join("hl/solo"), "solo\n").map_err(|e| format!("write: {e}"))?;
    for n in ["hl/b", "other/c"] {
        fs::hard_link(l.join("hl/a"), l.join(n)).map_err(|e| format!("link {n}: {e}"))?;
    }
    Ok(vec![l])
}

const NAMES: [&str; 4] = ["hl/a", "hl/b", "other/c", "hl/d"];

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| format!("<{e}>"))
}

/// The names' contents, link counts and inode numbers, the numbers as letters (same
/// letter: same number; `first` maps numbers seen before to their letters, so a name
/// keeping its number keeps its letter).
fn state(m: &Path, first: &mut HashMap<u64, char>) -> String {
    let mut out = Vec::new();
    for n in NAMES {
        let p = m.join(n);
        match fs::symlink_metadata(&p) {
            Ok(md) => {
                let next = char::from(b'P' + first.len() as u8);
                let letter = *first.entry(md.ino()).or_insert(next);
                out.push(format!(
                    "{n}={:?} ino {letter} nlink {}",
                    read(&p),
                    md.nlink()
                ));
            }
            Err(e) => out.push(format!("{n}: {e}")),
        }
    }
    out.join(" | ")
}

/// All names are stat'ed and read (so the kernel has them cached) and `other/c` is held
/// open; then a write through `hl/a`, an open for writing of `hl/b` and a truncation
/// through it, and a hard link
/// `hl/d` made through the overlay to `other/c`.
fn script(m: &Path, _upper: &Path) -> Vec<String> {
    let mut inos = HashMap::new();
    let mut log = vec![format!("before: {}", state(m, &mut inos))];
    let solo = fs::symlink_metadata(m.join("hl/solo")).map(|md| md.nlink());
    log.push(format!("solo nlink: {solo:?}"));
    let held = fs::File::open(m.join("other/c"));
    let r = OpenOptions::new()
        .append(true)
        .open(m.join("hl/a"))
        .and_then(|mut f| f.write_all(b"+a\n"));
    log.push(format!("append through a: {r:?}"));
    log.push(format!("after a: {}", state(m, &mut inos)));
    let mut s = String::new();
    let r = held.and_then(|mut f| f.read_to_string(&mut s));
    log.push(format!("read result: {:?}", r.map(|_| ())));
    log.push(format!("read through c opened before: {s:?}"));
    // Opened for writing and closed unwritten: copied up all the same.
    let r = OpenOptions::new().write(true).open(m.join("hl/b"));
    log.push(format!("open b for writing: {:?}", r.map(|_| ())));
    log.push(format!("after opening b: {}", state(m, &mut inos)));
    let r = OpenOptions::new()
        .write(true)
        .truncate(true)
        .open(m.join("hl/b"))
        .and_then(|mut f| f.write_all(b"b's\n"));
    log.push(format!("truncate and write through b: {r:?}"));
    log.push(format!("after b: {}", state(m, &mut inos)));
    let r = fs::hard_link(m.join("other/c"), m.join("hl/d"));
    log.push(format!("link c to d: {r:?}"));
    log.push(format!("after link: {}", state(m, &mut inos)));
    let r = OpenOptions::new()
        .append(true)
        .open(m.join("hl/d"))
        .and_then(|mut f| f.write_all(b"+d\n"));
    log.push(format!("append through d: {r:?}"));
    log.push(format!("after d: {}", state(m, &mut inos)));
    log
}

/// After a remount: what is on disk reads the same.
fn after(m: &Path, _upper: &Path) -> Vec<String> {
    vec![format!("remounted: {}", state(m, &mut HashMap::new()))]
}

/// Copy-up of one name of a hard-linked lower file breaks the link, as the kernel overlay
/// (without `index`) does, while the names' inode numbers and link counts read as the
/// kernel overlay's.
#[test]
fn copy_up_of_a_hard_linked_lower_file_breaks_the_link() {
    let dir = tempfile::tempdir().expect("tempdir");
    let base = dir.path().to_path_buf();
    let out = in_userns(move || {
        let (fuse, kernel) =
            differential_remount(&base, &|_| Ok(()), &layers, &script, Some(&after))?;
        same(&fuse, &kernel)?;
        Ok(fuse)
    });
    // What the kernel overlay does (so this test cannot pass by both being wrong alike).
    assert!(
        out.contains(r#"before: hl/a="old\n" ino P nlink 3 | hl/b="old\n" ino P nlink 3"#),
        "{out}"
    );
    assert!(out.contains(r#"after a: hl/a="old\n+a\n""#), "{out}");
    assert!(out.contains(r#"hl/b="old\n" ino P"#), "{out}");
}
