//! One snapshot written into the target under its own id, in backup's commit order
//! (docs/FORMAT.md, "Commit order"): its chunks into packs (finished, fsynced, indexed), its layer
//! entries and `layerdirs` into the index (invisible: no record points at them yet), its layer
//! blobs and snapshot blob into a finished pack (as `forget` writes a rewritten layer, so that
//! `repair` rebuilds it from the packs), everything read back ([`super::verify::records`]),
//! and only then the snapshot record, the commit point, and a flush. A copy killed before that
//! leaves layer entries no record points at (a leftover: `check` exit 3, removed by `prune` or
//! by the next copy of that snapshot) and indexed chunks the next copy finds present.
//!
//! The layer is the source's own, entry for entry, with chunk ids translated; a snapshot that
//! must be copied as a full (its ancestors are forgotten in the target) gets its whole view.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::chunks::{Chunks, Out};
use super::plan::Planned;
use super::verify::{self, Verified};
use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::forget::{crash_point, delete_layer, write_layer_blobs};
use crate::id::SnapshotId;
use crate::layers::View;
use crate::progress::ProgressHandle;
use crate::repo::pack::RecordType;
use crate::repo::store::{Batch, Space};
use crate::repo::{keys, space, Repo};
use crate::snapshot::{BackupKind, Snapshot};

/// Layer entries gathered before they go to the index in sorted batches.
const FLUSH_ENTRIES: usize = 4096;

/// What writing one snapshot did.
pub(super) struct Copied {
    /// Its record in the target.
    pub record: Snapshot,
    /// Layer entries written.
    pub entries: u64,
    /// Bytes added to the target's packs.
    pub stored_bytes: u64,
    /// What was read back before the commit.
    pub verified: Verified,
}

/// Copies `p` from `source` (the plan's copy of the source index) into `target`, where its view
/// is `depth` layers deep; with `dry_run`, only resolves its chunks (counting what would be
/// sent) and writes nothing.
pub(super) fn copy(
    chunks: &mut Chunks,
    source: &Arc<Repo>,
    target: &Arc<Repo>,
    p: &Planned,
    depth: u32,
    dry_run: bool,
    progress: &ProgressHandle,
) -> Result<Copied> {
    let id = p.snapshot.id;
    if dry_run {
        let mut entries = 0;
        each_entry(source, p, &mut |_, _, _, mut e| {
            translate(chunks, &mut e, None)?;
            entries += 1;
            Ok(())
        })
        .map_err(|e| context(&id, e))?;
        return Ok(Copied {
            record: record(p, Vec::new(), depth),
            entries,
            stored_bytes: 0,
            verified: Verified::default(),
        });
    }
    // Entries an interrupted copy of this snapshot left (no record points at them).
    delete_layer(target, &id)?;
    let r = write(chunks, source, target, p, depth, progress);
    if r.is_err() {
        // Invisible without a record; best effort, else a leftover for `prune`.
        if let Err(e) = delete_layer(target, &id) {
            log::info!("Left the layer entries of the failed copy for prune: {e}");
        }
        target.clear_layer_caches();
    }
    r.map_err(|e| context(&id, e))
}

/// Names the snapshot in an error that does not already.
fn context(id: &SnapshotId, e: Error) -> Error {
    match e {
        e @ Error::Copy { .. } => e,
        e => Error::Copy {
            snapshot: id.to_string(),
            detail: e.to_string(),
        },
    }
}

fn write(
    chunks: &mut Chunks,
    source: &Arc<Repo>,
    target: &Arc<Repo>,
    p: &Planned,
    depth: u32,
    progress: &ProgressHandle,
) -> Result<Copied> {
    let id = p.snapshot.id;
    let mut out = Out::new(target);
    let mut pending = Vec::new();
    let mut entries = 0;
    each_entry(source, p, &mut |dir, name, raw, mut e| {
        let changed = translate(chunks, &mut e, Some(&mut out))?;
        let value = match raw {
            Some(raw) if !changed => raw.to_vec(),
            _ => e.encode(),
        };
        pending.push((keys::entry_key(&id, dir, name), value));
        entries += 1;
        if pending.len() >= FLUSH_ENTRIES {
            target.insert_layer_entries(&mut pending)?;
        }
        Ok(())
    })?;
    target.insert_layer_entries(&mut pending)?;
    if !p.as_full && !p.snapshot.ends_chain() {
        copy_layer_dirs(source, target, &id)?;
    }
    target.clear_layer_caches();
    crash_point("copy-after-layer");
    let blobs = write_layer_blobs(target, &mut out.writer, &id, &BTreeSet::new())?;
    let record = record(p, blobs, depth);
    out.writer
        .add_blob(RecordType::Snapshot, &record.encode())?;
    let ws = out.writer.finish()?;
    let verified = verify::records(target, &out.written, &record, entries, progress)?;
    crash_point("copy-before-commit");
    target.insert_snapshot_record(&record)?;
    target.flush()?;
    log::info!("Copied snapshot {id} ({entries} entries in layer)");
    Ok(Copied {
        record,
        entries,
        stored_bytes: ws.stored_bytes,
        verified,
    })
}

/// The record of `p` in the target: the source's, with its new layer blobs and its depth there;
/// a full when copied as one.
fn record(p: &Planned, layer_blobs: Vec<crate::id::ChunkId>, depth: u32) -> Snapshot {
    let mut r = Snapshot {
        layer_blobs,
        depth,
        ..p.snapshot.clone()
    };
    if p.as_full {
        r.kind = BackupKind::Full;
        r.parent = None;
        r.depth = 1;
    }
    r
}

/// Translates the chunk ids of `e` to the target's, sending what the target lacks to `out`.
/// Returns whether an id changed.
fn translate(chunks: &mut Chunks, e: &mut Entry, mut out: Option<&mut Out>) -> Result<bool> {
    let mut changed = false;
    for c in e.chunks.iter_mut() {
        let dst = chunks.resolve(c.id, c.len, out.as_deref_mut())?;
        changed |= dst != c.id;
        c.id = dst;
    }
    Ok(changed)
}

/// Receives the entries of a layer: (dir, name, the stored value when it is the source's own,
/// the entry).
type EntrySink<'a> = dyn FnMut(&[u8], &[u8], Option<&[u8]>, Entry) -> Result<()> + 'a;

/// Calls `f` with each entry to write for `p`, as (dir, name, stored value when it is the
/// source's own, entry): the source's layer in key order, or with `as_full` the whole view.
fn each_entry(source: &Arc<Repo>, p: &Planned, f: &mut EntrySink) -> Result<()> {
    let id = p.snapshot.id;
    if p.as_full {
        let view = View::open(source, &id)?;
        f(b"", b"", None, view.root()?)?;
        for kv in view.walk(b"")? {
            let (path, e) = kv?;
            let (dir, name) = match path.iter().rposition(|&b| b == b'/') {
                Some(i) => (&path[..i], &path[i + 1..]),
                None => (&b""[..], &path[..]),
            };
            f(dir, name, None, e)?;
        }
        return Ok(());
    }
    for kv in source.index().scan(Space::Layers, &id.0) {
        let (k, v) = kv?;
        let (dir, name) = keys::split_entry_key(&k[16..])
            .ok_or_else(|| Error::CorruptMetadata(format!("malformed layer key of {id}")))?;
        f(dir, name, Some(&v), Entry::decode(&v)?)?;
    }
    Ok(())
}

/// Copies the `layerdirs` of layer `id` as the source holds them.
fn copy_layer_dirs(source: &Repo, target: &Repo, id: &SnapshotId) -> Result<()> {
    let mut batch = Batch::default();
    let apply = |batch: Batch| -> Result<()> {
        target.take_space(
            "writing the index",
            space::index_cost(batch.len(), batch.bytes()),
        )?;
        target.index().apply(batch)
    };
    for kv in source.index().scan(Space::LayerDirs, &id.0) {
        let (k, v) = kv?;
        batch.insert(Space::LayerDirs, &k, &v);
        if batch.len() >= 512 {
            apply(std::mem::take(&mut batch))?;
        }
    }
    apply(batch)
}
