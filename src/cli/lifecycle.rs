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
use crate::retention::{Policy, Span};
use crate::snapshot;
use crate::{Error, Result};

/// `strata forget`
#[derive(Args, Debug)]
pub struct ForgetArgs {
    /// Snapshots to forget: id, unique id prefix, or `latest`
    pub snapshots: Vec<String>,
    /// Keep the N newest snapshots
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_last: u32,
    /// Keep the newest snapshot of each of the N newest hours (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_hourly: u32,
    /// Keep the newest snapshot of each of the N newest days (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_daily: u32,
    /// Keep the newest snapshot of each of the N newest ISO weeks (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_weekly: u32,
    /// Keep the newest snapshot of each of the N newest months (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_monthly: u32,
    /// Keep the newest snapshot of each of the N newest years (UTC) that have one
    #[arg(long, value_name = "N", default_value_t = 0, hide_default_value = true)]
    pub keep_yearly: u32,
    /// Keep every snapshot within DURATION of the newest (units y, m, w, d, h: 30d, 2w, 1y6m)
    #[arg(long, value_name = "DURATION")]
    pub keep_within: Option<Span>,
    /// Keep every snapshot with this tag (repeatable)
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub keep_tags: Vec<String>,
    /// Apply the policy only to snapshots of this source [default: each source separately]
    #[arg(long)]
    pub source: Option<String>,
    /// Show what would be kept and removed, and why; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Run `prune` afterwards
    #[arg(long)]
    pub prune: bool,
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
    /// Show what would be deleted and rewritten; change nothing
    #[arg(long, short = 'n')]
    pub dry_run: bool,
    /// Rewrite packs whose live bytes are below PCT percent of their size (0-100)
    #[arg(long, value_name = "PCT", default_value_t = prune::DEFAULT_REPACK_THRESHOLD,
          value_parser = clap::value_parser!(u8).range(0..=100))]
    pub repack_threshold: u8,
    /// Prune even though the last check or repair found lost or damaged data (look at what it
    /// reported first: prune deletes whatever no snapshot references)
    #[arg(long)]
    pub force_after_damage: bool,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

fn policy(a: &ForgetArgs) -> Option<Policy> {
    let p = Policy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within,
        tags: a.keep_tags.clone(),
    };
    (!p.is_empty()).then_some(p)
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
    let policy = policy(&a);
    if policy.is_none() && a.snapshots.is_empty() {
        return Err(Error::InvalidArgument(
            "Name snapshots to forget or give a policy (--keep-last, --keep-daily, ...)".into(),
        ));
    }
    let mut explicit = Vec::new();
    for name in &a.snapshots {
        explicit.push(snapshot::find(repo, name, a.source.as_deref())?.id);
    }
    let done = ops::forget_then_prune(
        repo,
        &explicit,
        &ForgetOptions {
            policy,
            source: a.source.clone(),
        },
        &ForgetRunOptions {
            dry_run: a.dry_run,
            prune: a.prune,
        },
    )?;
    if a.json {
        let out = ForgetJson {
            dry_run: a.dry_run,
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
    let stats = prune::prune(
        repo,
        &PruneOptions {
            dry_run: a.dry_run,
            repack_threshold: a.repack_threshold,
            force_after_damage: a.force_after_damage,
        },
    )?;
    if a.json {
        outln!("{}", json::line(&PruneJson::new(&stats, a.dry_run)));
    } else {
        print_prune_human(&stats, a.dry_run);
    }
    Ok(EXIT_OK)
}
