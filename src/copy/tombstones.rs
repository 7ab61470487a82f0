//! The snapshots a repository once held and forgot: the ids its forget tombstones name
//! (docs/FORMAT.md, "Pack files"). `repair` never restores a snapshot a tombstone names, whatever
//! was written after it, so `copy` must not bring such a snapshot back into the target: it would
//! be listed until the next `repair` dropped it. Skipping it is also what a target with its own
//! retention wants: what it forgot stays forgotten.
//!
//! Tombstones are pack records, found only by reading every pack's record headers (as `check`,
//! `prune` and `repair` do); the payloads of the tombstones alone are then read and verified.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::SnapshotId;
use crate::repo::keys::Location;
use crate::repo::pack::RecordType;
use crate::repo::scan::scan_pack;
use crate::repo::Repo;

/// Every snapshot id a forget tombstone of `repo` names. A pack whose headers cannot be read, or
/// a tombstone that does not verify, is an error: what it names is unknown.
pub(super) fn forgotten(repo: &Repo) -> Result<HashSet<SnapshotId>> {
    let mut out = HashSet::new();
    for (pack, size) in repo.packs().list()? {
        let scan = scan_pack(repo.packs().as_ref(), pack, size)?;
        for r in scan.records {
            if r.header.rtype != RecordType::Forget {
                continue;
            }
            let loc = Location {
                pack,
                offset: r.offset,
                stored_len: r.header.stored_len,
                raw_len: r.header.raw_len,
                compression: r.header.compression,
            };
            let plain = repo.read_record_at(&r.header.id, &loc)?;
            out.extend(
                plain
                    .chunks_exact(16)
                    .filter_map(|c| c.try_into().ok().map(SnapshotId)),
            );
        }
    }
    Ok(out)
}
