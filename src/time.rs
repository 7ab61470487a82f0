//! UTC time formatting without a timezone database: snapshot names and JSON output are always UTC, so
//! output never depends on the machine's local zone.

/// Formats nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ`.
pub fn rfc3339(time_ns: i64) -> String {
    let secs = time_ns.div_euclid(1_000_000_000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// Howard Hinnant's days-to-civil algorithm: (year, month 1–12, day 1–31) of a day number since
/// the epoch. Shared by timestamps and retention's calendar periods.
pub(crate) fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Days since the epoch of a civil date; months and days outside their range roll over (so
/// 2026-02-31 is 2026-03-03, as Go's `AddDate`, which restic's `--keep-within` uses).
pub(crate) fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = y + (m - 1).div_euclid(12);
    let m = (m - 1).rem_euclid(12) + 1;
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468 + (d - 1)
}

/// Current time in nanoseconds since the epoch.
/// `STRATA_TEST_NOW_NS`, when set, replaces the clock: tests make snapshots on a fixed calendar.
pub fn now_ns() -> i64 {
    if let Some(t) = std::env::var("STRATA_TEST_NOW_NS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return t;
    }
    clock_ns()
}

/// The real clock in nanoseconds since the epoch, never replaced: what file timestamps are
/// compared with.
pub fn clock_ns() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn known_dates() {
        assert_eq!(super::rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(
            super::rfc3339(1_795_564_800_000_000_000),
            "2026-11-25T00:00:00Z"
        );
        assert_eq!(
            super::rfc3339(951_782_400_000_000_000),
            "2000-02-29T00:00:00Z"
        );
        assert_eq!(super::rfc3339(-1_000_000_000), "1969-12-31T23:59:59Z");
    }
}
