//! `check --nagios`: a check's outcome judged the way Nagios, Icinga and Zabbix read a plugin —
//! one status (OK, WARNING, CRITICAL, UNKNOWN; exit codes 0 to 3), one line of text, and
//! performance data (`label=value[UOM];warn;crit;min;max`, the plugin guidelines' format).
//!
//! CRITICAL: damage (any problem of severity damage), or a source whose newest snapshot is older
//! than its maximum age (`--max-age`, per source `--max-age-source`), or a source given an age
//! limit that has no snapshot at all. WARNING: a newest snapshot older than its warning age
//! (`--warn-age`, `--warn-age-source`), or a source whose newest snapshot is marked anomalous by
//! its backup (the tag `anomaly`; CRITICAL with `--anomaly-critical`): the mark stays on the
//! newest snapshot until the next backup of the source, or until that snapshot is forgotten.
//! UNKNOWN: the check could not run (the repository is
//! missing, locked, not a repository); the caller builds that one with [`Health::unknown`].
//! Leftovers alone are OK (the next prune removes them). Ages are measured against
//! [`crate::time::now_ns`], the clock snapshots are stamped with.

use std::fmt;

use serde::Serialize;

use super::CheckReport;
use crate::backup::anomaly::TAG as ANOMALY_TAG;
use crate::snapshot::Snapshot;

/// Age limits. The `strata check` options are these fields (clap); they need `--nagios`.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct HealthOptions {
    /// CRITICAL when a source's newest snapshot is older than this many seconds.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_age,
        requires = "nagios",
        help = "With --nagios: CRITICAL when the newest snapshot of a source is older than \
                DURATION (e.g. 26h, 1d12h, 90m, 3600; units s, m, h, d, w)"
    )]
    pub max_age: Option<u64>,
    /// WARNING when a source's newest snapshot is older than this many seconds.
    #[arg(
        long,
        value_name = "DURATION",
        value_parser = parse_age,
        requires = "nagios",
        help = "With --nagios: WARNING when the newest snapshot of a source is older than DURATION"
    )]
    pub warn_age: Option<u64>,
    /// Per-source maximum ages (source, seconds), overriding `max_age`.
    #[arg(
        long = "max-age-source",
        value_name = "SOURCE=DURATION",
        value_parser = parse_source_age,
        requires = "nagios",
        help = "With --nagios: the maximum age for one source (repeatable; overrides --max-age; \
                a source named here that has no snapshot is CRITICAL)"
    )]
    pub max_age_source: Vec<(String, u64)>,
    /// Per-source warning ages (source, seconds), overriding `warn_age`.
    #[arg(
        long = "warn-age-source",
        value_name = "SOURCE=DURATION",
        value_parser = parse_source_age,
        requires = "nagios",
        help = "With --nagios: the warning age for one source (repeatable; overrides --warn-age)"
    )]
    pub warn_age_source: Vec<(String, u64)>,
    /// An anomalous newest snapshot is CRITICAL rather than WARNING.
    #[arg(
        long,
        requires = "nagios",
        help = "With --nagios: CRITICAL, not WARNING, when the newest snapshot of a source is marked anomalous by its backup"
    )]
    pub anomaly_critical: bool,
}

/// Parses a duration in seconds: numbers each followed by a unit, `s`, `m` (minutes), `h`, `d`
/// (24 hours) or `w` (7 days), e.g. `26h`, `1d12h`, `90m`; a bare number is seconds.
pub fn parse_age(s: &str) -> Result<u64, String> {
    let bad = || format!("Not a duration: {s:?} (try 26h, 1d12h, 90m or 3600)");
    let t = s.trim();
    if let Ok(n) = t.parse::<u64>() {
        return Ok(n);
    }
    let (mut total, mut num) = (0u64, String::new());
    for c in t.chars() {
        if c.is_ascii_digit() {
            num.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => 86_400,
            'w' => 604_800,
            _ => return Err(bad()),
        };
        let n: u64 = num.parse().map_err(|_| bad())?;
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(bad)?;
        num.clear();
    }
    if !num.is_empty() || total == 0 && !t.chars().any(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    Ok(total)
}

/// Parses `SOURCE=DURATION` (the source may contain `=`; the last one separates).
fn parse_source_age(s: &str) -> Result<(String, u64), String> {
    let (src, age) = s
        .rsplit_once('=')
        .ok_or_else(|| format!("Expected SOURCE=DURATION, not {s:?}"))?;
    Ok((src.to_string(), parse_age(age)?))
}

/// A status, ordered by severity for combining (UNKNOWN is set only when nothing could run).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Status {
    /// Exit code 0.
    Ok,
    /// Exit code 1.
    Warning,
    /// Exit code 2.
    Critical,
    /// Exit code 3.
    Unknown,
}

impl Status {
    /// The plugin exit code.
    pub fn exit_code(self) -> i32 {
        match self {
            Status::Ok => 0,
            Status::Warning => 1,
            Status::Critical => 2,
            Status::Unknown => 3,
        }
    }

    /// The word in the status line.
    pub fn name(self) -> &'static str {
        match self {
            Status::Ok => "OK",
            Status::Warning => "WARNING",
            Status::Critical => "CRITICAL",
            Status::Unknown => "UNKNOWN",
        }
    }
}

/// One performance datum, rendered `'label'=valueUOM;warn;crit;min;max`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PerfDatum {
    /// The label (quoted when rendered if it holds anything but letters, digits, `_`).
    pub label: String,
    /// The value.
    pub value: u64,
    /// Unit of measure: `s`, `B` or empty.
    pub uom: &'static str,
    /// Warning threshold (alert above it).
    pub warn: Option<u64>,
    /// Critical threshold (alert above it).
    pub crit: Option<u64>,
    /// Minimum possible value.
    pub min: Option<u64>,
}

impl fmt::Display for PerfDatum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `=` and `'` cannot appear in a label, even quoted.
        let label: String = self
            .label
            .chars()
            .map(|c| if c == '=' || c == '\'' { '_' } else { c })
            .collect();
        if label.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            write!(f, "{label}")?;
        } else {
            write!(f, "'{label}'")?;
        }
        let opt = |v: Option<u64>| v.map_or_else(String::new, |v| v.to_string());
        write!(
            f,
            "={}{};{};{};{};",
            self.value,
            self.uom,
            opt(self.warn),
            opt(self.crit),
            opt(self.min)
        )
    }
}

/// The judgement: status, the findings that made it, and performance data.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Health {
    /// The overall status: the worst finding's.
    pub status: Status,
    /// What the status rests on, worst first; for OK, a summary of what was seen.
    pub findings: Vec<String>,
    /// Performance data.
    pub perfdata: Vec<PerfDatum>,
}

impl Health {
    /// The check could not run: UNKNOWN with `message`, no performance data.
    pub fn unknown(message: &str) -> Health {
        Health {
            status: Status::Unknown,
            findings: vec![message.replace('\n', " ")],
            perfdata: Vec::new(),
        }
    }

    /// The plugin's one output line: `STRATA STATUS - findings | perfdata`.
    pub fn line(&self) -> String {
        // `|` separates the performance data: none may appear in the text.
        let text = self.findings.join("; ").replace('|', "/");
        let mut line = format!("STRATA {} - {text}", self.status.name());
        if !self.perfdata.is_empty() {
            line.push_str(" |");
            for p in &self.perfdata {
                line.push(' ');
                line.push_str(&p.to_string());
            }
        }
        line
    }
}

/// `secs` as the largest two units: `3d 2h`, `20h 5m`, `45m`, `30s`.
pub fn human_age(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// The age limits of one source: (warning, critical), per-source values first.
fn limits(opts: &HealthOptions, source: &str) -> (Option<u64>, Option<u64>) {
    let find = |list: &[(String, u64)]| list.iter().rev().find(|(s, _)| s == source).map(|x| x.1);
    (
        find(&opts.warn_age_source).or(opts.warn_age),
        find(&opts.max_age_source).or(opts.max_age),
    )
}

/// Judges a check `report` of a repository holding `snapshots` (`repository_bytes`: its pack
/// files, when known) at time `now_ns`.
pub fn evaluate(
    report: &CheckReport,
    snapshots: &[Snapshot],
    repository_bytes: Option<u64>,
    now_ns: i64,
    opts: &HealthOptions,
) -> Health {
    let mut found: Vec<(Status, String)> = Vec::new();
    let damage: Vec<_> = report
        .problems
        .iter()
        .filter(|p| p.severity() == super::Severity::Damage)
        .collect();
    if !damage.is_empty() {
        let mut what = format!(
            "damage: {} damaged file(s) in {} snapshot(s), {} problem(s)",
            report.damaged_files.len(),
            report.damaged_snapshots.len(),
            damage.len()
        );
        if report.damaged_files.is_empty() {
            what = format!("damage: {}", damage[0].message);
            if damage.len() > 1 {
                what.push_str(&format!(" (and {} more problems)", damage.len() - 1));
            }
        }
        found.push((Status::Critical, what));
    }
    // Newest snapshot per source, in source order.
    let mut newest: std::collections::BTreeMap<&str, i64> = Default::default();
    let mut newest_snap: std::collections::BTreeMap<&str, &Snapshot> = Default::default();
    for s in snapshots {
        let t = newest.entry(&s.source).or_insert(s.time_ns);
        *t = (*t).max(s.time_ns);
        let n = newest_snap.entry(&s.source).or_insert(s);
        if (s.time_ns, s.id) >= (n.time_ns, n.id) {
            *n = s;
        }
    }
    let anomalous: Vec<&Snapshot> = newest_snap
        .values()
        .copied()
        .filter(|s| s.tags.iter().any(|t| t == ANOMALY_TAG))
        .collect();
    let anomaly_status = if opts.anomaly_critical {
        Status::Critical
    } else {
        Status::Warning
    };
    for s in &anomalous {
        found.push((
            anomaly_status,
            format!(
                "{}: newest snapshot {} is marked anomalous by its backup",
                s.source,
                s.id.short()
            ),
        ));
    }
    let mut perf_ages = Vec::new();
    for (source, t) in &newest {
        let age = (now_ns.saturating_sub(*t)).max(0) as u64 / 1_000_000_000;
        let (warn, crit) = limits(opts, source);
        if crit.is_some_and(|c| age > c) {
            found.push((
                Status::Critical,
                format!(
                    "{source}: newest snapshot {} old (max {})",
                    human_age(age),
                    human_age(crit.unwrap_or(0))
                ),
            ));
        } else if warn.is_some_and(|w| age > w) {
            found.push((
                Status::Warning,
                format!(
                    "{source}: newest snapshot {} old (warn {})",
                    human_age(age),
                    human_age(warn.unwrap_or(0))
                ),
            ));
        }
        perf_ages.push(PerfDatum {
            label: format!("age {source}"),
            value: age,
            uom: "s",
            warn,
            crit,
            min: Some(0),
        });
    }
    for (source, _) in &opts.max_age_source {
        if !newest.contains_key(source.as_str()) {
            found.push((Status::Critical, format!("{source}: no snapshot")));
        }
    }
    if newest.is_empty() && opts.max_age.is_some() {
        found.push((Status::Critical, "no snapshots".into()));
    }
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    found.dedup();
    let status = found.first().map_or(Status::Ok, |f| f.0);
    let mut findings: Vec<String> = found.into_iter().map(|f| f.1).collect();
    if status == Status::Ok {
        findings.push(ok_summary(report, snapshots, &newest, now_ns));
    }
    let mut perfdata = vec![PerfDatum {
        label: "snapshots".into(),
        value: snapshots.len() as u64,
        uom: "",
        warn: None,
        crit: None,
        min: Some(0),
    }];
    if let Some(b) = repository_bytes {
        perfdata.push(PerfDatum {
            label: "repository_bytes".into(),
            value: b,
            uom: "B",
            warn: None,
            crit: None,
            min: Some(0),
        });
    }
    perfdata.push(PerfDatum {
        label: "damaged_files".into(),
        value: report.damaged_files.len() as u64,
        uom: "",
        warn: None,
        crit: Some(0),
        min: Some(0),
    });
    let (warn, crit) = match anomaly_status {
        Status::Critical => (None, Some(0)),
        _ => (Some(0), None),
    };
    perfdata.push(PerfDatum {
        label: "anomalous_sources".into(),
        value: anomalous.len() as u64,
        uom: "",
        warn,
        crit,
        min: Some(0),
    });
    perfdata.extend(perf_ages);
    Health {
        status,
        findings,
        perfdata,
    }
}

/// What an OK status says: how much was seen, and how recent the newest snapshot is.
fn ok_summary(
    report: &CheckReport,
    snapshots: &[Snapshot],
    newest: &std::collections::BTreeMap<&str, i64>,
    now_ns: i64,
) -> String {
    let mut s = format!(
        "{} snapshot(s) of {} source(s), no damage",
        snapshots.len(),
        newest.len()
    );
    if let Some(t) = newest.values().max() {
        let age = (now_ns.saturating_sub(*t)).max(0) as u64 / 1_000_000_000;
        s.push_str(&format!(", newest {} ago", human_age(age)));
    }
    if !report.problems.is_empty() {
        s.push_str(&format!(
            ", {} leftover(s) a prune removes",
            report.problems.len()
        ));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{DamagedFile, Problem, ProblemKind};
    use crate::id::SnapshotId;
    use crate::snapshot::{BackupKind, BackupStats};

    const S: i64 = 1_000_000_000;

    fn snap(source: &str, time_s: i64) -> Snapshot {
        Snapshot {
            id: SnapshotId([time_s as u8; 16]),
            time_ns: time_s * S,
            host: "h".into(),
            source: source.into(),
            kind: BackupKind::Full,
            parent: None,
            depth: 1,
            tags: vec![],
            stats: BackupStats::default(),
            layer_blobs: vec![],
        }
    }

    #[test]
    fn ages_parse() {
        assert_eq!(parse_age("3600"), Ok(3600));
        assert_eq!(parse_age("26h"), Ok(26 * 3600));
        assert_eq!(parse_age("1d12h"), Ok(36 * 3600));
        assert_eq!(parse_age("90m"), Ok(5400));
        assert_eq!(parse_age("2w"), Ok(14 * 86400));
        assert_eq!(parse_age("1h30m15s"), Ok(5415));
        for bad in ["", "h", "1x", "1h2", "-1h", "1.5h", "99999999999999999999w"] {
            assert!(parse_age(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse_source_age("a=b=1d"), Ok(("a=b".to_string(), 86400)));
        assert!(parse_source_age("1d").is_err());
    }

    #[test]
    fn human_ages() {
        assert_eq!(human_age(30), "30s");
        assert_eq!(human_age(45 * 60 + 3), "45m");
        assert_eq!(human_age(20 * 3600 + 5 * 60), "20h 5m");
        assert_eq!(human_age(7200), "2h");
        assert_eq!(human_age(3 * 86400 + 2 * 3600 + 7), "3d 2h");
        assert_eq!(human_age(86400 + 60), "1d");
    }

    #[test]
    fn fresh_stale_and_damaged() {
        let snaps = [
            snap("/srv/shop", 1000),
            snap("/srv/db", 500),
            snap("/srv/shop", 900),
        ];
        let clean = CheckReport::default();
        let now = 1000 * S + 3600 * S;
        let opts = HealthOptions {
            max_age: Some(2 * 3600),
            warn_age: Some(3000),
            ..Default::default()
        };
        let h = evaluate(&clean, &snaps, Some(4096), now, &opts);
        assert_eq!(h.status, Status::Warning, "{h:?}");
        assert_eq!(
            h.line(),
            "STRATA WARNING - /srv/db: newest snapshot 1h 8m old (warn 50m); \
             /srv/shop: newest snapshot 1h old (warn 50m) | snapshots=3;;;0; \
             repository_bytes=4096B;;;0; damaged_files=0;;0;0; anomalous_sources=0;0;;0; \
             'age /srv/db'=4100s;3000;7200;0; 'age /srv/shop'=3600s;3000;7200;0;"
        );
        let h = evaluate(&clean, &snaps, None, 1000 * S + 60 * S, &opts);
        assert_eq!(h.status, Status::Ok);
        assert!(
            h.line().starts_with(
                "STRATA OK - 3 snapshot(s) of 2 source(s), no damage, newest 1m ago |"
            ),
            "{}",
            h.line()
        );
        let opts = HealthOptions {
            max_age: Some(7200),
            max_age_source: vec![("/srv/db".into(), 60), ("/srv/gone".into(), 60)],
            ..Default::default()
        };
        let h = evaluate(&clean, &snaps, None, 1000 * S + 60 * S, &opts);
        assert_eq!(h.status, Status::Critical);
        assert_eq!(
            h.findings,
            [
                "/srv/db: newest snapshot 9m old (max 1m)",
                "/srv/gone: no snapshot"
            ]
        );
        let damaged = CheckReport {
            problems: vec![Problem {
                kind: ProblemKind::CorruptRecord,
                message: "Chunk x is corrupt".into(),
                snapshot: None,
                chunk: None,
                pack: None,
            }],
            damaged_files: vec![DamagedFile {
                snapshot: snaps[0].id,
                path: b"a".to_vec(),
                chunks: vec![],
            }],
            damaged_snapshots: vec![snaps[0].id],
            ..Default::default()
        };
        let h = evaluate(&damaged, &snaps, None, 1000 * S, &HealthOptions::default());
        assert_eq!(h.status, Status::Critical);
        assert_eq!(
            h.findings,
            ["damage: 1 damaged file(s) in 1 snapshot(s), 1 problem(s)"]
        );
        assert!(h.line().contains("damaged_files=1;;0;0;"));
        let none = evaluate(&clean, &[], None, now, &opts);
        assert_eq!(none.status, Status::Critical);
        assert!(none.findings.contains(&"no snapshots".to_string()));
        let mut marked = snaps.to_vec();
        marked[0].tags = vec!["nightly".into(), "anomaly".into()];
        let fresh = 1000 * S + 60 * S;
        let h = evaluate(&clean, &marked, None, fresh, &HealthOptions::default());
        assert_eq!(h.status, Status::Warning);
        assert_eq!(
            h.findings,
            ["/srv/shop: newest snapshot e8e8e8e8 is marked anomalous by its backup"]
        );
        assert!(
            h.line().contains(" anomalous_sources=1;0;;0; "),
            "{}",
            h.line()
        );
        let critical = HealthOptions {
            anomaly_critical: true,
            ..Default::default()
        };
        let h = evaluate(&clean, &marked, None, fresh, &critical);
        assert_eq!(h.status, Status::Critical);
        assert!(
            h.line().contains(" anomalous_sources=1;;0;0; "),
            "{}",
            h.line()
        );
        // A newer snapshot of the source clears it; an older one marked does not count.
        marked.push(snap("/srv/shop", 1001));
        let h = evaluate(&clean, &marked, None, fresh, &HealthOptions::default());
        assert_eq!(h.status, Status::Ok, "{h:?}");
        assert_eq!(
            Health::unknown("Repository /r is in use\nby another").line(),
            "STRATA UNKNOWN - Repository /r is in use by another"
        );
    }
}
