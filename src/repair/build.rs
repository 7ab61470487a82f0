//! Phase 3 of `repair`: writing the new index. The settings and the chunk index come from the
//! packs; each snapshot's record and layer come from the packs, merged with what the old index
//! holds (the rules are in the module documentation of [`super`]); each snapshot is written as a
//! backup commits it, its record last.

use super::found::{read_record, Found};
use super::install::WriteBack;
use super::old::OldIndex;
use super::{DroppedSnapshot, RepairReport};
use crate::check;
use crate::compress::Dictionary;
use crate::entry::Entry;
use crate::error::Result;
use crate::id::{ChunkId, SnapshotId};
use crate::layer_blob;
use crate::repo::crypt::Crypt;
use crate::repo::keys;
use crate::repo::pack::PackBackend;
use crate::repo::store::{Batch, MetaStore, Space};
use crate::snapshot::Snapshot;

/// A layer's entries as (key without the snapshot id, entry) pairs.
pub(super) type LayerEntries = Vec<(Vec<u8>, Vec<u8>)>;

/// Writes per batch: each covers a narrow key range, so sled rewrites few pages per batch.
const BATCH: usize = 512;

/// What the new index is built from.
pub(super) struct Sources<'a> {
    /// The pack files.
    pub packs: &'a dyn PackBackend,
    /// What scanning them found.
    pub found: &'a Found,
    /// What the old index still holds.
    pub old: &'a OldIndex,
    /// The dictionary found in the packs.
    pub dict: Option<&'a Dictionary>,
    /// The keys of an encrypted repository.
    pub crypt: Option<&'a Crypt>,
    /// Snapshots running mounts lease (`crate::lease`): a forgotten one keeps its layer.
    pub leased: &'a std::collections::HashSet<SnapshotId>,
}

/// One snapshot as rebuilt.
struct Restored {
    snap: Snapshot,
    entries: LayerEntries,
    dirs: layer_blob::Dirs,
    /// Why it must be written back into the packs (its record or layer came from the old index).
    kept: Option<String>,
    /// Its layer came from the old index: new layer blobs must be written.
    layer_from_old: bool,
}

/// Writes meta, chunks, snapshots, layers and layerdirs into `store`, merging what the packs hold
/// with what the old index holds. Returns the snapshots whose records must be written back into
/// the packs.
pub(super) fn build(
    store: &dyn MetaStore,
    src: &Sources,
    compression: i32,
    report: &mut RepairReport,
) -> Result<Vec<WriteBack>> {
    write_meta(store, src, compression, report)?;
    write_chunks(store, src.found, report)?;
    let mut pending = Vec::new();
    for id in listed(src) {
        if src.found.tombstones.contains(&id) {
            if src.found.snapshots.contains_key(&id) {
                report.tombstoned += 1;
            }
            continue;
        }
        let Some(r) = restore(src, id, report) else {
            continue;
        };
        write_snapshot(store, &r)?;
        report.snapshots.push(id);
        if let Some(reason) = r.kept {
            log::warn!("Snapshot {id}: {reason}; writing it back into the packs");
            pending.push(WriteBack {
                id,
                layer: r.layer_from_old,
            });
            report.rewritten.push(DroppedSnapshot { id, reason });
        }
    }
    report_undecodable(src, report);
    keep_leased(store, src, report)?;
    Ok(pending)
}

/// The layers of forgotten snapshots that running mounts still read (they lease them): written
/// without a record, as `forget` leaves them, so that `prune` keeps their chunks until the lease
/// ends. From the packs (the snapshot's last blob names its layer blobs) or the old index.
fn keep_leased(store: &dyn MetaStore, src: &Sources, report: &mut RepairReport) -> Result<()> {
    let restored: std::collections::HashSet<&SnapshotId> = report.snapshots.iter().collect();
    let mut ids: Vec<&SnapshotId> = src
        .leased
        .iter()
        .filter(|id| !restored.contains(id))
        .collect();
    ids.sort();
    for id in ids {
        let from_packs = src
            .found
            .snapshots
            .get(id)
            .and_then(|(_, s)| layer_from_blobs(src, &s.layer_blobs).ok());
        let Some(entries) = from_packs.or_else(|| src.old.layer(id)) else {
            log::warn!(
                "Snapshot {id} is forgotten but a mount still reads it, and its layer is in \
                 neither the packs nor the old index: a prune may take what that mount reads"
            );
            continue;
        };
        let dirs = derive_dirs(&entries).unwrap_or_default();
        write_layer(store, id, &entries, &dirs, true)?;
        report.leased_layers.push(*id);
    }
    Ok(())
}

/// The repository settings: format, compression level, the dictionary.
fn write_meta(
    store: &dyn MetaStore,
    src: &Sources,
    compression: i32,
    report: &mut RepairReport,
) -> Result<()> {
    let mut meta = Batch::default();
    let format = crate::repo::format_version(src.crypt.is_some());
    meta.insert(Space::Meta, keys::META_FORMAT, format.to_be_bytes());
    meta.insert(
        Space::Meta,
        keys::META_COMPRESSION,
        compression.to_be_bytes(),
    );
    if let Some(d) = &src.found.dictionary {
        meta.insert(Space::Meta, keys::META_DICTIONARY, d);
        report.dictionary = true;
    }
    store.apply(meta)
}

/// The chunk index: every record found, in id order.
fn write_chunks(store: &dyn MetaStore, found: &Found, report: &mut RepairReport) -> Result<()> {
    let mut ids: Vec<_> = found.chunks.iter().collect();
    ids.sort_unstable_by_key(|(id, _)| **id);
    for part in ids.chunks(BATCH) {
        let mut batch = Batch::default();
        for (id, loc) in part {
            batch.insert(Space::Chunks, id.0, loc.encode());
        }
        store.apply(batch)?;
    }
    report.index_entries = ids.len() as u64;
    Ok(())
}

/// Every snapshot the packs or the old index describe, oldest first.
fn listed(src: &Sources) -> Vec<SnapshotId> {
    let found = &src.found.snapshots;
    let mut all: Vec<&Snapshot> = found.values().map(|(_, s)| s).collect();
    all.extend(
        src.old
            .snapshots
            .values()
            .filter(|s| !found.contains_key(&s.id)),
    );
    all.sort_by_key(|s| (s.time_ns, s.id));
    all.into_iter().map(|s| s.id).collect()
}

/// Rebuilds snapshot `id`'s record and layer; `None` (reported as dropped) when its layer is
/// truly gone.
fn restore(src: &Sources, id: SnapshotId, report: &mut RepairReport) -> Option<Restored> {
    let from_pack = src.found.snapshots.get(&id).map(|(_, s)| s);
    let from_old = src.old.snapshots.get(&id);
    // The pack's record is authoritative; the old index's carries the final stats, so it is kept
    // when nothing else differs, and it is all there is when the pack lost it.
    let snap = match (from_pack, from_old) {
        (Some(p), Some(o)) if check::record_differences(o, p).is_empty() => o.clone(),
        (Some(p), _) => p.clone(),
        (None, Some(o)) => o.clone(),
        (None, None) => return None,
    };
    let kept = from_pack
        .is_none()
        .then(|| "its snapshot blob is lost from the packs; the old index's record is kept".into());
    let built =
        layer_from_blobs(src, &snap.layer_blobs).and_then(|e| derive_dirs(&e).map(|d| (e, d)));
    let reason = match built {
        Ok((entries, dirs)) => {
            return Some(Restored {
                snap,
                entries,
                dirs,
                kept,
                layer_from_old: false,
            })
        }
        Err(reason) => reason,
    };
    // The old index's layer, with the record it belongs to.
    let fallback = from_old.and_then(|o| {
        let e = src.old.layer(&id)?;
        (!e.is_empty()).then_some(())?;
        let d = derive_dirs(&e).ok()?;
        Some((o, e, d))
    });
    let Some((o, entries, dirs)) = fallback else {
        let reason = if from_old.is_some() {
            format!("{reason}, and the old index does not hold its layer")
        } else {
            reason
        };
        log::error!("Cannot rebuild snapshot {id}: {reason}");
        report.dropped.push(DroppedSnapshot { id, reason });
        return None;
    };
    let kept = format!(
        "{reason}; its layer ({} entries) and record are taken from the old index",
        entries.len()
    );
    Some(Restored {
        snap: o.clone(),
        entries,
        dirs,
        kept: Some(kept),
        layer_from_old: true,
    })
}

/// Reads and parses the layer blobs `ids` from the packs.
fn layer_from_blobs(src: &Sources, ids: &[ChunkId]) -> std::result::Result<LayerEntries, String> {
    let mut entries = Vec::new();
    for b in ids {
        let plain = match src.found.chunks.get(b) {
            None => return Err(format!("its layer blob {b} is missing")),
            Some(loc) => read_record(src.packs, src.crypt, b, loc, src.dict)
                .map_err(|e| format!("its layer blob {b} is damaged: {e}"))?,
        };
        let es = layer_blob::entries(&plain).map_err(|e| format!("its layer blob {b}: {e}"))?;
        entries.extend(es.into_iter().map(|(k, v)| (k.to_vec(), v.to_vec())));
    }
    Ok(entries)
}

/// The `layerdirs` of a layer, derived from its entries exactly as backup fills them.
fn derive_dirs(entries: &LayerEntries) -> std::result::Result<layer_blob::Dirs, String> {
    let mut dirs = layer_blob::Dirs::new();
    for (k, v) in entries {
        let (dir, name) = keys::split_entry_key(k).ok_or("a layer key without separator")?;
        let e = Entry::decode(v).map_err(|e| format!("an entry of its layer: {e}"))?;
        layer_blob::note_dir(&mut dirs, dir, name, &e);
    }
    Ok(dirs)
}

/// Writes one snapshot's layer, its `layerdirs` (unless its layer ends its chain), then its
/// record: the commit point, as in a backup.
fn write_snapshot(store: &dyn MetaStore, r: &Restored) -> Result<()> {
    write_layer(store, &r.snap.id, &r.entries, &r.dirs, !r.snap.ends_chain())?;
    store.insert(Space::Records, &r.snap.id.0, &r.snap.encode())
}

/// Writes a layer's entries and, with `with_dirs`, its `layerdirs`.
fn write_layer(
    store: &dyn MetaStore,
    id: &SnapshotId,
    entries: &LayerEntries,
    dirs: &layer_blob::Dirs,
    with_dirs: bool,
) -> Result<()> {
    let id = *id;
    let mut entries: Vec<&(Vec<u8>, Vec<u8>)> = entries.iter().collect();
    entries.sort_unstable();
    for part in entries.chunks(BATCH) {
        let mut batch = Batch::default();
        for (k, v) in part {
            let mut key = id.0.to_vec();
            key.extend_from_slice(k);
            batch.insert(Space::Layers, key, v);
        }
        store.apply(batch)?;
    }
    if with_dirs {
        let mut batch = Batch::default();
        for (dir, opaque) in dirs {
            batch.insert(
                Space::LayerDirs,
                keys::layerdir_key(&id, dir),
                [*opaque as u8],
            );
        }
        store.apply(batch)?;
    }
    Ok(())
}

/// Records of the old index that do not decode, and that the packs do not describe either: lost.
fn report_undecodable(src: &Sources, report: &mut RepairReport) {
    for id in &src.old.undecodable {
        let known = report.snapshots.contains(id)
            || report.dropped.iter().any(|d| d.id == *id)
            || src.found.tombstones.contains(id);
        if !known {
            log::error!("Cannot rebuild snapshot {id}: no snapshot blob in the packs");
            report.dropped.push(DroppedSnapshot {
                id: *id,
                reason: "its snapshot blob is not in the packs, and its record in the old index does not decode".into(),
            });
        }
    }
}
