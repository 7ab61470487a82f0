//! `strata consolidate`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The work is in `consolidate`.

use std::path::Path;
use std::sync::Arc;

use clap::Args;

use super::json::{self, ConsolidateJson, RewriteJson, SnapshotJson};
use super::EXIT_OK;
use crate::ops;
use crate::repo::Repo;
use crate::snapshot;
use crate::{Error, Result};

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

/// Runs `strata consolidate`.
pub fn run(path: &Path, a: ConsolidateArgs) -> Result<i32> {
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
            json::result(&ConsolidateJson {
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
