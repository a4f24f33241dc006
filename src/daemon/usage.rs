//! What containers use: `top` (ps of a container's processes), `stats` (one reading of
//! its CPU, memory, network, block I/O and tasks) and `system df` (disk used by images,
//! containers and volumes).

use std::collections::{BTreeMap, HashSet};

use super::{Daemon, Error, Status};
use crate::procstat;

/// `ps` with `args`, its output as text.
async fn run_ps(args: &[String]) -> Result<String, Error> {
    let out = tokio::process::Command::new("ps")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .map_err(|e| Error::Runtime(format!("cannot run ps: {e}")))?;
    if !out.status.success() {
        return Err(Error::InvalidArgument(format!(
            "ps {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

use super::volume_ops::disk_usage as dir_usage;

/// Runs `f` on tokio's blocking threads.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Internal(format!("a blocking task failed: {e}")))
}

impl Daemon {
    /// The init pid of a running container.
    fn running_pid(&self, name_or_id: &str) -> Result<(u32, super::Record), Error> {
        let rec = self.lookup(name_or_id)?.snapshot();
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Err(Error::ContainerNotRunning(rec.name));
        }
        Ok((rec.state.pid, rec))
    }

    /// docker's `top`: runs the host's `ps` with `ps_args` (default `-ef`) and keeps the
    /// rows of the container's processes (host pids). Returns the titles and the rows.
    pub async fn top(
        &self,
        name_or_id: &str,
        ps_args: &[String],
    ) -> Result<(Vec<String>, Vec<Vec<String>>), Error> {
        let (init, rec) = self.running_pid(name_or_id)?;
        let pids = blocking(move || procstat::container_pids(init))
            .await?
            .map_err(|e| Error::Runtime(format!("listing the processes of {}: {e}", rec.name)))?;
        let mut args: Vec<String> = if ps_args.is_empty() {
            vec!["-ef".into()]
        } else {
            ps_args.to_vec()
        };
        if let Some(r) = procstat::filter_ps(&run_ps(&args).await?, &pids, false) {
            return Ok(r);
        }
        // No PID column (e.g. `-o comm`): ask for one more, and drop it again.
        args.extend(["-o".to_string(), "pid".to_string()]);
        procstat::filter_ps(&run_ps(&args).await?, &pids, true).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "ps {} prints no PID column: give ps options that do (e.g. -ef, aux, -o pid,comm)",
                ps_args.join(" ")
            ))
        })
    }

    /// One reading of a container's resource use (see `crate::procstat`; read off the
    /// async threads); a container that does not run reads as nothing (`None`).
    pub async fn stats(
        &self,
        name_or_id: &str,
    ) -> Result<(super::Record, Option<procstat::Sample>), Error> {
        let rec = self.lookup(name_or_id)?.snapshot();
        if rec.state.status != Status::Running || rec.state.pid == 0 {
            return Ok((rec, None));
        }
        let pid = rec.state.pid;
        match blocking(move || procstat::sample(pid)).await? {
            Ok(s) => Ok((rec, Some(s))),
            // It ended between the lookup and the reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((rec, None)),
            Err(e) => Err(Error::Runtime(format!(
                "reading the resource use of {}: {e}",
                rec.name
            ))),
        }
    }

    /// [`Daemon::disk_usage`] off the async threads (it walks directories).
    pub async fn disk_usage_async(&self) -> Result<serde_json::Value, Error> {
        let d = self.clone();
        blocking(move || d.disk_usage()).await?
    }

    /// docker's `system df` data: `LayersSize`, `Images`, `Containers`, `Volumes`,
    /// `BuildCache` (each with docker's field names; sizes in bytes).
    pub fn disk_usage(&self) -> Result<serde_json::Value, Error> {
        let containers = self.list(true);
        let store = &self.inner.images;
        let images = store.list()?;
        let mut layer_users: BTreeMap<&str, usize> = BTreeMap::new();
        for i in &images {
            for l in i.layers.iter().collect::<HashSet<_>>() {
                *layer_users.entry(l.as_str()).or_default() += 1;
            }
        }
        let layers_size: u64 = layer_users.keys().map(|l| store.layer_size(l)).sum();
        let image_rows: Vec<serde_json::Value> = images
            .iter()
            .map(|i| {
                let shared: u64 = i
                    .layers
                    .iter()
                    .collect::<HashSet<_>>()
                    .into_iter()
                    .filter(|l| layer_users.get(l.as_str()).copied().unwrap_or(0) > 1)
                    .map(|l| store.layer_size(l))
                    .sum();
                let users = containers.iter().filter(|c| c.image_id == i.id).count();
                serde_json::json!({
                    "Id": format!("sha256:{}", i.id),
                    "RepoTags": i.repo_tags,
                    "RepoDigests": i.repo_digests,
                    "Created": i.created,
                    "Size": i.size,
                    "SharedSize": shared,
                    "Containers": users,
                })
            })
            .collect();
        let container_rows: Vec<serde_json::Value> = containers
            .iter()
            .map(|r| {
                let dir = self.inner.opts.paths.containers().join(&r.id);
                serde_json::json!({
                    "Id": r.id,
                    "Names": [format!("/{}", r.name)],
                    "Image": r.config.image,
                    "ImageID": format!("sha256:{}", r.image_id),
                    "Command": r.args.join(" "),
                    "Created": r.created / 1_000_000,
                    "State": r.state.status.as_str(),
                    "SizeRw": dir_usage(&dir.join("upper")),
                })
            })
            .collect();
        let volume_rows: Vec<serde_json::Value> = self
            .inner
            .volumes
            .list()
            .into_iter()
            .map(|m| {
                let dir = self.inner.volumes.data_dir(&m.name);
                let mut v = super::volumes::inspect_json(&m, &dir);
                v["UsageData"] = serde_json::json!({
                    "Size": dir_usage(&dir),
                    "RefCount": self.volume_users(&m.name).len(),
                });
                v
            })
            .collect();
        Ok(serde_json::json!({
            "LayersSize": layers_size,
            "Images": image_rows,
            "Containers": container_rows,
            "Volumes": volume_rows,
            "BuildCache": [],
        }))
    }
}
