//! `skiff build`: a Dockerfile built into an image, docker's classic builder re-made.
//!
//! The context arrives as a tar on a descriptor and is kept as that one tar in the
//! build's directory under the store's `tmp/`, indexed as it streams in
//! ([`context`]): nothing is unpacked. Each instruction makes an image: RUN runs a
//! container of the current image through the normal runtime (same security defaults)
//! and commits its changes ([`super::commit`]); COPY/ADD write a layer of the sources,
//! the blob and the store's layer tree in one pass; the other instructions only change
//! the configuration.
//! Each step's image is found again by the cache key (parent image, instruction after
//! substitution, build args for RUN, file checksums for COPY/ADD) in
//! `build-cache.json` of the store, so a rebuild reuses every step before the first
//! change. Progress (`STEP n/m: …`, RUN output, `--> Using cache`, the id) goes to the
//! client's output descriptor.

pub(crate) mod cache;
pub mod config_steps;
pub(crate) mod context;
pub mod copy;
mod heredoc;
mod layer_stream;
mod output;
pub mod parser;
mod stages;
mod steps;

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;

use super::commit::NewLayer;
use super::{Daemon, Error};
use crate::image::derive::{Derived, HistoryEntry};
use crate::image::progress::{CountingReader, Progress};
use crate::image::{self, ImageRecord, Reference};
pub(crate) use output::Out;
use parser::{Args, Instruction};

/// docker's predefined build args: usable without an ARG line.
const PREDEFINED_ARGS: &[&str] = &[
    "HTTP_PROXY",
    "http_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "FTP_PROXY",
    "ftp_proxy",
    "NO_PROXY",
    "no_proxy",
    "ALL_PROXY",
    "all_proxy",
];

/// What `skiff build` asks for.
#[derive(Debug, Clone, Default)]
pub struct BuildOptions {
    /// The Dockerfile's text (else `Dockerfile` of the context).
    pub dockerfile: Option<String>,
    /// Its name, for errors (`Dockerfile`).
    pub dockerfile_name: String,
    /// Names for the result.
    pub tags: Vec<String>,
    /// `--build-arg NAME=VALUE`.
    pub build_args: BTreeMap<String, String>,
    /// The stage to stop at.
    pub target: Option<String>,
    /// Ignore the cache.
    pub no_cache: bool,
}

/// The state of the stage being built.
struct State {
    image: Option<ImageRecord>,
    cfg: Derived,
    shell: Vec<String>,
    /// ARGs declared in the stage, with their values.
    args: BTreeMap<String, String>,
    cmd_set: bool,
    /// The build's image leases: each image the stage moves to is held.
    lease: Arc<image::leases::LeaseGuard>,
}

impl State {
    /// Variables for substitution: the ARGs, then the environment over them.
    fn vars(&self) -> BTreeMap<String, String> {
        let mut v = self.args.clone();
        for e in self.cfg.env() {
            if let Some((k, val)) = e.split_once('=') {
                v.insert(k.to_string(), val.to_string());
            }
        }
        v
    }
}

fn df_err(opts: &BuildOptions, i: &Instruction, msg: impl std::fmt::Display) -> Error {
    Error::InvalidArgument(format!(
        "{}:{}: {} {msg}",
        opts.dockerfile_name, i.line, i.cmd
    ))
}

impl Daemon {
    /// Builds the image (see the module docs) from the context tar read from
    /// `context`, writing progress to `output`.
    pub async fn build_image(
        &self,
        context: OwnedFd,
        output: OwnedFd,
        opts: BuildOptions,
        progress: Arc<Progress>,
    ) -> Result<ImageRecord, Error> {
        crate::phase::mark("build-start");
        if let Err(e) = &self.inner.preflight {
            return Err(Error::IdMapping(e.clone()));
        }
        let tags: Vec<Reference> = opts
            .tags
            .iter()
            .map(|t| {
                let r: Reference = t.parse()?;
                image::names::check_taggable(&r)?;
                Ok(r)
            })
            .collect::<Result<_, image::Error>>()?;
        let store = self.inner.images.clone();
        let dir = store
            .root()
            .join("tmp")
            .join(format!("build-{}", image::store::random_hex()?));
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let _cleanup = DirGuard(Some(dir.clone()));
        let mut out = Out::new(File::from(output));
        let tar = dir.join("context.tar");
        progress.start_reading(None);
        let reader = CountingReader::new(File::from(context), progress.clone());
        let ctx = tokio::task::spawn_blocking(move || context::Context::receive(reader, &tar))
            .await
            .map_err(|e| Error::Internal(e.to_string()))?
            .map_err(|e| {
                if progress.is_cancelled() {
                    Error::Cancelled
                } else {
                    Error::InvalidArgument(format!("the build context: {e}"))
                }
            })?;
        crate::phase::mark("build-context-read");
        if let Ok(m) = std::fs::metadata(dir.join("context.tar")) {
            tracing::debug!(bytes = m.len(), "build context received");
        }
        let ctx = Ctx {
            index: Arc::new(ctx),
            dir: dir.clone(),
            removals: steps::Removals::default(),
        };
        let text = match &opts.dockerfile {
            Some(t) => t.clone(),
            None => ctx.index.read_file("Dockerfile").map_err(|e| {
                Error::InvalidArgument(format!(
                    "the build context has no Dockerfile ({e}): add one or give -f"
                ))
            })?,
        };
        let df = parser::parse(&text, &opts.dockerfile_name)
            .map_err(|e| Error::InvalidArgument(e.to_string()))?;
        let ignore = copy::Ignore::parse(&ctx.index.read_file(".dockerignore").unwrap_or_default());
        // The images the build uses stay while it runs (rmi refuses them); the store's
        // collection lock is taken only around each step's store writes.
        let what = match opts.tags.first() {
            Some(t) => format!("build -t {t}"),
            None => "build (untagged)".to_string(),
        };
        let lease = Arc::new(store.lease_holder(&what));
        let result = self
            .run_build(&df, &opts, &ctx, &ignore, &mut out, &progress, &lease)
            .await;
        // The RUN containers still being removed: gone before the build answers.
        ctx.removals.wait().await;
        crate::phase::mark("build-containers-removed");
        let rec = match result {
            Ok(r) => r,
            Err(e) => {
                out.line(&format!("Error: {e}"));
                return Err(e);
            }
        };
        crate::phase::mark("build-steps-done");
        if !progress.enter_commit() {
            return Err(Error::Cancelled);
        }
        for t in &tags {
            let r = self.tag_image(&rec.id, &t.to_string())?;
            out.line(&format!("Successfully tagged {}", t));
            let _ = r;
        }
        crate::phase::mark("build-tagged");
        out.line(&format!("Successfully built {}", &rec.id[..12]));
        self.inner.images.resolve(&rec.id).map_err(Error::from)
    }

    #[allow(clippy::too_many_arguments)]
    async fn step(
        &self,
        i: &Instruction,
        st: &mut State,
        opts: &BuildOptions,
        escape: char,
        global: &BTreeMap<String, String>,
        ctx: &Ctx,
        ignore: &copy::Ignore,
        built: &[(Option<String>, Option<ImageRecord>)],
        out: &mut Out,
        progress: &Arc<Progress>,
    ) -> Result<(), Error> {
        let parent_id = st
            .image
            .as_ref()
            .map(|i| i.id.clone())
            .unwrap_or_else(|| "scratch".into());
        match i.cmd.as_str() {
            "ARG" => {
                let vars = st.vars();
                for (k, v) in parser::key_values(&i.text(), &vars, escape, false)
                    .map_err(|e| df_err(opts, i, e))?
                {
                    let val = opts
                        .build_args
                        .get(&k)
                        .cloned()
                        .or(v)
                        .or_else(|| global.get(&k).cloned())
                        .unwrap_or_default();
                    st.args.insert(k, val);
                }
                Ok(())
            }
            "RUN" => {
                let Some(parent) = st.image.clone() else {
                    return Err(df_err(
                        opts,
                        i,
                        "cannot run in an empty image (FROM scratch has no shell): COPY a \
                         program in first, or build FROM an image",
                    ));
                };
                if let Some((f, _)) = i.flags.iter().find(|(f, _)| f != "network") {
                    return Err(df_err(
                        opts,
                        i,
                        format!("--{f} is not supported (RUN takes --network=MODE)"),
                    ));
                }
                let cmd = match &i.args {
                    Args::Exec(v) => v.clone(),
                    Args::Shell(s) => {
                        let mut c = st.shell.clone();
                        c.push(s.clone());
                        c
                    }
                };
                // Build args reach RUN as environment (not the image's).
                let env_names: Vec<String> = st
                    .cfg
                    .env()
                    .iter()
                    .filter_map(|e| e.split_once('=').map(|(k, _)| k.to_string()))
                    .collect();
                let arg_env: Vec<String> = st
                    .args
                    .iter()
                    .filter(|(k, _)| !env_names.contains(k))
                    .map(|(k, v)| format!("{k}={v}"))
                    .collect();
                let key = cache::key(
                    &parent_id,
                    &format!("RUN {}", serde_json::json!(cmd)),
                    &arg_env.join("\n"),
                );
                if self.try_cache(&key, opts, st, out)? {
                    return Ok(());
                }
                let network = i.flag("network").map(str::to_string);
                // `_gc`: held from the layer's commit until the step's image is recorded.
                let (layer, _gc) = self
                    .run_step(&parent, &cmd, &arg_env, network, out, &ctx.removals)
                    .await
                    .map_err(|e| match e {
                        Error::Runtime(m) => df_err(opts, i, m),
                        other => other,
                    })?;
                let created_by = match &i.args {
                    Args::Shell(s) => format!("{} {s}", st.shell.join(" ")),
                    Args::Exec(v) => v.join(" "),
                };
                self.record_step(st, &key, Some(layer), created_by, out)
                    .await
            }
            "COPY" | "ADD" => {
                // The sources (`--from` images too) and the new layer stay until the
                // step's image is recorded.
                let _gc = self.gc_shared_lock().await?;
                let (layer, desc, key) = self
                    .copy_step(
                        i, st, opts, escape, &parent_id, ctx, ignore, built, progress,
                    )
                    .await?;
                let Some(layer) = layer else {
                    // A cache hit: `copy_step` found the image.
                    return self.use_cached(&key, st, out);
                };
                self.record_step(
                    st,
                    &key,
                    Some(layer),
                    format!("/bin/sh -c #(nop) {desc}"),
                    out,
                )
                .await
            }
            _ => {
                let vars = st.vars();
                let mut sv = config_steps::StageVars {
                    vars: &vars,
                    escape,
                    shell: &mut st.shell,
                    cmd_set: &mut st.cmd_set,
                };
                let text =
                    config_steps::apply(i, &mut st.cfg, &mut sv).map_err(|e| df_err(opts, i, e))?;
                let key = cache::key(&parent_id, &text, "");
                if self.try_cache(&key, opts, st, out)? {
                    return Ok(());
                }
                let _gc = self.gc_shared_lock().await?;
                self.record_step(st, &key, None, format!("/bin/sh -c #(nop)  {text}"), out)
                    .await
            }
        }
    }

    /// On a cache hit, moves the stage to the cached image; returns whether it hit.
    fn try_cache(
        &self,
        key: &str,
        opts: &BuildOptions,
        st: &mut State,
        out: &mut Out,
    ) -> Result<bool, Error> {
        if opts.no_cache {
            return Ok(false);
        }
        let Some(img) = cache::lookup(&self.inner.images, key) else {
            return Ok(false);
        };
        self.move_to_cached(img, st, out)?;
        Ok(true)
    }

    fn use_cached(&self, key: &str, st: &mut State, out: &mut Out) -> Result<(), Error> {
        let img = cache::lookup(&self.inner.images, key)
            .and_then(|img| self.inner.images.resolve_leased(&img.id, &st.lease).ok())
            .ok_or_else(|| Error::Internal("a cached step vanished".into()))?;
        self.move_to_cached(img, st, out)
    }

    fn move_to_cached(&self, img: ImageRecord, st: &mut State, out: &mut Out) -> Result<(), Error> {
        st.cfg = Derived::new(Some(
            &self.inner.images.read_blob(&format!("sha256:{}", img.id))?,
        ))?;
        out.line(&format!("--> Using cache {}", img.id));
        out.line(&format!("--> {}", &img.id[..12]));
        st.image = Some(img);
        Ok(())
    }

    /// Records the step's image (the stage's configuration, plus `layer`), remembers
    /// it under `key`, and moves the stage to it (leased). The caller holds the
    /// collection lock shared.
    async fn record_step(
        &self,
        st: &mut State,
        key: &str,
        layer: Option<NewLayer>,
        created_by: String,
        out: &mut Out,
    ) -> Result<(), Error> {
        let mut cfg = st.cfg.clone();
        if let Some(l) = &layer {
            cfg.add_layer(&l.diff_id);
        }
        cfg.add_history(&HistoryEntry {
            created: image::store::now_rfc3339(),
            created_by,
            comment: None,
            author: None,
            empty_layer: layer.is_none(),
        });
        let layers: Vec<NewLayer> = layer.into_iter().collect();
        let rec = self.record_derived(&st.image, &cfg, &layers, &[]).await?;
        crate::phase::mark("step-recorded");
        st.lease.hold(&rec.id);
        let parent = st.image.as_ref().map(|i| i.id.as_str());
        cache::store(&self.inner.images, key, &rec.id, parent);
        crate::phase::mark("step-cached");
        out.line(&format!("--> {}", &rec.id[..12]));
        st.cfg = cfg;
        st.image = Some(rec);
        Ok(())
    }
}

/// The build's context: its index (and tar), and the build's directory.
pub(crate) struct Ctx {
    /// The context's index.
    pub(crate) index: Arc<context::Context>,
    /// The build's directory (the context tar, fetched URLs).
    pub(crate) dir: PathBuf,
    /// The RUN containers being removed.
    pub(crate) removals: steps::Removals,
}

/// Removes the build's directory (the context tar: the user's own files).
struct DirGuard(Option<PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            if let Err(e) = std::fs::remove_dir_all(&d) {
                tracing::warn!("removing the build directory {}: {e}", d.display());
            }
        }
    }
}
