//! Phases 3 and 6 of `check`: the metadata records (layer blobs, snapshot blobs, the dictionary,
//! forget tombstones), read and verified always — they are small, and they are what `repair`
//! rebuilds from — then compared with the index: each snapshot's blobs exist, its record equals
//! its authoritative snapshot blob (the last written) field by field, and the dictionary the
//! records use exists.

use std::collections::{BTreeSet, HashMap, HashSet};

use super::index::{Index, Indexed};
use super::snapshots::Snapshots;
use super::{CheckStats, ProblemKind, State};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::progress::ProgressHandle;
use crate::repo::pack::{RecordType, RECORD_HEADER_LEN};
use crate::repo::Repo;
use crate::snapshot::{BackupStats, Snapshot};

/// What the metadata records hold.
#[derive(Default)]
pub(super) struct Metadata {
    /// Entries in each readable layer blob.
    pub blob_entries: HashMap<ChunkId, u64>,
    /// The authoritative (last written: highest pack, then offset) snapshot blob of each id.
    snapshot_blobs: HashMap<SnapshotId, ((PackId, u64), Snapshot)>,
    /// The earlier ones (an interrupted forget leaves the index at one of those).
    earlier_blobs: HashMap<SnapshotId, Vec<Snapshot>>,
    /// Snapshots a forget tombstone names.
    tombstoned: HashSet<SnapshotId>,
    /// Whether the repository's dictionary has a readable record.
    dictionary_record: bool,
}

/// Reads and verifies every metadata record of `index`, in pack order; a record that does not
/// read or parse is a bad chunk.
pub(super) fn read(
    repo: &Repo,
    index: &Index,
    progress: &ProgressHandle,
    st: &mut State,
    stats: &mut CheckStats,
) -> Metadata {
    let records: Vec<&Indexed> = index
        .entries
        .iter()
        .filter(|e| matches!(e.rtype, Some(t) if t != RecordType::Chunk))
        .collect();
    progress
        .0
        .verify_total(records.iter().map(|e| e.loc.stored_len as u64).sum());
    let mut meta = Metadata::default();
    for e in records {
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
        meta.add(repo, e, &plain, st);
        progress.0.data_checked(e.loc.stored_len as u64);
    }
    meta
}

impl Metadata {
    /// Takes in one verified record's payload.
    fn add(&mut self, repo: &Repo, e: &Indexed, plain: &[u8], st: &mut State) {
        let bad = |st: &mut State, what: &str, err: crate::Error| {
            st.bad_chunk(
                e.id,
                ProblemKind::CorruptRecord,
                format!("{what} {}: {err}", e.id),
                Some(e.loc.pack),
            )
        };
        match e.rtype {
            Some(RecordType::Layer) => match crate::layer_blob::entries(plain) {
                Ok(entries) => {
                    self.blob_entries.insert(e.id, entries.len() as u64);
                }
                Err(err) => bad(st, "Layer blob", err),
            },
            Some(RecordType::Snapshot) => match Snapshot::decode(plain) {
                Ok(s) => self.add_snapshot_blob((e.loc.pack, e.loc.offset), s),
                Err(err) => bad(st, "Snapshot blob", err),
            },
            Some(RecordType::Forget) => self.tombstoned.extend(
                plain
                    .chunks_exact(16)
                    .filter_map(|c| c.try_into().ok().map(SnapshotId)),
            ),
            Some(RecordType::Dictionary) => {
                self.dictionary_record |= repo
                    .dictionary()
                    .is_some_and(|d| repo.chunk_id(&d.bytes) == e.id);
            }
            _ => {}
        }
    }

    /// Keeps the blob written last at `at` as the authoritative one, the others as earlier.
    fn add_snapshot_blob(&mut self, at: (PackId, u64), s: Snapshot) {
        let replaced = match self.snapshot_blobs.get(&s.id) {
            Some((old, _)) if *old > at => Some(s),
            _ => self
                .snapshot_blobs
                .insert(s.id, (at, s))
                .map(|(_, old)| old),
        };
        if let Some(old) = replaced {
            self.earlier_blobs.entry(old.id).or_default().push(old);
        }
    }
}

/// Compares every snapshot with its metadata records, oldest first; returns the snapshots whose
/// record differs from their authoritative blob (a view that may show a wrong tree).
pub(super) fn compare(snaps: &Snapshots, meta: &Metadata, st: &mut State) -> BTreeSet<SnapshotId> {
    let mut mismatched = BTreeSet::new();
    for s in snaps.ordered() {
        if meta.tombstoned.contains(&s.id) {
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
        if compare_record(s, meta, st) {
            mismatched.insert(s.id);
        }
        for b in &s.layer_blobs {
            if !meta.blob_entries.contains_key(b) {
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
    mismatched
}

/// Compares `s`'s record with its snapshot blobs; true when it differs from the authoritative
/// one and from every earlier one (a stale record, equal to an earlier blob, is a leftover).
fn compare_record(s: &Snapshot, meta: &Metadata, st: &mut State) -> bool {
    let Some(((pack, offset), blob)) = meta.snapshot_blobs.get(&s.id) else {
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
        return false;
    };
    let diff = record_differences(s, blob);
    if diff.is_empty() {
        return false;
    }
    let stale = meta
        .earlier_blobs
        .get(&s.id)
        .is_some_and(|e| e.iter().any(|b| record_differences(s, b).is_empty()));
    if stale {
        // The state a forget or consolidate killed between writing its new records and
        // switching the index leaves: the index's views are still whole.
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
        return false;
    }
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
    true
}

/// Phase 6: the dictionary exists when a record uses it, and has a record in the packs.
pub(super) fn check_dictionary(repo: &Repo, index: &Index, meta: &Metadata, st: &mut State) {
    let uses_dict = index.entries.iter().any(|e| e.loc.compression == 2);
    if uses_dict && repo.dictionary().is_none() {
        st.problem(
            ProblemKind::MissingDictionary,
            "Records are compressed with the repository's dictionary, but it has none".into(),
            None,
            None,
            None,
        );
    }
    if repo.dictionary().is_some() && !meta.dictionary_record {
        st.problem(
            ProblemKind::DictionaryRecordMissing,
            "The repository's dictionary has no readable record in the packs; repair could not restore it"
                .into(),
            None,
            None,
            None,
        );
    }
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
    let settled = |s: &BackupStats| BackupStats {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::BackupKind;

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
