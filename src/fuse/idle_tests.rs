//! An idle server's shed caches: the listings it drops are read again from the layers
//! as they were (whiteouts, copies and renames included), and shedding while requests
//! run loses none of their changes. On real layers, without a mount (as `tests`).

use std::ffi::{OsStr, OsString};
use std::fs;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use fuser::{INodeNo, RenameFlags};

use super::node::{Node, Overlay, ROOT};

/// Layers in `base`: one lower layer holding `files` in its root and in `d/`.
fn overlay(base: &Path, files: usize) -> Overlay {
    let (lower, upper, work) = (base.join("l"), base.join("u"), base.join("w"));
    for d in [&lower.join("d"), &upper, &work] {
        fs::create_dir_all(d).expect("mkdir");
    }
    for i in 0..files {
        fs::write(lower.join(format!("f{i}")), b"x").expect("write");
        fs::write(lower.join("d").join(format!("f{i}")), b"x").expect("write");
    }
    Overlay::new(&[lower], &upper, &work).expect("overlay")
}

/// The visible names of a directory node, sorted, with each one's layer and type.
fn names(ov: &Overlay, dir: &Node) -> Vec<(OsString, usize, u8)> {
    let mut v: Vec<_> = ov
        .with_listing(dir, |l, _| l.snapshot())
        .expect("listing")
        .into_iter()
        .map(|(n, e)| (n, e.layer, e.dtype))
        .collect();
    v.sort();
    v
}

fn exists(ov: &Overlay, dir: &Node, name: &str) -> bool {
    match ov.lookup(dir, OsStr::new(name), false) {
        Ok((node, _)) => {
            ov.release(&node);
            true
        }
        Err(libc::ENOENT) => false,
        Err(e) => panic!("lookup {name}: errno {e}"),
    }
}

#[test]
fn shed_listings_are_read_again_as_they_were() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ov = overlay(dir.path(), 10);
    let root = ov.node(INodeNo(ROOT)).expect("root");
    let r = INodeNo(ROOT);
    // A whiteout (unlink of a lower file), a copy-up with a whiteout (rename of a lower
    // file), a directory copied up and a rename inside it.
    ov.do_unlink(r, OsStr::new("f0"), false).expect("unlink f0");
    ov.do_rename(
        r,
        OsStr::new("f1"),
        r,
        OsStr::new("g1"),
        RenameFlags::empty(),
    )
    .expect("rename f1 g1");
    let (d, _) = ov.lookup(&root, OsStr::new("d"), true).expect("lookup d");
    let di = INodeNo(d.ino);
    ov.do_rename(
        di,
        OsStr::new("f2"),
        di,
        OsStr::new("g2"),
        RenameFlags::empty(),
    )
    .expect("rename d/f2 d/g2");
    let (root_before, d_before) = (names(&ov, &root), names(&ov, &d));
    assert_eq!(ov.listing_count(), 2);

    // Not while a request holds the namespace lock.
    let busy = ov.read_ns();
    assert_eq!(ov.shedder().shed().listings, 0, "shed under a request");
    drop(busy);
    let shed = ov.shedder().shed();
    assert_eq!(shed.listings, 2, "the root's and d's listings are dropped");
    assert_eq!(ov.listing_count(), 0);

    assert_eq!(names(&ov, &root), root_before, "the root read again");
    assert_eq!(names(&ov, &d), d_before, "d read again");
    assert!(!exists(&ov, &root, "f0") && !exists(&ov, &root, "f1"));
    assert!(exists(&ov, &root, "g1") && exists(&ov, &d, "g2"));
    // Names over the whiteouts the dropped listings knew of: the whiteouts are found
    // again and replaced.
    ov.shedder().shed();
    ov.do_rename(
        r,
        OsStr::new("g1"),
        r,
        OsStr::new("f0"),
        RenameFlags::empty(),
    )
    .expect("rename g1 over the whiteout f0");
    ov.shedder().shed();
    ov.do_rename(
        r,
        OsStr::new("f0"),
        r,
        OsStr::new("f1"),
        RenameFlags::empty(),
    )
    .expect("rename f0 over the whiteout f1");
    assert!(exists(&ov, &root, "f1") && !exists(&ov, &root, "f0"));
    let upper_f1 = fs::read(dir.path().join("u/f1")).expect("the upper f1 is the file");
    assert_eq!(upper_f1, b"x");
}

#[test]
fn shedding_while_requests_run_loses_none_of_their_changes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (workers, each) = (4, 50);
    let ov = overlay(dir.path(), workers * each);
    let root = ov.node(INodeNo(ROOT)).expect("root");
    let r = INodeNo(ROOT);
    let done = AtomicBool::new(false);
    // The shedder is running before the first request starts.
    let start = std::sync::Barrier::new(workers + 1);
    let mut sheds = 0;
    std::thread::scope(|s| {
        let work: Vec<_> = (0..workers)
            .map(|w| {
                let (ov, root, start) = (&ov, &root, &start);
                s.spawn(move || {
                    start.wait();
                    for i in w * each..(w + 1) * each {
                        let (f, g) = (format!("f{i}"), format!("g{i}"));
                        ov.do_rename(r, OsStr::new(&f), r, OsStr::new(&g), RenameFlags::empty())
                            .expect("rename");
                        assert!(!exists(ov, root, &f), "{f} still there after its rename");
                        assert!(exists(ov, root, &g), "{g} missing after the rename");
                        if i % 2 == 0 {
                            ov.do_unlink(r, OsStr::new(&g), false).expect("unlink");
                            assert!(!exists(ov, root, &g), "{g} still there after unlink");
                        }
                    }
                })
            })
            .collect();
        let shedder = ov.shedder();
        let (stop, start) = (&done, &start);
        let shedding = s.spawn(move || {
            start.wait();
            let mut n = 0;
            loop {
                n += shedder.shed().listings;
                if stop.load(Ordering::SeqCst) {
                    return n;
                }
            }
        });
        for w in work {
            w.join().expect("worker");
        }
        done.store(true, Ordering::SeqCst);
        sheds = shedding.join().expect("shedder");
    });
    // How often the shedder found the server between requests varies with scheduling.
    eprintln!("listings shed while the requests ran: {sheds}");
    let want: Vec<(OsString, usize, u8)> = (0..workers * each)
        .filter(|i| i % 2 == 1)
        .map(|i| (OsString::from(format!("g{i}")), 0, libc::DT_REG))
        .chain(std::iter::once((OsString::from("d"), 1, libc::DT_DIR)))
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert_eq!(
        names(&ov, &root),
        want,
        "the root after the renames and unlinks"
    );
    ov.shedder().shed();
    assert_eq!(
        names(&ov, &root),
        want,
        "the root read again from the layers"
    );
}
