//! `strata check`: verifies a repository's structure (and, on request, its data) and says which
//! files in which snapshots are damaged. Read-only: it writes nothing to the repository.
//!
//! What is checked, in order:
//! 1. every snapshot record decodes; its parent chain exists and ends in a full layer;
//! 2. every index entry decodes, names an existing pack, lies within it, and the record header at
//!    that offset verifies and agrees with the entry (id, lengths, compression) — headers only;
//! 3. every metadata record (layer blobs, snapshot blobs, the dictionary, forget tombstones) is read
//!    and verified: they are small, and they are what `repair` would rebuild from; each snapshot's
//!    layer blobs and its snapshot blob exist, and the blobs hold as many entries as its layer;
//! 4. every layer entry decodes and every chunk it references is indexed; each non-full layer's
//!    `layerdirs` agree with its entries (a missing directory would hide entries from views);
//! 5. leftovers: layer or layerdirs keys of snapshots that do not exist (an interrupted backup);
//! 6. the dictionary exists when a record uses it;
//! 7. with `read_data`, chunk records (all, or a seeded random sample) are read and re-hashed, in
//!    parallel.
//!
//! Bad chunks are then mapped to damage: the layer entries that reference them, and for each, the
//! snapshots whose *view* resolves that path to an entry using a bad chunk (a layer shadowed by a
//! newer one in some views damages only the views that still show it).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::layers::{join, View};
use crate::progress::ProgressHandle;
use crate::repo::keys::{self, Location};
use crate::repo::pack::{RecordHeader, RecordType, RECORD_HEADER_LEN};
use crate::repo::Repo;
use crate::snapshot::{BackupKind, Snapshot};

/// A private copy of a repository's database, removed when dropped (see [`open_copy`]).
pub struct DbCopy(std::path::PathBuf);

impl Drop for DbCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Opens the repository at `path` over a private copy of its database, so that checking changes
/// no byte of the repository: sled rewrites its recovery snapshot (and zeroes a segment tail) the
/// first time a database is opened after a write, even for reading. The copy lives in the system
/// temp directory and costs the size of `index/`. The repository lock is held throughout.
pub fn open_copy(path: &std::path::Path) -> Result<(Arc<Repo>, DbCopy)> {
    use crate::error::IoContext;
    let lock = Repo::lock_only(path)?;
    let index = path.join(crate::repo::INDEX_DIR);
    if !index.is_dir() {
        return Err(crate::Error::IndexMissing(path.to_path_buf()));
    }
    let dest = std::env::temp_dir().join(format!(
        "strata-check-{}-{}",
        std::process::id(),
        crate::time::now_ns()
    ));
    let copy = DbCopy(dest.clone());
    std::fs::create_dir_all(&dest).ctx("Creating", &dest)?;
    copy_tree(&index, &dest)?;
    let db = sled::Config::new()
        .path(&dest)
        .cache_capacity(64 << 20)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    Ok((Repo::open_with_db(path, lock, db)?, copy))
}

fn copy_tree(from: &std::path::Path, to: &std::path::Path) -> Result<()> {
    use crate::error::IoContext;
    for e in std::fs::read_dir(from).ctx("Reading", from)? {
        let e = e.ctx("Reading", from)?;
        let dest = to.join(e.file_name());
        if e.file_type().ctx("Reading", e.path())?.is_dir() {
            std::fs::create_dir_all(&dest).ctx("Creating", &dest)?;
            copy_tree(&e.path(), &dest)?;
        } else {
            std::fs::copy(e.path(), &dest).ctx("Copying", e.path())?;
        }
    }
    Ok(())
}

/// Options for [`check`].
#[derive(Clone, Debug, Default)]
pub struct CheckOptions {
    /// Re-read and re-hash chunk payloads: `None` checks structure only; `Some(p)` reads a random
    /// `p` percent of the chunk records (100 = all).
    pub read_data: Option<f64>,
    /// Seed of the random sample (a fixed seed gives the same sample; default: from the clock).
    pub seed: Option<u64>,
    /// Reader threads for `read_data` (0: two per CPU).
    pub threads: usize,
    /// Receives `data_checked` as records are verified.
    pub progress: ProgressHandle,
}

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
    /// The index database (`index/`) is gone; nothing else could be checked.
    IndexMissing,
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
            ProblemKind::IndexMissing => "index_missing",
        }
    }

    fn severity(self) -> Severity {
        match self {
            ProblemKind::DanglingLayer
            | ProblemKind::DanglingLayerdirs
            | ProblemKind::TombstonedSnapshot
            | ProblemKind::UnindexedPack => Severity::Leftover,
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

/// What [`check`] found.
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

/// Collects problems and bad chunks while checking.
#[derive(Default)]
struct State {
    problems: Vec<Problem>,
    /// Records that cannot be read; the reason is in `problems`.
    bad: BTreeSet<ChunkId>,
    /// Entries that do not decode, as (layer, path).
    undecodable: Vec<(SnapshotId, Vec<u8>)>,
}

impl State {
    fn problem(
        &mut self,
        kind: ProblemKind,
        message: String,
        snapshot: Option<SnapshotId>,
        chunk: Option<ChunkId>,
        pack: Option<PackId>,
    ) {
        self.problems.push(Problem {
            kind,
            message,
            snapshot,
            chunk,
            pack,
        });
    }

    /// Marks a record unreadable (the first reason wins) and reports it once.
    fn bad_chunk(&mut self, id: ChunkId, kind: ProblemKind, detail: String, pack: Option<PackId>) {
        if self.bad.insert(id) {
            self.problem(kind, detail, None, Some(id), pack);
        }
    }
}

/// One index entry and what its header said.
struct Indexed {
    id: ChunkId,
    loc: Location,
    rtype: Option<RecordType>,
}

/// Checks `repo`; see the module documentation. Problems are reported, not returned as errors;
/// an error means the check itself could not run (e.g. the database cannot be read).
pub fn check(repo: &Arc<Repo>, opts: &CheckOptions) -> Result<CheckReport> {
    let start = Instant::now();
    let mut st = State::default();
    let mut stats = CheckStats::default();

    // 1. Snapshots and their chains.
    let mut snaps: HashMap<SnapshotId, Snapshot> = HashMap::new();
    for kv in repo.snapshots.iter() {
        let (k, v) = kv?;
        match Snapshot::decode(&v) {
            Ok(s) => {
                snaps.insert(s.id, s);
            }
            Err(e) => {
                let sid = k.as_ref().try_into().ok().map(SnapshotId);
                st.problem(
                    ProblemKind::UndecodableSnapshot,
                    format!("Snapshot record {}: {e}", hex(&k)),
                    sid,
                    None,
                    None,
                );
            }
        }
    }
    stats.snapshots = snaps.len() as u64;
    let mut broken: BTreeSet<SnapshotId> = BTreeSet::new();
    let mut chains: HashMap<SnapshotId, Vec<SnapshotId>> = HashMap::new();
    for s in snaps.values() {
        match chain_of(&snaps, s) {
            Ok(chain) => {
                chains.insert(s.id, chain);
            }
            Err((kind, msg)) => {
                broken.insert(s.id);
                st.problem(kind, msg, Some(s.id), None, None);
            }
        }
    }

    log::debug!(
        "Check: snapshots and chains done at {} ms",
        start.elapsed().as_millis()
    );
    // 2. Index entries against pack record headers, in pack order.
    let packs: HashMap<PackId, u64> = repo.packs().list()?.into_iter().collect();
    stats.packs = packs.len() as u64;
    let mut indexed = Vec::new();
    for kv in repo.chunks.iter() {
        let (k, v) = kv?;
        let Ok(id) = <[u8; 32]>::try_from(k.as_ref()).map(ChunkId) else {
            st.problem(
                ProblemKind::MalformedIndexEntry,
                format!("Index key {} is not a chunk id", hex(&k)),
                None,
                None,
                None,
            );
            continue;
        };
        match Location::decode(&v) {
            Some(loc) => indexed.push(Indexed {
                id,
                loc,
                rtype: None,
            }),
            None => st.bad_chunk(
                id,
                ProblemKind::MalformedIndexEntry,
                format!("Index entry of {id} does not decode"),
                None,
            ),
        }
    }
    stats.index_entries = indexed.len() as u64;
    indexed.sort_by_key(|e| (e.loc.pack, e.loc.offset));
    let packs_used: HashSet<PackId> = indexed.iter().map(|e| e.loc.pack).collect();
    let headers = check_headers(repo, &packs, &indexed, opts.threads);
    for (e, h) in indexed.iter_mut().zip(headers) {
        match h {
            Ok(t) => e.rtype = Some(t),
            Err((kind, msg)) => st.bad_chunk(e.id, kind, msg, Some(e.loc.pack)),
        }
    }
    let mut unindexed: Vec<_> = packs
        .keys()
        .filter(|p| !packs_used.contains(p))
        .copied()
        .collect();
    unindexed.sort();
    for p in unindexed {
        st.problem(
            ProblemKind::UnindexedPack,
            format!("Pack {p} holds no indexed record (garbage for prune)"),
            None,
            None,
            Some(p),
        );
    }

    log::debug!(
        "Check: index entries and record headers done at {} ms",
        start.elapsed().as_millis()
    );
    // 3. Metadata records: read and verified, always.
    let meta: Vec<&Indexed> = indexed
        .iter()
        .filter(|e| matches!(e.rtype, Some(t) if t != RecordType::Chunk))
        .collect();
    let mut blob_entries: HashMap<ChunkId, u64> = HashMap::new();
    let mut snapshot_blobs: HashSet<SnapshotId> = HashSet::new();
    let mut tombstoned: HashSet<SnapshotId> = HashSet::new();
    let mut dictionary_record = false;
    opts.progress
        .0
        .verify_total(meta.iter().map(|e| e.loc.stored_len as u64).sum());
    for e in &meta {
        stats.records_verified += 1;
        stats.bytes_verified += e.loc.stored_len as u64 + RECORD_HEADER_LEN as u64;
        let plain = match repo.read_record_at(&e.id, &e.loc) {
            Ok(p) => p,
            Err(err) => {
                st.bad_chunk(
                    e.id,
                    ProblemKind::CorruptRecord,
                    err.to_string(),
                    Some(e.loc.pack),
                );
                continue;
            }
        };
        match e.rtype {
            Some(RecordType::Layer) => match crate::repair::layer_blob_entries(&plain) {
                Ok(entries) => {
                    blob_entries.insert(e.id, entries.len() as u64);
                }
                Err(err) => st.bad_chunk(
                    e.id,
                    ProblemKind::CorruptRecord,
                    format!("Layer blob {}: {err}", e.id),
                    Some(e.loc.pack),
                ),
            },
            Some(RecordType::Snapshot) => match Snapshot::decode(&plain) {
                Ok(s) => {
                    snapshot_blobs.insert(s.id);
                }
                Err(err) => st.bad_chunk(
                    e.id,
                    ProblemKind::CorruptRecord,
                    format!("Snapshot blob {}: {err}", e.id),
                    Some(e.loc.pack),
                ),
            },
            Some(RecordType::Forget) => tombstoned.extend(
                plain
                    .chunks_exact(16)
                    .map(|c| SnapshotId(c.try_into().unwrap())),
            ),
            Some(RecordType::Dictionary) => {
                dictionary_record |= repo
                    .dictionary()
                    .is_some_and(|d| ChunkId::of(&d.bytes) == e.id);
            }
            _ => {}
        }
        opts.progress.0.data_checked(e.loc.stored_len as u64);
    }
    let mut ordered: Vec<&Snapshot> = snaps.values().collect();
    ordered.sort_by_key(|s| (s.time_ns, s.id));
    for s in &ordered {
        if tombstoned.contains(&s.id) {
            st.problem(
                ProblemKind::TombstonedSnapshot,
                format!(
                    "Snapshot {} is listed in a forget tombstone (an interrupted forget?)",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            );
        }
        if !snapshot_blobs.contains(&s.id) {
            st.problem(
                ProblemKind::MissingSnapshotBlob,
                format!(
                    "Snapshot {} has no readable snapshot blob in the packs; repair could not rebuild it",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            );
        }
        for b in &s.layer_blobs {
            if !blob_entries.contains_key(b) {
                st.problem(
                    ProblemKind::MissingLayerBlob,
                    format!(
                        "Layer blob {b} of snapshot {} is missing or damaged; repair could not rebuild the snapshot",
                        s.id
                    ),
                    Some(s.id),
                    Some(*b),
                    None,
                );
            }
        }
    }

    log::debug!(
        "Check: metadata records done at {} ms",
        start.elapsed().as_millis()
    );
    // 4. Layer entries: decode, chunk references, derived layerdirs; 5. leftovers.
    let index_ids: HashSet<ChunkId> = indexed.iter().map(|e| e.id).collect();
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    let mut per_layer: HashMap<SnapshotId, u64> = HashMap::new();
    let mut dangling: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    let mut derived: HashMap<SnapshotId, HashMap<Vec<u8>, bool>> = HashMap::new();
    for kv in repo.layers.iter() {
        let (k, v) = kv?;
        stats.layer_entries += 1;
        let Some((sid, dir, name)) = split_layer_key(&k) else {
            st.problem(
                ProblemKind::UndecodableEntry,
                format!("Malformed layer key {}", hex(&k)),
                None,
                None,
                None,
            );
            continue;
        };
        let Some(snap) = snaps.get(&sid) else {
            *dangling.entry(sid).or_default() += 1;
            continue;
        };
        *per_layer.entry(sid).or_default() += 1;
        let entry = match Entry::decode(&v) {
            Ok(e) => e,
            Err(err) => {
                let path = join(dir, name);
                st.problem(
                    ProblemKind::UndecodableEntry,
                    format!(
                        "Entry {} in the layer of snapshot {sid}: {err}",
                        String::from_utf8_lossy(&path)
                    ),
                    Some(sid),
                    None,
                    None,
                );
                st.undecodable.push((sid, path));
                continue;
            }
        };
        for c in &entry.chunks {
            referenced.insert(c.id);
        }
        if snap.kind != BackupKind::Full && snap.parent.is_some() {
            let dirs = derived.entry(sid).or_default();
            dirs.entry(dir.to_vec()).or_insert(false);
            if entry.kind == Kind::Dir && entry.opaque && !name.is_empty() {
                dirs.insert(join(dir, name), true);
            }
        }
    }
    stats.chunks_referenced = referenced.len() as u64;
    let mut missing: Vec<_> = referenced
        .iter()
        .filter(|id| !index_ids.contains(id))
        .copied()
        .collect();
    missing.sort();
    for id in missing {
        st.bad_chunk(
            id,
            ProblemKind::MissingChunk,
            format!("Chunk {id} is referenced by a layer but not in the index"),
            None,
        );
    }
    for (sid, n) in &dangling {
        st.problem(
            ProblemKind::DanglingLayer,
            format!("{n} layer entries of snapshot {sid}, which does not exist (an interrupted backup?)"),
            Some(*sid),
            None,
            None,
        );
    }
    for s in &ordered {
        let have = per_layer.get(&s.id).copied().unwrap_or(0);
        if s.layer_blobs.iter().all(|b| blob_entries.contains_key(b)) {
            let in_blobs: u64 = s.layer_blobs.iter().map(|b| blob_entries[b]).sum();
            if in_blobs != have {
                st.problem(
                    ProblemKind::LayerBlobMismatch,
                    format!(
                        "Snapshot {}: its layer blobs hold {in_blobs} entries, its layer {have}",
                        s.id
                    ),
                    Some(s.id),
                    None,
                    None,
                );
            }
        }
    }

    log::debug!(
        "Check: layer entries done at {} ms",
        start.elapsed().as_millis()
    );
    // layerdirs: leftovers, and agreement with the entries.
    let mut stored: HashMap<SnapshotId, HashMap<Vec<u8>, bool>> = HashMap::new();
    let mut dangling_dirs: BTreeMap<SnapshotId, u64> = BTreeMap::new();
    for kv in repo.layerdirs.iter() {
        let (k, v) = kv?;
        let Ok(sid) = k.get(..16).unwrap_or_default().try_into().map(SnapshotId) else {
            continue;
        };
        if !snaps.contains_key(&sid) {
            *dangling_dirs.entry(sid).or_default() += 1;
            continue;
        }
        stored
            .entry(sid)
            .or_default()
            .insert(k[16..].to_vec(), v.first() == Some(&1));
    }
    for (sid, n) in &dangling_dirs {
        st.problem(
            ProblemKind::DanglingLayerdirs,
            format!("{n} layerdirs keys of snapshot {sid}, which does not exist"),
            Some(*sid),
            None,
            None,
        );
    }
    for s in &ordered {
        let Some(want) = derived.get(&s.id) else {
            continue;
        };
        let have = stored.get(&s.id);
        let wrong = want
            .iter()
            .filter(|(d, o)| have.and_then(|h| h.get(*d)) != Some(o))
            .count();
        if wrong > 0 {
            st.problem(
                ProblemKind::LayerdirsMismatch,
                format!(
                    "Snapshot {}: {wrong} directories of its layer are missing from layerdirs or have the wrong opaque flag",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            );
        }
    }

    // 6. The dictionary.
    let uses_dict = indexed.iter().any(|e| e.loc.compression == 2);
    if uses_dict && repo.dictionary().is_none() {
        st.problem(
            ProblemKind::MissingDictionary,
            "Records are compressed with the repository's dictionary, but it has none".into(),
            None,
            None,
            None,
        );
    }
    if repo.dictionary().is_some() && !dictionary_record {
        st.problem(
            ProblemKind::DictionaryRecordMissing,
            "The repository's dictionary has no readable record in the packs; repair could not restore it"
                .into(),
            None,
            None,
            None,
        );
    }

    log::debug!(
        "Check: layerdirs and dictionary done at {} ms",
        start.elapsed().as_millis()
    );
    // 7. Chunk payloads.
    if let Some(percent) = opts.read_data {
        let mut todo: Vec<(ChunkId, Location)> = indexed
            .iter()
            .filter(|e| e.rtype == Some(RecordType::Chunk) && !st.bad.contains(&e.id))
            .map(|e| (e.id, e.loc))
            .collect();
        sample(&mut todo, percent, opts.seed);
        opts.progress
            .0
            .verify_total(todo.iter().map(|(_, l)| l.stored_len as u64).sum());
        stats.records_verified += todo.len() as u64;
        stats.bytes_verified += todo
            .iter()
            .map(|(_, l)| l.stored_len as u64 + RECORD_HEADER_LEN as u64)
            .sum::<u64>();
        let read = |id: &ChunkId, loc: &Location| repo.read_record_at(id, loc).map(|_| ());
        for (id, loc, err) in verify_with(&todo, read, opts.threads, &opts.progress) {
            st.bad_chunk(id, ProblemKind::CorruptRecord, err, Some(loc.pack));
        }
    }

    log::debug!(
        "Check: chunk payloads done at {} ms",
        start.elapsed().as_millis()
    );
    // Bad chunks → entries → snapshot views.
    let (damaged_files, mut damaged) = map_damage(repo, &snaps, &chains, &st)?;
    damaged.extend(broken.iter().copied());
    let mut damaged_snapshots: Vec<SnapshotId> = damaged.into_iter().collect();
    damaged_snapshots.sort_by_key(|id| snaps.get(id).map(|s| (s.time_ns, s.id)));
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(CheckReport {
        problems: st.problems,
        damaged_files,
        damaged_snapshots,
        bad_chunks: st.bad.iter().copied().collect(),
        stats,
    })
}

/// Snapshot ids of `s`'s chain, newest first, ending in a full layer.
fn chain_of(
    snaps: &HashMap<SnapshotId, Snapshot>,
    s: &Snapshot,
) -> std::result::Result<Vec<SnapshotId>, (ProblemKind, String)> {
    let mut chain = vec![s.id];
    let mut cur = s;
    loop {
        if cur.kind == BackupKind::Full {
            return Ok(chain);
        }
        let Some(pid) = cur.parent else {
            return Err((
                ProblemKind::BrokenChain,
                format!(
                    "Snapshot {}: its chain ends in {} {}, which is not a full layer",
                    s.id,
                    cur.kind.name(),
                    cur.id
                ),
            ));
        };
        let Some(p) = snaps.get(&pid) else {
            return Err((
                ProblemKind::MissingParent,
                format!(
                    "Snapshot {} needs parent {pid}, which is missing from the repository",
                    s.id
                ),
            ));
        };
        if chain.contains(&pid) || chain.len() > snaps.len() {
            return Err((
                ProblemKind::BrokenChain,
                format!("Snapshot {}: its parent chain loops", s.id),
            ));
        }
        chain.push(pid);
        cur = p;
    }
}

/// Checks one index entry against its pack and the record header there; returns the record type
/// when the header agrees, else the problem.
fn check_header(
    repo: &Repo,
    packs: &HashMap<PackId, u64>,
    id: ChunkId,
    loc: Location,
) -> std::result::Result<RecordType, (ProblemKind, String)> {
    let Some(&size) = packs.get(&loc.pack) else {
        return Err((
            ProblemKind::MissingPack,
            format!(
                "Chunk {id} is indexed in pack {}, which does not exist",
                loc.pack
            ),
        ));
    };
    let end = loc.offset + RECORD_HEADER_LEN as u64 + loc.stored_len as u64;
    if end > size {
        return Err((
            ProblemKind::RecordOutOfBounds,
            format!(
                "Chunk {id} is indexed at bytes {}..{end} of pack {}, which has {size} bytes",
                loc.offset, loc.pack
            ),
        ));
    }
    let h = repo
        .packs()
        .read_at(loc.pack, loc.offset, RECORD_HEADER_LEN)
        .map_err(|e| e.to_string())
        .and_then(|b| RecordHeader::decode(&b))
        .map_err(|err| {
            (
                ProblemKind::BadRecordHeader,
                format!(
                    "Chunk {id}: the record header at offset {} of pack {}: {err}",
                    loc.offset, loc.pack
                ),
            )
        })?;
    if h.id != id
        || h.stored_len != loc.stored_len
        || h.raw_len != loc.raw_len
        || h.compression != loc.compression
    {
        return Err((
            ProblemKind::HeaderMismatch,
            format!(
                "Chunk {id}: the record at offset {} of pack {} holds {} ({} of {} bytes, compression {}), the index says {} of {} bytes, compression {}",
                loc.offset, loc.pack, h.id, h.stored_len, h.raw_len, h.compression,
                loc.stored_len, loc.raw_len, loc.compression
            ),
        ));
    }
    Ok(h.rtype)
}

/// Runs [`check_header`] for every entry (sorted by location) on `threads` threads, each taking
/// runs of consecutive entries; on a cold cache the header reads dominate, and they parallelize.
fn check_headers(
    repo: &Repo,
    packs: &HashMap<PackId, u64>,
    indexed: &[Indexed],
    threads: usize,
) -> Vec<std::result::Result<RecordType, (ProblemKind, String)>> {
    const BATCH: usize = 256;
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
    };
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::with_capacity(indexed.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.min(indexed.len().div_ceil(BATCH)).max(1) {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= indexed.len() {
                    break;
                }
                let to = (from + BATCH).min(indexed.len());
                let part: Vec<_> = indexed[from..to]
                    .iter()
                    .map(|e| check_header(repo, packs, e.id, e.loc))
                    .collect();
                done.lock().unwrap().push((from, part));
            });
        }
    });
    let mut parts = done.into_inner().unwrap();
    parts.sort_by_key(|(from, _)| *from);
    parts.into_iter().flat_map(|(_, p)| p).collect()
}

/// Keeps a random `percent` of `items` (at least one when `percent > 0` and there are any),
/// seeded, then sorts them by location so reads go through each pack in order.
fn sample(items: &mut Vec<(ChunkId, Location)>, percent: f64, seed: Option<u64>) {
    if percent < 100.0 {
        let mut x = seed.unwrap_or_else(|| crate::time::now_ns() as u64) | 1;
        let mut next = || {
            // xorshift64*
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        };
        items.sort_by_key(|(id, _)| *id);
        for i in (1..items.len()).rev() {
            let j = (next() % (i as u64 + 1)) as usize;
            items.swap(i, j);
        }
        let keep = ((items.len() as f64 * percent / 100.0).ceil() as usize).min(items.len());
        items.truncate(if percent > 0.0 { keep.max(1) } else { 0 });
    }
    items.sort_by_key(|(_, l)| (l.pack, l.offset));
}

/// Verifies `items` with `verify` (which reads and re-hashes one record) on `threads` threads
/// (0: two per CPU), handing each thread runs of consecutive items so packs are read in order;
/// returns the failures, sorted by id.
pub fn verify_with<F>(
    items: &[(ChunkId, Location)],
    verify: F,
    threads: usize,
    progress: &ProgressHandle,
) -> Vec<(ChunkId, Location, String)>
where
    F: Fn(&ChunkId, &Location) -> Result<()> + Sync,
{
    let threads = if threads > 0 {
        threads
    } else {
        std::thread::available_parallelism().map_or(2, |n| n.get() * 2)
    };
    const BATCH: usize = 32;
    let next = AtomicUsize::new(0);
    let failed = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..threads.min(items.len().div_ceil(BATCH)).max(1) {
            s.spawn(|| loop {
                let from = next.fetch_add(BATCH, Ordering::Relaxed);
                if from >= items.len() {
                    break;
                }
                for (id, loc) in &items[from..(from + BATCH).min(items.len())] {
                    if let Err(e) = verify(id, loc) {
                        failed.lock().unwrap().push((*id, *loc, e.to_string()));
                    }
                    progress.0.data_checked(loc.stored_len as u64);
                }
            });
        }
    });
    let mut f = failed.into_inner().unwrap();
    f.sort_by_key(|(id, _, _)| *id);
    f
}

/// Splits a `layers` key into (snapshot, dir, name).
fn split_layer_key(k: &[u8]) -> Option<(SnapshotId, &[u8], &[u8])> {
    let sid = SnapshotId(k.get(..16)?.try_into().ok()?);
    let (dir, name) = keys::split_entry_key(&k[16..])?;
    Some((sid, dir, name))
}

/// Finds the entries that use bad chunks (a second pass over the layers, only when there are
/// any), then the snapshot views that show them. Returns the damaged files and the snapshots
/// they are in (plus snapshots with undecodable entries).
fn map_damage(
    repo: &Arc<Repo>,
    snaps: &HashMap<SnapshotId, Snapshot>,
    chains: &HashMap<SnapshotId, Vec<SnapshotId>>,
    st: &State,
) -> Result<(Vec<DamagedFile>, BTreeSet<SnapshotId>)> {
    let mut damaged_snaps: BTreeSet<SnapshotId> = BTreeSet::new();
    // (layer, path) of entries that reference a bad chunk.
    let mut hits: BTreeSet<(SnapshotId, Vec<u8>)> = BTreeSet::new();
    if !st.bad.is_empty() {
        for kv in repo.layers.iter() {
            let (k, v) = kv?;
            let Some((sid, dir, name)) = split_layer_key(&k) else {
                continue;
            };
            if !snaps.contains_key(&sid) {
                continue;
            }
            let Ok(e) = Entry::decode(&v) else { continue };
            if e.chunks.iter().any(|c| st.bad.contains(&c.id)) {
                hits.insert((sid, join(dir, name)));
            }
        }
    }
    let mut out: BTreeSet<DamagedFile> = BTreeSet::new();
    let mut views: HashMap<SnapshotId, View> = HashMap::new();
    for (layer, path) in &hits {
        // Every snapshot whose chain holds this layer may show the entry.
        for (sid, chain) in chains {
            if !chain.contains(layer) {
                continue;
            }
            if !views.contains_key(sid) {
                views.insert(*sid, View::open(repo, sid)?);
            }
            let view = &views[sid];
            let Ok(entry) = view.lookup(path) else {
                continue;
            };
            let bad: Vec<ChunkId> = entry
                .chunks
                .iter()
                .filter(|c| st.bad.contains(&c.id))
                .map(|c| c.id)
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            if !bad.is_empty() {
                damaged_snaps.insert(*sid);
                out.insert(DamagedFile {
                    snapshot: *sid,
                    path: path.clone(),
                    chunks: bad,
                });
            }
        }
    }
    for (layer, path) in &st.undecodable {
        damaged_snaps.insert(*layer);
        out.insert(DamagedFile {
            snapshot: *layer,
            path: path.clone(),
            chunks: Vec::new(),
        });
    }
    let mut files: Vec<DamagedFile> = out.into_iter().collect();
    files.sort_by(|a, b| {
        let ka = snaps.get(&a.snapshot).map(|s| s.time_ns);
        let kb = snaps.get(&b.snapshot).map(|s| s.time_ns);
        (ka, a.snapshot, &a.path).cmp(&(kb, b.snapshot, &b.path))
    });
    Ok((files, damaged_snaps))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
