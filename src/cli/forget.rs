//! `strata forget`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The decisions and the work are in `forget` and `ops::forget_then_prune`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use super::json::{self, DecisionJson, ForgetJson, PruneJson, RewriteJson};
use super::EXIT_OK;
use crate::forget::ForgetOptions;
use crate::metrics::{Command, Figures, ForgetFigures, MetricsOptions, PruneFigures, Recorder};
use crate::ops::{self, ForgetRunOptions};
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
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// Runs `strata forget`.
pub fn run(path: &Path, a: ForgetArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Forget);
    let exit = ops::writing(path, |repo| forget_with(repo, a, &rec));
    super::metrics::finish(rec, exit)
}

fn forget_with(repo: &Arc<Repo>, a: ForgetArgs, rec: &Recorder) -> Result<i32> {
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
    rec.figures(Figures::Forget(ForgetFigures {
        removed_snapshots: done.stats.as_ref().map_or(0, |s| s.forgotten),
        prune: done.pruned.as_ref().map(|p| PruneFigures::of(p, false)),
    }));
    rec.repository(repo);
    if a.json {
        let out = ForgetJson {
            dry_run: a.run.dry_run,
            decisions: done.decisions.iter().map(DecisionJson::new).collect(),
            stats: done.stats.as_ref().map(RewriteJson::new),
            prune: done.pruned.as_ref().map(|p| PruneJson::new(p, false)),
        };
        outln!("{}", json::result(&out));
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
        super::prune::print_human(p, false);
    }
    Ok(EXIT_OK)
}
