//! What `check` reports: problems (kind, severity, the thing concerned), damaged files per
//! snapshot view, and figures. `ProblemKind::name` strings are part of the `--json` interface.

use crate::id::{ChunkId, PackId, SnapshotId};

/// How bad a problem is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Something a prune would remove (e.g. an interrupted backup's layer); nothing is damaged.
    Leftover,
    /// Data or metadata is missing, corrupt or inconsistent.
    Damage,
}

/// What kind of problem was found; `name()` is the stable JSON string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ProblemKind {
    /// A snapshot record does not decode.
    UndecodableSnapshot,
    /// A snapshot's parent is not in the repository.
    MissingParent,
    /// A parent chain loops or ends in a layer that is not full.
    BrokenChain,
    /// An index entry does not decode.
    MalformedIndexEntry,
    /// An index entry names a pack that does not exist.
    MissingPack,
    /// An index entry points past the end of its pack.
    RecordOutOfBounds,
    /// The record header at an indexed offset does not verify.
    BadRecordHeader,
    /// The record header at an indexed offset disagrees with the index entry.
    HeaderMismatch,
    /// A record's payload fails decompression or its blake3 check.
    CorruptRecord,
    /// A layer entry references a chunk the index does not have.
    MissingChunk,
    /// A layer entry or key does not decode.
    UndecodableEntry,
    /// A snapshot's layer blob is not in the index (or is damaged).
    MissingLayerBlob,
    /// No snapshot blob exists for a snapshot.
    MissingSnapshotBlob,
    /// A snapshot's layer blobs do not hold its layer's entries.
    LayerBlobMismatch,
    /// A layer's `layerdirs` disagree with its entries.
    LayerdirsMismatch,
    /// A record is compressed with the dictionary, and the repository has none.
    MissingDictionary,
    /// The repository's dictionary has no record in the packs.
    DictionaryRecordMissing,
    /// Layer entries of a snapshot that does not exist.
    DanglingLayer,
    /// `layerdirs` keys of a snapshot that does not exist.
    DanglingLayerdirs,
    /// A snapshot that a forget tombstone says is gone.
    TombstonedSnapshot,
    /// A pack no index entry points into.
    UnindexedPack,
    /// A pack's 16-byte header (magic, version, reserved word) is wrong.
    BadPackHeader,
    /// A snapshot record in the index differs from its authoritative copy in the packs (and
    /// from every earlier copy).
    SnapshotRecordMismatch,
    /// A snapshot record in the index equals an earlier copy in the packs, not the last written:
    /// a forget or consolidate was interrupted before switching the index.
    StaleSnapshotRecord,
    /// The index database (`index/`) is gone; nothing else could be checked.
    IndexMissing,
    /// The index database does not open (truncated, corrupt); nothing else could be checked.
    IndexDamaged,
    /// A `forget` or `consolidate` was interrupted; the next command that opens the index
    /// completes it.
    InterruptedOperation,
}

impl ProblemKind {
    /// snake_case name used in `--json` output.
    pub fn name(self) -> &'static str {
        match self {
            ProblemKind::UndecodableSnapshot => "undecodable_snapshot",
            ProblemKind::MissingParent => "missing_parent",
            ProblemKind::BrokenChain => "broken_chain",
            ProblemKind::MalformedIndexEntry => "malformed_index_entry",
            ProblemKind::MissingPack => "missing_pack",
            ProblemKind::RecordOutOfBounds => "record_out_of_bounds",
            ProblemKind::BadRecordHeader => "bad_record_header",
            ProblemKind::HeaderMismatch => "header_mismatch",
            ProblemKind::CorruptRecord => "corrupt_record",
            ProblemKind::MissingChunk => "missing_chunk",
            ProblemKind::UndecodableEntry => "undecodable_entry",
            ProblemKind::MissingLayerBlob => "missing_layer_blob",
            ProblemKind::MissingSnapshotBlob => "missing_snapshot_blob",
            ProblemKind::LayerBlobMismatch => "layer_blob_mismatch",
            ProblemKind::LayerdirsMismatch => "layerdirs_mismatch",
            ProblemKind::MissingDictionary => "missing_dictionary",
            ProblemKind::DictionaryRecordMissing => "dictionary_record_missing",
            ProblemKind::DanglingLayer => "dangling_layer",
            ProblemKind::DanglingLayerdirs => "dangling_layerdirs",
            ProblemKind::TombstonedSnapshot => "tombstoned_snapshot",
            ProblemKind::UnindexedPack => "unindexed_pack",
            ProblemKind::BadPackHeader => "bad_pack_header",
            ProblemKind::SnapshotRecordMismatch => "snapshot_record_mismatch",
            ProblemKind::StaleSnapshotRecord => "stale_snapshot_record",
            ProblemKind::IndexMissing => "index_missing",
            ProblemKind::IndexDamaged => "index_damaged",
            ProblemKind::InterruptedOperation => "interrupted_operation",
        }
    }

    fn severity(self) -> Severity {
        match self {
            ProblemKind::DanglingLayer
            | ProblemKind::DanglingLayerdirs
            | ProblemKind::TombstonedSnapshot
            | ProblemKind::StaleSnapshotRecord
            | ProblemKind::UnindexedPack
            | ProblemKind::InterruptedOperation => Severity::Leftover,
            _ => Severity::Damage,
        }
    }
}

/// One problem, naming what it is about.
#[derive(Clone, Debug)]
pub struct Problem {
    /// What kind.
    pub kind: ProblemKind,
    /// One line for people.
    pub message: String,
    /// The snapshot concerned, if any.
    pub snapshot: Option<SnapshotId>,
    /// The chunk or record concerned, if any.
    pub chunk: Option<ChunkId>,
    /// The pack concerned, if any.
    pub pack: Option<PackId>,
}

impl Problem {
    /// Damage or leftover.
    pub fn severity(&self) -> Severity {
        self.kind.severity()
    }
}

/// A file (or other entry) that cannot be read correctly in one snapshot's view.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct DamagedFile {
    /// The snapshot whose view shows it.
    pub snapshot: SnapshotId,
    /// Path relative to the snapshot root.
    pub path: Vec<u8>,
    /// The bad chunks it uses (empty when the entry itself is undecodable).
    pub chunks: Vec<ChunkId>,
}

/// Figures about what was checked.
#[derive(Clone, Debug, Default)]
pub struct CheckStats {
    /// Snapshot records.
    pub snapshots: u64,
    /// Layer entries (all layers).
    pub layer_entries: u64,
    /// Index entries (chunks and metadata records).
    pub index_entries: u64,
    /// Pack files.
    pub packs: u64,
    /// Distinct chunks referenced by layer entries.
    pub chunks_referenced: u64,
    /// Records whose payload was read and re-hashed (metadata always; chunks with `read_data`).
    pub records_verified: u64,
    /// Stored bytes of those records.
    pub bytes_verified: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// What [`super::check`] found.
#[derive(Clone, Debug, Default)]
pub struct CheckReport {
    /// Every problem, in the order found.
    pub problems: Vec<Problem>,
    /// Damaged entries per snapshot view, sorted by snapshot time, then path.
    pub damaged_files: Vec<DamagedFile>,
    /// Snapshots with any damage in their view (a damaged file, an undecodable entry, a broken
    /// chain), oldest first.
    pub damaged_snapshots: Vec<SnapshotId>,
    /// Chunks (and metadata records) that cannot be read, sorted.
    pub bad_chunks: Vec<ChunkId>,
    /// Figures.
    pub stats: CheckStats,
}

impl CheckReport {
    /// Whether any problem is damage (not only leftovers).
    pub fn damaged(&self) -> bool {
        self.problems
            .iter()
            .any(|p| p.severity() == Severity::Damage)
    }
}
