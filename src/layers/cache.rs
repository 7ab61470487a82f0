//! What the layer reader keeps in memory for an open repository, so that the cost of a lookup
//! does not grow with chain depth: each non-full layer's touched directories ([`LayerDirs`],
//! loaded once per layer and kept for the handle's lifetime) and, per (layer, directory), the
//! entries a non-full layer holds there ([`DirLayer`], the least recently used dropped past a
//! bound). A process that only reads may have the touched directories seeded from the lookup
//! catalog ([`seed_dirs`]), decoded on first use.
//!
//! The cache hangs off the [`Repo`] handle as its [`Derived`] state: the handle tells it when
//! records change (the seed goes) and when layers are rewritten (everything goes).

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};

use lru::LruCache;

use crate::entry::Entry;
use crate::error::Result;
use crate::id::SnapshotId;
use crate::repo::derived::Derived;
use crate::repo::keys;
use crate::repo::store::Space;
use crate::repo::Repo;

use super::lock;

/// Directories each layer touches, with the opaque flag; loaded once per layer and shared.
pub type LayerDirs = HashMap<Vec<u8>, bool>;

/// One non-full layer's entries in one directory, sorted by name (the root's own entry has the
/// empty name). Held in memory so that lookups deep in an incremental chain probe memory, not sled.
pub type DirLayer = Arc<Vec<(Vec<u8>, Entry)>>;

/// Layer directories with more entries than this are read from sled each time, not cached.
const MAX_CACHED_DIR_LAYER: usize = 4096;
/// (layer, directory) pairs kept in memory.
const DIR_LAYER_CACHE: NonZeroUsize = NonZeroUsize::new(16 * 1024).expect("nonzero");

/// Touched-directory sets read from somewhere other than the index (the lookup catalog), in that
/// store's encoding: decoded when a layer is first visited, so that start-up and memory do not
/// grow with the layers nobody visits.
pub struct DirsSeed {
    /// Per non-full layer, its touched directories as encoded.
    pub encoded: crate::snapshot::IdMap<Vec<u8>>,
    /// Decodes one layer's set.
    pub decode: fn(&[u8]) -> Result<Arc<LayerDirs>>,
}

/// The layer caches of one open repository (see the module documentation).
struct LayerCache {
    dirs: Mutex<HashMap<SnapshotId, Arc<LayerDirs>>>,
    /// (layer, directory) → its entries, or `None` when too many to cache.
    dir_layers: Mutex<LruCache<DirKey, Option<DirLayer>>>,
    seed: RwLock<Option<Arc<DirsSeed>>>,
}

impl Default for LayerCache {
    fn default() -> Self {
        // Bounded, but grown as it fills (`LruCache::new` would allocate for the bound at once).
        let mut dir_layers = LruCache::unbounded();
        dir_layers.resize(DIR_LAYER_CACHE);
        LayerCache {
            dirs: Default::default(),
            dir_layers: Mutex::new(dir_layers),
            seed: Default::default(),
        }
    }
}

impl Derived for LayerCache {
    fn records_changed(&self) {
        // The seed's sets would refill the cache with what the catalog said.
        *self.seed.write().unwrap_or_else(|e| e.into_inner()) = None;
    }

    fn layers_changed(&self) {
        self.records_changed();
        lock(&self.dirs).clear();
        lock(&self.dir_layers).clear();
    }
}

fn cache(repo: &Repo) -> &LayerCache {
    repo.derived_or_init(LayerCache::default)
}

/// Makes `repo` take non-full layers' touched directories from `seed` until a record changes.
pub(crate) fn seed_dirs(repo: &Repo, seed: DirsSeed) {
    *cache(repo).seed.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(seed));
}

impl Repo {
    /// A layer's touched directories if they are in memory (loaded before, or in the lookup
    /// catalog's seed), without reading sled; for callers that can do without them when absent.
    pub fn cached_layer_dirs(&self, id: &SnapshotId) -> Option<Arc<LayerDirs>> {
        let c = cache(self);
        if let Some(d) = lock(&c.dirs).get(id) {
            return Some(d.clone());
        }
        let seed = c.seed.read().unwrap_or_else(|e| e.into_inner()).clone()?;
        let d = match (seed.decode)(seed.encoded.get(id)?) {
            Ok(d) => d,
            Err(e) => {
                log::info!("Layer {id} in the lookup catalog: {e}; reading the index");
                return None;
            }
        };
        lock(&c.dirs).insert(*id, d.clone());
        Some(d)
    }

    /// Directories touched by a (non-full) layer, loaded once and cached for the handle's
    /// lifetime.
    pub fn layer_dirs(&self, id: &SnapshotId) -> Result<Arc<LayerDirs>> {
        if let Some(d) = self.cached_layer_dirs(id) {
            return Ok(d);
        }
        let mut dirs = LayerDirs::new();
        for kv in self.index().scan(Space::LayerDirs, &id.0) {
            let (k, v) = kv?;
            dirs.insert(k[16..].to_vec(), v.first() == Some(&1));
        }
        let dirs = Arc::new(dirs);
        lock(&cache(self).dirs).insert(*id, dirs.clone());
        Ok(dirs)
    }

    /// The entries a non-full layer holds directly under `dir`, from memory after the first call;
    /// `None` when there are too many to keep (the caller then reads sled).
    pub fn dir_layer(&self, id: &SnapshotId, dir: &[u8]) -> Result<Option<DirLayer>> {
        let c = cache(self);
        if let Some(d) = lock(&c.dir_layers).get(&(id, dir) as &dyn AsDirKey) {
            return Ok(d.clone());
        }
        let prefix = keys::dir_prefix(id, dir);
        let mut entries = Vec::new();
        let mut too_big = false;
        for kv in self.index().scan(Space::Layers, &prefix) {
            let (k, v) = kv?;
            if entries.len() >= MAX_CACHED_DIR_LAYER {
                too_big = true;
                break;
            }
            entries.push((k[prefix.len()..].to_vec(), Entry::decode(&v)?));
        }
        let value = (!too_big).then(|| Arc::new(entries));
        lock(&c.dir_layers).put(DirKey(*id, dir.to_vec()), value.clone());
        Ok(value)
    }
}

/// A (layer, directory) key of the directory cache. Probed through [`AsDirKey`] with a borrowed
/// directory, so that a probe allocates nothing.
struct DirKey(SnapshotId, Vec<u8>);

/// (layer, directory), owned or borrowed.
trait AsDirKey {
    fn parts(&self) -> (&SnapshotId, &[u8]);
}

impl AsDirKey for DirKey {
    fn parts(&self) -> (&SnapshotId, &[u8]) {
        (&self.0, &self.1)
    }
}

impl AsDirKey for (&SnapshotId, &[u8]) {
    fn parts(&self) -> (&SnapshotId, &[u8]) {
        (self.0, self.1)
    }
}

impl<'a> Borrow<dyn AsDirKey + 'a> for DirKey {
    fn borrow(&self) -> &(dyn AsDirKey + 'a) {
        self
    }
}

impl Hash for dyn AsDirKey + '_ {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for dyn AsDirKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsDirKey + '_ {}

// Must agree with the borrowed form's, as `Borrow` requires.
impl Hash for DirKey {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.parts().hash(h);
    }
}

impl PartialEq for DirKey {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for DirKey {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_directory_cache_is_bounded() {
        let c = LayerCache::default();
        assert_eq!(lock(&c.dir_layers).cap(), DIR_LAYER_CACHE);
    }

    #[test]
    fn a_borrowed_key_finds_its_owned_twin() {
        let mut c: LruCache<DirKey, u32> = LruCache::new(NonZeroUsize::new(2).unwrap());
        let (a, b) = (SnapshotId([1; 16]), SnapshotId([2; 16]));
        c.put(DirKey(a, b"x/y".to_vec()), 1);
        c.put(DirKey(b, b"x/y".to_vec()), 2);
        assert_eq!(c.get(&(&b, &b"x/y"[..]) as &dyn AsDirKey), Some(&2));
        assert_eq!(c.get(&(&a, &b"x/y"[..]) as &dyn AsDirKey), Some(&1));
        assert_eq!(c.get(&(&a, &b"x"[..]) as &dyn AsDirKey), None);
        // Past the bound the least recently used goes (`b`: `a` was probed after it).
        c.put(DirKey(a, b"z".to_vec()), 3);
        assert_eq!(c.get(&(&b, &b"x/y"[..]) as &dyn AsDirKey), None);
        assert_eq!(c.get(&(&a, &b"x/y"[..]) as &dyn AsDirKey), Some(&1));
    }
}
