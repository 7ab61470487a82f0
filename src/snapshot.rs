//! Snapshot records: what a backup was (source, kind, parent, time, tags) and what it cost (stats).
//! A record in sled is the commit point of a backup: a snapshot exists exactly when its record does.

use serde::{Deserialize, Serialize};

use crate::id::{ChunkId, SnapshotId};

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

/// Resolves what a user typed to one snapshot: `latest` (newest, of `source` if given), a full id, or
/// a unique prefix of an id.
pub fn find(repo: &crate::repo::Repo, name: &str, source: Option<&str>) -> crate::Result<Snapshot> {
    find_in(repo.snapshots()?, name, source)
}

/// [`find`] among `all` (every committed snapshot, oldest first), wherever they were read from.
pub fn find_in(all: Vec<Snapshot>, name: &str, source: Option<&str>) -> crate::Result<Snapshot> {
    let all: Vec<Snapshot> = all
        .into_iter()
        .filter(|s| source.is_none_or(|src| s.source == src))
        .collect();
    if name == "latest" {
        return all
            .into_iter()
            .next_back()
            .ok_or_else(|| crate::Error::SnapshotNotFound(name.to_string()));
    }
    let lower = name.to_ascii_lowercase();
    if lower.is_empty() || !lower.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(crate::Error::SnapshotNotFound(name.to_string()));
    }
    let mut hits = all
        .into_iter()
        .filter(|s| s.id.to_string().starts_with(&lower));
    match (hits.next(), hits.next()) {
        (Some(s), None) => Ok(s),
        (Some(_), Some(_)) => Err(crate::Error::SnapshotAmbiguous(name.to_string())),
        (None, _) => Err(crate::Error::SnapshotNotFound(name.to_string())),
    }
}
