//! The node table follows the kernel's references: nodes made by lookups that count
//! none (rename's, unlink's, a READDIRPLUS entry that did not fit) are dropped, nodes
//! the kernel looked up stay until it forgets them. On real layers (no mount needed:
//! the handlers' bodies are called as the event loops call them).

use std::ffi::OsStr;
use std::fs;
use std::path::Path;

use fuser::{FileHandle, INodeNo, RenameFlags};

use super::node::{Overlay, ROOT};

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

fn name(s: String) -> std::ffi::OsString {
    s.into()
}

#[test]
fn nodes_of_renames_and_unlinks_the_kernel_never_looked_up_are_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let n = 2000;
    let ov = overlay(dir.path(), n);
    let root = INodeNo(ROOT);
    for i in 0..n {
        // A lower file renamed (copy-up and whiteout), renamed again in the upper
        // layer, then unlinked: three lookups that count no kernel reference.
        let (f, g, h) = (
            name(format!("f{i}")),
            name(format!("g{i}")),
            name(format!("h{i}")),
        );
        ov.do_rename(root, &f, root, &g, RenameFlags::empty())
            .expect("rename f g");
        ov.do_rename(root, &g, root, &h, RenameFlags::empty())
            .expect("rename g h");
        ov.do_unlink(root, &h, false).expect("unlink h");
    }
    // Only the root and `d` are left in the merged root (as a name), and no node.
    assert_eq!(
        ov.node_count(),
        1,
        "nodes left after {n} rename+rename+unlink cycles"
    );
    // Nor the recorded numbers of the deleted copies.
    assert_eq!(ov.upper_ino_count(), 0, "upper inode numbers left recorded");
    assert!(!dir.path().join("u").join(format!("h{}", n - 1)).exists());
}

#[test]
fn nodes_the_kernel_looked_up_stay_until_it_forgets_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ov = overlay(dir.path(), 2);
    let root_node = ov.node(INodeNo(ROOT)).expect("root");
    let (kept, _) = ov
        .lookup(&root_node, OsStr::new("f0"), true)
        .expect("lookup");
    let root = INodeNo(ROOT);
    ov.do_rename(
        root,
        OsStr::new("f0"),
        root,
        OsStr::new("g0"),
        RenameFlags::empty(),
    )
    .expect("rename");
    // A rename over a name the kernel never looked up: that node goes, the source stays.
    ov.do_rename(
        root,
        OsStr::new("g0"),
        root,
        OsStr::new("f1"),
        RenameFlags::empty(),
    )
    .expect("rename over f1");
    assert_eq!(ov.node_count(), 2);
    let node = ov
        .node(INodeNo(kept.ino))
        .expect("the kernel's node is still known");
    assert_eq!(node.lock().name, "f1");
    ov.do_unlink(root, OsStr::new("f1"), false).expect("unlink");
    assert_eq!(
        ov.node_count(),
        2,
        "an unlinked node the kernel holds stays"
    );
    ov.forget(kept.ino, 1);
    assert_eq!(ov.node_count(), 1);
}

#[test]
fn a_readdirplus_entry_that_did_not_fit_is_not_kept() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ov = overlay(dir.path(), 10);
    let root_node = ov.node(INodeNo(ROOT)).expect("root");
    let (d, _) = ov
        .lookup(&root_node, OsStr::new("d"), true)
        .expect("lookup d");
    let dh = ov.snapshot_dir(INodeNo(d.ino)).expect("opendir");
    // A reply with room for `.`, `..` and three entries.
    let mut given = Vec::new();
    ov.readdirplus_entries(INodeNo(d.ino), FileHandle(dh), 0, |ino, _, name, _, _| {
        if given.len() == 5 {
            return true;
        }
        given.push((ino, name.to_os_string()));
        false
    })
    .expect("readdirplus");
    assert_eq!(given.len(), 5);
    // The root, `d` and the three entries the kernel got, each counted once.
    assert_eq!(ov.node_count(), 5);
    for (ino, name) in &given[2..] {
        let node = ov.node(*ino).expect("an entry given is known");
        assert_eq!(node.lock().nlookup, 1, "{name:?}");
    }
    // The rest of the listing: the entry that did not fit is given (and counted) now.
    let mut rest = 0;
    ov.readdirplus_entries(INodeNo(d.ino), FileHandle(dh), 5, |_, _, _, _, _| {
        rest += 1;
        false
    })
    .expect("readdirplus");
    assert_eq!(rest, 7);
    assert_eq!(ov.node_count(), 12);
}
