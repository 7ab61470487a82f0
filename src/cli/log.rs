//! `strata log`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The work is done by `crate::history::log`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;

use super::json::{self, LogJson, LogSourceJson, PathJson};
use super::output::{human_size, short_hash, stdout_err};
use super::{path_bytes, EXIT_OK};
use crate::history::{self, Event, Step};
use crate::repo::Repo;
use crate::{Error, Result};

/// `strata log`
#[derive(Args, Debug)]
pub struct LogArgs {
    /// Path relative to the snapshot root
    pub path: PathBuf,
    /// Only this source [default: every source whose snapshots contain the path]
    #[arg(long)]
    pub source: Option<String>,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

// ----- log -----

/// Runs `strata log`.
pub fn run(repo: &Arc<Repo>, a: LogArgs) -> Result<i32> {
    let path = crate::layers::components(path_bytes(&a.path))?.join(&b'/');
    let mut histories: Vec<(String, Vec<Step>)> = Vec::new();
    for (source, snaps) in history::by_source(repo, a.source.as_deref())? {
        let steps = history::log(repo, &snaps, &path)?;
        if !steps.is_empty() {
            histories.push((source, steps));
        }
    }
    if histories.is_empty() {
        return Err(Error::PathNeverPresent {
            path: String::from_utf8_lossy(&path).into_owned(),
            within: a
                .source
                .as_deref()
                .map_or_else(|| "any source".into(), |s| format!("source {s}")),
        });
    }
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let r = (|| -> std::io::Result<()> {
        if a.json {
            let v = LogJson {
                path: PathJson::new(&path),
                sources: histories
                    .iter()
                    .map(|(src, steps)| LogSourceJson::new(src, steps))
                    .collect(),
            };
            writeln!(out, "{}", json::pretty(&v))?;
        } else {
            for (src, steps) in &histories {
                let versions = steps.iter().filter(|s| s.entry.is_some()).count();
                out.write_all(if path.is_empty() { b"." } else { &path })?;
                writeln!(out, " in {src}: {versions} version(s)")?;
                for s in steps {
                    step_line(&mut out, s)?;
                }
            }
        }
        out.flush()
    })();
    match r {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(stdout_err(e)),
        _ => Ok(EXIT_OK),
    }
}

fn step_line(out: &mut dyn Write, s: &Step) -> std::io::Result<()> {
    write!(
        out,
        "  {}  {}  {:<9}",
        s.first.time_rfc3339(),
        s.first.id.short(),
        s.event.name()
    )?;
    match &s.entry {
        None if s.event == Event::Deleted => {}
        None => {}
        Some(e) => write!(
            out,
            "  {:<7}  {:>10}  hash {}  layer {}",
            e.kind.name(),
            human_size(e.size),
            short_hash(e),
            s.layer.map_or_else(|| "-".into(), |l| l.short())
        )?,
    }
    let plural = if s.snapshots == 1 { "" } else { "s" };
    writeln!(out, "  ({} snapshot{plural})", s.snapshots)
}
