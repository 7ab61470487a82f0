//! Appending records to packs and indexing them. The commit order for data is enforced here: a
//! pack is written, fsynced and renamed into place *before* its records enter the sled index, so the
//! index never points at bytes that might not be on disk.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use crate::compress::{self, Compression};
use crate::error::Result;
use crate::id::{ChunkId, PackId};
use crate::repo::keys::Location;
use crate::repo::pack::{self, PackSink, RecordType, PACK_HEADER_LEN, PACK_MAGIC, PACK_VERSION};
use crate::repo::store::{Batch, Space};
use crate::repo::{space, Repo};

/// Packs are closed once they reach this size: large enough for few files and fsyncs, small enough
/// that prune can rewrite one cheaply.
pub const PACK_TARGET_SIZE: u64 = 64 << 20;

/// The same for a repository in a bucket: a commit waits for its last pack's upload, which is
/// pure delay at the end of a backup, and smaller objects keep that short (restic's default
/// pack size is the same).
pub const REMOTE_PACK_TARGET_SIZE: u64 = 16 << 20;

/// Packs are also closed at this many records. The writer keeps each record of the open pack in
/// memory until the pack is durable and indexed; 64 MiB of small compressed documents is over
/// 100k records, whose maps (and the index batch that follows) made the peak of a backup's
/// memory and its run-to-run spread.
pub const PACK_MAX_RECORDS: usize = 16 << 10;

/// Index entries applied to sled per batch.
const INDEX_BATCH: usize = 512;

/// Counters of what a writer stored.
#[derive(Clone, Debug, Default)]
pub struct WriterStats {
    /// Records of type chunk not stored before.
    pub new_chunks: u64,
    /// Their plaintext bytes.
    pub new_bytes: u64,
    /// Bytes added to pack files, headers included.
    pub stored_bytes: u64,
    /// Packs finished.
    pub packs: u64,
}

struct OpenPack {
    id: PackId,
    sink: Box<dyn PackSink>,
    offset: u64,
    pending: HashMap<ChunkId, Location>,
}

/// Appends records to a sequence of packs. Single-threaded by design: one backup has one writer
/// thread, fed by a channel.
pub struct PackWriter {
    repo: Arc<Repo>,
    current: Option<OpenPack>,
    stats: WriterStats,
    in_flight: Arc<Mutex<HashSet<ChunkId>>>,
    /// A sealed payload, reused from record to record.
    sealed: Vec<u8>,
}

impl PackWriter {
    /// A writer over `repo`'s packs. `in_flight` is the set workers use to avoid compressing a chunk
    /// twice; ids leave it once they are indexed.
    pub fn new(repo: Arc<Repo>, in_flight: Arc<Mutex<HashSet<ChunkId>>>) -> PackWriter {
        PackWriter {
            repo,
            current: None,
            stats: WriterStats::default(),
            in_flight,
            sealed: Vec::new(),
        }
    }

    /// Whether `id` is already stored or pending in this writer.
    fn known(&self, id: &ChunkId) -> Result<bool> {
        if let Some(p) = &self.current {
            if p.pending.contains_key(id) {
                return Ok(true);
            }
        }
        self.repo.has_chunk(id)
    }

    /// Appends a record whose payload was prepared (compressed) by the caller; in an encrypted
    /// repository it is sealed here. Duplicates are dropped.
    pub fn add_prepared(
        &mut self,
        rtype: RecordType,
        id: ChunkId,
        raw_len: u32,
        compression: Compression,
        payload: &[u8],
    ) -> Result<()> {
        if self.known(&id)? {
            return Ok(());
        }
        let crypt = self.repo.crypt().map(|c| c.as_ref());
        let h = pack::seal_record(
            crypt,
            rtype,
            id,
            raw_len,
            compression as u8,
            payload,
            &mut self.sealed,
        );
        let payload = if crypt.is_some() {
            &self.sealed[..]
        } else {
            payload
        };
        let rec_len = (super::pack::RECORD_HEADER_LEN + payload.len()) as u64;
        self.repo
            .take_space("writing a pack", rec_len + PACK_HEADER_LEN)?;
        if self.current.is_none() {
            let (pid, mut sink) = self.repo.create_pack()?;
            let mut header = [0u8; PACK_HEADER_LEN as usize];
            header[..8].copy_from_slice(PACK_MAGIC);
            header[8..12].copy_from_slice(&PACK_VERSION.to_le_bytes());
            sink.write_all(&header)?;
            self.current = Some(OpenPack {
                id: pid,
                sink,
                offset: PACK_HEADER_LEN,
                pending: HashMap::new(),
            });
        }
        let p = self.current.as_mut().unwrap();
        p.sink.write_all(&h.encode())?;
        p.sink.write_all(payload)?;
        p.pending.insert(
            id,
            Location {
                pack: p.id,
                offset: p.offset,
                stored_len: payload.len() as u32,
                raw_len,
                compression: compression as u8,
            },
        );
        p.offset += rec_len;
        self.stats.stored_bytes += rec_len;
        if rtype == RecordType::Chunk {
            self.stats.new_chunks += 1;
            self.stats.new_bytes += raw_len as u64;
        }
        if p.offset >= self.repo.pack_target_size() || p.pending.len() >= PACK_MAX_RECORDS {
            self.finish_pack()?;
        }
        Ok(())
    }

    /// Compresses (at the repository's level, never with the dictionary, so metadata records stay
    /// readable on their own) and appends a metadata record; returns its id.
    pub fn add_blob(&mut self, rtype: RecordType, plain: &[u8]) -> Result<ChunkId> {
        let id = self.repo.chunk_id(plain);
        match compress::compress(plain, self.repo.compression(), None) {
            Some((kind, c)) => self.add_prepared(rtype, id, plain.len() as u32, kind, &c)?,
            None => self.add_prepared(rtype, id, plain.len() as u32, Compression::None, plain)?,
        }
        Ok(id)
    }

    /// Makes the open pack durable, then indexes its records.
    fn finish_pack(&mut self) -> Result<()> {
        let Some(p) = self.current.take() else {
            return Ok(());
        };
        p.sink.finish()?;
        // Small batches: sled holds a whole batch (and more) in memory while applying it.
        // Sorted, so each batch covers a narrow key range: sled then rewrites few pages per batch,
        // which keeps its log (and its file) small.
        let mut pending: Vec<_> = p.pending.iter().collect();
        pending.sort_unstable_by_key(|(id, _)| **id);
        for part in pending.chunks(INDEX_BATCH) {
            self.repo.take_space(
                "writing the index",
                space::index_cost(part.len(), part.len() * (32 + Location::LEN)),
            )?;
            let mut batch = Batch::default();
            for (id, loc) in part {
                batch.insert(Space::Chunks, id.0, loc.encode());
            }
            self.repo.index().apply(batch)?;
        }
        let mut f = self.in_flight.lock().unwrap();
        for id in p.pending.keys() {
            f.remove(id);
        }
        self.stats.packs += 1;
        log::debug!("Finished pack {} ({} bytes)", p.id, p.offset);
        Ok(())
    }

    /// Finishes the last pack and returns what was stored.
    pub fn finish(mut self) -> Result<WriterStats> {
        self.finish_pack()?;
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pack_closes_at_its_record_limit_and_every_record_is_indexed() {
        let t = tempfile::tempdir().unwrap();
        let repo = crate::repo::create_for_tests(&t.path().join("repo"));
        let mut w = PackWriter::new(repo.clone(), Default::default());
        let ids: Vec<ChunkId> = (0..=PACK_MAX_RECORDS as u32)
            .map(|i| {
                let plain = i.to_le_bytes();
                w.add_prepared(
                    RecordType::Chunk,
                    ChunkId::of(&plain),
                    4,
                    Compression::None,
                    &plain,
                )
                .unwrap();
                ChunkId::of(&plain)
            })
            .collect();
        assert_eq!(w.stats.packs, 1, "the first pack closed at the limit");
        let stats = w.finish().unwrap();
        assert_eq!(stats.packs, 2);
        assert_eq!(stats.new_chunks, PACK_MAX_RECORDS as u64 + 1);
        for (i, id) in ids.iter().enumerate() {
            let loc = repo.chunk_location(id).unwrap();
            assert_eq!(
                repo.read_record_at(id, &loc).unwrap(),
                (i as u32).to_le_bytes()
            );
        }
    }
}
