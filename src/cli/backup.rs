//! `strata backup`: arguments, the run (progress line, exit code 3 when paths were skipped or
//! the layer is anomalous), and the summary, human or `--json`.

use std::path::{Path, PathBuf};

use clap::Args;

use super::json::{self, BackupJson, PathJson, SnapshotJson};
use super::output::human_size;
use super::{status, EXIT_OK, EXIT_WARNINGS};
use crate::backup::{self, anomaly, BackupOptions, BackupOutcome};
use crate::metrics::{MetricsOptions, Recorder};
use crate::open::Open;
use crate::ops;
use crate::repo;
use crate::Result;

/// `strata backup`
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// Directory to back up
    #[arg(
        required_unless_present_any = ["stdin", "stdin_from_command"],
        conflicts_with_all = ["stdin", "stdin_from_command"]
    )]
    pub source: Option<PathBuf>,
    /// What to back up and how
    #[command(flatten)]
    pub options: BackupOptions,
    /// Print the result as JSON
    #[arg(long)]
    pub json: bool,
    // Not a flattened `BackupOptions` field, so that help and man pages list it after `--json`,
    // where it has always been.
    /// After the backup, consolidate the snapshot into a full when its chain is deeper than N layers
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub max_chain: Option<u32>,
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// Runs `strata backup` between its pre- and post-command; `default_repo`: no `--repo` was
/// given. `rec` receives the outcome.
pub fn run(path: &Path, default_repo: bool, a: BackupArgs, rec: &Recorder) -> Result<i32> {
    let hooks = crate::hooks::Hooks {
        pre: a.options.pre_command.clone(),
        post: a.options.post_command.clone(),
    };
    let committed = |(code, id): &(i32, crate::id::SnapshotId)| crate::hooks::Committed {
        id: *id,
        warnings: *code == EXIT_WARNINGS,
    };
    let (code, _) = hooks.around(|| backup_and_report(path, default_repo, a, rec), committed)?;
    Ok(code)
}

/// The backup itself; the repository is closed when it returns.
fn backup_and_report(
    path: &Path,
    default_repo: bool,
    a: BackupArgs,
    rec: &Recorder,
) -> Result<(i32, crate::id::SnapshotId)> {
    crate::memory::tune_for_long_run();
    // The default repository is created on first use; an explicit one must exist (a typo in --repo
    // should not silently start a new repository).
    let open = Open::new(path)
        .cache_bytes(repo::BACKUP_INDEX_CACHE)
        .create_if_missing(default_repo);
    let out = ops::writing_with(open, |repo| {
        let status = status::StatusLine::backup();
        let opts = BackupOptions {
            max_chain: a.max_chain,
            progress: status.progress(),
            ..a.options
        };
        let out = backup::run(repo, a.source.as_deref(), &opts)?;
        rec.backup(repo, &out);
        Ok(out)
    })?;
    let anomalous = out.anomaly.as_ref().filter(|v| v.anomalous);
    if let Some(v) = anomalous {
        log::warn!(
            "anomaly: {} (snapshot {} of {} marked '{}', score {:.2})",
            v.reasons.join("; "),
            out.snapshot.id.short(),
            out.snapshot.source,
            anomaly::TAG,
            v.score
        );
    }
    print_result(&out, a.json);
    let code = if out.warnings.is_empty() && anomalous.is_none() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    };
    Ok((code, out.snapshot.id))
}

/// The summary of a committed backup.
fn print_result(out: &BackupOutcome, as_json: bool) {
    let s = &out.snapshot;
    if as_json {
        let v = BackupJson {
            snapshot: SnapshotJson::new(s),
            warnings: &out.warnings,
            sqlite_copies: out.sqlite_copies.iter().map(|p| PathJson::new(p)).collect(),
            anomaly: out.anomaly.as_ref(),
        };
        outln!("{}", json::pretty(&v));
        return;
    }
    outln!(
        "snapshot {} saved ({}, parent {}, source {})",
        s.id.short(),
        s.kind.name(),
        s.parent.map(|p| p.short()).unwrap_or_else(|| "-".into()),
        s.source
    );
    outln!(
        "files: {} in view, {} read ({}), layer entries: {} ({} deleted)",
        s.stats.files,
        s.stats.files_read,
        human_size(s.stats.read_bytes),
        s.stats.layer_entries,
        s.stats.deleted
    );
    outln!(
        "new data: {} chunks, {} → {} stored, in {:.2} s",
        s.stats.new_chunks,
        human_size(s.stats.new_bytes),
        human_size(s.stats.stored_bytes),
        s.stats.elapsed_ms as f64 / 1000.0
    );
    if !out.sqlite_copies.is_empty() {
        outln!(
            "sqlite: {} database(s) stored as consistent copies (SQLite backup API; their -wal, -shm and -journal files not stored):",
            out.sqlite_copies.len()
        );
        for p in &out.sqlite_copies {
            outln!("  {}", String::from_utf8_lossy(p));
        }
    }
    if let Some(v) = &out.anomaly {
        outln!("{}", anomaly_line(v));
    }
    if !out.warnings.is_empty() {
        outln!("{} warning(s); see messages above", out.warnings.len());
    }
}

/// The summary line of the anomaly check.
fn anomaly_line(v: &anomaly::Assessment) -> String {
    if !v.judged {
        return "anomaly check: first snapshot of the source, not judged".into();
    }
    let f = &v.figures;
    let verdict = if v.anomalous {
        format!(
            "ANOMALOUS, marked '{}'; see the warning above",
            anomaly::TAG
        )
    } else {
        "normal".into()
    };
    let ratio = f.compression_ratio.map_or_else(String::new, |r| {
        format!(", new data compression ratio {r:.2}")
    });
    format!(
        "anomaly check: score {:.2} ({verdict}); of {} files {} added, {} rewritten, {} deleted{ratio}",
        v.score,
        f.reference_files.unwrap_or(0),
        f.added,
        f.rewritten,
        f.deleted
    )
}
