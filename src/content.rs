//! Reconstructing file content from an entry's chunk list: verified chunks, zeros for holes.
//! Shared by `cat`, restore and the mount.

use std::io::Write;

use crate::entry::Entry;
use crate::error::Result;
use crate::repo::Repo;

/// Why writing a file's content out stopped.
#[derive(Debug)]
pub enum WriteError {
    /// The destination failed (e.g. a closed pipe, which `cat` treats as success).
    Output(std::io::Error),
    /// The repository failed (a missing or corrupt chunk).
    Repo(crate::Error),
}

/// Writes the whole content of `entry` to `out`, chunk by chunk (memory: one chunk), every chunk
/// verified; holes are written as zeros.
pub fn write_all_to(repo: &Repo, entry: &Entry, out: &mut dyn Write) -> Result<(), WriteError> {
    write_all_with(entry, out, &mut |id| repo.read_chunk(id))
}

/// [`write_all_to`] with chunks from `read`, which must return verified plaintext: the sled-free
/// `cat` path reads chunks at the locations its lookup files recorded.
pub fn write_all_with(
    entry: &Entry,
    out: &mut dyn Write,
    read: &mut dyn FnMut(&crate::id::ChunkId) -> Result<Vec<u8>>,
) -> Result<(), WriteError> {
    let zeros = [0u8; 64 * 1024];
    let write_zeros = |out: &mut dyn Write, mut n: u64| -> std::io::Result<()> {
        while n > 0 {
            let k = n.min(zeros.len() as u64) as usize;
            out.write_all(&zeros[..k])?;
            n -= k as u64;
        }
        Ok(())
    };
    let mut pos = 0u64;
    for c in &entry.chunks {
        if c.offset > pos {
            write_zeros(out, c.offset - pos).map_err(WriteError::Output)?;
        }
        let data = read(&c.id).map_err(WriteError::Repo)?;
        out.write_all(&data).map_err(WriteError::Output)?;
        pos = c.offset + data.len() as u64;
    }
    if entry.size > pos {
        write_zeros(out, entry.size - pos).map_err(WriteError::Output)?;
    }
    out.flush().map_err(WriteError::Output)
}

/// How [`read_range_into`]'s caller supplied one chunk.
pub enum Fetched {
    /// The verified plaintext, shared (e.g. from a cache); the needed part is copied.
    Shared(std::sync::Arc<Vec<u8>>),
    /// The verified plaintext was appended to the buffer offered (the whole chunk, no copy).
    Appended,
}

/// Assembles up to `len` bytes at `offset` (clipped to the file's size) into `buf`, which is
/// cleared first and may be reused across calls. `fetch` supplies verified chunks: it is offered
/// the buffer when the chunk lies wholly inside the range (it may then append the chunk to it
/// directly), and otherwise must return it shared. Binary search finds the first chunk; holes
/// are zeros. Returns the number of bytes assembled.
pub fn read_range_into<F>(
    entry: &Entry,
    offset: u64,
    len: usize,
    buf: &mut Vec<u8>,
    mut fetch: F,
) -> Result<u64>
where
    F: FnMut(&crate::entry::ChunkRef, Option<&mut Vec<u8>>) -> Result<Fetched>,
{
    buf.clear();
    if offset >= entry.size || len == 0 {
        return Ok(0);
    }
    let end = entry.size.min(offset + len as u64);
    let n = end - offset;
    buf.reserve(n as usize);
    let mut pos = offset;
    for c in &entry.chunks[entry.chunk_at(offset)..] {
        if c.offset >= end {
            break;
        }
        let c_end = c.offset + c.len as u64;
        // `pos` only grows, so overlapping chunk lists (never written) cannot underflow.
        let whole = pos <= c.offset && c_end <= end;
        if whole {
            buf.resize((c.offset - offset) as usize, 0);
        }
        match fetch(c, whole.then_some(&mut *buf))? {
            Fetched::Appended => {
                if !whole || buf.len() as u64 != c_end - offset {
                    return Err(crate::Error::CorruptMetadata(format!(
                        "chunk {} is not the {} bytes its file lists",
                        c.id, c.len
                    )));
                }
                pos = c_end;
            }
            Fetched::Shared(data) => {
                let from = pos.max(c.offset);
                let to = end.min(c.offset + data.len() as u64);
                if from < to {
                    buf.resize((from - offset) as usize, 0);
                    buf.extend_from_slice(
                        &data[(from - c.offset) as usize..(to - c.offset) as usize],
                    );
                    pos = to;
                }
            }
        }
    }
    buf.resize(n as usize, 0);
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::{ChunkRef, Kind};
    use crate::id::ChunkId;
    use std::collections::HashMap;
    use std::sync::Arc;

    #[test]
    fn read_range_with_holes() {
        let a = b"abcdefghij".to_vec();
        let b = b"KLMNO".to_vec();
        let (ia, ib) = (ChunkId::of(&a), ChunkId::of(&b));
        let store: HashMap<ChunkId, Arc<Vec<u8>>> =
            [(ia, Arc::new(a)), (ib, Arc::new(b))].into_iter().collect();
        let mut e = Entry::whiteout();
        e.kind = Kind::File;
        e.size = 30;
        e.chunks = vec![
            ChunkRef {
                id: ia,
                offset: 0,
                len: 10,
            },
            ChunkRef {
                id: ib,
                offset: 20,
                len: 5,
            },
        ];
        let read = |off: u64, len: usize| {
            let mut buf = vec![7u8; 3]; // stale contents must not leak into the result
            let n = read_range_into(&e, off, len, &mut buf, |c: &ChunkRef, direct| {
                // Append directly when offered (every other chunk), share otherwise.
                match direct {
                    Some(b) if c.offset == 0 => {
                        b.extend_from_slice(&store[&c.id]);
                        Ok(Fetched::Appended)
                    }
                    _ => Ok(Fetched::Shared(store[&c.id].clone())),
                }
            })
            .unwrap();
            assert_eq!(n, buf.len() as u64);
            buf
        };
        let all = read(0, 100);
        let mut want = b"abcdefghij".to_vec();
        want.extend([0u8; 10]);
        want.extend(b"KLMNO");
        want.extend([0u8; 5]);
        assert_eq!(all, want);
        assert_eq!(read(8, 4), b"ij\0\0");
        assert_eq!(read(22, 2), b"MN");
        assert_eq!(read(27, 10), vec![0u8; 3]);
        assert!(read(30, 10).is_empty());
    }
}
