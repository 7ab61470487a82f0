//! Removing snapshots, and rewriting the layers that depended on them, without changing any kept
//! snapshot's view. Metadata only: entries are copied between layers, chunk data is never read.
//!
//! **Merging.** Forgetting `B` in `A ← B ← C` copies into `C`'s layer every entry that `C`'s view
//! takes from `B` (whiteouts included) and marks `C` opaque at every directory whose resolution
//! stopped inside `B`; then `C.parent = A`. Afterwards whiteouts in `C` that hide nothing in `A`'s
//! view are dropped. Several forgotten snapshots in a row (`A ← B1 ← B2 ← C`) are merged into `C`
//! at once. When no kept ancestor is left (the forgotten chain ends at a full), `C` is
//! *materialised*: its whole view is written into its layer and it becomes a full (the same
//! operation as `consolidate`).
//!
//! **Crash safety** (the order is documented in docs/FORMAT.md): every sled write before the
//! switch leaves each view unchanged, because it only adds to a layer entries identical to what the
//! view already showed there, or flags as opaque a directory all of whose visible children the
//! layer already holds. Then new layer blobs, new snapshot blobs and the forget tombstone go into
//! one finished pack; then all changed snapshot records switch in one atomic sled batch; then the
//! forgotten records are removed; then dead layers and redundant whiteouts are deleted. A run killed
//! anywhere (or stopped by a full disk) leaves every kept view intact, but layers that disagree with
//! their layer blobs until the run is complete. So the run is recorded in `meta` before its first
//! change (what to forget and consolidate), and the record is replaced atomically with the switch
//! (the cleanup left); every opening of the index completes what a record describes
//! ([`resume_interrupted`]), and `check` reports it as an interruption, not damage ([`interrupted`]).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::entry::{Entry, Kind};
use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{join, View};
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;
use crate::repo::{keys, space};
use crate::retention::{self, Candidate, Policy};
use crate::snapshot::{BackupKind, Snapshot};
use sled::Transactional;

/// Layer blobs are cut at about this size (as backup does).
const LAYER_BLOB_SIZE: usize = 1 << 20;
/// Keys per sled batch.
const BATCH: usize = 512;

/// Aborts the process at a named point when `STRATA_TEST_CRASH_AT` names it: crash tests use it to
/// kill `forget` and `prune` between two steps deterministically. Only in builds with the
/// `test-hooks` feature (which `cargo test` turns on); elsewhere it does nothing.
pub(crate) fn crash_point(name: &str) {
    if cfg!(feature = "test-hooks")
        && std::env::var("STRATA_TEST_CRASH_AT").is_ok_and(|v| v == name)
    {
        log::error!("Test hook: aborting at {name}");
        std::process::abort();
    }
}

/// What `forget` decided for one snapshot.
#[derive(Clone, Debug)]
pub struct Decision {
    /// The snapshot.
    pub snapshot: Snapshot,
    /// Kept or removed.
    pub keep: bool,
    /// Why: the rules that keep it, or `explicit` / `policy` for a removal.
    pub reasons: Vec<String>,
}

/// Options for [`plan`].
#[derive(Clone, Debug, Default)]
pub struct ForgetOptions {
    /// Retention rules, applied per source; `None` when only explicit snapshots are forgotten.
    pub policy: Option<Policy>,
    /// Only snapshots of this source are considered by the policy.
    pub source: Option<String>,
}

/// Decides which snapshots go: the `explicit` ones, plus those the policy does not keep (per
/// source). Every snapshot in scope appears once, newest first within each source.
pub fn plan(repo: &Repo, explicit: &[SnapshotId], opts: &ForgetOptions) -> Result<Vec<Decision>> {
    let all = repo.snapshots()?;
    for id in explicit {
        if !all.iter().any(|s| s.id == *id) {
            return Err(Error::SnapshotNotFound(id.to_string()));
        }
    }
    if let Some(p) = &opts.policy {
        if p.is_empty() {
            return Err(Error::InvalidArgument(
                "An empty policy would forget every snapshot; give at least one --keep-* rule"
                    .into(),
            ));
        }
    }
    let explicit: HashSet<_> = explicit.iter().copied().collect();
    let mut by_source: BTreeMap<String, Vec<Snapshot>> = BTreeMap::new();
    for s in all {
        let in_scope = explicit.contains(&s.id)
            || (opts.policy.is_some() && opts.source.as_ref().is_none_or(|src| *src == s.source));
        if in_scope {
            by_source.entry(s.source.clone()).or_default().push(s);
        }
    }
    let mut out = Vec::new();
    for (source, mut snaps) in by_source {
        snaps.sort_by_key(|s| std::cmp::Reverse((s.time_ns, s.id)));
        let in_policy = opts.policy.is_some() && opts.source.as_ref().is_none_or(|s| *s == source);
        let decisions = match (&opts.policy, in_policy) {
            (Some(p), true) => {
                let c: Vec<Candidate> = snaps
                    .iter()
                    .map(|s| Candidate {
                        time_ns: s.time_ns,
                        tags: s.tags.clone(),
                    })
                    .collect();
                retention::apply(p, &c)
            }
            _ => vec![retention::Decision::default(); snaps.len()],
        };
        for (s, d) in snaps.into_iter().zip(decisions) {
            let (keep, reasons) = if explicit.contains(&s.id) {
                (false, vec!["explicit".to_string()])
            } else if d.keep() {
                (true, d.reasons)
            } else {
                (false, vec!["policy".to_string()])
            };
            out.push(Decision {
                snapshot: s,
                keep,
                reasons,
            });
        }
    }
    Ok(out)
}

/// What a rewrite did, units in the field names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RewriteStats {
    /// Snapshot records removed.
    pub forgotten: u64,
    /// Kept snapshots whose layer absorbed forgotten layers (and were re-parented).
    pub merged: u64,
    /// Snapshots turned into full layers (consolidated, or whose whole chain below was forgotten).
    pub materialised: u64,
    /// Snapshot records rewritten (including depth-only changes).
    pub records_rewritten: u64,
    /// Layer entries copied from one layer into another.
    pub entries_copied: u64,
    /// Whiteouts dropped because nothing below them was left to hide.
    pub whiteouts_dropped: u64,
    /// Layer entries of forgotten snapshots deleted.
    pub entries_deleted: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// How one kept snapshot's layer changes.
struct Rewrite {
    id: SnapshotId,
    /// Its kept ancestor after the run; `None` = it becomes a full.
    new_parent: Option<SnapshotId>,
    /// Forgotten layers between it and `new_parent`, newest first.
    segment: Vec<SnapshotId>,
    /// Keys (without the snapshot prefix) of whiteouts to delete after the switch.
    drop: BTreeSet<Vec<u8>>,
    /// The new layer blobs.
    blobs: Vec<ChunkId>,
}

/// Forgets `forget` and turns `consolidate` into full layers, rewriting the layers of kept
/// snapshots that depended on forgotten ones. Every kept snapshot's view is unchanged.
pub fn rewrite(
    repo: &Arc<Repo>,
    forget: &[SnapshotId],
    consolidate: &[SnapshotId],
) -> Result<RewriteStats> {
    // An earlier run's record must not be overwritten before its work is done.
    resume_interrupted(repo)?;
    rewrite_now(repo, forget, consolidate)
}

fn rewrite_now(
    repo: &Arc<Repo>,
    forget: &[SnapshotId],
    consolidate: &[SnapshotId],
) -> Result<RewriteStats> {
    let start = Instant::now();
    let mut stats = RewriteStats::default();
    let all: HashMap<SnapshotId, Snapshot> =
        repo.snapshots()?.into_iter().map(|s| (s.id, s)).collect();
    let gone: HashSet<SnapshotId> = forget.iter().copied().collect();
    for id in forget.iter().chain(consolidate) {
        if !all.contains_key(id) {
            return Err(Error::SnapshotNotFound(id.to_string()));
        }
    }
    let consolidate: HashSet<SnapshotId> = consolidate
        .iter()
        .filter(|id| !gone.contains(id))
        .copied()
        .collect();

    // 1. Which kept snapshots change, and how.
    let mut plans = Vec::new();
    let mut kept: Vec<&Snapshot> = all.values().filter(|s| !gone.contains(&s.id)).collect();
    kept.sort_by_key(|s| (s.time_ns, s.id));
    for s in &kept {
        if s.ends_chain() {
            continue;
        }
        let mut segment = Vec::new();
        let mut cur = s.parent;
        while let Some(p) = cur.filter(|p| gone.contains(p)) {
            segment.push(p);
            let ps = all
                .get(&p)
                .ok_or_else(|| Error::MissingParent(s.id.to_string(), p.to_string()))?;
            cur = if ps.kind == BackupKind::Full {
                None
            } else {
                ps.parent
            };
        }
        if consolidate.contains(&s.id) {
            cur = None;
        }
        if segment.is_empty() && cur.is_some() {
            continue;
        }
        plans.push(Rewrite {
            id: s.id,
            new_parent: cur,
            segment,
            drop: BTreeSet::new(),
            blobs: Vec::new(),
        });
    }

    // Recorded before the first change: the next command redoes the whole rewrite from here.
    write_pending(
        repo,
        &Pending::Rewrite {
            forget: forget.iter().map(|id| id.0).collect(),
            consolidate: consolidate.iter().map(|id| id.0).collect(),
        },
    )?;
    repo.flush()?;

    // These layers are about to change under their lookup tables.
    let rewritten: Vec<SnapshotId> = plans.iter().map(|p| p.id).collect();
    crate::lookup::drop_tables_of(repo.path(), &rewritten)?;

    // 2. Copy entries into the rewritten layers (view-preserving, see the module doc).
    for p in plans.iter_mut() {
        repo.clear_layer_caches();
        let (copied, drop) = match p.new_parent {
            None => materialise(repo, &p.id)?,
            Some(parent) => merge_segment(repo, &p.id, &p.segment, &parent)?,
        };
        stats.entries_copied += copied;
        p.drop = drop;
        if p.new_parent.is_none() {
            stats.materialised += 1;
        } else {
            stats.merged += 1;
        }
    }
    repo.clear_layer_caches();
    crash_point("forget-after-layers");

    // 3. New layer blobs, new snapshot blobs, the tombstone: one finished pack.
    let mut writer = PackWriter::new(repo.clone(), Default::default());
    for p in plans.iter_mut() {
        p.blobs = write_layer_blobs(repo, &mut writer, &p.id, &p.drop)?;
    }
    let by_id: HashMap<SnapshotId, &Rewrite> = plans.iter().map(|p| (p.id, p)).collect();
    let mut new_records: HashMap<SnapshotId, Snapshot> = HashMap::new();
    for s in &kept {
        let mut n = (*s).clone();
        if let Some(p) = by_id.get(&s.id) {
            n.parent = p.new_parent;
            if p.new_parent.is_none() {
                n.kind = BackupKind::Full;
            }
            n.layer_blobs = p.blobs.clone();
        }
        new_records.insert(s.id, n);
    }
    // Depths follow the new parents.
    let mut depths: HashMap<SnapshotId, u32> = HashMap::new();
    for s in &kept {
        let mut path = vec![s.id];
        let mut base = 0;
        while let Some(p) = new_records[path.last().unwrap()].parent {
            if let Some(&d) = depths.get(&p) {
                base = d;
                break;
            }
            if !new_records.contains_key(&p) || path.len() > new_records.len() {
                return Err(Error::CorruptMetadata(format!(
                    "snapshot {} has a broken parent chain",
                    s.id
                )));
            }
            path.push(p);
        }
        for (i, id) in path.iter().rev().enumerate() {
            depths.insert(*id, base + i as u32 + 1);
        }
    }
    for (id, d) in &depths {
        new_records.get_mut(id).unwrap().depth = *d;
    }
    let mut changed: Vec<&Snapshot> = kept
        .iter()
        .map(|s| &new_records[&s.id])
        .filter(|n| all.get(&n.id) != Some(*n))
        .collect();
    changed.sort_by_key(|s| s.id);
    for n in &changed {
        writer.add_blob(RecordType::Snapshot, &n.encode())?;
    }
    let mut forgotten: Vec<SnapshotId> = gone.iter().copied().collect();
    forgotten.sort();
    if !forgotten.is_empty() {
        let payload: Vec<u8> = forgotten.iter().flat_map(|id| id.0).collect();
        writer.add_blob(RecordType::Forget, &payload)?;
    }
    writer.finish()?;
    crash_point("forget-after-pack");

    // 4. Switch every changed record at once, together with the record of the cleanup that is
    // left: from here on the next command finishes the cleanup instead of redoing the rewrite.
    let cleanup = Cleanup {
        forgotten: forgotten.iter().map(|id| id.0).collect(),
        drops: plans
            .iter()
            .filter(|p| !p.drop.is_empty())
            .map(|p| (p.id.0, p.drop.iter().cloned().collect()))
            .collect(),
        fulls: plans
            .iter()
            .filter(|p| p.new_parent.is_none())
            .map(|p| p.id.0)
            .collect(),
    };
    let pending = postcard::to_stdvec(&Pending::Cleanup(cleanup.clone())).expect("serializes");
    let records: Vec<(SnapshotId, Vec<u8>)> = changed.iter().map(|n| (n.id, n.encode())).collect();
    let bytes = records.iter().map(|(_, r)| r.len()).sum::<usize>() + pending.len();
    repo.take_space(
        "switching the snapshot records",
        space::index_cost(records.len() + 1, bytes),
    )?;
    (&repo.snapshots, &repo.meta)
        .transaction(|(snaps, meta)| {
            for (id, r) in &records {
                snaps.insert(&id.0, r.as_slice())?;
            }
            meta.insert(keys::META_PENDING_REWRITE, pending.as_slice())?;
            Ok::<(), sled::transaction::ConflictableTransactionError<()>>(())
        })
        .map_err(|e| match e {
            sled::transaction::TransactionError::Storage(e) => Error::Db(e),
            sled::transaction::TransactionError::Abort(()) => {
                unreachable!("the switch never aborts")
            }
        })?;
    repo.snapshots_changed();
    repo.flush()?;
    stats.records_rewritten = changed.len() as u64;
    crash_point("forget-after-switch");

    // 5–6. Remove the forgotten records, then the cleanup.
    let done = finish_cleanup(repo, &cleanup)?;
    stats.forgotten = forgotten.len() as u64;
    stats.entries_deleted += done.entries_deleted;
    stats.whiteouts_dropped += done.whiteouts_dropped;
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    log::info!(
        "Forgot {} snapshot(s), merged {} layer(s), materialised {}",
        stats.forgotten,
        stats.merged,
        stats.materialised
    );
    Ok(stats)
}

/// What an unfinished `forget` or `consolidate` left to do, recorded in `meta`
/// ([`keys::META_PENDING_REWRITE`]) so that the next command completes it
/// ([`resume_interrupted`]) and `check` can tell it from damage ([`interrupted`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Pending {
    /// Written before the first change; until the switch every view is unchanged, and redoing
    /// the rewrite (for the ids that still exist) completes it.
    Rewrite {
        forget: Vec<[u8; 16]>,
        consolidate: Vec<[u8; 16]>,
    },
    /// Written in the same transaction as the switch: only the cleanup is left.
    Cleanup(Cleanup),
}

/// The steps after the switch: all idempotent.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
struct Cleanup {
    /// Records to remove, then their layers.
    forgotten: Vec<[u8; 16]>,
    /// Per rewritten layer, the keys (without the snapshot id) of whiteouts its new layer blobs
    /// left out.
    drops: Vec<([u8; 16], Vec<Vec<u8>>)>,
    /// Layers that became full: their `layerdirs` go.
    fulls: Vec<[u8; 16]>,
}

/// What [`finish_cleanup`] removed.
#[derive(Default)]
struct CleanupStats {
    entries_deleted: u64,
    whiteouts_dropped: u64,
}

fn write_pending(repo: &Repo, p: &Pending) -> Result<()> {
    let v = postcard::to_stdvec(p).expect("serializes");
    repo.take_space("recording the rewrite", space::index_cost(1, v.len() + 16))?;
    repo.meta.insert(keys::META_PENDING_REWRITE, v)?;
    Ok(())
}

fn read_pending(repo: &Repo) -> Result<Option<Pending>> {
    repo.meta
        .get(keys::META_PENDING_REWRITE)?
        .map(|v| {
            postcard::from_bytes(&v).map_err(|e| {
                Error::CorruptMetadata(format!("the record of an unfinished forget: {e}"))
            })
        })
        .transpose()
}

/// Steps 5 and 6 of [`rewrite`]: removes the forgotten records, their layers, the dropped
/// whiteouts and the `layerdirs` of new fulls, then the record of the cleanup. Each step is
/// idempotent, so a run killed anywhere is finished by the next.
fn finish_cleanup(repo: &Repo, c: &Cleanup) -> Result<CleanupStats> {
    let mut stats = CleanupStats::default();
    let forgotten: Vec<SnapshotId> = c.forgotten.iter().map(|b| SnapshotId(*b)).collect();
    // 5. The tombstone is durable: remove the forgotten records.
    let mut batch = sled::Batch::default();
    for id in &forgotten {
        batch.remove(&id.0);
    }
    repo.take_space(
        "removing snapshot records",
        space::index_cost(forgotten.len(), forgotten.len() * 16),
    )?;
    repo.snapshots.apply_batch(batch)?;
    repo.snapshots_changed();
    repo.flush()?;
    crash_point("forget-after-remove");

    // 6. Cleanup: dead layers, redundant whiteouts, layerdirs of new fulls.
    for id in &forgotten {
        stats.entries_deleted += delete_layer(repo, id)?;
    }
    repo.flush()?;
    crash_point("forget-cleanup-after-layers");
    for (id, keys) in &c.drops {
        for part in keys.chunks(BATCH) {
            let mut batch = sled::Batch::default();
            let mut bytes = 0;
            for k in part {
                let mut key = id.to_vec();
                key.extend_from_slice(k);
                bytes += key.len();
                batch.remove(key);
            }
            repo.take_space(
                "removing index entries",
                space::index_cost(part.len(), bytes),
            )?;
            repo.layers.apply_batch(batch)?;
        }
        stats.whiteouts_dropped += keys.len() as u64;
    }
    for id in &c.fulls {
        remove_prefix(repo, &repo.layerdirs, id)?;
    }
    repo.clear_layer_caches();
    repo.flush()?;
    crash_point("forget-cleanup-before-done");
    repo.meta.remove(keys::META_PENDING_REWRITE)?;
    repo.flush()?;
    Ok(stats)
}

/// Completes a `forget` or `consolidate` that was interrupted (killed, or failed on a full
/// disk): redoes the rewrite when it had not switched the records yet, else finishes its
/// cleanup. Called by every opening of the index ([`Repo::open`]) and before a new rewrite.
/// Returns whether there was anything to do.
pub fn resume_interrupted(repo: &Arc<Repo>) -> Result<bool> {
    let Some(p) = read_pending(repo)? else {
        return Ok(false);
    };
    match p {
        Pending::Rewrite {
            forget,
            consolidate,
        } => {
            let existing: HashSet<SnapshotId> =
                repo.snapshots()?.into_iter().map(|s| s.id).collect();
            let keep = |v: Vec<[u8; 16]>| -> Vec<SnapshotId> {
                v.into_iter()
                    .map(SnapshotId)
                    .filter(|id| existing.contains(id))
                    .collect()
            };
            let (forget, consolidate) = (keep(forget), keep(consolidate));
            log::warn!(
                "Completing an interrupted forget/consolidate ({} to forget, {} to consolidate)",
                forget.len(),
                consolidate.len()
            );
            rewrite_now(repo, &forget, &consolidate)?;
        }
        Pending::Cleanup(c) => {
            log::warn!("Completing the cleanup of an interrupted forget/consolidate");
            finish_cleanup(repo, &c)?;
        }
    }
    Ok(true)
}

/// An unfinished `forget`/`consolidate`, as `check` reports it (see [`interrupted`]).
#[derive(Clone, Debug)]
pub struct Interrupted {
    /// Snapshots whose layers, layer blobs or records the unfinished run left inconsistent
    /// (the ones it forgets, rewrites or consolidates).
    pub snapshots: HashSet<SnapshotId>,
    /// One line for the user: what was interrupted and what completes it.
    pub message: String,
}

/// Reads the record of an unfinished `forget`/`consolidate` (read-only, for `check`): layers
/// that do not match their blobs, dangling layers and tombstoned records of these snapshots are
/// its unfinished work, not damage.
pub fn interrupted(repo: &Repo) -> Result<Option<Interrupted>> {
    let Some(p) = read_pending(repo)? else {
        return Ok(None);
    };
    let mut snapshots: HashSet<SnapshotId> = HashSet::new();
    let phase = match &p {
        Pending::Rewrite {
            forget,
            consolidate,
        } => {
            let gone: HashSet<SnapshotId> = forget.iter().map(|b| SnapshotId(*b)).collect();
            snapshots.extend(gone.iter().copied());
            snapshots.extend(consolidate.iter().map(|b| SnapshotId(*b)));
            // Kept snapshots whose chain reaches a forgotten one get merged layers.
            let all: HashMap<SnapshotId, Snapshot> =
                repo.snapshots()?.into_iter().map(|s| (s.id, s)).collect();
            for s in all.values() {
                let mut cur = Some(s);
                let mut steps = 0;
                while let Some(c) = cur.filter(|_| steps <= all.len()) {
                    if gone.contains(&c.id) {
                        snapshots.insert(s.id);
                        break;
                    }
                    cur = (c.kind != BackupKind::Full)
                        .then_some(c.parent)
                        .flatten()
                        .and_then(|p| all.get(&p));
                    steps += 1;
                }
            }
            "its rewrite of the layers"
        }
        Pending::Cleanup(c) => {
            snapshots.extend(c.forgotten.iter().map(|b| SnapshotId(*b)));
            snapshots.extend(c.drops.iter().map(|(b, _)| SnapshotId(*b)));
            snapshots.extend(c.fulls.iter().map(|b| SnapshotId(*b)));
            "its cleanup"
        }
    };
    Ok(Some(Interrupted {
        message: format!(
            "An interrupted forget or consolidate did not finish {phase} ({} snapshots concerned); \
             nothing is damaged: rerun `strata prune` (or any command that opens the index) to complete it",
            snapshots.len()
        ),
        snapshots,
    }))
}

/// Deletes every key with `prefix` from `tree`; returns how many.
fn remove_prefix(repo: &Repo, tree: &sled::Tree, prefix: &[u8]) -> Result<u64> {
    let mut n = 0;
    loop {
        let mut batch = sled::Batch::default();
        let mut in_batch = 0;
        let mut bytes = 0;
        for k in tree.scan_prefix(prefix).keys().take(BATCH) {
            let k = k?;
            bytes += k.len();
            batch.remove(k);
            in_batch += 1;
        }
        if in_batch == 0 {
            return Ok(n);
        }
        repo.take_space("removing index entries", space::index_cost(in_batch, bytes))?;
        tree.apply_batch(batch)?;
        n += in_batch as u64;
    }
}

/// Deletes a layer's entries and directory flags; returns the entries deleted.
pub(crate) fn delete_layer(repo: &Repo, id: &SnapshotId) -> Result<u64> {
    let n = remove_prefix(repo, &repo.layers, &id.0)?;
    remove_prefix(repo, &repo.layerdirs, &id.0)?;
    Ok(n)
}

/// Copies into `id`'s layer every entry its view shows that the layer lacks, so that the layer
/// alone is the whole view. Until the record says "full", the copies are either invisible (in
/// directories the layer does not touch) or identical to what the view showed. Returns the
/// number copied and the whiteouts to drop once it is a full.
fn materialise(repo: &Arc<Repo>, id: &SnapshotId) -> Result<(u64, BTreeSet<Vec<u8>>)> {
    let view = View::open(repo, id)?;
    let mut pending = Vec::new();
    let mut copied = 0;
    let mut add = |dir: &[u8], name: &[u8], e: &Entry, pending: &mut Vec<_>| -> Result<()> {
        let key = keys::entry_key(id, dir, name);
        if !repo.layers.contains_key(&key)? {
            pending.push((key, e.encode()));
            copied += 1;
            if pending.len() >= 4096 {
                repo.insert_layer_entries(pending)?;
            }
        }
        Ok(())
    };
    add(b"", b"", &view.root()?, &mut pending)?;
    let mut stack = vec![Vec::new()];
    while let Some(dir) = stack.pop() {
        for kv in view.list(&dir)? {
            let (name, e) = kv?;
            add(&dir, &name, &e, &mut pending)?;
            if e.kind == Kind::Dir {
                stack.push(join(&dir, &name));
            }
        }
    }
    repo.insert_layer_entries(&mut pending)?;
    let mut drop = BTreeSet::new();
    for kv in repo.layers.scan_prefix(id.0) {
        let (k, v) = kv?;
        if Entry::decode(&v)?.kind == Kind::Whiteout {
            drop.insert(k[16..].to_vec());
        }
    }
    Ok((copied, drop))
}

/// Marks the merged layer's own entry of directory `dir` opaque. The layer closes `dir` (its
/// `layerdirs` flag), and that flag must stay derivable from the entries alone: `repair` rebuilds
/// `layerdirs` from them and `check` compares the two. A newer layer's metadata-only entry for a
/// directory that a forgotten layer recreated is the case this fixes.
fn mark_opaque_entry(repo: &Repo, layer: &SnapshotId, dir: &[u8]) -> Result<()> {
    if dir.is_empty() {
        return Ok(());
    }
    let (parent, name) = match dir.iter().rposition(|&b| b == b'/') {
        Some(i) => (&dir[..i], &dir[i + 1..]),
        None => (&b""[..], dir),
    };
    let key = keys::entry_key(layer, parent, name);
    if let Some(v) = repo.layers.get(&key)? {
        let mut e = Entry::decode(&v)?;
        if e.kind == Kind::Dir && !e.opaque {
            e.opaque = true;
            repo.layers.insert(key, e.encode())?;
        }
    }
    Ok(())
}

/// Copies into `id`'s layer the entries its view takes from the forgotten `segment`, and flags as
/// opaque the directories whose resolution stopped inside it. Returns the number copied and the
/// whiteouts that will hide nothing once the parent is `parent`.
fn merge_segment(
    repo: &Arc<Repo>,
    id: &SnapshotId,
    segment: &[SnapshotId],
    parent: &SnapshotId,
) -> Result<(u64, BTreeSet<Vec<u8>>)> {
    let view = View::open(repo, id)?;
    let merged: HashSet<SnapshotId> = segment.iter().chain([id]).copied().collect();
    let mut reachable: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut is_dir = |dir: &[u8]| -> Result<bool> {
        if let Some(&r) = reachable.get(dir) {
            return Ok(r);
        }
        let r = view.is_dir(dir)?;
        reachable.insert(dir.to_vec(), r);
        Ok(r)
    };
    let own_dirs = repo.layer_dirs(id)?;
    let mut pending = Vec::new();
    let mut dirs: BTreeSet<Vec<u8>> = BTreeSet::new();
    let mut copied = 0;
    for x in segment {
        for (d, _) in repo.layer_dirs(x)?.iter() {
            dirs.insert(d.clone());
        }
        for kv in repo.layers.scan_prefix(x.0) {
            let (k, _) = kv?;
            let (dir, name) = keys::split_entry_key(&k[16..])
                .ok_or_else(|| Error::CorruptMetadata("malformed layer key".into()))?;
            if !is_dir(dir)? {
                continue;
            }
            if let Some((from, e)) = view.provider(dir, name)? {
                // Copied once, from the layer that supplies it; keys the layer has are its own.
                if from == *x {
                    pending.push((keys::entry_key(id, dir, name), e.encode()));
                    copied += 1;
                }
            }
        }
    }
    let mut flags: BTreeMap<Vec<u8>, bool> = BTreeMap::new();
    for (k, _) in &pending {
        if let Some((dir, _)) = keys::split_entry_key(&k[16..]) {
            flags.insert(dir.to_vec(), false);
        }
    }
    for d in &dirs {
        if is_dir(d)? && merged.contains(&view.stop_layer(d)) {
            flags.insert(d.clone(), true);
        }
    }
    // Entries first (invisible where the layer does not touch the directory yet), then the
    // directory flags that make them visible or close the directory.
    repo.insert_layer_entries(&mut pending)?;
    let mut batch = sled::Batch::default();
    for (d, opaque) in &flags {
        let opaque = *opaque || own_dirs.get(d).copied().unwrap_or(false);
        if opaque {
            mark_opaque_entry(repo, id, d)?;
        }
        if own_dirs.get(d) != Some(&opaque) {
            batch.insert(keys::layerdir_key(id, d), &[opaque as u8]);
        }
    }
    repo.layerdirs.apply_batch(batch)?;
    repo.clear_layer_caches();

    // Whiteouts that will hide nothing: in an opaque directory, or over a path the new parent's
    // view does not have.
    let flags_now = repo.layer_dirs(id)?;
    let below = View::open(repo, parent)?;
    let mut below_dir: HashMap<Vec<u8>, bool> = HashMap::new();
    let mut drop = BTreeSet::new();
    for kv in repo.layers.scan_prefix(id.0) {
        let (k, v) = kv?;
        if Entry::decode(&v)?.kind != Kind::Whiteout {
            continue;
        }
        let (dir, name) = keys::split_entry_key(&k[16..])
            .ok_or_else(|| Error::CorruptMetadata("malformed layer key".into()))?;
        let hides_nothing = if flags_now.get(dir) == Some(&true) {
            true
        } else {
            let dir_ok = match below_dir.get(dir) {
                Some(&b) => b,
                None => {
                    let b = below.is_dir(dir)?;
                    below_dir.insert(dir.to_vec(), b);
                    b
                }
            };
            !dir_ok || below.lookup_in(dir, name)?.is_none()
        };
        if hides_nothing {
            drop.insert(k[16..].to_vec());
        }
    }
    Ok((copied, drop))
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
    for kv in repo.layers.scan_prefix(id.0) {
        let (k, v) = kv?;
        let key = &k[16..];
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
