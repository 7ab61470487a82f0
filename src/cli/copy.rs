//! `strata copy`: arguments, and the human and `--json` output (the JSON documented in
//! README.md). The work is in `copy`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use serde::Serialize;

use super::json::{self, SnapRefJson};
use super::output::human_size;
use super::{status, HelpOrder, EXIT_OK};
use crate::copy::{self, CopyOptions, CopyOutcome, CopyStats, Planned, Source};
use crate::metrics::{Command, MetricsOptions, Recorder};
use crate::passphrase::Sources;
use crate::repo::Repo;
use crate::{ops, Result};

/// `strata copy`
#[derive(Args, Debug)]
#[command(help_order = &[
    "from_repo", "from_password_file", "source", "dry_run", "json", "metrics_file",
])]
pub struct CopyArgs {
    /// The repository to copy snapshots from (the target is --repo)
    #[arg(long, value_name = "DIR", env = "STRATA_FROM_REPO", required = true)]
    pub from_repo: PathBuf,
    /// Read the passphrase of an encrypted --from-repo from FILE (also
    /// $STRATA_FROM_PASSWORD_COMMAND, $STRATA_FROM_PASSWORD, else a prompt)
    #[arg(long, value_name = "FILE", env = "STRATA_FROM_PASSWORD_FILE")]
    pub from_password_file: Option<PathBuf>,
    /// Which snapshots, and whether to write
    #[command(flatten)]
    pub options: CopyOptions,
    /// Print as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// Runs `strata copy` into the repository at `target`.
pub fn run(target: &Path, a: CopyArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Copy);
    let exit = copy_with(target, a, &rec);
    super::metrics::finish(rec, exit)
}

fn copy_with(target: &Path, a: CopyArgs, rec: &Recorder) -> Result<i32> {
    // A bucket's address becomes its cache directory, as for --repo.
    let from = match a.from_repo.to_str().and_then(crate::repo::remote::parse) {
        Some(addr) => crate::repo::remote::attach(&addr?, false)?,
        None => a.from_repo.clone(),
    };
    copy::check_distinct(&from, target)?;
    // The source is registered first and let go of at once; only then is the target held, so
    // that two copies in opposite directions never wait for each other.
    let mut source = Source::open(&from, &Sources::copy_source(a.from_password_file.clone()))?;
    let dry_run = a.options.dry_run;
    let run = |repo: &Arc<Repo>| {
        let status = status::StatusLine::data("Copying");
        let opts = CopyOptions {
            progress: status.progress(),
            ..a.options.clone()
        };
        let out = copy::copy(&mut source, repo, &opts);
        drop(status);
        rec.repository(repo);
        out
    };
    let out = if dry_run {
        ops::read_only(target, run)?
    } else {
        ops::writing(target, run)?
    };
    if a.json {
        let j = CopyJson {
            dry_run,
            from: crate::repo::remote::display_name(source.path()),
            to: crate::repo::remote::display_name(target),
            snapshots: out.snapshots.iter().map(CopiedJson::new).collect(),
            stats: StatsJson::new(&out.stats),
        };
        outln!("{}", json::result(&j));
    } else {
        print_human(&out, dry_run);
    }
    Ok(EXIT_OK)
}

fn print_human(out: &CopyOutcome, dry_run: bool) {
    for p in &out.snapshots {
        let s = &p.snapshot;
        let what = match (p.action, p.as_full) {
            (copy::Action::Copy, false) => "copy     ",
            (copy::Action::Ancestor, false) => "ancestor ",
            (_, true) => "as full  ",
            (copy::Action::Present, _) => "present  ",
            (copy::Action::Forgotten, _) => "forgotten",
        };
        outln!(
            "  {what} {}  {}  {:<12}  {}",
            s.id.short(),
            s.time_rfc3339(),
            s.kind.name(),
            s.source
        );
    }
    let s = &out.stats;
    let c = &s.chunks;
    let verb = if dry_run { "Would copy" } else { "Copied" };
    let mut line = format!("{verb} {} snapshot(s)", s.snapshots_copied);
    if s.ancestors_copied > 0 {
        line.push_str(&format!(", {} of them as ancestors", s.ancestors_copied));
    }
    if !dry_run {
        line.push_str(&format!(
            "{} in {:.1} s",
            if s.ancestors_copied > 0 { "," } else { "" },
            s.elapsed_ms as f64 / 1000.0
        ));
    }
    line.push_str(&format!("; {} already in the target", s.snapshots_present));
    if s.copied_as_full > 0 {
        line.push_str(&format!(
            "; {} as a full layer (an ancestor was forgotten in the target)",
            s.copied_as_full
        ));
    }
    if s.snapshots_forgotten > 0 {
        line.push_str(&format!(
            "; {} forgotten in the target, not copied again",
            s.snapshots_forgotten
        ));
    }
    outln!("{line}");
    if dry_run {
        outln!(
            "Chunks: would send {} ({}), {} already in the target ({})",
            c.new_chunks,
            human_size(c.new_bytes),
            c.present_chunks,
            human_size(c.present_bytes)
        );
        return;
    }
    outln!(
        "Chunks: sent {} ({}; {} stored), {} already in the target ({})",
        c.new_chunks,
        human_size(c.new_bytes),
        human_size(s.stored_bytes),
        c.present_chunks,
        human_size(c.present_bytes)
    );
    if s.snapshots_copied > 0 {
        outln!(
            "Verified: {} record(s) read back ({}), {} entries compared with the source",
            s.verified.records,
            human_size(s.verified.bytes),
            s.entries_compared
        );
    }
}

/// `copy --json`.
#[derive(Serialize)]
struct CopyJson {
    dry_run: bool,
    from: String,
    to: String,
    snapshots: Vec<CopiedJson>,
    stats: StatsJson,
}

/// One snapshot of the source and what the copy did with it.
#[derive(Serialize)]
struct CopiedJson {
    #[serde(flatten)]
    snapshot: SnapRefJson,
    /// `copied`, `ancestor`, `present` or `forgotten`.
    action: &'static str,
    as_full: bool,
}

impl CopiedJson {
    fn new(p: &Planned) -> CopiedJson {
        CopiedJson {
            snapshot: SnapRefJson::new(&p.snapshot),
            action: p.action.name(),
            as_full: p.as_full,
        }
    }
}

#[derive(Serialize)]
struct StatsJson {
    snapshots_copied: u64,
    ancestors_copied: u64,
    copied_as_full: u64,
    snapshots_present: u64,
    snapshots_forgotten: u64,
    layer_entries: u64,
    new_chunks: u64,
    new_bytes: u64,
    present_chunks: u64,
    present_bytes: u64,
    read_chunks: u64,
    read_bytes: u64,
    stored_bytes: u64,
    verified_records: u64,
    verified_bytes: u64,
    entries_compared: u64,
    elapsed_ms: u64,
}

impl StatsJson {
    fn new(s: &CopyStats) -> StatsJson {
        StatsJson {
            snapshots_copied: s.snapshots_copied,
            ancestors_copied: s.ancestors_copied,
            copied_as_full: s.copied_as_full,
            snapshots_present: s.snapshots_present,
            snapshots_forgotten: s.snapshots_forgotten,
            layer_entries: s.layer_entries,
            new_chunks: s.chunks.new_chunks,
            new_bytes: s.chunks.new_bytes,
            present_chunks: s.chunks.present_chunks,
            present_bytes: s.chunks.present_bytes,
            read_chunks: s.chunks.read_chunks,
            read_bytes: s.chunks.read_bytes,
            stored_bytes: s.stored_bytes,
            verified_records: s.verified.records,
            verified_bytes: s.verified.bytes,
            entries_compared: s.entries_compared,
            elapsed_ms: s.elapsed_ms,
        }
    }
}
