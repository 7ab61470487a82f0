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

/// Read-ahead window: four maximum-size chunks, so every cut is decided with full lookahead.
const WINDOW: usize = 4 * MAX_SIZE as usize;

/// A reusable chunker. One per thread: its window buffer is allocated once, not per file, which
/// matters when a backup has 100k small files.
pub struct Chunker {
    buf: Vec<u8>,
}

impl Default for Chunker {
    fn default() -> Self {
        Chunker::new()
    }
}

impl Chunker {
    /// A chunker with its window allocated.
    pub fn new() -> Chunker {
        Chunker {
            buf: vec![0u8; WINDOW],
        }
    }

    /// Splits everything `reader` yields into content-defined chunks and calls `f(offset, bytes)`
    /// for each, in order. A cut is only taken once `MAX_SIZE` bytes past the chunk start are
    /// buffered (or the stream ended), so boundaries do not depend on how reads are split.
    pub fn for_each<R, F>(&mut self, mut reader: R, mut f: F) -> crate::Result<(), ChunkError>
    where
        R: Read,
        F: FnMut(u64, &[u8]) -> crate::Result<()>,
    {
        let (mut start, mut len, mut base, mut eof) = (0usize, 0usize, 0u64, false);
        loop {
            while !eof && len < WINDOW {
                match reader.read(&mut self.buf[len..]) {
                    Ok(0) => eof = true,
                    Ok(n) => len += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(ChunkError::Read(e)),
                }
            }
            if start == len {
                return Ok(());
            }
            let window = &self.buf[start..len];
            let mut consumed = 0;
            for c in fastcdc::v2020::FastCDC::new(window, MIN_SIZE, AVG_SIZE, MAX_SIZE) {
                if !eof && c.offset + MAX_SIZE as usize > window.len() {
                    break;
                }
                f(
                    base + (start + c.offset) as u64,
                    &window[c.offset..c.offset + c.length],
                )
                .map_err(ChunkError::Sink)?;
                consumed = c.offset + c.length;
            }
            start += consumed;
            if eof && start == len {
                return Ok(());
            }
            self.buf.copy_within(start..len, 0);
            base += start as u64;
            len -= start;
            start = 0;
        }
    }
}

/// Why chunking stopped: the source failed, or the chunk consumer did.
#[derive(Debug)]
pub enum ChunkError {
    /// Reading the source failed.
    Read(std::io::Error),
    /// The callback failed.
    Sink(crate::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::pseudo_random;

    fn chunk_all(data: &[u8]) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        Chunker::new()
            .for_each(data, |off, c| {
                out.push((off, c.to_vec()));
                Ok(())
            })
            .unwrap();
        out
    }

    /// A reader that returns at most 1000 bytes per call.
    struct Trickle<'a>(&'a [u8]);
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1000).min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }

    #[test]
    fn covers_input_and_respects_bounds() {
        let data = pseudo_random(13 << 20, 1);
        let cs = chunk_all(&data);
        let mut pos = 0u64;
        for (i, (off, c)) in cs.iter().enumerate() {
            assert_eq!(*off, pos);
            assert!(c.len() <= MAX_SIZE as usize);
            if i + 1 < cs.len() {
                assert!(c.len() >= MIN_SIZE as usize);
            }
            pos += c.len() as u64;
        }
        assert_eq!(pos, data.len() as u64);
        // Same cuts as chunking the whole buffer at once, however the reads are split.
        let whole: Vec<usize> = fastcdc::v2020::FastCDC::new(&data, MIN_SIZE, AVG_SIZE, MAX_SIZE)
            .map(|c| c.offset)
            .collect();
        let mut trickled = Vec::new();
        Chunker::new()
            .for_each(Trickle(&data), |off, _| {
                trickled.push(off as usize);
                Ok(())
            })
            .unwrap();
        assert_eq!(trickled, whole);
        assert_eq!(cs.iter().map(|c| c.0 as usize).collect::<Vec<_>>(), whole);
    }

    #[test]
    fn small_and_empty_inputs() {
        assert!(chunk_all(b"").is_empty());
        assert_eq!(chunk_all(b"tiny"), vec![(0, b"tiny".to_vec())]);
    }

    #[test]
    fn insertion_shifts_few_chunks() {
        let data = pseudo_random(8 << 20, 2);
        let mut changed = data.clone();
        changed.splice(4 << 20..4 << 20, b"inserted bytes".iter().copied());
        let ids = |d: &[u8]| -> std::collections::HashSet<crate::id::ChunkId> {
            chunk_all(d)
                .iter()
                .map(|(_, c)| crate::id::ChunkId::of(c))
                .collect()
        };
        let (a, b) = (ids(&data), ids(&changed));
        let new = b.difference(&a).count();
        assert!(new <= 3, "{new} new chunks after a 14-byte insertion");
    }
}
