//! `copy`: snapshots of one repository copied into another, with the layers their views need,
//! sending only the chunks the target lacks, and verifying what was written.
//!
//! - **What is copied** ([`plan`]): the snapshots asked for and the ancestors their views need
//!   that the target lacks, under their own ids; a snapshot the target holds is skipped, so a
//!   copy is incremental and a second run sends nothing. A snapshot the target forgot stays
//!   forgotten ([`tombstones`]).
//! - **Chunks** ([`chunks`], [`ids`]): either repository may be encrypted; when they compute
//!   chunk ids differently every chunk is re-identified in the target and the entries' chunk
//!   lists are rewritten.
//! - **Writing** ([`layer`]): per snapshot, in backup's commit order; no record is written
//!   before its chunks, layer and blobs are durable and read back.
//! - **Verifying** ([`verify`]): every copied snapshot's view in the target is compared with its
//!   view in the source, path by path.
//! - **The source** ([`source`]) is read through private copies of its index, under a lease, so
//!   it stays usable (backups, `forget`, `prune`) while a copy runs; the target is held under
//!   its lock like a backup holds it.

mod chunks;
mod ids;
mod layer;
mod plan;
mod source;
mod tombstones;
mod verify;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::id::SnapshotId;
use crate::progress::ProgressHandle;
use crate::repo::Repo;
use crate::snapshot::BackupKind;

pub use chunks::ChunkStats;
pub use plan::{Action, Planned};
pub use source::{check_distinct, Source};
pub use verify::Verified;

/// Which snapshots to copy, and how. The `strata copy` options are these fields (clap); `help`
/// is the CLI's wording.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CopyOptions {
    /// Snapshots to copy, named as everywhere (`latest`, an id, a unique prefix); every snapshot
    /// of the source when empty.
    #[arg(
        value_name = "SNAPSHOT",
        help = "Snapshots to copy: id, unique id prefix, or `latest` [default: every snapshot of the source repository]"
    )]
    pub snapshots: Vec<String>,
    /// Only snapshots of this source (`latest`: the newest of this source).
    #[arg(
        long,
        value_name = "SOURCE",
        help = "Only snapshots of this source; with `latest`, the newest of this source"
    )]
    pub source: Option<String>,
    /// Decide and count only; write nothing.
    #[arg(
        long,
        short = 'n',
        help = "Show what would be copied and how much would be sent; write nothing"
    )]
    pub dry_run: bool,
    /// Where to report progress.
    #[arg(skip)]
    pub progress: ProgressHandle,
}

/// What a copy did, units in the names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CopyStats {
    /// Snapshots written into the target (ancestors included).
    pub snapshots_copied: u64,
    /// Of those, ancestors that were not asked for.
    pub ancestors_copied: u64,
    /// Of those, snapshots written as full layers (their ancestors are forgotten in the target).
    pub copied_as_full: u64,
    /// Snapshots asked for that the target already held.
    pub snapshots_present: u64,
    /// Snapshots asked for that the target forgot, not copied again.
    pub snapshots_forgotten: u64,
    /// Layer entries written.
    pub layer_entries: u64,
    /// The chunks: sent, already present, read.
    pub chunks: ChunkStats,
    /// Bytes added to the target's pack files, headers included.
    pub stored_bytes: u64,
    /// Records read back from the target and verified.
    pub verified: Verified,
    /// Entries of the copied snapshots' views compared with the source's.
    pub entries_compared: u64,
    /// Wall time.
    pub elapsed_ms: u64,
}

/// What a copy decided and did.
#[derive(Clone, Debug)]
pub struct CopyOutcome {
    /// Every snapshot considered, oldest first, with what was done with it.
    pub snapshots: Vec<Planned>,
    /// The figures.
    pub stats: CopyStats,
}

/// Copies snapshots of `source` into `target` (held under its lock) as `opts` says.
pub fn copy(source: &mut Source, target: &Arc<Repo>, opts: &CopyOptions) -> Result<CopyOutcome> {
    let start = Instant::now();
    let progress = &opts.progress;
    let plan = planned(source, target, opts)?;
    let mut stats = CopyStats::default();
    let todo = plan.to_copy();
    if !todo.is_empty() && !opts.dry_run {
        prepare(source, target)?;
    }
    let src = source.repo().clone();
    let mut chunks = chunks::Chunks::new(
        &*source,
        target,
        ids::Ids::new(&src, target),
        progress.clone(),
    );
    learn_common_layers(&mut chunks, &src, target, &plan)?;
    progress.0.phase("Copying");
    let mut depths: HashMap<SnapshotId, u32> = HashMap::new();
    for p in &todo {
        let depth = depth_in_target(target, p, &depths)?;
        let done = layer::copy(&mut chunks, &src, target, p, depth, opts.dry_run, progress)?;
        depths.insert(p.snapshot.id, done.record.depth);
        stats.snapshots_copied += 1;
        stats.ancestors_copied += u64::from(p.action == Action::Ancestor);
        stats.copied_as_full += u64::from(p.as_full);
        stats.layer_entries += done.entries;
        stats.stored_bytes += done.stored_bytes;
        stats.verified.records += done.verified.records;
        stats.verified.bytes += done.verified.bytes;
        if !opts.dry_run {
            // Each view as soon as it is committed: what an error stops leaves only verified
            // snapshots behind.
            let mut identify = |c: &crate::id::ChunkId| chunks.identify(c);
            stats.entries_compared += verify::view(&src, target, &p.snapshot.id, &mut identify)?;
        }
    }
    stats.chunks = chunks.stats.clone();
    for p in &plan.items {
        match p.action {
            Action::Present => stats.snapshots_present += 1,
            Action::Forgotten => stats.snapshots_forgotten += 1,
            Action::Copy | Action::Ancestor => {}
        }
    }
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    Ok(CopyOutcome {
        snapshots: plan.items.clone(),
        stats,
    })
}

/// The plan, with the layers it reads leased in the source: planned again on a new copy of the
/// source's index while a `forget` or `prune` that started since the copy may have missed the
/// lease.
fn planned(source: &mut Source, target: &Repo, opts: &CopyOptions) -> Result<plan::Plan> {
    let mut forgotten: Option<HashSet<SnapshotId>> = None;
    loop {
        let all = source.repo().snapshots()?;
        let selected = plan::selected(&all, &opts.snapshots, opts.source.as_deref())?;
        let none = HashSet::new();
        let mut plan = plan::make(source.repo(), target, selected.clone(), &none)?;
        if !plan.to_copy().is_empty() {
            if forgotten.is_none() {
                opts.progress.0.phase("Reading the target's packs");
                forgotten = Some(tombstones::forgotten(target)?);
            }
            let f = forgotten.as_ref().expect("read above");
            if !f.is_empty() {
                plan = plan::make(source.repo(), target, selected, f)?;
            }
        }
        if source.lease(&plan.lease)? {
            return Ok(plan);
        }
        log::info!(
            "A forget or prune of the source started; planning again on a new copy of its index"
        );
        source.refresh()?;
    }
}

/// Before the first write: removes what a killed process left unfinished in the target's packs,
/// and gives the target the source's compression dictionary when it has none, so that copied
/// small chunks compress as well as they did in the source.
fn prepare(source: &Source, target: &Arc<Repo>) -> Result<()> {
    let removed = target.packs().remove_unfinished()?;
    if removed > 0 {
        log::info!("Removed {removed} unfinished pack(s) of an interrupted command");
    }
    if target.compression() > 0 && target.dictionary().is_none() {
        if let Some(d) = source.repo().dictionary() {
            let d = crate::compress::Dictionary::from_bytes(d.bytes.clone());
            target.install_dictionary(d)?;
        }
    }
    Ok(())
}

/// Learns the target ids of chunks in layers both repositories hold that the copied snapshots'
/// views read (see [`ids`]); nothing when ids carry over.
fn learn_common_layers(
    chunks: &mut chunks::Chunks,
    source: &Repo,
    target: &Repo,
    plan: &plan::Plan,
) -> Result<()> {
    if chunks.ids_mut().same() {
        return Ok(());
    }
    let mut learnt = 0;
    for id in &plan.lease {
        if target.snapshot(id)?.is_some() {
            learnt += chunks.ids_mut().learn_layer(source, target, id)?;
        }
    }
    log::debug!("Learnt the target ids of {learnt} chunk(s) from layers both repositories hold");
    Ok(())
}

/// How many layers deep `p`'s view is in the target: its parent's depth there (committed
/// before, or written by this run, in `depths`) plus one.
fn depth_in_target(target: &Repo, p: &Planned, depths: &HashMap<SnapshotId, u32>) -> Result<u32> {
    let s = &p.snapshot;
    if p.as_full || s.kind == BackupKind::Full {
        return Ok(1);
    }
    let Some(parent) = s.parent else {
        return Ok(s.depth);
    };
    if let Some(d) = depths.get(&parent) {
        return Ok(d + 1);
    }
    Ok(match target.snapshot(&parent)? {
        Some(t) => t.depth + 1,
        None => s.depth,
    })
}
