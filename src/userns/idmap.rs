//! Building the uid and gid maps of a rootless container.
//!
//! Container id 0 is always the user's own host id, so that root in the
//! container owns the user's files. The user's subordinate ranges follow,
//! laid end to end from container id 1.

use std::io;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::subid::{self, SubIdEntry, SubIdRange};
use super::Error;

/// The most lines the kernel accepts in a uid or gid map (since Linux 4.15).
pub const MAX_EXTENTS: usize = 340;

/// The size of the range suggested to users that have none, as `useradd`
/// gives by default.
const SUGGESTED_COUNT: u32 = 65536;

/// One line of a uid or gid map: container ids
/// `container_id..container_id + size` stand for host ids
/// `host_id..host_id + size`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMapEntry {
    /// First id inside the container.
    pub container_id: u32,
    /// First id on the host.
    pub host_id: u32,
    /// Number of ids mapped.
    pub size: u32,
}

impl IdMapEntry {
    /// The host id of `container_id` if this entry maps it.
    pub fn to_host(&self, container_id: u32) -> Option<u32> {
        // `id - c < size` rather than `id < c + size`: no overflow, no off-by-one.
        let offset = container_id.checked_sub(self.container_id)?;
        if offset < self.size {
            self.host_id.checked_add(offset)
        } else {
            None
        }
    }
}

/// The uid and gid maps of a container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdMaps {
    /// The uid map, in the order it is written.
    pub uid: Vec<IdMapEntry>,
    /// The gid map, in the order it is written.
    pub gid: Vec<IdMapEntry>,
}

/// Builds a map whose container id 0 is `own_id` and whose following
/// container ids, from 1 on, are the subordinate `ranges` laid end to end in
/// the given order.
///
/// The kernel rejects maps in which two lines share a host id, so host ids
/// already mapped are left out: a range that contains `own_id` (or overlaps
/// an earlier range) is used minus the overlapping ids, possibly as two
/// lines. Zero-sized ranges are ignored. The map stops growing when
/// container ids would pass `u32::MAX - 1` (`u32::MAX` is never a valid
/// id) or when it reaches the kernel's limit of [`MAX_EXTENTS`] lines.
pub fn build_map(own_id: u32, ranges: &[SubIdRange]) -> Vec<IdMapEntry> {
    let mut map = vec![IdMapEntry {
        container_id: 0,
        host_id: own_id,
        size: 1,
    }];
    // Host ids in use, as half-open u64 intervals so that ends never overflow.
    let mut used: Vec<(u64, u64)> = vec![(u64::from(own_id), u64::from(own_id) + 1)];
    let limit = u64::from(u32::MAX);
    let mut next: u64 = 1;
    for range in ranges {
        let start = u64::from(range.start);
        let end = (start + u64::from(range.count)).min(limit);
        for (piece_start, piece_end) in subtract((start, end), &used) {
            if next >= limit || map.len() >= MAX_EXTENTS {
                return map;
            }
            let size = (piece_end - piece_start).min(limit - next);
            // All three values are below u32::MAX by construction.
            let (Ok(container_id), Ok(host_id), Ok(size)) = (
                u32::try_from(next),
                u32::try_from(piece_start),
                u32::try_from(size),
            ) else {
                return map;
            };
            map.push(IdMapEntry {
                container_id,
                host_id,
                size,
            });
            used.push((piece_start, piece_start + u64::from(size)));
            next += u64::from(size);
        }
    }
    map
}

/// The parts of `range` not covered by any interval of `used`, in order.
fn subtract(range: (u64, u64), used: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut pieces = vec![range];
    for &(used_start, used_end) in used {
        pieces = pieces
            .into_iter()
            .flat_map(|(start, end)| {
                let before = (start, end.min(used_start));
                let after = (start.max(used_end), end);
                [before, after]
            })
            .filter(|(start, end)| start < end)
            .collect();
    }
    pieces.sort_unstable();
    pieces
}

impl IdMaps {
    /// Maps with a single id each: container uid 0 is `uid` and container
    /// gid 0 is `gid`. This is what a user without subordinate ids gets.
    pub fn single(uid: u32, gid: u32) -> IdMaps {
        IdMaps {
            uid: build_map(uid, &[]),
            gid: build_map(gid, &[]),
        }
    }

    /// The maps for the user running this process, from `/etc/subuid` and
    /// `/etc/subgid`, plus human-readable warnings (see [`IdMaps::from_files`]).
    pub fn for_current_user() -> Result<(IdMaps, Vec<String>), Error> {
        let uid = nix::unistd::getuid();
        let gid = nix::unistd::getgid();
        let user = match nix::unistd::User::from_uid(uid) {
            Ok(Some(user)) => user.name,
            Ok(None) => {
                // No passwd entry (e.g. inside another container): numeric
                // owners in the files can still match.
                tracing::debug!(uid = uid.as_raw(), "no passwd entry, using the numeric uid");
                uid.as_raw().to_string()
            }
            Err(source) => {
                return Err(Error::UserLookup {
                    uid: uid.as_raw(),
                    source,
                })
            }
        };
        IdMaps::from_files(
            Path::new("/etc/subuid"),
            Path::new("/etc/subgid"),
            &user,
            uid.as_raw(),
            gid.as_raw(),
        )
    }

    /// The maps for user `user` (uid `uid`, primary gid `gid`) from the given
    /// subordinate uid and gid files, plus human-readable warnings.
    ///
    /// A missing file counts as empty. Both files are keyed by the *user*
    /// (name or uid), as `newgidmap` checks them. When the user has no uid
    /// range, or no gid range, that map falls back to the single id
    /// `0 -> uid` (or `0 -> gid`) and a warning says how to add a range.
    pub fn from_files(
        subuid: &Path,
        subgid: &Path,
        user: &str,
        uid: u32,
        gid: u32,
    ) -> Result<(IdMaps, Vec<String>), Error> {
        let uid_entries = read_entries(subuid)?;
        let gid_entries = read_entries(subgid)?;
        let uid_ranges = subid::ranges_for(&uid_entries, user, uid);
        let gid_ranges = subid::ranges_for(&gid_entries, user, uid);
        let maps = IdMaps {
            uid: build_map(uid, &uid_ranges),
            gid: build_map(gid, &gid_ranges),
        };
        tracing::debug!(user, uid, gid, ?maps, "built id maps");

        let mut warnings = Vec::new();
        let (first, last) = suggest_range(&uid_entries, &gid_entries);
        let (subuid, subgid) = (subuid.display(), subgid.display());
        let effect = "(files owned by other ids in images cannot be used)";
        match (uid_ranges.is_empty(), gid_ranges.is_empty()) {
            (true, true) => warnings.push(format!(
                "no subordinate uid or gid range for user {user:?} in {subuid} and {subgid}: \
                 containers get a single uid and gid {effect}; add them with: \
                 sudo usermod --add-subuids {first}-{last} --add-subgids {first}-{last} {user}"
            )),
            (true, false) => warnings.push(format!(
                "no subordinate uid range for user {user:?} in {subuid}: containers get a \
                 single uid {effect}; add one with: sudo usermod --add-subuids {first}-{last} {user}"
            )),
            (false, true) => warnings.push(format!(
                "no subordinate gid range for user {user:?} in {subgid}: containers get a \
                 single gid {effect}; add one with: sudo usermod --add-subgids {first}-{last} {user}"
            )),
            (false, false) => {}
        }
        Ok((maps, warnings))
    }

    /// The number of container uids mapped.
    pub fn container_uid_count(&self) -> u64 {
        self.uid.iter().map(|entry| u64::from(entry.size)).sum()
    }

    /// The number of container gids mapped.
    pub fn container_gid_count(&self) -> u64 {
        self.gid.iter().map(|entry| u64::from(entry.size)).sum()
    }

    /// The host uid that container uid `container_uid` stands for, or `None`
    /// if it is not mapped.
    pub fn to_host_uid(&self, container_uid: u32) -> Option<u32> {
        self.uid
            .iter()
            .find_map(|entry| entry.to_host(container_uid))
    }

    /// The host gid that container gid `container_gid` stands for, or `None`
    /// if it is not mapped.
    pub fn to_host_gid(&self, container_gid: u32) -> Option<u32> {
        self.gid
            .iter()
            .find_map(|entry| entry.to_host(container_gid))
    }

    /// Whether containers get only one uid (no subordinate uid range).
    pub fn single_uid(&self) -> bool {
        self.container_uid_count() <= 1
    }

    /// Whether containers get only one gid (no subordinate gid range).
    pub fn single_gid(&self) -> bool {
        self.container_gid_count() <= 1
    }
}

/// Reads and parses a subordinate id file; a missing file has no entries.
fn read_entries(path: &Path) -> Result<Vec<SubIdEntry>, Error> {
    match std::fs::read_to_string(path) {
        Ok(content) => subid::parse(&content, path),
        Err(err) if err.kind() == io::ErrorKind::NotFound => {
            tracing::debug!(path = %path.display(), "subordinate id file missing, treated as empty");
            Ok(Vec::new())
        }
        Err(source) => Err(Error::Read {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// A range of [`SUGGESTED_COUNT`] ids, as inclusive `(first, last)`, that no
/// entry of either file uses: the first such block at or after 100000.
fn suggest_range(uid_entries: &[SubIdEntry], gid_entries: &[SubIdEntry]) -> (u32, u32) {
    let count = u64::from(SUGGESTED_COUNT);
    let taken: Vec<(u64, u64)> = uid_entries
        .iter()
        .chain(gid_entries)
        .map(|e| (u64::from(e.start), u64::from(e.start) + u64::from(e.count)))
        .collect();
    let mut start: u64 = 100_000;
    while start + count < u64::from(u32::MAX) {
        match taken.iter().find(|&&(s, e)| s < start + count && start < e) {
            None => break,
            Some(&(_, end)) => start = end,
        }
    }
    if start + count >= u64::from(u32::MAX) {
        start = 100_000;
    }
    let first = u32::try_from(start).unwrap_or(100_000);
    (first, first.saturating_add(SUGGESTED_COUNT - 1))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn entry(container_id: u32, host_id: u32, size: u32) -> IdMapEntry {
        IdMapEntry {
            container_id,
            host_id,
            size,
        }
    }

    fn range(start: u32, count: u32) -> SubIdRange {
        SubIdRange { start, count }
    }

    #[test]
    fn build_map_without_ranges_is_single_id() {
        assert_eq!(build_map(1000, &[]), vec![entry(0, 1000, 1)]);
    }

    #[test]
    fn build_map_one_range() {
        assert_eq!(
            build_map(1000, &[range(100000, 65536)]),
            vec![entry(0, 1000, 1), entry(1, 100000, 65536)]
        );
    }

    #[test]
    fn build_map_several_ranges_are_consecutive() {
        assert_eq!(
            build_map(
                1000,
                &[range(100000, 10), range(500000, 5), range(200000, 3)]
            ),
            vec![
                entry(0, 1000, 1),
                entry(1, 100000, 10),
                entry(11, 500000, 5),
                entry(16, 200000, 3),
            ]
        );
    }

    #[test]
    fn build_map_splits_a_range_around_own_id() {
        assert_eq!(
            build_map(1005, &[range(1000, 10)]),
            vec![entry(0, 1005, 1), entry(1, 1000, 5), entry(6, 1006, 4)]
        );
        // An overlapping later range only adds its new ids.
        assert_eq!(
            build_map(1, &[range(100, 10), range(105, 10), range(100, 10)]),
            vec![entry(0, 1, 1), entry(1, 100, 10), entry(11, 110, 5)]
        );
    }

    #[test]
    fn build_map_caps_without_overflow() {
        let map = build_map(0, &[range(1, u32::MAX - 1), range(u32::MAX - 2, 1)]);
        assert_eq!(map, vec![entry(0, 0, 1), entry(1, 1, u32::MAX - 1)]);
        let end = u64::from(map[1].container_id) + u64::from(map[1].size);
        assert_eq!(end, u64::from(u32::MAX));
        // Ranges with invalid pub fields are clamped instead of overflowing.
        let map = build_map(0, &[range(u32::MAX, 10), range(10, 0)]);
        assert_eq!(map, vec![entry(0, 0, 1)]);
    }

    #[test]
    fn build_map_stops_at_kernel_extent_limit() {
        let ranges: Vec<SubIdRange> = (0..400).map(|i| range(100000 + i * 10, 5)).collect();
        let map = build_map(1000, &ranges);
        assert_eq!(map.len(), MAX_EXTENTS);
        assert_eq!(
            map[MAX_EXTENTS - 1],
            entry(1 + 5 * 338, 100000 + 338 * 10, 5)
        );
    }

    #[test]
    fn to_host_bounds() {
        let maps = IdMaps {
            uid: vec![entry(0, 1000, 1), entry(1, 100000, 65536)],
            gid: vec![entry(0, 1000, 1), entry(1, 200000, 10)],
        };
        assert_eq!(maps.to_host_uid(0), Some(1000));
        assert_eq!(maps.to_host_uid(1), Some(100000));
        assert_eq!(maps.to_host_uid(65536), Some(165535));
        assert_eq!(maps.to_host_uid(65537), None);
        assert_eq!(maps.to_host_uid(u32::MAX), None);
        assert_eq!(maps.to_host_gid(10), Some(200009));
        assert_eq!(maps.to_host_gid(11), None);
        assert_eq!(maps.container_uid_count(), 65537);
        assert_eq!(maps.container_gid_count(), 11);
        assert!(!maps.single_uid());
        assert!(IdMaps::single(1000, 1000).single_uid());
        assert!(IdMaps::single(1000, 1000).single_gid());
        // An entry reaching the top of the id space does not overflow.
        let top = entry(u32::MAX - 1, 5, 1);
        assert_eq!(top.to_host(u32::MAX - 1), Some(5));
        assert_eq!(top.to_host(u32::MAX), None);
    }

    fn write_files(subuid: &str, subgid: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("subuid"), subuid).unwrap();
        fs::write(dir.path().join("subgid"), subgid).unwrap();
        dir
    }

    fn load(dir: &tempfile::TempDir, user: &str, uid: u32, gid: u32) -> (IdMaps, Vec<String>) {
        IdMaps::from_files(
            &dir.path().join("subuid"),
            &dir.path().join("subgid"),
            user,
            uid,
            gid,
        )
        .unwrap()
    }

    #[test]
    fn from_files_with_both_ranges() {
        let dir = write_files("bob:100000:65536\n", "1000:300000:1000\n");
        let (maps, warnings) = load(&dir, "bob", 1000, 2000);
        assert!(warnings.is_empty(), "{warnings:?}");
        assert_eq!(maps.uid, vec![entry(0, 1000, 1), entry(1, 100000, 65536)]);
        assert_eq!(maps.gid, vec![entry(0, 2000, 1), entry(1, 300000, 1000)]);
    }

    #[test]
    fn from_files_uid_range_but_no_gid_range() {
        let dir = write_files("bob:100000:65536\n", "alice:100000:65536\n");
        let (maps, warnings) = load(&dir, "bob", 1000, 1000);
        assert_eq!(maps.uid.len(), 2);
        assert_eq!(maps.gid, vec![entry(0, 1000, 1)]);
        assert!(!maps.single_uid());
        assert!(maps.single_gid());
        assert_eq!(warnings.len(), 1);
        let warning = &warnings[0];
        assert!(
            warning.contains("no subordinate gid range for user \"bob\""),
            "{warning}"
        );
        assert!(warning.contains("subgid"), "{warning}");
        // The suggested range avoids the ranges already handed out.
        assert!(
            warning.contains("sudo usermod --add-subgids 165536-231071 bob"),
            "{warning}"
        );
        assert!(!warning.contains("--add-subuids"), "{warning}");
    }

    #[test]
    fn from_files_without_any_range_falls_back_and_warns() {
        let dir = write_files("alice:100000:65536\n", "");
        let (maps, warnings) = load(&dir, "bob", 1000, 1001);
        assert_eq!(maps, IdMaps::single(1000, 1001));
        assert_eq!(warnings.len(), 1);
        let warning = &warnings[0];
        assert!(warning.contains("single uid and gid"), "{warning}");
        assert!(
            warning.contains(
                "sudo usermod --add-subuids 165536-231071 --add-subgids 165536-231071 bob"
            ),
            "{warning}"
        );
    }

    #[test]
    fn from_files_missing_files_are_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (maps, warnings) = IdMaps::from_files(
            &dir.path().join("nope-uid"),
            &dir.path().join("nope-gid"),
            "bob",
            1000,
            1000,
        )
        .unwrap();
        assert_eq!(maps, IdMaps::single(1000, 1000));
        assert!(warnings[0].contains("usermod --add-subuids 100000-165535"));
    }

    #[test]
    fn from_files_gid_range_but_no_uid_range() {
        let dir = write_files("", "bob:100000:65536\n");
        let (maps, warnings) = load(&dir, "bob", 1000, 1000);
        assert!(maps.single_uid());
        assert_eq!(maps.container_gid_count(), 65537);
        assert!(
            warnings[0].contains("no subordinate uid range"),
            "{warnings:?}"
        );
        assert!(warnings[0].contains("--add-subuids 165536-231071 bob"));
    }

    #[test]
    fn from_files_reports_parse_and_read_errors() {
        let dir = write_files("bob:100000:65536\n", "bob:1:2\nbob:x:1\n");
        let err = IdMaps::from_files(
            &dir.path().join("subuid"),
            &dir.path().join("subgid"),
            "bob",
            1000,
            1000,
        )
        .unwrap_err();
        match &err {
            Error::Parse { path, line, .. } => {
                assert!(path.ends_with("subgid"));
                assert_eq!(*line, 2);
            }
            other => panic!("unexpected {other:?}"),
        }
        // A directory cannot be read as a file.
        let err = IdMaps::from_files(dir.path(), dir.path(), "bob", 1, 1).unwrap_err();
        assert!(matches!(err, Error::Read { .. }), "{err:?}");
    }
}
