//! A layer's entries as the index stores them: deleting a layer, dropping some of its keys, and
//! copying it out into layer blobs. Keys here are the stored ones, read and written without
//! interpreting the entries (see [`crate::repo::keys`] for their layout).

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::repo::pack::RecordType;
use crate::repo::store::{Batch, Space};
use crate::repo::writer::PackWriter;
use crate::repo::{keys, space, Repo};

/// Layer blobs are cut at about this size (as backup does).
const LAYER_BLOB_SIZE: usize = 1 << 20;
/// Keys per index batch.
const BATCH: usize = 512;

/// The key of `dir/name` within a layer, without the layer's snapshot id: how layer blobs and
/// the cleanup record name an entry.
pub(super) fn layer_key(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(dir.len() + 1 + name.len());
    k.extend_from_slice(dir);
    k.push(keys::SEP);
    k.extend_from_slice(name);
    k
}

/// Deletes every key with `prefix` from `keyspace`; returns how many.
pub(super) fn remove_prefix(repo: &Repo, keyspace: Space, prefix: &[u8]) -> Result<u64> {
    let mut n = 0;
    loop {
        let mut batch = Batch::default();
        for kv in repo.index().scan_unordered(keyspace, prefix).take(BATCH) {
            let (k, _) = kv?;
            batch.remove(keyspace, k);
        }
        if batch.is_empty() {
            return Ok(n);
        }
        repo.take_space(
            "removing index entries",
            space::index_cost(batch.len(), batch.bytes()),
        )?;
        n += batch.len() as u64;
        repo.index().apply(batch)?;
    }
}

/// Deletes a layer's entries and directory flags; returns the entries deleted.
pub(crate) fn delete_layer(repo: &Repo, id: &SnapshotId) -> Result<u64> {
    let n = remove_prefix(repo, Space::Layers, &id.0)?;
    remove_prefix(repo, Space::LayerDirs, &id.0)?;
    Ok(n)
}

/// Deletes the entries of layer `id` named by `keys` ([`layer_key`]s), in batches.
pub(super) fn drop_keys(repo: &Repo, id: &SnapshotId, keys: &[Vec<u8>]) -> Result<()> {
    for part in keys.chunks(BATCH) {
        let mut batch = Batch::default();
        for k in part {
            let mut key = id.0.to_vec();
            key.extend_from_slice(k);
            batch.remove(Space::Layers, key);
        }
        repo.take_space(
            "removing index entries",
            space::index_cost(batch.len(), batch.bytes()),
        )?;
        repo.index().apply(batch)?;
    }
    Ok(())
}

/// Writes `id`'s layer as the index holds it (minus the keys in `skip`) as layer blobs; returns
/// their ids. Repair uses it too, to write a layer the packs lost back into them.
pub(crate) fn write_layer_blobs(
    repo: &Repo,
    writer: &mut PackWriter,
    id: &SnapshotId,
    skip: &BTreeSet<Vec<u8>>,
) -> Result<Vec<ChunkId>> {
    let mut blobs = Vec::new();
    let mut blob = Vec::with_capacity(LAYER_BLOB_SIZE + 4096);
    for kv in repo.index().scan(Space::Layers, &id.0) {
        let (k, v) = kv?;
        let key = k.strip_prefix(id.0.as_slice()).ok_or_else(|| {
            Error::CorruptMetadata(format!("a key of layer {id} outside its prefix"))
        })?;
        if skip.contains(key) {
            continue;
        }
        blob.extend_from_slice(&(key.len() as u32).to_le_bytes());
        blob.extend_from_slice(key);
        blob.extend_from_slice(&(v.len() as u32).to_le_bytes());
        blob.extend_from_slice(&v);
        if blob.len() >= LAYER_BLOB_SIZE {
            blobs.push(writer.add_blob(RecordType::Layer, &blob)?);
            blob.clear();
        }
    }
    if !blob.is_empty() {
        blobs.push(writer.add_blob(RecordType::Layer, &blob)?);
    }
    Ok(blobs)
}
