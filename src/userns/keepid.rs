//! `--userns keep-id`: the user's own uid and gid appear inside the container as the same
//! numbers, root inside is a subordinate id (podman's mapping: container ids `0..U`
//! are the first `U` subordinate ids, `U` is the user, `U+1..` the rest).
//!
//! The image's layers and every container's upper directory keep the ownership of the
//! default mapping (container 0 is the user, 1.. the subordinate ids), so a keep-id
//! container must see them through an [`IdRemap`]: skiff's FUSE overlay translates the
//! owners in its replies and in the changes it makes, and nothing is copied or chowned.

use serde::{Deserialize, Serialize};

use super::{IdMapEntry, IdMaps};

/// The overflow id shown for an owner that has no id in the other mapping.
const OVERFLOW_ID: u32 = 65534;

/// The host ids of a map's subordinate part (container ids 1..), in container id order.
fn subordinate(map: &[IdMapEntry]) -> Vec<IdMapEntry> {
    let mut subs: Vec<IdMapEntry> = map
        .iter()
        .filter(|e| e.container_id >= 1)
        .cloned()
        .collect();
    subs.sort_by_key(|e| e.container_id);
    subs
}

/// Takes `count` ids from the flattened `subs` starting at `skip`, giving them container
/// ids from `first` on.
fn take(subs: &[IdMapEntry], mut skip: u64, count: u64, first: u32) -> Vec<IdMapEntry> {
    let mut out = Vec::new();
    let mut left = count;
    let mut next = u64::from(first);
    for e in subs {
        if left == 0 {
            break;
        }
        let size = u64::from(e.size);
        if skip >= size {
            skip -= size;
            continue;
        }
        let n = (size - skip).min(left);
        // All values fit: they come from u32 entries and count ids of them.
        out.push(IdMapEntry {
            container_id: next as u32,
            host_id: (u64::from(e.host_id) + skip) as u32,
            size: n as u32,
        });
        next += n;
        left -= n;
        skip = 0;
    }
    out
}

fn keep_one(default: &[IdMapEntry], own: u32) -> Result<Vec<IdMapEntry>, String> {
    let subs = subordinate(default);
    let total: u64 = subs.iter().map(|e| u64::from(e.size)).sum();
    if total < u64::from(own) {
        return Err(format!(
            "--userns keep-id needs at least {own} subordinate ids to place your id {own} \
             (you have {total}): add a range of 65536 to /etc/subuid and /etc/subgid"
        ));
    }
    let host_own = default
        .iter()
        .find(|e| e.container_id == 0)
        .map(|e| e.host_id)
        .ok_or("the default map has no container id 0")?;
    let mut map = take(&subs, 0, u64::from(own), 0);
    map.push(IdMapEntry {
        container_id: own,
        host_id: host_own,
        size: 1,
    });
    map.extend(take(
        &subs,
        u64::from(own),
        total - u64::from(own),
        own.saturating_add(1),
    ));
    Ok(map)
}

/// The keep-id maps derived from the `default` maps (whose container id 0 is the user,
/// host `uid`/`gid`): the user's ids map to themselves.
pub fn keep_id_maps(default: &IdMaps, uid: u32, gid: u32) -> Result<IdMaps, String> {
    Ok(IdMaps {
        uid: keep_one(&default.uid, uid)?,
        gid: keep_one(&default.gid, gid)?,
    })
}

fn to_host(map: &[IdMapEntry], id: u32) -> Option<u32> {
    map.iter().find_map(|e| e.to_host(id))
}

fn to_container(map: &[IdMapEntry], host: u32) -> Option<u32> {
    map.iter().find_map(|e| {
        let off = host.checked_sub(e.host_id)?;
        (off < e.size).then(|| e.container_id + off)
    })
}

/// Translates owners between a container's own mapping (`inner`, the one its processes
/// and the FUSE server live in) and the mapping the files on disk were written with
/// (`disk`, the default).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRemap {
    /// The mapping the files' owners are meant in (the daemon's default).
    pub disk: IdMaps,
    /// The container's mapping.
    pub inner: IdMaps,
}

impl IdRemap {
    /// The owner to show for a file whose owner the server sees as `uid`/`gid`: the id
    /// the file has in the default mapping (the overflow id when it has none).
    pub fn present(&self, uid: u32, gid: u32) -> (u32, u32) {
        let f = |inner: &[IdMapEntry], disk: &[IdMapEntry], id: u32| {
            to_host(inner, id)
                .and_then(|h| to_container(disk, h))
                .unwrap_or(OVERFLOW_ID)
        };
        (
            f(&self.inner.uid, &self.disk.uid, uid),
            f(&self.inner.gid, &self.disk.gid, gid),
        )
    }

    /// The owner the server must give a file so that it shows as `uid`/`gid`
    /// (`u32::MAX` = unchanged stays so); None when an id cannot be stored.
    pub fn store(&self, uid: u32, gid: u32) -> Option<(u32, u32)> {
        let f = |inner: &[IdMapEntry], disk: &[IdMapEntry], id: u32| {
            if id == u32::MAX {
                return Some(id);
            }
            to_host(disk, id).and_then(|h| to_container(inner, h))
        };
        Some((
            f(&self.inner.uid, &self.disk.uid, uid)?,
            f(&self.inner.gid, &self.disk.gid, gid)?,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn default() -> IdMaps {
        let m = vec![
            IdMapEntry {
                container_id: 0,
                host_id: 1001,
                size: 1,
            },
            IdMapEntry {
                container_id: 1,
                host_id: 100000,
                size: 65536,
            },
        ];
        IdMaps {
            uid: m.clone(),
            gid: m,
        }
    }

    #[test]
    fn podmans_keep_id_mapping() {
        let k = keep_id_maps(&default(), 1001, 1001).unwrap();
        assert_eq!(
            k.uid,
            vec![
                IdMapEntry {
                    container_id: 0,
                    host_id: 100000,
                    size: 1001
                },
                IdMapEntry {
                    container_id: 1001,
                    host_id: 1001,
                    size: 1
                },
                IdMapEntry {
                    container_id: 1002,
                    host_id: 101001,
                    size: 64535
                },
            ]
        );
        assert_eq!(k.container_uid_count(), default().container_uid_count());
        assert!(keep_id_maps(&default(), 70000, 1001).is_err());
    }

    #[test]
    fn remap_shows_the_default_owners_and_stores_them_back() {
        let inner = keep_id_maps(&default(), 1001, 1001).unwrap();
        let r = IdRemap {
            disk: default(),
            inner,
        };
        // Image root (host 1001) is seen as 1001 in keep-id: shown as 0.
        assert_eq!(r.present(1001, 1001), (0, 0));
        // Default container 1000 (host 100999) is seen as 999: shown as 1000.
        assert_eq!(r.present(999, 999), (1000, 1000));
        // Past the user's id both mappings agree: host 104999 is 5000 in each.
        assert_eq!(r.present(5000, 5000), (5000, 5000));
        for id in [0, 1, 999, 1000, 1001, 1002, 5000, 65536] {
            let (s, _) = r.store(id, id).unwrap();
            assert_eq!(r.present(s, s).0, id, "{id}");
        }
        assert_eq!(r.store(u32::MAX, 5).unwrap().0, u32::MAX);
        assert_eq!(r.store(70000, 0), None);
    }
}
