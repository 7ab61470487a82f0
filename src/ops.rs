//! Whole operations: what must happen around a command's core for the repository to stay as
//! strata's other commands expect it. Opening the index removes the lookup files `cat` reads
//! without sled, so every command that opened it writes them again before it ends; `forget` with
//! prune deletes pack data only after the snapshots are gone. Anything that drives strata (the
//! CLI, a program embedding it) goes through these, so the library is correct on its own.

use std::path::Path;
use std::sync::Arc;

use crate::forget::{self, Decision, ForgetOptions, RewriteStats};
use crate::id::SnapshotId;
use crate::lookup;
use crate::prune::{self, PruneOptions, PruneStats};
use crate::repo::Repo;
use crate::Result;

/// Writes the lookup files after a command that opened the index (which removed them): tables
/// of small layers always, of big ones only those in `needed` (the chain a `cat` just read). A
/// failure is logged, not returned: the files only make `cat` faster.
pub fn publish_lookups(repo: &Repo, needed: &[SnapshotId]) {
    lookup::publish_or_warn(repo, lookup::SMALL_LAYER, needed);
}

/// Runs `f` on the repository at `path` opened for reading, then writes the lookup files. It has
/// nothing to flush, so sled's shutdown flush and fsync are skipped.
pub fn read_only<T>(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    let repo = Repo::open(path)?;
    let r = f(&repo);
    publish_lookups(&repo, &[]);
    std::mem::forget(repo);
    r
}

/// Runs `f`, which changes the repository at `path`, then writes the lookup files; the
/// repository is closed normally (flushed).
pub fn writing<T>(path: &Path, f: impl FnOnce(&Arc<Repo>) -> Result<T>) -> Result<T> {
    let repo = Repo::open(path)?;
    let r = f(&repo);
    publish_lookups(&repo, &[]);
    r
}

/// How `forget` runs, beyond which snapshots it chooses ([`ForgetOptions`]). The `strata forget`
/// options are these fields (clap); `help` is the CLI's wording.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct ForgetRunOptions {
    /// Decide and report only; change nothing (and prune nothing).
    #[arg(
        long,
        short = 'n',
        help = "Show what would be kept and removed, and why; change nothing"
    )]
    pub dry_run: bool,
    /// Prune afterwards, with default [`PruneOptions`].
    #[arg(long, help = "Run `prune` afterwards")]
    pub prune: bool,
}

/// What `forget` decided and did.
#[derive(Debug)]
pub struct ForgetOutcome {
    /// Every snapshot in scope, with whether it is kept and why.
    pub decisions: Vec<Decision>,
    /// The snapshots removed (or, in a dry run, that would be).
    pub removed: Vec<SnapshotId>,
    /// The rewrite; `None` in a dry run.
    pub stats: Option<RewriteStats>,
    /// The prune; `None` unless asked for and not a dry run.
    pub pruned: Option<PruneStats>,
}

/// Forgets the `explicit` snapshots and those `opts`' policy does not keep, then prunes when
/// asked: pack data is deleted only once no remaining snapshot can need it.
pub fn forget_then_prune(
    repo: &Arc<Repo>,
    explicit: &[SnapshotId],
    opts: &ForgetOptions,
    run: &ForgetRunOptions,
) -> Result<ForgetOutcome> {
    let decisions = forget::plan(repo, explicit, opts)?;
    let removed: Vec<_> = decisions
        .iter()
        .filter(|d| !d.keep)
        .map(|d| d.snapshot.id)
        .collect();
    let stats = if run.dry_run {
        None
    } else {
        Some(forget::rewrite(repo, &removed, &[])?)
    };
    let pruned = if run.prune && !run.dry_run {
        Some(prune::prune(repo, &PruneOptions::default())?)
    } else {
        None
    };
    Ok(ForgetOutcome {
        decisions,
        removed,
        stats,
        pruned,
    })
}
