//! Content-defined chunking (FastCDC 2020). Cut points depend on content, not offsets, so an insertion
//! in the middle of a file shifts only the chunks around it. Sizes are part of the repository's
//! behaviour (changing them loses dedup against older backups), so they are constants here and
//! documented, with the reasons, in docs/FORMAT.md.

use std::io::Read;

/// No chunk is smaller than this, except the tail of a file.
pub const MIN_SIZE: u32 = 64 * 1024;
/// Target average chunk size.
pub const AVG_SIZE: u32 = 256 * 1024;
/// Hard upper bound; also bounds the memory a chunk needs anywhere in strata.
pub const MAX_SIZE: u32 = 1024 * 1024;

/// One chunk of a stream: where it starts in the stream and its bytes.
pub struct Chunk {
    /// Offset of the first byte, relative to the start of the stream.
    pub offset: u64,
    /// The plaintext.
    pub data: Vec<u8>,
}

/// Splits a reader into content-defined chunks, reading at most `MAX_SIZE` bytes ahead.
pub fn chunks<R: Read>(reader: R) -> impl Iterator<Item = std::io::Result<Chunk>> {
    fastcdc::v2020::StreamCDC::new(reader, MIN_SIZE, AVG_SIZE, MAX_SIZE).map(|r| {
        r.map(|c| Chunk {
            offset: c.offset,
            data: c.data,
        })
        .map_err(|e| match e {
            fastcdc::v2020::Error::IoError(io) => io,
            other => std::io::Error::other(other.to_string()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pseudo_random(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    #[test]
    fn covers_input_and_respects_bounds() {
        let data = pseudo_random(5 << 20, 1);
        let cs: Vec<Chunk> = chunks(&data[..]).map(|c| c.unwrap()).collect();
        let mut pos = 0u64;
        for (i, c) in cs.iter().enumerate() {
            assert_eq!(c.offset, pos);
            assert!(c.data.len() <= MAX_SIZE as usize);
            if i + 1 < cs.len() {
                assert!(c.data.len() >= MIN_SIZE as usize);
            }
            pos += c.data.len() as u64;
        }
        assert_eq!(pos, data.len() as u64);
    }

    #[test]
    fn insertion_shifts_few_chunks() {
        let data = pseudo_random(8 << 20, 2);
        let mut changed = data.clone();
        changed.splice(4 << 20..4 << 20, b"inserted bytes".iter().copied());
        let ids = |d: &[u8]| -> std::collections::HashSet<crate::id::ChunkId> {
            chunks(d)
                .map(|c| crate::id::ChunkId::of(&c.unwrap().data))
                .collect()
        };
        let (a, b) = (ids(&data), ids(&changed));
        let new = b.difference(&a).count();
        assert!(new <= 3, "{new} new chunks after a 14-byte insertion");
    }
}
