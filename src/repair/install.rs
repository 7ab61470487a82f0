//! Putting the rebuilt database in place (crash safety in the module documentation of
//! [`super`]): it is built in `REPO/index.rebuild` (or, for a dry run, in sled's temporary
//! location), flushed and closed; then the old `index/` is moved aside and the new one renamed into
//! place. Records the packs lost are written back into them afterwards, through the new index.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::{RepairReport, DAMAGED_PREFIX, REBUILD_DIR};
use crate::error::{IoContext, Result};
use crate::id::SnapshotId;
use crate::repo::pack::RecordType;
use crate::repo::store::{Batch, MetaStore, SledStore, Space};
use crate::repo::writer::PackWriter;
use crate::repo::{Repo, INDEX_DIR};

/// How repair opens a database: a large cache, throughput over latency.
pub(super) fn db_config(path: &Path) -> sled::Config {
    sled::Config::new()
        .path(path)
        .cache_capacity(64 << 20)
        .mode(sled::Mode::HighThroughput)
}

/// Opens the empty database to build into: `REPO/index.rebuild` (what a repair that died left
/// there is removed first), or for a dry run a temporary one that disappears when dropped.
pub(super) fn create(path: &Path, dry_run: bool) -> Result<sled::Db> {
    if dry_run {
        // sled's own temporary location (removed when the database is dropped), made explicit.
        let temp = sled::Config::new().temporary(true);
        let at = temp.get_path();
        return crate::repo::open_sled(temp.path(at));
    }
    let rebuild = path.join(REBUILD_DIR);
    if rebuild.exists() {
        log::info!(
            "Removing {} left by an interrupted repair",
            rebuild.display()
        );
        fs::remove_dir_all(&rebuild).ctx("Removing", &rebuild)?;
    }
    crate::repo::open_sled(db_config(&rebuild))
}

/// Closes the rebuilt database `db`, moves the old `index/` aside (noted in `report`), renames
/// the rebuilt one into place and reopens it there. `max_pack` is the highest pack number.
pub(super) fn swap(
    path: &Path,
    db: sled::Db,
    max_pack: u64,
    report: &mut RepairReport,
) -> Result<sled::Db> {
    let rebuild = path.join(REBUILD_DIR);
    drop(db);
    // A repository in a bucket numbers its packs at random, never with sled's generator.
    if crate::repo::remote::session(path)?.is_none() {
        advance_id_generator(&rebuild, max_pack)?;
    }
    let index = path.join(INDEX_DIR);
    if index.exists() {
        let aside = aside_name(path);
        fs::rename(&index, &aside).ctx("Moving the old index aside to", &aside)?;
        report.moved_aside = Some(aside);
    }
    fs::rename(&rebuild, &index).ctx("Installing the rebuilt index", &index)?;
    crate::fsio::sync_dir(path)?;
    crate::repo::open_sled(db_config(&index))
}

/// Makes sled's id generator of the database at `path` hand out numbers above `max_pack`, so new
/// packs never reuse an existing pack's number. sled persists the counter in steps of its
/// `idgen_persist_interval` (1,000,000 by default) and, on reopening, starts two steps above the
/// persisted value. Opening once with a step that is a multiple of the default and larger than
/// `max_pack`, then drawing one id, persists a counter above it that later opens (with the default
/// step, which requires the counter to be a multiple of it) accept.
fn advance_id_generator(path: &Path, max_pack: u64) -> Result<()> {
    const SLED_DEFAULT_STEP: u64 = 1_000_000;
    let step = (max_pack / SLED_DEFAULT_STEP + 1) * SLED_DEFAULT_STEP;
    let db = SledStore::new(crate::repo::open_sled(
        db_config(path).idgen_persist_interval(step),
    )?)?;
    let id = db.generate_id()?;
    debug_assert!(id > max_pack);
    db.flush()?;
    Ok(())
}

/// `index.damaged-<UTC time>`, with a counter when that exists already.
fn aside_name(path: &Path) -> PathBuf {
    let t = crate::time::rfc3339(crate::time::now_ns()).replace(':', "");
    let mut p = path.join(format!("{DAMAGED_PREFIX}{t}"));
    let mut n = 1;
    while p.exists() {
        n += 1;
        p = path.join(format!("{DAMAGED_PREFIX}{t}-{n}"));
    }
    p
}

/// A snapshot whose record or layer is written back into the packs after the swap.
pub(super) struct WriteBack {
    /// The snapshot.
    pub id: SnapshotId,
    /// Its layer blobs are lost: new ones are written from the rebuilt layer.
    pub layer: bool,
}

/// Writes the records in `pending` back into one new pack (new layer blobs where the layer came
/// from the old index, then a new snapshot blob, the last written for its id), indexes them,
/// then switches the snapshot records to the new layer blobs; flushes.
pub(super) fn write_back(repo: &Arc<Repo>, pending: &[WriteBack]) -> Result<()> {
    if pending.is_empty() {
        return Ok(());
    }
    let mut writer = PackWriter::new(repo.clone(), Default::default());
    let mut updated = Vec::new();
    for w in pending {
        let Some(mut snap) = repo.snapshot(&w.id)? else {
            continue;
        };
        if w.layer {
            snap.layer_blobs =
                crate::forget::write_layer_blobs(repo, &mut writer, &w.id, &Default::default())?;
        }
        writer.add_blob(RecordType::Snapshot, &snap.encode())?;
        updated.push(snap);
    }
    writer.finish()?;
    let mut batch = Batch::default();
    for snap in &updated {
        batch.insert(Space::Records, snap.id.0, snap.encode());
    }
    repo.index().apply(batch)?;
    repo.snapshots_changed();
    repo.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_generator_moves_past_existing_packs() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("db");
        let open = || SledStore::new(crate::repo::open_sled(db_config(&p)).unwrap()).unwrap();
        open().flush().unwrap();
        advance_id_generator(&p, 7_654_321).unwrap();
        for _ in 0..3 {
            // Each open (sled's recovery path included) must keep ids above the packs.
            let db = open();
            assert!(db.generate_id().unwrap() > 7_654_321);
            assert!(db.generate_id().unwrap() > 7_654_321);
            db.flush().unwrap();
        }
    }
}
