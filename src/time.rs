//! Time in UTC: snapshot names, JSON output and retention's calendar periods never depend on the
//! machine's local zone. Calendars are jiff's; only the day arithmetic retention and `history`
//! need with Go's rollover (which jiff, clamping, does not do) is written out here.

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::Timestamp;

/// The instant `time_ns` nanoseconds after the epoch. Every `i64` of nanoseconds (years 1677 to
/// 2262) lies inside jiff's range (years -9999 to 9999), so the conversion cannot fail.
fn timestamp(time_ns: i64) -> Timestamp {
    Timestamp::from_nanosecond(time_ns.into()).expect("i64 nanoseconds are within jiff's range")
}

/// The UTC date and time of day of `time_ns` (nanoseconds since the epoch).
pub(crate) fn utc(time_ns: i64) -> DateTime {
    TimeZone::UTC.to_datetime(timestamp(time_ns))
}

/// Formats nanoseconds since the epoch as `YYYY-MM-DDTHH:MM:SSZ` (fractions of a second cut).
pub fn rfc3339(time_ns: i64) -> String {
    format!("{:.0}", timestamp(time_ns))
}

/// Days since the epoch of a civil date; months and days outside their range roll over (so
/// 2026-02-31 is 2026-03-03, as Go's `AddDate`, which restic's `--keep-within` uses). Howard
/// Hinnant's days-from-civil algorithm.
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

/// Current time in nanoseconds since the epoch: what snapshots are stamped with. In a build with
/// the `test-hooks` feature, `STRATA_TEST_NOW_NS` replaces the clock, so tests and benchmarks make
/// snapshots on a fixed calendar.
pub fn now_ns() -> i64 {
    #[cfg(feature = "test-hooks")]
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
        // Fractions of a second are cut, also before the epoch.
        assert_eq!(super::rfc3339(1_999_999_999), "1970-01-01T00:00:01Z");
        assert_eq!(super::rfc3339(-1), "1969-12-31T23:59:59Z");
        assert_eq!(super::rfc3339(i64::MIN), "1677-09-21T00:12:43Z");
        assert_eq!(super::rfc3339(i64::MAX), "2262-04-11T23:47:16Z");
    }
}
