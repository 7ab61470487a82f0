//! The chunks of copied layers: each source chunk is given its target id ([`super::ids`]), and
//! read from the source (verified), compressed as the target compresses and appended to its
//! packs only when the target lacks it. A chunk is handled once per run, however many entries
//! reference it.

use std::sync::Arc;

use super::ids::Ids;
use super::source::Source;
use crate::compress::{self, Compression};
use crate::error::{Error, Result};
use crate::id::ChunkId;
use crate::progress::ProgressHandle;
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;

/// What the chunks of a copy cost, units in the names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ChunkStats {
    /// Distinct chunks the target lacked: sent (with `--dry-run`: would be).
    pub new_chunks: u64,
    /// Their plaintext bytes.
    pub new_bytes: u64,
    /// Distinct chunks the target already held: not sent.
    pub present_chunks: u64,
    /// Their plaintext bytes.
    pub present_bytes: u64,
    /// Chunks read from the source (what was sent, and what had to be read to learn its id in
    /// a target whose ids differ).
    pub read_chunks: u64,
    /// Their plaintext bytes.
    pub read_bytes: u64,
}

/// Where new chunks of one snapshot go: its pack writer, and the ids written, to be read back
/// before the snapshot is committed.
pub(super) struct Out {
    pub writer: PackWriter,
    pub written: Vec<ChunkId>,
}

impl Out {
    /// A writer over `target`'s packs.
    pub fn new(target: &Arc<Repo>) -> Out {
        Out {
            writer: PackWriter::new(target.clone(), Default::default()),
            written: Vec::new(),
        }
    }
}

/// Resolves and, where needed, sends the chunks of copied layers.
pub(super) struct Chunks<'a> {
    source: &'a Source,
    target: &'a Arc<Repo>,
    ids: Ids,
    progress: ProgressHandle,
    pub stats: ChunkStats,
}

impl<'a> Chunks<'a> {
    /// Chunks from `source` into `target`, ids translated by `ids`.
    pub fn new(
        source: &'a Source,
        target: &'a Arc<Repo>,
        ids: Ids,
        progress: ProgressHandle,
    ) -> Chunks<'a> {
        Chunks {
            source,
            target,
            ids,
            progress,
            stats: ChunkStats::default(),
        }
    }

    /// The id translation, for learning layers both repositories hold.
    pub fn ids_mut(&mut self) -> &mut Ids {
        &mut self.ids
    }

    /// The target id of source chunk `src` (`len` plaintext bytes), making sure the target
    /// holds it: found there, or read from the source and appended to `out` (with `None`, a dry
    /// run: counted as sent, nothing written).
    pub fn resolve(&mut self, src: ChunkId, len: u32, out: Option<&mut Out>) -> Result<ChunkId> {
        self.progress.0.data_checked(u64::from(len));
        let known = self.ids.get(&src);
        if let Some(k) = known {
            if k.settled {
                return Ok(k.dst);
            }
            if self.target.has_chunk(&k.dst)? {
                self.present(src, k.dst, len);
                return Ok(k.dst);
            }
        }
        let plain = self.read(&src)?;
        let dst = self.target.chunk_id(&plain);
        if self.ids.same() && dst != src {
            return Err(Error::CorruptChunk {
                id: src,
                pack: self.source.repo().chunk_location(&src)?.pack,
                detail: "its plaintext does not hash to its id".into(),
            });
        }
        if known.is_none_or(|k| k.dst != dst) && self.target.has_chunk(&dst)? {
            self.present(src, dst, len);
            return Ok(dst);
        }
        if let Some(out) = out {
            let raw_len = plain.len() as u32;
            let dict = self.target.dictionary().map(|d| d.as_ref());
            match compress::compress(&plain, self.target.compression(), dict) {
                Some((kind, c)) => {
                    out.writer
                        .add_prepared(RecordType::Chunk, dst, raw_len, kind, &c)?
                }
                None => out.writer.add_prepared(
                    RecordType::Chunk,
                    dst,
                    raw_len,
                    Compression::None,
                    &plain,
                )?,
            }
            out.written.push(dst);
        }
        self.progress.0.new_data(u64::from(len));
        self.stats.new_chunks += 1;
        self.stats.new_bytes += u64::from(len);
        self.ids.settle(src, dst);
        Ok(dst)
    }

    /// The target id of source chunk `src` for comparing views, storing nothing: known, or read
    /// from the source and hashed as the target hashes.
    pub fn identify(&mut self, src: &ChunkId) -> Result<ChunkId> {
        if let Some(k) = self.ids.get(src) {
            return Ok(k.dst);
        }
        let plain = self.read(src)?;
        Ok(self.target.chunk_id(&plain))
    }

    fn present(&mut self, src: ChunkId, dst: ChunkId, len: u32) {
        self.stats.present_chunks += 1;
        self.stats.present_bytes += u64::from(len);
        self.ids.settle(src, dst);
    }

    fn read(&mut self, src: &ChunkId) -> Result<Vec<u8>> {
        let plain = self.source.read_chunk(src)?;
        self.stats.read_chunks += 1;
        self.stats.read_bytes += plain.len() as u64;
        Ok(plain)
    }
}
