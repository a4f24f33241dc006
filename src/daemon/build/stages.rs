//! A build's stages: the Dockerfile split at its FROM lines (with the global ARGs
//! before the first one), each stage's steps run in order up to `--target`, and the
//! image a FROM line starts a stage on.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::parser::{self, Instruction};
use super::{copy, df_err, BuildOptions, Ctx, Out, State, PREDEFINED_ARGS};
use crate::daemon::{Daemon, Error};
use crate::image::derive::Derived;
use crate::image::progress::Progress;
use crate::image::{self, ImageRecord};

impl Daemon {
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn run_build(
        &self,
        df: &parser::Dockerfile,
        opts: &BuildOptions,
        ctx: &Ctx,
        ignore: &copy::Ignore,
        out: &mut Out,
        progress: &Arc<Progress>,
        lease: &Arc<image::leases::LeaseGuard>,
    ) -> Result<ImageRecord, Error> {
        let ins = &df.instructions;
        // Global ARGs (before the first FROM) are seen by FROM lines.
        let mut global = BTreeMap::new();
        let first_from = ins.iter().position(|i| i.cmd == "FROM").ok_or_else(|| {
            Error::InvalidArgument(format!(
                "{}: no FROM instruction: a Dockerfile starts with FROM (or ARGs, then FROM)",
                opts.dockerfile_name
            ))
        })?;
        for i in &ins[..first_from] {
            if i.cmd != "ARG" {
                return Err(df_err(opts, i, "comes before the first FROM: only ARG may"));
            }
            for (k, v) in parser::key_values(&i.text(), &global, df.escape, false)
                .map_err(|e| df_err(opts, i, e))?
            {
                let val = opts.build_args.get(&k).cloned().or(v).unwrap_or_default();
                global.insert(k, val);
            }
        }
        // Stages: (name, instructions).
        let mut stages: Vec<(Option<String>, &[Instruction])> = Vec::new();
        let mut starts: Vec<usize> = ins
            .iter()
            .enumerate()
            .filter(|(_, i)| i.cmd == "FROM")
            .map(|(n, _)| n)
            .collect();
        starts.push(ins.len());
        for w in starts.windows(2) {
            let from = &ins[w[0]];
            let words = parser::expand_words(&from.text(), &global, df.escape)
                .map_err(|e| df_err(opts, from, e))?;
            let name = match words.as_slice() {
                [_, kw, n] if kw.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                [_] => None,
                _ => return Err(df_err(opts, from, "takes IMAGE [AS NAME]")),
            };
            stages.push((name, &ins[w[0]..w[1]]));
        }
        let last = match &opts.target {
            Some(t) => stages
                .iter()
                .position(|(n, _)| n.as_deref() == Some(t.to_ascii_lowercase().as_str()))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "target stage {t:?} could not be found in {}",
                        opts.dockerfile_name
                    ))
                })?,
            None => stages.len() - 1,
        };
        let total: usize = stages[..=last].iter().map(|(_, s)| s.len()).sum();
        progress.start_steps(u32::try_from(total).unwrap_or(u32::MAX));
        let mut step = 0;
        let mut built: Vec<(Option<String>, Option<ImageRecord>)> = Vec::new();
        for (name, list) in &stages[..=last] {
            let mut state: Option<State> = None;
            for i in list.iter() {
                if progress.is_cancelled() {
                    return Err(Error::Cancelled);
                }
                step += 1;
                crate::phase::mark2("build-step", &i.cmd);
                let line = format!("STEP {step}/{total}: {}", i.original);
                out.line(&line);
                progress.begin_step(u32::try_from(step).unwrap_or(u32::MAX), &line);
                if i.cmd == "FROM" {
                    state = Some(self.stage_from(i, opts, df.escape, &global, &built, lease)?);
                    if let Some(img) = state.as_ref().and_then(|s| s.image.as_ref()) {
                        out.line(&format!("--> {}", &img.id[..12]));
                    }
                    progress.end_step();
                    continue;
                }
                let st = state
                    .as_mut()
                    .ok_or_else(|| df_err(opts, i, "before FROM"))?;
                self.step(
                    i, st, opts, df.escape, &global, ctx, ignore, &built, out, progress,
                )
                .await?;
                progress.end_step();
            }
            let image = state.and_then(|s| s.image);
            built.push((name.clone(), image));
        }
        built.pop().and_then(|(_, i)| i).ok_or_else(|| {
            Error::InvalidArgument(
                "the build made no image: FROM scratch with no instruction after it".into(),
            )
        })
    }

    pub(super) fn stage_from(
        &self,
        i: &Instruction,
        opts: &BuildOptions,
        escape: char,
        global: &BTreeMap<String, String>,
        built: &[(Option<String>, Option<ImageRecord>)],
        lease: &Arc<image::leases::LeaseGuard>,
    ) -> Result<State, Error> {
        if let Some(p) = i.flag("platform") {
            let p = parser::expand_word(p, global, escape).map_err(|e| df_err(opts, i, e))?;
            let ours = format!("linux/{}", image::store::oci_arch());
            if !p.is_empty() && p != ours && !p.starts_with(&format!("{ours}/")) {
                return Err(df_err(
                    opts,
                    i,
                    format!("--platform={p}: only the local platform {ours} can be built"),
                ));
            }
        }
        let words =
            parser::expand_words(&i.text(), global, escape).map_err(|e| df_err(opts, i, e))?;
        let base = words.first().cloned().unwrap_or_default();
        let image =
            if base == "scratch" {
                None
            } else if let Some((_, img)) = built
                .iter()
                .find(|(n, _)| n.as_deref() == Some(base.to_ascii_lowercase().as_str()))
            {
                Some(img.clone().ok_or_else(|| {
                    df_err(
                        opts,
                        i,
                        format!("stage {base:?} made no image (FROM scratch alone)"),
                    )
                })?)
            } else {
                Some(self.inner.images.resolve(&base).map_err(|e| {
                    df_err(opts, i, format!("{e}; pull it first (skiff pull {base})"))
                })?)
            };
        // Leased, then looked up again: an rmi either came first (the image is gone)
        // or keeps it.
        if let Some(img) = &image {
            self.inner
                .images
                .resolve_leased(&img.id, lease)
                .map_err(|e| df_err(opts, i, e))?;
        }
        let cfg = match &image {
            Some(img) => Derived::new(Some(
                &self.inner.images.read_blob(&format!("sha256:{}", img.id))?,
            ))?,
            None => Derived::new(None)?,
        };
        let shell = cfg
            .config_value()
            .get("Shell")
            .and_then(|s| serde_json::from_value::<Vec<String>>(s.clone()).ok())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]);
        let mut args = BTreeMap::new();
        for p in PREDEFINED_ARGS {
            if let Some(v) = opts.build_args.get(*p) {
                args.insert(p.to_string(), v.clone());
            }
        }
        Ok(State {
            image,
            cfg,
            shell,
            args,
            cmd_set: false,
            lease: lease.clone(),
        })
    }
}
