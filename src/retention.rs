//! Retention policies: which snapshots a `forget` keeps, and why. Pure decisions over snapshot
//! times and tags — no repository access — so they can be pinned by unit tests and golden files.
//!
//! Semantics follow restic's `forget`: snapshots are looked at newest first; each `--keep-<period>
//! N` rule keeps the newest snapshot of each of the N newest calendar periods (hour, day, ISO week,
//! month, year) that hold a snapshot; `--keep-last N` keeps the N newest; `--keep-within D` keeps
//! every snapshot made within D of the newest one; `--keep-tag T` keeps every snapshot tagged T.
//! A snapshot is kept when any rule keeps it, and every rule that keeps it is reported.
//!
//! Calendar periods are taken in **UTC**, always: decisions never depend on the machine's time
//! zone (restic buckets by the local time recorded with each snapshot, so snapshots made on
//! machines in different zones fall into days differently).

use crate::error::{Error, Result};
use crate::time::{days_from_civil, utc};

/// What to keep. All counts zero and no durations or tags means "keep nothing" — callers refuse
/// an empty policy (see [`Policy::is_empty`]) so that a typo never forgets everything. The
/// `strata forget --keep-*` options are these fields (clap); `help` is the CLI's wording.
#[derive(Clone, Debug, Default, PartialEq, Eq, clap::Args)]
pub struct Policy {
    /// Keep the N newest snapshots.
    #[arg(
        long = "keep-last",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the N newest snapshots"
    )]
    pub last: u32,
    /// Keep the newest snapshot of each of the N newest hours (UTC) that have one.
    #[arg(
        long = "keep-hourly",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the newest snapshot of each of the N newest hours (UTC) that have one"
    )]
    pub hourly: u32,
    /// Likewise per calendar day (UTC).
    #[arg(
        long = "keep-daily",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the newest snapshot of each of the N newest days (UTC) that have one"
    )]
    pub daily: u32,
    /// Likewise per ISO 8601 week (UTC, weeks start on Monday).
    #[arg(
        long = "keep-weekly",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the newest snapshot of each of the N newest ISO weeks (UTC) that have one"
    )]
    pub weekly: u32,
    /// Likewise per calendar month (UTC).
    #[arg(
        long = "keep-monthly",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the newest snapshot of each of the N newest months (UTC) that have one"
    )]
    pub monthly: u32,
    /// Likewise per calendar year (UTC).
    #[arg(
        long = "keep-yearly",
        value_name = "N",
        default_value_t = 0,
        hide_default_value = true,
        help = "Keep the newest snapshot of each of the N newest years (UTC) that have one"
    )]
    pub yearly: u32,
    /// Keep every snapshot newer than the newest minus this span.
    #[arg(
        long = "keep-within",
        value_name = "DURATION",
        help = "Keep every snapshot within DURATION of the newest (units y, m, w, d, h: 30d, 2w, 1y6m)"
    )]
    pub within: Option<Span>,
    /// Keep every snapshot carrying one of these tags.
    #[arg(
        long = "keep-tag",
        value_name = "TAG",
        help = "Keep every snapshot with this tag (repeatable)"
    )]
    pub tags: Vec<String>,
}

impl Policy {
    /// True when no rule is set: such a policy would remove every snapshot.
    pub fn is_empty(&self) -> bool {
        self.last == 0
            && self.hourly == 0
            && self.daily == 0
            && self.weekly == 0
            && self.monthly == 0
            && self.yearly == 0
            && self.within.is_none()
            && self.tags.is_empty()
    }
}

/// A calendar span such as `1y6m` or `30d`: years and months are calendar months (as restic's
/// `--keep-within`), days are 24 h, weeks 7 days.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Span {
    /// Calendar months (years × 12 + months).
    pub months: i64,
    /// Days (weeks × 7 + days).
    pub days: i64,
    /// Hours.
    pub hours: i64,
}

impl std::str::FromStr for Span {
    type Err = Error;

    /// Parses `<n><unit>…` with units `y`, `m` (months), `w`, `d`, `h`, e.g. `2w`, `1y6m`, `36h`.
    fn from_str(s: &str) -> Result<Span> {
        let bad = || {
            Error::InvalidArgument(format!(
                "{s:?} is not a duration; use numbers with units y, m, w, d, h, e.g. 30d or 1y6m"
            ))
        };
        let mut span = Span::default();
        let mut num = String::new();
        let mut any = false;
        for c in s.trim().chars() {
            if c.is_ascii_digit() {
                num.push(c);
                continue;
            }
            let n: i64 = num.parse().map_err(|_| bad())?;
            num.clear();
            match c {
                'y' => span.months += 12 * n,
                'm' => span.months += n,
                'w' => span.days += 7 * n,
                'd' => span.days += n,
                'h' => span.hours += n,
                _ => return Err(bad()),
            }
            any = true;
        }
        if !num.is_empty() || !any {
            return Err(bad());
        }
        Ok(span)
    }
}

impl std::fmt::Display for Span {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (y, m) = (self.months / 12, self.months % 12);
        let mut out = String::new();
        for (n, u) in [(y, 'y'), (m, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n != 0 {
                out.push_str(&format!("{n}{u}"));
            }
        }
        if out.is_empty() {
            out.push_str("0d");
        }
        f.write_str(&out)
    }
}

/// One snapshot as the policy sees it.
#[derive(Clone, Debug)]
pub struct Candidate {
    /// Backup time, ns since the epoch (UTC).
    pub time_ns: i64,
    /// Its tags.
    pub tags: Vec<String>,
}

/// The decision for one candidate: kept when `reasons` is not empty.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Each rule that keeps it, e.g. `daily snapshot`, `within 30d`, `tag important`.
    pub reasons: Vec<String>,
}

impl Decision {
    /// Whether any rule keeps the snapshot.
    pub fn keep(&self) -> bool {
        !self.reasons.is_empty()
    }
}

/// Decides for each candidate (any order) whether `policy` keeps it; the result is in the same order.
pub fn apply(policy: &Policy, candidates: &[Candidate]) -> Vec<Decision> {
    let mut order: Vec<usize> = (0..candidates.len()).collect();
    // Newest first; ties keep input order, so equal times decide deterministically.
    order.sort_by_key(|&i| std::cmp::Reverse(candidates[i].time_ns));
    let mut out = vec![Decision::default(); candidates.len()];
    let newest = order.first().map(|&i| candidates[i].time_ns);

    type Key = fn(i64) -> i64;
    let rules: [(&str, u32, Key); 6] = [
        ("last snapshot", policy.last, |_| i64::MIN), // every snapshot its own bucket, see below
        ("hourly snapshot", policy.hourly, |t| {
            t.div_euclid(3_600_000_000_000)
        }),
        ("daily snapshot", policy.daily, |t| {
            t.div_euclid(86_400_000_000_000)
        }),
        ("weekly snapshot", policy.weekly, iso_week_key),
        ("monthly snapshot", policy.monthly, |t| {
            let d = utc(t);
            i64::from(d.year()) * 12 + i64::from(d.month())
        }),
        ("yearly snapshot", policy.yearly, |t| {
            i64::from(utc(t).year())
        }),
    ];
    let mut left: Vec<u32> = rules.iter().map(|r| r.1).collect();
    let mut last_key: Vec<Option<i64>> = vec![None; rules.len()];
    let cutoff = match (policy.within, newest) {
        (Some(span), Some(n)) => Some(subtract(n, span)),
        _ => None,
    };
    for (seq, &i) in order.iter().enumerate() {
        let c = &candidates[i];
        let d = &mut out[i];
        for (r, (reason, _, key)) in rules.iter().enumerate() {
            if left[r] == 0 {
                continue;
            }
            let k = if r == 0 { seq as i64 } else { key(c.time_ns) };
            if last_key[r] != Some(k) {
                last_key[r] = Some(k);
                left[r] -= 1;
                d.reasons.push(reason.to_string());
            }
        }
        if let (Some(cut), Some(span)) = (cutoff, policy.within) {
            if c.time_ns >= cut {
                d.reasons.push(format!("within {span}"));
            }
        }
        for t in &policy.tags {
            if c.tags.contains(t) {
                d.reasons.push(format!("tag {t}"));
            }
        }
    }
    out
}

/// ISO 8601 week of a UTC time as `year * 100 + week` (the ISO year, which differs from the
/// calendar year around New Year).
fn iso_week_key(t: i64) -> i64 {
    let w = utc(t).date().iso_week_date();
    i64::from(w.year()) * 100 + i64::from(w.week())
}

/// `t` minus a calendar span, month arithmetic as Go's `AddDate`: a day past the end of the
/// month rolls over (03-31 minus 1 month is 03-03), where jiff's span arithmetic would clamp it
/// to 02-28 and keep different snapshots than restic.
fn subtract(t: i64, span: Span) -> i64 {
    const DAY: i64 = 86_400_000_000_000;
    let tod = t.rem_euclid(DAY);
    let d = utc(t);
    let shifted = days_from_civil(
        d.year().into(),
        i64::from(d.month()) - span.months,
        i64::from(d.day()) - span.days,
    );
    shifted * DAY + tod - span.hours * 3_600_000_000_000
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: i64 = 86_400_000_000_000;
    const HOUR: i64 = 3_600_000_000_000;

    fn at(y: i64, m: i64, d: i64, h: i64) -> i64 {
        days_from_civil(y, m, d) * DAY + h * HOUR
    }

    fn kept(policy: &Policy, times: &[i64]) -> Vec<bool> {
        let c: Vec<_> = times
            .iter()
            .map(|&t| Candidate {
                time_ns: t,
                tags: vec![],
            })
            .collect();
        apply(policy, &c).iter().map(|d| d.keep()).collect()
    }

    #[test]
    fn calendar_helpers() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        let d = utc(days_from_civil(2024, 2, 29) * DAY).date();
        assert_eq!((d.year(), d.month(), d.day()), (2024, 2, 29));
        assert_eq!(days_from_civil(2026, 2, 31), days_from_civil(2026, 3, 3));
        assert_eq!(days_from_civil(2026, 0, 1), days_from_civil(2025, 12, 1));
        // ISO weeks: 2021-01-03 (Sunday) belongs to 2020-W53; 2024-12-30 (Monday) to 2025-W01.
        assert_eq!(iso_week_key(at(2021, 1, 3, 12)), 202053);
        assert_eq!(iso_week_key(at(2021, 1, 4, 0)), 202101);
        assert_eq!(iso_week_key(at(2024, 12, 30, 0)), 202501);
        assert_eq!(iso_week_key(at(2026, 11, 26, 0)), 202648);
    }

    #[test]
    fn span_parsing() {
        let s: Span = "1y6m".parse().unwrap();
        assert_eq!((s.months, s.days, s.hours), (18, 0, 0));
        let s: Span = "2w3d12h".parse().unwrap();
        assert_eq!((s.months, s.days, s.hours), (0, 17, 12));
        assert_eq!(s.to_string(), "17d12h");
        for bad in ["", "30", "d", "3x", "-1d", "1.5d"] {
            assert!(bad.parse::<Span>().is_err(), "{bad}");
        }
        // Month subtraction rolls over like Go's AddDate: 03-31 minus 1 month is 03-03.
        assert_eq!(
            subtract(at(2026, 3, 31, 5), "1m".parse().unwrap()),
            at(2026, 3, 3, 5)
        );
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        // Two snapshots a day for 5 days; keep 3 daily: the later one of the 3 newest days.
        let mut times = vec![];
        for d in 1..=5 {
            times.push(at(2026, 1, d, 1));
            times.push(at(2026, 1, d, 23));
        }
        let p = Policy {
            daily: 3,
            ..Default::default()
        };
        let k = kept(&p, &times);
        let expect: Vec<bool> = (0..10).map(|i| i >= 4 && i % 2 == 1).collect();
        assert_eq!(k, expect);
    }

    #[test]
    fn rules_combine_and_name_their_reasons() {
        let times = [at(2025, 12, 31, 12), at(2026, 1, 1, 0), at(2026, 1, 1, 6)];
        let c: Vec<_> = times
            .iter()
            .enumerate()
            .map(|(i, &t)| Candidate {
                time_ns: t,
                tags: if i == 0 { vec!["x".into()] } else { vec![] },
            })
            .collect();
        let p = Policy {
            last: 1,
            yearly: 2,
            tags: vec!["x".into()],
            ..Default::default()
        };
        let d = apply(&p, &c);
        assert_eq!(d[2].reasons, ["last snapshot", "yearly snapshot"]);
        assert!(!d[1].keep());
        assert_eq!(d[0].reasons, ["yearly snapshot", "tag x"]);
    }

    #[test]
    fn within_counts_from_the_newest_snapshot() {
        let times = [at(2026, 1, 1, 0), at(2026, 1, 20, 0), at(2026, 2, 1, 0)];
        let p = Policy {
            within: Some("2w".parse().unwrap()),
            ..Default::default()
        };
        assert_eq!(kept(&p, &times), [false, true, true]);
        assert!(Policy::default().is_empty());
        assert!(!p.is_empty());
    }

    #[test]
    fn weekly_and_monthly_buckets() {
        // Daily at noon for 60 days from Monday 2026-01-05.
        let times: Vec<i64> = (0..60).map(|i| at(2026, 1, 5 + i, 12)).collect();
        let p = Policy {
            weekly: 2,
            monthly: 2,
            ..Default::default()
        };
        let d = kept(&p, &times);
        let kept_days: Vec<usize> = (0..60).filter(|&i| d[i]).collect();
        // Newest is day 59 (2026-03-05, Thursday): weekly keeps it and the previous Sunday (day 55);
        // monthly keeps it and Feb 28 (day 54).
        assert_eq!(kept_days, [54, 55, 59]);
    }
}
