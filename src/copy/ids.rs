//! Chunk ids across two repositories. A chunk's id is blake3 of its plaintext, keyed in an
//! encrypted repository (`Repo::chunk_id`); when both repositories compute ids alike (both plain,
//! or encrypted with the same key) an id carries over, otherwise a chunk is known in the target
//! only by reading its plaintext from the source and computing the target's id.
//!
//! Reading every chunk of a copied layer would make an incremental copy between schemes cost a
//! full read of whatever the layer references. So the target ids of the chunks of layers both
//! repositories already hold (copied by an earlier run, which verified them) are learnt by
//! matching the two copies of such a layer entry by entry ([`Ids::learn_layer`]); only chunks
//! neither repository links this way are read.
//!
//! Memory: one pair of ids per distinct chunk met (about 100 bytes; 100 MB per million chunks).

use std::collections::HashMap;

use crate::entry::{Entry, Kind};
use crate::error::Result;
use crate::id::{ChunkId, SnapshotId};
use crate::repo::store::Space;
use crate::repo::Repo;

/// Plaintext both repositories hash to tell whether their ids agree.
const PROBE: &[u8] = b"strata copy: do these repositories compute chunk ids alike?";

/// What the copy knows of one source chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Known {
    /// Its id in the target.
    pub dst: ChunkId,
    /// This run made sure the target holds it (stored it, or found it there).
    pub settled: bool,
}

/// Source chunk id → target chunk id.
pub(super) struct Ids {
    same: bool,
    known: HashMap<ChunkId, Known>,
}

impl Ids {
    /// The translation from `source`'s ids to `target`'s.
    pub fn new(source: &Repo, target: &Repo) -> Ids {
        Ids {
            same: source.chunk_id(PROBE) == target.chunk_id(PROBE),
            known: HashMap::new(),
        }
    }

    /// Whether ids carry over unchanged.
    pub fn same(&self) -> bool {
        self.same
    }

    /// What is known of source chunk `src`: with the same scheme its id is its target id.
    pub fn get(&self, src: &ChunkId) -> Option<Known> {
        match self.known.get(src) {
            Some(k) => Some(*k),
            None if self.same => Some(Known {
                dst: *src,
                settled: false,
            }),
            None => None,
        }
    }

    /// `src` is `dst` in the target, and the target holds it.
    pub fn settle(&mut self, src: ChunkId, dst: ChunkId) {
        self.known.insert(src, Known { dst, settled: true });
    }

    /// Learns the target ids of the chunks of layer `id`, which both repositories hold: entries
    /// at the same key that are regular files with the same size, mtime and chunk offsets and
    /// lengths hold the same chunks, in order. Does nothing when ids carry over.
    pub fn learn_layer(&mut self, source: &Repo, target: &Repo, id: &SnapshotId) -> Result<u64> {
        if self.same {
            return Ok(0);
        }
        let mut theirs = target.index().scan(Space::Layers, &id.0);
        let mut next_theirs = || theirs.next().transpose();
        let mut t = next_theirs()?;
        let mut learnt = 0;
        for kv in source.index().scan(Space::Layers, &id.0) {
            let (k, v) = kv?;
            while t.as_ref().is_some_and(|(tk, _)| tk[..] < k[..]) {
                t = next_theirs()?;
            }
            let Some((tk, tv)) = &t else { break };
            if tk[..] != k[..] {
                continue;
            }
            let (a, b) = (Entry::decode(&v)?, Entry::decode(tv)?);
            if !alike(&a, &b) {
                continue;
            }
            for (x, y) in a.chunks.iter().zip(&b.chunks) {
                self.known.entry(x.id).or_insert_with(|| {
                    learnt += 1;
                    Known {
                        dst: y.id,
                        settled: false,
                    }
                });
            }
        }
        Ok(learnt)
    }
}

/// Whether two copies of an entry are the same file, chunk for chunk.
fn alike(a: &Entry, b: &Entry) -> bool {
    a.kind == Kind::File
        && b.kind == Kind::File
        && (a.size, a.mtime_ns, a.ctime_ns, a.ino) == (b.size, b.mtime_ns, b.ctime_ns, b.ino)
        && a.chunks.len() == b.chunks.len()
        && a.chunks
            .iter()
            .zip(&b.chunks)
            .all(|(x, y)| (x.offset, x.len) == (y.offset, y.len))
}
