//! COPY and ADD of a build: the sources (from the build context's index, minus what
//! `.dockerignore` excludes, or from another stage's or image's layers) resolved without
//! following symlinks, written as one layer tar placed by docker's rules, and the
//! checksum of the files and their metadata that keys the cache (for context files,
//! from the hashes the index took as the context streamed in: nothing is read again).

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header};

use super::context::{Context, Kind, Node};
use crate::dockerignore::seg_match;
pub(crate) use crate::dockerignore::Ignore;

/// Where COPY reads from.
pub(crate) enum SourceRoot<'a> {
    /// The build context's index, with the `.dockerignore` patterns.
    Context {
        /// The context.
        ctx: &'a Context,
        /// The ignore patterns.
        ignore: &'a Ignore,
    },
    /// An image's (or stage's) layer trees, top first.
    Layers(&'a [PathBuf]),
}

/// Where a file to copy is.
#[derive(Debug, Clone)]
pub(crate) enum Src {
    /// A path on the host (a layer tree's file, a fetched URL).
    Host(PathBuf),
    /// An entry of the build context (its data is in the context tar).
    Context(Node),
}

/// One file to copy: where it is and where it goes in the layer.
#[derive(Debug, Clone)]
pub(crate) struct Item {
    /// Where it is.
    pub(crate) src: Src,
    /// Its name in the layer (relative to `/`).
    pub(crate) dest: PathBuf,
}

/// What a source is (the metadata a layer entry takes from it).
#[derive(Debug)]
pub(crate) struct Meta {
    /// Its type.
    pub(crate) kind: Kind,
    /// Whether it is a device, FIFO or socket (never copied).
    pub(crate) special: bool,
    /// Its permission bits.
    pub(crate) mode: u32,
    /// Its data's size.
    pub(crate) size: u64,
    /// Its modification time.
    pub(crate) mtime: u64,
}

impl Src {
    /// Its metadata (never through a symlink).
    pub(crate) fn meta(&self) -> io::Result<Meta> {
        match self {
            Src::Context(n) => Ok(Meta {
                kind: n.kind.clone(),
                special: false,
                mode: n.mode,
                size: n.size,
                mtime: n.mtime,
            }),
            Src::Host(p) => {
                let m = fs::symlink_metadata(p)?;
                let ft = m.file_type();
                let kind = if ft.is_symlink() {
                    Kind::Symlink(fs::read_link(p)?)
                } else if ft.is_dir() {
                    Kind::Dir
                } else {
                    Kind::File
                };
                Ok(Meta {
                    kind,
                    special: !(ft.is_symlink() || ft.is_dir() || ft.is_file()),
                    mode: m.mode() & 0o7777,
                    size: if ft.is_file() { m.len() } else { 0 },
                    mtime: u64::try_from(m.mtime()).unwrap_or(0),
                })
            }
        }
    }

    /// Opens its data (a regular file).
    pub(crate) fn open<'a>(&self, ctx: Option<&'a Context>) -> io::Result<Box<dyn Read + 'a>> {
        match (self, ctx) {
            (Src::Host(p), _) => Ok(Box::new(File::open(p)?)),
            (Src::Context(n), Some(c)) => Ok(Box::new(c.data(n))),
            (Src::Context(_), None) => Err(io::Error::other(
                "a build context file without the build context",
            )),
        }
    }
}

/// The owner and mode COPY gives.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Placement {
    /// `--chown` (default 0:0).
    pub(crate) owner: (u64, u64),
    /// `--chmod`.
    pub(crate) mode: Option<u32>,
}

/// Normalises a source path of COPY: relative, no `..` leading out of the root.
pub(crate) fn clean_source(src: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::new();
    for c in Path::new(src).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::ParentDir if !out.pop() => {
                return Err(format!(
                    "COPY source {src:?} points outside the build context: '..' is refused"
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// Resolves `rel` in the context without following symlinks on the way (a symlink as
/// the last component is the link itself).
fn resolve_in_context<'a>(
    ctx: &'a Context,
    rel: &Path,
    src: &str,
) -> Result<Option<&'a Node>, String> {
    let mut cur = PathBuf::new();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        match ctx.get(&cur) {
            None => return Ok(None),
            Some(n) if matches!(n.kind, Kind::Symlink(_)) && i + 1 < comps.len() => {
                return Err(format!(
                    "COPY source {src:?} goes through the symlink {}: symlinks in the build \
                     context are copied as links, never followed",
                    cur.display()
                ))
            }
            Some(_) => {}
        }
    }
    Ok(ctx.get(&cur))
}

/// Collects the files of one COPY source into `items`, placed under `dest` (a
/// directory when `dest_is_dir`, else the file's own name). Returns false when the
/// source does not exist.
pub(crate) fn collect(
    root: &SourceRoot<'_>,
    src: &str,
    dest: &Path,
    dest_is_dir: bool,
    items: &mut Vec<Item>,
) -> Result<(), String> {
    let rel = clean_source(src)?;
    // A `*`/`?` in the last component: every match in its directory.
    let name = rel.file_name().map(|n| n.to_string_lossy().into_owned());
    if let Some(n) = name.as_deref().filter(|n| n.contains(['*', '?'])) {
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut found = false;
        for (child, _) in list(root, &parent)? {
            if seg_match(n.as_bytes(), child.as_bytes()) {
                found = true;
                collect_one(root, &parent.join(&child), src, dest, true, items)?;
            }
        }
        if !found {
            return Err(format!(
                "COPY source {src:?}: no file in the build context matches"
            ));
        }
        return Ok(());
    }
    collect_one(root, &rel, src, dest, dest_is_dir, items)
}

fn collect_one(
    root: &SourceRoot<'_>,
    rel: &Path,
    src: &str,
    dest: &Path,
    dest_is_dir: bool,
    items: &mut Vec<Item>,
) -> Result<(), String> {
    let found = match root {
        SourceRoot::Context { ctx, ignore } => {
            let node = resolve_in_context(ctx, rel, src)?;
            if !rel.as_os_str().is_empty() && ignore.excluded(rel) {
                // An excluded directory still gives what a `!` pattern re-includes below
                // it (docker's CLI would have sent just those files).
                let dir = node.is_some_and(|n| n.kind == Kind::Dir);
                if !(dir && ignore.may_include_below(rel)) {
                    return Err(format!("COPY source {src:?} is excluded by .dockerignore"));
                }
            }
            node.map(|n| Src::Context(n.clone()))
        }
        SourceRoot::Layers(layers) => if rel.as_os_str().is_empty() {
            layers.first().cloned()
        } else {
            crate::image::layer_diff::Lower { layers }.lookup(rel)
        }
        .map(Src::Host),
    };
    let src_at = found.ok_or_else(|| format!("COPY source {src:?}: no such file or directory"))?;
    let meta = src_at
        .meta()
        .map_err(|e| format!("COPY source {src:?}: {e}"))?;
    if meta.kind == Kind::Dir {
        // A directory's contents go into the destination.
        walk(root, rel, dest, items)
    } else {
        let target = match (dest_is_dir, rel.file_name()) {
            (true, Some(n)) => dest.join(n),
            _ => dest.to_path_buf(),
        };
        items.push(Item {
            src: src_at,
            dest: target,
        });
        Ok(())
    }
}

/// The names in directory `rel` of the source root, sorted, each with whether
/// `.dockerignore` excludes it. Excluded names are left out, except those a `!` pattern
/// may re-include something below (directories, walked for what is re-included).
fn list(root: &SourceRoot<'_>, rel: &Path) -> Result<Vec<(String, bool)>, String> {
    let mut names: Vec<(String, bool)> = match root {
        SourceRoot::Context { ctx, ignore } => {
            resolve_in_context(ctx, rel, &rel.display().to_string())?
                .ok_or_else(|| format!("{}: no such directory", rel.display()))?;
            ctx.children(rel)
                .into_iter()
                .filter_map(|n| {
                    let p = rel.join(&n);
                    match ignore.excluded(&p) {
                        false => Some((n, false)),
                        true if ignore.may_include_below(&p) => Some((n, true)),
                        true => None,
                    }
                })
                .collect()
        }
        SourceRoot::Layers(layers) => crate::image::layer_diff::Lower { layers }
            .children(rel)
            .into_iter()
            .map(|n| (n.to_string_lossy().into_owned(), false))
            .collect(),
    };
    names.sort();
    Ok(names)
}

fn walk(
    root: &SourceRoot<'_>,
    rel: &Path,
    dest: &Path,
    items: &mut Vec<Item>,
) -> Result<(), String> {
    for (name, excluded) in list(root, rel)? {
        let r = rel.join(&name);
        let src = match root {
            SourceRoot::Context { ctx, .. } => match ctx.get(&r) {
                Some(n) => Src::Context(n.clone()),
                None => continue,
            },
            SourceRoot::Layers(layers) => {
                match (crate::image::layer_diff::Lower { layers }).lookup(&r) {
                    Some(h) => Src::Host(h),
                    None => continue,
                }
            }
        };
        let Ok(m) = src.meta() else {
            continue;
        };
        let d = dest.join(&name);
        if excluded {
            // Only what is re-included below it: the directory itself comes along only
            // when something below it does (as docker's CLI sends it).
            if m.kind == Kind::Dir {
                let mut below = Vec::new();
                walk(root, &r, &d, &mut below)?;
                if !below.is_empty() {
                    items.push(Item { src, dest: d });
                    items.append(&mut below);
                }
            }
            continue;
        }
        items.push(Item {
            src,
            dest: d.clone(),
        });
        if m.kind == Kind::Dir {
            walk(root, &r, &d, items)?;
        }
    }
    Ok(())
}

/// The checksum of the items: names, types, modes, sizes, link targets and contents
/// (not times, as docker's). A context file's content is its hash in the index; a
/// host file is read.
pub(crate) fn checksum(items: &[Item]) -> Result<String, String> {
    let mut h = Sha256::new();
    for it in items {
        let m = it
            .src
            .meta()
            .map_err(|e| format!("{}: {e}", it.dest.display()))?;
        h.update(it.dest.as_os_str().as_encoded_bytes());
        h.update([0]);
        let ty = match (&m.kind, m.special) {
            (_, true) => 's',
            (Kind::Dir, _) => 'd',
            (Kind::File, _) => 'f',
            (Kind::Symlink(_), _) => 'l',
        };
        h.update(format!("{ty} {:o} {} ", m.mode, m.size).as_bytes());
        match (&m.kind, &it.src) {
            (Kind::Symlink(t), _) => h.update(t.as_os_str().as_encoded_bytes()),
            (Kind::File, Src::Context(n)) => h.update(n.hash),
            (Kind::File, Src::Host(p)) if !m.special => {
                let mut f = File::open(p).map_err(|e| format!("{}: {e}", p.display()))?;
                let mut fh = Sha256::new();
                io::copy(&mut f, &mut HashInto(&mut fh)).map_err(|e| e.to_string())?;
                h.update(fh.finalize());
            }
            _ => {}
        }
        h.update([0]);
    }
    Ok(crate::image::hex(&h.finalize()))
}

/// A writer feeding a hasher.
struct HashInto<'a>(&'a mut Sha256);

impl Write for HashInto<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// The bytes of the regular files among the items (what [`append_items`] copies).
pub(crate) fn file_bytes(items: &[Item]) -> u64 {
    items
        .iter()
        .filter_map(|it| it.src.meta().ok())
        .filter(|m| m.kind == Kind::File && !m.special)
        .map(|m| m.size)
        .sum()
}

/// A reader telling `copied` how many bytes it read; an error of `copied` (a cancel)
/// fails the read.
struct Counted<'a, R> {
    inner: R,
    copied: &'a dyn Fn(u64) -> io::Result<()>,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        (self.copied)(n as u64)?;
        Ok(n)
    }
}

/// Appends the items to the layer tar `b`, after `dirs` (directories to create first,
/// e.g. the destination, owned by the placement's owner), with the placement's owner
/// and mode; context files are read from `ctx`. `copied` is told the bytes of file
/// contents as they are written.
pub(crate) fn append_items<W: Write>(
    b: &mut Builder<W>,
    dirs: &[PathBuf],
    items: &[Item],
    ctx: Option<&Context>,
    place: Placement,
    copied: &dyn Fn(u64) -> io::Result<()>,
) -> io::Result<()> {
    for d in dirs {
        let mut h = Header::new_gnu();
        h.set_entry_type(EntryType::Directory);
        // As docker: a directory COPY creates is 0755 (--chmod is for what is copied).
        h.set_mode(0o755);
        h.set_uid(place.owner.0);
        h.set_gid(place.owner.1);
        h.set_size(0);
        h.set_mtime(0);
        b.append_data(&mut h, d, io::empty())?;
    }
    for it in items {
        let m = it.src.meta()?;
        if m.special {
            // Devices, sockets and fifos are not copied.
            continue;
        }
        let mut h = Header::new_gnu();
        h.set_mode(match (&m.kind, place.mode) {
            (Kind::Symlink(_), _) | (_, None) => m.mode,
            (_, Some(mode)) => mode,
        });
        h.set_mtime(m.mtime);
        h.set_uid(place.owner.0);
        h.set_gid(place.owner.1);
        match &m.kind {
            Kind::Symlink(t) => {
                h.set_entry_type(EntryType::Symlink);
                h.set_size(0);
                b.append_link(&mut h, &it.dest, t)?;
            }
            Kind::File => {
                h.set_entry_type(EntryType::Regular);
                h.set_size(m.size);
                let f = Counted {
                    inner: it.src.open(ctx)?.take(m.size),
                    copied,
                };
                b.append_data(&mut h, &it.dest, f)?;
            }
            Kind::Dir => {
                h.set_entry_type(EntryType::Directory);
                h.set_size(0);
                b.append_data(&mut h, &it.dest, io::empty())?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
