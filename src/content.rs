//! Reconstructing file content from an entry's chunk list: verified chunks, zeros for holes.
//! Shared by `cat`, restore and the mount.

use std::io::Write;

use crate::entry::Entry;
use crate::error::Result;
use crate::repo::Repo;

/// Writes the whole content of `entry` to `out`, chunk by chunk (memory: one chunk).
/// Errors from `out` are returned as `Err(Ok(io_error))` so callers can treat a closed pipe as
/// success; repository errors as `Err(Err(error))`.
pub fn write_all_to(
    repo: &Repo,
    entry: &Entry,
    out: &mut dyn Write,
) -> std::result::Result<(), std::result::Result<std::io::Error, crate::Error>> {
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
            write_zeros(out, c.offset - pos).map_err(Ok)?;
        }
        let data = repo.read_chunk(&c.id).map_err(Err)?;
        out.write_all(&data).map_err(Ok)?;
        pos = c.offset + data.len() as u64;
    }
    if entry.size > pos {
        write_zeros(out, entry.size - pos).map_err(Ok)?;
    }
    out.flush().map_err(Ok)
}

/// Reads up to `len` bytes at `offset` into a new buffer, using `get` to fetch (possibly cached)
/// verified chunks. Binary search finds the first chunk; holes are zeros.
pub fn read_range<F>(entry: &Entry, offset: u64, len: usize, mut get: F) -> Result<Vec<u8>>
where
    F: FnMut(&crate::entry::ChunkRef) -> Result<std::sync::Arc<Vec<u8>>>,
{
    if offset >= entry.size || len == 0 {
        return Ok(Vec::new());
    }
    let end = entry.size.min(offset + len as u64);
    let mut buf = vec![0u8; (end - offset) as usize];
    let mut i = entry.chunk_at(offset);
    while let Some(c) = entry.chunks.get(i) {
        if c.offset >= end {
            break;
        }
        let data = get(c)?;
        let from = offset.max(c.offset);
        let to = end.min(c.offset + data.len() as u64);
        if from < to {
            buf[(from - offset) as usize..(to - offset) as usize]
                .copy_from_slice(&data[(from - c.offset) as usize..(to - c.offset) as usize]);
        }
        i += 1;
    }
    Ok(buf)
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
        let get = |c: &ChunkRef| Ok(store[&c.id].clone());
        let all = read_range(&e, 0, 100, get).unwrap();
        let mut want = b"abcdefghij".to_vec();
        want.extend([0u8; 10]);
        want.extend(b"KLMNO");
        want.extend([0u8; 5]);
        assert_eq!(all, want);
        assert_eq!(read_range(&e, 8, 4, get).unwrap(), b"ij\0\0");
        assert_eq!(read_range(&e, 22, 2, get).unwrap(), b"MN");
        assert_eq!(read_range(&e, 27, 10, get).unwrap(), vec![0u8; 3]);
        assert!(read_range(&e, 30, 10, get).unwrap().is_empty());
    }
}
