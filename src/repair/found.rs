//! Phases 1 and 2 of `repair`: what the packs hold. Every pack is scanned for record headers
//! ([`crate::repo::scan`]); metadata payloads are read and verified before they are trusted; with
//! `read_data`, chunk payloads are verified too, and a chunk that fails is replaced by another
//! copy that verifies, or dropped.

use std::collections::hash_map::Entry as Slot;
use std::collections::{HashMap, HashSet};

use super::{CorruptRecord, RepairOptions, RepairReport};
use crate::check;
use crate::compress::Dictionary;
use crate::error::{Error, Result};
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::repo::crypt::Crypt;
use crate::repo::keys::Location;
use crate::repo::pack::{self, PackBackend, RecordType, RECORD_HEADER_LEN};
use crate::repo::scan::{self, PackScan};
use crate::snapshot::Snapshot;

/// Everything found in the packs.
#[derive(Default)]
pub(super) struct Found {
    /// id → location of the first valid copy; further copies in `dups`.
    pub chunks: HashMap<ChunkId, Location>,
    dups: HashMap<ChunkId, Vec<Location>>,
    types: HashMap<ChunkId, RecordType>,
    /// Authoritative snapshot blob per id: ((pack, offset), record).
    pub snapshots: HashMap<SnapshotId, ((PackId, u64), Snapshot)>,
    /// Snapshots a forget tombstone names.
    pub tombstones: HashSet<SnapshotId>,
    /// The first dictionary record's payload.
    pub dictionary: Option<Vec<u8>>,
    /// The highest pack number.
    pub max_pack: u64,
}

/// Reads and verifies one record with `packs` (the dictionary only matters for chunks).
pub(super) fn read_record(
    packs: &dyn PackBackend,
    crypt: Option<&Crypt>,
    id: &ChunkId,
    loc: &Location,
    dict: Option<&Dictionary>,
) -> Result<Vec<u8>> {
    let bytes = packs
        .read_at(
            loc.pack,
            loc.offset,
            RECORD_HEADER_LEN + loc.stored_len as usize,
        )
        .map_err(|e| Error::CorruptChunk {
            id: *id,
            pack: loc.pack,
            detail: e.to_string(),
        })?;
    Ok(pack::open_record(loc.pack, &bytes, id, dict, crypt)?.1)
}

/// Phase 1: scans every pack's record headers, in pack order, and reads the metadata records.
pub(super) fn scan_packs(
    packs: &dyn PackBackend,
    crypt: Option<&Crypt>,
    opts: &RepairOptions,
    report: &mut RepairReport,
) -> Result<Found> {
    let list = packs.list()?;
    report.packs = list.len() as u64;
    report.pack_bytes = list.iter().map(|(_, s)| s).sum();
    let total = report.pack_bytes + if opts.read_data { report.pack_bytes } else { 0 };
    opts.progress.0.verify_total(total);
    let mut found = Found::default();
    for &(pid, size) in &list {
        found.max_pack = found.max_pack.max(pid.0);
        let s = scan::scan_pack(packs, pid, size)?;
        found.add_pack(packs, crypt, pid, s, report);
        opts.progress.0.data_checked(size);
    }
    Ok(found)
}

impl Found {
    /// Takes in what one pack's scan found: its damage into `report`, its records here.
    fn add_pack(
        &mut self,
        packs: &dyn PackBackend,
        crypt: Option<&Crypt>,
        pid: PackId,
        s: PackScan,
        report: &mut RepairReport,
    ) {
        if s.bad_pack_header {
            report.bad_pack_headers.push(pid);
        }
        for t in s.torn {
            log::warn!(
                "Pack {pid}: {} damaged bytes at offset {} ({}){}",
                t.len,
                t.offset,
                t.reason,
                if t.resynced {
                    ""
                } else {
                    ", rest of the pack dropped"
                }
            );
            report.torn.push((pid, t));
        }
        report.records += s.records.len() as u64;
        for r in s.records {
            let h = r.header;
            let loc = Location {
                pack: pid,
                offset: r.offset,
                stored_len: h.stored_len,
                raw_len: h.raw_len,
                compression: h.compression,
            };
            // Metadata is needed now, and must verify to be trusted (and indexed).
            if h.rtype != RecordType::Chunk {
                match read_record(packs, crypt, &h.id, &loc, None) {
                    Ok(plain) => self.add_metadata(h.id, h.rtype, &loc, plain),
                    Err(e) => {
                        report.corrupt.push(CorruptRecord {
                            id: h.id,
                            pack: pid,
                            detail: e.to_string(),
                        });
                        continue;
                    }
                }
            }
            match self.chunks.entry(h.id) {
                Slot::Occupied(_) => {
                    report.duplicates += 1;
                    self.dups.entry(h.id).or_default().push(loc);
                }
                Slot::Vacant(v) => {
                    v.insert(loc);
                    self.types.insert(h.id, h.rtype);
                }
            }
        }
    }

    /// Takes in one verified metadata record: for one snapshot id the blob written last (highest
    /// pack, then offset) wins; the first dictionary record is kept.
    fn add_metadata(&mut self, id: ChunkId, rtype: RecordType, loc: &Location, plain: Vec<u8>) {
        match rtype {
            RecordType::Snapshot => match Snapshot::decode(&plain) {
                Ok(snap) => {
                    let at = (loc.pack, loc.offset);
                    let newer = self
                        .snapshots
                        .get(&snap.id)
                        .is_none_or(|(old, _)| *old < at);
                    if newer {
                        self.snapshots.insert(snap.id, (at, snap));
                    }
                }
                Err(e) => log::warn!("Snapshot blob {id} in pack {}: {e}", loc.pack),
            },
            RecordType::Forget => self.tombstones.extend(
                plain
                    .chunks_exact(16)
                    .filter_map(|c| c.try_into().ok().map(SnapshotId)),
            ),
            RecordType::Dictionary if self.dictionary.is_none() => {
                self.dictionary = Some(plain);
            }
            _ => {}
        }
    }

    /// Phase 2 (`read_data`): verifies every chunk payload, in pack order; a chunk that fails is
    /// reported, and replaced by a copy that verifies, or dropped.
    pub(super) fn verify_chunks(
        &mut self,
        packs: &dyn PackBackend,
        crypt: Option<&Crypt>,
        dict: Option<&Dictionary>,
        opts: &RepairOptions,
        report: &mut RepairReport,
    ) {
        let mut todo: Vec<(ChunkId, Location)> = self
            .chunks
            .iter()
            .filter(|(id, _)| self.types.get(id) == Some(&RecordType::Chunk))
            .map(|(id, l)| (*id, *l))
            .collect();
        todo.sort_by_key(|(_, l)| (l.pack, l.offset));
        let failed = check::verify_with(
            &todo,
            |id, loc| read_record(packs, crypt, id, loc, dict).map(|_| ()),
            opts.threads,
            &opts.progress,
        );
        for (id, loc, detail) in failed {
            report.corrupt.push(CorruptRecord {
                id,
                pack: loc.pack,
                detail,
            });
            let alt = self.dups.get(&id).and_then(|alts| {
                alts.iter()
                    .find(|l| read_record(packs, crypt, &id, l, dict).is_ok())
                    .copied()
            });
            match alt {
                Some(l) => {
                    self.chunks.insert(id, l);
                }
                None => {
                    self.chunks.remove(&id);
                }
            }
        }
    }
}
