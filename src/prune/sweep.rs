//! The sweep phase of prune: what happens to each pack, and the removal of orphaned layer
//! entries.

use std::collections::HashSet;

use super::mark::{key_snapshot, Marked, Rec, ScannedPack};
use super::PruneStats;
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::repo::pack::PACK_HEADER_LEN;
use crate::repo::store::{Batch, Space};
use crate::repo::Repo;

/// Keys per index batch.
pub(super) const BATCH: usize = 512;

/// A pack to rewrite: its live records are copied, its dead ones left behind.
pub(super) struct Repack {
    pub(super) id: PackId,
    pub(super) live: Vec<Rec>,
    pub(super) dead: Vec<Rec>,
}

/// What the sweep decided.
pub(super) struct Sweep {
    /// Packs without live records, with their (dead) records.
    pub(super) delete: Vec<(PackId, Vec<Rec>)>,
    /// Packs whose live part falls below the threshold.
    pub(super) rewrite: Vec<Repack>,
}

impl Sweep {
    /// Packs the rewrite would create (live bytes / pack target size, rounded up).
    pub(super) fn packs_written_estimate(&self, pack_target: u64) -> u64 {
        let bytes: u64 = self
            .rewrite
            .iter()
            .flat_map(|r| r.live.iter().map(Rec::len))
            .sum();
        bytes.div_ceil(pack_target)
    }
}

/// Decides per pack: deleted when nothing in it is live, rewritten when it holds garbage and
/// its live bytes are below `threshold` percent of its size, else kept. Counts the records
/// removed, the bytes left and the garbage kept.
pub(super) fn classify(
    repo: &Repo,
    packs: Vec<ScannedPack>,
    live: &HashSet<ChunkId>,
    threshold: u8,
    stats: &mut PruneStats,
) -> Result<Sweep> {
    let mut sweep = Sweep {
        delete: Vec::new(),
        rewrite: Vec::new(),
    };
    for p in packs {
        let mut live_recs = Vec::new();
        let mut dead = Vec::new();
        for r in p.recs {
            if is_live(repo, live, p.id, &r)? {
                live_recs.push(r);
            } else {
                dead.push(r);
            }
        }
        let live_bytes: u64 = live_recs.iter().map(Rec::len).sum();
        if live_recs.is_empty() {
            stats.records_removed += dead.len() as u64;
            sweep.delete.push((p.id, dead));
        } else if !dead.is_empty()
            && (live_bytes + PACK_HEADER_LEN) * 100 < p.size * threshold as u64
        {
            stats.records_removed += dead.len() as u64;
            stats.bytes_after += live_bytes + PACK_HEADER_LEN;
            sweep.rewrite.push(Repack {
                id: p.id,
                live: live_recs,
                dead,
            });
        } else {
            stats.garbage_bytes_kept += dead.iter().map(Rec::len).sum::<u64>();
            stats.bytes_after += p.size;
        }
    }
    Ok(sweep)
}

/// A record is live when its id is live and the index points at it (a second copy, left by a
/// killed rewrite, is garbage). A live id the index lacks is kept, with a warning.
fn is_live(repo: &Repo, live: &HashSet<ChunkId>, pid: PackId, r: &Rec) -> Result<bool> {
    if !live.contains(&r.header.id) {
        return Ok(false);
    }
    match repo.index().get(Space::Chunks, &r.header.id.0)? {
        Some(v) => Ok(r.is_indexed(pid, &v)),
        None => {
            log::warn!("Live record {} in pack {pid} was not indexed", r.header.id);
            Ok(true)
        }
    }
}

/// Deletes the layer entries and layer directories of snapshots that no longer exist: no
/// snapshot record points at them, and no running mount leases them.
pub(super) fn remove_orphans(repo: &Repo, marked: &Marked) -> Result<()> {
    for part in marked.orphans.chunks(BATCH) {
        let mut batch = Batch::default();
        for k in part {
            batch.remove(Space::Layers, k);
        }
        repo.index().apply(batch)?;
    }
    let mut batch = Batch::default();
    for kv in repo.index().scan(Space::LayerDirs, b"") {
        let (k, _) = kv?;
        let sid = key_snapshot(&k)?;
        if !marked.existing.contains(&sid) && !marked.leased.contains(&sid) {
            batch.remove(Space::LayerDirs, k);
        }
    }
    repo.index().apply(batch)
}
