//! `strata snapshots`: the list, human or `--json`.

use std::io::Write;

use clap::Args;

use super::json::{self, SnapshotJson};
use super::output::human_size;
use crate::repo::Repo;
use crate::snapshot::Snapshot;
use crate::Result;

/// `strata snapshots`
#[derive(Args, Debug)]
pub struct SnapshotsArgs {
    /// Only snapshots of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// Prints the snapshots, of `source` only when given.
pub fn run(repo: &Repo, source: Option<&str>, as_json: bool) -> Result<()> {
    let list: Vec<Snapshot> = repo
        .snapshots()?
        .into_iter()
        .filter(|s| source.is_none_or(|src| s.source == src))
        .collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let r = if as_json {
        let v: Vec<_> = list.iter().map(SnapshotJson::new).collect();
        writeln!(out, "{}", json::pretty(&v))
    } else {
        (|| {
            writeln!(
                out,
                "{:<8}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {:<}",
                "ID", "TIME", "KIND", "PARENT", "FILES", "SIZE", "SOURCE [TAGS]"
            )?;
            for s in &list {
                let tags = if s.tags.is_empty() {
                    String::new()
                } else {
                    format!(" [{}]", s.tags.join(","))
                };
                writeln!(
                    out,
                    "{:<8}  {:<20}  {:<12}  {:<8}  {:>8}  {:>10}  {}{}",
                    s.id.short(),
                    s.time_rfc3339(),
                    s.kind.name(),
                    s.parent.map(|p| p.short()).unwrap_or_else(|| "-".into()),
                    s.stats.files,
                    human_size(s.stats.total_bytes),
                    s.source,
                    tags
                )?;
            }
            Ok(())
        })()
    };
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(crate::Error::Io {
            context: "Writing",
            path: "standard output".into(),
            source: e,
        }),
        _ => Ok(()),
    }
}
