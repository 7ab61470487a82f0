//! Layer resolution — the only code that knows how a snapshot's view is composed from layers.
//!
//! A snapshot's view is its own layer overlaid on its parent's view, down to a full layer. For a
//! path `dir/name`, the newest layer holding an entry for it wins; a whiteout entry hides the path.
//! A directory entry marked *opaque* (new in that layer) hides older layers' children of that
//! directory. Resolution is top-down: a path is looked up inside a directory that was itself
//! resolved, so a deleted directory hides its whole subtree.
//!
//! Cost does not grow with chain depth in sled reads: each non-full layer records which directories
//! it touched (`layerdirs`, held in memory once loaded), so a lookup skips, with a hash probe, every
//! layer that has nothing in the directory, and usually reads sled once.

use std::collections::HashMap;
use std::sync::Arc;

use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::repo::keys;
use crate::repo::{DirLayer, LayerDirs, Repo};
use crate::snapshot::Snapshot;

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
}

impl LayerStore for Repo {
    fn snapshot(&self, id: &SnapshotId) -> Result<Option<Snapshot>> {
        Repo::snapshot(self, id)
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
    /// Per visited directory, the upper layers merged (see [`Overlay`]); emptied past a bound.
    overlays: std::sync::RwLock<HashMap<Vec<u8>, Arc<Overlay>>>,
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

/// Directories whose overlay a view keeps before it starts over.
const MAX_OVERLAYS: usize = 4096;

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
    /// its tree.
    pub fn open(repo: &Arc<S>, id: &SnapshotId) -> Result<View<S>> {
        let snapshot = repo
            .snapshot(id)?
            .ok_or_else(|| Error::SnapshotNotFound(id.to_string()))?;
        let mut chain = Vec::new();
        let mut cur = snapshot.clone();
        loop {
            if cur.ends_chain() {
                chain.push(Layer {
                    id: cur.id,
                    dirs: None,
                });
                break;
            }
            chain.push(Layer {
                id: cur.id,
                dirs: Some(repo.layer_dirs(&cur.id)?),
            });
            let pid = cur.parent.unwrap();
            cur = repo
                .snapshot(&pid)?
                .ok_or_else(|| Error::MissingParent(cur.id.to_string(), pid.to_string()))?;
            if chain.len() > 100_000 {
                return Err(Error::CorruptMetadata("snapshot parent chain loops".into()));
            }
        }
        Ok(View {
            repo: repo.clone(),
            snapshot,
            chain,
            overlays: Default::default(),
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
        if let Some(o) = self.overlays.read().unwrap().get(dir) {
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
        let mut all = self.overlays.write().unwrap();
        if all.len() >= MAX_OVERLAYS {
            all.clear();
        }
        all.insert(dir.to_vec(), o.clone());
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

    /// The layers of this view, newest first (the last is a full layer). `diff` uses it to find
    /// the layers two views do not share: only paths those layers hold can differ.
    pub fn layer_ids(&self) -> Vec<SnapshotId> {
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
    /// The children of directory `dir` (already resolved), sorted by name bytes, newest layer
    /// winning, whiteouts removed. Streams: memory does not grow with the directory's size.
    pub fn list(&self, dir: &[u8]) -> Result<ListIter> {
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
                    Cursor::Sled {
                        plen: prefix.len(),
                        it: Box::new(self.repo.layers.scan_prefix(prefix)),
                    }
                }
            };
            let mut source = Source { cursor, head: None };
            source.head = source.cursor.next_child()?;
            sources.push(source);
        }
        Ok(ListIter { sources })
    }

    /// Entries of this snapshot's own layer (what it added, changed or deleted), as
    /// (dir, name, entry) in key order. Used for `changes/` and layer diffs.
    pub fn own_layer(&self) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>, Entry)>> + '_ {
        layer_entries(&self.repo, &self.snapshot.id)
    }
}

/// Every entry one layer holds (whiteouts included), as (dir, name, entry) in key order, without
/// opening a view: `find` scans each distinct layer once this way.
pub fn layer_entries<'a>(
    repo: &'a Repo,
    layer: &SnapshotId,
) -> impl Iterator<Item = Result<(Vec<u8>, Vec<u8>, Entry)>> + 'a {
    repo.layers.scan_prefix(layer.0).map(|kv| {
        let (k, v) = kv?;
        let (dir, name) = keys::split_entry_key(&k[16..])
            .ok_or_else(|| Error::CorruptMetadata("malformed layer key".into()))?;
        Ok((dir.to_vec(), name.to_vec(), Entry::decode(&v)?))
    })
}

/// The entry one layer itself holds for `dir/name` (whiteouts included), without looking at any
/// other layer: what `changes/` shows and what chain-walking callers probe.
pub fn layer_entry(
    repo: &Repo,
    layer: &SnapshotId,
    dir: &[u8],
    name: &[u8],
) -> Result<Option<Entry>> {
    repo.layers
        .get(keys::entry_key(layer, dir, name))?
        .map(|v| Entry::decode(&v))
        .transpose()
}

/// The children one layer itself holds under `dir` (whiteouts included, the root's own entry
/// excluded), sorted by name.
pub fn layer_children<'a>(
    repo: &'a Repo,
    layer: &SnapshotId,
    dir: &[u8],
) -> impl Iterator<Item = Result<(Vec<u8>, Entry)>> + 'a {
    let mut cursor = Cursor::Sled {
        plen: keys::dir_prefix(layer, dir).len(),
        it: Box::new(repo.layers.scan_prefix(keys::dir_prefix(layer, dir))),
    };
    std::iter::from_fn(move || cursor.next_child().transpose())
}

enum Cursor {
    Sled {
        it: Box<sled::Iter>,
        plen: usize,
    },
    Mem {
        mem: crate::repo::DirLayer,
        pos: usize,
    },
}

impl Cursor {
    /// The next child (name, entry), skipping the root's own entry (stored with an empty name).
    fn next_child(&mut self) -> Result<Option<(Vec<u8>, Entry)>> {
        loop {
            let (name, entry) = match self {
                Cursor::Sled { it, plen } => match it.next().transpose()? {
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

struct Source {
    cursor: Cursor,
    head: Option<(Vec<u8>, Entry)>,
}

/// Iterator over a directory's merged children, from [`View::list`].
pub struct ListIter {
    /// Newest layer first.
    sources: Vec<Source>,
}

impl ListIter {
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

impl Iterator for ListIter {
    type Item = Result<(Vec<u8>, Entry)>;
    fn next(&mut self) -> Option<Self::Item> {
        self.step().transpose()
    }
}
