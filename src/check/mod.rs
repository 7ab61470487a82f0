//! `strata check`: verifies a repository's structure (and, on request, its data) and says which
//! files in which snapshots are damaged. It changes neither the index nor the packs; the CLI then
//! records the outcome in the damage marker ([`marker`]) that `prune` honours.
//!
//! What is checked, in order:
//! 1. every snapshot record decodes; its parent chain exists and ends in a full layer;
//! 2. every pack's 16-byte header (each byte: magic, version, reserved word); every index entry
//!    decodes, names an existing pack, lies within it, and the record header at that offset
//!    verifies and agrees with the entry (id, lengths, compression) — headers only;
//! 3. every metadata record (layer blobs, snapshot blobs, the dictionary, forget tombstones) is read
//!    and verified: they are small, and they are what `repair` would rebuild from; each snapshot's
//!    layer blobs and its snapshot blob exist, and the blobs hold as many entries as its layer;
//!    each snapshot record equals its authoritative snapshot blob (the last written), field by
//!    field — a record whose parent or kind was changed would otherwise show a wrong tree
//!    silently. Only the figures a backup learns after writing the blob may differ
//!    ([`record_differences`]);
//! 4. every layer entry decodes and every chunk it references is indexed; each non-full layer's
//!    `layerdirs` agree with its entries (a missing directory would hide entries from views);
//! 5. leftovers: layer or layerdirs keys of snapshots that do not exist (an interrupted backup);
//! 6. the dictionary exists when a record uses it;
//! 7. with `read_data`, chunk records (all, or a seeded random sample) are read and re-hashed, in
//!    parallel;
//! 8. an unfinished `forget`/`consolidate` is reported as such (a leftover: the next command
//!    completes it), and the inconsistencies it leaves on its snapshots are not counted as damage.
//!
//! Bad chunks are then mapped to damage: the layer entries that reference them, and for each, the
//! snapshots whose *view* resolves that path to an entry using a bad chunk (a layer shadowed by a
//! newer one in some views damages only the views that still show it).

mod damage;
mod interrupted;
pub mod marker;
mod read;
mod report;

use damage::map_damage;
use read::{check_headers, sample};
pub use read::{copy_db, open_copy, verify_with, DbCopy};
pub use report::{CheckReport, CheckStats, DamagedFile, Problem, ProblemKind, Severity};

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::entry::Entry;
use crate::error::Result;
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::layer_blob;
use crate::layers::{join, ChainBreak};
use crate::progress::ProgressHandle;
use crate::repo::keys::{self, Location};
use crate::repo::pack::{verify_pack_header, RecordType, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::repo::store::Space;
use crate::repo::Repo;
use crate::snapshot::Snapshot;

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
    for kv in repo.index().scan(Space::Records, &[]) {
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
    // Pack headers: 16 bytes per pack, cheap enough for every check.
    let mut pack_ids: Vec<PackId> = packs.keys().copied().collect();
    pack_ids.sort();
    for p in pack_ids {
        let head = repo
            .packs()
            .read_at(p, 0, PACK_HEADER_LEN.min(packs[&p]) as usize)
            .map_err(|e| e.to_string())
            .and_then(|h| verify_pack_header(&h));
        if let Err(e) = head {
            st.problem(
                ProblemKind::BadPackHeader,
                format!("Pack {p}: {e}"),
                None,
                None,
                Some(p),
            );
        }
    }
    let mut indexed = Vec::new();
    for kv in repo.index().scan(Space::Chunks, &[]) {
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
    // The authoritative (last written: highest pack, then offset) snapshot blob of each id, and
    // the earlier ones (an interrupted forget leaves the index at one of those).
    let mut snapshot_blobs: HashMap<SnapshotId, ((PackId, u64), Snapshot)> = HashMap::new();
    let mut earlier_blobs: HashMap<SnapshotId, Vec<Snapshot>> = HashMap::new();
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
            Some(RecordType::Layer) => match crate::layer_blob::entries(&plain) {
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
                    let at = (e.loc.pack, e.loc.offset);
                    let replaced = match snapshot_blobs.get(&s.id) {
                        Some((old, _)) if *old > at => Some(s),
                        _ => snapshot_blobs.insert(s.id, (at, s)).map(|(_, old)| old),
                    };
                    if let Some(old) = replaced {
                        earlier_blobs.entry(old.id).or_default().push(old);
                    }
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
    let mut mismatched: BTreeSet<SnapshotId> = BTreeSet::new();
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
        match snapshot_blobs.get(&s.id) {
            None => st.problem(
                ProblemKind::MissingSnapshotBlob,
                format!(
                    "Snapshot {} has no readable snapshot blob in the packs; repair could not rebuild it",
                    s.id
                ),
                Some(s.id),
                None,
                None,
            ),
            Some(((pack, offset), blob)) => {
                let diff = record_differences(s, blob);
                let stale = !diff.is_empty()
                    && earlier_blobs
                        .get(&s.id)
                        .is_some_and(|e| e.iter().any(|b| record_differences(s, b).is_empty()));
                if stale {
                    // The state a forget or consolidate killed between writing its new records
                    // and switching the index leaves: the index's views are still whole.
                    st.problem(
                        ProblemKind::StaleSnapshotRecord,
                        format!(
                            "Snapshot {}: its index record is an earlier version of its snapshot blob (pack {pack}, offset {offset}; an interrupted forget or consolidate?), differing in {}; rerunning it, or `strata repair`, completes the change",
                            s.id,
                            diff.join(", ")
                        ),
                        Some(s.id),
                        None,
                        Some(*pack),
                    );
                } else if !diff.is_empty() {
                    mismatched.insert(s.id);
                    st.problem(
                        ProblemKind::SnapshotRecordMismatch,
                        format!(
                            "Snapshot {}: its index record differs from its snapshot blob (pack {pack}, offset {offset}) in {}; `strata repair` restores the blob's",
                            s.id,
                            diff.join(", ")
                        ),
                        Some(s.id),
                        None,
                        Some(*pack),
                    );
                }
            }
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
    let mut derived: HashMap<SnapshotId, layer_blob::Dirs> = HashMap::new();
    for kv in repo.index().scan(Space::Layers, &[]) {
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
        if !snap.ends_chain() {
            layer_blob::note_dir(derived.entry(sid).or_default(), dir, name, &entry);
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
    for kv in repo.index().scan(Space::LayerDirs, &[]) {
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
    // 8. An unfinished forget/consolidate: its traces are not damage.
    interrupted::explain(repo, &mut st)?;

    // Bad chunks → entries → snapshot views.
    let (damaged_files, mut damaged) = map_damage(repo, &snaps, &chains, &st)?;
    damaged.extend(broken.iter().copied());
    // A record that disagrees with its blob may show a wrong tree: in its own view, and in the
    // view of every snapshot whose chain goes through it.
    for (sid, chain) in &chains {
        if chain.iter().any(|c| mismatched.contains(c)) {
            damaged.insert(*sid);
        }
    }
    damaged.extend(mismatched.iter().copied());
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

/// The fields in which a snapshot record (`index`) differs from its snapshot blob (`blob`). A
/// backup writes the blob before its last pack is finished, so the index alone carries the final
/// `new_chunks`, `new_bytes`, `stored_bytes` and `elapsed_ms`; every other field, stats
/// included, must be equal.
pub fn record_differences(index: &Snapshot, blob: &Snapshot) -> Vec<&'static str> {
    let mut out = Vec::new();
    let mut diff = |name, differs: bool| {
        if differs {
            out.push(name);
        }
    };
    // Destructured, so a new field cannot be forgotten here.
    let Snapshot {
        id,
        time_ns,
        host,
        source,
        kind,
        parent,
        depth,
        tags,
        stats,
        layer_blobs,
    } = index;
    diff("id", *id != blob.id);
    diff("time", *time_ns != blob.time_ns);
    diff("host", *host != blob.host);
    diff("source", *source != blob.source);
    diff("kind", *kind != blob.kind);
    diff("parent", *parent != blob.parent);
    diff("depth", *depth != blob.depth);
    diff("tags", *tags != blob.tags);
    let settled = |s: &crate::snapshot::BackupStats| crate::snapshot::BackupStats {
        new_chunks: 0,
        new_bytes: 0,
        stored_bytes: 0,
        elapsed_ms: 0,
        ..s.clone()
    };
    diff("stats", settled(stats) != settled(&blob.stats));
    diff("layer blobs", *layer_blobs != blob.layer_blobs);
    out
}

/// Snapshot ids of `s`'s chain, newest first, ending in a full layer ([`crate::layers::chain_of`]
/// decides), or the problem to report.
fn chain_of(
    snaps: &HashMap<SnapshotId, Snapshot>,
    s: &Snapshot,
) -> std::result::Result<Vec<SnapshotId>, (ProblemKind, String)> {
    crate::layers::chain_of(s, snaps.len(), |id| Ok(snaps.get(id))).map_err(|b| match b {
        ChainBreak::NoFull { end, kind } => (
            ProblemKind::BrokenChain,
            format!(
                "Snapshot {}: its chain ends in {} {end}, which is not a full layer",
                s.id,
                kind.name()
            ),
        ),
        ChainBreak::MissingParent { parent, .. } => (
            ProblemKind::MissingParent,
            format!(
                "Snapshot {} needs parent {parent}, which is missing from the repository",
                s.id
            ),
        ),
        ChainBreak::Loops => (
            ProblemKind::BrokenChain,
            format!("Snapshot {}: its parent chain loops", s.id),
        ),
    })
}

/// Splits a `layers` key into (snapshot, dir, name).
fn split_layer_key(k: &[u8]) -> Option<(SnapshotId, &[u8], &[u8])> {
    let sid = SnapshotId(k.get(..16)?.try_into().ok()?);
    let (dir, name) = keys::split_entry_key(&k[16..])?;
    Some((sid, dir, name))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{BackupKind, BackupStats};

    fn record() -> Snapshot {
        Snapshot {
            id: SnapshotId([1; 16]),
            time_ns: 5,
            host: "h".into(),
            source: "/src".into(),
            kind: BackupKind::Incremental,
            parent: Some(SnapshotId([2; 16])),
            depth: 2,
            tags: vec!["t".into()],
            stats: BackupStats {
                files: 3,
                ..Default::default()
            },
            layer_blobs: vec![ChunkId::of(b"layer")],
        }
    }

    #[test]
    fn records_may_differ_only_in_the_figures_learnt_after_the_blob() {
        let blob = record();
        let mut index = record();
        index.stats.new_chunks = 7;
        index.stats.new_bytes = 8;
        index.stats.stored_bytes = 9;
        index.stats.elapsed_ms = 10;
        assert!(record_differences(&index, &blob).is_empty());
        type Edit = (&'static str, fn(&mut Snapshot));
        let edits: [Edit; 9] = [
            ("parent", |s| s.parent = Some(SnapshotId([3; 16]))),
            ("kind", |s| s.kind = BackupKind::Differential),
            ("depth", |s| s.depth = 3),
            ("time", |s| s.time_ns = 6),
            ("host", |s| s.host = "g".into()),
            ("source", |s| s.source = "/other".into()),
            ("tags", |s| s.tags.clear()),
            ("stats", |s| s.stats.files = 4),
            ("layer blobs", |s| s.layer_blobs.clear()),
        ];
        for (name, edit) in edits {
            let mut changed = index.clone();
            edit(&mut changed);
            assert_eq!(record_differences(&changed, &blob), [name]);
        }
    }
}
