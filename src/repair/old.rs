//! What `repair` can still read from the database it replaces: the compression level, the
//! snapshot records, and layers, merged into the rebuilt index where the packs lost them. A damaged
//! sled may fail or panic anywhere; every read here turns that into "unknown".

use std::collections::HashMap;
use std::path::Path;

use super::build::LayerEntries;
use crate::check::{self, DbCopy};
use crate::id::SnapshotId;
use crate::repo::crypt::Crypt;
use crate::repo::keys;
use crate::repo::store::{MetaStore, Space};
use crate::snapshot::Snapshot;

/// What can still be read from the database being replaced.
#[derive(Default)]
pub(super) struct OldIndex {
    /// Its compression level.
    pub compression: Option<i32>,
    /// Its snapshot records.
    pub snapshots: HashMap<SnapshotId, Snapshot>,
    /// Ids of its records that do not decode.
    pub undecodable: Vec<SnapshotId>,
    /// The database, open for reading layers (dropped before its copy).
    db: Option<Box<dyn MetaStore>>,
    /// In a dry run, the private copy `db` was opened from.
    _copy: Option<DbCopy>,
}

impl OldIndex {
    /// The layer of `id` as the old database holds it (keys without the snapshot id), or `None`
    /// when it cannot be read whole: a partial layer would show a wrong tree.
    pub fn layer(&self, id: &SnapshotId) -> Option<LayerEntries> {
        let db = self.db.as_ref()?;
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            db.scan(Space::Layers, &id.0)
                .map(|kv| {
                    let (k, v) = kv.ok()?;
                    keys::split_entry_key(&k[16..])?;
                    Some((k[16..].to_vec(), v.to_vec()))
                })
                .collect::<Option<LayerEntries>>()
        }));
        read.ok().flatten()
    }
}

/// Reads the compression level and the snapshot records from the old database, when it opens,
/// and keeps it open for [`OldIndex::layer`]; `copy` reads a private copy (a dry run: opening a
/// sled database may write to it). A damaged sled may fail or panic on open: both just mean
/// "unknown".
pub(super) fn read(index: &Path, copy: bool, crypt: Option<&std::sync::Arc<Crypt>>) -> OldIndex {
    if !index.join("db").exists() {
        return OldIndex::default();
    }
    let (dir, copied) = if copy {
        match check::copy_db(index) {
            Ok(c) => (c.path().to_path_buf(), Some(c)),
            Err(e) => {
                log::warn!("Cannot copy the old index to read it: {e}");
                return OldIndex::default();
            }
        }
    } else {
        (index.to_path_buf(), None)
    };
    let read = std::panic::catch_unwind(move || -> Option<OldIndex> {
        let db = crate::repo::store::over(
            crate::repo::open_sled(super::install::db_config(&dir)).ok()?,
            crypt,
            None,
        )
        .ok()?;
        let compression = db
            .get(Space::Meta, keys::META_COMPRESSION)
            .ok()
            .flatten()
            .and_then(|v| v.as_ref().try_into().ok().map(i32::from_be_bytes));
        let mut snapshots = HashMap::new();
        let mut undecodable = Vec::new();
        for kv in db.scan(Space::Records, &[]) {
            let Ok((k, v)) = kv else { continue };
            let Ok(id) = k.as_ref().try_into().map(SnapshotId) else {
                continue;
            };
            match Snapshot::decode(&v) {
                Ok(s) if s.id == id => {
                    snapshots.insert(id, s);
                }
                _ => undecodable.push(id),
            }
        }
        Some(OldIndex {
            compression,
            snapshots,
            undecodable,
            db: Some(db),
            _copy: None,
        })
    });
    let mut old = read.ok().flatten().unwrap_or_default();
    old._copy = copied;
    old
}
