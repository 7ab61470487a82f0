//! `forget`, `consolidate` and `prune`: argument types and output (human and `--json`, the JSON
//! documented in README.md). The decisions and the work are in `forget`, `consolidate`, `prune`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use super::json::{
    self, ConsolidateJson, DecisionJson, ForgetJson, PruneJson, RewriteJson, SnapshotJson,
};
use super::output::human_size;
use super::EXIT_OK;
use crate::forget::ForgetOptions;
use crate::ops::{self, ForgetRunOptions};
use crate::prune::{self, PruneOptions, PruneStats};
use crate::repo::Repo;
use crate::retention::Policy;
use crate::snapshot;
use crate::{Error, Result};

/// `strata forget`
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget: id, unique id prefix, or `latest`
    pub snapshots: Vec<String>,
    /// The retention policy (none when no `--keep-*` option is given)
    #[command(flatten)]
    pub keep: Policy,
    /// Apply the policy only to snapshots of this source [default: each source separately]
    #[arg(long)]
    pub source: Option<String>,
    /// Dry run, prune afterwards
    #[command(flatten)]
    pub run: ForgetRunOptions,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata consolidate`
#[derive(Args, Debug)]
pub struct ConsolidateArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata prune`
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// What to delete and rewrite
    #[command(flatten)]
    pub options: PruneOptions,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

fn print_prune_human(s: &PruneStats, dry_run: bool) {
    let (verb, rewrite) = if dry_run {
        ("Would delete", "rewrite")
    } else {
        ("Deleted", "rewrote")
    };
    outln!(
        "{verb} {} pack(s), {rewrite} {} ({} records removed, {} copied); {} -> {} ({} reclaimed)",
        s.packs_deleted,
        s.packs_rewritten,
        s.records_removed,
        s.records_copied,
        human_size(s.bytes_before),
        human_size(s.bytes_after),
        human_size(s.reclaimed_bytes()),
    );
    if s.packs_skipped > 0 {
        outln!(
            "Left {} damaged pack(s) alone (run `strata check`)",
            s.packs_skipped
        );
    }
}

/// Runs `strata forget`.
pub fn run_forget(path: &Path, a: ForgetArgs) -> Result<i32> {
    ops::writing(path, |repo| forget_with(repo, a))
}

fn forget_with(repo: &Arc<Repo>, a: ForgetArgs) -> Result<i32> {
    let policy = (!a.keep.is_empty()).then_some(a.keep);
    if policy.is_none() && a.snapshots.is_empty() {
        return Err(Error::InvalidArgument(
            "Name snapshots to forget or give a policy (--keep-last, --keep-daily, ...)".into(),
        ));
    }
    let mut explicit = Vec::new();
    for name in &a.snapshots {
        explicit.push(snapshot::find(repo, name, a.source.as_deref())?.id);
    }
    let opts = ForgetOptions {
        policy,
        source: a.source,
    };
    let done = ops::forget_then_prune(repo, &explicit, &opts, &a.run)?;
    if a.json {
        let out = ForgetJson {
            dry_run: a.run.dry_run,
            decisions: done.decisions.iter().map(DecisionJson::new).collect(),
            stats: done.stats.as_ref().map(RewriteJson::new),
            prune: done.pruned.as_ref().map(|p| PruneJson::new(p, false)),
        };
        outln!("{}", json::line(&out));
        return Ok(EXIT_OK);
    }
    let mut source = None;
    for d in &done.decisions {
        if source != Some(&d.snapshot.source) {
            outln!("Source {}:", d.snapshot.source);
            source = Some(&d.snapshot.source);
        }
        outln!(
            "  {} {}  {}  {:<12}  {}",
            if d.keep { "keep  " } else { "remove" },
            d.snapshot.id.short(),
            d.snapshot.time_rfc3339(),
            d.snapshot.kind.name(),
            d.reasons.join(", ")
        );
    }
    let kept = done.decisions.iter().filter(|d| d.keep).count();
    match &done.stats {
        None => outln!(
            "Would keep {kept} and remove {} snapshot(s) (dry run)",
            done.removed.len()
        ),
        Some(s) => outln!(
            "Removed {} snapshot(s), kept {kept} of those in scope; {} layer(s) merged, {} made full, {} entries copied",
            s.forgotten, s.merged, s.materialised, s.entries_copied
        ),
    }
    if let Some(p) = &done.pruned {
        print_prune_human(p, false);
    }
    Ok(EXIT_OK)
}

/// Runs `strata consolidate`.
pub fn run_consolidate(path: &Path, a: ConsolidateArgs) -> Result<i32> {
    ops::writing(path, |repo| consolidate_with(repo, a))
}

fn consolidate_with(repo: &Arc<Repo>, a: ConsolidateArgs) -> Result<i32> {
    let snap = snapshot::find(repo, &a.snapshot, a.source.as_deref())?;
    let stats = crate::consolidate::consolidate(repo, &snap.id)?;
    let after = repo
        .snapshot(&snap.id)?
        .ok_or_else(|| Error::SnapshotNotFound(snap.id.to_string()))?;
    if a.json {
        outln!(
            "{}",
            json::line(&ConsolidateJson {
                snapshot: SnapshotJson::new(&after),
                stats: RewriteJson::new(&stats),
            })
        );
    } else if stats.materialised == 0 {
        outln!("Snapshot {} is already a full layer", after.id.short());
    } else {
        outln!(
            "Consolidated snapshot {} into a full layer ({} entries copied)",
            after.id.short(),
            stats.entries_copied
        );
    }
    Ok(EXIT_OK)
}

/// Runs `strata prune`.
pub fn run_prune(path: &Path, a: PruneArgs) -> Result<i32> {
    ops::writing(path, |repo| prune_with(repo, a))
}

fn prune_with(repo: &Arc<Repo>, a: PruneArgs) -> Result<i32> {
    let stats = prune::prune(repo, &a.options)?;
    if a.json {
        outln!("{}", json::line(&PruneJson::new(&stats, a.options.dry_run)));
    } else {
        print_prune_human(&stats, a.options.dry_run);
    }
    Ok(EXIT_OK)
}
