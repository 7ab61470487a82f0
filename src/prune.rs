//! `prune`: deletes what no snapshot needs any more. Mark, then sweep.
//!
//! **Mark.** The `layers` tree is streamed once: entries of existing snapshots mark their chunks
//! live (a `HashSet` of 32-byte ids: about 80 MB per million chunks with the set's overhead, fine
//! up to a few million chunks); entries of snapshots that no longer exist (a killed backup or
//! forget) are deleted. Also live: the layer blobs listed by the snapshot records, the last-written
//! snapshot blob of each remaining snapshot, every forget tombstone and the dictionary.
//!
//! **Sweep.** Every pack's record headers are read. A record is live when its id is live and the
//! index points at it (a second copy, left by a killed rewrite, is garbage). A pack without live
//! records is deleted; a pack whose live bytes fall below the repack threshold is rewritten: its
//! live records are copied raw (verified, never recompressed) into a new pack, which is finished,
//! then the index switches to the new locations, then sled is flushed, then the old pack is
//! deleted. Killed between any two steps, nothing referenced is lost and a rerun completes.
//!
//! **Damage.** Prune deletes what nothing references, so it must not run on a repository whose
//! references may be incomplete: when the last check or repair left a damage marker
//! ([`crate::check::marker`]), prune refuses ([`Error::DamageUnacknowledged`]) unless
//! `force_after_damage` says the user has looked; that run removes the marker when it is done. A
//! dry run only warns.
//!
//! Unfinished `*.pack.tmp` files are removed first: the repository lock is exclusive (`flock`
//! `LOCK_EX`, see `repo::take_lock`), so no live writer can own them.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::forget::crash_point;
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::repo::keys::Location;
use crate::repo::pack::{
    self, PackSink, RecordHeader, RecordType, PACK_HEADER_LEN, RECORD_HEADER_LEN,
};
use crate::repo::writer::PACK_TARGET_SIZE;
use crate::repo::Repo;
use crate::snapshot::Snapshot;

/// Default repack threshold: packs less than 80% live are rewritten. Rewriting copies the live
/// part, so at 80% each byte copied frees at least a quarter byte; packs are 64 MiB, so the waste
/// left behind is bounded by 20% of the repository, and a prune after a typical forget (a few
/// percent of chunks gone, spread over recent packs) copies little.
pub const DEFAULT_REPACK_THRESHOLD: u8 = 80;

/// Options for [`prune`].
#[derive(Clone, Debug)]
pub struct PruneOptions {
    /// Report what would happen; change nothing.
    pub dry_run: bool,
    /// Rewrite packs whose live bytes are below this percentage of their size (0 = never, 100 =
    /// any pack with garbage).
    pub repack_threshold: u8,
    /// Run even though the last check or repair found damage (the user has looked); the damage
    /// marker is removed once the prune is done.
    pub force_after_damage: bool,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_threshold: DEFAULT_REPACK_THRESHOLD,
            force_after_damage: false,
        }
    }
}

/// What prune did (or, with `dry_run`, would do). Units in the field names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PruneStats {
    /// Packs examined.
    pub packs_total: u64,
    /// Packs without live records, deleted.
    pub packs_deleted: u64,
    /// Packs rewritten because their live fraction was below the threshold.
    pub packs_rewritten: u64,
    /// Packs created by rewriting.
    pub packs_written: u64,
    /// Packs that could not be read or verified and were left alone.
    pub packs_skipped: u64,
    /// Records dropped from packs.
    pub records_removed: u64,
    /// Records copied into new packs.
    pub records_copied: u64,
    /// Live chunks (file content) found by the mark phase.
    pub live_chunks: u64,
    /// Bytes of pack files before.
    pub bytes_before: u64,
    /// Bytes of pack files after.
    pub bytes_after: u64,
    /// Bytes of garbage left in packs above the threshold.
    pub garbage_bytes_kept: u64,
    /// Layer entries of snapshots that no longer exist, deleted from sled.
    pub orphan_entries: u64,
    /// Unfinished `*.pack.tmp` files removed.
    pub tmp_packs_removed: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

impl PruneStats {
    /// Bytes of pack files freed.
    pub fn reclaimed_bytes(&self) -> u64 {
        self.bytes_before.saturating_sub(self.bytes_after)
    }
}

/// One record found in a pack.
#[derive(Clone, Copy, Debug)]
struct Rec {
    header: RecordHeader,
    offset: u64,
}

impl Rec {
    fn len(&self) -> u64 {
        RECORD_HEADER_LEN as u64 + self.header.stored_len as u64
    }
    fn location(&self, pack: PackId) -> Location {
        Location {
            pack,
            offset: self.offset,
            stored_len: self.header.stored_len,
            raw_len: self.header.raw_len,
            compression: self.header.compression,
        }
    }
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

/// Deletes unreferenced records from the repository's packs; see the module doc.
pub fn prune(repo: &Arc<Repo>, opts: &PruneOptions) -> Result<PruneStats> {
    let start = Instant::now();
    let mut stats = PruneStats::default();
    let damage = crate::check::marker::read(repo.path())?;
    if !damage.is_empty() {
        let found = damage_summary(&damage);
        if opts.dry_run {
            log::warn!("{found}; prune will need --force-after-damage");
        } else if !opts.force_after_damage {
            return Err(Error::DamageUnacknowledged {
                path: repo.path().to_path_buf(),
                found,
            });
        } else {
            log::warn!("Pruning as asked, although {found}");
        }
    }
    if !opts.dry_run {
        stats.tmp_packs_removed = repo.packs().remove_unfinished()? as u64;
        // The lookup tables record chunk locations, which a repack moves.
        crate::lookup::drop_tables(repo.path())?;
    }

    // Mark.
    let snapshots = repo.snapshots()?;
    let existing: HashSet<SnapshotId> = snapshots.iter().map(|s| s.id).collect();
    let mut live: HashSet<ChunkId> = HashSet::new();
    let mut orphans: Vec<sled::IVec> = Vec::new();
    for kv in repo.layers.iter() {
        let (k, v) = kv?;
        let sid = key_snapshot(&k)?;
        if existing.contains(&sid) {
            for c in crate::entry::Entry::decode(&v)?.chunks {
                live.insert(c.id);
            }
        } else {
            orphans.push(k);
        }
    }
    stats.live_chunks = live.len() as u64;
    for s in &snapshots {
        live.extend(s.layer_blobs.iter().copied());
    }

    let packs = repo.packs().list()?;
    stats.packs_total = packs.len() as u64;
    let mut scanned: Vec<(PackId, u64, Vec<Rec>)> = Vec::new();
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
                    let plain = repo.read_record_at(&r.header.id, &r.location(pid))?;
                    let s = Snapshot::decode(&plain)?;
                    let pos = (pid, r.offset, r.header.id);
                    if current
                        .get(&s.id)
                        .is_none_or(|c| (c.0, c.1) < (pid, r.offset))
                    {
                        current.insert(s.id, pos);
                    }
                }
                RecordType::Forget | RecordType::Dictionary => {
                    live.insert(r.header.id);
                }
                RecordType::Chunk | RecordType::Layer => {}
            }
        }
        scanned.push((pid, size, recs));
    }
    for (sid, (_, _, blob)) in &current {
        if existing.contains(sid) {
            live.insert(*blob);
        }
    }

    // Sweep: decide per pack.
    let is_live = |pid: PackId, r: &Rec| -> Result<bool> {
        if !live.contains(&r.header.id) {
            return Ok(false);
        }
        match repo.chunks.get(r.header.id.0)? {
            Some(v) => {
                Ok(Location::decode(&v).is_some_and(|l| l.pack == pid && l.offset == r.offset))
            }
            None => {
                log::warn!("Live record {} in pack {pid} was not indexed", r.header.id);
                Ok(true)
            }
        }
    };
    let mut delete: Vec<(PackId, u64, Vec<Rec>)> = Vec::new();
    let mut rewrite: Vec<(PackId, u64, Vec<Rec>, Vec<Rec>)> = Vec::new();
    for (pid, size, recs) in scanned {
        let mut live_recs = Vec::new();
        let mut dead = Vec::new();
        for r in recs {
            if is_live(pid, &r)? {
                live_recs.push(r);
            } else {
                dead.push(r);
            }
        }
        let live_bytes: u64 = live_recs.iter().map(Rec::len).sum();
        if live_recs.is_empty() {
            stats.records_removed += dead.len() as u64;
            delete.push((pid, size, dead));
        } else if !dead.is_empty()
            && (live_bytes + PACK_HEADER_LEN) * 100 < size * opts.repack_threshold as u64
        {
            stats.records_removed += dead.len() as u64;
            stats.bytes_after += live_bytes + PACK_HEADER_LEN;
            rewrite.push((pid, size, live_recs, dead));
        } else {
            stats.garbage_bytes_kept += dead.iter().map(Rec::len).sum::<u64>();
            stats.bytes_after += size;
        }
    }
    stats.packs_deleted = delete.len() as u64;
    stats.packs_rewritten = rewrite.len() as u64;
    stats.orphan_entries = orphans.len() as u64;
    if opts.dry_run {
        stats.packs_written = rewrite_packs_estimate(&rewrite);
        stats.elapsed_ms = start.elapsed().as_millis() as u64;
        return Ok(stats);
    }

    // Orphan layer entries: no snapshot record points at them.
    for part in orphans.chunks(512) {
        let mut batch = sled::Batch::default();
        for k in part {
            batch.remove(k.clone());
        }
        repo.layers.apply_batch(batch)?;
    }
    let mut batch = sled::Batch::default();
    for kv in repo.layerdirs.iter().keys() {
        let k = kv?;
        if !existing.contains(&key_snapshot(&k)?) {
            batch.remove(k);
        }
    }
    repo.layerdirs.apply_batch(batch)?;

    // Rewrite: copy, finish, switch the index, flush, delete.
    let mut copier: Option<Copier> = None;
    let mut done_old: Vec<(PackId, Vec<Rec>)> = Vec::new();
    let mut moved: Vec<(ChunkId, Location)> = Vec::new();
    for (pid, _size, live_recs, dead) in rewrite {
        let mut copies = Vec::new();
        let mut ok = true;
        for r in &live_recs {
            let bytes = repo.packs().read_at(pid, r.offset, r.len() as usize)?;
            let dict = repo.dictionary().map(|d| d.as_ref());
            if let Err(e) = pack::open_record(pid, &bytes, &r.header.id, dict) {
                log::error!("Not rewriting pack {pid}: {e}");
                ok = false;
                break;
            }
            copies.push((r.header.id, bytes));
        }
        if !ok {
            stats.packs_skipped += 1;
            stats.packs_rewritten -= 1;
            continue;
        }
        for (id, bytes) in copies {
            if copier
                .as_ref()
                .is_some_and(|c| c.offset >= PACK_TARGET_SIZE)
            {
                let c = copier.take().unwrap();
                moved.extend(c.finish()?);
                stats.packs_written += 1;
            }
            if copier.is_none() {
                copier = Some(Copier::create(repo)?);
            }
            copier.as_mut().unwrap().copy(id, &bytes)?;
            stats.records_copied += 1;
        }
        done_old.push((pid, dead));
    }
    if let Some(c) = copier.take() {
        moved.extend(c.finish()?);
        stats.packs_written += 1;
    }
    crash_point("prune-after-pack");

    // Index: new locations of copied records; dead records of rewritten and deleted packs leave
    // the index (only where it still points into those packs).
    let mut index_removals = Vec::new();
    for (pid, dead) in done_old
        .iter()
        .map(|(p, d)| (*p, d))
        .chain(delete.iter().map(|(p, _, d)| (*p, d)))
    {
        for r in dead {
            if let Some(v) = repo.chunks.get(r.header.id.0)? {
                if Location::decode(&v).is_some_and(|l| l.pack == pid && l.offset == r.offset) {
                    index_removals.push(r.header.id);
                }
            }
        }
    }
    for part in moved.chunks(512) {
        let mut batch = sled::Batch::default();
        for (id, loc) in part {
            batch.insert(&id.0, &loc.encode());
        }
        repo.chunks.apply_batch(batch)?;
    }
    for part in index_removals.chunks(512) {
        let mut batch = sled::Batch::default();
        for id in part {
            batch.remove(&id.0);
        }
        repo.chunks.apply_batch(batch)?;
    }
    repo.flush()?;
    crash_point("prune-after-index");

    for (pid, _) in &done_old {
        repo.packs().delete(*pid)?;
        crash_point("prune-after-first-delete");
    }
    for (pid, _, _) in &delete {
        repo.packs().delete(*pid)?;
    }
    stats.bytes_after = repo.packs().list()?.iter().map(|p| p.1).sum();
    if !damage.is_empty() {
        // Acknowledged and acted on: the next prune needs no flag until new damage is found.
        crate::check::marker::clear(repo.path())?;
    }
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    log::info!(
        "Pruned: {} pack(s) deleted, {} rewritten, {} bytes reclaimed",
        stats.packs_deleted,
        stats.packs_rewritten,
        stats.reclaimed_bytes()
    );
    Ok(stats)
}

/// One line for the user: the first findings of the damage marker, and how many more.
fn damage_summary(findings: &[(crate::check::marker::Origin, String)]) -> String {
    const SHOWN: usize = 3;
    let mut out = format!(
        "the last {} found damage: ",
        match findings[0].0 {
            crate::check::marker::Origin::Repair => "repair",
            _ => "check",
        }
    );
    let shown: Vec<&str> = findings
        .iter()
        .take(SHOWN)
        .map(|(_, m)| m.as_str())
        .collect();
    out.push_str(&shown.join("; "));
    if findings.len() > SHOWN {
        out.push_str(&format!(" (and {} more)", findings.len() - SHOWN));
    }
    out
}

/// Packs a rewrite would create (live bytes / pack target size, rounded up).
fn rewrite_packs_estimate(rewrite: &[(PackId, u64, Vec<Rec>, Vec<Rec>)]) -> u64 {
    let bytes: u64 = rewrite.iter().flat_map(|r| r.2.iter().map(Rec::len)).sum();
    bytes.div_ceil(PACK_TARGET_SIZE)
}

/// A pack being filled with raw copies of records (no dedup against the index, no recompression:
/// the index still points at the originals until the copy is finished).
struct Copier {
    id: PackId,
    sink: Box<dyn PackSink>,
    offset: u64,
    placed: Vec<(ChunkId, Location)>,
}

impl Copier {
    fn create(repo: &Repo) -> Result<Copier> {
        let (id, mut sink) = repo.create_pack()?;
        sink.write_all(&pack::pack_header())?;
        Ok(Copier {
            id,
            sink,
            offset: PACK_HEADER_LEN,
            placed: Vec::new(),
        })
    }

    /// Appends a whole record (header and payload) as read from its old pack.
    fn copy(&mut self, id: ChunkId, record: &[u8]) -> Result<()> {
        let h = RecordHeader::decode(record).map_err(|e| Error::CorruptMetadata(e.to_string()))?;
        self.sink.write_all(record)?;
        self.placed.push((
            id,
            Location {
                pack: self.id,
                offset: self.offset,
                stored_len: h.stored_len,
                raw_len: h.raw_len,
                compression: h.compression,
            },
        ));
        self.offset += record.len() as u64;
        Ok(())
    }

    /// Makes the pack durable (fsync, rename, directory fsync); returns the new locations.
    fn finish(self) -> Result<Vec<(ChunkId, Location)>> {
        self.sink.finish()?;
        log::debug!(
            "Wrote pack {} ({} bytes) by rewriting",
            self.id,
            self.offset
        );
        Ok(self.placed)
    }
}

/// The snapshot a layer or layer-directory key belongs to (its first 16 bytes). A shorter key
/// is damage in the index, reported as such rather than a panic.
fn key_snapshot(k: &[u8]) -> Result<SnapshotId> {
    k.get(..16)
        .and_then(|b| b.try_into().ok())
        .map(SnapshotId)
        .ok_or_else(|| Error::CorruptMetadata(format!("index key of {} bytes", k.len())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::writer::PackWriter;
    use crate::repo::CreateOptions;

    fn pack_with(repo: &Arc<Repo>, data: &[u8]) -> PackId {
        let mut w = PackWriter::new(repo.clone(), Default::default());
        let id = w.add_blob(RecordType::Chunk, data).unwrap();
        w.finish().unwrap();
        repo.chunk_location(&id).unwrap().pack
    }

    #[test]
    fn garbage_packs_go_damaged_packs_stay_tmp_packs_are_removed() {
        let t = tempfile::tempdir().unwrap();
        let repo = crate::open::Open::new(t.path().join("r"))
            .create(&CreateOptions::default())
            .unwrap();
        let good = pack_with(&repo, b"unreferenced chunk one");
        let bad = pack_with(&repo, b"unreferenced chunk two");
        // Truncate the second pack inside its record header.
        let bad_path = t
            .path()
            .join(format!("r/packs/{:02x}/{bad}.pack", bad.0 & 0xff));
        let len = std::fs::metadata(&bad_path).unwrap().len();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&bad_path)
            .unwrap()
            .set_len(len - 40)
            .unwrap();
        let _tmp = repo.packs().create(PackId(12345)).unwrap();

        let dry = prune(
            &repo,
            &PruneOptions {
                dry_run: true,
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!((dry.packs_deleted, dry.packs_skipped), (1, 1));
        assert_eq!(
            repo.packs().list().unwrap().len(),
            2,
            "dry run deletes nothing"
        );

        let s = prune(&repo, &PruneOptions::default()).unwrap();
        assert_eq!(
            (s.packs_deleted, s.packs_skipped, s.tmp_packs_removed),
            (1, 1, 1)
        );
        let left: Vec<PackId> = repo.packs().list().unwrap().iter().map(|p| p.0).collect();
        assert_eq!(left, vec![bad]);
        assert!(!left.contains(&good));
        assert!(s.reclaimed_bytes() > 0);
    }
}
