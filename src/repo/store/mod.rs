//! The metadata store: the index's keyspaces behind one small interface. Everything outside
//! `repo/` reads and writes the index through [`MetaStore`] (reached with [`super::Repo::index`]),
//! never through sled itself, so that another store (an encrypted one, one kept beside object
//! storage) can take sled's place without touching the commands. Key layouts are in
//! [`super::keys`]. An encrypted repository's index is a [`SealedStore`] over the same sled
//! trees.

mod sealed;

use std::sync::Arc;

use crate::error::{Error, Result};
use crate::repo::crypt::Crypt;
use crate::repo::remote::journal::Journal;
pub use sealed::SealedStore;

/// The keyspaces of the index (sled trees in [`SledStore`]); see [`super::keys`] for their keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Space {
    /// Repository settings and markers (`META_*` keys).
    Meta,
    /// Chunk id → location in a pack.
    Chunks,
    /// Snapshot id → snapshot record.
    Records,
    /// Layer entries, keyed by snapshot, directory and name.
    Layers,
    /// Directories each layer touches, with their flags.
    LayerDirs,
}

impl Space {
    /// Every keyspace, in declaration order.
    pub const ALL: [Space; 5] = [
        Space::Meta,
        Space::Chunks,
        Space::Records,
        Space::Layers,
        Space::LayerDirs,
    ];

    fn index(self) -> usize {
        self as usize
    }

    pub(crate) fn tree_name(self) -> &'static str {
        use super::keys::*;
        match self {
            Space::Meta => TREE_META,
            Space::Chunks => TREE_CHUNKS,
            Space::Records => TREE_SNAPSHOTS,
            Space::Layers => TREE_LAYERS,
            Space::LayerDirs => TREE_LAYERDIRS,
        }
    }
}

/// A value (or key) read from the store: cheap to clone, derefs to `[u8]`. sled's own buffer
/// type, so that reads on the mount's path copy nothing; another store builds it from a `Vec`.
pub type Value = sled::IVec;

/// A key-value pair from a scan.
pub type Pair = (Value, Value);

/// The pairs of a scan in key order, each possibly an error of the store.
pub type Scan<'a> = Box<dyn Iterator<Item = Result<Pair>> + Send + 'a>;

/// Writes applied together by [`MetaStore::apply`]: all of them or none, across keyspaces.
#[derive(Default, Debug, Clone)]
pub struct Batch {
    ops: Vec<(Space, Vec<u8>, Option<Vec<u8>>)>,
    bytes: usize,
}

impl Batch {
    /// Sets `key` in `space` to `value`.
    pub fn insert(&mut self, space: Space, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        let (k, v) = (key.as_ref().to_vec(), value.as_ref().to_vec());
        self.bytes += k.len() + v.len();
        self.ops.push((space, k, Some(v)));
    }

    /// Deletes `key` from `space`.
    pub fn remove(&mut self, space: Space, key: impl AsRef<[u8]>) {
        let k = key.as_ref().to_vec();
        self.bytes += k.len();
        self.ops.push((space, k, None));
    }

    /// Writes in the batch.
    pub fn len(&self) -> usize {
        self.ops.len()
    }

    /// Whether the batch writes nothing.
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Key and value bytes the batch writes (for the free-space reserve, [`super::space`]).
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

/// The index's storage: ordered byte keyspaces with prefix scans and atomic batches. Writes are
/// durable only after [`MetaStore::flush`].
pub trait MetaStore: Send + Sync {
    /// The value of `key` in `space`.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Value>>;

    /// Whether `key` is in `space`.
    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        Ok(self.get(space, key)?.is_some())
    }

    /// Every pair of `space` whose key starts with `prefix` (all of them for an empty prefix),
    /// in key order.
    fn scan(&self, space: Space, prefix: &[u8]) -> Scan<'_>;

    /// Every pair of `space` whose key starts with `prefix`, in no particular order: for
    /// callers that do not need the order (deleting or marking a layer's entries). A store that
    /// cannot keep key order (the encrypted one) streams these instead of gathering and sorting
    /// them; the default is [`MetaStore::scan`].
    fn scan_unordered(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        self.scan(space, prefix)
    }

    /// Sets one key; for many, [`MetaStore::apply`] is faster.
    fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> Result<()>;

    /// Deletes one key.
    fn remove(&self, space: Space, key: &[u8]) -> Result<()>;

    /// Applies every write of `batch` atomically.
    fn apply(&self, batch: Batch) -> Result<()>;

    /// A fresh number, never handed out before by this store (also across restarts).
    fn generate_id(&self) -> Result<u64>;

    /// Makes every write so far durable.
    fn flush(&self) -> Result<()>;

    /// The sled database under the store, stored values as they are (sealed in an encrypted
    /// repository): what a checkpoint of a repository in a bucket copies.
    fn raw_db(&self) -> Option<sled::Db> {
        None
    }
}

/// The [`MetaStore`] of a repository: a sled database, one tree per [`Space`]. For a repository
/// in a bucket, every write is also recorded in the journal that its flush sends to the bucket
/// (`super::remote::journal`).
pub struct SledStore {
    db: sled::Db,
    trees: [sled::Tree; 5],
    journal: Option<Arc<Journal>>,
}

impl SledStore {
    /// Opens (creating where missing) the keyspaces of `db`.
    pub fn new(db: sled::Db) -> Result<SledStore> {
        let open = |s: Space| db.open_tree(s.tree_name());
        let trees = [
            open(Space::Meta)?,
            open(Space::Chunks)?,
            open(Space::Records)?,
            open(Space::Layers)?,
            open(Space::LayerDirs)?,
        ];
        Ok(SledStore {
            db,
            trees,
            journal: None,
        })
    }

    /// Records every write in `journal` as well, and flushes through it.
    pub fn journaled(mut self, journal: Option<Arc<Journal>>) -> SledStore {
        self.journal = journal;
        self
    }

    fn record(&self, space: Space, key: &[u8], value: Option<&[u8]>) -> Result<()> {
        match &self.journal {
            Some(j) => j.record(space, key, value),
            None => Ok(()),
        }
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        &self.trees[space.index()]
    }
}

impl MetaStore for SledStore {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Value>> {
        Ok(self.tree(space).get(key)?)
    }

    fn contains(&self, space: Space, key: &[u8]) -> Result<bool> {
        Ok(self.tree(space).contains_key(key)?)
    }

    fn scan(&self, space: Space, prefix: &[u8]) -> Scan<'_> {
        Box::new(
            self.tree(space)
                .scan_prefix(prefix)
                .map(|kv| kv.map_err(Error::from)),
        )
    }

    fn insert(&self, space: Space, key: &[u8], value: &[u8]) -> Result<()> {
        self.record(space, key, Some(value))?;
        self.tree(space).insert(key, value)?;
        Ok(())
    }

    fn remove(&self, space: Space, key: &[u8]) -> Result<()> {
        self.record(space, key, None)?;
        self.tree(space).remove(key)?;
        Ok(())
    }

    fn apply(&self, batch: Batch) -> Result<()> {
        let Some(first) = batch.ops.first().map(|o| o.0) else {
            return Ok(());
        };
        for (space, k, v) in &batch.ops {
            self.record(*space, k, v.as_deref())?;
        }
        let mut per_space: [Option<sled::Batch>; 5] = Default::default();
        for (space, k, v) in batch.ops {
            let b = per_space[space.index()].get_or_insert_with(Default::default);
            match v {
                Some(v) => b.insert(k, v),
                None => b.remove(k),
            }
        }
        if per_space.iter().filter(|b| b.is_some()).count() == 1 {
            // One keyspace: sled applies a batch atomically by itself, without a transaction.
            let b = per_space[first.index()].take().expect("the one batch");
            return Ok(self.tree(first).apply_batch(b)?);
        }
        apply_across(&self.trees, &per_space)
    }

    fn generate_id(&self) -> Result<u64> {
        Ok(self.db.generate_id()?)
    }

    fn raw_db(&self) -> Option<sled::Db> {
        Some(self.db.clone())
    }

    fn flush(&self) -> Result<()> {
        let local = || -> Result<()> {
            self.db.flush()?;
            Ok(())
        };
        match &self.journal {
            Some(j) => j.commit(local),
            None => local(),
        }
    }
}

/// The index over `db`: sealed with `crypt` in an encrypted repository, sled's trees as they
/// are otherwise; its writes journaled for the bucket when `journal` is given.
pub fn over(
    db: sled::Db,
    crypt: Option<&Arc<Crypt>>,
    journal: Option<Arc<Journal>>,
) -> Result<Box<dyn MetaStore>> {
    let plain = SledStore::new(db)?.journaled(journal);
    Ok(match crypt {
        Some(c) => Box::new(SealedStore::new(plain, c.clone())),
        None => Box::new(plain),
    })
}

/// Applies one batch per tree in a single sled transaction.
fn apply_across(trees: &[sled::Tree; 5], batches: &[Option<sled::Batch>; 5]) -> Result<()> {
    use sled::transaction::{ConflictableTransactionError, TransactionError};
    use sled::Transactional;
    trees
        .as_slice()
        .transaction(|tx| {
            for (t, b) in tx.iter().zip(batches) {
                if let Some(b) = b {
                    t.apply_batch(b)?;
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            TransactionError::Storage(e) => Error::Db(e),
            TransactionError::Abort(()) => unreachable!("a batch never aborts"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> SledStore {
        SledStore::new(sled::Config::new().temporary(true).open().unwrap()).unwrap()
    }

    #[test]
    fn keyspaces_are_separate_and_scans_are_prefix_ordered() {
        let s = store();
        s.insert(Space::Layers, b"ab2", b"2").unwrap();
        s.insert(Space::Layers, b"ab1", b"1").unwrap();
        s.insert(Space::Layers, b"b", b"x").unwrap();
        s.insert(Space::Chunks, b"ab0", b"c").unwrap();
        let got: Vec<_> = s
            .scan(Space::Layers, b"ab")
            .map(|kv| kv.unwrap().0.to_vec())
            .collect();
        assert_eq!(got, vec![b"ab1".to_vec(), b"ab2".to_vec()]);
        assert_eq!(s.scan(Space::Layers, b"").count(), 3);
        assert!(s.get(Space::Chunks, b"ab1").unwrap().is_none());
        assert!(s.contains(Space::Chunks, b"ab0").unwrap());
    }

    #[test]
    fn a_batch_across_keyspaces_applies_every_write() {
        let s = store();
        s.insert(Space::Meta, b"gone", b"1").unwrap();
        let mut b = Batch::default();
        b.insert(Space::Records, b"r", b"rec");
        b.insert(Space::Meta, b"m", b"meta");
        b.remove(Space::Meta, b"gone");
        assert_eq!(b.len(), 3);
        s.apply(b).unwrap();
        assert_eq!(s.get(Space::Records, b"r").unwrap().unwrap(), b"rec");
        assert_eq!(s.get(Space::Meta, b"m").unwrap().unwrap(), b"meta");
        assert!(!s.contains(Space::Meta, b"gone").unwrap());
    }
}
