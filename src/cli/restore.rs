//! `strata restore`: arguments, and the human and `--json` renderings of [`RestoreStats`]
//! (the JSON fields are a stable interface, documented in README.md).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use super::json::{self, RestoreJson};
use super::output::human_size;
use super::{path_bytes, status, HelpOrder, EXIT_ERROR, EXIT_OK, EXIT_WARNINGS};
use crate::layers::View;
use crate::metrics::{Command, Figures, MetricsOptions, Recorder, RestoreFigures};
use crate::repo::Repo;
use crate::restore::{self, ProblemKind, RestoreOptions, RestoreStats};
use crate::{snapshot, Error, Result};

/// `strata restore`
#[derive(Args, Debug)]
#[command(help_order = &[
    "path_opts", "target", "includes", "excludes", "overwrite", "dry_run", "delete", "verify",
    "fsync", "numeric_owner", "source", "threads", "json", "metrics_file",
])]
pub struct RestoreArgs {
    /// Snapshot: id, unique id prefix, or `latest`
    pub snapshot: String,
    /// Paths inside the snapshot to restore [default: all of it]
    pub paths: Vec<PathBuf>,
    /// A path inside the snapshot to restore, for scripts that prefer a named option; the same
    /// as giving it after SNAPSHOT (repeatable, combines with them)
    #[arg(long = "path", value_name = "PATH")]
    pub path_opts: Vec<PathBuf>,
    /// Where and how to restore
    #[command(flatten)]
    pub options: RestoreOptions,
    /// Owners are restored as the stored numeric uid/gid (strata stores no names); accepted for
    /// tar compatibility, changes nothing
    #[arg(long)]
    pub numeric_owner: bool,
    /// With `latest`: the newest snapshot of this source
    #[arg(long)]
    pub source: Option<String>,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// Runs `strata restore` on the repository at `path`; the exit code is 1 when a path failed
/// with an error, 3 when there were only conflicts or refused entries, else 0.
pub fn run(path: &Path, a: RestoreArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Restore);
    let exit = crate::ops::read_only(path, |repo| restore_with(repo, a, &rec));
    super::metrics::finish(rec, exit)
}

fn restore_with(repo: &Arc<Repo>, a: RestoreArgs, rec: &Recorder) -> Result<i32> {
    let snap = snapshot::find(repo, &a.snapshot, a.source.as_deref())?;
    let view = View::open(repo, &snap.id)?;
    let paths: Vec<Vec<u8>> = a
        .paths
        .iter()
        .chain(&a.path_opts)
        .map(|p| path_bytes(p).to_vec())
        .collect();
    let status = status::StatusLine::restore();
    let stats = restore::restore(repo, &view, &paths, &a.options, &*status.progress().0);
    drop(status);
    let stats = stats?;
    let errors = stats
        .problems
        .iter()
        .filter(|p| p.kind == ProblemKind::Error)
        .count() as u64;
    let warnings = (stats.conflicts.len() + stats.problems.len()) as u64 - errors;
    rec.counts(warnings, errors);
    rec.figures(Figures::Restore(RestoreFigures::of(
        &stats,
        a.options.dry_run,
    )));
    rec.repository(repo);
    let (target, dry_run) = (&a.options.target, a.options.dry_run);
    let r = if a.json {
        print_json(&snap.id.to_string(), target, dry_run, &stats)
    } else {
        print_human(&snap.id.short(), target, dry_run, &stats)
    };
    if let Err(e) = r {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            return Err(Error::Io {
                context: "Writing",
                path: "standard output".into(),
                source: e,
            });
        }
    }
    Ok(if stats.has_errors() {
        EXIT_ERROR
    } else if !stats.conflicts.is_empty() || !stats.problems.is_empty() {
        EXIT_WARNINGS
    } else {
        EXIT_OK
    })
}

fn print_json(id: &str, target: &Path, dry_run: bool, s: &RestoreStats) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}",
        json::pretty(&RestoreJson::new(id, target, dry_run, s))
    )
}

fn print_human(id: &str, target: &Path, dry_run: bool, s: &RestoreStats) -> std::io::Result<()> {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for a in &s.actions {
        write!(out, "{:<9} ", a.action)?;
        out.write_all(&a.path)?;
        out.write_all(b"\n")?;
    }
    for c in &s.conflicts {
        write!(out, "conflict: ")?;
        out.write_all(&c.path)?;
        writeln!(
            out,
            " ({} in the target, {} in the snapshot): kept; --overwrite if-changed would {} it",
            c.existing, c.snapshot, c.would
        )?;
    }
    for p in &s.problems {
        let kind = match p.kind {
            ProblemKind::Unsafe => "refused",
            ProblemKind::Error => "error",
        };
        write!(out, "{kind}: ")?;
        out.write_all(&p.path)?;
        writeln!(out, ": {}", p.message)?;
    }
    let verb = if dry_run { "would restore" } else { "restored" };
    writeln!(
        out,
        "snapshot {id} {verb} into {}: {} files ({}), {} dirs, {} symlinks, {} hard links, {} special",
        target.display(),
        s.files,
        human_size(s.written_bytes),
        s.dirs,
        s.symlinks,
        s.hardlinks,
        s.specials
    )?;
    writeln!(
        out,
        "{} unchanged, {} replaced, {} deleted, {} conflicts, {} problems, {} chunks read, {:.2} s",
        s.unchanged,
        s.replaced,
        s.deleted,
        s.conflicts.len(),
        s.problems.len(),
        s.chunks_read,
        s.elapsed_ms as f64 / 1000.0
    )?;
    if s.owners_skipped > 0 {
        writeln!(
            out,
            "note: not running as root, owners of {} entries not restored",
            s.owners_skipped
        )?;
    }
    if s.specials_skipped > 0 {
        writeln!(
            out,
            "note: {} device nodes or sockets not restored (devices need root; sockets cannot be)",
            s.specials_skipped
        )?;
    }
    out.flush()
}
