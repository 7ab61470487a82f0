//! The record of an unfinished `forget` or `consolidate` in `meta`
//! ([`keys::META_PENDING_REWRITE`]), and what reads it: the next opening of the index completes
//! the run ([`resume_interrupted`]) and `check` tells its unfinished work from damage
//! ([`interrupted`]). Before the switch the record names what to forget and consolidate; the
//! switch replaces it, in the same atomic batch, with the cleanup left ([`Cleanup`]), whose
//! steps are all idempotent.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::index::{drop_keys, remove_prefix};
use super::{crash_point, delete_layer, rewrite_now, Rewrite, Walk};
use crate::error::{Error, Result};
use crate::id::SnapshotId;
use crate::layers::chain_of;
use crate::repo::store::{Batch, Space};
use crate::repo::Repo;
use crate::repo::{keys, space};
use crate::snapshot::Snapshot;

/// What an unfinished `forget` or `consolidate` left to do, recorded in `meta`
/// ([`keys::META_PENDING_REWRITE`]) so that the next command completes it
/// ([`resume_interrupted`]) and `check` can tell it from damage ([`interrupted`]).
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(super) enum Pending {
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
pub(super) struct Cleanup {
    /// Records to remove, then their layers.
    forgotten: Vec<[u8; 16]>,
    /// Per rewritten layer, the keys (without the snapshot id) of whiteouts its new layer blobs
    /// left out.
    drops: Vec<([u8; 16], Vec<Vec<u8>>)>,
    /// Layers that became full: their `layerdirs` go.
    fulls: Vec<[u8; 16]>,
}

impl Cleanup {
    /// What is left once the records of a rewrite by `plans` have switched.
    pub(super) fn new(forgotten: &[SnapshotId], plans: &[Rewrite]) -> Cleanup {
        Cleanup {
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
        }
    }
}

/// What [`finish_cleanup`] removed.
#[derive(Default)]
pub(super) struct CleanupStats {
    pub(super) entries_deleted: u64,
    pub(super) whiteouts_dropped: u64,
}

pub(super) fn write_pending(repo: &Repo, p: &Pending) -> Result<()> {
    let v = postcard::to_stdvec(p).expect("serializes");
    repo.take_space("recording the rewrite", space::index_cost(1, v.len() + 16))?;
    repo.index()
        .insert(Space::Meta, keys::META_PENDING_REWRITE, &v)?;
    Ok(())
}

fn read_pending(repo: &Repo) -> Result<Option<Pending>> {
    repo.index()
        .get(Space::Meta, keys::META_PENDING_REWRITE)?
        .map(|v| {
            postcard::from_bytes(&v).map_err(|e| {
                Error::CorruptMetadata(format!("the record of an unfinished forget: {e}"))
            })
        })
        .transpose()
}

/// Step 4 of [`super::rewrite`]: every changed record and the record of the `cleanup` left, in
/// one atomic batch, then flushed.
pub(super) fn switch_records(repo: &Repo, changed: &[Snapshot], cleanup: &Cleanup) -> Result<()> {
    let pending = postcard::to_stdvec(&Pending::Cleanup(cleanup.clone())).expect("serializes");
    let mut batch = Batch::default();
    for n in changed {
        batch.insert(Space::Records, n.id.0, n.encode());
    }
    batch.insert(Space::Meta, keys::META_PENDING_REWRITE, &pending);
    repo.take_space(
        "switching the snapshot records",
        space::index_cost(batch.len(), batch.bytes()),
    )?;
    repo.index().apply(batch)?;
    repo.snapshots_changed();
    repo.flush()
}

/// Steps 5 and 6 of [`super::rewrite`]: removes the forgotten records, their layers, the
/// dropped whiteouts and the `layerdirs` of new fulls, then the record of the cleanup. Each step
/// is idempotent, so a run killed anywhere is finished by the next.
pub(super) fn finish_cleanup(repo: &Repo, c: &Cleanup) -> Result<CleanupStats> {
    let forgotten: Vec<SnapshotId> = c.forgotten.iter().map(|b| SnapshotId(*b)).collect();
    remove_records(repo, &forgotten)?;
    crash_point("forget-after-remove");

    // 6. Cleanup: dead layers, redundant whiteouts, layerdirs of new fulls. A layer a running
    // mount still reads (its lease) stays, hidden: no record points at it, and the prune after
    // the lease ends deletes it like any orphan.
    let mut stats = CleanupStats::default();
    let leased = if forgotten.is_empty() {
        HashSet::new()
    } else {
        crate::lease::retained(repo.path())?
    };
    for id in &forgotten {
        if leased.contains(id) {
            log::info!("Keeping the layer of snapshot {id} while a running mount reads it");
            continue;
        }
        stats.entries_deleted += delete_layer(repo, id)?;
    }
    repo.flush()?;
    crash_point("forget-cleanup-after-layers");
    for (id, keys) in &c.drops {
        drop_keys(repo, &SnapshotId(*id), keys)?;
        stats.whiteouts_dropped += keys.len() as u64;
    }
    for id in &c.fulls {
        remove_prefix(repo, Space::LayerDirs, id)?;
    }
    repo.clear_layer_caches();
    repo.flush()?;
    crash_point("forget-cleanup-before-done");
    repo.index()
        .remove(Space::Meta, keys::META_PENDING_REWRITE)?;
    repo.flush()?;
    Ok(stats)
}

/// Step 5: the tombstone is durable, so the forgotten records go.
fn remove_records(repo: &Repo, forgotten: &[SnapshotId]) -> Result<()> {
    let mut batch = Batch::default();
    for id in forgotten {
        batch.remove(Space::Records, id.0);
    }
    repo.take_space(
        "removing snapshot records",
        space::index_cost(batch.len(), batch.bytes()),
    )?;
    repo.index().apply(batch)?;
    repo.snapshots_changed();
    repo.flush()
}

/// Completes a `forget` or `consolidate` that was interrupted (killed, or failed on a full
/// disk): redoes the rewrite when it had not switched the records yet, else finishes its
/// cleanup. Called by every opening of the index ([`crate::open::Open`]) and before a new rewrite.
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
                if reaches(s, &all, &gone) {
                    snapshots.insert(s.id);
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

/// Whether `s` or a snapshot in its chain is one of `gone`, as far as the chain can be followed
/// (a broken chain is for `check` to report, not this question).
fn reaches(s: &Snapshot, all: &HashMap<SnapshotId, Snapshot>, gone: &HashSet<SnapshotId>) -> bool {
    if gone.contains(&s.id) {
        return true;
    }
    let walk = chain_of(s, all.len() + 1, |id| {
        let p = all.get(id);
        if p.is_some() && gone.contains(id) {
            return Err(Walk::Stopped);
        }
        Ok(p)
    });
    matches!(walk, Err(Walk::Stopped))
}
