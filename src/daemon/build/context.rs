//! The build context as it arrives: one tar, written once to the build directory as it
//! streams in, and an in-memory index path -> (header metadata, data offset, content
//! hash) made in the same pass. Nothing is unpacked: the Dockerfile, `.dockerignore`
//! and COPY/ADD read their files from the tar at the recorded offsets, and the cache
//! keys of COPY/ADD come from the hashes.
//!
//! The index refuses what the layer unpacker refused (absolute names, `..`), and an
//! entry below a symlink or a file (a symlink of the context is a link, never a way
//! into another place). Hard links are files with their target's data. Devices, FIFOs
//! and sockets are left out (COPY never copied them).

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tar::EntryType;

/// Why a context could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// Reading the stream or writing the build directory's tar failed.
    #[error("{context}: {source}")]
    Io {
        /// What was being done.
        context: String,
        /// The cause.
        #[source]
        source: io::Error,
    },
    /// The tar has an entry the index refuses.
    #[error("{0}")]
    Invalid(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

/// Most entries a context may have (as the layer unpacker's default).
const MAX_ENTRIES: u64 = 1_000_000;

/// What an entry of the context is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A directory (given in the tar, or implied by an entry below it).
    Dir,
    /// A regular file (or a hard link to one: the same data).
    File,
    /// A symbolic link to this target.
    Symlink(PathBuf),
}

/// One entry of the index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Node {
    /// Its type.
    pub(crate) kind: Kind,
    /// Its permission bits (`0o7777`).
    pub(crate) mode: u32,
    /// Its modification time (seconds).
    pub(crate) mtime: u64,
    /// Its data's size (files; 0 otherwise).
    pub(crate) size: u64,
    /// Where its data starts in the context tar (files).
    pub(crate) offset: u64,
    /// The sha256 of its data (files; zero otherwise).
    pub(crate) hash: [u8; 32],
}

impl Node {
    fn dir(mode: u32, mtime: u64) -> Node {
        Node {
            kind: Kind::Dir,
            mode,
            mtime,
            size: 0,
            offset: 0,
            hash: [0; 32],
        }
    }
}

/// The received context: its tar and the index of it.
#[derive(Debug)]
pub(crate) struct Context {
    tar: File,
    nodes: BTreeMap<PathBuf, Node>,
    children: BTreeMap<PathBuf, BTreeSet<OsString>>,
}

/// Copies what is read from `inner` to `out` (the context tar of the build directory).
struct Tee<R> {
    inner: R,
    out: BufWriter<File>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.out.write_all(&buf[..n])?;
        Ok(n)
    }
}

/// A writer that only hashes.
struct HashWriter(Sha256);

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file's data in the context tar.
pub(crate) struct DataReader<'a> {
    tar: &'a File,
    pos: u64,
    end: u64,
}

impl Read for DataReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = usize::try_from(self.end - self.pos).unwrap_or(usize::MAX);
        let want = buf.len().min(left);
        if want == 0 {
            return Ok(0);
        }
        let n = self.tar.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "the build context's tar ends inside a file",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

impl Context {
    /// Reads the context tar (plain or gzip) from `input` to its end, writing it (as a
    /// plain tar) to the new file `tar_path` (mode 0600) and indexing it in the same
    /// pass.
    pub(crate) fn receive(mut input: impl Read, tar_path: &Path) -> Result<Context, Error> {
        let mut head = [0u8; 4];
        let mut n = 0;
        while n < head.len() {
            match input.read(&mut head[n..]) {
                Ok(0) => break,
                Ok(k) => n += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_err("reading the tar")(e)),
            }
        }
        let stream = io::Cursor::new(head[..n].to_vec()).chain(input);
        if head[..n].starts_with(&[0x1f, 0x8b]) {
            Self::receive_tar(flate2::read::MultiGzDecoder::new(stream), tar_path)
        } else if head[..n] == [0x28, 0xb5, 0x2f, 0xfd] {
            Err(Error::Invalid(
                "it is zstd-compressed: send it as a plain or gzip-compressed tar".into(),
            ))
        } else {
            Self::receive_tar(stream, tar_path)
        }
    }

    fn receive_tar(input: impl Read, tar_path: &Path) -> Result<Context, Error> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(tar_path)
            .map_err(io_err(format!("creating {}", tar_path.display())))?;
        let out = file
            .try_clone()
            .map_err(io_err(format!("opening {}", tar_path.display())))?;
        let mut tee = Tee {
            inner: input,
            out: BufWriter::with_capacity(1 << 20, out),
        };
        let mut ctx = Context {
            tar: file,
            nodes: BTreeMap::from([(PathBuf::new(), Node::dir(0o755, 0))]),
            children: BTreeMap::new(),
        };
        {
            let mut ar = tar::Archive::new(&mut tee);
            let mut count = 0u64;
            for e in ar.entries().map_err(io_err("reading the tar"))? {
                let mut e = e.map_err(io_err("reading the tar"))?;
                count += 1;
                if count > MAX_ENTRIES {
                    return Err(Error::Invalid(format!(
                        "it has more than {MAX_ENTRIES} entries: leave some out with \
                         .dockerignore or a smaller context directory"
                    )));
                }
                ctx.add_entry(&mut e)?;
            }
        }
        // The rest (the end-of-archive blocks, padding) is read too: the sender is
        // not cut off mid-write.
        io::copy(&mut tee, &mut io::sink()).map_err(io_err("reading the tar"))?;
        tee.out
            .flush()
            .map_err(io_err(format!("writing {}", tar_path.display())))?;
        Ok(ctx)
    }

    fn add_entry<R: Read>(&mut self, e: &mut tar::Entry<'_, R>) -> Result<(), Error> {
        let raw = e.path().map_err(io_err("reading the tar"))?.into_owned();
        let rel = crate::image::relative_path(&raw)
            .map_err(|m| Error::Invalid(format!("the entry {m}: it is refused")))?;
        let h = e.header();
        let mode = h.mode().unwrap_or(0o644) & 0o7777;
        let mtime = h.mtime().unwrap_or(0);
        let ty = h.entry_type();
        let node = match ty {
            EntryType::Directory => Node::dir(mode, mtime),
            EntryType::Regular | EntryType::Continuous => {
                let offset = e.raw_file_position();
                let size = e.size();
                let mut hw = HashWriter(Sha256::new());
                io::copy(e, &mut hw).map_err(io_err(format!("reading {}", raw.display())))?;
                Node {
                    kind: Kind::File,
                    mode,
                    mtime,
                    size,
                    offset,
                    hash: hw.0.finalize().into(),
                }
            }
            EntryType::Symlink => {
                let target = e
                    .link_name()
                    .map_err(io_err("reading the tar"))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                Node {
                    kind: Kind::Symlink(target),
                    mode: 0o777,
                    mtime,
                    size: 0,
                    offset: 0,
                    hash: [0; 32],
                }
            }
            EntryType::Link => {
                let target = e
                    .link_name()
                    .map_err(io_err("reading the tar"))?
                    .map(|t| t.into_owned())
                    .unwrap_or_default();
                let t = crate::image::relative_path(&target)
                    .map_err(|m| Error::Invalid(format!("the hard link {}: {m}", raw.display())))?;
                match self.nodes.get(&t) {
                    Some(n) if n.kind == Kind::File => n.clone(),
                    _ => {
                        return Err(Error::Invalid(format!(
                            "the hard link {} points to {}, which is not a regular file \
                             before it in the tar",
                            raw.display(),
                            target.display()
                        )))
                    }
                }
            }
            EntryType::GNUSparse => {
                return Err(Error::Invalid(format!(
                    "{} is a sparse file: send the context without sparse entries (e.g. \
                     GNU tar without -S)",
                    raw.display()
                )))
            }
            // Devices, FIFOs, and pax global headers: not copied.
            _ => return Ok(()),
        };
        self.insert(rel, node, &raw)
    }

    /// Puts `node` at `rel`, creating the directories above it; a later entry of the
    /// same name replaces an earlier one (with everything below it).
    fn insert(&mut self, rel: PathBuf, node: Node, raw: &Path) -> Result<(), Error> {
        if rel.as_os_str().is_empty() {
            if node.kind != Kind::Dir {
                return Err(Error::Invalid(format!(
                    "its top ({}) is not a directory",
                    raw.display()
                )));
            }
            self.nodes.insert(rel, node);
            return Ok(());
        }
        let mut cur = PathBuf::new();
        let comps: Vec<_> = rel.iter().collect();
        for c in &comps[..comps.len() - 1] {
            let parent = cur.clone();
            cur.push(c);
            match self.nodes.get(&cur) {
                Some(n) if n.kind == Kind::Dir => {}
                Some(_) => {
                    return Err(Error::Invalid(format!(
                        "the entry {} is below {}, which is not a directory (symlinks in \
                         a context are links, never followed)",
                        raw.display(),
                        cur.display()
                    )))
                }
                None => {
                    self.nodes.insert(cur.clone(), Node::dir(0o755, 0));
                    self.children
                        .entry(parent)
                        .or_default()
                        .insert(c.to_os_string());
                }
            }
        }
        if self
            .nodes
            .get(&rel)
            .is_some_and(|old| old.kind == Kind::Dir)
        {
            if node.kind == Kind::Dir {
                self.nodes.insert(rel, node);
                return Ok(());
            }
            self.remove_below(&rel);
        }
        let parent = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        let name = rel.file_name().unwrap_or_default().to_os_string();
        self.children.entry(parent).or_default().insert(name);
        self.nodes.insert(rel, node);
        Ok(())
    }

    fn remove_below(&mut self, dir: &Path) {
        let below: Vec<PathBuf> = self
            .nodes
            .range(dir.to_path_buf()..)
            .skip(1)
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            self.nodes.remove(&p);
            self.children.remove(&p);
        }
        self.children.remove(dir);
    }

    /// The entry at `rel` (`""` is the top), if any.
    pub(crate) fn get(&self, rel: &Path) -> Option<&Node> {
        self.nodes.get(rel)
    }

    /// The names in the directory `rel`, sorted.
    pub(crate) fn children(&self, rel: &Path) -> Vec<String> {
        self.children
            .get(rel)
            .map(|c| c.iter().map(|n| n.to_string_lossy().into_owned()).collect())
            .unwrap_or_default()
    }

    /// Reads `node`'s data.
    pub(crate) fn data(&self, node: &Node) -> DataReader<'_> {
        DataReader {
            tar: &self.tar,
            pos: node.offset,
            end: node.offset + node.size,
        }
    }

    /// The text of the regular file `name` (never through a symlink).
    pub(crate) fn read_file(&self, name: &str) -> io::Result<String> {
        let node = self
            .get(Path::new(name))
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such file"))?;
        if node.kind != Kind::File {
            return Err(io::Error::other(format!("{name} is not a regular file")));
        }
        let mut s = String::new();
        self.data(node).read_to_string(&mut s)?;
        Ok(s)
    }

    /// How many entries the index has (the top included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.nodes.len()
    }
}

#[cfg(test)]
#[path = "context_tests.rs"]
mod tests;
