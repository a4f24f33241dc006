//! The overlay's state: the layers, the inode table and the per-node locations, plus
//! lookups, attributes and copy-up. The FUSE request handlers are in `ops`.
//!
//! Locking: `ns` is a readers–writer lock over the namespace. Lookups, reads and attribute
//! queries take it shared; anything that changes names or moves a node to the upper layer
//! (create, unlink, rename, link, copy-up) takes it exclusively. Each node has its own
//! mutex, held briefly and never two at once, and the inode table has a short-held mutex.

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use fuser::{FileAttr, INodeNo};

pub use super::attr::{attr_of, kind_of_dtype};

use super::layers::{self, Ent, Listing, INO_XATTR};
use super::sys::{self, SysResult};

/// FUSE's root node id.
pub const ROOT: u64 = 1;

/// Where a node lives and what the kernel knows about it.
#[derive(Debug)]
pub struct NodeState {
    /// The parent directory's node id (the root is its own parent).
    pub parent: u64,
    /// The name in the parent.
    pub name: OsString,
    /// The layer of the topmost copy (0 = upper).
    pub layer: usize,
    /// The real directory holding the topmost copy.
    pub dirfd: Arc<OwnedFd>,
    /// The kernel's lookup count.
    pub nlookup: u64,
    /// For directories: the real directory in each layer it spans, top first.
    pub fds: Vec<(usize, Arc<OwnedFd>)>,
    /// For directories: the cached merged listing.
    pub listing: Option<Listing>,
    /// The cached xattr names (absent names are answered without a syscall).
    pub xattrs: Option<Arc<Vec<OsString>>>,
    /// For upper non-directories (but symlinks): an `O_PATH` fd of the file itself, so
    /// hard links and unlinked-but-open files keep working whatever their names do.
    pub pathfd: Option<Arc<OwnedFd>>,
    /// Set when a lower-layer file's name was whited out (it must not be copied up).
    pub unlinked: bool,
    /// For one name of a hard-linked lower file (a node of its own, see
    /// [`per_name_ino`]): the inode number all its names show until this one is copied
    /// up. None for every other node.
    pub shared: Option<u64>,
}

/// One inode of the merged tree.
#[derive(Debug)]
pub struct Node {
    /// The stable inode number (also the FUSE node id).
    pub ino: u64,
    /// Whether it is a directory.
    pub is_dir: bool,
    /// Mutable state.
    pub st: Mutex<NodeState>,
}

impl Node {
    /// Locks the state (a poisoned lock is still usable: the state stays consistent).
    pub fn lock(&self) -> MutexGuard<'_, NodeState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A listing snapshot taken at opendir, served by readdir.
pub type DirSnapshot = Arc<Vec<(OsString, Ent)>>;

/// The overlay filesystem.
#[derive(Debug)]
pub struct Overlay {
    /// Layer roots: 0 is the upper layer, then the lower layers top first.
    pub layers: Vec<Arc<OwnedFd>>,
    /// The work directory (same filesystem as the upper layer).
    pub work: OwnedFd,
    /// The inode table (shared with the idle [`super::idle::Shedder`]).
    pub nodes: Arc<Mutex<HashMap<u64, Arc<Node>>>>,
    /// The namespace lock (shared with the idle [`super::idle::Shedder`]).
    pub ns: Arc<RwLock<()>>,
    /// Devices of the layers, to keep inode numbers unique across filesystems.
    devs: Vec<u64>,
    /// The device of each layer's root (by layer index).
    layer_devs: Vec<u64>,
    /// The longest name any layer's filesystem takes (NAME_MAX, as kernel overlay).
    pub name_max: usize,
    /// Counter for temporary names in the work dir.
    tmp: AtomicU64,
    /// Open directory handles: snapshots of merged listings.
    pub dirs: Arc<Mutex<HashMap<u64, DirSnapshot>>>,
    /// The next directory handle.
    pub next_dh: AtomicU64,
    /// Handles open on lower-layer files (moved to the copy at copy-up).
    pub lower_handles: super::handles::LowerHandles,
    /// Upper-layer inode (`st_ino`) → stable inode number, so a lookup or a listing of
    /// an upper file reads its [`INO_XATTR`] once, not every time. Every new upper
    /// file or directory is made by this server (create, mkdir, copy-up), and each
    /// records its entry, so a number the backing filesystem reuses is overwritten
    /// before it can be looked up.
    pub(super) upper_inos: Arc<Mutex<HashMap<u64, u64>>>,
    /// Notifications to the kernel (set once the session exists).
    pub notifier: Arc<std::sync::OnceLock<fuser::Notifier>>,
}

/// Entries kept in [`Overlay::upper_inos`] before it is emptied (and refilled).
const UPPER_INOS_MAX: usize = 1 << 20;

/// Attribute and entry time-to-live: the lower layers never change under us and every
/// change to the upper goes through this server, so the kernel may cache for long.
pub const TTL: Duration = Duration::from_secs(1_000_000);

impl Overlay {
    /// Opens the layers. `lower` is top first.
    pub fn new(
        lower: &[std::path::PathBuf],
        upper: &std::path::Path,
        work: &std::path::Path,
    ) -> std::io::Result<Overlay> {
        let open = |p: &std::path::Path| -> std::io::Result<OwnedFd> {
            sys::openat(
                libc::AT_FDCWD,
                p.as_os_str(),
                libc::O_PATH | libc::O_DIRECTORY,
                0,
            )
            .map_err(|e| {
                std::io::Error::new(
                    std::io::Error::from_raw_os_error(e).kind(),
                    format!(
                        "open {}: {}",
                        p.display(),
                        std::io::Error::from_raw_os_error(e)
                    ),
                )
            })
        };
        let mut layers = vec![Arc::new(open(upper)?)];
        for l in lower {
            layers.push(Arc::new(open(l)?));
        }
        let work = open(work)?;
        // Leftovers of an interrupted copy-up are garbage: clean the work dir at mount.
        if let Ok(entries) = sys::read_dir(work.as_raw_fd()) {
            for (name, dtype, _) in entries {
                if dtype != libc::DT_DIR {
                    let _ = sys::unlinkat(work.as_raw_fd(), &name, 0);
                }
            }
        }
        let mut devs = Vec::new();
        let mut layer_devs = Vec::new();
        let mut name_max = 0;
        for l in &layers {
            let st = sys::fstat(l.as_raw_fd()).map_err(std::io::Error::from_raw_os_error)?;
            if !devs.contains(&st.st_dev) {
                devs.push(st.st_dev);
            }
            layer_devs.push(st.st_dev);
            name_max = name_max.max(sys::name_max(l.as_raw_fd()));
        }
        let ov = Overlay {
            layers,
            work,
            nodes: Default::default(),
            ns: Default::default(),
            devs,
            layer_devs,
            name_max,
            tmp: AtomicU64::new(0),
            dirs: Default::default(),
            next_dh: AtomicU64::new(1),
            lower_handles: Default::default(),
            upper_inos: Default::default(),
            notifier: Default::default(),
        };
        let mut fds = vec![(0, ov.layers[0].clone())];
        if !layers::is_opaque(ov.layers[0].as_raw_fd()) {
            for (i, l) in ov.layers.iter().enumerate().skip(1) {
                fds.push((i, l.clone()));
                if layers::is_opaque(l.as_raw_fd()) {
                    break;
                }
            }
        }
        let root = Node {
            ino: ROOT,
            is_dir: true,
            st: Mutex::new(NodeState {
                parent: ROOT,
                name: OsString::new(),
                layer: 0,
                dirfd: ov.layers[0].clone(),
                nlookup: 1,
                fds,
                listing: None,
                xattrs: None,
                pathfd: None,
                unlinked: false,
                shared: None,
            }),
        };
        ov.table().insert(ROOT, Arc::new(root));
        Ok(ov)
    }

    /// Locks the inode table.
    pub fn table(&self) -> MutexGuard<'_, HashMap<u64, Arc<Node>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The node with this id.
    pub fn node(&self, ino: INodeNo) -> SysResult<Arc<Node>> {
        self.table().get(&ino.0).cloned().ok_or(libc::ESTALE)
    }

    /// A fresh name for the work dir.
    pub fn tmp_name(&self) -> OsString {
        let n = self.tmp.fetch_add(1, Ordering::Relaxed);
        OsString::from(format!("#{}-{n}", std::process::id()))
    }

    /// The stable inode number of a real file.
    fn stable_ino(&self, dir: RawFd, name: &OsStr, st: &libc::stat, layer: usize) -> u64 {
        if layer == 0 && matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
            return self.upper_ino(dir, name, st.st_dev, st.st_ino);
        }
        self.ino_on_dev(st.st_dev, st.st_ino)
    }

    /// The stable inode number of a listed entry, as [`Overlay::lookup`] would give it,
    /// without a stat: the entry's device is taken to be its layer's.
    pub fn entry_ino(&self, dir: RawFd, name: &OsStr, ent: &layers::Ent) -> u64 {
        let dev = self.layer_devs.get(ent.layer).copied().unwrap_or(0);
        if ent.layer == 0 && matches!(ent.dtype, libc::DT_REG | libc::DT_DIR) {
            return self.upper_ino(dir, name, dev, ent.dino);
        }
        self.ino_on_dev(dev, ent.dino)
    }

    fn upper_inos(&self) -> MutexGuard<'_, HashMap<u64, u64>> {
        self.upper_inos.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stable inode number of the upper file or directory `dir`/`name` (upper inode
    /// `real` on device `dev`): the one recorded at its copy-up, else its own.
    fn upper_ino(&self, dir: RawFd, name: &OsStr, dev: u64, real: u64) -> u64 {
        if let Some(n) = self.upper_inos().get(&real) {
            return *n;
        }
        match recorded_ino(dir, name) {
            Ok(recorded) => {
                let n = recorded.unwrap_or_else(|| self.ino_on_dev(dev, real));
                self.note_upper(real, n);
                n
            }
            // Not known for sure: not cached.
            Err(_) => self.ino_on_dev(dev, real),
        }
    }

    /// Records that the upper inode `real` (a file or directory just made by this
    /// server) shows as `ino`. Every creation of an upper file or directory calls this.
    pub fn note_upper(&self, real: u64, ino: u64) {
        let mut map = self.upper_inos();
        if map.len() >= UPPER_INOS_MAX {
            map.clear();
        }
        map.insert(real, ino);
    }

    /// Forgets the recorded number of the upper inode `real`, whose name was just
    /// removed: the map then follows the upper layer's live files instead of filling up
    /// to [`UPPER_INOS_MAX`] with the numbers of deleted ones (a filesystem that does not
    /// reuse inode numbers soon, as btrfs, never overwrites them). A file still linked
    /// elsewhere reads its number again at its next lookup.
    pub fn forget_upper(&self, real: u64) {
        self.upper_inos().remove(&real);
    }

    /// How many upper inodes have their shown number recorded.
    pub fn upper_ino_count(&self) -> usize {
        self.upper_inos().len()
    }

    /// Records a new upper node that has no recorded inode (made by create or mkdir):
    /// it shows as its own inode number.
    pub fn note_new_upper(&self, st: &libc::stat) {
        if matches!(st.st_mode & libc::S_IFMT, libc::S_IFREG | libc::S_IFDIR) {
            self.note_upper(st.st_ino, self.ino_on_dev(st.st_dev, st.st_ino));
        }
    }

    /// An inode number made unique across the layers' filesystems.
    fn ino_on_dev(&self, dev: u64, ino: u64) -> u64 {
        let idx = self.devs.iter().position(|d| *d == dev).unwrap_or(0) as u64;
        let ino = ino ^ (idx << 56);
        if ino == ROOT {
            u64::MAX - 1
        } else {
            ino
        }
    }

    /// Ensures the merged listing of a directory node is loaded and runs `f` on it.
    pub fn with_listing<R>(
        &self,
        node: &Node,
        f: impl FnOnce(&mut Listing, &[(usize, Arc<OwnedFd>)]) -> R,
    ) -> SysResult<R> {
        let mut st = node.lock();
        if st.listing.is_none() {
            st.listing = Some(layers::merge_listing(&st.fds)?);
        }
        let NodeState { listing, fds, .. } = &mut *st;
        let listing = listing.as_mut().ok_or(libc::EIO)?;
        Ok(f(listing, fds))
    }

    /// Looks `name` up in directory `parent`; counts a kernel lookup when `count`.
    pub fn lookup(
        &self,
        parent: &Node,
        name: &OsStr,
        count: bool,
    ) -> SysResult<(Arc<Node>, FileAttr)> {
        if name.len() > self.name_max {
            return Err(libc::ENAMETOOLONG);
        }
        let (ent, pfds) =
            self.with_listing(parent, |l, fds| (l.map.get(name).copied(), fds.to_vec()))?;
        let ent = ent.ok_or(libc::ENOENT)?;
        let dirfd = pfds
            .iter()
            .find(|(l, _)| *l == ent.layer)
            .map(|(_, fd)| fd.clone())
            .ok_or(libc::EIO)?;
        let st = sys::statat(dirfd.as_raw_fd(), name)?;
        self.attach(parent, name, ent.layer, dirfd, &pfds, &st, count)
    }

    /// The node of `name` in directory `parent`, found in layer `layer` (whose real
    /// directory is `dirfd`; `pfds` are the parent's layers) with stat `st`: the known
    /// one or a new one; counts a kernel lookup when `count`.
    #[allow(clippy::too_many_arguments)]
    pub fn attach(
        &self,
        parent: &Node,
        name: &OsStr,
        layer: usize,
        dirfd: Arc<OwnedFd>,
        pfds: &[(usize, Arc<OwnedFd>)],
        st: &libc::stat,
        count: bool,
    ) -> SysResult<(Arc<Node>, FileAttr)> {
        let ent_layer = layer;
        let is_dir = st.st_mode & libc::S_IFMT == libc::S_IFDIR;
        let mut ino = self.stable_ino(dirfd.as_raw_fd(), name, st, ent_layer);
        let mut shared = None;
        if ent_layer > 0 && !is_dir && st.st_nlink > 1 {
            // A hard-linked lower file: each name is a node of its own (a FUSE open or
            // setattr names no file name, so with one node a write could not tell which
            // name to copy up), all showing the lower file's number until copied up.
            shared = Some(ino);
            ino = per_name_ino(ino, parent.ino, name);
        }
        let existing = self.table().get(&ino).cloned();
        let node = match existing {
            Some(n) if n.is_dir == is_dir => self.counted(n, count),
            _ => {
                let fds = if is_dir {
                    layers::dir_layers(pfds, ent_layer, name)
                } else {
                    Vec::new()
                };
                let n = Arc::new(Node {
                    ino,
                    is_dir,
                    st: Mutex::new(NodeState {
                        parent: parent.ino,
                        name: name.to_os_string(),
                        layer: ent_layer,
                        dirfd: dirfd.clone(),
                        nlookup: 0,
                        fds,
                        listing: None,
                        xattrs: None,
                        pathfd: None,
                        unlinked: false,
                        shared,
                    }),
                });
                let n = self.table().entry(ino).or_insert(n).clone();
                self.counted(n, count)
            }
        };
        let nfds = {
            let mut s = node.lock();
            if !is_dir {
                s.parent = parent.ino;
                s.name = name.to_os_string();
                s.layer = ent_layer;
                s.unlinked = false;
                s.shared = shared;
                if ent_layer == 0 && s.pathfd.is_none() && has_pathfd(st) {
                    s.pathfd = sys::openat(dirfd.as_raw_fd(), name, libc::O_PATH, 0)
                        .ok()
                        .map(Arc::new);
                }
                s.dirfd = dirfd;
            }
            s.fds.len()
        };
        Ok((node.clone(), attr_of(ino, st, nfds)))
    }

    /// The attributes of a node (from `fh` when given, which works for unlinked files),
    /// with the inode number `stat` shows (for one name of a hard-linked lower file the
    /// number all its names share, not the node id). Only GETATTR may answer with them:
    /// an entry reply must carry the node id (see [`Overlay::entry_attr_ttl`]).
    pub fn getattr(&self, node: &Node, fh: Option<RawFd>) -> SysResult<FileAttr> {
        let (dirfd, name) = self.location(node)?;
        let (nfds, shown) = {
            let s = node.lock();
            (s.fds.len(), s.shared.unwrap_or(node.ino))
        };
        let st = match fh {
            Some(fd) => sys::fstat(fd)?,
            None => sys::statat(dirfd.as_raw_fd(), &name)?,
        };
        Ok(attr_of(shown, &st, if node.is_dir { nfds } else { 0 }))
    }

    /// How long the kernel may keep the attributes of an entry reply (LOOKUP,
    /// READDIRPLUS) for `node`. fuser makes such a reply's inode number the node id, so
    /// for one name of a hard-linked lower file (whose node id is its own, see
    /// [`per_name_ino`]) they are not kept at all: the next `stat` then asks GETATTR,
    /// which answers the number all the names share, and that is kept.
    pub fn entry_attr_ttl(node: &Node) -> Duration {
        if node.lock().shared.is_some() {
            Duration::ZERO
        } else {
            TTL
        }
    }

    /// The real location (dir fd, name) of a node's topmost copy; for a directory the
    /// name is empty and the fd is the directory itself.
    pub fn location(&self, node: &Node) -> SysResult<(Arc<OwnedFd>, OsString)> {
        let s = node.lock();
        if node.is_dir {
            let fd = s
                .fds
                .first()
                .map(|(_, fd)| fd.clone())
                .ok_or(libc::ESTALE)?;
            Ok((fd, OsString::new()))
        } else if let Some(fd) = &s.pathfd {
            Ok((fd.clone(), OsString::new()))
        } else {
            Ok((s.dirfd.clone(), s.name.clone()))
        }
    }

    /// `node` (found in or put into the table), with one kernel lookup more when
    /// `count`. The count is taken under the table's lock, so that a node the kernel is
    /// about to know cannot be dropped in between by [`Overlay::forget`] or
    /// [`Overlay::release`] (a later request for its id would then find nothing): if it
    /// was, it goes back into the table.
    fn counted(&self, node: Arc<Node>, count: bool) -> Arc<Node> {
        let mut table = self.table();
        let node = table.entry(node.ino).or_insert(node).clone();
        if count {
            node.lock().nlookup += 1;
        }
        node
    }

    /// Drops `node` from the table if the kernel has no reference to it (a lookup that
    /// counted none: rename's and unlink's, or a READDIRPLUS entry that did not fit in
    /// the reply). The kernel never sends a FORGET for such a node, so without this it
    /// would stay for the server's life, holding its `O_PATH` fd (and with it the space
    /// of a file deleted since). Nothing else needs it: it is made again, from the
    /// layers, by the next lookup.
    pub fn release(&self, node: &Arc<Node>) {
        if node.ino == ROOT {
            return;
        }
        let mut table = self.table();
        let unreferenced = node.lock().nlookup == 0;
        if unreferenced && table.get(&node.ino).is_some_and(|n| Arc::ptr_eq(n, node)) {
            table.remove(&node.ino);
        }
    }

    /// How many nodes the table holds (the root included).
    pub fn node_count(&self) -> usize {
        self.table().len()
    }

    /// Drops `n` kernel lookups of a node (FORGET; fuser splits BATCH_FORGET into
    /// these); forgets it at zero.
    pub fn forget(&self, ino: u64, n: u64) {
        if ino == ROOT {
            return;
        }
        let mut table = self.table();
        let gone = match table.get(&ino) {
            Some(node) => {
                let mut s = node.lock();
                s.nlookup = s.nlookup.saturating_sub(n);
                s.nlookup == 0
            }
            None => false,
        };
        if gone {
            table.remove(&ino);
            tracing::trace!(ino, nodes = table.len(), "node forgotten");
        }
    }
}

/// The inode number a copied-up file keeps in [`INO_XATTR`], if any (an unreadable
/// value counts as none).
fn recorded_ino(dir: RawFd, name: &OsStr) -> SysResult<Option<u64>> {
    tracing::trace!(?name, "reading the recorded inode number");
    let p = sys::xpath(dir, name)?;
    Ok(sys::getxattr(&p, OsStr::new(INO_XATTR))?
        .and_then(|v| std::str::from_utf8(&v).ok()?.parse().ok()))
}

/// The node id of one name (`name` in directory node `parent`) of a hard-linked lower file
/// whose shared number is `ino`: stable across lookups and mounts (a fixed hash, and a
/// copy-up records it as the copy's number), with the top bit set, which the numbers of
/// real files ([`Overlay::ino_on_dev`]: inode numbers below 2^56 plus a layer-device
/// index) leave clear. After a copy-up it is also the number the copy shows: a new one,
/// as the kernel overlay (without `index`) shows the copy's own.
fn per_name_ino(ino: u64, parent: u64, name: &OsStr) -> u64 {
    use std::hash::{Hash, Hasher};
    // SipHash with fixed zero keys: the same number for the same name every time.
    #[allow(deprecated)]
    let mut h = std::hash::SipHasher::new();
    ino.hash(&mut h);
    parent.hash(&mut h);
    name.hash(&mut h);
    let n = h.finish() | (1 << 63);
    if n >= u64::MAX - 1 {
        1 << 63
    } else {
        n
    }
}

/// Whether a node of this type gets an `O_PATH` fd of its own (not symlinks: xattr and
/// time calls through /proc would follow them).
pub(super) fn has_pathfd(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT != libc::S_IFLNK
}
