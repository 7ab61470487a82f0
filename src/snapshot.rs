//! Snapshot records: what a backup was (source, kind, parent, time, tags) and what it cost (stats).
//! A record in the index is the commit point of a backup: a snapshot exists exactly when its
//! record does. The records are read and written here ([`Repo::snapshots`], [`Repo::snapshot`],
//! [`Repo::insert_snapshot_record`]); a process that only reads (the mount) may have them seeded
//! from the lookup catalog instead (`seed_records`), until any record changes.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, SnapshotId};
use crate::repo::derived::Derived;
use crate::repo::store::Space;
use crate::repo::{space, Repo};

/// The three backup kinds; they differ only in which snapshot their layer is relative to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
pub enum BackupKind {
    /// A complete layer, no parent.
    Full,
    /// Changes since the previous snapshot of the source, of any kind.
    Incremental,
    /// Changes since the last full snapshot of the source.
    Differential,
}

impl BackupKind {
    /// Lowercase name used in output and in the mount's `kinds/` directory.
    pub fn name(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Differential => "differential",
        }
    }
}

/// What a backup did, in units named by the fields.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackupStats {
    /// Regular files in the snapshot's view (the whole tree, not just the layer).
    pub files: u64,
    /// Directories in the snapshot's view, including the root.
    pub dirs: u64,
    /// Apparent bytes of all regular files in the view.
    pub total_bytes: u64,
    /// Entries written to this snapshot's layer (changed, added, whiteouts).
    pub layer_entries: u64,
    /// Whiteouts in the layer (deleted paths).
    pub deleted: u64,
    /// Files whose content was read.
    pub files_read: u64,
    /// Bytes read from the source.
    pub read_bytes: u64,
    /// Chunks not in the repository before.
    pub new_chunks: u64,
    /// Plaintext bytes of the new chunks.
    pub new_bytes: u64,
    /// Bytes the new chunks took in pack files (after compression, headers included).
    pub stored_bytes: u64,
    /// Paths skipped or stored with a warning.
    pub warnings: u64,
    /// Wall time of the backup.
    pub elapsed_ms: u64,
}

/// The committed description of one snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    /// Unique id.
    pub id: SnapshotId,
    /// Backup start, nanoseconds since the Unix epoch (UTC).
    pub time_ns: i64,
    /// Host name of the machine that made it.
    pub host: String,
    /// Which source it belongs to: an absolute path or `--source-name`.
    pub source: String,
    /// Full, incremental or differential.
    pub kind: BackupKind,
    /// The snapshot whose view this layer is overlaid on (`None` for a full).
    pub parent: Option<SnapshotId>,
    /// Number of layers in this snapshot's view (1 for a full).
    pub depth: u32,
    /// User labels.
    pub tags: Vec<String>,
    /// Figures from the backup.
    pub stats: BackupStats,
    /// Ids of the pack records holding a copy of this layer's entries, for rebuilding the index.
    pub layer_blobs: Vec<ChunkId>,
}

impl Snapshot {
    /// Whether this snapshot's layer ends its chain: a full, whatever its parent field says. Such
    /// a layer holds every path; resolution stops there. A non-full snapshot without a parent does
    /// not end a chain, it breaks it: [`crate::layers::chain_of`] is the one walk of the rule.
    pub fn ends_chain(&self) -> bool {
        self.kind == BackupKind::Full
    }

    /// Serialized form (sled value and pack record payload).
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).expect("snapshot serializes")
    }

    /// Parses [`Snapshot::encode`] output.
    pub fn decode(bytes: &[u8]) -> crate::Result<Snapshot> {
        postcard::from_bytes(bytes)
            .map_err(|e| crate::Error::CorruptMetadata(format!("undecodable snapshot record: {e}")))
    }

    /// Backup time as RFC 3339 UTC with seconds, e.g. `2026-11-20T02:00:00Z`.
    pub fn time_rfc3339(&self) -> String {
        crate::time::rfc3339(self.time_ns)
    }
}

impl Repo {
    /// Every committed snapshot, oldest first.
    pub fn snapshots(&self) -> crate::Result<Vec<Snapshot>> {
        if let Some(seed) = seeded(self) {
            return Ok(seed.list.clone());
        }
        let mut out = Vec::new();
        for kv in self.index().scan(Space::Records, b"") {
            let (_, v) = kv?;
            out.push(Snapshot::decode(&v)?);
        }
        out.sort_by_key(|s| (s.time_ns, s.id));
        Ok(out)
    }

    /// One committed snapshot.
    pub fn snapshot(&self, id: &SnapshotId) -> crate::Result<Option<Snapshot>> {
        if let Some(seed) = seeded(self) {
            if let Some(&i) = seed.by_id.get(id) {
                return Ok(Some(seed.list[i].clone()));
            }
        }
        self.index()
            .get(Space::Records, &id.0)?
            .map(|v| Snapshot::decode(&v))
            .transpose()
    }

    /// What a chain walk needs of one record ([`crate::layers::Link`]), without copying it when
    /// the records are in memory.
    pub fn snapshot_link(&self, id: &SnapshotId) -> crate::Result<Option<crate::layers::Link>> {
        if let Some(seed) = seeded(self) {
            if let Some(&i) = seed.by_id.get(id) {
                return Ok(Some(crate::layers::Link::of(&seed.list[i])));
            }
        }
        Ok(self.snapshot(id)?.as_ref().map(crate::layers::Link::of))
    }

    /// Commits a snapshot record: after its layer, its layer blobs and the pack holding its
    /// snapshot blob, the one write that makes it visible. Asks for the space first, so a disk
    /// that filled up fails the commit before sled sees it.
    pub fn insert_snapshot_record(&self, snapshot: &Snapshot) -> crate::Result<()> {
        let rec = snapshot.encode();
        self.ensure_room(
            "committing the snapshot",
            space::index_cost(1, 16 + rec.len()) + space::SLED_SEGMENT,
        )?;
        self.index().insert(Space::Records, &snapshot.id.0, &rec)?;
        let seed = repo_seed_take(self);
        self.snapshots_changed();
        if let Some(seed) = seed {
            // The records this handle was seeded with are still every record but this one: keep
            // answering from memory (a backup's lookup files are then written without reading
            // every record back from the index).
            let mut seed = Arc::try_unwrap(seed).unwrap_or_else(|s| Seeded {
                list: s.list.clone(),
                by_id: s.by_id.clone(),
            });
            if let Some(i) = seed.by_id.remove(&snapshot.id) {
                seed.list.remove(i);
            }
            let key = (snapshot.time_ns, snapshot.id);
            let at = seed.list.partition_point(|s| (s.time_ns, s.id) < key);
            seed.list.insert(at, snapshot.clone());
            if at + 1 == seed.list.len() {
                seed.by_id.insert(snapshot.id, at);
            } else {
                seed.by_id = seed
                    .list
                    .iter()
                    .enumerate()
                    .map(|(i, s)| (s.id, i))
                    .collect();
            }
            *self
                .derived_or_init(SeededRecords::default)
                .0
                .write()
                .unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(seed));
        }
        Ok(())
    }

    /// Whether the snapshot records come from the lookup catalog ([`seed_records`]).
    #[cfg(test)]
    pub(crate) fn is_seeded(&self) -> bool {
        seeded(self).is_some()
    }
}

/// A map keyed by snapshot id. Ids are already uniformly random (blake3), so their first eight
/// bytes are the hash: the maps over every snapshot of a long history (thousands of entries,
/// built on every opening) skip SipHash.
pub type IdMap<V> = HashMap<SnapshotId, V, std::hash::BuildHasherDefault<IdHasher>>;

/// The hasher of [`IdMap`].
#[derive(Default)]
pub struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.0 = self.0.rotate_left(5) ^ u64::from_le_bytes(b);
        }
    }
    fn write_usize(&mut self, _: usize) {}
}

/// Snapshot records taken from the lookup catalog instead of the index, held for an open handle
/// until any record changes.
#[derive(Default)]
struct SeededRecords(RwLock<Option<Arc<Seeded>>>);

struct Seeded {
    /// Oldest first, as [`Repo::snapshots`] returns them.
    list: Vec<Snapshot>,
    by_id: IdMap<usize>,
}

impl Derived for SeededRecords {
    fn records_changed(&self) {
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = None;
    }
    fn layers_changed(&self) {
        self.records_changed();
    }
}

/// Takes the seed out of `repo` (nothing else then holds it, usually, so it can be changed in
/// place).
fn repo_seed_take(repo: &Repo) -> Option<Arc<Seeded>> {
    let s = repo.derived::<SeededRecords>()?;
    s.0.write().unwrap_or_else(|e| e.into_inner()).take()
}

impl Repo {
    /// Runs `f` on every committed snapshot, oldest first, without copying them when they are in
    /// memory (seeded).
    pub(crate) fn with_snapshots<T>(&self, f: impl FnOnce(&[Snapshot]) -> T) -> crate::Result<T> {
        match seeded(self) {
            Some(seed) => Ok(f(&seed.list)),
            None => Ok(f(&self.snapshots()?)),
        }
    }
}

fn seeded(repo: &Repo) -> Option<Arc<Seeded>> {
    let s = repo.derived::<SeededRecords>()?;
    s.0.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Makes `repo` answer [`Repo::snapshots`] and [`Repo::snapshot`] from `list` (every record,
/// oldest first, as the lookup catalog held them when the index was opened) until a record
/// changes: on a cold start one sequential read of the catalog instead of a page read per record.
pub(crate) fn seed_records(repo: &Repo, list: Vec<Snapshot>) {
    let by_id = list.iter().enumerate().map(|(i, s)| (s.id, i)).collect();
    let seeded = Arc::new(Seeded { list, by_id });
    *repo
        .derived_or_init(SeededRecords::default)
        .0
        .write()
        .unwrap_or_else(|e| e.into_inner()) = Some(seeded);
}

/// Resolves what a user typed to one snapshot: `latest` (newest, of `source` if given), a full id, or
/// a unique prefix of an id.
pub fn find(repo: &crate::repo::Repo, name: &str, source: Option<&str>) -> crate::Result<Snapshot> {
    find_in(&repo.snapshots()?, name, source)
}

/// [`find`] among `all` (every committed snapshot, oldest first), wherever they were read from.
/// `latest` looks at the newest only: its cost does not grow with the history.
pub fn find_in(all: &[Snapshot], name: &str, source: Option<&str>) -> crate::Result<Snapshot> {
    let mut of_source = all
        .iter()
        .filter(|s| source.is_none_or(|src| s.source == src));
    if name == "latest" {
        return of_source
            .next_back()
            .cloned()
            .ok_or_else(|| crate::Error::SnapshotNotFound(name.to_string()));
    }
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(crate::Error::SnapshotNotFound(name.to_string()));
    }
    let mut hits = of_source.filter(|s| s.id.to_string().starts_with(&lower));
    match (hits.next(), hits.next()) {
        (Some(s), None) => Ok(s.clone()),
        (Some(_), Some(_)) => Err(crate::Error::SnapshotAmbiguous(name.to_string())),
        (None, _) => Err(crate::Error::SnapshotNotFound(name.to_string())),
    }
}
