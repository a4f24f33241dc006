//! Volumes over D-Bus: the `org.skiff.skiff1.Volumes` interface at the manager's path
//! (create, list, remove, prune) and one `org.skiff.skiff1.Volume` object per volume at
//! `/org/skiff/skiff1/volume/<escaped name>`.

use std::collections::HashMap;

use zbus::{interface, ObjectServer, OwnedObjectPath};

use super::manager::Ctx;
use super::{check_flags, SkiffError, MANAGER_PATH};

/// Flag of `RemoveVolume`/`Volume.Remove`: a missing volume is no error (docker's `-f`).
pub const VOLUME_REMOVE_FORCE: u64 = 1;

/// The object path of a volume: its name with every byte other than `[A-Za-z0-9]`
/// written `_XX` (hex), as systemd escapes unit names.
pub fn volume_path(name: &str) -> String {
    let mut out = format!("{MANAGER_PATH}/volume/");
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() {
            out.push(b as char);
        } else {
            out.push_str(&format!("_{b:02x}"));
        }
    }
    out
}

fn path(name: &str) -> Result<OwnedObjectPath, SkiffError> {
    OwnedObjectPath::try_from(volume_path(name)).map_err(SkiffError::ZBus)
}

fn json(v: &impl serde::Serialize) -> Result<String, SkiffError> {
    serde_json::to_string_pretty(v).map_err(|e| SkiffError::Failed(e.to_string()))
}

/// The volumes interface on the manager's object.
pub struct Volumes {
    /// Shared context.
    pub ctx: Ctx,
}

/// Named and anonymous volumes.
#[interface(name = "org.skiff.skiff1.Volumes")]
impl Volumes {
    /// Creates a volume (`name` empty: a random one) with `labels`; an existing volume of
    /// that name is returned unchanged. Flags must be 0.
    #[zbus(out_args("name", "volume"))]
    async fn create_volume(
        &self,
        #[zbus(object_server)] server: &ObjectServer,
        name: &str,
        labels: HashMap<String, String>,
        flags: u64,
    ) -> Result<(String, OwnedObjectPath), SkiffError> {
        check_flags(flags, 0)?;
        let meta = self
            .ctx
            .daemon
            .create_volume(name, labels.into_iter().collect())?;
        // The object may be registered by the event too: both are idempotent.
        register(&self.ctx, server, &meta.name).await;
        Ok((meta.name.clone(), path(&meta.name)?))
    }

    /// The object path of a volume.
    async fn get_volume(&self, name: &str) -> Result<OwnedObjectPath, SkiffError> {
        self.ctx.daemon.inspect_volume(name)?;
        path(name)
    }

    /// The volumes `filters` select (`name=`, `label=KEY[=VALUE]`, `label!=…`,
    /// `dangling=true|false`, `driver=local`) as a JSON array of `Inspect()` objects.
    async fn list_volumes(&self, filters: Vec<String>, flags: u64) -> Result<String, SkiffError> {
        check_flags(flags, 0)?;
        json(&self.ctx.daemon.list_volumes(&filters)?)
    }

    /// Removes a volume; `VolumeInUse` when a container uses it. Flag 1: a missing
    /// volume is no error.
    async fn remove_volume(&self, name: &str, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, VOLUME_REMOVE_FORCE)?;
        Ok(self
            .ctx
            .daemon
            .remove_volume(name, flags & VOLUME_REMOVE_FORCE != 0)
            .await?)
    }

    /// Removes unused volumes: anonymous ones, all with the filter `all=true`; filters
    /// `label=`, `label!=`. Returns the names removed and the bytes freed.
    #[zbus(out_args("names", "bytes"))]
    async fn prune_volumes(
        &self,
        filters: Vec<String>,
        flags: u64,
    ) -> Result<(Vec<String>, u64), SkiffError> {
        check_flags(flags, 0)?;
        Ok(self.ctx.daemon.prune_volumes(&filters).await?)
    }
}

/// A volume's object.
pub struct VolumeObject {
    /// Shared context.
    pub ctx: Ctx,
    /// The volume's name.
    pub name: String,
}

/// A volume.
#[interface(name = "org.skiff.skiff1.Volume")]
impl VolumeObject {
    /// docker's `volume inspect` object: Name, Driver, Mountpoint, CreatedAt, Labels,
    /// Scope, Options (and Anonymous).
    async fn inspect(&self) -> Result<String, SkiffError> {
        json(&self.ctx.daemon.inspect_volume(&self.name)?)
    }

    /// Removes the volume (as `RemoveVolume`).
    async fn remove(&self, flags: u64) -> Result<(), SkiffError> {
        check_flags(flags, VOLUME_REMOVE_FORCE)?;
        Ok(self
            .ctx
            .daemon
            .remove_volume(&self.name, flags & VOLUME_REMOVE_FORCE != 0)
            .await?)
    }

    /// The volume's name.
    #[zbus(property(emits_changed_signal = "const"))]
    fn name(&self) -> String {
        self.name.clone()
    }
}

/// Exports a volume's object (no-op when it exists).
pub async fn register(ctx: &Ctx, server: &ObjectServer, name: &str) {
    let p = volume_path(name);
    let _ = server
        .at(
            p.as_str(),
            VolumeObject {
                ctx: ctx.clone(),
                name: name.to_string(),
            },
        )
        .await;
}

/// Drops a volume's object.
pub async fn unregister(server: &ObjectServer, name: &str) {
    let p = volume_path(name);
    let _ = server.remove::<VolumeObject, _>(p.as_str()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_escaped() {
        assert_eq!(
            volume_path("a.b-c_1"),
            "/org/skiff/skiff1/volume/a_2eb_2dc_5f1"
        );
        assert!(zbus::ObjectPath::try_from(volume_path("x.y").as_str()).is_ok());
    }
}
