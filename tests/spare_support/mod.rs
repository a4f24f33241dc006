//! Shared by the spare tests (e2e_spare, e2e_spare_refill): whether the spare container
//! directory and the spare bundle are there, complete.
#![allow(dead_code)]

use super::common::{entries, Env};

/// Whether all the files of a spare bundle are there (it is being made otherwise; the
/// exit file's made ahead is the last).
pub fn inodes_ready(dir: &std::path::Path) -> bool {
    std::iter::once(&".next-exit.json")
        .chain(BUNDLE_FILES)
        .all(|n| dir.join(n).exists())
}

/// The files of a bundle whose inodes are made ahead.
pub const BUNDLE_FILES: &[&str] = &[
    "config.json",
    "monitor.json",
    "hosts",
    "hostname",
    "monitor.lock",
];

/// Whether the one spare container directory is there, complete: its last file (the
/// second record file made ahead) is there. (A create that finds it still being made
/// makes its own directory; the spares are made anew once its client has its answer:
/// then a `--rm` run's bundle may not be kept.)
pub fn spare_dir_ready(env: &Env) -> bool {
    let spare = env.data().join("spare");
    let e = entries(&spare);
    e.len() == 1 && spare.join(&e[0]).join(".next2-container.json").exists()
}

/// Whether the removals of the `--rm` runs so far are done: a removal that ends after
/// the next run took the spare bundle gives its own bundle back in its place.
pub fn removals_done(env: &Env) -> bool {
    entries(&env.data().join("containers")).is_empty()
}

/// The one spare bundle, once it is there with all its files.
pub fn the_spare_bundle(env: &Env) -> std::path::PathBuf {
    let spare = env.runtime().join("spare");
    assert!(
        env.eventually(10, || {
            let e = entries(&spare);
            e.len() == 1 && inodes_ready(&spare.join(&e[0]))
        }),
        "no spare bundle: {:?}",
        entries(&spare)
    );
    spare.join(&entries(&spare)[0])
}
