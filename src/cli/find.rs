//! `strata find`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The work is done by `crate::history::find`.

use std::io::Write;
use std::sync::Arc;

use clap::Args;

use super::json::{self, FindJson, FindMatchJson, FindStatsJson};
use super::output::{human_size, short_hash, stdout_err};
use super::EXIT_OK;
use crate::history::{self, Bound, FindOptions, Pattern};
use crate::repo::Repo;
use crate::Result;

/// `strata find`
#[derive(Args, Debug)]
pub struct FindArgs {
    /// Glob: without `/` it matches file names, with `/` whole snapshot-relative paths (`**` spans
    /// directories)
    pub pattern: String,
    /// Only snapshots of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Only snapshots taken at or after T (RFC 3339, e.g. 2026-11-20T02:00:00Z, or a date, UTC)
    #[arg(long, value_name = "T")]
    pub since: Option<String>,
    /// Only snapshots taken at or before T (a date includes that whole day)
    #[arg(long, value_name = "T")]
    pub until: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

// ----- find -----

/// Runs `strata find`.
pub fn run(repo: &Arc<Repo>, a: FindArgs) -> Result<i32> {
    let pattern = Pattern::new(&a.pattern)?;
    let opts = FindOptions {
        source: a.source.clone(),
        since_ns: a
            .since
            .as_deref()
            .map(|t| history::parse_time(t, Bound::Start))
            .transpose()?,
        until_ns: a
            .until
            .as_deref()
            .map(|t| history::parse_time(t, Bound::End))
            .transpose()?,
    };
    let (matches, stats) = history::find(repo, &pattern, &opts)?;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = (|| -> std::io::Result<()> {
        if a.json {
            let v = FindJson {
                pattern: &a.pattern,
                matches: matches
                    .iter()
                    .map(|m| FindMatchJson::new(&m.path, &m.hits))
                    .collect(),
                stats: FindStatsJson::new(&stats),
            };
            writeln!(out, "{}", json::pretty(&v))?;
        } else {
            for m in &matches {
                out.write_all(&m.path)?;
                writeln!(out)?;
                for (s, e) in &m.hits {
                    writeln!(
                        out,
                        "  {}  {}  {:<12}  {:<7}  {:>10}  mtime {}  hash {}",
                        s.time_rfc3339(),
                        s.id.short(),
                        s.kind.name(),
                        e.kind.name(),
                        human_size(e.size),
                        crate::time::rfc3339(e.mtime_ns),
                        short_hash(e)
                    )?;
                }
            }
            writeln!(
                out,
                "{} path(s) in {} snapshot(s); {} layer(s), {} entries scanned",
                matches.len(),
                stats.snapshots,
                stats.layers_scanned,
                stats.entries_scanned
            )?;
        }
        out.flush()
    })();
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(EXIT_OK),
    }
}
