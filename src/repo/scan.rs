//! Walking a pack's records from its headers alone, for `repair` (and anything else that must work
//! without the index). Each record header is read and verified (magic, header checksum, payload
//! within the file); payloads are skipped, not read.
//!
//! Damage is never guessed over: a header that fails its checksum, or a record running past the
//! end of the file (a truncated pack), makes the scan search forward for the next `SREC` magic
//! whose header verifies and whose payload fits in the file, and continue there (*resync*). The
//! bytes skipped are reported as a [`TornRegion`]; when no valid header follows, the rest of the
//! pack is reported and dropped. A header is 56 bytes with an 8-byte blake3 checksum, so a false
//! resync inside random data has probability about 2⁻⁶⁴ per candidate.

use crate::error::Result;
use crate::id::PackId;
use crate::repo::pack::{
    verify_pack_header, PackBackend, RecordHeader, PACK_HEADER_LEN, RECORD_HEADER_LEN, RECORD_MAGIC,
};

/// One record found by [`scan_pack`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ScannedRecord {
    /// Offset of the record header in the pack.
    pub offset: u64,
    /// The verified header.
    pub header: RecordHeader,
}

/// Bytes of a pack that hold no valid record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TornRegion {
    /// Where the damage starts.
    pub offset: u64,
    /// How many bytes were skipped.
    pub len: u64,
    /// Whether a valid record followed (false: the rest of the pack was dropped).
    pub resynced: bool,
    /// What was wrong at `offset`.
    pub reason: String,
}

/// What one pack holds.
#[derive(Clone, Debug, Default)]
pub struct PackScan {
    /// Valid records, in file order.
    pub records: Vec<ScannedRecord>,
    /// Damaged stretches, in file order.
    pub torn: Vec<TornRegion>,
    /// The 16-byte pack header is wrong (magic, version or reserved word; records are still
    /// searched for).
    pub bad_pack_header: bool,
}

/// Bytes read per step while searching for the next valid header.
const RESYNC_BLOCK: usize = 1 << 20;

/// Reads the header at `offset` and checks that its record fits in a pack of `size` bytes.
fn header_at(
    packs: &dyn PackBackend,
    pack: PackId,
    offset: u64,
    size: u64,
) -> std::result::Result<RecordHeader, String> {
    if offset + RECORD_HEADER_LEN as u64 > size {
        return Err("record header truncated".into());
    }
    let bytes = packs
        .read_at(pack, offset, RECORD_HEADER_LEN)
        .map_err(|e| e.to_string())?;
    let h = RecordHeader::decode(&bytes)?;
    if offset + (RECORD_HEADER_LEN as u64) + h.stored_len as u64 > size {
        return Err("record payload truncated".into());
    }
    Ok(h)
}

/// Finds the next offset after `from` holding a valid header whose record fits in the pack.
fn resync(packs: &dyn PackBackend, pack: PackId, from: u64, size: u64) -> Result<Option<u64>> {
    let mut start = from;
    while start + RECORD_HEADER_LEN as u64 <= size {
        let len = (size - start).min(RESYNC_BLOCK as u64) as usize;
        let block = packs.read_at(pack, start, len)?;
        let mut i = 0;
        while let Some(p) = block[i..].windows(4).position(|w| w == RECORD_MAGIC) {
            let at = start + (i + p) as u64;
            if header_at(packs, pack, at, size).is_ok() {
                return Ok(Some(at));
            }
            i += p + 1;
        }
        if start + len as u64 >= size {
            break;
        }
        // Overlap by a magic's length so one straddling the block boundary is not missed.
        start += (len - (RECORD_MAGIC.len() - 1)) as u64;
    }
    Ok(None)
}

/// Scans the records of `pack` (`size` bytes long) from their headers.
pub fn scan_pack(packs: &dyn PackBackend, pack: PackId, size: u64) -> Result<PackScan> {
    let mut out = PackScan::default();
    let head = packs.read_at(pack, 0, PACK_HEADER_LEN.min(size) as usize)?;
    if let Err(e) = verify_pack_header(&head) {
        log::warn!("Pack {pack}: {e}");
        out.bad_pack_header = true;
    }
    let mut offset = PACK_HEADER_LEN.min(size);
    while offset < size {
        match header_at(packs, pack, offset, size) {
            Ok(header) => {
                out.records.push(ScannedRecord { offset, header });
                offset += RECORD_HEADER_LEN as u64 + header.stored_len as u64;
            }
            Err(reason) => {
                let next = resync(packs, pack, offset + 1, size)?;
                out.torn.push(TornRegion {
                    offset,
                    len: next.unwrap_or(size) - offset,
                    resynced: next.is_some(),
                    reason,
                });
                match next {
                    Some(n) => offset = n,
                    None => break,
                }
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::ChunkId;
    use crate::repo::pack::{DirBackend, RecordType, PACK_MAGIC};

    fn record(data: &[u8]) -> Vec<u8> {
        let h = RecordHeader {
            rtype: RecordType::Chunk,
            compression: 0,
            raw_len: data.len() as u32,
            stored_len: data.len() as u32,
            id: ChunkId::of(data),
        };
        let mut v = h.encode().to_vec();
        v.extend_from_slice(data);
        v
    }

    fn pack_of(records: &[Vec<u8>]) -> Vec<u8> {
        let mut p = PACK_MAGIC.to_vec();
        p.extend_from_slice(&1u32.to_le_bytes());
        p.extend_from_slice(&[0; 4]);
        for r in records {
            p.extend_from_slice(r);
        }
        p
    }

    fn scan_bytes(bytes: &[u8]) -> PackScan {
        let t = tempfile::tempdir().unwrap();
        let b = DirBackend::open(t.path()).unwrap();
        let mut s = b.create(PackId(1)).unwrap();
        s.write_all(bytes).unwrap();
        s.finish().unwrap();
        scan_pack(&b, PackId(1), bytes.len() as u64).unwrap()
    }

    #[test]
    fn clean_pack_lists_every_record() {
        let recs: Vec<_> = (0..5u8).map(|i| record(&[i; 100])).collect();
        let s = scan_bytes(&pack_of(&recs));
        assert_eq!(s.records.len(), 5);
        assert!(s.torn.is_empty() && !s.bad_pack_header);
        assert_eq!(s.records[1].offset, 16 + 156);
    }

    #[test]
    fn flipped_header_resyncs_to_the_next_record() {
        let recs: Vec<_> = (0..3u8).map(|i| record(&[i; 100])).collect();
        let mut p = pack_of(&recs);
        p[16 + 156 + 10] ^= 1; // second record's header
        let s = scan_bytes(&p);
        assert_eq!(s.records.len(), 2);
        assert_eq!(s.records[1].offset, 16 + 2 * 156);
        assert_eq!(s.torn.len(), 1);
        assert_eq!((s.torn[0].offset, s.torn[0].len), (16 + 156, 156));
        assert!(s.torn[0].resynced);
    }

    #[test]
    fn truncated_pack_drops_the_tail() {
        let recs: Vec<_> = (0..3u8).map(|i| record(&[i; 100])).collect();
        let p = pack_of(&recs);
        let s = scan_bytes(&p[..16 + 156 + 100]);
        assert_eq!(s.records.len(), 1);
        assert_eq!(s.torn.len(), 1);
        assert!(!s.torn[0].resynced);
        assert_eq!(s.torn[0].reason, "record payload truncated");
    }
}
