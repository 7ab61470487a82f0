//! `strata check` and `strata repair`: arguments, a progress line, and the human and `--json`
//! renderings of their reports (JSON documented in README.md, "Checking and repairing").

use std::io::Write;
use std::path::Path;

use clap::Args;
use serde_json::{json, Value};

use crate::check::{self, CheckOptions, CheckReport, Problem, ProblemKind, Severity};
use crate::id::SnapshotId;
use crate::repair::{self, RepairOptions, RepairReport};
use crate::repo::Repo;
use crate::{Error, Result};

use super::output::{human_size, path_json};
use super::status::StatusLine;
use super::{EXIT_DAMAGE, EXIT_OK, EXIT_WARNINGS};

/// `strata check`
#[derive(Args, Debug)]
pub struct CheckArgs {
    /// Also re-read and re-hash chunk data: all of it, or a random PERCENT of the chunks
    #[arg(
        long,
        value_name = "PERCENT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "100",
        value_parser = parse_percent
    )]
    pub read_data: Option<f64>,
    /// Seed for the --read-data sample (the same seed reads the same chunks)
    #[arg(long, requires = "read_data")]
    pub seed: Option<u64>,
    /// Reader threads for --read-data [default: two per CPU]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Print the result as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

/// `strata repair`
#[derive(Args, Debug)]
pub struct RepairArgs {
    /// Rebuild into a temporary database and report; change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Also re-read and re-hash every chunk, dropping index entries of chunks that fail
    #[arg(long)]
    pub read_data: bool,
    /// Reader threads for --read-data [default: two per CPU]
    #[arg(long, default_value_t = 0, hide_default_value = true)]
    pub threads: usize,
    /// Print the result as JSON (format documented in README.md)
    #[arg(long)]
    pub json: bool,
}

fn parse_percent(s: &str) -> std::result::Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("not a percentage: {s:?}"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("must be above 0 and at most 100, not {s}"))
    }
}

/// Runs `strata check`.
pub fn run_check(path: &Path, a: CheckArgs) -> Result<i32> {
    let (repo, copy) = match check::open_copy(path) {
        Ok(r) => r,
        // Nothing else can be checked without the index; say so in the report's own form.
        Err(Error::IndexMissing(p)) => {
            return Ok(index_unusable(
                ProblemKind::IndexMissing,
                Error::IndexMissing(p),
                path,
                &a,
            ))
        }
        Err(Error::IndexDamaged { detail, .. }) => {
            // The error names check's private copy; the user's repository is `path`.
            let e = Error::IndexDamaged {
                path: path.to_path_buf(),
                detail,
            };
            return Ok(index_unusable(ProblemKind::IndexDamaged, e, path, &a));
        }
        Err(e) => return Err(e),
    };
    let status = StatusLine::data("Verifying");
    let opts = CheckOptions {
        read_data: a.read_data,
        seed: a.seed,
        threads: a.threads,
        progress: status.progress(),
    };
    let report = check::check(&repo, &opts);
    drop(status);
    let report = report?;
    print_check(Some(&repo), &report, a.json);
    record_check(path, &report, &a);
    // The copy holds what the index holds: the lookup files are written anew from it, so that
    // `cat` answers what the check just reported (a chunk the index lost stays lost to both).
    if let Err(e) = crate::lookup::drop_tables(path) {
        log::warn!("Could not remove the lookup tables: {e}");
    } else {
        crate::ops::publish_lookups(&repo, &[]);
    }
    // The database is a private copy: nothing to flush, only to delete.
    std::mem::forget(repo);
    drop(copy);
    Ok(check_code(&report))
}

/// Keeps the damage marker (which `prune` honours) in step with what this check found.
fn record_check(path: &Path, report: &CheckReport, a: &CheckArgs) {
    let read_all = a.read_data.is_some_and(|p| p >= 100.0);
    if let Err(e) = check::marker::record_check(path, report, a.read_data.is_some(), read_all) {
        log::warn!("Could not update the damage marker: {e}");
    }
}

/// Reports an index that cannot be read at all as check's only problem; exit code 4 (damage).
fn index_unusable(kind: ProblemKind, e: Error, path: &Path, a: &CheckArgs) -> i32 {
    let report = CheckReport {
        problems: vec![Problem {
            kind,
            message: e.to_string(),
            snapshot: None,
            chunk: None,
            pack: None,
        }],
        ..Default::default()
    };
    print_check(None, &report, a.json);
    record_check(path, &report, a);
    EXIT_DAMAGE
}

/// Runs `strata repair`.
pub fn run_repair(path: &Path, a: RepairArgs) -> Result<i32> {
    let status = StatusLine::data("Scanning packs");
    let opts = RepairOptions {
        dry_run: a.dry_run,
        read_data: a.read_data,
        threads: a.threads,
        progress: status.progress(),
    };
    let report = repair::repair(path, &opts);
    drop(status);
    let report = report?;
    print_repair(path, &report, a.json);
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

/// The check report as JSON (documented in README.md).
pub fn check_json(repo: Option<&Repo>, r: &CheckReport) -> Value {
    let opt = |v: Option<String>| v.map_or(Value::Null, Value::String);
    json!({
        "clean": r.problems.is_empty(),
        "damaged": r.damaged(),
        "problems": r.problems.iter().map(|p| json!({
            "kind": p.kind.name(),
            "severity": match p.severity() { Severity::Damage => "damage", Severity::Leftover => "leftover" },
            "message": p.message,
            "snapshot": opt(p.snapshot.map(|s| s.to_string())),
            "chunk": opt(p.chunk.map(|c| c.to_string())),
            "pack": opt(p.pack.map(|c| c.to_string())),
        })).collect::<Vec<_>>(),
        "damaged_files": r.damaged_files.iter().map(|f| {
            let mut m = path_json(&f.path);
            m.insert("snapshot".into(), json!(f.snapshot.to_string()));
            m.insert("snapshot_name".into(), json!(snapshot_name(repo, &f.snapshot)));
            m.insert("chunks".into(), json!(f.chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>()));
            Value::Object(m)
        }).collect::<Vec<_>>(),
        "damaged_snapshots": r.damaged_snapshots.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
        "bad_chunks": r.bad_chunks.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        "stats": {
            "snapshots": r.stats.snapshots,
            "layer_entries": r.stats.layer_entries,
            "index_entries": r.stats.index_entries,
            "packs": r.stats.packs,
            "chunks_referenced": r.stats.chunks_referenced,
            "records_verified": r.stats.records_verified,
            "bytes_verified": r.stats.bytes_verified,
            "elapsed_ms": r.stats.elapsed_ms,
        }
    })
}

/// Problems listed per kind before the rest are summarized, in human output.
const MAX_PER_KIND: usize = 20;

fn print_check(repo: Option<&Repo>, r: &CheckReport, json_out: bool) {
    let mut out = std::io::stdout().lock();
    if json_out {
        let _ = writeln!(out, "{}", check_json(repo, r));
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
        let v = json!({
            "dry_run": r.dry_run,
            "packs": r.packs,
            "pack_bytes": r.pack_bytes,
            "records": r.records,
            "index_entries": r.index_entries,
            "duplicates": r.duplicates,
            "torn": r.torn.iter().map(|(p, t)| json!({
                "pack": p.to_string(), "offset": t.offset, "len": t.len,
                "resynced": t.resynced, "reason": t.reason,
            })).collect::<Vec<_>>(),
            "bad_pack_headers": r.bad_pack_headers.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
            "corrupt_records": r.corrupt.iter().map(|c| json!({
                "id": c.id.to_string(), "pack": c.pack.to_string(), "detail": c.detail,
            })).collect::<Vec<_>>(),
            "snapshots_restored": r.snapshots.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
            "snapshots_dropped": r.dropped.iter().map(|d| json!({
                "id": d.id.to_string(), "reason": d.reason,
            })).collect::<Vec<_>>(),
            "snapshots_written_back": r.rewritten.iter().map(|d| json!({
                "id": d.id.to_string(), "reason": d.reason,
            })).collect::<Vec<_>>(),
            "tombstoned": r.tombstoned,
            "dictionary": r.dictionary,
            "compression": r.compression,
            "compression_from_old_index": r.compression_from_old_index,
            "moved_aside": r.moved_aside.as_ref().map(|p| p.display().to_string()),
            "elapsed_ms": r.elapsed_ms,
            "after": check_json(None, &r.after),
        });
        let _ = writeln!(out, "{v}");
        return;
    }
    let _ = (|| -> std::io::Result<()> {
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
        write_check_human(&mut out, None, &r.after)
    })();
}
