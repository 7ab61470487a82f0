//! Layer resolution — the only code that knows how a snapshot's view is composed from layers.
//!
//! A snapshot's view is its own layer overlaid on its parent's view, down to a full layer. For a
//! path `dir/name`, the newest layer holding an entry for it wins; a whiteout entry hides the path.
//! A directory entry marked *opaque* (new in that layer) hides older layers' children of that
//! directory. Resolution is top-down: a path is looked up inside a directory that was itself
//! resolved, so a deleted directory hides its whole subtree.
//!
//! Everything else asks this module: the parent chain is walked only by [`chain_of`] (a chain
//! ends at a full; a non-full snapshot without a parent breaks it), a snapshot's tree is read
//! through [`View`] (`chain`, `lookup`, `children`, `walk`), and what one layer itself changed
//! through [`LayerChanges`], whose [`Delta`] is the only reading of whiteouts and opaque flags
//! outside resolution.
//!
//! Cost does not grow with chain depth in sled reads: each non-full layer records which directories
//! it touched (`layerdirs`, held in memory once loaded, see `cache`), so a lookup skips, with a
//! hash probe, every layer that has nothing in the directory, and usually reads sled once.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, MutexGuard};

use lru::LruCache;

use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::keys;
use crate::repo::store::{Scan, Space};
use crate::repo::Repo;
use crate::snapshot::{BackupKind, Snapshot};

mod cache;

pub(crate) use cache::seed_dirs;
pub use cache::{DirLayer, DirsSeed, LayerDirs};

/// Where a view reads layers from: the repository's sled index ([`Repo`]), or the sled-free
/// lookup files that let `cat` answer without opening sled ([`crate::lookup::Quick`]). Resolution
/// itself stays here, whichever store answers.
pub trait LayerStore {
    /// One committed snapshot's record.
    fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>>;
    /// The directories a non-full layer touches (with whether each is opaque there).
    fn layer_dirs(&self, id: &SnapshotId) -> Result<Arc<LayerDirs>>;
    /// The entries a non-full layer holds directly under `dir`; `None` when there are too many
    /// to keep in memory (the view then asks [`LayerStore::entry`] name by name).
    fn dir_layer(&self, id: &SnapshotId, dir: &[u8]) -> Result<Option<DirLayer>>;
    /// The entry one layer itself holds for `dir/name` (whiteouts included).
    fn entry(&self, id: &SnapshotId, dir: &[u8], name: &[u8]) -> Result<Option<Entry>>;
    /// What walking a chain needs of one snapshot's record ([`Link`]); a store holding its
    /// records in memory answers without copying one.
    fn link(&self, id: &SnapshotId) -> Result<Option<Link>> {
        Ok(self.snapshot(id)?.as_ref().map(Link::of))
    }
}

/// What a chain walk reads of a snapshot record: its kind and parent, and whether its layer
/// holds entries at all.
#[derive(Clone, Copy, Debug)]
pub struct Link {
    /// The snapshot's kind (a full ends a chain).
    pub kind: BackupKind,
    /// Its parent.
    pub parent: Option<SnapshotId>,
    /// Whether its layer holds no entry: no layer blobs (a backup that found nothing changed).
    pub empty: bool,
}

impl Link {
    /// The link of record `s`.
    pub fn of(s: &Snapshot) -> Link {
        Link {
            kind: s.kind,
            parent: s.parent,
            empty: s.layer_blobs.is_empty(),
        }
    }
}

/// What [`chain_of`] reads of a record: its kind and parent.
pub trait Linked {
    /// The record's kind.
    fn link_kind(&self) -> BackupKind;
    /// The record's parent.
    fn link_parent(&self) -> Option<SnapshotId>;
}

impl Linked for Snapshot {
    fn link_kind(&self) -> BackupKind {
        self.kind
    }
    fn link_parent(&self) -> Option<SnapshotId> {
        self.parent
    }
}

impl Linked for Link {
    fn link_kind(&self) -> BackupKind {
        self.kind
    }
    fn link_parent(&self) -> Option<SnapshotId> {
        self.parent
    }
}

impl<T: Linked> Linked for &T {
    fn link_kind(&self) -> BackupKind {
        (*self).link_kind()
    }
    fn link_parent(&self) -> Option<SnapshotId> {
        (*self).link_parent()
    }
}

impl LayerStore for Repo {
    fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        Repo::snapshot(self, id)
    }
    fn link(&self, id: &SnapshotId) -> Result<Option<Link>> {
        Repo::snapshot_link(self, id)
    }
    fn layer_dirs(&self, id: &SnapshotId) -> Result<Arc<LayerDirs>> {
        Repo::layer_dirs(self, id)
    }
    fn dir_layer(&self, id: &SnapshotId, dir: &[u8]) -> Result<Option<DirLayer>> {
        Repo::dir_layer(self, id, dir)
    }
    fn entry(&self, id: &SnapshotId, dir: &[u8], name: &[u8]) -> Result<Option<Entry>> {
        layer_entry(self, id, dir, name)
    }
}

/// One layer of a view's chain.
struct Layer {
    id: SnapshotId,
    /// `None` for a full layer (it holds every directory and ends the chain).
    dirs: Option<Arc<LayerDirs>>,
}

/// The read-only view of one snapshot.
pub struct View<S: LayerStore = Repo> {
    repo: Arc<S>,
    snapshot: Snapshot,
    /// Newest first; the last is a full layer.
    chain: Vec<Layer>,
    /// Per visited directory, the upper layers merged (see [`Overlay`]); the least recently used
    /// dropped past a bound.
    overlays: Mutex<LruCache<Vec<u8>, Arc<Overlay>>>,
}

/// The upper layers of one directory, merged once per view so that a lookup costs the same at any
/// chain depth: one probe here, then (only on a miss) a sled read of the remaining layers.
struct Overlay {
    /// Names the in-memory upper layers hold for the directory, newest winning (whiteouts kept,
    /// since they hide older layers).
    mem: HashMap<Vec<u8>, Entry>,
    /// Layers still to ask in sled, newest first: the full layer, and any upper layer too large to
    /// hold in memory (with everything below it).
    rest: Vec<SnapshotId>,
}

/// Directories whose overlay a view keeps.
const MAX_OVERLAYS: NonZeroUsize = NonZeroUsize::new(4096).expect("nonzero");

/// A view's overlay cache: bounded, but grown as it fills. (`LruCache::new` allocates its table
/// for the bound at once, about 100 KB: a mount holding views of 10,000 snapshots took a GB.)
fn overlay_cache() -> LruCache<Vec<u8>, Arc<Overlay>> {
    let mut c = LruCache::unbounded();
    c.resize(MAX_OVERLAYS);
    c
}

/// Longest parent chain a view follows before calling it a loop (far beyond any real chain).
const MAX_CHAIN: usize = 100_000;

/// Why a snapshot's parent chain does not reach a full layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ChainBreak {
    /// `at` names a parent that is not in the repository.
    MissingParent { at: SnapshotId, parent: SnapshotId },
    /// The chain ends in `end`, an incremental or differential without a parent: its layer holds
    /// only changes, so showing it as a full would show a wrong tree.
    NoFull { end: SnapshotId, kind: BackupKind },
    /// The chain is longer than any real chain can be: it loops.
    Loops,
}

impl From<ChainBreak> for Error {
    fn from(b: ChainBreak) -> Error {
        match b {
            ChainBreak::MissingParent { at, parent } => {
                Error::MissingParent(at.to_string(), parent.to_string())
            }
            ChainBreak::NoFull { end, kind } => Error::CorruptMetadata(format!(
                "snapshot chain ends in {} {end}, which is not a full layer",
                kind.name()
            )),
            ChainBreak::Loops => Error::CorruptMetadata("snapshot parent chain loops".into()),
        }
    }
}

/// The one rule for walking a parent chain: the ids from `s` down to the full layer that ends it,
/// newest first. A full ends the chain whatever its parent field says; a non-full snapshot
/// without a parent is a [`ChainBreak::NoFull`] (backup and forget never write one: a snapshot
/// whose base is forgotten is re-parented or made a full, so it can only come from damage). A
/// chain longer than `limit` layers is a [`ChainBreak::Loops`]. `get` reads a record from
/// wherever the caller holds them; its errors pass through.
pub fn chain_of<T, E>(
    s: &Snapshot,
    limit: usize,
    mut get: impl FnMut(&SnapshotId) -> std::result::Result<Option<T>, E>,
) -> std::result::Result<Vec<SnapshotId>, E>
where
    T: Linked,
    E: From<ChainBreak>,
{
    let mut chain = vec![s.id];
    let (mut kind, mut parent) = (s.kind, s.parent);
    while kind != BackupKind::Full {
        let at = *chain.last().expect("chain starts with s");
        let Some(pid) = parent else {
            return Err(ChainBreak::NoFull { end: at, kind }.into());
        };
        if chain.len() >= limit.max(1) {
            return Err(ChainBreak::Loops.into());
        }
        let p = get(&pid)?.ok_or(ChainBreak::MissingParent { at, parent: pid })?;
        (kind, parent) = (p.link_kind(), p.link_parent());
        chain.push(pid);
    }
    Ok(chain)
}

/// Locks a cache: a panic elsewhere while holding it leaves nothing half-updated that a reader
/// could trust less than a cold cache, so poisoning is ignored.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Joins a relative directory path and a name (`""` is the root).
pub fn join(dir: &[u8], name: &[u8]) -> Vec<u8> {
    if dir.is_empty() {
        return name.to_vec();
    }
    let mut p = Vec::with_capacity(dir.len() + 1 + name.len());
    p.extend_from_slice(dir);
    p.push(b'/');
    p.extend_from_slice(name);
    p
}

/// Splits a user-given path into components, ignoring empty ones and `.`; rejects `..`.
pub fn components(path: &[u8]) -> Result<Vec<&[u8]>> {
    let mut out = Vec::new();
    for c in path.split(|&b| b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                return Err(Error::InvalidArgument(
                    "Paths inside a snapshot may not contain '..'".into(),
                ))
            }
            c => out.push(c),
        }
    }
    Ok(out)
}

impl<S: LayerStore> View<S> {
    /// Opens the view of a committed snapshot; loads its chain's records and touched-dir sets, not
    /// its tree. A chain that does not reach a full layer is an error (see [`chain_of`]).
    pub fn open(repo: &Arc<S>, id: &SnapshotId) -> Result<View<S>> {
        let snapshot = repo
            .snapshot(id)?
            .ok_or_else(|| Error::SnapshotNotFound(id.to_string()))?;
        // A layer without entries (a backup that found nothing changed) has no layer blobs and
        // touches no directory: it is passed over without asking for its directories, so that
        // the hourly no-change backups of a long chain cost next to nothing to open.
        let mut empty = std::collections::HashSet::new();
        if snapshot.layer_blobs.is_empty() {
            empty.insert(snapshot.id);
        }
        let ids = chain_of(&snapshot, MAX_CHAIN, |id| {
            let r = repo.link(id)?;
            if r.is_some_and(|l| l.empty) {
                empty.insert(*id);
            }
            Ok::<_, Error>(r)
        })?;
        let mut chain = Vec::new();
        for (i, id) in ids.iter().enumerate() {
            let full = i + 1 == ids.len();
            if !full && empty.contains(id) {
                continue;
            }
            chain.push(Layer {
                id: *id,
                dirs: if full {
                    None
                } else {
                    Some(repo.layer_dirs(id)?)
                },
            });
        }
        Ok(View {
            repo: repo.clone(),
            snapshot,
            chain,
            overlays: Mutex::new(overlay_cache()),
        })
    }

    /// The snapshot this view shows.
    pub fn snapshot(&self) -> &Snapshot {
        &self.snapshot
    }

    /// The store the view reads from.
    pub fn repo(&self) -> &Arc<S> {
        &self.repo
    }

    /// Layers (newest first) that can hold children of `dir`, cut at the first opaque one; with
    /// each, whether it is a full layer.
    fn chain_for<'a>(&'a self, dir: &'a [u8]) -> impl Iterator<Item = (&'a SnapshotId, bool)> + 'a {
        let mut done = false;
        self.chain.iter().filter_map(move |l| {
            if done {
                return None;
            }
            match &l.dirs {
                None => {
                    done = true;
                    Some((&l.id, true))
                }
                Some(d) => match d.get(dir) {
                    None => None,
                    Some(&opaque) => {
                        done = opaque;
                        Some((&l.id, false))
                    }
                },
            }
        })
    }

    /// The merged upper layers of `dir`, built on first use.
    fn overlay(&self, dir: &[u8]) -> Result<Arc<Overlay>> {
        if let Some(o) = lock(&self.overlays).get(dir) {
            return Ok(o.clone());
        }
        let mut mem = HashMap::new();
        let mut rest = Vec::new();
        for (layer, full) in self.chain_for(dir) {
            // Full layers stay in sled: caching them would hold the whole tree in memory.
            let cached = if full || !rest.is_empty() {
                None
            } else {
                self.repo.dir_layer(layer, dir)?
            };
            match cached {
                Some(entries) => {
                    for (name, e) in entries.iter() {
                        mem.entry(name.clone()).or_insert_with(|| e.clone());
                    }
                }
                None => rest.push(*layer),
            }
        }
        let o = Arc::new(Overlay { mem, rest });
        lock(&self.overlays).put(dir.to_vec(), o.clone());
        Ok(o)
    }

    /// The entry of `name` inside the (already resolved) directory `dir`; `None` when absent.
    /// The upper layers answer from memory; sled is read once, for the base layer.
    pub fn lookup_in(&self, dir: &[u8], name: &[u8]) -> Result<Option<Entry>> {
        let o = self.overlay(dir)?;
        if let Some(e) = o.mem.get(name) {
            return Ok((e.kind != Kind::Whiteout).then(|| e.clone()));
        }
        for layer in &o.rest {
            if let Some(e) = self.repo.entry(layer, dir, name)? {
                return Ok((e.kind != Kind::Whiteout).then_some(e));
            }
        }
        Ok(None)
    }

    /// The root directory's entry.
    pub fn root(&self) -> Result<Entry> {
        self.lookup(b"")
    }

    /// Resolves a relative path (`/`-separated, empty = root) component by component.
    pub fn lookup(&self, path: &[u8]) -> Result<Entry> {
        self.resolve(path, |dir, name| self.lookup_in(dir, name))
    }

    /// [`View::lookup`] for a view that resolves one path and is dropped (`cat`): each name is
    /// probed layer by layer, newest first, stopping at the first layer that holds it, instead
    /// of merging every upper layer's directory first. Same answer; on a deep chain it reads
    /// only the layers newer than the one that provides each component.
    pub fn lookup_once(&self, path: &[u8]) -> Result<Entry> {
        self.resolve(path, |dir, name| {
            Ok(self
                .provider(dir, name)?
                .map(|(_, e)| e)
                .filter(|e| e.kind != Kind::Whiteout))
        })
    }

    fn resolve(
        &self,
        path: &[u8],
        step: impl Fn(&[u8], &[u8]) -> Result<Option<Entry>>,
    ) -> Result<Entry> {
        let comps = components(path)?;
        let mut entry = step(b"", b"")?.ok_or_else(|| {
            Error::CorruptMetadata(format!("snapshot {} has no root", self.snapshot.id))
        })?;
        let mut dir = Vec::new();
        for (i, c) in comps.iter().enumerate() {
            if entry.kind != Kind::Dir {
                return Err(Error::NotADirectory {
                    snapshot: self.snapshot.id.short(),
                    path: String::from_utf8_lossy(&dir).into_owned(),
                });
            }
            entry = step(&dir, c)?.ok_or_else(|| Error::PathNotFound {
                snapshot: self.snapshot.id.short(),
                path: String::from_utf8_lossy(&comps[..=i].join(&b'/')).into_owned(),
            })?;
            dir = join(&dir, c);
        }
        Ok(entry)
    }

    /// The layers of this view that hold entries, newest first (the last is a full layer), as
    /// [`chain_of`] walks them (a layer without entries changes nothing and is left out). `diff` uses it to find the layers two views do not share: only paths those layers
    /// hold can differ.
    pub fn chain(&self) -> Vec<SnapshotId> {
        self.chain.iter().map(|l| l.id).collect()
    }

    /// Resolves `path` like [`View::lookup`] and also says which layer holds the visible entry
    /// (`None` when the path does not exist in this view). `log` reports it; the probe walks only
    /// the layers whose touched-directory set contains the parent directory.
    pub fn lookup_layer(&self, path: &[u8]) -> Result<Option<(Entry, SnapshotId)>> {
        let comps = components(path)?;
        let (dir, name) = match comps.split_last() {
            None => (Vec::new(), &b""[..]),
            Some((last, parents)) => (parents.join(&b'/'), *last),
        };
        let entry = match self.lookup(path) {
            Ok(e) => e,
            Err(Error::PathNotFound { .. }) | Err(Error::NotADirectory { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        for (layer, _) in self.chain_for(&dir) {
            if let Some(e) = self.repo.entry(layer, &dir, name)? {
                if e.kind == Kind::Whiteout {
                    break;
                }
                return Ok(Some((entry, *layer)));
            }
        }
        Err(Error::CorruptMetadata(format!(
            "no layer of snapshot {} holds the entry it resolves for {}",
            self.snapshot.id.short(),
            String::from_utf8_lossy(path)
        )))
    }

    /// The layer that supplies `dir/name` in this view, with its entry there (a whiteout
    /// included): what `forget` needs to copy exactly the entries a forgotten layer contributes.
    /// `dir` must already resolve to a directory in this view.
    pub fn provider(&self, dir: &[u8], name: &[u8]) -> Result<Option<(SnapshotId, Entry)>> {
        for (layer, _) in self.chain_for(dir) {
            if let Some(e) = self.repo.entry(layer, dir, name)? {
                return Ok(Some((*layer, e)));
            }
        }
        Ok(None)
    }

    /// The layer at which resolving children of `dir` stops: the newest layer where `dir` is
    /// opaque, or the full layer. A merged layer must be opaque at `dir` exactly when this layer is
    /// among those merged.
    pub fn stop_layer(&self, dir: &[u8]) -> SnapshotId {
        let mut last = self.chain[0].id;
        for (layer, full) in self.chain_for(dir) {
            last = *layer;
            if full {
                break;
            }
        }
        last
    }

    /// Whether `dir` resolves to a directory in this view (a missing path is `false`, not an error).
    pub fn is_dir(&self, dir: &[u8]) -> Result<bool> {
        match self.lookup(dir) {
            Ok(e) => Ok(e.kind == Kind::Dir),
            Err(Error::PathNotFound { .. } | Error::NotADirectory { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl View<Repo> {
    /// Every path below directory `dir` (already resolved; not `dir` itself) with its entry,
    /// depth first, each directory's children sorted by name bytes and listed before the next
    /// sibling. Streams like [`View::children`]: memory grows with the depth, not the tree.
    pub fn walk(&self, dir: &[u8]) -> Result<Walk<'_>> {
        Ok(Walk {
            view: self,
            stack: vec![(dir.to_vec(), self.children(dir)?)],
        })
    }

    /// The children of directory `dir` (already resolved), sorted by name bytes, newest layer
    /// winning, whiteouts removed. Streams: memory does not grow with the directory's size.
    pub fn children(&self, dir: &[u8]) -> Result<ListIter<'_>> {
        let mut sources = Vec::new();
        for (layer, full) in self.chain_for(dir) {
            let mem = if full {
                None
            } else {
                self.repo.dir_layer(layer, dir)?
            };
            let cursor = match mem {
                Some(mem) => Cursor::Mem { mem, pos: 0 },
                _ => {
                    let prefix = keys::dir_prefix(layer, dir);
                    Cursor::Index {
                        plen: prefix.len(),
                        it: self.repo.index().scan(Space::Layers, &prefix),
                    }
                }
            };
            let mut source = Source { cursor, head: None };
            source.head = source.cursor.next_child()?;
            sources.push(source);
        }
        Ok(ListIter { sources })
    }

    /// This snapshot's own layer as stored, (dir, name, entry) in key order, whiteouts as
    /// entries: for format-level checks; readers ask [`View::changes`].
    pub fn own_layer(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>, Entry)>> + '_ {
        layer_entries(&self.repo, &self.snapshot.id)
    }

    /// What this snapshot's own layer changed relative to its parent's view.
    pub fn changes(&self) -> LayerChanges<'_> {
        LayerChanges::of(&self.repo, &self.snapshot.id)
    }
}

/// What one layer recorded for a path: the only reading of whiteouts and opaque flags outside
/// resolution itself.
#[derive(Clone, Debug, PartialEq)]
pub enum Delta {
    /// Added or changed: the path has this entry from this layer up. A directory marked opaque
    /// is new in this layer: older layers' children of it are hidden.
    Set(Entry),
    /// Deleted (a whiteout): the path, and everything below it, is absent from this layer up.
    Deleted,
}

impl Delta {
    fn of(e: Entry) -> Delta {
        if e.kind == Kind::Whiteout {
            Delta::Deleted
        } else {
            Delta::Set(e)
        }
    }

    /// The entry the layer sets, `None` for a deletion.
    pub fn entry(self) -> Option<Entry> {
        match self {
            Delta::Set(e) => Some(e),
            Delta::Deleted => None,
        }
    }

    /// The entry the layer sets, `None` for a deletion.
    pub fn as_entry(&self) -> Option<&Entry> {
        match self {
            Delta::Set(e) => Some(e),
            Delta::Deleted => None,
        }
    }

    /// Whether the layer cuts the path off from older layers: deleted, or a directory recreated
    /// (opaque), so what older layers hold below it no longer shows.
    pub fn hides_older(&self) -> bool {
        match self {
            Delta::Deleted => true,
            Delta::Set(e) => e.kind == Kind::Dir && e.opaque,
        }
    }
}

/// One layer's own record, what it changed relative to its parent's view, read without
/// resolving anything: what `changes/`, `versions/`, `diff`, `log` and `find` ask.
pub struct LayerChanges<'a> {
    repo: &'a Repo,
    id: SnapshotId,
}

impl<'a> LayerChanges<'a> {
    /// The changes layer `id` recorded.
    pub fn of(repo: &'a Repo, id: &SnapshotId) -> LayerChanges<'a> {
        LayerChanges { repo, id: *id }
    }

    /// What the layer recorded for `dir/name` (`""`, `""` is the root), `None` when nothing.
    pub fn at(&self, dir: &[u8], name: &[u8]) -> Result<Option<Delta>> {
        Ok(layer_entry(self.repo, &self.id, dir, name)?.map(Delta::of))
    }

    /// What the layer recorded directly under `dir` (the root's own entry excluded), by name.
    pub fn under(&self, dir: &[u8]) -> impl Iterator<Item = Result<(Vec<u8>, Delta)>> + 'a {
        layer_children(self.repo, &self.id, dir).map(|kv| kv.map(|(n, e)| (n, Delta::of(e))))
    }

    /// Everything the layer recorded, as (dir, name, delta) in key order.
    pub fn all(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>, Delta)>> + 'a {
        layer_entries(self.repo, &self.id).map(|kv| kv.map(|(d, n, e)| (d, n, Delta::of(e))))
    }

    /// The directories the layer touched, each with whether it is opaque there (a full layer
    /// keeps no such set: it touches everything).
    pub fn dirs(&self) -> Result<Arc<LayerDirs>> {
        self.repo.layer_dirs(&self.id)
    }

    /// [`LayerChanges::dirs`] when already in memory, without reading sled.
    pub fn cached_dirs(&self) -> Option<Arc<LayerDirs>> {
        self.repo.cached_layer_dirs(&self.id)
    }
}

/// Every entry one layer holds (whiteouts included), as (dir, name, entry) in key order.
fn layer_entries<'a>(
    repo: &'a Repo,
    layer: &SnapshotId,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>, Entry)>> + 'a {
    repo.index().scan(Space::Layers, &layer.0).map(|kv| {
        let (k, v) = kv?;
        let (dir, name) = keys::split_entry_key(&k[16..])
            .ok_or_else(|| Error::CorruptMetadata("malformed layer key".into()))?;
        Ok((dir.to_vec(), name.to_vec(), Entry::decode(&v)?))
    })
}

/// The entry one layer itself holds for `dir/name` (whiteouts included).
fn layer_entry(repo: &Repo, layer: &SnapshotId, dir: &[u8], name: &[u8]) -> Result<Option<Entry>> {
    repo.index()
        .get(Space::Layers, &keys::entry_key(layer, dir, name))?
        .map(|v| Entry::decode(&v))
        .transpose()
}

/// The children one layer itself holds under `dir` (whiteouts included, the root's own entry
/// excluded), sorted by name.
fn layer_children<'a>(
    repo: &'a Repo,
    layer: &SnapshotId,
    dir: &[u8],
) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a {
    let prefix = keys::dir_prefix(layer, dir);
    let mut cursor = Cursor::Index {
        plen: prefix.len(),
        it: repo.index().scan(Space::Layers, &prefix),
    };
    std::iter::from_fn(move || cursor.next_child().transpose())
}

/// Where one layer's children of a directory come from: the index, read as the merge goes, or
/// the layer's directory already in memory.
enum Cursor<'a> {
    Index { it: Scan<'a>, plen: usize },
    Mem { mem: DirLayer, pos: usize },
}

impl Cursor<'_> {
    /// The next child (name, entry), skipping the root's own entry (stored with an empty name).
    fn next_child(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        loop {
            let (name, entry) = match self {
                Cursor::Index { it, plen } => match it.next().transpose()? {
                    None => return Ok(None),
                    Some((k, v)) => (k[*plen..].to_vec(), Entry::decode(&v)?),
                },
                Cursor::Mem { mem, pos } => match mem.get(*pos) {
                    None => return Ok(None),
                    Some((n, e)) => {
                        *pos += 1;
                        (n.clone(), e.clone())
                    }
                },
            };
            if !name.is_empty() {
                return Ok(Some((name, entry)));
            }
        }
    }
}

struct Source<'a> {
    cursor: Cursor<'a>,
    head: Option<(Vec<u8>, Entry)>,
}

/// Iterator over a directory's merged children, from [`View::list`].
pub struct ListIter<'a> {
    /// Newest layer first.
    sources: Vec<Source<'a>>,
}

impl ListIter<'_> {
    fn step(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        loop {
            // The smallest name among the heads; on ties the newest layer (lowest index) wins.
            let mut best: Option<usize> = None;
            for (i, s) in self.sources.iter().enumerate() {
                if let Some((n, _)) = &s.head {
                    if best.is_none_or(|b| n < &self.sources[b].head.as_ref().unwrap().0) {
                        best = Some(i);
                    }
                }
            }
            let Some(b) = best else { return Ok(None) };
            let (name, entry) = self.sources[b].head.take().unwrap();
            for s in self.sources.iter_mut() {
                if s.head.as_ref().is_some_and(|(n, _)| *n == name) {
                    s.head = None;
                }
                if s.head.is_none() {
                    s.head = s.cursor.next_child()?;
                }
            }
            if entry.kind != Kind::Whiteout {
                return Ok(Some((name, entry)));
            }
        }
    }
}

/// Iterator over a subtree, from [`View::walk`]: (path, entry).
pub struct Walk<'a> {
    view: &'a View<Repo>,
    /// The directories being listed, outermost first, with their paths.
    stack: Vec<(Vec<u8>, ListIter<'a>)>,
}

impl Walk<'_> {
    fn step(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        while let Some((dir, it)) = self.stack.last_mut() {
            let Some((name, entry)) = it.step()? else {
                self.stack.pop();
                continue;
            };
            let path = join(dir, &name);
            if entry.kind == Kind::Dir {
                let children = self.view.children(&path)?;
                self.stack.push((path.clone(), children));
            }
            return Ok(Some((path, entry)));
        }
        Ok(None)
    }
}

impl Iterator for Walk<'_> {
    type Item = Result<(Vec<u8>, Entry)>;
    fn next(&mut self) -> Option<Self::Item> {
        let r = self.step().transpose();
        if matches!(r, Some(Err(_))) {
            self.stack.clear();
        }
        r
    }
}

impl Iterator for ListIter<'_> {
    type Item = Result<(Vec<u8>, Entry)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}

impl Repo {
    /// Test support: commits a full snapshot whose layer holds exactly `entries` (dir, name,
    /// entry), written straight into the index without any of backup's checks, so that tests can
    /// build the hostile repositories (names like `..`, `a/b`, entries under a symlink) that
    /// restore and the mount must survive. Never used by strata itself.
    #[doc(hidden)]
    pub fn insert_raw_full_snapshot(
        &self,
        snapshot: &Snapshot,
        entries: &[(Vec<u8>, Vec<u8>, Entry)],
    ) -> Result<()> {
        for (dir, name, e) in entries {
            let key = keys::entry_key(&snapshot.id, dir, name);
            self.index().insert(Space::Layers, &key, &e.encode())?;
        }
        self.index()
            .insert(Space::Records, &snapshot.id.0, &snapshot.encode())?;
        self.snapshots_changed();
        self.flush()
    }
}

#[cfg(test)]
mod tests;
