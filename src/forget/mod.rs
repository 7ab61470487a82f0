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
//! **Crash safety** (the order is documented in docs/FORMAT.md): every index write before the
//! switch leaves each view unchanged, because it only adds to a layer entries identical to what the
//! view already showed there, or flags as opaque a directory all of whose visible children the
//! layer already holds. Then new layer blobs, new snapshot blobs and the forget tombstone go into
//! one finished pack; then all changed snapshot records switch in one atomic index batch; then the
//! forgotten records are removed; then dead layers and redundant whiteouts are deleted. A run killed
//! anywhere (or stopped by a full disk) leaves every kept view intact, but layers that disagree with
//! their layer blobs until the run is complete. So the run is recorded in `meta` before its first
//! change (what to forget and consolidate), and the record is replaced atomically with the switch
//! (the cleanup left); every opening of the index completes what a record describes
//! ([`resume_interrupted`]), and `check` reports it as an interruption, not damage ([`interrupted`]).

mod index;
mod merge;
mod pending;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::error::{Error, Result};
use crate::id::{ChunkId, SnapshotId};
use crate::layers::{chain_of, ChainBreak};
use crate::repo::pack::RecordType;
use crate::repo::writer::PackWriter;
use crate::repo::Repo;
use crate::retention::{self, Candidate, Policy};
use crate::snapshot::{BackupKind, Snapshot};

pub(crate) use index::{delete_layer, write_layer_blobs};
use pending::{finish_cleanup, switch_records, write_pending, Cleanup, Pending};
pub use pending::{interrupted, resume_interrupted, Interrupted};

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

/// [`rewrite`] step by step, in the order of the module doc, without first completing an
/// earlier run: also how [`resume_interrupted`] redoes a run that had not switched its records.
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
    let mut kept: Vec<&Snapshot> = all.values().filter(|s| !gone.contains(&s.id)).collect();
    kept.sort_by_key(|s| (s.time_ns, s.id));
    let mut plans = plan_rewrites(&all, &kept, &gone, &consolidate)?;

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
    copy_entries(repo, &mut plans, &mut stats)?;
    crash_point("forget-after-layers");

    // 3. New layer blobs, new snapshot blobs, the tombstone: one finished pack.
    let mut forgotten: Vec<SnapshotId> = gone.iter().copied().collect();
    forgotten.sort();
    let changed = write_pack(repo, &mut plans, &all, &kept, &forgotten)?;
    crash_point("forget-after-pack");

    // 4. Switch every changed record at once, together with the record of the cleanup that is
    // left: from here on the next command finishes the cleanup instead of redoing the rewrite.
    let cleanup = Cleanup::new(&forgotten, &plans);
    switch_records(repo, &changed, &cleanup)?;
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

/// Step 1 of [`rewrite`]: the kept snapshots (oldest first) whose layer changes. Those with
/// forgotten snapshots right below them absorb those layers; those to consolidate, and those
/// left without a kept ancestor, become fulls.
fn plan_rewrites(
    all: &HashMap<SnapshotId, Snapshot>,
    kept: &[&Snapshot],
    gone: &HashSet<SnapshotId>,
    consolidate: &HashSet<SnapshotId>,
) -> Result<Vec<Rewrite>> {
    let mut plans = Vec::new();
    for s in kept {
        if s.ends_chain() {
            continue;
        }
        let (segment, below) = forgotten_below(s, all, gone)?;
        let new_parent = if consolidate.contains(&s.id) {
            None
        } else {
            below
        };
        if segment.is_empty() && new_parent.is_some() {
            continue;
        }
        plans.push(Rewrite {
            id: s.id,
            new_parent,
            segment,
            drop: BTreeSet::new(),
            blobs: Vec::new(),
        });
    }
    Ok(plans)
}

/// How a walk down a parent chain that may stop before its end finished.
enum Walk {
    /// The caller stopped it: it had what it needed.
    Stopped,
    /// The chain is broken where the walk got to.
    Broken(ChainBreak),
}

impl From<ChainBreak> for Walk {
    fn from(b: ChainBreak) -> Walk {
        Walk::Broken(b)
    }
}

/// The forgotten snapshots right below `s` in its chain, newest first, and the kept snapshot
/// under them (`None` when they run down to the full that ends the chain). Only this part of
/// the chain is followed: damage further down is not this run's to find.
fn forgotten_below(
    s: &Snapshot,
    all: &HashMap<SnapshotId, Snapshot>,
    gone: &HashSet<SnapshotId>,
) -> Result<(Vec<SnapshotId>, Option<SnapshotId>)> {
    let (mut segment, mut kept) = (Vec::new(), None);
    let walk = chain_of(s, all.len() + 1, |id| {
        if !gone.contains(id) {
            kept = Some(*id);
            return Err(Walk::Stopped);
        }
        segment.push(*id);
        Ok(all.get(id))
    });
    match walk {
        Ok(_) | Err(Walk::Stopped) => Ok((segment, kept)),
        Err(Walk::Broken(b)) => Err(b.into()),
    }
}

/// Step 2 of [`rewrite`]: copies into each rewritten layer what its view takes from the layers
/// it no longer sits on (see the module doc for why every view stays the same meanwhile), and
/// notes the whiteouts to drop at the cleanup.
fn copy_entries(repo: &Arc<Repo>, plans: &mut [Rewrite], stats: &mut RewriteStats) -> Result<()> {
    for p in plans.iter_mut() {
        repo.clear_layer_caches();
        let (copied, drop) = match p.new_parent {
            None => merge::materialise(repo, &p.id)?,
            Some(parent) => merge::merge_segment(repo, &p.id, &p.segment, &parent)?,
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
    Ok(())
}

/// Step 3 of [`rewrite`]: writes the new layer blobs, the blobs of the records that change and
/// the tombstone of `forgotten` into one finished pack. Returns the changed records, by id.
fn write_pack(
    repo: &Arc<Repo>,
    plans: &mut [Rewrite],
    all: &HashMap<SnapshotId, Snapshot>,
    kept: &[&Snapshot],
    forgotten: &[SnapshotId],
) -> Result<Vec<Snapshot>> {
    let mut writer = PackWriter::new(repo.clone(), Default::default());
    for p in plans.iter_mut() {
        p.blobs = write_layer_blobs(repo, &mut writer, &p.id, &p.drop)?;
    }
    let changed = new_records(plans, all, kept)?;
    for n in &changed {
        writer.add_blob(RecordType::Snapshot, &n.encode())?;
    }
    if !forgotten.is_empty() {
        let payload: Vec<u8> = forgotten.iter().flat_map(|id| id.0).collect();
        writer.add_blob(RecordType::Forget, &payload)?;
    }
    writer.finish()?;
    Ok(changed)
}

/// The records of the kept snapshots after the run (new parents, kinds, layer blobs, and the
/// depths that follow), keeping those that differ from today's, sorted by id.
fn new_records(
    plans: &[Rewrite],
    all: &HashMap<SnapshotId, Snapshot>,
    kept: &[&Snapshot],
) -> Result<Vec<Snapshot>> {
    let by_id: HashMap<SnapshotId, &Rewrite> = plans.iter().map(|p| (p.id, p)).collect();
    let mut new_records: HashMap<SnapshotId, Snapshot> = HashMap::new();
    for s in kept {
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
    let mut depths = Vec::with_capacity(kept.len());
    for s in kept {
        let chain = chain_of(&new_records[&s.id], new_records.len(), |id| {
            Ok::<_, Error>(new_records.get(id))
        })?;
        depths.push((s.id, chain.len() as u32));
    }
    for (id, d) in depths {
        if let Some(n) = new_records.get_mut(&id) {
            n.depth = d;
        }
    }
    let mut changed: Vec<Snapshot> = new_records
        .into_values()
        .filter(|n| all.get(&n.id) != Some(n))
        .collect();
    changed.sort_by_key(|s| s.id);
    Ok(changed)
}
