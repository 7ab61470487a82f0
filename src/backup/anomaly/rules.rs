//! The rules of the anomaly check and the verdict: each rule that applies scores its figure
//! against its threshold, and the layer is anomalous when the highest score reaches 1.

use serde::Serialize;

use super::{baseline, AnomalyOptions, Baseline, LayerChanges, Reference, INCOMPRESSIBLE};
use crate::snapshot::{BackupKind, Snapshot};

/// The growth rule needs this many layers in the baseline: a median of fewer says little.
const GROWTH_MIN_LAYERS: usize = 3;
/// New bytes below this median count as this much for the growth rule, so that a source that
/// barely changes does not alarm on its first few MiB.
const GROWTH_MIN_BYTES: u64 = 1 << 20;

/// The rules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Rule {
    /// Files of the reference view deleted (`--anomaly-deleted`).
    Deleted,
    /// Files rewritten with new content (`--anomaly-rewritten`).
    Rewritten,
    /// Files rewritten with content that does not compress, in a source whose recent layers
    /// compressed (`--anomaly-encrypted`).
    Encrypted,
    /// New bytes and changed files both many times the usual (`--anomaly-growth`).
    Growth,
}

/// One rule's outcome.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RuleScore {
    /// Which rule.
    pub rule: Rule,
    /// `value / threshold`: 1 or more fires.
    pub score: f64,
    /// The figure: a share of files (0 to 1), or for growth the smaller of the two factors.
    pub value: f64,
    /// The threshold in force: the option's, raised by the source's history.
    pub threshold: f64,
    /// Whether it fired.
    pub fired: bool,
    /// The figures in words.
    pub message: String,
}

/// What the layer changed against its reference.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Figures {
    /// Regular files in the new view.
    pub files: u64,
    /// Files in the reference view.
    pub reference_files: Option<u64>,
    /// New files (a full: the net growth in files).
    pub added: u64,
    /// New files whose content did not compress (a full: 0, it cannot tell).
    pub added_incompressible: u64,
    /// Files of the reference rewritten with new content (a full: every file with new content).
    pub rewritten: u64,
    /// Of those, the ones whose new content did not compress.
    pub rewritten_incompressible: u64,
    /// Files of the reference gone (a full: the net shrink in files).
    pub deleted: u64,
    /// Added, rewritten and deleted.
    pub changed: u64,
    /// `changed`, `rewritten`, `rewritten_incompressible` and `deleted` over `reference_files`.
    pub changed_share: Option<f64>,
    /// See `changed_share`.
    pub rewritten_share: Option<f64>,
    /// See `changed_share`.
    pub rewritten_incompressible_share: Option<f64>,
    /// See `changed_share`.
    pub deleted_share: Option<f64>,
    /// Bytes of chunks the repository did not hold.
    pub new_bytes: u64,
    /// Their stored over their plain bytes (with compression off, estimated from a sample).
    pub compression_ratio: Option<f64>,
}

/// The verdict on one layer.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Assessment {
    /// Whether the layer was judged: not when its source had no snapshot before it.
    pub judged: bool,
    /// Whether it is anomalous (the snapshot then carries the tag [`super::TAG`]).
    pub anomalous: bool,
    /// The highest rule score (0 when no rule applied).
    pub score: f64,
    /// The messages of the rules that fired, highest score first.
    pub reasons: Vec<String>,
    /// Every rule that applied, highest score first.
    pub rules: Vec<RuleScore>,
    /// What the layer was judged against.
    pub reference: Option<Reference>,
    /// What it changed.
    pub figures: Figures,
    /// The source's usual layer.
    pub baseline: Baseline,
}

/// Judges the layer that changed `changes` against `reference` (`None`: the source's first
/// snapshot) and the source's `history` (its snapshots before this one, oldest first).
pub fn assess(
    changes: &LayerChanges,
    reference: Option<&Snapshot>,
    history: &[Snapshot],
    opts: &AnomalyOptions,
) -> Assessment {
    let base = baseline(history, opts.history as usize);
    let figures = figures(changes, reference);
    let mut rules = match reference {
        Some(_) => score_rules(&figures, &base, opts),
        None => Vec::new(),
    };
    rules.sort_by(|a, b| b.score.total_cmp(&a.score));
    let score = rules.first().map_or(0.0, |r| r.score);
    // Files rewritten with incompressible data are rewritten files: one reason says it.
    let encrypted = rules.iter().any(|r| r.fired && r.rule == Rule::Encrypted);
    Assessment {
        judged: reference.is_some(),
        anomalous: rules.iter().any(|r| r.fired),
        score,
        reasons: rules
            .iter()
            .filter(|r| r.fired && !(encrypted && r.rule == Rule::Rewritten))
            .map(|r| r.message.clone())
            .collect(),
        rules,
        reference: reference.map(|r| Reference {
            snapshot: r.id,
            files: r.stats.files,
        }),
        figures,
        baseline: base,
    }
}

fn figures(c: &LayerChanges, reference: Option<&Snapshot>) -> Figures {
    let ref_files = reference.map(|r| r.stats.files);
    let before = ref_files.unwrap_or(0);
    let (added, rewritten, incompressible, deleted) = match c.kind {
        BackupKind::Full => (
            c.files.saturating_sub(before),
            c.new_data_files,
            c.incompressible_files,
            before.saturating_sub(c.files),
        ),
        // The view now = the reference's files, less those gone, plus those added.
        _ => (
            c.added,
            c.rewritten,
            c.incompressible_rewritten,
            (before + c.added).saturating_sub(c.files),
        ),
    };
    let added_incompressible = match c.kind {
        BackupKind::Full => 0,
        _ => c
            .incompressible_files
            .saturating_sub(c.incompressible_rewritten),
    };
    let changed = added + rewritten + deleted;
    let share = |n: u64| ref_files.filter(|&f| f > 0).map(|f| n as f64 / f as f64);
    Figures {
        files: c.files,
        reference_files: ref_files,
        added,
        added_incompressible,
        rewritten,
        rewritten_incompressible: incompressible,
        deleted,
        changed,
        changed_share: share(changed),
        rewritten_share: share(rewritten),
        rewritten_incompressible_share: share(incompressible),
        deleted_share: share(deleted),
        new_bytes: c.new_bytes,
        compression_ratio: c.compression_ratio,
    }
}

fn score_rules(f: &Figures, base: &Baseline, opts: &AnomalyOptions) -> Vec<RuleScore> {
    // A share threshold follows the source's usual share.
    let raise =
        |pct: f64, usual: Option<f64>| (pct / 100.0).max(opts.churn_factor * usual.unwrap_or(0.0));
    let usual = |share: Option<f64>| match share {
        Some(s) => format!(", median of {} {}", last_layers(base.layers), pct(s)),
        None => String::new(),
    };
    let ratio = f
        .compression_ratio
        .map_or_else(String::new, |r| format!(", compression ratio {r:.2}"));
    let of = |n: u64| format!("{n} of {}", f.reference_files.unwrap_or(0));
    let mut out = Vec::new();
    let mut share_rule = |rule, pct_opt: f64, n: u64, share: Option<f64>, usual_share, what| {
        let Some(value) = share.filter(|_| pct_opt > 0.0 && n >= opts.min_files) else {
            return;
        };
        let threshold = raise(pct_opt, usual_share);
        out.push(rule_score(rule, value, threshold, what));
    };
    share_rule(
        Rule::Deleted,
        opts.deleted_pct,
        f.deleted,
        f.deleted_share,
        base.deleted_share,
        format!(
            "{} of files deleted ({}{}{})",
            pct(f.deleted_share.unwrap_or(0.0)),
            of(f.deleted),
            usual(base.deleted_share),
            // Ransomware that renames what it encrypts leaves this trace.
            if f.added_incompressible >= opts.min_files {
                format!(
                    ", and {} new files of incompressible data",
                    f.added_incompressible
                )
            } else {
                String::new()
            }
        ),
    );
    share_rule(
        Rule::Rewritten,
        opts.rewritten_pct,
        f.rewritten,
        f.rewritten_share,
        base.changed_share,
        format!(
            "{} of files rewritten ({}{ratio}{})",
            pct(f.rewritten_share.unwrap_or(0.0)),
            of(f.rewritten),
            usual(base.changed_share)
        ),
    );
    // A source whose layers never compressed (photos, archives) rewrites incompressible files
    // as a matter of course.
    if base.compression_ratio.is_none_or(|r| r < INCOMPRESSIBLE) {
        share_rule(
            Rule::Encrypted,
            opts.encrypted_pct,
            f.rewritten_incompressible,
            f.rewritten_incompressible_share,
            base.changed_share,
            format!(
                "{} of files rewritten with incompressible data ({}{ratio}{})",
                pct(f.rewritten_incompressible_share.unwrap_or(0.0)),
                of(f.rewritten_incompressible),
                usual(base.changed_share)
            ),
        );
    }
    if let Some(r) = growth_rule(f, base, opts) {
        out.push(r);
    }
    out
}

/// New bytes and changed files both `--anomaly-growth` times their medians.
fn growth_rule(f: &Figures, base: &Baseline, opts: &AnomalyOptions) -> Option<RuleScore> {
    let g = opts.growth;
    let (Some(usual_bytes), Some(usual_files)) = (base.new_bytes, base.changed_files) else {
        return None;
    };
    if g <= 0.0 || base.layers < GROWTH_MIN_LAYERS || f.changed < opts.min_files {
        return None;
    }
    let bytes_x = f.new_bytes as f64 / usual_bytes.max(GROWTH_MIN_BYTES) as f64;
    let files_x = f.changed as f64 / usual_files.max(opts.min_files).max(1) as f64;
    let what = format!(
        "{} of new data in {} changed files, {:.0} and {:.0} times the median of {} ({}, {} files)",
        size(f.new_bytes),
        f.changed,
        bytes_x,
        files_x,
        last_layers(base.layers),
        size(usual_bytes),
        usual_files
    );
    Some(rule_score(Rule::Growth, bytes_x.min(files_x), g, what))
}

fn rule_score(rule: Rule, value: f64, threshold: f64, message: String) -> RuleScore {
    let score = if threshold > 0.0 {
        value / threshold
    } else {
        0.0
    };
    RuleScore {
        rule,
        score,
        value,
        threshold,
        fired: score >= 1.0,
        message,
    }
}

/// "the last layer", "the last 7 layers".
fn last_layers(n: usize) -> String {
    match n {
        1 => "the last layer".into(),
        _ => format!("the last {n} layers"),
    }
}

/// A share as a percentage: one decimal below 10%.
fn pct(share: f64) -> String {
    let p = share * 100.0;
    if p < 10.0 {
        format!("{p:.1}%")
    } else {
        format!("{p:.0}%")
    }
}

/// Bytes in binary units, as the CLI prints sizes.
fn size(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
