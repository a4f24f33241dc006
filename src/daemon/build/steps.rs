//! The build steps that make layers: RUN (a container of the current image, through the
//! normal runtime, committed) and COPY/ADD (a layer of the sources, written as blob and
//! store layer in one pass).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::context::Context;
use super::copy::{self, Item, Placement, SourceRoot, Src};
use super::parser::{self, Args, Instruction};
use super::{cache, df_err, BuildOptions, Ctx, Out, State};
use crate::daemon::commit::NewLayer;
use crate::daemon::lifecycle::Stdio;
use crate::daemon::{ContainerConfig, Daemon, Error};
use crate::image::progress::Progress;
use crate::image::ImageRecord;

/// The build's RUN containers being removed: a step's container is removed in the
/// background once its layer is made (or the step failed), while the next steps run;
/// the build waits for every removal before it answers, so a finished or failed build
/// leaves no container behind. A cancelled build is dropped without waiting: its
/// removals go on all the same (the tasks are the runtime's), the running step's
/// container killed first.
#[derive(Clone, Default)]
pub(crate) struct Removals(Arc<std::sync::Mutex<Vec<tokio::task::JoinHandle<()>>>>);

impl Removals {
    /// Removes the container `id` (killed if it runs, with its anonymous volumes) in
    /// the background.
    fn spawn(&self, daemon: &Daemon, id: String) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("the build container {id} is left: no runtime to remove it");
            return;
        };
        let daemon = daemon.clone();
        let task = rt.spawn(async move {
            if let Err(e) = daemon.remove_with(&id, true, true).await {
                tracing::warn!("removing the build container {id}: {e}");
            }
            crate::phase::mark("run-removed");
        });
        match self.0.lock() {
            Ok(mut v) => v.push(task),
            Err(p) => p.into_inner().push(task),
        }
    }

    /// Waits until every container handed to [`Removals::spawn`] so far is removed.
    pub(crate) async fn wait(&self) {
        let tasks = match self.0.lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(p) => std::mem::take(&mut *p.into_inner()),
        };
        for t in tasks {
            if let Err(e) = t.await {
                tracing::warn!("removing a build container: {e}");
            }
        }
    }
}

/// Hands a RUN step's container to the build's [`Removals`] when the step ends in any
/// way (done, failed, or dropped midway by a cancel).
struct RunGuard<'a> {
    daemon: Daemon,
    removals: &'a Removals,
    id: String,
}

impl Drop for RunGuard<'_> {
    fn drop(&mut self) {
        self.removals
            .spawn(&self.daemon, std::mem::take(&mut self.id));
    }
}

/// The most an ADD of a URL downloads.
const MAX_FETCH: u64 = 8 << 30;

/// Downloads `url` into the new file `to` (mode 0600).
async fn fetch(url: &str, to: &Path) -> Result<(), String> {
    use std::os::unix::fs::OpenOptionsExt;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let fail = |e: &dyn std::fmt::Display| format!("{url}: cannot fetch it: {e}");
    let client = reqwest::Client::builder().build().map_err(|e| fail(&e))?;
    let mut resp = client.get(url).send().await.map_err(|e| fail(&e))?;
    if !resp.status().is_success() {
        return Err(fail(&format!("the server answered {}", resp.status())));
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(to)
        .map_err(|e| fail(&e))?;
    let mut total = 0u64;
    while let Some(chunk) = resp.chunk().await.map_err(|e| fail(&e))? {
        total += chunk.len() as u64;
        if total > MAX_FETCH {
            return Err(fail(&format!("it is larger than {MAX_FETCH} bytes")));
        }
        f.write_all(&chunk).map_err(|e| fail(&e))?;
    }
    Ok(())
}

fn dev_null() -> Result<OwnedFd, Error> {
    File::open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|e| Error::Internal(format!("opening /dev/null: {e}")))
}

impl Daemon {
    /// Runs `cmd` in a container of `parent` with the build args `arg_env` (on
    /// `network`, default the daemon's), its output to the client, and commits its
    /// changes as a layer; the container and its anonymous volumes are then removed in
    /// the background (`removals`: the build waits for them before it ends). Returns
    /// the layer with the store's collection lock (shared), taken once the command
    /// ended: hold it until the layer is recorded.
    pub(super) async fn run_step(
        &self,
        parent: &ImageRecord,
        cmd: &[String],
        arg_env: &[String],
        network: Option<String>,
        out: &mut Out,
        removals: &Removals,
    ) -> Result<(NewLayer, nix::fcntl::Flock<std::fs::File>), Error> {
        let cfg = ContainerConfig {
            image: parent.id.clone(),
            command: Some(cmd.to_vec()),
            entrypoint: Some(Vec::new()),
            env: arg_env.to_vec(),
            network,
            ..ContainerConfig::default()
        };
        let id = self.create(cfg).await?;
        crate::phase::mark("run-created");
        let _guard = RunGuard {
            daemon: self.clone(),
            removals,
            id: id.clone(),
        };
        let stdout = match out.fd() {
            Some(fd) => fd,
            None => dev_null()?,
        };
        let stderr = match out.fd() {
            Some(fd) => fd,
            None => dev_null()?,
        };
        let stdio = Stdio {
            stdin: dev_null()?,
            stdout,
            stderr,
        };
        self.start(&id, Some(stdio))
            .await
            .map_err(|e| Error::Runtime(format!("{}: {e}", serde_json::json!(cmd))))?;
        crate::phase::mark("run-started");
        let (code, _) = self.wait(&id, "not-running".parse()?).await?;
        crate::phase::mark("run-exited");
        if code != 0 {
            return Err(Error::Runtime(format!(
                "the command {} returned a non-zero code: {code}",
                serde_json::json!(cmd)
            )));
        }
        let c = self.lookup(&id)?;
        let gc = self.gc_shared_lock().await?;
        let layer = self.layer_of_container(&c.dir, parent).await?;
        crate::phase::mark("run-committed");
        // `_guard`: the container is removed while the next steps run.
        Ok((layer, gc))
    }

    /// COPY or ADD: returns the layer (None on a cache hit), the step's description
    /// and its cache key.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn copy_step(
        &self,
        i: &Instruction,
        st: &State,
        opts: &BuildOptions,
        escape: char,
        parent_id: &str,
        ctx: &Ctx,
        ignore: &copy::Ignore,
        built: &[(Option<String>, Option<ImageRecord>)],
        progress: &Arc<Progress>,
    ) -> Result<(Option<NewLayer>, String, String), Error> {
        let vars = st.vars();
        let words = match &i.args {
            Args::Exec(v) => v
                .iter()
                .map(|w| parser::expand_word(w, &vars, escape))
                .collect::<Result<Vec<_>, _>>(),
            Args::Shell(s) => parser::expand_words(s, &vars, escape),
        }
        .map_err(|e| df_err(opts, i, e))?;
        if words.len() < 2 {
            return Err(df_err(
                opts,
                i,
                "needs at least one source and a destination",
            ));
        }
        let (srcs, dest) = words.split_at(words.len() - 1);
        let dest = &dest[0];
        let is_url = |s: &str| s.starts_with("http://") || s.starts_with("https://");
        for s in srcs {
            if s.starts_with("git@") || (is_url(s) && i.cmd == "COPY") {
                return Err(df_err(
                    opts,
                    i,
                    format!("{s}: COPY takes files of the build context; ADD fetches URLs"),
                ));
            }
        }
        let workdir = st
            .cfg
            .config_value()
            .get("WorkingDir")
            .and_then(|w| w.as_str().map(str::to_string))
            .unwrap_or_else(|| "/".into());
        let abs = if dest.starts_with('/') {
            dest.clone()
        } else {
            format!("{}/{dest}", workdir.trim_end_matches('/'))
        };
        let dest_rel = copy::clean_source(&abs).map_err(|e| df_err(opts, i, e))?;
        let parent_layers: Vec<PathBuf> = match &st.image {
            Some(img) => self.inner.images.layer_dirs(img),
            None => Vec::new(),
        };
        let lower = crate::image::layer_diff::Lower {
            layers: &parent_layers,
        };
        let exists_dir = dest_rel.as_os_str().is_empty()
            || lower
                .lookup(&dest_rel)
                .and_then(|p| std::fs::metadata(p).ok())
                .is_some_and(|m| m.is_dir());
        let dest_is_dir = abs.ends_with('/') || srcs.len() > 1 || exists_dir;
        let from_layers: Option<Vec<PathBuf>> = match i.flag("from") {
            None => None,
            Some(f) => {
                let f = parser::expand_word(f, &vars, escape).map_err(|e| df_err(opts, i, e))?;
                let img = match built
                    .iter()
                    .find(|(n, _)| n.as_deref() == Some(f.to_ascii_lowercase().as_str()))
                {
                    Some((_, Some(img))) => img.clone(),
                    Some((_, None)) => {
                        return Err(df_err(opts, i, format!("stage {f:?} made no image")))
                    }
                    None => match f.parse::<usize>().ok().and_then(|n| built.get(n)) {
                        Some((_, Some(img))) => img.clone(),
                        _ => self.inner.images.resolve(&f).map_err(|e| {
                            df_err(opts, i, format!("--from={f}: no such stage, and {e}"))
                        })?,
                    },
                };
                Some(self.inner.images.layer_dirs(&img))
            }
        };
        let place = Placement {
            owner: match i.flag("chown") {
                None => (0, 0),
                Some(c) => {
                    let c =
                        parser::expand_word(c, &vars, escape).map_err(|e| df_err(opts, i, e))?;
                    owner_of(&c, &lower).map_err(|e| df_err(opts, i, e))?
                }
            },
            mode: match i.flag("chmod") {
                None => None,
                Some(m) => Some(u32::from_str_radix(m, 8).map_err(|_| {
                    df_err(
                        opts,
                        i,
                        format!("--chmod={m}: give an octal mode, e.g. 755"),
                    )
                })?),
            },
        };
        let is_add = i.cmd == "ADD";
        // ADD of URLs: fetched into the build directory, then copied as files (0600,
        // as docker), keyed by their content like any source.
        let mut fetched = Vec::new();
        let mut local = Vec::new();
        for (n, s) in srcs.iter().enumerate() {
            if !is_url(s) {
                local.push(s.clone());
                continue;
            }
            let file = ctx.dir.join(format!("remote-{}-{n}", i.line));
            fetch(s, &file).await.map_err(|e| df_err(opts, i, e))?;
            let name = s
                .split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|b| !b.is_empty())
                .unwrap_or("index.html")
                .to_string();
            let target = if dest_is_dir {
                dest_rel.join(name)
            } else {
                dest_rel.clone()
            };
            fetched.push(Item {
                src: Src::Host(file),
                dest: target,
            });
        }
        let (index, srcs2, dest2) = (ctx.index.clone(), local, dest_rel.clone());
        let ignore_text = ignore.clone();
        let (items, archives, sum) = tokio::task::spawn_blocking(move || {
            let ignore = ignore_text;
            let root = match &from_layers {
                Some(l) => SourceRoot::Layers(l),
                None => SourceRoot::Context {
                    ctx: &index,
                    ignore: &ignore,
                },
            };
            let mut items = fetched;
            let mut archives = Vec::new();
            for s in &srcs2 {
                let mut one = Vec::new();
                copy::collect(&root, s, &dest2, dest_is_dir, &mut one)?;
                // ADD of a local tar archive extracts it at the destination.
                if is_add && one.len() == 1 && is_archive(&one[0].src, &index) {
                    archives.push(one.remove(0).src);
                }
                items.extend(one);
            }
            let mut all: Vec<Item> = items.clone();
            all.extend(archives.iter().map(|a| Item {
                src: a.clone(),
                dest: PathBuf::from("<archive>"),
            }));
            let sum = copy::checksum(&all)?;
            crate::phase::mark("copy-summed");
            Ok::<_, String>((items, archives, sum))
        })
        .await
        .map_err(|e| Error::Internal(e.to_string()))?
        .map_err(|e| df_err(opts, i, e))?;
        let flags: Vec<String> = i.flags.iter().map(|(k, v)| format!("--{k}={v}")).collect();
        let desc = format!(
            "{} {}file:{sum} in {abs}",
            i.cmd,
            flags.iter().map(|f| format!("{f} ")).collect::<String>()
        );
        let key = cache::key(parent_id, &desc, "");
        let cached = cache::lookup(&self.inner.images, &key);
        if !opts.no_cache && cached.is_some() {
            return Ok((None, desc, key));
        }
        // With --no-cache, the image an earlier build made for this step is not used,
        // but its top layer is the layer this step makes again if nothing changed: a
        // hint, checked by the layer's digest (see `install_layer_stream`).
        let parent_layers = st.image.as_ref().map_or(0, |p| p.layers.len());
        let hint = cached
            .filter(|c| c.layers.len() == parent_layers + 1)
            .and_then(|c| c.layers.last().cloned());
        let dirs: Vec<PathBuf> = if dest_is_dir && !exists_dir {
            vec![dest_rel.clone()]
        } else {
            Vec::new()
        };
        let (dest3, owner) = (dest_rel.clone(), place.owner);
        let total = copy::file_bytes(&items);
        progress.add_copy_total(total);
        let job = progress.clone();
        let progress = progress.clone();
        let index = ctx.index.clone();
        // Bytes reported by the pass that made the layer (none when it was known).
        let reported = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = reported.clone();
        let layer = self
            .install_layer_stream(hint, move |w: &mut dyn Write, report: bool| {
                let mut b = tar::Builder::new(w);
                b.follow_symlinks(false);
                let copied = |n: u64| {
                    if report {
                        counted.fetch_add(n, std::sync::atomic::Ordering::Relaxed);
                        progress.copied(n)
                    } else if progress.is_cancelled() {
                        Err(std::io::Error::other("the job was cancelled"))
                    } else {
                        Ok(())
                    }
                };
                copy::append_items(&mut b, &dirs, &items, Some(&index), place, &copied)
                    .and_then(|()| append_archives(&mut b, &archives, &index, &dest3, owner))
                    .and_then(|()| b.finish())
                    .map_err(|e| {
                        if progress.is_cancelled() {
                            Error::Cancelled
                        } else {
                            Error::InvalidArgument(format!("writing the layer: {e}"))
                        }
                    })
            })
            .await?;
        let rest = total.saturating_sub(reported.load(std::sync::atomic::Ordering::Relaxed));
        if rest > 0 {
            // The layer was in the store already: the copy is complete all the same.
            job.copied(rest).map_err(|_| Error::Cancelled)?;
        }
        Ok((Some(layer), desc, key))
    }
}

/// The first bytes of the regular file `src` (up to 512).
fn head(src: &Src, ctx: &Context) -> Vec<u8> {
    if !src
        .meta()
        .is_ok_and(|m| m.kind == super::context::Kind::File && !m.special)
    {
        return Vec::new();
    }
    let mut head = Vec::with_capacity(512);
    if let Ok(f) = src.open(Some(ctx)) {
        let _ = f.take(512).read_to_end(&mut head);
    }
    head
}

/// Whether `src` is a tar archive (plain or gzip) ADD extracts.
fn is_archive(src: &Src, ctx: &Context) -> bool {
    let head = head(src, ctx);
    let n = head.len();
    (n >= 2 && head[0] == 0x1f && head[1] == 0x8b) || (n >= 262 && &head[257..262] == b"ustar")
}

/// Appends the entries of each (plain or gzip) tar archive under `dest`, owned by
/// `owner`; entry names are checked by the layer unpacker as any layer's.
fn append_archives<W: Write>(
    b: &mut tar::Builder<W>,
    archives: &[Src],
    ctx: &Context,
    dest: &Path,
    owner: (u64, u64),
) -> std::io::Result<()> {
    for a in archives {
        let f = a.open(Some(ctx))?;
        let gz = head(a, ctx).starts_with(&[0x1f, 0x8b]);
        let reader: Box<dyn Read> = if gz {
            Box::new(flate2::read::MultiGzDecoder::new(f))
        } else {
            Box::new(f)
        };
        let mut ar = tar::Archive::new(reader);
        for e in ar.entries()? {
            let mut e = e?;
            let path = e.path()?.into_owned();
            let rel = crate::image::relative_path(&path).map_err(std::io::Error::other)?;
            if rel.as_os_str().is_empty() {
                continue;
            }
            let name = dest.join(rel);
            let mut h = e.header().clone();
            h.set_uid(owner.0);
            h.set_gid(owner.1);
            let kind = h.entry_type();
            if kind.is_symlink() || kind.is_hard_link() {
                let target = e.link_name()?.unwrap_or_default().into_owned();
                let target = if kind.is_hard_link() {
                    dest.join(crate::image::relative_path(&target).map_err(std::io::Error::other)?)
                } else {
                    target
                };
                b.append_link(&mut h, &name, target)?;
            } else {
                b.append_data(&mut h, &name, &mut e)?;
            }
        }
    }
    Ok(())
}

/// `--chown=USER[:GROUP]`: numbers, or names from the image's /etc/passwd and
/// /etc/group.
fn owner_of(spec: &str, lower: &crate::image::layer_diff::Lower<'_>) -> Result<(u64, u64), String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let read = |f: &str| -> BTreeMap<String, (u64, u64)> {
        lower
            .lookup(Path::new(f))
            .filter(|p| std::fs::symlink_metadata(p).is_ok_and(|m| m.is_file()))
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                let id = f.get(2)?.parse().ok()?;
                let gid = f.get(3).and_then(|g| g.parse().ok()).unwrap_or(id);
                Some((f[0].to_string(), (id, gid)))
            })
            .collect()
    };
    let (uid, primary) = match u.parse::<u64>() {
        Ok(n) => (n, n),
        Err(_) => *read("etc/passwd")
            .get(u)
            .ok_or_else(|| format!("--chown={spec}: no user {u:?} in the image's /etc/passwd"))?,
    };
    let gid = match g {
        None => primary,
        Some(g) => match g.parse::<u64>() {
            Ok(n) => n,
            Err(_) => read("etc/group")
                .get(g)
                .map(|(gid, _)| *gid)
                .ok_or_else(|| {
                    format!("--chown={spec}: no group {g:?} in the image's /etc/group")
                })?,
        },
    };
    Ok((uid, gid))
}
