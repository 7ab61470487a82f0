//! `strata prune`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The work is in `prune`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use super::json::{self, PruneJson};
use super::output::human_size;
use super::{status, EXIT_OK};
use crate::metrics::{Command, Figures, MetricsOptions, PruneFigures, Recorder};
use crate::ops;
use crate::prune::{self, PruneOptions, PruneStats};
use crate::repo::Repo;
use crate::Result;

/// `strata prune`
#[derive(Args, Debug)]
pub struct PruneArgs {
    /// What to delete and rewrite
    #[command(flatten)]
    pub options: PruneOptions,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// Runs `strata prune`.
pub fn run(path: &Path, a: PruneArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Prune);
    let exit = ops::writing(path, |repo| prune_with(repo, a, &rec));
    super::metrics::finish(rec, exit)
}

fn prune_with(repo: &Arc<Repo>, a: PruneArgs, rec: &Recorder) -> Result<i32> {
    let status = status::StatusLine::prune();
    let opts = PruneOptions {
        progress: status.progress(),
        ..a.options.clone()
    };
    let stats = prune::prune(repo, &opts);
    drop(status);
    let stats = stats?;
    rec.figures(Figures::Prune(PruneFigures::of(&stats, a.options.dry_run)));
    rec.repository(repo);
    if a.json {
        outln!(
            "{}",
            json::result(&PruneJson::new(&stats, a.options.dry_run))
        );
    } else {
        print_human(&stats, a.options.dry_run);
    }
    Ok(EXIT_OK)
}

/// The human summary of a prune (also after `forget --prune`).
pub(super) fn print_human(s: &PruneStats, dry_run: bool) {
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
