//! COPY and ADD of a build: the sources (from the extracted build context, minus what
//! `.dockerignore` excludes, or from another stage's or image's layers) resolved without
//! following symlinks, written as one layer tar placed by docker's rules, and the
//! checksum of the files and their metadata that keys the cache.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::{Builder, EntryType, Header, HeaderMode};

/// Where COPY reads from.
pub(crate) enum SourceRoot<'a> {
    /// The extracted build context, with the `.dockerignore` patterns.
    Context {
        /// Its directory.
        dir: &'a Path,
        /// The ignore patterns.
        ignore: &'a Ignore,
    },
    /// An image's (or stage's) layer trees, top first.
    Layers(&'a [PathBuf]),
}

/// One file to copy: where it is and where it goes in the layer.
#[derive(Debug)]
pub(crate) struct Item {
    /// Its path on the host.
    pub(crate) host: PathBuf,
    /// Its name in the layer (relative to `/`).
    pub(crate) dest: PathBuf,
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

/// Resolves `rel` under `root` without following symlinks on the way (a symlink as the
/// last component is the link itself).
fn resolve_in_dir(root: &Path, rel: &Path, src: &str) -> Result<Option<PathBuf>, String> {
    let mut cur = root.to_path_buf();
    let comps: Vec<_> = rel.components().collect();
    for (i, c) in comps.iter().enumerate() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Err(_) => return Ok(None),
            Ok(m) if m.file_type().is_symlink() && i + 1 < comps.len() => {
                return Err(format!(
                    "COPY source {src:?} goes through the symlink {}: symlinks in the build \
                     context are copied as links, never followed",
                    comps[..=i].iter().collect::<PathBuf>().display()
                ))
            }
            Ok(_) => {}
        }
    }
    Ok(Some(cur))
}

/// Matches one path segment against a pattern segment with `*` and `?`.
fn seg_match(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => seg_match(&p[1..], s) || (!s.is_empty() && seg_match(p, &s[1..])),
        (Some(b'?'), Some(_)) => seg_match(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => seg_match(&p[1..], &s[1..]),
        _ => false,
    }
}

/// Matches path segments against pattern segments (`**` = any number of segments).
fn path_match(p: &[&str], s: &[&str]) -> bool {
    match p.first() {
        None => s.is_empty(),
        Some(&"**") => path_match(&p[1..], s) || (!s.is_empty() && path_match(p, &s[1..])),
        Some(seg) => {
            !s.is_empty()
                && seg_match(seg.as_bytes(), s[0].as_bytes())
                && path_match(&p[1..], &s[1..])
        }
    }
}

/// `.dockerignore`: patterns in order, the last match wins, `!` re-includes; a matched
/// directory excludes everything below it.
#[derive(Debug, Default, Clone)]
pub(crate) struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    /// Parses the file's text.
    pub(crate) fn parse(text: &str) -> Ignore {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let t = line.trim();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let (neg, pat) = match t.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, t),
            };
            let segs: Vec<String> = pat
                .split('/')
                .filter(|s| !s.is_empty() && *s != ".")
                .map(str::to_string)
                .collect();
            if !segs.is_empty() {
                patterns.push((neg, segs));
            }
        }
        Ignore { patterns }
    }

    /// Whether the context path `rel` is excluded.
    pub(crate) fn excluded(&self, rel: &Path) -> bool {
        let segs: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        let mut out = false;
        for (neg, p) in &self.patterns {
            let p: Vec<&str> = p.iter().map(String::as_str).collect();
            // The path itself or one of its parents.
            if (1..=segs.len()).any(|n| path_match(&p, &segs[..n])) {
                out = !neg;
            }
        }
        out
    }
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
        for child in list(root, &parent)? {
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
    let host = match root {
        SourceRoot::Context { dir, ignore } => {
            if !rel.as_os_str().is_empty() && ignore.excluded(rel) {
                return Err(format!("COPY source {src:?} is excluded by .dockerignore"));
            }
            resolve_in_dir(dir, rel, src)?
        }
        SourceRoot::Layers(layers) => {
            if rel.as_os_str().is_empty() {
                layers.first().cloned()
            } else {
                crate::image::layer_diff::Lower { layers }.lookup(rel)
            }
        }
    };
    let host = host.ok_or_else(|| format!("COPY source {src:?}: no such file or directory"))?;
    let meta = fs::symlink_metadata(&host).map_err(|e| format!("COPY source {src:?}: {e}"))?;
    if meta.is_dir() {
        // A directory's contents go into the destination.
        walk(root, rel, dest, items)
    } else {
        let target = match (dest_is_dir, rel.file_name()) {
            (true, Some(n)) => dest.join(n),
            _ => dest.to_path_buf(),
        };
        items.push(Item { host, dest: target });
        Ok(())
    }
}

/// The names in directory `rel` of the source root, sorted, minus ignored ones.
fn list(root: &SourceRoot<'_>, rel: &Path) -> Result<Vec<String>, String> {
    let mut names: Vec<String> = match root {
        SourceRoot::Context { dir, ignore } => {
            let d = resolve_in_dir(dir, rel, &rel.display().to_string())?
                .ok_or_else(|| format!("{}: no such directory", rel.display()))?;
            fs::read_dir(&d)
                .map_err(|e| format!("{}: {e}", rel.display()))?
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !ignore.excluded(&rel.join(n)))
                .collect()
        }
        SourceRoot::Layers(layers) => crate::image::layer_diff::Lower { layers }
            .children(rel)
            .into_iter()
            .map(|n| n.to_string_lossy().into_owned())
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
    for name in list(root, rel)? {
        let r = rel.join(&name);
        let host = match root {
            SourceRoot::Context { dir, .. } => dir.join(&r),
            SourceRoot::Layers(layers) => {
                match (crate::image::layer_diff::Lower { layers }).lookup(&r) {
                    Some(h) => h,
                    None => continue,
                }
            }
        };
        let Ok(m) = fs::symlink_metadata(&host) else {
            continue;
        };
        let d = dest.join(&name);
        items.push(Item {
            host: host.clone(),
            dest: d.clone(),
        });
        if m.is_dir() {
            walk(root, &r, &d, items)?;
        }
    }
    Ok(())
}

/// The checksum of the items: names, types, modes, sizes, link targets and contents
/// (not times, as docker's).
pub(crate) fn checksum(items: &[Item]) -> Result<String, String> {
    let mut h = Sha256::new();
    for it in items {
        let m =
            fs::symlink_metadata(&it.host).map_err(|e| format!("{}: {e}", it.host.display()))?;
        h.update(it.dest.as_os_str().as_encoded_bytes());
        h.update([0]);
        h.update(format!("{:o} {} ", m.mode(), m.len()).as_bytes());
        if m.file_type().is_symlink() {
            let t = fs::read_link(&it.host).map_err(|e| e.to_string())?;
            h.update(t.as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            let mut f = File::open(&it.host).map_err(|e| format!("{}: {e}", it.host.display()))?;
            let mut buf = vec![0u8; 1 << 16];
            loop {
                let n = f.read(&mut buf).map_err(|e| e.to_string())?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
            }
        }
        h.update([0]);
    }
    Ok(crate::image::hex(&h.finalize()))
}

/// The bytes of the regular files among the items (what [`append_items`] copies).
pub(crate) fn file_bytes(items: &[Item]) -> u64 {
    items
        .iter()
        .filter_map(|it| fs::symlink_metadata(&it.host).ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
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
/// and mode. `copied` is told the bytes of file contents as they are written.
pub(crate) fn append_items<W: Write>(
    b: &mut Builder<W>,
    dirs: &[PathBuf],
    items: &[Item],
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
        let m = fs::symlink_metadata(&it.host)?;
        let mut h = Header::new_gnu();
        h.set_metadata_in_mode(&m, HeaderMode::Complete);
        h.set_uid(place.owner.0);
        h.set_gid(place.owner.1);
        if let Some(mode) = place.mode {
            if !m.file_type().is_symlink() {
                h.set_mode(mode);
            }
        }
        let ft = m.file_type();
        if ft.is_symlink() {
            h.set_size(0);
            b.append_link(&mut h, &it.dest, fs::read_link(&it.host)?)?;
        } else if ft.is_file() {
            let f = Counted {
                inner: File::open(&it.host)?.take(m.len()),
                copied,
            };
            b.append_data(&mut h, &it.dest, f)?;
        } else if ft.is_dir() {
            h.set_size(0);
            b.append_data(&mut h, &it.dest, io::empty())?;
        }
        // Devices, sockets and fifos of a context are not copied.
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_rules() {
        let i = Ignore::parse("# c\n*.log\nbuild/\n!build/keep\n**/secret\n");
        assert!(i.excluded(Path::new("a.log")));
        assert!(!i.excluded(Path::new("d/a.log")));
        assert!(i.excluded(Path::new("build/x")));
        assert!(!i.excluded(Path::new("build/keep")));
        assert!(i.excluded(Path::new("deep/er/secret")));
        assert!(!i.excluded(Path::new("src/main.rs")));
    }

    #[test]
    fn dotdot_is_refused_and_symlinks_not_followed() {
        assert!(clean_source("../x").is_err());
        assert!(clean_source("a/../../x").is_err());
        assert_eq!(clean_source("./a/../b").unwrap(), Path::new("b"));
        let d = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        let ig = Ignore::default();
        let root = SourceRoot::Context {
            dir: d.path(),
            ignore: &ig,
        };
        let mut items = Vec::new();
        let e = collect(&root, "out/passwd", Path::new("x"), false, &mut items).unwrap_err();
        assert!(e.contains("never followed"), "{e}");
        // The link itself is copied as a link.
        collect(&root, "out", Path::new("x"), false, &mut items).unwrap();
        assert_eq!(items.len(), 1);
        assert!(fs::symlink_metadata(&items[0].host)
            .unwrap()
            .file_type()
            .is_symlink());
    }
}
