//! The anomaly check of a backup: does the layer just written look like a ransomware run (many
//! files rewritten, their new content incompressible as encrypted data is) or a mass deletion,
//! or is it many times larger than the source's usual layer?
//!
//! The backup measures what its layer changed as it goes ([`ChangeCounters`], filled by the
//! readers from what they already have: whether a file was in the reference view, whether its
//! read produced new chunks, and how well those compressed), so the check reads no data. The
//! source's history comes from the snapshot records ([`baseline`]), whose stats are the only
//! figures stored: the on-disk format does not change, and the verdict is kept as the tag
//! [`TAG`] on the snapshot.
//!
//! The judgement ([`assess`]) is a set of rules, each giving a score (its figure over its
//! threshold); the layer is anomalous when the highest score reaches 1. Thresholds grow with the
//! source's own history (a source that rewrites half its files every night is not alarming when
//! it does so again), and no rule looks at fewer than `--anomaly-min-files` files. A backup
//! without a reference (the first of its source) is not judged.
//!
//! Must not: read source data, fail a backup, or print.

mod rules;

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::compress;
use crate::id::SnapshotId;
use crate::snapshot::{BackupKind, BackupStats, Snapshot};
pub use rules::{assess, Assessment, Rule, RuleScore};

/// The tag an anomalous snapshot carries.
pub const TAG: &str = "anomaly";

/// New data whose stored size is at least this share of its size did not compress: encrypted,
/// random or already-compressed data.
pub const INCOMPRESSIBLE: f64 = 0.9;

/// A file's new data must be at least this large for its compressibility to be judged (tiny
/// payloads are stored raw whatever they hold).
const JUDGED_MIN_BYTES: u64 = 512;

/// With compression off, every this many new chunks of a file (from the first) is compressed
/// at level 1 only to measure it.
const SAMPLE_EVERY: u64 = 16;

const DEFAULT_DELETED: f64 = 20.0;
const DEFAULT_REWRITTEN: f64 = 25.0;
const DEFAULT_ENCRYPTED: f64 = 10.0;
const DEFAULT_GROWTH: f64 = 10.0;
const DEFAULT_CHURN_FACTOR: f64 = 4.0;
const DEFAULT_MIN_FILES: u64 = 10;
const DEFAULT_HISTORY: u64 = 7;

/// Thresholds of the anomaly check. The `strata backup` options are these fields (clap), so the
/// configuration file sets them too, per source as well. A threshold of 0 turns its rule off.
#[derive(Clone, Debug, clap::Args)]
pub struct AnomalyOptions {
    /// Skip the check: no score, no tag, no warning.
    #[arg(
        long = "no-anomaly-check",
        help = "Do not judge the new layer against the source's history (no anomaly warning, tag or score)"
    )]
    pub disabled: bool,
    /// Share (percent) of the reference view's files deleted that is anomalous.
    #[arg(
        long = "anomaly-deleted",
        value_name = "PCT",
        value_parser = parse_percent,
        default_value_t = DEFAULT_DELETED,
        help = "Anomaly: this percentage of the files deleted since the snapshot the layer is taken against (0: rule off)"
    )]
    pub deleted_pct: f64,
    /// Share (percent) of the reference view's files rewritten with new content that is
    /// anomalous, whatever the content.
    #[arg(
        long = "anomaly-rewritten",
        value_name = "PCT",
        value_parser = parse_percent,
        default_value_t = DEFAULT_REWRITTEN,
        help = "Anomaly: this percentage of the files rewritten with new content (0: rule off)"
    )]
    pub rewritten_pct: f64,
    /// Share (percent) of the reference view's files rewritten with content that does not
    /// compress that is anomalous, unless the source's recent layers did not compress either.
    #[arg(
        long = "anomaly-encrypted",
        value_name = "PCT",
        value_parser = parse_percent,
        default_value_t = DEFAULT_ENCRYPTED,
        help = "Anomaly: this percentage of the files rewritten with incompressible (e.g. encrypted) content, when the source's recent layers compressed (0: rule off)"
    )]
    pub encrypted_pct: f64,
    /// How many times the median of the recent layers is anomalous (new bytes and changed files
    /// both).
    #[arg(
        long = "anomaly-growth",
        value_name = "FACTOR",
        value_parser = parse_factor,
        default_value_t = DEFAULT_GROWTH,
        help = "Anomaly: new bytes and changed files both FACTOR times the median of the recent layers (0: rule off)"
    )]
    pub growth: f64,
    /// The share thresholds rise to this many times the source's usual share (the median of its
    /// recent layers), so that a source that changes much every night does not alarm.
    #[arg(
        long = "anomaly-churn-factor",
        value_name = "FACTOR",
        value_parser = parse_factor,
        default_value_t = DEFAULT_CHURN_FACTOR,
        help = "Anomaly: the share thresholds rise to FACTOR times the share of files the source's recent layers usually changed or deleted (0: thresholds as given)"
    )]
    pub churn_factor: f64,
    /// Rules look at no fewer files than this.
    #[arg(
        long = "anomaly-min-files",
        value_name = "N",
        default_value_t = DEFAULT_MIN_FILES,
        help = "Anomaly: no rule fires on fewer than N files"
    )]
    pub min_files: u64,
    /// How many recent layers of the source make its baseline.
    #[arg(
        long = "anomaly-history",
        value_name = "N",
        default_value_t = DEFAULT_HISTORY,
        value_parser = clap::value_parser!(u64).range(1..=1000),
        help = "Anomaly: compare with the median of the source's last N layers"
    )]
    pub history: u64,
}

impl Default for AnomalyOptions {
    fn default() -> Self {
        AnomalyOptions {
            disabled: false,
            deleted_pct: DEFAULT_DELETED,
            rewritten_pct: DEFAULT_REWRITTEN,
            encrypted_pct: DEFAULT_ENCRYPTED,
            growth: DEFAULT_GROWTH,
            churn_factor: DEFAULT_CHURN_FACTOR,
            min_files: DEFAULT_MIN_FILES,
            history: DEFAULT_HISTORY,
        }
    }
}

/// A percentage, 0 to 100, with an optional `%`.
fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("Not a percentage: {s:?} (try 20 or 2.5)"))?;
    if !(0.0..=100.0).contains(&v) {
        return Err(format!("{s} is not in 0..=100"));
    }
    Ok(v)
}

/// A non-negative factor.
fn parse_factor(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("Not a number: {s:?} (try 10 or 2.5)"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("{s} is not a factor of 0 or more"));
    }
    Ok(v)
}

/// The new data one file's read (or a whole layer) produced: chunks the repository did not hold,
/// and, for the part whose compressibility is known, its plain and stored bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct NewData {
    pub(crate) chunks: u64,
    pub(crate) raw_bytes: u64,
    judged_raw: u64,
    judged_stored: u64,
}

impl NewData {
    /// A new chunk `data` stored as `stored` payload bytes at compression `level`. At level 0
    /// nothing is compressed, so a sample of the chunks is compressed here (level 1, in memory)
    /// only to know how well it would have.
    pub(crate) fn record(&mut self, level: i32, data: &[u8], stored: u64) {
        let raw = data.len() as u64;
        if level > 0 {
            self.judged_raw += raw;
            self.judged_stored += stored;
        } else if self.chunks.is_multiple_of(SAMPLE_EVERY) {
            self.judged_raw += raw;
            self.judged_stored +=
                compress::compress(data, 1, None).map_or(raw, |(_, c)| c.len() as u64);
        }
        self.chunks += 1;
        self.raw_bytes += raw;
    }

    /// Whether the new data is large enough to judge and did not compress.
    fn incompressible(&self) -> bool {
        self.judged_raw >= JUDGED_MIN_BYTES
            && self.judged_stored as f64 >= INCOMPRESSIBLE * self.judged_raw as f64
    }
}

/// What the readers of one backup count for the check (atomics: several readers).
#[derive(Default)]
pub(crate) struct ChangeCounters {
    /// Files stored that the reference view did not have as files.
    added: AtomicU64,
    /// Files whose read produced new chunks.
    new_data: AtomicU64,
    /// Of those, files the reference view had: rewritten with new content.
    rewritten: AtomicU64,
    /// Files whose new data did not compress, and of those the rewritten ones.
    incompressible: AtomicU64,
    incompressible_rewritten: AtomicU64,
    /// New chunks of all files, and their compressibility.
    raw_bytes: AtomicU64,
    judged_raw: AtomicU64,
    judged_stored: AtomicU64,
}

impl ChangeCounters {
    /// A file stored with the new data `new`; `was_file`: the reference view has a regular file
    /// at its path.
    pub(crate) fn file(&self, was_file: bool, new: &NewData) {
        let add = |c: &AtomicU64, n: u64| {
            c.fetch_add(n, Ordering::Relaxed);
        };
        if !was_file {
            add(&self.added, 1);
        }
        if new.chunks > 0 {
            add(&self.new_data, 1);
            let incompressible = new.incompressible();
            add(&self.incompressible, incompressible as u64);
            if was_file {
                add(&self.rewritten, 1);
                add(&self.incompressible_rewritten, incompressible as u64);
            }
        }
        add(&self.raw_bytes, new.raw_bytes);
        add(&self.judged_raw, new.judged_raw);
        add(&self.judged_stored, new.judged_stored);
    }

    /// What the layer changed, once every file is stored; `stats`: the snapshot's figures.
    pub(crate) fn layer(&self, kind: BackupKind, stats: &BackupStats) -> LayerChanges {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let judged_raw = get(&self.judged_raw);
        LayerChanges {
            kind,
            files: stats.files,
            files_read: stats.files_read,
            added: get(&self.added),
            new_data_files: get(&self.new_data),
            rewritten: get(&self.rewritten),
            incompressible_files: get(&self.incompressible),
            incompressible_rewritten: get(&self.incompressible_rewritten),
            new_bytes: get(&self.raw_bytes),
            compression_ratio: (judged_raw > 0)
                .then(|| get(&self.judged_stored) as f64 / judged_raw as f64),
        }
    }
}

/// What one layer changed, as its backup measured it.
#[derive(Clone, Debug, PartialEq)]
pub struct LayerChanges {
    /// The backup's kind: a full cannot tell new files from rewritten ones (it compares with
    /// nothing while it walks), so for a full every file with new data counts as rewritten.
    pub kind: BackupKind,
    /// Regular files in the new view.
    pub files: u64,
    /// Files read.
    pub files_read: u64,
    /// Files stored that the reference view did not have.
    pub added: u64,
    /// Files whose content brought new chunks.
    pub new_data_files: u64,
    /// Files of the reference view stored with new content.
    pub rewritten: u64,
    /// Files whose new content did not compress.
    pub incompressible_files: u64,
    /// Files of the reference view rewritten with content that did not compress.
    pub incompressible_rewritten: u64,
    /// Bytes of the new chunks.
    pub new_bytes: u64,
    /// Stored over plain bytes of the new chunks (`None`: no new data).
    pub compression_ratio: Option<f64>,
}

/// The snapshot a layer is judged against, and the figures that follow from it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Reference {
    /// The parent of an incremental or differential; for a full, the source's newest snapshot.
    #[serde(serialize_with = "hex")]
    pub snapshot: SnapshotId,
    /// Regular files in its view.
    pub files: u64,
}

/// An id as its hex string, as every `--json` document shows ids.
fn hex<S: serde::Serializer>(id: &SnapshotId, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(id)
}

/// The source's usual layer: medians over its recent snapshots.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Baseline {
    /// Snapshots the medians are taken over (the source's last `--anomaly-history`, not
    /// counting its first snapshot and snapshots tagged [`TAG`]).
    pub layers: usize,
    /// Share of files a layer changed (read, less the net growth in files), full backups left
    /// out (they read every file).
    pub changed_share: Option<f64>,
    /// Files a layer changed (read, plus deleted entries), full backups left out.
    pub changed_files: Option<u64>,
    /// Share of files a layer deleted.
    pub deleted_share: Option<f64>,
    /// New bytes of a layer.
    pub new_bytes: Option<u64>,
    /// Stored over new bytes, layers with at least 64 KiB of new data only (stored bytes
    /// include the layer's metadata).
    pub compression_ratio: Option<f64>,
}

/// Layers that give the baseline at least this many new bytes tell its compression ratio.
const RATIO_MIN_BYTES: u64 = 64 << 10;

/// The baseline of a source from `history`, its snapshots oldest first (the new one not among
/// them), over the last `n` that can serve.
pub fn baseline(history: &[Snapshot], n: usize) -> Baseline {
    let usable: Vec<(usize, &Snapshot)> = history
        .iter()
        .enumerate()
        .skip(1)
        .filter(|(_, s)| !s.tags.iter().any(|t| t == TAG))
        .collect();
    let recent = &usable[usable.len().saturating_sub(n)..];
    let (mut changed_share, mut changed_files, mut deleted_share) = (vec![], vec![], vec![]);
    let (mut new_bytes, mut ratio) = (vec![], vec![]);
    for &(i, s) in recent {
        let t = &s.stats;
        // The view this layer changed: its parent's, else the snapshot before it.
        let before = s
            .parent
            .and_then(|p| history[..i].iter().rev().find(|h| h.id == p))
            .unwrap_or(&history[i - 1]);
        let prev_files = before.stats.files;
        let read_all = s.kind == BackupKind::Full && t.files_read >= t.files;
        if !read_all {
            let grown = t.files.saturating_sub(prev_files);
            if prev_files > 0 {
                changed_share.push(t.files_read.saturating_sub(grown) as f64 / prev_files as f64);
            }
            changed_files.push((t.files_read + t.deleted) as f64);
        }
        if prev_files > 0 {
            let gone = t.deleted.max(prev_files.saturating_sub(t.files));
            deleted_share.push((gone as f64 / prev_files as f64).min(1.0));
        }
        new_bytes.push(t.new_bytes as f64);
        if t.new_bytes >= RATIO_MIN_BYTES {
            ratio.push(t.stored_bytes as f64 / t.new_bytes as f64);
        }
    }
    Baseline {
        layers: recent.len(),
        changed_share: median(changed_share),
        changed_files: median(changed_files).map(|v| v.round() as u64),
        deleted_share: median(deleted_share),
        new_bytes: median(new_bytes).map(|v| v.round() as u64),
        compression_ratio: median(ratio),
    }
}

fn median(mut v: Vec<f64>) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    Some(if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    })
}

#[cfg(test)]
mod tests;
