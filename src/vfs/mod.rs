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
//! /.strata/stats                              the mount's own counters (see stats.rs)
//! ```
//!
//! Invariants: an inode number, once handed out, names the same object for as long as the kernel
//! holds it, and is never reused (a node the kernel forgot is freed; looking the object up again
//! gives it a new number); hard links inside one snapshot view share one inode; nothing of a
//! snapshot is loaded until something inside it is looked up (listing `snapshots/` reads only
//! each snapshot's root entry). Content reads go through a bounded LRU of verified chunks; a chunk
//! that fails verification is an error for that read only, never wrong bytes.
//!
//! A live view (the mount's) reads a private copy of the index and moves to a newer copy when the
//! repository changes ([`Keeper`], the `live` module): new snapshots appear, forgotten ones leave
//! the listings, and the snapshots the kernel holds inodes of are leased so that `forget` and
//! `prune` keep what they need until the kernel lets go.
//!
//! Must not: know fuser, print, or panic on a data path.
//!
//! Here: the inode table's use, lookup and readdir. Beside it: `names` (spelling and the inode
//! keys), `types` (what callers get back), `attrs`, `read` (content and xattrs), `changes` (the
//! `changes/` tree), `versions` (the `versions/` tree), `stats` (the mount's counters and
//! `.strata/stats`), `live` (copies of the index, kernel references, leases) and the caches
//! (`cache`, `ahead`, `dirahead`).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

mod ahead;
mod attrs;
mod cache;
mod changes;
pub(crate) mod dirahead;
mod dirs;
mod live;
mod names;
mod read;
mod stats;
mod trim;
mod types;
mod versions;

pub use cache::{ChunkCache, Current, Keep};
pub use dirs::DirCursor;
pub use live::{Keeper, Stale};
pub use names::{encode_component, snapshot_name};
pub use read::STREAM_REQUEST;
pub use stats::{MountStats, Op, StatsContent, Timer};
pub use types::{
    xattr_reply, Attr, DirItem, FileKind, VfsError, VfsOptions, VfsResult, XattrReply,
};

use changes::{DeletedLists, Synth};
use names::{Inodes, Key, Node, SnapList, VKey};
#[cfg(test)]
use read::STREAMING_RUN;
use read::{SeqState, SEQ_FILES};
use types::repo_err;

use lru::LruCache;

use crate::content::Fetched;
use crate::entry::{Entry, Kind};
use crate::error::Error;
use crate::id::SnapshotId;
use crate::layers::{join, Delta, LayerChanges, View};
use crate::repo::Repo;
use crate::snapshot::{BackupKind, Snapshot};

/// Inode number of the mount's root directory (FUSE's root id).
pub const ROOT_INO: u64 = 1;
// The fixed top-level inodes, allocated in this order by `Vfs::open`; never freed.
const SNAPSHOTS_INO: u64 = 2;
const SOURCES_INO: u64 = 3;
const TAGS_INO: u64 = 4;
const KINDS_INO: u64 = 5;
const CHANGES_INO: u64 = 6;
const LATEST_INO: u64 = 7;
const VERSIONS_INO: u64 = 8;
const STRATA_DIR_INO: u64 = 9;
/// Inode number of `.strata/stats`: its content changes from one lookup to the next, so the
/// FUSE adapter gives it no cache time and reads it with direct I/O when it can.
pub const STATS_INO: u64 = 10;

/// One copy of the index and the snapshot list read from it; replaced whole by a newer one.
pub(crate) struct Gen {
    /// Which copy (the keeper's number; 0 for a view without a keeper).
    copy: u64,
    repo: Arc<Repo>,
    snaps: Arc<SnapList>,
}

/// What the view has resolved of one snapshot, in the copy of the index it was first needed in.
struct SnapState {
    /// The copy its views read: the current one, or for a snapshot forgotten while the kernel
    /// holds its files, the last one that had it.
    gen: Arc<Gen>,
    /// The resolved root entry (memoized along chains: listing `snapshots/` stays linear).
    root: OnceLock<Entry>,
    view: OnceLock<Arc<View>>,
    synth: OnceLock<Arc<Synth>>,
    deleted: OnceLock<DeletedLists>,
}

impl SnapState {
    fn new(gen: Arc<Gen>) -> SnapState {
        SnapState {
            gen,
            root: OnceLock::new(),
            view: OnceLock::new(),
            synth: OnceLock::new(),
            deleted: OnceLock::new(),
        }
    }
}

/// The filesystem view. Shared by all FUSE worker threads (`&self` everywhere).
pub struct Vfs {
    opts: VfsOptions,
    gen: RwLock<Arc<Gen>>,
    /// Keeps a live view current and its snapshots leased; `None`: the view shows the handle it
    /// was opened over.
    keeper: Option<Arc<dyn Keeper>>,
    live: live::LiveState,
    inodes: RwLock<Inodes>,
    states: Mutex<HashMap<SnapshotId, Arc<SnapState>>>,
    cache: Arc<ChunkCache>,
    seq: Mutex<LruCache<u64, SeqState>>,
    /// Lookup threads for streaming readers' chunks.
    ahead: ahead::Ahead,
    /// How far ahead of a streaming reader its pack bytes are asked for: the pack backend's
    /// `read_ahead`, the same for every copy of the index.
    read_ahead: u64,
    histories: versions::HistoryCache,
    dirahead: Mutex<dirahead::DirAhead>,
    /// The counters the FUSE adapter records into.
    stats: MountStats,
    /// The current content of `.strata/stats` (rendered at each lookup).
    stats_content: Mutex<Option<StatsContent>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

impl Vfs {
    /// Builds the view of `repo` as it is: reads the snapshot records (not their trees).
    /// [`Vfs::refresh`] reads them again.
    pub fn open(repo: Arc<Repo>, opts: VfsOptions) -> crate::Result<Vfs> {
        Self::build(repo, 0, None, opts)
    }

    /// Builds a live view over copy `copy` of the index (`repo`), which `keeper` replaces by
    /// newer copies and leases the snapshots in use through (see [`Keeper`]).
    pub fn open_live(
        repo: Arc<Repo>,
        copy: u64,
        keeper: Arc<dyn Keeper>,
        opts: VfsOptions,
    ) -> crate::Result<Vfs> {
        Self::build(repo, copy, Some(keeper), opts)
    }

    fn build(
        repo: Arc<Repo>,
        copy: u64,
        keeper: Option<Arc<dyn Keeper>>,
        opts: VfsOptions,
    ) -> crate::Result<Vfs> {
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
            VKey::StrataDir,
            VKey::StatsFile,
        ] {
            inodes.insert(Key::Virtual(k.clone()), Node::Virtual(k));
        }
        let vfs = Vfs {
            ahead: ahead::Ahead::start(cache.current().clone(), cache.locations().clone()),
            read_ahead: repo.packs().read_ahead().max(2 * read::PACK_AHEAD_STEP),
            gen: RwLock::new(Arc::new(Gen {
                copy,
                repo: repo.clone(),
                snaps: Arc::new(SnapList::build(Vec::new())),
            })),
            keeper,
            live: Default::default(),
            opts,
            inodes: RwLock::new(inodes),
            states: Mutex::new(HashMap::new()),
            cache,
            seq: Mutex::new(LruCache::new(SEQ_FILES)),
            histories: Default::default(),
            dirahead: Default::default(),
            stats: MountStats::default(),
            stats_content: Mutex::new(None),
        };
        vfs.install(copy, repo)?;
        // Nothing is mounted yet: the kernel remembers nothing.
        vfs.take_stale();
        Ok(vfs)
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

    fn gen(&self) -> Arc<Gen> {
        self.gen.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn snap_list(&self) -> Arc<SnapList> {
        self.gen().snaps.clone()
    }

    fn node(&self, ino: u64) -> VfsResult<Arc<Node>> {
        let t = self.inodes.read().unwrap_or_else(|e| e.into_inner());
        t.node(ino).cloned().ok_or(VfsError::NotFound)
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
        let mut states = lock(&self.states);
        if let Some(st) = states.get(id) {
            return st.clone();
        }
        let st = Arc::new(SnapState::new(self.gen()));
        states.insert(*id, st.clone());
        st
    }

    /// The index copy snapshot `id` is read from.
    fn repo_of(&self, id: &SnapshotId) -> Arc<Repo> {
        self.state(id).gen.repo.clone()
    }

    fn view(&self, id: &SnapshotId) -> VfsResult<Arc<View>> {
        let st = self.state(id);
        if let Some(v) = st.view.get() {
            return Ok(v.clone());
        }
        let v = Arc::new(
            View::open(&st.gen.repo, id)
                .map_err(repo_err(|| format!("snapshot {}", id.short())))?,
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
        // Down the parent chain (the rule of `layers::chain_of`) one step at a time, stopping at
        // the first layer whose root is known: listing `snapshots/` resolves each root in a step
        // or two from its parent's, whatever the chain's depth. A chain not wholly in the list
        // (filtered), broken or looping is left to the layers module.
        let mut cur = *id;
        for _ in 0..=list.list.len() {
            let Some(&i) = list.by_id.get(&cur) else {
                break;
            };
            let snap = &list.list[i].snap;
            let full = snap.ends_chain();
            let cst = if cur == *id {
                st.clone()
            } else {
                self.state(&cur)
            };
            if let Some(e) = cst.root.get() {
                found = Some(e.clone());
                break;
            }
            visited.push(cst);
            // A layer holding the root entry lists the root among its touched directories (the
            // rule the layers module resolves by; the full ending the chain keeps no list), so a
            // layer without entries, or whose list is in memory and lacks it, is passed without
            // a sled read: at the end of a long chain of small incrementals, 503 reads (22 ms
            // cold) become one.
            let skip = !full
                && (snap.layer_blobs.is_empty()
                    || LayerChanges::of(&st.gen.repo, &cur)
                        .cached_dirs()
                        .is_some_and(|d| !d.contains_key(b"".as_slice())));
            if !skip {
                let d = LayerChanges::of(&st.gen.repo, &cur)
                    .at(b"", b"")
                    .map_err(repo_err(err))?;
                if let Some(e) = d.and_then(Delta::entry).filter(|e| e.kind == Kind::Dir) {
                    found = Some(e);
                    break;
                }
            }
            match snap.parent {
                Some(p) if !full => cur = p,
                _ => break,
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
        let key = names::content_key(snap, changes, path.clone(), &entry);
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
        let mut attr = self.getattr(ino)?;
        if matches!(&*self.node(parent)?, Node::Versions { .. }) {
            // A version's name there (its first snapshot's time) changes when that snapshot is
            // forgotten: the entry is as short-lived as the lists'.
            attr.immutable = false;
        }
        Ok(attr)
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
                        ".strata" => VKey::StrataDir,
                        "latest" if !list.list.is_empty() => VKey::Latest,
                        _ => return Err(VfsError::NotFound),
                    },
                    VKey::StrataDir => match s {
                        "stats" => {
                            self.refresh_stats();
                            VKey::StatsFile
                        }
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
                    | VKey::KindLink(..)
                    | VKey::StatsFile => return Err(VfsError::NotADirectory),
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
                            snap: *snap,
                            nul,
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
                | VKey::Latest
                | VKey::StrataDir => ROOT_INO,
                VKey::StatsFile => STRATA_DIR_INO,
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
}

#[cfg(test)]
mod tests;
