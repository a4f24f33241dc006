//! The daemon's volume operations: `volume create|ls|inspect|rm|prune`, the volumes a
//! container's mounts need at create, their spec mounts at start, and the anonymous ones
//! removed with their container.

use std::collections::BTreeMap;
use std::path::Path;

use oci_spec::runtime::Mount;

use super::events::Event;
use super::mounts::{self, Kind, Planned};
use super::volumes::{inspect_json, VolumeFilters, VolumeMeta};
use super::{Daemon, Error, Record};

/// Bytes used by the regular files below `dir` (best effort: unreadable parts count 0).
pub(crate) fn disk_usage(dir: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    let mut total = 0;
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let Ok(md) = e.metadata() else { continue };
            if md.is_dir() {
                stack.push(e.path());
            } else {
                total += md.blocks() * 512;
            }
        }
    }
    total
}

impl Daemon {
    fn volume_event(&self, action: &str, name: &str) {
        self.emit(Event::new(
            "volume",
            action,
            name,
            &[("driver", "local".into())],
        ));
    }

    /// The names of the containers whose mounts use volume `name`.
    pub fn volume_users(&self, name: &str) -> Vec<String> {
        self.lock()
            .values()
            .map(|c| c.snapshot())
            .filter(|r| {
                r.mounts
                    .iter()
                    .any(|m| m.kind == Kind::Volume && m.source == name)
            })
            .map(|r| r.name)
            .collect()
    }

    /// Creates a volume (a random name when `name` is empty); an existing one is returned
    /// unchanged, as docker does.
    pub fn create_volume(
        &self,
        name: &str,
        labels: BTreeMap<String, String>,
    ) -> Result<VolumeMeta, Error> {
        let name = if name.is_empty() {
            super::names::new_id().map_err(|e| Error::Internal(format!("random name: {e}")))?
        } else {
            name.to_string()
        };
        for k in labels.keys() {
            if k.is_empty() {
                return Err(Error::InvalidArgument(
                    "a volume label needs a key: use KEY=VALUE".into(),
                ));
            }
        }
        let store = &self.inner.volumes;
        let (meta, new) = {
            let _g = store.guard();
            store.create(&name, labels, false)?
        };
        if new {
            self.volume_event("create", &name);
        }
        Ok(meta)
    }

    /// docker's `volume inspect` JSON of one volume.
    pub fn inspect_volume(&self, name: &str) -> Result<serde_json::Value, Error> {
        let meta = self.inner.volumes.get(name)?;
        Ok(inspect_json(&meta, &self.inner.volumes.data_dir(name)))
    }

    /// The volumes `filters` select, as inspect JSON, by name.
    pub fn list_volumes(&self, filters: &[String]) -> Result<Vec<serde_json::Value>, Error> {
        let f = VolumeFilters::parse(filters, false)?;
        Ok(self
            .inner
            .volumes
            .list()
            .into_iter()
            .filter(|m| f.matches(m, !self.volume_users(&m.name).is_empty()))
            .map(|m| inspect_json(&m, &self.inner.volumes.data_dir(&m.name)))
            .collect())
    }

    /// Removes a volume no container uses (`VolumeInUse` otherwise, naming them);
    /// `force` only makes a missing volume no error, as docker's `volume rm -f`.
    pub async fn remove_volume(&self, name: &str, force: bool) -> Result<(), Error> {
        let doomed = {
            let _g = self.inner.volumes.guard();
            match self.inner.volumes.get(name) {
                Err(Error::NoSuchVolume(_)) if force => return Ok(()),
                Err(e) => return Err(e),
                Ok(_) => {}
            }
            let users = self.volume_users(name);
            if !users.is_empty() {
                return Err(Error::VolumeInUse(format!(
                    "remove {name}: volume is in use by container(s) {}: remove them first \
                     (skiff rm), then the volume",
                    users.join(", ")
                )));
            }
            self.inner.volumes.detach(name)?
        };
        self.remove_tree(&doomed).await;
        self.volume_event("destroy", name);
        Ok(())
    }

    /// Removes the volumes no container uses that `filters` select: anonymous ones only
    /// unless `all=true` (docker 23's rule). Returns their names and the bytes freed.
    pub async fn prune_volumes(&self, filters: &[String]) -> Result<(Vec<String>, u64), Error> {
        let f = VolumeFilters::parse(filters, true)?;
        let mut doomed = Vec::new();
        {
            let _g = self.inner.volumes.guard();
            for m in self.inner.volumes.list() {
                if (m.anonymous || f.all)
                    && f.matches(&m, false)
                    && self.volume_users(&m.name).is_empty()
                {
                    let size = disk_usage(&self.inner.volumes.data_dir(&m.name));
                    let path = self.inner.volumes.detach(&m.name)?;
                    doomed.push((m.name, path, size));
                }
            }
        }
        let mut names = Vec::new();
        let mut freed = 0;
        for (name, path, size) in doomed {
            self.remove_tree(&path).await;
            self.volume_event("destroy", &name);
            names.push(name);
            freed += size;
        }
        Ok((names, freed))
    }

    /// At create: names the anonymous volumes and creates every volume the mounts need
    /// (a named volume that does not exist yet is created, as docker does).
    pub(crate) fn prepare_volumes(&self, planned: &mut [Planned]) -> Result<(), Error> {
        let store = &self.inner.volumes;
        for p in planned.iter_mut().filter(|p| p.kind == Kind::Volume) {
            if p.anonymous && p.source.is_empty() {
                p.source = super::names::new_id()
                    .map_err(|e| Error::Internal(format!("random name: {e}")))?;
            }
            let (_, new) = {
                let _g = store.guard();
                store.create(&p.source, BTreeMap::new(), p.anonymous)?
            };
            if new {
                self.volume_event("create", &p.source);
            }
        }
        Ok(())
    }

    /// The spec mounts of a container's planned mounts. A volume not seeded yet is given
    /// the copy-up option (unless nocopy); it is recorded as seeded once the container
    /// started ([`Daemon::mark_volumes_seeded`]), i.e. after its mounts and copies.
    pub(crate) fn volume_spec_mounts(&self, rec: &Record) -> Result<Vec<Mount>, Error> {
        let store = &self.inner.volumes;
        let mut out = Vec::new();
        for p in &rec.mounts {
            if p.kind != Kind::Volume {
                out.push(mounts::oci_mount(p, None, false)?);
                continue;
            }
            let meta = match store.get(&p.source) {
                Ok(m) => m,
                // Removed meanwhile (e.g. by hand): made again, as docker does.
                Err(Error::NoSuchVolume(_)) => {
                    let _g = store.guard();
                    store.create(&p.source, BTreeMap::new(), p.anonymous)?.0
                }
                Err(e) => return Err(e),
            };
            let copy_up = !meta.seeded && !p.nocopy;
            out.push(mounts::oci_mount(
                p,
                Some(&store.data_dir(&p.source)),
                copy_up,
            )?);
        }
        Ok(out)
    }

    /// Records the volumes of a container that started as seeded: its runtime mounted
    /// them and made their copy-up, so no later container copies into them. A start
    /// that failed before (a mount that failed, a copy that failed and was undone)
    /// leaves them to be seeded by the next start.
    pub(crate) fn mark_volumes_seeded(&self, rec: &Record) {
        let store = &self.inner.volumes;
        for p in rec.mounts.iter().filter(|p| p.kind == Kind::Volume) {
            if let Err(e) = store.mark_seeded(&p.source) {
                tracing::warn!("recording volume {} as seeded: {e}", p.source);
            }
        }
    }

    /// Removes the anonymous volumes of a removed container (`rm -v`, `--rm`) that no
    /// other container uses.
    pub(crate) async fn remove_anonymous_volumes(&self, rec: &Record) {
        for p in rec
            .mounts
            .iter()
            .filter(|p| p.kind == Kind::Volume && p.anonymous)
        {
            match self.remove_volume(&p.source, true).await {
                Ok(()) => {}
                Err(Error::VolumeInUse(_)) => {}
                Err(e) => tracing::warn!("removing volume {}: {e}", p.source),
            }
        }
    }

    /// `.Mounts` of inspect for a record.
    pub(crate) fn inspect_mounts(&self, rec: &Record) -> serde_json::Value {
        mounts::inspect_mounts(&rec.mounts, |n| self.inner.volumes.data_dir(n))
    }

    /// Collects leftovers of interrupted volume creations and removals.
    pub(crate) fn collect_volume_leftovers(&self) {
        let leftovers = self.inner.volumes.leftovers();
        if leftovers.is_empty() {
            return;
        }
        let daemon = self.clone();
        tokio::spawn(async move {
            for p in leftovers {
                tracing::info!("collecting leftover {}", p.display());
                daemon.remove_tree(&p).await;
            }
        });
    }
}
