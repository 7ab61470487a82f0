//! Rewriting packs: live records are copied raw (verified, never recompressed) into new packs,
//! which are finished before the index switches to them; the old packs are deleted after the
//! index is flushed.

use super::mark::Rec;
use super::sweep::{Repack, BATCH};
use super::PruneStats;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId};
use crate::progress::Progress;
use crate::repo::keys::Location;
use crate::repo::pack::{self, PackSink, RecordHeader, PACK_HEADER_LEN};
use crate::repo::store::{Batch, Space};
use crate::repo::Repo;

/// What [`repack`] did: the packs it emptied (with their dead records) and the new locations
/// of the records it copied.
#[derive(Default)]
pub(super) struct Repacked {
    pub(super) done: Vec<(PackId, Vec<Rec>)>,
    pub(super) moved: Vec<(ChunkId, Location)>,
}

/// Copies the live records of each pack in `rewrite` into new, finished packs. A pack with a
/// record that does not verify is not rewritten (counted in `packs_skipped`).
pub(super) fn repack(
    repo: &Repo,
    rewrite: Vec<Repack>,
    stats: &mut PruneStats,
    progress: &dyn Progress,
) -> Result<Repacked> {
    let mut out = Repacked::default();
    let mut copier: Option<Copier> = None;
    progress.verify_total(rewrite.iter().flat_map(|p| &p.live).map(Rec::len).sum());
    for p in rewrite {
        let bytes = p.live.iter().map(Rec::len).sum();
        let Some(copies) = verified_copies(repo, p.id, &p.live)? else {
            stats.packs_skipped += 1;
            stats.packs_rewritten -= 1;
            progress.data_checked(bytes);
            continue;
        };
        for (id, bytes) in copies {
            let c = match copier.take() {
                Some(c) if c.offset < repo.pack_target_size() => c,
                Some(full) => {
                    out.moved.extend(full.finish()?);
                    stats.packs_written += 1;
                    Copier::create(repo)?
                }
                None => Copier::create(repo)?,
            };
            copier.insert(c).copy(id, &bytes)?;
            stats.records_copied += 1;
        }
        out.done.push((p.id, p.dead));
        progress.data_checked(bytes);
    }
    if let Some(c) = copier.take() {
        out.moved.extend(c.finish()?);
        stats.packs_written += 1;
    }
    Ok(out)
}

/// A record to copy: its id and its bytes as stored (header and payload).
type RecordCopy = (ChunkId, Vec<u8>);

/// The records `live` of pack `pid` as stored, each verified; `None` (logged) when one does not
/// verify, so that the pack is left as it is.
fn verified_copies(repo: &Repo, pid: PackId, live: &[Rec]) -> Result<Option<Vec<RecordCopy>>> {
    let mut copies = Vec::with_capacity(live.len());
    for r in live {
        let bytes = repo.packs().read_at(pid, r.offset, r.len() as usize)?;
        let dict = repo.dictionary().map(|d| d.as_ref());
        if let Err(e) = pack::open_record(
            pid,
            &bytes,
            &r.header.id,
            dict,
            repo.crypt().map(|c| c.as_ref()),
        ) {
            log::error!("Not rewriting pack {pid}: {e}");
            return Ok(None);
        }
        copies.push((r.header.id, bytes));
    }
    Ok(Some(copies))
}

/// Points the index at the copied records' new locations, then removes the dead records of the
/// rewritten and deleted packs from it (only where it still points into those packs). Not
/// flushed here.
pub(super) fn switch_index(
    repo: &Repo,
    repacked: &Repacked,
    deleted: &[(PackId, Vec<Rec>)],
) -> Result<()> {
    let mut removals = Vec::new();
    for (pid, dead) in repacked.done.iter().chain(deleted) {
        for r in dead {
            if let Some(v) = repo.index().get(Space::Chunks, &r.header.id.0)? {
                if r.is_indexed(*pid, &v) {
                    removals.push(r.header.id);
                }
            }
        }
    }
    for part in repacked.moved.chunks(BATCH) {
        let mut batch = Batch::default();
        for (id, loc) in part {
            batch.insert(Space::Chunks, id.0, loc.encode());
        }
        repo.index().apply(batch)?;
    }
    for part in removals.chunks(BATCH) {
        let mut batch = Batch::default();
        for id in part {
            batch.remove(Space::Chunks, id.0);
        }
        repo.index().apply(batch)?;
    }
    Ok(())
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
