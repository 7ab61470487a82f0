//! `strata check` and `strata repair`: arguments, a progress line, and the human and `--json`
//! renderings of their reports (JSON documented in README.md, "Checking and repairing").

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde::Serialize;

use crate::check::run::CheckRun;
use crate::check::{
    self, CheckOptions, CheckReport, CheckStats, Health, HealthOptions, Problem, ProblemKind,
    Severity, Status,
};
use crate::id::SnapshotId;
use crate::metrics::{CheckFigures, Command, Figures, MetricsOptions, Recorder};
use crate::repair::{self, DroppedSnapshot, RepairOptions, RepairReport};
use crate::repo::Repo;
use crate::{Error, Result};

use super::json::{self, PathJson};
use super::output::human_size;
use super::status::StatusLine;
use super::{EXIT_DAMAGE, EXIT_OK, EXIT_WARNINGS};

/// `strata check`
#[derive(Args, Debug)]
pub struct CheckArgs {
    #[command(flatten)]
    pub opts: CheckOptions,
    /// Print the result as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
    /// Print one Nagios/Icinga/Zabbix plugin line with performance data and exit 0 OK, 1
    /// WARNING, 2 CRITICAL (damage, or a snapshot older than --max-age), 3 UNKNOWN (the check
    /// could not run)
    #[arg(long, conflicts_with = "json")]
    pub nagios: bool,
    /// Age limits for --nagios
    #[command(flatten)]
    pub health: HealthOptions,
    /// Where to write metrics
    #[command(flatten)]
    pub metrics: MetricsOptions,
}

/// `strata repair`
#[derive(Args, Debug)]
pub struct RepairArgs {
    #[command(flatten)]
    pub opts: RepairOptions,
    /// Print the result as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// Runs the check with a progress display ([`check::run::run`]).
fn run_checked(path: &Path, opts: &mut CheckOptions) -> Result<CheckRun> {
    let status = StatusLine::data("Verifying");
    opts.progress = status.progress();
    check::run::run(path, opts)
}

/// Runs `strata check`.
pub fn run_check(path: &Path, a: CheckArgs) -> Result<i32> {
    let rec = Recorder::start(&a.metrics, Command::Check);
    if a.nagios {
        return Ok(run_nagios(path, a, &rec));
    }
    let CheckArgs { mut opts, json, .. } = a;
    let exit = run_checked(path, &mut opts).map(|c| {
        print_check(c.repo().map(|r| &**r), &c.report, json);
        record_metrics(&rec, &c);
        check_code(&c.report)
    });
    super::metrics::finish(rec, exit)
}

/// The check's figures and the repository's, for the metrics file; damage is a failure.
fn record_metrics(rec: &Recorder, c: &CheckRun) {
    rec.figures(Figures::Check(CheckFigures::of(&c.report)));
    let damage = c
        .report
        .problems
        .iter()
        .filter(|p| p.severity() == Severity::Damage)
        .count() as u64;
    rec.counts(c.report.problems.len() as u64 - damage, damage);
    rec.success(!c.report.damaged());
    if let Some(repo) = c.repo() {
        rec.repository(repo);
    }
}

/// `check --nagios`: one plugin line, and a plugin exit code whatever happens — a failure to
/// run the check (even a panic) is UNKNOWN, never another exit code.
fn run_nagios(path: &Path, a: CheckArgs, rec: &Recorder) -> i32 {
    let CheckArgs {
        mut opts, health, ..
    } = a;
    let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let c = run_checked(path, &mut opts)?;
        record_metrics(rec, &c);
        let snapshots = match c.repo() {
            Some(repo) => repo.snapshots()?,
            None => Vec::new(),
        };
        let bytes = match c.repo() {
            Some(repo) => Some(repo.packs().list()?.iter().map(|p| p.1).sum()),
            None => None,
        };
        let now = crate::time::now_ns();
        let h = check::health::evaluate(&c.report, &snapshots, bytes, now, &health);
        Ok::<_, Error>(h)
    }));
    let (health, ran) = match judged {
        Ok(Ok(h)) => (h, true),
        Ok(Err(e)) => (Health::unknown(&e.to_string()), false),
        Err(_) => (
            Health::unknown("strata check failed unexpectedly (see the message above)"),
            false,
        ),
    };
    outln!("{}", health.line());
    // The plugin codes are not strata's: a check that ran succeeded when it found no damage
    // (recorded above); one that did not run failed.
    if !ran {
        rec.success(false);
    }
    if let Err(e) = rec.finish(&Ok(health.status.exit_code())) {
        eprintln!("strata: {e}");
    }
    health.status.exit_code()
}

/// Runs `strata repair`.
pub fn run_repair(path: &Path, a: RepairArgs) -> Result<i32> {
    let RepairArgs { mut opts, json } = a;
    let status = StatusLine::data("Scanning packs");
    opts.progress = status.progress();
    let report = repair::repair(path, &opts);
    drop(status);
    let report = report?;
    print_repair(path, &report, json);
    Ok(if report.after.damaged() || !report.dropped.is_empty() {
        EXIT_DAMAGE
    } else if !report.torn.is_empty()
        || !report.corrupt.is_empty()
        || !report.rewritten.is_empty()
        || !report.bad_pack_headers.is_empty()
        || !report.after.problems.is_empty()
    {
        EXIT_WARNINGS
    } else {
        EXIT_OK
    })
}

fn check_code(r: &CheckReport) -> i32 {
    if r.damaged() {
        EXIT_DAMAGE
    } else if r.problems.is_empty() {
        EXIT_OK
    } else {
        EXIT_WARNINGS
    }
}

/// `time-shortid`, the name the mount uses; the bare id when the snapshot is not in the index.
fn snapshot_name(repo: Option<&Repo>, id: &SnapshotId) -> String {
    match repo.and_then(|r| r.snapshot(id).ok().flatten()) {
        Some(s) => format!("{}-{}", s.time_rfc3339(), s.id.short()),
        None => id.to_string(),
    }
}

/// `check --json`, and the `after` of `repair --json` (documented in README.md). Keys are
/// printed sorted ([`json::line`]); fields are listed in reading order.
#[derive(Serialize)]
struct CheckJson<'a> {
    clean: bool,
    damaged: bool,
    problems: Vec<ProblemJson<'a>>,
    damaged_files: Vec<DamagedFileJson>,
    damaged_snapshots: Vec<String>,
    bad_chunks: Vec<String>,
    stats: StatsJson,
}

#[derive(Serialize)]
struct ProblemJson<'a> {
    kind: &'static str,
    severity: &'static str,
    message: &'a str,
    snapshot: Option<String>,
    chunk: Option<String>,
    pack: Option<String>,
}

#[derive(Serialize)]
struct DamagedFileJson {
    #[serde(flatten)]
    path: PathJson,
    snapshot: String,
    snapshot_name: String,
    chunks: Vec<String>,
}

#[derive(Serialize)]
struct StatsJson {
    snapshots: u64,
    layer_entries: u64,
    index_entries: u64,
    packs: u64,
    chunks_referenced: u64,
    records_verified: u64,
    bytes_verified: u64,
    elapsed_ms: u64,
}

fn strings<T: ToString>(items: &[T]) -> Vec<String> {
    items.iter().map(|i| i.to_string()).collect()
}

impl<'a> CheckJson<'a> {
    fn new(repo: Option<&Repo>, r: &'a CheckReport) -> CheckJson<'a> {
        CheckJson {
            clean: r.problems.is_empty(),
            damaged: r.damaged(),
            problems: r.problems.iter().map(ProblemJson::new).collect(),
            damaged_files: r
                .damaged_files
                .iter()
                .map(|f| DamagedFileJson {
                    path: PathJson::new(&f.path),
                    snapshot: f.snapshot.to_string(),
                    snapshot_name: snapshot_name(repo, &f.snapshot),
                    chunks: strings(&f.chunks),
                })
                .collect(),
            damaged_snapshots: strings(&r.damaged_snapshots),
            bad_chunks: strings(&r.bad_chunks),
            stats: StatsJson::new(&r.stats),
        }
    }
}

impl<'a> ProblemJson<'a> {
    fn new(p: &'a Problem) -> ProblemJson<'a> {
        ProblemJson {
            kind: p.kind.name(),
            severity: match p.severity() {
                Severity::Damage => "damage",
                Severity::Leftover => "leftover",
            },
            message: &p.message,
            snapshot: p.snapshot.map(|s| s.to_string()),
            chunk: p.chunk.map(|c| c.to_string()),
            pack: p.pack.map(|c| c.to_string()),
        }
    }
}

impl StatsJson {
    fn new(s: &CheckStats) -> StatsJson {
        // Destructured, so a new figure cannot be forgotten here.
        let CheckStats {
            snapshots,
            layer_entries,
            index_entries,
            packs,
            chunks_referenced,
            records_verified,
            bytes_verified,
            elapsed_ms,
        } = *s;
        StatsJson {
            snapshots,
            layer_entries,
            index_entries,
            packs,
            chunks_referenced,
            records_verified,
            bytes_verified,
            elapsed_ms,
        }
    }
}

/// `repair --json` (documented in README.md).
#[derive(Serialize)]
struct RepairJson<'a> {
    dry_run: bool,
    packs: u64,
    pack_bytes: u64,
    records: u64,
    index_entries: u64,
    duplicates: u64,
    torn: Vec<TornJson<'a>>,
    bad_pack_headers: Vec<String>,
    corrupt_records: Vec<CorruptJson<'a>>,
    snapshots_restored: Vec<String>,
    snapshots_dropped: Vec<ReasonJson<'a>>,
    snapshots_written_back: Vec<ReasonJson<'a>>,
    tombstoned: u64,
    dictionary: bool,
    compression: i32,
    compression_from_old_index: bool,
    moved_aside: Option<String>,
    elapsed_ms: u64,
    after: CheckJson<'a>,
}

#[derive(Serialize)]
struct TornJson<'a> {
    pack: String,
    offset: u64,
    len: u64,
    resynced: bool,
    reason: &'a str,
}

#[derive(Serialize)]
struct CorruptJson<'a> {
    id: String,
    pack: String,
    detail: &'a str,
}

/// A snapshot repair dropped or wrote back, and why.
#[derive(Serialize)]
struct ReasonJson<'a> {
    id: String,
    reason: &'a str,
}

impl<'a> ReasonJson<'a> {
    fn all(list: &'a [DroppedSnapshot]) -> Vec<ReasonJson<'a>> {
        list.iter()
            .map(|d| ReasonJson {
                id: d.id.to_string(),
                reason: &d.reason,
            })
            .collect()
    }
}

impl<'a> RepairJson<'a> {
    fn new(r: &'a RepairReport) -> RepairJson<'a> {
        RepairJson {
            dry_run: r.dry_run,
            packs: r.packs,
            pack_bytes: r.pack_bytes,
            records: r.records,
            index_entries: r.index_entries,
            duplicates: r.duplicates,
            torn: r
                .torn
                .iter()
                .map(|(p, t)| TornJson {
                    pack: p.to_string(),
                    offset: t.offset,
                    len: t.len,
                    resynced: t.resynced,
                    reason: &t.reason,
                })
                .collect(),
            bad_pack_headers: strings(&r.bad_pack_headers),
            corrupt_records: r
                .corrupt
                .iter()
                .map(|c| CorruptJson {
                    id: c.id.to_string(),
                    pack: c.pack.to_string(),
                    detail: &c.detail,
                })
                .collect(),
            snapshots_restored: strings(&r.snapshots),
            snapshots_dropped: ReasonJson::all(&r.dropped),
            snapshots_written_back: ReasonJson::all(&r.rewritten),
            tombstoned: r.tombstoned,
            dictionary: r.dictionary,
            compression: r.compression,
            compression_from_old_index: r.compression_from_old_index,
            moved_aside: r.moved_aside.as_ref().map(|p| p.display().to_string()),
            elapsed_ms: r.elapsed_ms,
            after: CheckJson::new(None, &r.after),
        }
    }
}

/// Problems listed per kind before the rest are summarized, in human output.
const MAX_PER_KIND: usize = 20;

fn print_check(repo: Option<&Repo>, r: &CheckReport, json_out: bool) {
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(out, "{}", json::result(&CheckJson::new(repo, r)));
        return;
    }
    let _ = write_check_human(&mut out, repo, r);
}

fn write_check_human(
    out: &mut dyn Write,
    repo: Option<&Repo>,
    r: &CheckReport,
) -> std::io::Result<()> {
    let s = &r.stats;
    if repo.is_some() {
        writeln!(
            out,
            "Checked {} snapshots ({} layer entries), {} index entries in {} packs; verified {} records ({}) in {:.1} s",
            s.snapshots,
            s.layer_entries,
            s.index_entries,
            s.packs,
            s.records_verified,
            human_size(s.bytes_verified),
            s.elapsed_ms as f64 / 1000.0
        )?;
    }
    if r.problems.is_empty() {
        return writeln!(out, "No problems found");
    }
    writeln!(out, "Problems ({}):", r.problems.len())?;
    let mut shown: std::collections::HashMap<ProblemKind, usize> = Default::default();
    for p in &r.problems {
        let n = shown.entry(p.kind).or_default();
        *n += 1;
        if *n <= MAX_PER_KIND {
            writeln!(out, "  [{}] {}", p.kind.name(), p.message)?;
        }
    }
    let mut more: Vec<_> = shown.iter().filter(|(_, n)| **n > MAX_PER_KIND).collect();
    more.sort();
    for (k, n) in more {
        writeln!(
            out,
            "  ... and {} more [{}] (all of them with --json)",
            n - MAX_PER_KIND,
            k.name()
        )?;
    }
    if !r.damaged_files.is_empty() {
        writeln!(out, "Damaged files ({}):", r.damaged_files.len())?;
        for f in &r.damaged_files {
            let what = if f.chunks.is_empty() {
                "entry undecodable".to_string()
            } else {
                format!(
                    "{} bad chunk{}",
                    f.chunks.len(),
                    if f.chunks.len() == 1 { "" } else { "s" }
                )
            };
            writeln!(
                out,
                "  {}  {}  ({what})",
                snapshot_name(repo, &f.snapshot),
                String::from_utf8_lossy(&f.path)
            )?;
        }
    }
    if !r.damaged_snapshots.is_empty() {
        writeln!(out, "Damaged snapshots ({}):", r.damaged_snapshots.len())?;
        for id in &r.damaged_snapshots {
            writeln!(out, "  {}", snapshot_name(repo, id))?;
        }
    }
    if r.damaged() {
        writeln!(
            out,
            "Damage found: the files listed fail to read (never with wrong bytes). `strata repair` rebuilds a damaged index from the pack files; `strata repair --read-data` drops corrupt chunks from the index, after which a `backup --rehash` of a source still holding that content stores it again and heals every snapshot using it. Until a check finds no damage, `strata prune` refuses to run (it would delete what only the damaged records referenced) unless given --force-after-damage"
        )
    } else {
        writeln!(out, "No damage; only leftovers a prune would remove")
    }
}

fn print_repair(path: &Path, r: &RepairReport, json_out: bool) {
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(out, "{}", json::result(&RepairJson::new(r)));
        return;
    }
    let _ = write_repair_human(&mut out, path, r);
}

fn write_repair_human(out: &mut dyn Write, path: &Path, r: &RepairReport) -> std::io::Result<()> {
    let verb = if r.dry_run {
        "Would rebuild"
    } else {
        "Rebuilt"
    };
    writeln!(
        out,
        "{verb} the index of {} from {} packs ({}): {} records, {} index entries, {} snapshots, in {:.1} s",
        path.display(),
        r.packs,
        human_size(r.pack_bytes),
        r.records,
        r.index_entries,
        r.snapshots.len(),
        r.elapsed_ms as f64 / 1000.0
    )?;
    writeln!(
        out,
        "Compression level {} ({}){}",
        r.compression,
        if r.compression_from_old_index {
            "from the old index"
        } else {
            "the default: no readable old index"
        },
        if r.dictionary {
            "; dictionary restored"
        } else {
            ""
        }
    )?;
    write_repair_findings(out, r)?;
    if !r.dry_run && (!r.dropped.is_empty() || !r.torn.is_empty() || !r.corrupt.is_empty()) {
        writeln!(out, "prune will not run until you pass --force-after-damage: what was lost may have been all that referenced some data")?;
    }
    if let Some(a) = &r.moved_aside {
        writeln!(
            out,
            "The old index was moved to {} (delete it once satisfied)",
            a.display()
        )?;
    }
    writeln!(out, "Snapshot statistics come from the old index where it holds the snapshot, else from the packs (written before the last pack's figures were known)")?;
    writeln!(out, "After the repair:")?;
    write_check_human(out, None, &r.after)
}

/// What the rebuild met on the way: duplicates, damaged packs and records, snapshots it did not
/// restore, kept from the old index, or could not rebuild.
fn write_repair_findings(out: &mut dyn Write, r: &RepairReport) -> std::io::Result<()> {
    if r.duplicates > 0 {
        writeln!(out, "{} duplicate records (one copy indexed)", r.duplicates)?;
    }
    for p in &r.bad_pack_headers {
        writeln!(
            out,
            "Pack {p}: bad pack header (its records were still scanned)"
        )?;
    }
    for (p, t) in &r.torn {
        writeln!(
            out,
            "Pack {p}: {} damaged bytes at offset {} ({}){}",
            t.len,
            t.offset,
            t.reason,
            if t.resynced {
                ", skipped to the next valid record"
            } else {
                ", rest of the pack dropped"
            }
        )?;
    }
    for c in &r.corrupt {
        writeln!(
            out,
            "Dropped record {} in pack {}: {}",
            c.id, c.pack, c.detail
        )?;
    }
    if r.tombstoned > 0 {
        writeln!(
            out,
            "{} forgotten snapshots not restored (tombstoned)",
            r.tombstoned
        )?;
    }
    for d in &r.rewritten {
        writeln!(
            out,
            "Snapshot {} kept: {}; {} into a new pack",
            d.id,
            d.reason,
            if r.dry_run {
                "would be written back"
            } else {
                "written back"
            }
        )?;
    }
    for d in &r.dropped {
        writeln!(out, "Snapshot {} cannot be rebuilt: {}", d.id, d.reason)?;
    }
    Ok(())
}

/// A usage error on a command line with `--nagios`: still one plugin line, UNKNOWN, and exit
/// code 3 — a monitoring system reads clap's exit code 2 as CRITICAL.
pub(super) fn nagios_usage_error(e: &clap::Error) -> i32 {
    let text = e.to_string();
    let first = text
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("usage error")
        .trim_start_matches("error: ");
    outln!("{}", Health::unknown(&format!("Usage: {first}")).line());
    Status::Unknown.exit_code()
}
