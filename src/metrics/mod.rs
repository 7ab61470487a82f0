//! Metrics for monitoring: what `--metrics-file PATH` writes after backup, check, forget, prune,
//! restore and copy, in the Prometheus text format that node_exporter's textfile collector reads.
//!
//! One file may collect the series of several commands, sources and repositories (a file per
//! host is usual): each run reads the previous file, replaces its own series and keeps the rest
//! ([`file`]). A run writes on success and on failure. A failed run sets its failure time and
//! `strata_last_run_success 0`, keeps its last success time (how long ago that was is what
//! alerts want) and its counters, and drops the gauges its last success had set, so nothing in
//! the file still claims what the failed run could not confirm.
//!
//! Success is exit code 0 or 3 (completed with warnings), except for `check`, where damage (exit
//! code 4) is a failure too: the check ran, and its figures are written, but the repository is
//! not healthy. Every family is listed in [`families`] and documented in the README.
//!
//! Must not: print, or let a metrics failure change what the command did (the CLI decides what
//! an unwritable metrics file means for the exit code).

pub mod families;
pub mod file;
pub mod text;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use crate::check::{CheckReport, Severity};
use crate::error::Result;
use crate::prune::PruneStats;
use crate::repo::Repo;
use crate::restore::RestoreStats;
use crate::snapshot::BackupStats;
use families as f;
use file::Changes;
use text::{Labels, Sample};

/// `--metrics-file`, on every command that writes metrics. The options are these fields (clap).
#[derive(Clone, Debug, Default, clap::Args)]
pub struct MetricsOptions {
    /// Where to write the metrics (none: no metrics).
    #[arg(
        long,
        value_name = "PATH",
        help = "Write Prometheus metrics of this run into PATH (text format, for node_exporter's \
                textfile collector; replaced atomically, series of other commands and sources \
                in the file are kept)"
    )]
    pub metrics_file: Option<PathBuf>,
}

/// The commands that write metrics; `name()` is the `command` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Command {
    /// `strata backup`
    Backup,
    /// `strata check`
    Check,
    /// `strata forget`
    Forget,
    /// `strata prune`
    Prune,
    /// `strata restore`
    Restore,
    /// `strata copy`
    Copy,
}

impl Command {
    /// The `command` label value.
    pub fn name(self) -> &'static str {
        match self {
            Command::Backup => "backup",
            Command::Check => "check",
            Command::Forget => "forget",
            Command::Prune => "prune",
            Command::Restore => "restore",
            Command::Copy => "copy",
        }
    }
}

/// What a backup read and stored, and the view of the snapshot it made.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackupFigures {
    /// Files read.
    pub files_read: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Chunks the repository did not hold yet.
    pub new_chunks: u64,
    /// Their bytes before compression.
    pub new_bytes: u64,
    /// Their bytes as stored.
    pub stored_bytes: u64,
    /// Regular files in the new snapshot's view.
    pub snapshot_files: u64,
    /// Their bytes.
    pub snapshot_bytes: u64,
    /// The anomaly check's verdict (`None`: the check was turned off).
    pub anomaly: Option<AnomalyFigures>,
}

impl BackupFigures {
    /// The figures of a committed snapshot, without an anomaly verdict.
    pub fn of(s: &BackupStats) -> BackupFigures {
        BackupFigures {
            files_read: s.files_read,
            read_bytes: s.read_bytes,
            new_chunks: s.new_chunks,
            new_bytes: s.new_bytes,
            stored_bytes: s.stored_bytes,
            snapshot_files: s.files,
            snapshot_bytes: s.total_bytes,
            anomaly: None,
        }
    }
}

/// The anomaly check of a backup.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AnomalyFigures {
    /// The score (1 or more: anomalous).
    pub score: f64,
    /// Whether the snapshot was marked anomalous.
    pub anomalous: bool,
    /// Share of the reference's files rewritten (`None`: not judged).
    pub rewritten_share: Option<f64>,
    /// Share of the reference's files deleted (`None`: not judged).
    pub deleted_share: Option<f64>,
    /// Stored over plain bytes of the new data (`None`: no new data).
    pub compression_ratio: Option<f64>,
}

impl AnomalyFigures {
    /// The figures of a verdict.
    pub fn of(a: &crate::backup::anomaly::Assessment) -> AnomalyFigures {
        AnomalyFigures {
            score: a.score,
            anomalous: a.anomalous,
            rewritten_share: a.figures.rewritten_share,
            deleted_share: a.figures.deleted_share,
            compression_ratio: a.figures.compression_ratio,
        }
    }
}

/// The gauges of the anomaly check, removed when a run cannot say what they would.
const ANOMALY_GAUGES: [&f::Def; 5] = [
    &f::BACKUP_ANOMALY_SCORE,
    &f::BACKUP_ANOMALOUS,
    &f::BACKUP_REWRITTEN_RATIO,
    &f::BACKUP_DELETED_RATIO,
    &f::BACKUP_COMPRESSION_RATIO,
];

/// What a check found.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct CheckFigures {
    /// Damaged files (per snapshot view).
    pub damaged_files: u64,
    /// Snapshots with damage in their view.
    pub damaged_snapshots: u64,
    /// Unreadable chunks and metadata records.
    pub bad_chunks: u64,
    /// Problems that are damage.
    pub damage_problems: u64,
    /// Problems that are leftovers.
    pub leftover_problems: u64,
    /// Bytes of records read and verified.
    pub verified_bytes: u64,
}

impl CheckFigures {
    /// The figures of a check report.
    pub fn of(r: &CheckReport) -> CheckFigures {
        let damage = r
            .problems
            .iter()
            .filter(|p| p.severity() == Severity::Damage)
            .count() as u64;
        CheckFigures {
            damaged_files: r.damaged_files.len() as u64,
            damaged_snapshots: r.damaged_snapshots.len() as u64,
            bad_chunks: r.bad_chunks.len() as u64,
            damage_problems: damage,
            leftover_problems: r.problems.len() as u64 - damage,
            verified_bytes: r.stats.bytes_verified,
        }
    }
}

/// What a prune freed (zero for a dry run).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PruneFigures {
    /// Pack files deleted.
    pub deleted_packs: u64,
    /// Pack files rewritten.
    pub rewritten_packs: u64,
    /// Bytes freed.
    pub reclaimed_bytes: u64,
}

impl PruneFigures {
    /// The figures of a prune; a dry run freed nothing.
    pub fn of(s: &PruneStats, dry_run: bool) -> PruneFigures {
        if dry_run {
            return PruneFigures::default();
        }
        PruneFigures {
            deleted_packs: s.packs_deleted,
            rewritten_packs: s.packs_rewritten,
            reclaimed_bytes: s.reclaimed_bytes(),
        }
    }
}

/// What a forget removed, and the prune it ran (`--prune`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ForgetFigures {
    /// Snapshots removed (zero for a dry run).
    pub removed_snapshots: u64,
    /// The prune that followed.
    pub prune: Option<PruneFigures>,
}

/// What a restore wrote (zero for a dry run).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct RestoreFigures {
    /// Files written.
    pub files: u64,
    /// Bytes written.
    pub written_bytes: u64,
}

impl RestoreFigures {
    /// The figures of a restore; a dry run wrote nothing.
    pub fn of(s: &RestoreStats, dry_run: bool) -> RestoreFigures {
        if dry_run {
            return RestoreFigures::default();
        }
        RestoreFigures {
            files: s.files,
            written_bytes: s.written_bytes,
        }
    }
}

/// A command's own figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Figures {
    /// See [`BackupFigures`].
    Backup(BackupFigures),
    /// See [`CheckFigures`].
    Check(CheckFigures),
    /// See [`ForgetFigures`].
    Forget(ForgetFigures),
    /// See [`PruneFigures`].
    Prune(PruneFigures),
    /// See [`RestoreFigures`].
    Restore(RestoreFigures),
}

/// The snapshots of one source.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceFigures {
    /// The source, as `strata snapshots` names it.
    pub source: String,
    /// Its snapshots.
    pub snapshots: u64,
    /// Time of its newest snapshot, ns since the epoch.
    pub newest_ns: i64,
}

/// The repository as a command left it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RepositoryFigures {
    /// Its path (canonical when it can be resolved): the `repository` label.
    pub path: String,
    /// Snapshots.
    pub snapshots: u64,
    /// Pack files.
    pub packs: u64,
    /// Bytes of the pack files.
    pub size_bytes: u64,
    /// Per source, sorted by source.
    pub sources: Vec<SourceFigures>,
}

impl RepositoryFigures {
    /// Reads the snapshot list and the pack sizes of `repo`.
    pub fn of(repo: &Repo) -> Result<RepositoryFigures> {
        let snaps = repo.snapshots()?;
        let packs = repo.packs().list()?;
        let mut sources: BTreeMap<&str, SourceFigures> = BTreeMap::new();
        for s in &snaps {
            let e = sources.entry(&s.source).or_insert_with(|| SourceFigures {
                source: s.source.clone(),
                snapshots: 0,
                newest_ns: s.time_ns,
            });
            e.snapshots += 1;
            e.newest_ns = e.newest_ns.max(s.time_ns);
        }
        Ok(RepositoryFigures {
            path: repository_label(repo.path()),
            snapshots: snaps.len() as u64,
            packs: packs.len() as u64,
            size_bytes: packs.iter().map(|(_, len)| len).sum(),
            sources: sources.into_values().collect(),
        })
    }
}

/// The `repository` label of the repository at `path`: its canonical path when it resolves, so
/// that `--repo ./r` and `--repo /backup/r` write the same series.
pub fn repository_label(path: &Path) -> String {
    std::fs::canonicalize(path)
        .unwrap_or_else(|_| path.to_path_buf())
        .to_string_lossy()
        .into_owned()
}

/// The `source` label of a backup that has not resolved its source yet (it failed early): the
/// `--source-name`, else the source's absolute path, as a successful backup would name it.
pub fn backup_source_label(source_name: Option<&str>, source: &Path) -> String {
    match source_name {
        Some(n) => n.to_string(),
        None => std::fs::canonicalize(source)
            .unwrap_or_else(|_| std::path::absolute(source).unwrap_or(source.to_path_buf()))
            .to_string_lossy()
            .into_owned(),
    }
}

/// Everything the metrics file says about one run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RunReport {
    /// The command.
    pub command: Command,
    /// The source (backup only).
    pub source: Option<String>,
    /// Whether the run succeeded (see the module documentation).
    pub success: bool,
    /// When it ended, ns since the epoch.
    pub ended_ns: i64,
    /// How long it took.
    pub duration_secs: f64,
    /// Its warnings.
    pub warnings: u64,
    /// Its errors.
    pub errors: u64,
    /// Its own figures; `None` when it failed before it had any.
    pub figures: Option<Figures>,
    /// The repository after it; `None` when it could not be read.
    pub repository: Option<RepositoryFigures>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

impl RunReport {
    /// What this run changes in the metrics file.
    pub fn changes(&self) -> Changes {
        let mut c = Changes::default();
        let mut run = labels(&[("command", self.command.name())]);
        if let Some(s) = &self.source {
            run.push(("source".into(), s.clone()));
        }
        let set = |c: &mut Changes, d: &f::Def, l: &Labels, v: f64| {
            c.set.push(Sample {
                name: d.name.into(),
                labels: l.clone(),
                value: v,
            })
        };
        let ended = self.ended_ns as f64 / 1e9;
        set(&mut c, &f::LAST_RUN_TIMESTAMP, &run, ended);
        let when = if self.success {
            &f::LAST_SUCCESS_TIMESTAMP
        } else {
            &f::LAST_FAILURE_TIMESTAMP
        };
        set(&mut c, when, &run, ended);
        set(&mut c, &f::LAST_RUN_SUCCESS, &run, f64::from(self.success));
        set(&mut c, &f::LAST_RUN_DURATION, &run, self.duration_secs);
        set(&mut c, &f::LAST_RUN_WARNINGS, &run, self.warnings as f64);
        set(&mut c, &f::LAST_RUN_ERRORS, &run, self.errors as f64);
        let mut result = run.clone();
        let outcome = if self.success { "success" } else { "failure" };
        result.push(("result".into(), outcome.into()));
        c.add.push(Sample {
            name: f::RUNS.name.into(),
            labels: result,
            value: 1.0,
        });
        let source = labels(&[("source", self.source.as_deref().unwrap_or(""))]);
        match &self.figures {
            Some(fig) => figure_changes(&mut c, fig, &source),
            None => {
                // Gauges of the last success would now claim what this run could not confirm.
                let gauges: &[&f::Def] = match self.command {
                    Command::Backup => &[
                        &f::BACKUP_SNAPSHOT_FILES,
                        &f::BACKUP_SNAPSHOT_SIZE,
                        &f::BACKUP_ANOMALY_SCORE,
                        &f::BACKUP_ANOMALOUS,
                        &f::BACKUP_REWRITTEN_RATIO,
                        &f::BACKUP_DELETED_RATIO,
                        &f::BACKUP_COMPRESSION_RATIO,
                    ],
                    Command::Check => &[
                        &f::CHECK_DAMAGED_FILES,
                        &f::CHECK_DAMAGED_SNAPSHOTS,
                        &f::CHECK_BAD_CHUNKS,
                        &f::CHECK_PROBLEMS,
                    ],
                    Command::Forget | Command::Prune | Command::Restore | Command::Copy => &[],
                };
                let scope = if self.command == Command::Backup {
                    source.clone()
                } else {
                    Labels::new()
                };
                for d in gauges {
                    c.remove.push((d.name, scope.clone()));
                }
            }
        }
        if let Some(r) = &self.repository {
            repository_changes(&mut c, r);
        }
        c
    }
}

/// The series of a command's own figures: gauges set, counters added to.
fn figure_changes(c: &mut Changes, fig: &Figures, source: &Labels) {
    let none = Labels::new();
    let mut set = |d: &f::Def, l: &Labels, v: u64| {
        c.set.push(Sample {
            name: d.name.into(),
            labels: l.clone(),
            value: v as f64,
        })
    };
    let mut adds: Vec<(&f::Def, Labels, u64)> = Vec::new();
    match fig {
        Figures::Backup(b) => {
            set(&f::BACKUP_SNAPSHOT_FILES, source, b.snapshot_files);
            set(&f::BACKUP_SNAPSHOT_SIZE, source, b.snapshot_bytes);
            for (d, v) in [
                (&f::BACKUP_FILES_READ, b.files_read),
                (&f::BACKUP_READ_BYTES, b.read_bytes),
                (&f::BACKUP_NEW_CHUNKS, b.new_chunks),
                (&f::BACKUP_NEW_BYTES, b.new_bytes),
                (&f::BACKUP_STORED_BYTES, b.stored_bytes),
            ] {
                adds.push((d, source.clone(), v));
            }
            anomaly_changes(c, b.anomaly.as_ref(), source, &mut adds);
        }
        Figures::Check(k) => {
            set(&f::CHECK_DAMAGED_FILES, &none, k.damaged_files);
            set(&f::CHECK_DAMAGED_SNAPSHOTS, &none, k.damaged_snapshots);
            set(&f::CHECK_BAD_CHUNKS, &none, k.bad_chunks);
            let sev = |s: &str| labels(&[("severity", s)]);
            set(&f::CHECK_PROBLEMS, &sev("damage"), k.damage_problems);
            set(&f::CHECK_PROBLEMS, &sev("leftover"), k.leftover_problems);
            adds.push((&f::CHECK_VERIFIED_BYTES, none.clone(), k.verified_bytes));
        }
        Figures::Forget(g) => {
            adds.push((&f::FORGET_REMOVED, none.clone(), g.removed_snapshots));
            if let Some(p) = &g.prune {
                prune_adds(&mut adds, p);
            }
        }
        Figures::Prune(p) => prune_adds(&mut adds, p),
        Figures::Restore(r) => {
            adds.push((&f::RESTORE_FILES, none.clone(), r.files));
            adds.push((&f::RESTORE_WRITTEN_BYTES, none.clone(), r.written_bytes));
        }
    }
    for (d, l, v) in adds {
        c.add.push(Sample {
            name: d.name.into(),
            labels: l,
            value: v as f64,
        });
    }
}

/// The anomaly gauges of a backup (`None`: the check was off, so the gauges go, rather than
/// keep an earlier backup's verdict), and its counter.
fn anomaly_changes(
    c: &mut Changes,
    a: Option<&AnomalyFigures>,
    source: &Labels,
    adds: &mut Vec<(&f::Def, Labels, u64)>,
) {
    let Some(a) = a else {
        for d in ANOMALY_GAUGES {
            c.remove.push((d.name, source.clone()));
        }
        return;
    };
    let mut gauge = |d: &f::Def, v: Option<f64>| match v {
        Some(v) => c.set.push(Sample {
            name: d.name.into(),
            labels: source.clone(),
            value: v,
        }),
        None => c.remove.push((d.name, source.clone())),
    };
    gauge(&f::BACKUP_ANOMALY_SCORE, Some(a.score));
    gauge(&f::BACKUP_ANOMALOUS, Some(f64::from(a.anomalous)));
    gauge(&f::BACKUP_REWRITTEN_RATIO, a.rewritten_share);
    gauge(&f::BACKUP_DELETED_RATIO, a.deleted_share);
    gauge(&f::BACKUP_COMPRESSION_RATIO, a.compression_ratio);
    adds.push((&f::BACKUP_ANOMALIES, source.clone(), u64::from(a.anomalous)));
}

fn prune_adds(adds: &mut Vec<(&f::Def, Labels, u64)>, p: &PruneFigures) {
    adds.push((&f::PRUNE_DELETED_PACKS, Labels::new(), p.deleted_packs));
    adds.push((&f::PRUNE_REWRITTEN_PACKS, Labels::new(), p.rewritten_packs));
    adds.push((&f::PRUNE_RECLAIMED_BYTES, Labels::new(), p.reclaimed_bytes));
}

/// The repository's gauges; its per-source series are replaced as a whole (a source whose
/// snapshots are all forgotten disappears).
fn repository_changes(c: &mut Changes, r: &RepositoryFigures) {
    let repo = labels(&[("repository", &r.path)]);
    c.remove.push((f::SOURCE_SNAPSHOTS.name, repo.clone()));
    c.remove.push((f::SOURCE_NEWEST.name, repo.clone()));
    for (d, v) in [
        (&f::REPOSITORY_SNAPSHOTS, r.snapshots as f64),
        (&f::REPOSITORY_PACKS, r.packs as f64),
        (&f::REPOSITORY_SIZE, r.size_bytes as f64),
    ] {
        c.set.push(Sample {
            name: d.name.into(),
            labels: repo.clone(),
            value: v,
        });
    }
    for s in &r.sources {
        let l = labels(&[("repository", &r.path), ("source", &s.source)]);
        c.set.push(Sample {
            name: f::SOURCE_SNAPSHOTS.name.into(),
            labels: l.clone(),
            value: s.snapshots as f64,
        });
        c.set.push(Sample {
            name: f::SOURCE_NEWEST.name.into(),
            labels: l,
            value: s.newest_ns as f64 / 1e9,
        });
    }
}

/// Collects what a run reports while it runs, and writes the metrics file when it ends. Does
/// nothing (and computes nothing) without `--metrics-file`.
pub struct Recorder {
    file: Option<PathBuf>,
    command: Command,
    started: Instant,
    pending: RefCell<Pending>,
}

#[derive(Default)]
struct Pending {
    source: Option<String>,
    success: Option<bool>,
    warnings: u64,
    errors: u64,
    figures: Option<Figures>,
    repository: Option<RepositoryFigures>,
}

impl Recorder {
    /// Starts timing a run of `command`.
    pub fn start(opts: &MetricsOptions, command: Command) -> Recorder {
        Recorder {
            file: opts.metrics_file.clone(),
            command,
            started: Instant::now(),
            pending: RefCell::default(),
        }
    }

    /// Whether a metrics file is to be written.
    pub fn is_enabled(&self) -> bool {
        self.file.is_some()
    }

    /// The backup's source label.
    pub fn source(&self, source: impl Into<String>) {
        self.pending.borrow_mut().source = Some(source.into());
    }

    /// The command's own figures.
    pub fn figures(&self, figures: Figures) {
        self.pending.borrow_mut().figures = Some(figures);
    }

    /// The run's warnings and errors.
    pub fn counts(&self, warnings: u64, errors: u64) {
        let mut p = self.pending.borrow_mut();
        p.warnings = warnings;
        p.errors = errors;
    }

    /// Overrides the success the exit code implies (`check`: damage is a failure).
    pub fn success(&self, success: bool) {
        self.pending.borrow_mut().success = Some(success);
    }

    /// A committed backup: its source, figures and warnings (an anomalous layer is one), and the
    /// repository after it.
    pub fn backup(&self, repo: &Repo, out: &crate::backup::BackupOutcome) {
        let s = &out.snapshot;
        self.source(s.source.clone());
        let mut figures = BackupFigures::of(&s.stats);
        figures.anomaly = out.anomaly.as_ref().map(AnomalyFigures::of);
        self.figures(Figures::Backup(figures));
        let anomalous = out.anomaly.as_ref().is_some_and(|a| a.anomalous);
        self.counts(out.warnings.len() as u64 + u64::from(anomalous), 0);
        self.repository(repo);
    }

    /// Reads the repository's figures (only when enabled); a failure is logged and leaves the
    /// file's repository series as they were.
    pub fn repository(&self, repo: &Repo) {
        if !self.is_enabled() {
            return;
        }
        match RepositoryFigures::of(repo) {
            Ok(r) => self.pending.borrow_mut().repository = Some(r),
            Err(e) => log::warn!("Metrics: could not read the repository's figures: {e}"),
        }
    }

    /// The report of the run that ended with `exit` (the command's exit code or its error).
    pub fn report(&self, exit: &Result<i32>) -> RunReport {
        let p = self.pending.borrow();
        let success = p.success.unwrap_or(matches!(exit, Ok(0) | Ok(3)));
        RunReport {
            command: self.command,
            source: p.source.clone(),
            success,
            ended_ns: crate::time::now_ns(),
            duration_secs: self.started.elapsed().as_secs_f64(),
            warnings: p.warnings,
            errors: if success || p.errors > 0 { p.errors } else { 1 },
            figures: p.figures.clone(),
            repository: p.repository.clone(),
        }
    }

    /// Writes the metrics file for the run that ended with `exit`; nothing without a file.
    pub fn finish(&self, exit: &Result<i32>) -> Result<()> {
        match &self.file {
            Some(path) => file::update(path, &self.report(exit).changes()),
            None => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests;
