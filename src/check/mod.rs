//! `strata check`: verifies a repository's structure (and, on request, its data) and says which
//! files in which snapshots are damaged. It changes neither the index nor the packs; the CLI then
//! records the outcome in the damage marker ([`marker`]) that `prune` honours.
//!
//! What is checked, in order:
//! 1. every snapshot record decodes; its parent chain exists and ends in a full layer (a non-full
//!    layer without a parent breaks it: [`crate::layers::chain_of`] is the walk);
//! 2. every pack's 16-byte header (each byte: magic, version, reserved word); every index entry
//!    decodes, names an existing pack, lies within it, and the record header at that offset
//!    verifies and agrees with the entry (id, lengths, compression) — headers only;
//! 3. every metadata record (layer blobs, snapshot blobs, the dictionary, forget tombstones) is read
//!    and verified: they are small, and they are what `repair` would rebuild from; each snapshot's
//!    layer blobs and its snapshot blob exist, and the blobs hold as many entries as its layer;
//!    each snapshot record equals its authoritative snapshot blob (the last written), field by
//!    field — a record whose parent or kind was changed would otherwise show a wrong tree
//!    silently. Only the figures a backup learns after writing the blob may differ
//!    ([`record_differences`]);
//! 4. every layer entry decodes and every chunk it references is indexed; the `layerdirs` of each
//!    layer that does not end its chain agree with its entries (a missing directory would hide
//!    entries from views);
//! 5. leftovers: layer or layerdirs keys of snapshots that do not exist (an interrupted backup);
//! 6. the dictionary exists when a record uses it;
//! 7. with `read_data`, chunk records (all, or a seeded random sample) are read and re-hashed, in
//!    parallel;
//! 8. an unfinished `forget`/`consolidate` is reported as such (a leftover: the next command
//!    completes it), and the inconsistencies it leaves on its snapshots are not counted as damage.
//!
//! Bad chunks are then mapped to damage: the layer entries that reference them, and for each, the
//! snapshots whose *view* resolves that path to an entry using a bad chunk (a layer shadowed by a
//! newer one in some views damages only the views that still show it).

mod damage;
mod entries;
pub mod health;
mod index;
mod interrupted;
pub mod marker;
mod metadata;
mod read;
mod report;
pub mod run;
mod snapshots;

pub use health::{Health, HealthOptions, Status};
pub use metadata::record_differences;
pub use read::{copy_db, open_copy, verify_with, DbCopy};
pub use report::{CheckReport, CheckStats, DamagedFile, Problem, ProblemKind, Severity};

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use crate::error::Result;
use crate::id::{ChunkId, PackId, SnapshotId};
use crate::progress::ProgressHandle;
use crate::repo::Repo;
use snapshots::Snapshots;

/// What to check. The `strata check` options are these fields (clap), so the CLI fills them
/// directly; `help` is the CLI's wording, the doc comments the library's.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct CheckOptions {
    /// Re-read and re-hash chunk payloads: `None` checks structure only; `Some(p)` reads a random
    /// `p` percent of the chunk records (100 = all).
    #[arg(
        long,
        value_name = "PERCENT",
        num_args = 0..=1,
        require_equals = true,
        default_missing_value = "100",
        value_parser = parse_percent,
        help = "Also re-read and re-hash chunk data: all of it, or a random PERCENT of the chunks"
    )]
    pub read_data: Option<f64>,
    /// Seed of the random sample (a fixed seed gives the same sample; default: from the clock).
    #[arg(
        long,
        requires = "read_data",
        help = "Seed for the --read-data sample (the same seed reads the same chunks)"
    )]
    pub seed: Option<u64>,
    /// Reader threads for `read_data` (0: two per CPU).
    #[arg(
        long,
        default_value_t = 0,
        hide_default_value = true,
        help = "Reader threads for --read-data [default: two per CPU]"
    )]
    pub threads: usize,
    /// Receives `data_checked` as records are verified.
    #[arg(skip)]
    pub progress: ProgressHandle,
}

/// A `--read-data` percentage: above 0, at most 100, with or without a `%`.
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

/// Collects problems and bad chunks while checking.
#[derive(Default)]
struct State {
    problems: Vec<Problem>,
    /// Records that cannot be read; the reason is in `problems`.
    bad: BTreeSet<ChunkId>,
    /// Entries that do not decode, as (layer, path).
    undecodable: Vec<(SnapshotId, Vec<u8>)>,
}

impl State {
    fn problem(
        &mut self,
        kind: ProblemKind,
        message: String,
        snapshot: Option<SnapshotId>,
        chunk: Option<ChunkId>,
        pack: Option<PackId>,
    ) {
        self.problems.push(Problem {
            kind,
            message,
            snapshot,
            chunk,
            pack,
        });
    }

    /// Marks a record unreadable (the first reason wins) and reports it once.
    fn bad_chunk(&mut self, id: ChunkId, kind: ProblemKind, detail: String, pack: Option<PackId>) {
        if self.bad.insert(id) {
            self.problem(kind, detail, None, Some(id), pack);
        }
    }
}

/// Checks `repo`; see the module documentation. Problems are reported, not returned as errors;
/// an error means the check itself could not run (e.g. the database cannot be read).
pub fn check(repo: &Arc<Repo>, opts: &CheckOptions) -> Result<CheckReport> {
    // A check judges what the storage holds, not a cache of it (a bucket's block cache).
    repo.packs().verify_at_source(true);
    let r = check_storage(repo, opts);
    repo.packs().verify_at_source(false);
    r
}

fn check_storage(repo: &Arc<Repo>, opts: &CheckOptions) -> Result<CheckReport> {
    let start = Instant::now();
    let done =
        |phase: &str| log::debug!("Check: {phase} done at {} ms", start.elapsed().as_millis());
    let mut st = State::default();
    let mut stats = CheckStats::default();
    let snaps = snapshots::read(repo, &mut st)?;
    stats.snapshots = snaps.all.len() as u64;
    done("snapshots and chains");
    let index = index::check(repo, opts.threads, &mut st, &mut stats)?;
    done("index entries and record headers");
    let meta = metadata::read(repo, &index, &opts.progress, &mut st, &mut stats);
    let mismatched = metadata::compare(&snaps, &meta, &mut st);
    done("metadata records");
    let derived = entries::check_entries(repo, &snaps, &index, &meta, &mut st, &mut stats)?;
    done("layer entries");
    entries::check_layerdirs(repo, &snaps, &derived, &mut st)?;
    metadata::check_dictionary(repo, &index, &meta, &mut st);
    done("layerdirs and dictionary");
    if let Some(percent) = opts.read_data {
        read::read_chunks(repo, &index, percent, opts, &mut st, &mut stats);
    }
    done("chunk payloads");
    interrupted::explain(repo, &mut st)?;
    let mut report = damage_report(repo, &snaps, &mismatched, st)?;
    stats.elapsed_ms = start.elapsed().as_millis() as u64;
    report.stats = stats;
    Ok(report)
}

/// The report: bad chunks mapped to the files and snapshot views they damage, plus the
/// snapshots damaged as a whole (a broken chain, a record that differs from its blob).
fn damage_report(
    repo: &Arc<Repo>,
    snaps: &Snapshots,
    mismatched: &BTreeSet<SnapshotId>,
    st: State,
) -> Result<CheckReport> {
    let (damaged_files, mut damaged) = damage::map_damage(repo, snaps, &st)?;
    damaged.extend(snaps.broken.iter().copied());
    // A record that disagrees with its blob may show a wrong tree: in its own view, and in the
    // view of every snapshot whose chain goes through it.
    for (sid, chain) in &snaps.chains {
        if chain.iter().any(|c| mismatched.contains(c)) {
            damaged.insert(*sid);
        }
    }
    damaged.extend(mismatched.iter().copied());
    let mut damaged_snapshots: Vec<SnapshotId> = damaged.into_iter().collect();
    damaged_snapshots.sort_by_key(|id| snaps.all.get(id).map(|s| (s.time_ns, s.id)));
    Ok(CheckReport {
        problems: st.problems,
        damaged_files,
        damaged_snapshots,
        bad_chunks: st.bad.iter().copied().collect(),
        stats: CheckStats::default(),
    })
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[cfg(test)]
mod tests;
