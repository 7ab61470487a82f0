//! The plumbing between a backup's threads: batched channels, the pack writer thread that appends
//! chunks and layer blobs to packs, and the layer thread that stores entries in sled and cuts the
//! layer blobs. It decides nothing about what is backed up; it moves what it is given.

use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, Receiver, Sender};

use super::reader::{store_deferred_links, worker, FileJob};
use super::walker::Deferred;
use super::Shared;
use crate::budget::CloseOnDrop;
use crate::compress::{self, Compression};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::repo::keys;
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;

/// Layer blobs are cut at this size; they exist so the index can be rebuilt from packs.
const LAYER_BLOB_SIZE: usize = 1 << 20;
/// Layer entries sorted together before they go to sled.
const LAYER_SORT_BUFFER: usize = 8192;
/// Layer entries sent to the layer writer at once.
pub(super) const LAYER_BATCH: usize = 256;

/// What goes to the pack writer: a chunk ready to append, or a layer blob to compress and append.
pub(super) enum PackMsg {
    Chunk {
        id: ChunkId,
        raw_len: u32,
        compression: Compression,
        payload: Vec<u8>,
    },
    Blob(Vec<u8>),
}

impl PackMsg {
    /// Bytes counted against [`Shared::payloads`].
    pub(super) fn payload_len(&self) -> u64 {
        match self {
            PackMsg::Chunk { payload, .. } => payload.len() as u64,
            PackMsg::Blob(_) => 0,
        }
    }
}

/// Items sent through a channel in batches: one wake-up per batch instead of per file or chunk,
/// which on 100k small files is the difference between context switching and working.
pub(super) struct Batcher<T> {
    tx: Sender<Vec<T>>,
    pub(super) buf: Vec<T>,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl<T> Batcher<T> {
    pub(super) fn new(tx: Sender<Vec<T>>, max_items: usize, max_bytes: usize) -> Batcher<T> {
        Batcher {
            tx,
            buf: Vec::new(),
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    pub(super) fn push(&mut self, item: T, bytes: usize) -> Result<()> {
        self.buf.push(item);
        self.bytes += bytes;
        if self.buf.len() >= self.max_items || self.bytes >= self.max_bytes {
            self.flush()?;
        }
        Ok(())
    }

    pub(super) fn flush(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        self.bytes = 0;
        self.tx
            .send(std::mem::take(&mut self.buf))
            .map_err(|_| Error::Aborted)
    }
}

/// One entry of the new layer.
pub(super) struct LayerMsg {
    pub(super) dir: Vec<u8>,
    pub(super) name: Vec<u8>,
    pub(super) entry: Entry,
}

/// Best-effort removal of an uncommitted layer's entries after a failed backup (they are invisible
/// anyway: no snapshot record points at them, and `prune` removes what is left). Stops at the
/// first error: after a full disk, sled's iterator can yield the same error forever.
pub(super) fn discard_layer(repo: &Repo, id: &SnapshotId) {
    if let Err(e) = crate::forget::delete_layer(repo, id) {
        log::info!("Left the failed backup's layer entries for prune: {e}");
    }
}

pub(super) fn pack_thread(
    mut w: PackWriter,
    shared: &Shared,
    rx: Receiver<Vec<PackMsg>>,
) -> Result<PackWriter> {
    let _close = CloseOnDrop(&shared.payloads);
    for batch in rx {
        // Given back once per batch: one wake-up of waiting readers, not one per chunk.
        let bytes = batch.iter().map(PackMsg::payload_len).sum();
        for msg in batch {
            match msg {
                PackMsg::Chunk {
                    id,
                    raw_len,
                    compression,
                    payload,
                } => w.add_prepared(RecordType::Chunk, id, raw_len, compression, &payload)?,
                PackMsg::Blob(plain) => {
                    w.add_blob(RecordType::Layer, &plain)?;
                }
            }
        }
        shared.payloads.give(bytes);
    }
    Ok(w)
}

pub(super) fn layer_thread(
    repo: Arc<Repo>,
    id: SnapshotId,
    rx: Receiver<Vec<LayerMsg>>,
    pack_tx: Sender<Vec<PackMsg>>,
) -> Result<Vec<ChunkId>> {
    let mut blob = Vec::with_capacity(LAYER_BLOB_SIZE + 4096);
    let mut blobs = Vec::new();
    let flush_blob = |blob: &mut Vec<u8>, blobs: &mut Vec<ChunkId>| -> Result<()> {
        if blob.is_empty() {
            return Ok(());
        }
        blobs.push(repo.chunk_id(blob));
        pack_tx
            .send(vec![PackMsg::Blob(std::mem::take(blob))])
            .map_err(|_| Error::Aborted)
    };
    // Entries arrive interleaved from several threads; they are buffered, sorted and applied in
    // small batches that each cover a narrow key range (sled then rewrites few pages per batch).
    let mut pending: Vec<(Vec<u8>, Vec<u8>)> = Vec::with_capacity(LAYER_SORT_BUFFER);
    let apply = |pending: &mut Vec<(Vec<u8>, Vec<u8>)>| repo.insert_layer_entries(pending);
    for m in rx.into_iter().flatten() {
        let key = keys::entry_key(&id, &m.dir, &m.name);
        let val = m.entry.encode();
        // Layer blob record: u32 LE key length ‖ key without snapshot id ‖ u32 LE value length ‖ value.
        blob.extend_from_slice(&((key.len() - 16) as u32).to_le_bytes());
        blob.extend_from_slice(&key[16..]);
        blob.extend_from_slice(&(val.len() as u32).to_le_bytes());
        blob.extend_from_slice(&val);
        pending.push((key, val));
        if pending.len() >= LAYER_SORT_BUFFER {
            apply(&mut pending)?;
        }
        if blob.len() >= LAYER_BLOB_SIZE {
            flush_blob(&mut blob, &mut blobs)?;
        }
    }
    apply(&mut pending)?;
    flush_blob(&mut blob, &mut blobs)?;
    Ok(blobs)
}

/// Sends a chunk to the writer unless the repository or another worker already has it; returns
/// the size of its payload (compressed, or plain) when it was new.
pub(super) fn store_chunk(
    shared: &Shared,
    pack: &mut Batcher<PackMsg>,
    id: ChunkId,
    data: &[u8],
) -> Result<Option<u64>> {
    if shared.repo.has_chunk(&id)? || !shared.in_flight.lock().unwrap().insert(id) {
        return Ok(None);
    }
    let raw_len = data.len() as u32;
    let msg = match compress::compress(
        data,
        shared.level,
        shared.repo.dictionary().map(|d| d.as_ref()),
    ) {
        Some((compression, c)) => PackMsg::Chunk {
            id,
            raw_len,
            compression,
            payload: c,
        },
        None => PackMsg::Chunk {
            id,
            raw_len,
            compression: Compression::None,
            payload: data.to_vec(),
        },
    };
    let len = data.len();
    let stored = msg.payload_len();
    shared.progress.0.new_data(len as u64);
    shared.payloads.take(stored, || pack.flush())?;
    pack.push(msg, len)?;
    Ok(Some(stored))
}

/// The running threads of a backup besides the walkers, and the channels that feed them.
pub(super) struct Threads {
    pub(super) job_tx: Sender<Vec<FileJob>>,
    pub(super) layer_tx: Sender<Vec<LayerMsg>>,
    pub(super) pack_tx: Sender<Vec<PackMsg>>,
    writer: JoinHandle<Result<PackWriter>>,
    layer: JoinHandle<Result<Vec<ChunkId>>>,
    readers: Vec<JoinHandle<Result<()>>>,
}

impl Threads {
    /// Starts the pack writer, the layer writer of snapshot `id`, and `readers` reader threads.
    pub(super) fn start(shared: &Arc<Shared>, id: SnapshotId, readers: usize) -> Threads {
        let (pack_tx, pack_rx) = bounded::<Vec<PackMsg>>(8);
        let (layer_tx, layer_rx) = bounded::<Vec<LayerMsg>>(16);
        let (job_tx, job_rx) = bounded::<Vec<FileJob>>(readers * 2);
        let repo = &shared.repo;
        let writer = {
            let w = PackWriter::new(repo.clone(), shared.in_flight.clone());
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("strata-pack".into())
                .spawn(move || pack_thread(w, &shared, pack_rx))
                .expect("spawn pack writer")
        };
        let layer = {
            let repo = repo.clone();
            let pack_tx = pack_tx.clone();
            std::thread::Builder::new()
                .name("strata-layer".into())
                .spawn(move || layer_thread(repo, id, layer_rx, pack_tx))
                .expect("spawn layer writer")
        };
        let readers = (0..readers)
            .map(|i| {
                let (shared, rx, ptx, ltx) = (
                    shared.clone(),
                    job_rx.clone(),
                    pack_tx.clone(),
                    layer_tx.clone(),
                );
                std::thread::Builder::new()
                    .name(format!("strata-read-{i}"))
                    .spawn(move || worker(&shared, rx, ptx, ltx))
                    .expect("spawn reader")
            })
            .collect();
        Threads {
            job_tx,
            layer_tx,
            pack_tx,
            writer,
            layer,
            readers,
        }
    }

    /// Once the walk is over (`walked` is its outcome): lets the readers finish, stores the hard
    /// links the walk deferred, and lets the layer and pack writers finish. Returns the layer's
    /// blob ids and the pack writer, whose last pack is still open; or the root cause of a
    /// failure, not another thread's report that it stopped because of it.
    pub(super) fn finish(
        self,
        shared: &Shared,
        walked: Result<()>,
        deferred: Vec<Deferred>,
    ) -> Result<(Vec<ChunkId>, PackWriter)> {
        drop(self.job_tx);
        let mut first_err = None;
        for r in self.readers {
            if let Err(e) = r.join().expect("reader thread panicked") {
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = walked {
            first_err.get_or_insert(e);
        }
        if first_err.is_none() {
            store_deferred_links(shared, deferred, &self.layer_tx);
        }
        drop(self.layer_tx);
        let layer_result = self.layer.join().expect("layer thread panicked");
        drop(self.pack_tx);
        let writer_result = self.writer.join().expect("pack thread panicked");
        match (first_err, layer_result, writer_result) {
            (None, Ok(blobs), Ok(w)) => Ok((blobs, w)),
            (walk, layer, write) => {
                let errs = [write.err(), layer.err(), walk];
                let root = errs.into_iter().flatten().reduce(|a, b| {
                    if matches!(a, Error::Aborted) {
                        b
                    } else {
                        a
                    }
                });
                Err(root.expect("some part failed"))
            }
        }
    }
}
