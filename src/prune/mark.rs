//! The mark phase of prune: which records are live, and the record headers of every pack.

use std::collections::{HashMap, HashSet};

use super::PruneStats;
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::repo::keys::Location;
use crate::repo::pack::{self, RecordHeader, RecordType, PACK_HEADER_LEN, RECORD_HEADER_LEN};
use crate::repo::store::{Space, Value};
use crate::repo::Repo;
use crate::snapshot::Snapshot;

/// What the mark phase found live, and what it found orphaned.
pub(super) struct Marked {
    /// The committed snapshots.
    pub(super) existing: HashSet<SnapshotId>,
    /// Layers of snapshots no longer committed that a running mount still reads (its lease,
    /// see [`crate::lease`]): kept, with every chunk they reference, until the lease is gone.
    pub(super) leased: HashSet<SnapshotId>,
    /// Ids of live records: chunks, layer blobs, snapshot blobs, tombstones, the dictionary.
    pub(super) live: HashSet<ChunkId>,
    /// Live chunks of file content alone.
    pub(super) live_chunks: u64,
    /// Keys of layer entries whose snapshot no longer exists.
    pub(super) orphans: Vec<Value>,
}

/// Streams the `layers` keyspace once: entries of existing snapshots and of `leased` layers
/// mark their chunks live, entries of other snapshots that no longer exist are orphans. The
/// snapshots' layer blobs are live too.
pub(super) fn mark_layers(repo: &Repo, leased: HashSet<SnapshotId>) -> Result<Marked> {
    let snapshots = repo.snapshots()?;
    let existing: HashSet<SnapshotId> = snapshots.iter().map(|s| s.id).collect();
    let mut live: HashSet<ChunkId> = HashSet::new();
    let mut orphans: Vec<Value> = Vec::new();
    for kv in repo.index().scan_unordered(Space::Layers, b"") {
        let (k, v) = kv?;
        let sid = key_snapshot(&k)?;
        if existing.contains(&sid) || leased.contains(&sid) {
            for c in Entry::decode(&v)?.chunks {
                live.insert(c.id);
            }
        } else {
            orphans.push(k);
        }
    }
    let live_chunks = live.len() as u64;
    for s in &snapshots {
        live.extend(s.layer_blobs.iter().copied());
    }
    Ok(Marked {
        existing,
        leased,
        live,
        live_chunks,
        orphans,
    })
}

/// The snapshot a layer or layer-directory key belongs to (its first 16 bytes). A shorter key
/// is damage in the index, reported as such rather than a panic.
pub(super) fn key_snapshot(k: &[u8]) -> Result<SnapshotId> {
    k.get(..16)
        .and_then(|b| b.try_into().ok())
        .map(SnapshotId)
        .ok_or_else(|| Error::CorruptMetadata(format!("index key of {} bytes", k.len())))
}

/// One record found in a pack.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rec {
    pub(super) header: RecordHeader,
    pub(super) offset: u64,
}

impl Rec {
    pub(super) fn len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.header.stored_len as u64
    }

    pub(super) fn location(&self, pack: PackId) -> Location {
        Location {
            pack,
            offset: self.offset,
            stored_len: self.header.stored_len,
            raw_len: self.header.raw_len,
            compression: self.header.compression,
        }
    }

    /// Whether the index points at this record (in `pack`) for its id: a second copy, left by
    /// a killed rewrite, is not indexed.
    pub(super) fn is_indexed(&self, pack: PackId, index_value: &[u8]) -> bool {
        Location::decode(index_value).is_some_and(|l| l.pack == pack && l.offset == self.offset)
    }
}

/// A pack and its records, as [`scan_packs`] read them.
pub(super) struct ScannedPack {
    pub(super) id: PackId,
    pub(super) size: u64,
    pub(super) recs: Vec<Rec>,
}

/// Reads every pack's record headers, marking live the forget tombstones, the dictionary and
/// the last-written snapshot blob of each existing snapshot. A pack whose headers cannot be
/// read is left alone (counted in `packs_skipped`). Counts `packs_total` and `bytes_before`.
pub(super) fn scan_packs(
    repo: &Repo,
    marked: &mut Marked,
    stats: &mut PruneStats,
) -> Result<Vec<ScannedPack>> {
    let packs = repo.packs().list()?;
    stats.packs_total = packs.len() as u64;
    let mut scanned = Vec::new();
    // The last-written snapshot blob of each snapshot: (pack, offset, blob id).
    let mut current: HashMap<SnapshotId, (PackId, u64, ChunkId)> = HashMap::new();
    for &(pid, size) in &packs {
        stats.bytes_before += size;
        let recs = match scan_pack(repo, pid, size) {
            Ok(r) => r,
            Err(e) => {
                log::error!("Leaving pack {pid} alone: {e}");
                stats.packs_skipped += 1;
                stats.bytes_after += size;
                continue;
            }
        };
        for r in &recs {
            match r.header.rtype {
                RecordType::Snapshot => {
                    let s = snapshot_in(repo, pid, r)?;
                    if current
                        .get(&s.id)
                        .is_none_or(|c| (c.0, c.1) < (pid, r.offset))
                    {
                        current.insert(s.id, (pid, r.offset, r.header.id));
                    }
                }
                RecordType::Forget | RecordType::Dictionary => {
                    marked.live.insert(r.header.id);
                }
                RecordType::Chunk | RecordType::Layer => {}
            }
        }
        scanned.push(ScannedPack {
            id: pid,
            size,
            recs,
        });
    }
    for (sid, (_, _, blob)) in &current {
        if marked.existing.contains(sid) {
            marked.live.insert(*blob);
        }
    }
    Ok(scanned)
}

/// The snapshot a snapshot blob in pack `pid` holds.
fn snapshot_in(repo: &Repo, pid: PackId, r: &Rec) -> Result<Snapshot> {
    Snapshot::decode(&repo.read_record_at(&r.header.id, &r.location(pid))?)
}

/// Reads every record header of a pack; `Err` when a header is damaged (the pack is left alone).
fn scan_pack(repo: &Repo, id: PackId, size: u64) -> Result<Vec<Rec>> {
    let head = repo
        .packs()
        .read_at(id, 0, PACK_HEADER_LEN.min(size) as usize)?;
    pack::verify_pack_header(&head)
        .map_err(|e| Error::CorruptMetadata(format!("pack {id}: {e}")))?;
    let mut out = Vec::new();
    let mut offset = PACK_HEADER_LEN;
    while offset < size {
        let h = repo.packs().read_at(id, offset, RECORD_HEADER_LEN)?;
        let header = RecordHeader::decode(&h)
            .map_err(|e| Error::CorruptMetadata(format!("pack {id} at {offset}: {e}")))?;
        let rec = Rec { header, offset };
        if offset + rec.len() > size {
            return Err(Error::CorruptMetadata(format!(
                "pack {id} at {offset}: record runs past the end"
            )));
        }
        offset += rec.len();
        out.push(rec);
    }
    Ok(out)
}
