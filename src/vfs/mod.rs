//! The read-only filesystem view of a repository that `strata mount` serves: an inode table,
//! lookup, getattr, readdir, read, readlink and xattrs, in plain Rust types (no fuser), so it can be
//! tested without a kernel.
//!
//! Layout (documented exactly in docs/SEMANTICS.md):
//!
//! ```text
//! /latest -> snapshots/<newest>
//! /snapshots/<time>-<short id>/...            a snapshot's whole view
//! /changes/<time>-<short id>/...              only that snapshot's own layer, plus .deleted, .deleted0
//! /sources/<source>/{latest,<name>} -> ../../snapshots/<name>
//! /tags/<tag>/<name>                -> ../../snapshots/<name>
//! /kinds/{full,incremental,differential}/<name> -> ../../snapshots/<name>
//! /versions/<source>/<path>/<time>            each distinct version of a file (see versions.rs)
//! ```
//!
//! Invariants: an inode number, once handed out, names the same object for the life of the `Vfs`
//! (nodes are never freed or reused); hard links inside one snapshot view share one inode; nothing
//! of a snapshot is loaded until something inside it is looked up (listing `snapshots/` reads only
//! each snapshot's root entry). Content reads go through a bounded LRU of verified chunks; a chunk
//! that fails verification is an error for that read only, never wrong bytes.
//!
//! Must not: know fuser, print, or panic on a data path.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

mod ahead;
mod cache;
pub(crate) mod dirahead;
mod versions;

pub use cache::{ChunkCache, Keep};

use lru::LruCache;

use crate::content::Fetched;
use crate::entry::{Entry, Kind};
use crate::error::Error;
use crate::id::SnapshotId;
use crate::layers::{self, join, ChainBreak, Delta, LayerChanges, View};
use crate::repo::Repo;
use crate::snapshot::{BackupKind, Snapshot};

/// Inode number of the mount's root directory (FUSE's root id).
pub const ROOT_INO: u64 = 1;
// The fixed top-level inodes, allocated in this order by `Vfs::open`.
const SNAPSHOTS_INO: u64 = 2;
const SOURCES_INO: u64 = 3;
const TAGS_INO: u64 = 4;
const KINDS_INO: u64 = 5;
const CHANGES_INO: u64 = 6;
const VERSIONS_INO: u64 = 8;

/// Options for [`Vfs::open`].
#[derive(Clone, Debug)]
pub struct VfsOptions {
    /// Upper bound, in bytes, of the decompressed-chunk cache.
    pub cache_bytes: u64,
    /// Only show snapshots of these sources (empty: all).
    pub sources: Vec<String>,
    /// Owner shown for the synthetic top-level directories and symlinks.
    pub uid: u32,
    /// Group shown for the synthetic top-level directories and symlinks.
    pub gid: u32,
}

impl Default for VfsOptions {
    fn default() -> Self {
        VfsOptions {
            cache_bytes: 256 << 20,
            sources: Vec::new(),
            uid: 0,
            gid: 0,
        }
    }
}

/// What can go wrong in a filesystem operation. The FUSE adapter maps each variant to one errno.
#[derive(Debug, thiserror::Error)]
pub enum VfsError {
    /// No such name or inode.
    #[error("No such file or directory")]
    NotFound,
    /// A directory operation on something else.
    #[error("Not a directory")]
    NotADirectory,
    /// A file operation on a directory.
    #[error("Is a directory")]
    IsADirectory,
    /// `readlink` of something that is not a symlink, or reading a non-regular file.
    #[error("Invalid argument for this kind of file")]
    InvalidKind,
    /// The extended attribute does not exist.
    #[error("No such extended attribute")]
    NoXattr,
    /// The caller's buffer is too small for the value.
    #[error("Buffer too small")]
    Range,
    /// Any modification: the mount is read-only.
    #[error("Read-only file system")]
    ReadOnly,
    /// Repository data failed verification (chunk hash, undecodable metadata).
    #[error("Corrupt data under {path}: {source}")]
    Corrupt {
        /// Path in the mount.
        path: String,
        /// The repository error, naming the chunk.
        source: Error,
    },
    /// Any other repository error (I/O, database).
    #[error("Repository error under {path}: {source}")]
    Repo {
        /// Path in the mount.
        path: String,
        /// The repository error.
        source: Error,
    },
}

/// Shorthand for vfs results.
pub type VfsResult<T> = std::result::Result<T, VfsError>;

fn repo_err(path: impl FnOnce() -> String) -> impl FnOnce(Error) -> VfsError {
    move |e| match e {
        Error::PathNotFound { .. } | Error::SnapshotNotFound(_) => VfsError::NotFound,
        Error::NotADirectory { .. } => VfsError::NotADirectory,
        e if e.is_corruption() => VfsError::Corrupt {
            path: path(),
            source: e,
        },
        e => VfsError::Repo {
            path: path(),
            source: e,
        },
    }
}

/// Object types as the kernel sees them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// Regular file.
    File,
    /// Directory.
    Dir,
    /// Symbolic link.
    Symlink,
    /// Named pipe.
    Fifo,
    /// Character device.
    CharDev,
    /// Block device.
    BlockDev,
    /// Unix socket.
    Socket,
}

/// Attributes of one inode.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attr {
    /// Inode number (stable for the life of the mount).
    pub ino: u64,
    /// Object type.
    pub kind: FileKind,
    /// Permission and special bits (`& 0o7777`).
    pub perm: u32,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Apparent size in bytes.
    pub size: u64,
    /// 512-byte blocks actually stored (holes excluded).
    pub blocks: u64,
    /// Modification time (also shown as atime and ctime), ns since the epoch.
    pub mtime_ns: i64,
    /// Device number (Linux `dev_t` encoding) for devices.
    pub rdev: u64,
    /// True for snapshot content (never changes: long cache TTLs); false for the top-level lists.
    pub immutable: bool,
}

/// One directory entry as returned by [`Vfs::readdir`].
#[derive(Clone, Debug)]
pub struct DirItem {
    /// Name bytes (`.` and `..` included first).
    pub name: Vec<u8>,
    /// The child's attributes (for readdirplus).
    pub attr: Attr,
}

/// Answer to a size-probing xattr call (`size == 0` asks for the length only).
#[derive(Debug, PartialEq, Eq)]
pub enum XattrReply {
    /// The value's length.
    Size(u32),
    /// The value itself.
    Data(Vec<u8>),
}

/// Applies getxattr/listxattr size semantics: probe with 0, `Range` when the buffer is too small.
pub fn xattr_reply(value: Vec<u8>, size: u32) -> VfsResult<XattrReply> {
    if size == 0 {
        Ok(XattrReply::Size(value.len() as u32))
    } else if (size as usize) < value.len() {
        Err(VfsError::Range)
    } else {
        Ok(XattrReply::Data(value))
    }
}

/// Percent-encodes a source or tag name into one safe path component: `/` → `%2F`, `%` → `%25`,
/// NUL → `%00`; `.`, `..` and the empty name are encoded wholly (`%2E`, `%2E%2E`, `%`).
pub fn encode_component(name: &str) -> String {
    match name {
        "" => return "%".into(),
        "." => return "%2E".into(),
        ".." => return "%2E%2E".into(),
        _ => {}
    }
    let mut s = String::with_capacity(name.len());
    for c in name.chars() {
        match c {
            '/' => s.push_str("%2F"),
            '%' => s.push_str("%25"),
            '\0' => s.push_str("%00"),
            c => s.push(c),
        }
    }
    s
}

/// The directory name of a snapshot: `<RFC 3339 UTC time>-<short id>`, e.g.
/// `2026-11-25T22:09:13Z-5a194037`.
pub fn snapshot_name(s: &Snapshot) -> String {
    format!("{}-{}", s.time_rfc3339(), s.id.short())
}

/// The synthetic top-level objects.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum VKey {
    Root,
    Snapshots,
    Sources,
    Tags,
    Kinds,
    Changes,
    Latest,
    Source(String),
    SourceLatest(String),
    SourceLink(String, String),
    Tag(String),
    TagLink(String, String),
    /// Kind name as in `BackupKind::name`.
    Kind(&'static str),
    KindLink(&'static str, String),
    Versions,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Virtual(VKey),
    Path {
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
    },
    HardLink {
        snap: SnapshotId,
        changes: bool,
        src_ino: u64,
    },
    Deleted {
        snap: SnapshotId,
        nul: bool,
    },
    /// A directory under `versions/` (encoded source, path).
    Versions(String, Vec<u8>),
}

enum Node {
    Virtual(VKey),
    Content {
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
        entry: Entry,
        parent: u64,
    },
    Deleted {
        data: Arc<Vec<u8>>,
        mtime_ns: i64,
        parent: u64,
    },
    /// `versions/<source>/<path>`: the path's children and its versions.
    Versions {
        source: String,
        path: Vec<u8>,
        parent: u64,
    },
}

impl Node {
    /// Whether this node is the one a `Key::Path` names (see [`Vfs::intern_content`]: hard-linked
    /// files are interned by source inode, never by path).
    fn is_path(&self, key: &Key) -> bool {
        match (self, key) {
            (
                Node::Content {
                    snap,
                    changes,
                    path,
                    entry,
                    ..
                },
                Key::Path {
                    snap: ks,
                    changes: kc,
                    path: kp,
                },
            ) => {
                snap == ks
                    && changes == kc
                    && path == kp
                    && (entry.kind == Kind::Dir || entry.nlink <= 1)
            }
            _ => false,
        }
    }
}

struct Inodes<S = std::collections::hash_map::RandomState> {
    /// Node of inode `i + 1`.
    nodes: Vec<Arc<Node>>,
    /// Inode of each `Key::Path`, by the key's hash; the node holds the key itself, so a hit is
    /// confirmed against it. Keeping only the hash saves a second copy of every path: about
    /// 110 bytes per entry, 11 MB for a listed 100k-file snapshot.
    paths: HashMap<u64, u64>,
    /// Every other key, and the rare path whose hash another path already holds.
    others: HashMap<Key, u64>,
    hasher: S,
}

impl<S: BuildHasher + Default> Inodes<S> {
    fn new() -> Inodes<S> {
        Inodes {
            nodes: Vec::new(),
            paths: HashMap::new(),
            others: HashMap::new(),
            hasher: S::default(),
        }
    }

    fn get(&self, key: &Key) -> Option<u64> {
        if let Key::Path { .. } = key {
            let h = self.hasher.hash_one(key);
            if let Some(&ino) = self.paths.get(&h) {
                if self.nodes[ino as usize - 1].is_path(key) {
                    return Some(ino);
                }
            }
        }
        self.others.get(key).copied()
    }

    /// Adds `node` under `key` (which must not be present); returns its inode.
    fn insert(&mut self, key: Key, node: Node) -> u64 {
        self.nodes.push(Arc::new(node));
        let ino = self.nodes.len() as u64;
        if let Key::Path { .. } = key {
            let h = self.hasher.hash_one(&key);
            if let std::collections::hash_map::Entry::Vacant(v) = self.paths.entry(h) {
                v.insert(ino);
                return ino;
            }
        }
        self.others.insert(key, ino);
        ino
    }
}

struct SnapInfo {
    snap: Snapshot,
    name: String,
}

/// The snapshot list and its indexes. Replaced as a whole (behind an `RwLock`) when refreshed.
struct SnapList {
    /// Oldest first.
    list: Vec<SnapInfo>,
    by_name: HashMap<String, usize>,
    by_id: HashMap<SnapshotId, usize>,
    /// Encoded source → indexes, oldest first.
    sources: BTreeMap<String, Vec<usize>>,
    /// Encoded tag → indexes.
    tags: BTreeMap<String, Vec<usize>>,
}

impl SnapList {
    fn build(snaps: Vec<Snapshot>) -> SnapList {
        let mut l = SnapList {
            list: Vec::new(),
            by_name: HashMap::new(),
            by_id: HashMap::new(),
            sources: BTreeMap::new(),
            tags: BTreeMap::new(),
        };
        for s in snaps {
            let mut name = snapshot_name(&s);
            if l.by_name.contains_key(&name) {
                // Same second and same short id: fall back to the full id to stay unique.
                name = format!("{}-{}", s.time_rfc3339(), s.id);
            }
            let i = l.list.len();
            l.by_name.insert(name.clone(), i);
            l.by_id.insert(s.id, i);
            l.sources
                .entry(encode_component(&s.source))
                .or_default()
                .push(i);
            for t in &s.tags {
                let v = l.tags.entry(encode_component(t)).or_default();
                if v.last() != Some(&i) {
                    v.push(i);
                }
            }
            l.list.push(SnapInfo { snap: s, name });
        }
        l
    }

    fn newest_time(&self) -> i64 {
        self.list.last().map_or(0, |s| s.snap.time_ns)
    }
}

/// Directories of a layer that exist in `changes/` only to reach deeper changed entries.
type Synth = HashMap<Vec<u8>, BTreeSet<Vec<u8>>>;

/// `.deleted` and `.deleted0` contents.
type DeletedLists = (Arc<Vec<u8>>, Arc<Vec<u8>>);

#[derive(Default)]
struct SnapState {
    /// The resolved root entry (memoized along chains: listing `snapshots/` stays linear).
    root: OnceLock<Entry>,
    view: OnceLock<Arc<View>>,
    synth: OnceLock<Arc<Synth>>,
    deleted: OnceLock<DeletedLists>,
}

/// Sequential-read detection per inode, driving the pack readahead ([`PACK_AHEAD`]).
struct SeqState {
    /// The furthest offset read so far.
    reached: u64,
    /// Reads in a row that landed near `reached`, up to [`STREAMING_RUN`].
    run: u32,
    /// File offset up to which the chunks' pack bytes were asked for ([`PACK_AHEAD`]).
    advised: u64,
}

/// A read landing within this distance of the furthest point read so far continues a stream:
/// the kernel's readahead has a few requests in flight, which workers may finish out of order.
const STREAM_SLACK: u64 = 8 << 20;
/// Reads in a row that make a reader streaming.
const STREAMING_RUN: u32 = 4;
/// Files whose sequential-read state is kept; the least recently read is dropped beyond it.
const SEQ_FILES: NonZeroUsize = NonZeroUsize::new(4096).expect("nonzero");

/// Reads at least this large come from the kernel's readahead of a streaming reader (random and
/// small reads ask for a few pages): the chunks they only partly cover are kept briefly
/// ([`Keep::Briefly`]).
pub const STREAM_REQUEST: usize = 256 << 10;
/// How far past a sequential reader the pack bytes of the coming chunks are asked into the page
/// cache (`will_need`), in steps of at least [`PACK_AHEAD_STEP`]: the disk keeps streaming while
/// the chunks in hand are decoded and verified.
const PACK_AHEAD: u64 = 32 << 20;
const PACK_AHEAD_STEP: u64 = 8 << 20;

/// The filesystem view. Shared by all FUSE worker threads (`&self` everywhere).
pub struct Vfs {
    repo: Arc<Repo>,
    opts: VfsOptions,
    snaps: RwLock<Arc<SnapList>>,
    inodes: RwLock<Inodes>,
    states: Mutex<HashMap<SnapshotId, Arc<SnapState>>>,
    cache: Arc<ChunkCache>,
    seq: Mutex<LruCache<u64, SeqState>>,
    /// Lookup threads for streaming readers' chunks.
    ahead: ahead::Ahead,
    histories: versions::HistoryCache,
    dirahead: Mutex<dirahead::DirAhead>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Vfs {
    /// Builds the view: reads the snapshot records (not their trees).
    pub fn open(repo: Arc<Repo>, opts: VfsOptions) -> crate::Result<Vfs> {
        let cache = Arc::new(ChunkCache::new(repo.clone(), opts.cache_bytes));
        let mut inodes = Inodes::new();
        for k in [
            VKey::Root,
            VKey::Snapshots,
            VKey::Sources,
            VKey::Tags,
            VKey::Kinds,
            VKey::Changes,
            VKey::Latest,
            VKey::Versions,
        ] {
            inodes.insert(Key::Virtual(k.clone()), Node::Virtual(k));
        }
        let vfs = Vfs {
            ahead: ahead::Ahead::start(repo.clone(), cache.locations().clone()),
            repo,
            opts,
            snaps: RwLock::new(Arc::new(SnapList::build(Vec::new()))),
            inodes: RwLock::new(inodes),
            states: Mutex::new(HashMap::new()),
            cache,
            seq: Mutex::new(LruCache::new(SEQ_FILES)),
            histories: Default::default(),
            dirahead: Default::default(),
        };
        vfs.refresh()?;
        Ok(vfs)
    }

    /// Re-reads the snapshot list. Inodes already handed out keep their meaning; new snapshots
    /// become visible (the top-level lists have short TTLs).
    pub fn refresh(&self) -> crate::Result<()> {
        let all = self.repo.snapshots()?;
        let filtered = all
            .into_iter()
            .filter(|s| self.opts.sources.is_empty() || self.opts.sources.contains(&s.source))
            .collect();
        *self.snaps.write().unwrap_or_else(|e| e.into_inner()) =
            Arc::new(SnapList::build(filtered));
        Ok(())
    }

    /// Number of snapshots shown.
    pub fn snapshot_count(&self) -> usize {
        self.snap_list().list.len()
    }

    /// Directory names under `snapshots/`, oldest first.
    pub fn snapshot_names(&self) -> Vec<String> {
        self.snap_list()
            .list
            .iter()
            .map(|s| s.name.clone())
            .collect()
    }

    /// Chunk cache statistics: (hits, misses, bytes held).
    pub fn cache_stats(&self) -> (u64, u64, u64) {
        self.cache.stats()
    }

    fn snap_list(&self) -> Arc<SnapList> {
        self.snaps.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn node(&self, ino: u64) -> VfsResult<Arc<Node>> {
        let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        ino.checked_sub(1)
            .and_then(|i| t.nodes.get(i as usize))
            .cloned()
            .ok_or(VfsError::NotFound)
    }

    /// The inode for `key`, creating its node with `make` the first time.
    fn intern(&self, key: Key, make: impl FnOnce() -> Node) -> u64 {
        if let Some(ino) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return ino;
        }
        let mut t = self.inodes.write().unwrap_or_else(|e| e.into_inner());
        if let Some(ino) = t.get(&key) {
            return ino;
        }
        t.insert(key, make())
    }

    fn state(&self, id: &SnapshotId) -> Arc<SnapState> {
        lock(&self.states).entry(*id).or_default().clone()
    }

    fn view(&self, id: &SnapshotId) -> VfsResult<Arc<View>> {
        let st = self.state(id);
        if let Some(v) = st.view.get() {
            return Ok(v.clone());
        }
        let v = Arc::new(
            View::open(&self.repo, id).map_err(repo_err(|| format!("snapshot {}", id.short())))?,
        );
        let _ = st.view.set(v);
        Ok(st.view.get().cloned().expect("set above"))
    }

    fn snap_label(&self, id: &SnapshotId) -> String {
        let l = self.snap_list();
        l.by_id
            .get(id)
            .map_or_else(|| id.short(), |&i| l.list[i].name.clone())
    }

    fn content_path(&self, id: &SnapshotId, changes: bool, path: &[u8]) -> String {
        let top = if changes { "changes" } else { "snapshots" };
        let mut s = format!("{top}/{}", self.snap_label(id));
        if !path.is_empty() {
            s.push('/');
            s.push_str(&lossy(path));
        }
        s
    }

    /// A snapshot's root entry without opening its view: the newest layer of its chain holding a
    /// root entry (every layer that changed the root holds one; a full always does).
    fn root_entry(&self, id: &SnapshotId) -> VfsResult<Entry> {
        let err = || format!("snapshots/{}", self.snap_label(id));
        let st = self.state(id);
        if let Some(e) = st.root.get() {
            return Ok(e.clone());
        }
        let list = self.snap_list();
        let mut visited: Vec<Arc<SnapState>> = Vec::new();
        let mut found = None;
        let from_list =
            |id: &SnapshotId| Ok::<_, ChainBreak>(list.by_id.get(id).map(|&i| &list.list[i].snap));
        let chain = list
            .by_id
            .get(id)
            .and_then(|&i| layers::chain_of(&list.list[i].snap, list.list.len(), from_list).ok())
            .unwrap_or_default();
        for (i, lid) in chain.iter().enumerate() {
            let cst = self.state(lid);
            if let Some(e) = cst.root.get() {
                found = Some(e.clone());
                break;
            }
            visited.push(cst);
            // A layer holding the root entry lists the root among its touched directories (the
            // rule the layers module resolves by; the full ending the chain keeps no list), so a
            // layer whose list is in memory and lacks it is passed without a sled read: at the end
            // of a long chain of small incrementals, 503 reads (22 ms cold) become one.
            let full = i + 1 == chain.len();
            let skip = !full
                && LayerChanges::of(&self.repo, lid)
                    .cached_dirs()
                    .is_some_and(|d| !d.contains_key(b"".as_slice()));
            if !skip {
                let d = LayerChanges::of(&self.repo, lid)
                    .at(b"", b"")
                    .map_err(repo_err(err))?;
                if let Some(e) = d.and_then(Delta::entry).filter(|e| e.kind == Kind::Dir) {
                    found = Some(e);
                    break;
                }
            }
        }
        let root = match found {
            Some(e) => e,
            // Chain not fully in the list (e.g. filtered); ask the layers module.
            None => {
                visited.clear();
                self.view(id)?.root().map_err(repo_err(err))?
            }
        };
        for v in visited.iter().chain(std::iter::once(&st)) {
            let _ = v.root.set(root.clone());
        }
        Ok(root)
    }

    // ----- attributes -----

    fn virtual_dir_attr(&self, ino: u64, list: &SnapList) -> Attr {
        Attr {
            ino,
            kind: FileKind::Dir,
            perm: 0o555,
            nlink: 2,
            uid: self.opts.uid,
            gid: self.opts.gid,
            size: 0,
            blocks: 0,
            mtime_ns: list.newest_time(),
            rdev: 0,
            immutable: false,
        }
    }

    fn link_target(&self, k: &VKey, list: &SnapList) -> VfsResult<Vec<u8>> {
        let snap_link = |name: &str| format!("../../snapshots/{name}").into_bytes();
        match k {
            VKey::Latest => list
                .list
                .last()
                .map(|s| format!("snapshots/{}", s.name).into_bytes())
                .ok_or(VfsError::NotFound),
            VKey::SourceLatest(src) => list
                .sources
                .get(src)
                .and_then(|v| v.last())
                .map(|&i| snap_link(&list.list[i].name))
                .ok_or(VfsError::NotFound),
            VKey::SourceLink(_, n) | VKey::TagLink(_, n) | VKey::KindLink(_, n) => Ok(snap_link(n)),
            _ => Err(VfsError::InvalidKind),
        }
    }

    fn link_time(k: &VKey, list: &SnapList) -> i64 {
        let t = |name: &str| {
            list.by_name
                .get(name)
                .map_or(0, |&i| list.list[i].snap.time_ns)
        };
        match k {
            VKey::SourceLink(_, n) | VKey::TagLink(_, n) | VKey::KindLink(_, n) => t(n),
            VKey::SourceLatest(src) => list
                .sources
                .get(src)
                .and_then(|v| v.last())
                .map_or(0, |&i| list.list[i].snap.time_ns),
            _ => list.newest_time(),
        }
    }

    fn virtual_attr(&self, ino: u64, k: &VKey) -> VfsResult<Attr> {
        let list = self.snap_list();
        match k {
            VKey::Latest
            | VKey::SourceLatest(_)
            | VKey::SourceLink(..)
            | VKey::TagLink(..)
            | VKey::KindLink(..) => {
                let target = self.link_target(k, &list)?;
                Ok(Attr {
                    ino,
                    kind: FileKind::Symlink,
                    perm: 0o777,
                    nlink: 1,
                    uid: self.opts.uid,
                    gid: self.opts.gid,
                    size: target.len() as u64,
                    blocks: 0,
                    mtime_ns: Self::link_time(k, &list),
                    rdev: 0,
                    // Links to one named snapshot never change; `latest` links do.
                    immutable: !matches!(k, VKey::Latest | VKey::SourceLatest(_)),
                })
            }
            _ => Ok(self.virtual_dir_attr(ino, &list)),
        }
    }

    /// Attributes of a stored entry.
    fn entry_attr(ino: u64, e: &Entry) -> Attr {
        let kind = match e.kind {
            Kind::File => FileKind::File,
            Kind::Dir => FileKind::Dir,
            Kind::Symlink => FileKind::Symlink,
            Kind::Fifo => FileKind::Fifo,
            Kind::CharDev => FileKind::CharDev,
            Kind::BlockDev => FileKind::BlockDev,
            Kind::Socket => FileKind::Socket,
            // Never interned (lookups treat whiteouts as absent); shown as an empty file if ever.
            Kind::Whiteout => FileKind::File,
        };
        let stored = match e.kind {
            Kind::File => e.stored_size(),
            Kind::Dir => e.size,
            _ => 0,
        };
        Attr {
            ino,
            kind,
            perm: e.mode & 0o7777,
            nlink: e.nlink.max(1),
            uid: e.uid,
            gid: e.gid,
            size: e.size,
            blocks: stored.div_ceil(512),
            mtime_ns: e.mtime_ns,
            rdev: e.rdev,
            immutable: true,
        }
    }

    fn attr_of(&self, ino: u64, node: &Node) -> VfsResult<Attr> {
        match node {
            Node::Virtual(k) => self.virtual_attr(ino, k),
            Node::Content { entry, .. } => Ok(Self::entry_attr(ino, entry)),
            Node::Versions { .. } => Ok(self.virtual_dir_attr(ino, &self.snap_list())),
            Node::Deleted { data, mtime_ns, .. } => Ok(Attr {
                ino,
                kind: FileKind::File,
                perm: 0o444,
                nlink: 1,
                uid: self.opts.uid,
                gid: self.opts.gid,
                size: data.len() as u64,
                blocks: (data.len() as u64).div_ceil(512),
                mtime_ns: *mtime_ns,
                rdev: 0,
                immutable: true,
            }),
        }
    }

    /// Attributes of an inode.
    pub fn getattr(&self, ino: u64) -> VfsResult<Attr> {
        let node = self.node(ino)?;
        self.attr_of(ino, &node)
    }

    // ----- lookup -----

    fn intern_virtual(&self, k: VKey) -> u64 {
        self.intern(Key::Virtual(k.clone()), || Node::Virtual(k))
    }

    fn intern_content(
        &self,
        snap: SnapshotId,
        changes: bool,
        path: Vec<u8>,
        entry: Entry,
        parent: u64,
    ) -> u64 {
        let key = if entry.kind != Kind::Dir && entry.nlink > 1 {
            Key::HardLink {
                snap,
                changes,
                src_ino: entry.ino,
            }
        } else {
            Key::Path {
                snap,
                changes,
                path: path.clone(),
            }
        };
        self.intern(key, || Node::Content {
            snap,
            changes,
            path,
            entry,
            parent,
        })
    }

    fn snapshot_root(&self, list: &SnapList, name: &[u8], changes: bool) -> VfsResult<u64> {
        let name = std::str::from_utf8(name).map_err(|_| VfsError::NotFound)?;
        let &i = list.by_name.get(name).ok_or(VfsError::NotFound)?;
        let id = list.list[i].snap.id;
        let key = Key::Path {
            snap: id,
            changes,
            path: Vec::new(),
        };
        if let Some(ino) = self
            .inodes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
        {
            return Ok(ino);
        }
        let entry = if changes {
            self.own_entry(&id, b"", b"")?
                .map_or_else(|| self.root_entry(&id), Ok)?
        } else {
            self.root_entry(&id)?
        };
        let parent = if changes { CHANGES_INO } else { SNAPSHOTS_INO };
        Ok(self.intern_content(id, changes, Vec::new(), entry, parent))
    }

    /// Looks `name` up in directory `parent`; returns the child's attributes.
    pub fn lookup(&self, parent: u64, name: &[u8]) -> VfsResult<Attr> {
        let ino = self.lookup_ino(parent, name)?;
        self.getattr(ino)
    }

    fn lookup_ino(&self, parent: u64, name: &[u8]) -> VfsResult<u64> {
        let node = self.node(parent)?;
        if name == b"." {
            return Ok(parent);
        }
        if name == b".." {
            return Ok(self.parent_of(&node));
        }
        let list = self.snap_list();
        let s = std::str::from_utf8(name).ok();
        match &*node {
            Node::Virtual(k) => {
                let s = s.ok_or(VfsError::NotFound)?;
                let child = match k {
                    VKey::Root => match s {
                        "snapshots" => VKey::Snapshots,
                        "sources" => VKey::Sources,
                        "tags" => VKey::Tags,
                        "kinds" => VKey::Kinds,
                        "changes" => VKey::Changes,
                        "versions" => VKey::Versions,
                        "latest" if !list.list.is_empty() => VKey::Latest,
                        _ => return Err(VfsError::NotFound),
                    },
                    VKey::Snapshots => return self.snapshot_root(&list, name, false),
                    VKey::Changes => return self.snapshot_root(&list, name, true),
                    VKey::Sources if list.sources.contains_key(s) => VKey::Source(s.into()),
                    VKey::Tags if list.tags.contains_key(s) => VKey::Tag(s.into()),
                    VKey::Kinds => VKey::Kind(match s {
                        "full" => BackupKind::Full.name(),
                        "incremental" => BackupKind::Incremental.name(),
                        "differential" => BackupKind::Differential.name(),
                        _ => return Err(VfsError::NotFound),
                    }),
                    VKey::Source(src) => {
                        let v = list.sources.get(src).ok_or(VfsError::NotFound)?;
                        if s == "latest" && !v.is_empty() {
                            VKey::SourceLatest(src.clone())
                        } else if v.iter().any(|&i| list.list[i].name == s) {
                            VKey::SourceLink(src.clone(), s.into())
                        } else {
                            return Err(VfsError::NotFound);
                        }
                    }
                    VKey::Tag(t) => {
                        let v = list.tags.get(t).ok_or(VfsError::NotFound)?;
                        if v.iter().any(|&i| list.list[i].name == s) {
                            VKey::TagLink(t.clone(), s.into())
                        } else {
                            return Err(VfsError::NotFound);
                        }
                    }
                    VKey::Kind(kind) => {
                        let &i = list.by_name.get(s).ok_or(VfsError::NotFound)?;
                        if list.list[i].snap.kind.name() != *kind {
                            return Err(VfsError::NotFound);
                        }
                        VKey::KindLink(kind, s.into())
                    }
                    VKey::Latest
                    | VKey::SourceLatest(_)
                    | VKey::SourceLink(..)
                    | VKey::TagLink(..)
                    | VKey::KindLink(..) => return Err(VfsError::NotADirectory),
                    VKey::Sources | VKey::Tags => return Err(VfsError::NotFound),
                    VKey::Versions => return self.versions_source(&list, s),
                };
                Ok(self.intern_virtual(child))
            }
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => {
                if entry.kind != Kind::Dir {
                    return Err(VfsError::NotADirectory);
                }
                if *changes && path.is_empty() && (name == b".deleted" || name == b".deleted0") {
                    let nul = name == b".deleted0";
                    let (lines, nuls) = self.deleted_lists(snap)?;
                    let data = if nul { nuls } else { lines };
                    let mtime_ns = entry.mtime_ns;
                    return Ok(
                        self.intern(Key::Deleted { snap: *snap, nul }, || Node::Deleted {
                            data,
                            mtime_ns,
                            parent,
                        }),
                    );
                }
                let child_path = join(path, name);
                let err = || self.content_path(snap, *changes, &child_path);
                let child = if *changes {
                    match self.own_entry(snap, path, name)? {
                        Some(e) => e,
                        None if self
                            .synth(snap)?
                            .get(path)
                            .is_some_and(|c| c.contains(name)) =>
                        {
                            self.view(snap)?
                                .lookup(&child_path)
                                .map_err(repo_err(err))?
                        }
                        None => return Err(VfsError::NotFound),
                    }
                } else {
                    self.view(snap)?
                        .lookup_in(path, name)
                        .map_err(repo_err(err))?
                        .ok_or(VfsError::NotFound)?
                };
                Ok(self.intern_content(*snap, *changes, child_path, child, parent))
            }
            Node::Deleted { .. } => Err(VfsError::NotADirectory),
            Node::Versions { source, path, .. } => self.versions_lookup(parent, source, path, name),
        }
    }

    fn parent_of(&self, node: &Node) -> u64 {
        match node {
            Node::Virtual(k) => match k {
                VKey::Root
                | VKey::Snapshots
                | VKey::Sources
                | VKey::Tags
                | VKey::Kinds
                | VKey::Changes
                | VKey::Versions
                | VKey::Latest => ROOT_INO,
                VKey::Source(_) => SOURCES_INO,
                VKey::Tag(_) => TAGS_INO,
                VKey::Kind(_) => KINDS_INO,
                VKey::SourceLatest(s) | VKey::SourceLink(s, _) => {
                    self.intern_virtual(VKey::Source(s.clone()))
                }
                VKey::TagLink(t, _) => self.intern_virtual(VKey::Tag(t.clone())),
                VKey::KindLink(k, _) => self.intern_virtual(VKey::Kind(k)),
            },
            Node::Content { parent, .. }
            | Node::Deleted { parent, .. }
            | Node::Versions { parent, .. } => *parent,
        }
    }

    /// An entry of the snapshot's own layer (whiteouts count as absent).
    fn own_entry(&self, snap: &SnapshotId, dir: &[u8], name: &[u8]) -> VfsResult<Option<Entry>> {
        let err = || self.content_path(snap, true, &join(dir, name));
        let d = LayerChanges::of(&self.repo, snap)
            .at(dir, name)
            .map_err(repo_err(err))?;
        Ok(d.and_then(Delta::entry))
    }

    fn synth(&self, snap: &SnapshotId) -> VfsResult<Arc<Synth>> {
        let st = self.state(snap);
        if let Some(s) = st.synth.get() {
            return Ok(s.clone());
        }
        let dirs = LayerChanges::of(&self.repo, snap)
            .dirs()
            .map_err(repo_err(|| self.content_path(snap, true, b"")))?;
        let mut synth = Synth::new();
        for d in dirs.keys() {
            if d.is_empty() {
                continue;
            }
            let mut parent = Vec::new();
            for c in d.split(|&b| b == b'/') {
                synth.entry(parent.clone()).or_default().insert(c.to_vec());
                parent = join(&parent, c);
            }
        }
        let _ = st.synth.set(Arc::new(synth));
        Ok(st.synth.get().cloned().expect("set above"))
    }

    /// `.deleted` (newline-terminated) and `.deleted0` (NUL-terminated) contents: every path the
    /// snapshot's own layer whites out, sorted by bytes.
    fn deleted_lists(&self, snap: &SnapshotId) -> VfsResult<DeletedLists> {
        let st = self.state(snap);
        if let Some(d) = st.deleted.get() {
            return Ok(d.clone());
        }
        let view = self.view(snap)?;
        let err = || self.content_path(snap, true, b".deleted");
        let mut paths = Vec::new();
        if view.snapshot().kind != BackupKind::Full {
            for kv in view.changes().all() {
                let (dir, name, d) = kv.map_err(repo_err(err))?;
                if d == Delta::Deleted {
                    paths.push(join(&dir, &name));
                }
            }
        }
        paths.sort();
        let (mut lines, mut nuls) = (Vec::new(), Vec::new());
        for p in paths {
            lines.extend_from_slice(&p);
            lines.push(b'\n');
            nuls.extend_from_slice(&p);
            nuls.push(0);
        }
        let _ = st.deleted.set((Arc::new(lines), Arc::new(nuls)));
        Ok(st.deleted.get().cloned().expect("set above"))
    }

    // ----- readdir -----

    /// The whole listing of directory `ino`, `.` and `..` first, then children sorted by name
    /// (top-level lists in their documented order). Interns every child.
    pub fn readdir(&self, ino: u64) -> VfsResult<Vec<DirItem>> {
        let node = self.node(ino)?;
        let mut out = vec![
            DirItem {
                name: b".".to_vec(),
                attr: self.attr_of(ino, &node)?,
            },
            DirItem {
                name: b"..".to_vec(),
                attr: self.getattr(self.parent_of(&node))?,
            },
        ];
        let list = self.snap_list();
        let mut names: Vec<Vec<u8>> = Vec::new();
        match &*node {
            Node::Virtual(k) => match k {
                VKey::Root => {
                    if !list.list.is_empty() {
                        names.push(b"latest".to_vec());
                    }
                    for n in [
                        "snapshots",
                        "changes",
                        "sources",
                        "tags",
                        "kinds",
                        "versions",
                    ] {
                        names.push(n.as_bytes().to_vec());
                    }
                }
                VKey::Snapshots | VKey::Changes => {
                    names.extend(list.list.iter().map(|s| s.name.as_bytes().to_vec()))
                }
                VKey::Sources | VKey::Versions => {
                    names.extend(list.sources.keys().map(|s| s.as_bytes().to_vec()))
                }
                VKey::Tags => names.extend(list.tags.keys().map(|s| s.as_bytes().to_vec())),
                VKey::Kinds => {
                    for n in ["full", "incremental", "differential"] {
                        names.push(n.as_bytes().to_vec());
                    }
                }
                VKey::Source(src) => {
                    if let Some(v) = list.sources.get(src) {
                        names.push(b"latest".to_vec());
                        names.extend(v.iter().map(|&i| list.list[i].name.as_bytes().to_vec()));
                    }
                }
                VKey::Tag(t) => {
                    if let Some(v) = list.tags.get(t) {
                        names.extend(v.iter().map(|&i| list.list[i].name.as_bytes().to_vec()));
                    }
                }
                VKey::Kind(kind) => names.extend(
                    list.list
                        .iter()
                        .filter(|s| s.snap.kind.name() == *kind)
                        .map(|s| s.name.as_bytes().to_vec()),
                ),
                VKey::Latest
                | VKey::SourceLatest(_)
                | VKey::SourceLink(..)
                | VKey::TagLink(..)
                | VKey::KindLink(..) => return Err(VfsError::NotADirectory),
            },
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => {
                if entry.kind != Kind::Dir {
                    return Err(VfsError::NotADirectory);
                }
                return self.readdir_content(ino, out, snap, *changes, path, entry);
            }
            Node::Deleted { .. } => return Err(VfsError::NotADirectory),
            Node::Versions { source, path, .. } => {
                return self.versions_readdir(ino, out, source, path)
            }
        }
        for name in names {
            // Children of the top-level lists can vanish between listing and lookup on refresh.
            match self.lookup(ino, &name) {
                Ok(attr) => out.push(DirItem { name, attr }),
                Err(VfsError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    fn readdir_content(
        &self,
        ino: u64,
        mut out: Vec<DirItem>,
        snap: &SnapshotId,
        changes: bool,
        path: &[u8],
        entry: &Entry,
    ) -> VfsResult<Vec<DirItem>> {
        let err = || self.content_path(snap, changes, path);
        let mut children: Vec<(Vec<u8>, Entry)> = Vec::new();
        if !changes {
            for kv in self.view(snap)?.list(path).map_err(repo_err(err))? {
                children.push(kv.map_err(repo_err(err))?);
            }
        } else {
            let synth = self.synth(snap)?;
            let mut extra: BTreeSet<Vec<u8>> = synth.get(path).cloned().unwrap_or_default();
            for kv in LayerChanges::of(&self.repo, snap).under(path) {
                let (name, d) = kv.map_err(repo_err(err))?;
                extra.remove(&name);
                if let Delta::Set(e) = d {
                    children.push((name, e));
                }
            }
            if !extra.is_empty() {
                let view = self.view(snap)?;
                for name in extra {
                    let p = join(path, &name);
                    match view.lookup(&p) {
                        Ok(e) => children.push((name, e)),
                        Err(Error::PathNotFound { .. }) | Err(Error::NotADirectory { .. }) => {}
                        Err(e) => return Err(repo_err(err)(e)),
                    }
                }
                children.sort_by(|a, b| a.0.cmp(&b.0));
            }
            if path.is_empty() {
                children.retain(|(n, _)| n != b".deleted" && n != b".deleted0");
                for n in [&b".deleted"[..], b".deleted0"] {
                    let attr = self.lookup(ino, n)?;
                    out.push(DirItem {
                        name: n.to_vec(),
                        attr,
                    });
                }
            }
        }
        for (name, e) in children {
            let cino = self.intern_content(*snap, changes, join(path, &name), e, ino);
            let attr = self.getattr(cino)?;
            out.push(DirItem { name, attr });
        }
        let _ = entry;
        Ok(out)
    }

    // ----- content -----

    /// Target of a symlink.
    pub fn readlink(&self, ino: u64) -> VfsResult<Vec<u8>> {
        match &*self.node(ino)? {
            Node::Virtual(k) => self.link_target(k, &self.snap_list()),
            Node::Content { entry, .. } if entry.kind == Kind::Symlink => Ok(entry.target.clone()),
            _ => Err(VfsError::InvalidKind),
        }
    }

    /// Checks that `ino` can be opened for reading; directories and other kinds are refused.
    pub fn open_file(&self, ino: u64, write: bool) -> VfsResult<()> {
        if write {
            return Err(VfsError::ReadOnly);
        }
        match &*self.node(ino)? {
            Node::Content { entry, .. } if entry.kind == Kind::Dir => Err(VfsError::IsADirectory),
            Node::Virtual(VKey::Latest | VKey::SourceLatest(_)) => Err(VfsError::InvalidKind),
            Node::Virtual(_) | Node::Versions { .. } => Err(VfsError::IsADirectory),
            _ => Ok(()),
        }
    }

    /// Up to `size` bytes at `offset` (fewer at end of file; holes read as zeros).
    pub fn read(&self, ino: u64, offset: u64, size: u32) -> VfsResult<Vec<u8>> {
        self.read_with(ino, offset, size, |d| d.to_vec())
    }

    /// Like [`Vfs::read`], but hands the bytes to `out` instead of returning a new buffer: a read
    /// inside one chunk is the cached chunk's slice (no copy); a read spanning chunks or holes is
    /// assembled in a per-thread buffer that is reused from read to read (no allocation, no page
    /// faults on the streaming path).
    pub fn read_with<R>(
        &self,
        ino: u64,
        offset: u64,
        size: u32,
        out: impl FnOnce(&[u8]) -> R,
    ) -> VfsResult<R> {
        let node = self.node(ino)?;
        match &*node {
            Node::Deleted { data, .. } => {
                let start = (offset as usize).min(data.len());
                let end = start.saturating_add(size as usize).min(data.len());
                Ok(out(&data[start..end]))
            }
            Node::Content {
                snap,
                changes,
                path,
                entry,
                ..
            } => match entry.kind {
                Kind::File => match self.read_entry(entry, offset, size as usize, out) {
                    Ok((r, len)) => {
                        self.after_read(ino, entry, offset, len);
                        Ok(r)
                    }
                    Err(e) => {
                        let path = self.content_path(snap, *changes, path);
                        log::error!("Reading {path} at offset {offset}: {e}");
                        Err(repo_err(|| path)(e))
                    }
                },
                Kind::Dir => Err(VfsError::IsADirectory),
                _ => Err(VfsError::InvalidKind),
            },
            Node::Virtual(_) | Node::Versions { .. } => Err(VfsError::IsADirectory),
        }
    }

    /// Reads `[offset, offset + len)` of a file (clipped to its size) and hands it to `out`;
    /// returns `out`'s result and the number of bytes handed over. Binary search finds the first
    /// chunk; holes are zeros.
    fn read_entry<R>(
        &self,
        entry: &Entry,
        offset: u64,
        len: usize,
        out: impl FnOnce(&[u8]) -> R,
    ) -> crate::Result<(R, u64)> {
        if offset >= entry.size || len == 0 {
            return Ok((out(&[]), 0));
        }
        let end = entry.size.min(offset + len as u64);
        let keep = if len >= STREAM_REQUEST {
            Keep::Briefly
        } else {
            Keep::Lru
        };
        let first = entry.chunk_at(offset);
        if let Some(c) = entry.chunks.get(first) {
            if c.offset <= offset && end <= c.offset + c.len as u64 {
                let data = self.cache.get(&c.id, keep)?;
                let from = (offset - c.offset) as usize;
                let to = ((end - c.offset) as usize).min(data.len());
                let from = from.min(to);
                return Ok((out(&data[from..to]), (to - from) as u64));
            }
        }
        thread_local! {
            static READ_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
        }
        READ_BUF.with(|b| {
            let buf = &mut *b.borrow_mut();
            let n = crate::content::read_range_into(entry, offset, len, buf, |c, direct| {
                Ok(match direct {
                    Some(out) => {
                        self.cache.append(&c.id, out)?;
                        Fetched::Appended
                    }
                    None => Fetched::Shared(self.cache.get(&c.id, keep)?),
                })
            })?;
            let r = out(buf);
            // Keep one request's worth (the kernel asks for at most 1 MiB); free anything larger.
            if buf.capacity() > 2 << 20 {
                *buf = Vec::new();
            }
            Ok((r, n))
        })
    }

    /// Sequential-read detection: once reads of `ino` keep landing near the furthest point read
    /// so far ([`STREAMING_RUN`] in a row), the chunks in the next [`PACK_AHEAD`] of the file go
    /// to the lookup threads (see the `ahead` module), a step at a time: they look up the
    /// chunks' locations and ask their pack bytes into the page cache. The kernel's own
    /// readahead (up to 4 MiB, several requests served in parallel) already keeps the workers
    /// busy decoding ahead of the reader; this keeps the index and the disk busy ahead of them.
    fn after_read(&self, ino: u64, entry: &Entry, offset: u64, len: u64) {
        if len == 0 {
            return;
        }
        let end = offset + len;
        let advise = {
            let mut seq = lock(&self.seq);
            let st = seq.get_or_insert_mut(ino, || SeqState {
                reached: 0,
                run: 0,
                advised: 0,
            });
            let near = offset <= st.reached.saturating_add(STREAM_SLACK)
                && end.saturating_add(STREAM_SLACK) >= st.reached;
            if near {
                st.run = (st.run + 1).min(STREAMING_RUN);
                st.reached = st.reached.max(end);
            } else {
                st.run = 0;
                st.reached = end;
                st.advised = end;
            }
            st.advised = st.advised.max(st.reached);
            let mut advise = None;
            if st.run == STREAMING_RUN && st.advised < end + PACK_AHEAD - PACK_AHEAD_STEP {
                advise = Some((st.advised, (end + PACK_AHEAD).min(entry.size)));
                st.advised = end + PACK_AHEAD;
            }
            advise
        };
        if let Some((from, to)) = advise {
            let first = entry.chunk_at(from);
            let ids = entry.chunks[first.min(entry.chunks.len())..]
                .iter()
                .take_while(|c| c.offset < to)
                .map(|c| c.id)
                .collect();
            self.ahead.request(ids);
        }
    }

    /// Directory readahead (see the `dirahead` module): `ino` was just read from its start; these files of
    /// the same directory, (inode, size), are worth handing to the kernel now. Empty for anything
    /// that is not a file of a snapshot or `changes/` tree.
    pub fn files_to_push(&self, ino: u64) -> Vec<(u64, u64)> {
        let Ok(node) = self.node(ino) else {
            return Vec::new();
        };
        let Node::Content { parent, entry, .. } = &*node else {
            return Vec::new();
        };
        if entry.kind != Kind::File {
            return Vec::new();
        }
        let parent = *parent;
        if !lock(&self.dirahead).knows(parent) {
            // Built outside the lock: a large directory must not stall other readers.
            let Ok(items) = self.readdir(parent) else {
                return Vec::new();
            };
            let files = items
                .iter()
                .skip(2)
                .filter(|d| d.attr.kind == FileKind::File)
                .map(|d| (d.attr.ino, d.attr.size))
                .collect();
            lock(&self.dirahead).insert(parent, Arc::new(files));
        }
        lock(&self.dirahead).on_read(parent, ino)
    }

    /// Names of the extended attributes, each NUL-terminated.
    pub fn listxattr(&self, ino: u64) -> VfsResult<Vec<u8>> {
        let mut out = Vec::new();
        if let Node::Content { entry, .. } = &*self.node(ino)? {
            for (n, _) in &entry.xattrs {
                out.extend_from_slice(n);
                out.push(0);
            }
        }
        Ok(out)
    }

    /// Value of one extended attribute.
    pub fn getxattr(&self, ino: u64, name: &[u8]) -> VfsResult<Vec<u8>> {
        match &*self.node(ino)? {
            Node::Content { entry, .. } => entry
                .xattrs
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or(VfsError::NoXattr),
            _ => Err(VfsError::NoXattr),
        }
    }
}

#[cfg(test)]
mod tests;
