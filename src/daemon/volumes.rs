//! Named and anonymous volumes: `$XDG_DATA_HOME/skiff/volumes/NAME/` holds `volume.json`
//! (written atomically) and `_data`, the directory containers mount. `_data` is created
//! by the daemon, i.e. owned by the user, which is root in the containers' user namespace:
//! the container's root owns a new volume, as with docker.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::mounts::{bad_volume_name, valid_volume_name};
use super::Error;
use crate::fsutil;
use crate::timefmt::{now_us, rfc3339};

/// What `volume.json` holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VolumeMeta {
    /// The name.
    pub name: String,
    /// Creation time, µs since the epoch.
    pub created: u64,
    /// Labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Made for one container (`-v /path`, an image's VOLUME).
    #[serde(default)]
    pub anonymous: bool,
    /// The image's content was copied in (or the volume was used with nocopy): no
    /// copy-up any more.
    #[serde(default)]
    pub seeded: bool,
}

/// The volume directory.
pub struct VolumeStore {
    root: PathBuf,
    lock: std::sync::Mutex<()>,
}

fn meta_path(dir: &Path) -> PathBuf {
    dir.join("volume.json")
}

impl VolumeStore {
    /// Opens (creating) the store at `root`.
    pub fn open(root: &Path) -> Result<VolumeStore, Error> {
        fsutil::ensure_private_dir(root).map_err(|e| Error::io(root, e))?;
        Ok(VolumeStore {
            root: root.to_path_buf(),
            lock: std::sync::Mutex::new(()),
        })
    }

    /// Serialises creations and removals.
    pub fn guard(&self) -> std::sync::MutexGuard<'_, ()> {
        match self.lock.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The directory containers mount for volume `name`.
    pub fn data_dir(&self, name: &str) -> PathBuf {
        self.root.join(name).join("_data")
    }

    /// The store's root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// A volume's metadata.
    pub fn get(&self, name: &str) -> Result<VolumeMeta, Error> {
        if !valid_volume_name(name) {
            return Err(Error::NoSuchVolume(name.into()));
        }
        let path = meta_path(&self.root.join(name));
        let data = match std::fs::read(&path) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NoSuchVolume(name.into()))
            }
            Err(e) => return Err(Error::io(&path, e)),
        };
        serde_json::from_slice(&data)
            .map_err(|e| Error::Corrupt(format!("{}: {e}", path.display())))
    }

    /// Every volume, by name; corrupt ones are logged and skipped.
    pub fn list(&self) -> Vec<VolumeMeta> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        let mut out: Vec<VolumeMeta> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    return None;
                }
                match self.get(&name) {
                    Ok(m) => Some(m),
                    Err(err) => {
                        tracing::warn!("skipping volume {name}: {err}");
                        None
                    }
                }
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Creates a volume; an existing one of that name is returned as it is (docker).
    /// The caller holds [`VolumeStore::guard`].
    pub fn create(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
        anonymous: bool,
    ) -> Result<(VolumeMeta, bool), Error> {
        if !valid_volume_name(name) {
            return Err(Error::InvalidArgument(format!(
                "create {name}: {}",
                bad_volume_name(name)
            )));
        }
        match self.get(name) {
            Ok(m) => return Ok((m, false)),
            Err(Error::NoSuchVolume(_)) => {}
            Err(e) => return Err(e),
        }
        let meta = VolumeMeta {
            name: name.into(),
            created: now_us(),
            labels,
            anonymous,
            seeded: false,
        };
        // Complete under a temporary name, then renamed into place.
        let tmp = self.root.join(format!(".tmp-{name}"));
        let _ = std::fs::remove_dir_all(&tmp);
        fsutil::ensure_private_dir(&tmp).map_err(|e| Error::io(&tmp, e))?;
        let data = tmp.join("_data");
        std::fs::create_dir(&data).map_err(|e| Error::io(&data, e))?;
        std::fs::set_permissions(&data, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .map_err(|e| Error::io(&data, e))?;
        let mp = meta_path(&tmp);
        fsutil::atomic_write_json(&mp, &meta).map_err(|e| Error::io(&mp, e))?;
        let dir = self.root.join(name);
        std::fs::rename(&tmp, &dir).map_err(|e| Error::io(&dir, e))?;
        fsutil::sync_dir(&self.root).map_err(|e| Error::io(&self.root, e))?;
        Ok((meta, true))
    }

    /// Marks a volume as seeded (no copy-up any more).
    pub fn mark_seeded(&self, name: &str) -> Result<(), Error> {
        let _g = self.guard();
        let mut meta = self.get(name)?;
        if meta.seeded {
            return Ok(());
        }
        meta.seeded = true;
        let mp = meta_path(&self.root.join(name));
        fsutil::atomic_write_json(&mp, &meta).map_err(|e| Error::io(&mp, e))
    }

    /// Takes a volume out of the store (renamed to `.rm-NAME`, collected later or by the
    /// caller); returns the path to remove. The caller holds the guard and checked use.
    pub fn detach(&self, name: &str) -> Result<PathBuf, Error> {
        self.get(name)?;
        let doomed = self.root.join(format!(".rm-{name}-{}", now_us()));
        let dir = self.root.join(name);
        std::fs::rename(&dir, &doomed).map_err(|e| Error::io(&dir, e))?;
        let _ = fsutil::sync_dir(&self.root);
        Ok(doomed)
    }

    /// Leftovers of interrupted creations and removals.
    pub fn leftovers(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.root)
            .map(|rd| {
                rd.flatten()
                    .filter(|e| {
                        let n = e.file_name().to_string_lossy().into_owned();
                        n.starts_with(".tmp-") || n.starts_with(".rm-")
                    })
                    .map(|e| e.path())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// docker's `volume inspect` object.
pub fn inspect_json(meta: &VolumeMeta, mountpoint: &Path) -> serde_json::Value {
    serde_json::json!({
        "Name": meta.name,
        "Driver": "local",
        "Mountpoint": mountpoint.display().to_string(),
        "CreatedAt": rfc3339(meta.created),
        "Labels": meta.labels,
        "Scope": "local",
        "Options": {},
        "Anonymous": meta.anonymous,
    })
}

/// docker's volume filters: `name=` (substring), `label=KEY[=VALUE]`, `label!=KEY[=VALUE]`,
/// `dangling=true|false`, `driver=local`; for prune also `all=true`.
#[derive(Debug, Default)]
pub struct VolumeFilters {
    name: Vec<String>,
    label: Vec<(String, Option<String>)>,
    not_label: Vec<(String, Option<String>)>,
    dangling: Option<bool>,
    driver: Vec<String>,
    /// `all=true`: prune named volumes too.
    pub all: bool,
}

impl VolumeFilters {
    /// Parses `KEY=VALUE` filters; `prune` allows `all` and not `name`/`dangling`.
    pub fn parse(items: &[String], prune: bool) -> Result<VolumeFilters, Error> {
        let mut f = VolumeFilters::default();
        let split = |v: &str| match v.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (v.to_string(), None),
        };
        for item in items {
            let bad = || {
                Error::InvalidArgument(format!(
                    "invalid filter {item:?}: use {}",
                    if prune {
                        "label=KEY[=VALUE], label!=KEY[=VALUE] or all=true"
                    } else {
                        "name=, label=KEY[=VALUE], label!=KEY[=VALUE], dangling=true|false or driver=local"
                    }
                ))
            };
            if let Some(v) = item.strip_prefix("label!=") {
                f.not_label.push(split(v));
                continue;
            }
            let (k, v) = item.split_once('=').ok_or_else(bad)?;
            match (k, prune) {
                ("label", _) => f.label.push(split(v)),
                ("name", false) => f.name.push(v.into()),
                ("driver", false) => f.driver.push(v.into()),
                ("dangling", false) => {
                    f.dangling = Some(match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    })
                }
                ("all", true) => {
                    f.all = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad()),
                    }
                }
                _ => return Err(bad()),
            }
        }
        Ok(f)
    }

    /// Whether `meta` (in use or not) passes.
    pub fn matches(&self, meta: &VolumeMeta, in_use: bool) -> bool {
        let has = |(k, v): &(String, Option<String>)| match (meta.labels.get(k), v) {
            (Some(_), None) => true,
            (Some(a), Some(b)) => a == b,
            (None, _) => false,
        };
        (self.name.is_empty() || self.name.iter().any(|n| meta.name.contains(n.as_str())))
            && self.label.iter().all(has)
            && !self.not_label.iter().any(has)
            && self.dangling.is_none_or(|d| d != in_use)
            && (self.driver.is_empty() || self.driver.iter().any(|d| d == "local"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_get_detach() {
        let dir = tempfile::tempdir().unwrap();
        let store = VolumeStore::open(&dir.path().join("volumes")).unwrap();
        let (m, new) = store.create("v1", BTreeMap::new(), false).unwrap();
        assert!(new && !m.seeded);
        assert!(store.data_dir("v1").is_dir());
        let (_, new) = store.create("v1", BTreeMap::new(), false).unwrap();
        assert!(!new);
        store.mark_seeded("v1").unwrap();
        assert!(store.get("v1").unwrap().seeded);
        assert_eq!(store.list().len(), 1);
        assert!(store.create("../x", BTreeMap::new(), false).is_err());
        let doomed = store.detach("v1").unwrap();
        assert!(matches!(store.get("v1"), Err(Error::NoSuchVolume(_))));
        assert_eq!(store.leftovers(), vec![doomed]);
    }

    #[test]
    fn filters() {
        let meta = VolumeMeta {
            name: "pgdata".into(),
            created: 0,
            labels: [("env".to_string(), "prod".to_string())].into(),
            anonymous: false,
            seeded: false,
        };
        let f = |v: &[&str]| {
            VolumeFilters::parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>(), false)
                .unwrap()
        };
        assert!(f(&["label=env=prod", "name=pg"]).matches(&meta, false));
        assert!(!f(&["label=env=dev"]).matches(&meta, false));
        assert!(!f(&["label!=env"]).matches(&meta, false));
        assert!(!f(&["dangling=true"]).matches(&meta, true));
        assert!(VolumeFilters::parse(&["all=true".into()], false).is_err());
        assert!(
            VolumeFilters::parse(&["all=true".into()], true)
                .unwrap()
                .all
        );
    }
}
