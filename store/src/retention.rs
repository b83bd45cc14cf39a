//! Retention policies: which snapshots of a group `forget` keeps.
//!
//! The rules are restic's (`restic forget`, `internal/restic/snapshot_policy.go`
//! from 0.16 on) so that people moving from restic get the kept set they
//! expect. The module is pure: it sees only a timestamp and the tags of each
//! snapshot of one group and the time zone whose calendar defines "hour",
//! "day", "week", "month" and "year"; grouping snapshots, refusing an empty
//! policy and deleting anything are the caller's business.
//!
//! Walking the group newest first, a snapshot is kept when any rule wants it:
//!
//! * `tags`: it carries every tag of one of the listed tag sets;
//! * `within`: it is younger than the duration, measured back from the newest
//!   snapshot of the group (not from "now");
//! * `last`, `hourly`, ..., `yearly` with a count `N`: it is the newest
//!   snapshot of a bucket (hour, day, ISO week, ...) and fewer than `N`
//!   buckets of that kind have been kept so far (`-1` means no limit). When a
//!   count is not used up by the end of the list, the oldest snapshot is kept
//!   as well, which keeps the history as long as possible;
//! * `within_hourly`, ..., `within_yearly`: like the bucket rules, without a
//!   count, for the snapshots younger than the duration.

use std::fmt;
use std::str::FromStr;

use jiff::civil::DateTime;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Span, Timestamp};

/// Which snapshots of a group to keep; every snapshot no rule keeps may be
/// forgotten.
///
/// Counts are a number of buckets (`Some(0)` and `None` both mean "rule off")
/// or `-1` for "every bucket", as in restic. Restic refuses other negative
/// counts on its command line; here they are treated as `-1`, the choice that
/// keeps more.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Keep the `N` newest snapshots (`--keep-last`).
    pub last: Option<i64>,
    /// Keep the newest snapshot of each of the `N` newest hours that have one.
    pub hourly: Option<i64>,
    /// Keep the newest snapshot of each of the `N` newest days that have one.
    pub daily: Option<i64>,
    /// Keep the newest snapshot of each of the `N` newest ISO weeks that have one.
    pub weekly: Option<i64>,
    /// Keep the newest snapshot of each of the `N` newest months that have one.
    pub monthly: Option<i64>,
    /// Keep the newest snapshot of each of the `N` newest years that have one.
    pub yearly: Option<i64>,
    /// Keep every snapshot younger than this, relative to the newest snapshot.
    pub within: Option<Duration>,
    /// Keep the newest snapshot of every hour within this duration of the newest snapshot.
    pub within_hourly: Option<Duration>,
    /// Keep the newest snapshot of every day within this duration of the newest snapshot.
    pub within_daily: Option<Duration>,
    /// Keep the newest snapshot of every ISO week within this duration of the newest snapshot.
    pub within_weekly: Option<Duration>,
    /// Keep the newest snapshot of every month within this duration of the newest snapshot.
    pub within_monthly: Option<Duration>,
    /// Keep the newest snapshot of every year within this duration of the newest snapshot.
    pub within_yearly: Option<Duration>,
    /// Keep every snapshot that carries all tags of any one of these lists.
    pub tags: Vec<Vec<String>>,
}

impl Policy {
    /// True when no rule is set: every count is absent or zero, every
    /// duration absent or zero, and there are no tag lists. [`apply`] keeps
    /// everything under an empty policy; callers should refuse to run one.
    pub fn is_empty(&self) -> bool {
        let counts = [self.last, self.hourly, self.daily, self.weekly, self.monthly, self.yearly];
        let durations = [
            self.within,
            self.within_hourly,
            self.within_daily,
            self.within_weekly,
            self.within_monthly,
            self.within_yearly,
        ];
        counts.iter().all(|c| c.unwrap_or(0) == 0)
            && durations.iter().all(|d| d.is_none_or(|d| d.is_zero()))
            && self.tags.is_empty()
    }
}

/// A calendar duration in restic's notation: e.g. "7y", "2y5m7d3h", "36h",
/// "30d" (`y` years, `m` months, `d` days, `h` hours), components in that
/// order, each at most once, non-negative integers, at least one.
///
/// Years, months and days are calendar units (a month back from March 31 is
/// the end of February; a day back across a DST change is 23 or 25 hours);
/// hours are exact hours.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Duration {
    /// Calendar years.
    pub years: i32,
    /// Calendar months.
    pub months: i32,
    /// Calendar days.
    pub days: i32,
    /// Exact hours.
    pub hours: i32,
}

impl Duration {
    /// True when every component is zero; a zero duration switches its rule off.
    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    /// The instant this duration before `t`: years, months and days are
    /// subtracted from the civil date-time of `t` in `tz` (a day that does
    /// not exist in the target month is clamped to the month's last day, so
    /// one year before 2024-02-29 is 2023-02-28; a civil time that falls into
    /// a DST gap or fold is resolved as jiff's "compatible" rule does), then
    /// the hours are subtracted as exact hours.
    ///
    /// Never panics: a result outside jiff's range saturates to
    /// [`Timestamp::MIN`] (or [`Timestamp::MAX`] for a negative duration).
    pub fn before(&self, t: Timestamp, tz: &TimeZone) -> Timestamp {
        self.checked_before(t, tz).unwrap_or_else(|| {
            let approx_hours = i128::from(self.years) * 8766
                + i128::from(self.months) * 730
                + i128::from(self.days) * 24
                + i128::from(self.hours);
            if approx_hours >= 0 { Timestamp::MIN } else { Timestamp::MAX }
        })
    }

    fn checked_before(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        // Years and months go into one span of months so that their signs may
        // differ (a jiff span has one sign) and clamping happens only once.
        let months = i64::from(self.years) * 12 + i64::from(self.months);
        let civil: DateTime = t.to_zoned(tz.clone()).datetime();
        let civil = civil
            .checked_sub(Span::new().try_months(months).ok()?)
            .ok()?
            .checked_sub(Span::new().try_days(i64::from(self.days)).ok()?)
            .ok()?;
        let shifted = tz.to_ambiguous_zoned(civil).compatible().ok()?.timestamp();
        shifted.checked_sub(SignedDuration::from_hours(i64::from(self.hours))).ok()
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_zero() {
            return f.write_str("0h");
        }
        for (n, unit) in [(self.years, 'y'), (self.months, 'm'), (self.days, 'd'), (self.hours, 'h')] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

impl FromStr for Duration {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        const UNITS: [char; 4] = ['y', 'm', 'd', 'h'];
        let err = |why: String| {
            format!(
                "invalid duration {s:?}: {why}; expected integers with the units y, m, d, h \
                 in that order, each at most once, e.g. \"7y\", \"36h\" or \"2y5m7d3h\""
            )
        };
        if s.is_empty() {
            return Err(err("it is empty".to_string()));
        }
        let mut duration = Duration::default();
        // Index into UNITS of the first unit still allowed.
        let mut next_unit = 0;
        let mut rest = s;
        while !rest.is_empty() {
            let digits = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
            if digits == 0 {
                return Err(err(format!("expected a number at {rest:?}")));
            }
            let (number, tail) = rest.split_at(digits);
            let mut chars = tail.chars();
            let Some(unit) = chars.next() else {
                return Err(err(format!("the number {number} has no unit")));
            };
            let Some(pos) = UNITS.iter().position(|&u| u == unit) else {
                return Err(err(format!("unknown unit {unit:?}")));
            };
            if pos < next_unit {
                return Err(err(format!("unit {unit:?} is repeated or out of order")));
            }
            let n: i32 = number.parse().map_err(|_| err(format!("{number}{unit} is too large")))?;
            match pos {
                0 => duration.years = n,
                1 => duration.months = n,
                2 => duration.days = n,
                _ => duration.hours = n,
            }
            next_unit = pos + 1;
            rest = chars.as_str();
        }
        Ok(duration)
    }
}

/// What [`apply`] needs to know about one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// When the snapshot was taken.
    pub time: Timestamp,
    /// The snapshot's tags.
    pub tags: Vec<String>,
}

/// The verdict on one snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Whether the snapshot is kept.
    pub keep: bool,
    /// Why it is kept, e.g. "tags a,b", "within 7y", "daily snapshot",
    /// "hourly within 2d", in that order of rule kinds; empty when it is not
    /// kept (and under an empty policy).
    pub reasons: Vec<String>,
}

/// The calendar unit a bucket rule groups snapshots by.
#[derive(Debug, Clone, Copy)]
enum Period {
    /// Every snapshot is a bucket of its own.
    Last,
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    fn name(self) -> &'static str {
        match self {
            Period::Last => "last",
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The bucket of the snapshot at position `nr` (newest first) with civil time `civil`.
    fn bucket(self, civil: &Civil, nr: usize) -> i64 {
        match self {
            Period::Last => i64::try_from(nr).unwrap_or(i64::MAX),
            Period::Hourly => ((civil.year * 100 + civil.month) * 100 + civil.day) * 100 + civil.hour,
            Period::Daily => (civil.year * 100 + civil.month) * 100 + civil.day,
            Period::Weekly => civil.iso_year * 100 + civil.iso_week,
            Period::Monthly => civil.year * 100 + civil.month,
            Period::Yearly => civil.year,
        }
    }
}

/// The calendar fields of one snapshot's time in the policy's time zone.
struct Civil {
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    iso_year: i64,
    iso_week: i64,
}

impl Civil {
    fn new(t: Timestamp, tz: &TimeZone) -> Self {
        let zoned = t.to_zoned(tz.clone());
        let week = zoned.date().iso_week_date();
        Civil {
            year: zoned.year().into(),
            month: zoned.month().into(),
            day: zoned.day().into(),
            hour: zoned.hour().into(),
            iso_year: week.year().into(),
            iso_week: week.week().into(),
        }
    }
}

/// A bucket rule with a count (`--keep-daily 7`).
struct CountRule {
    period: Period,
    /// Buckets still to keep; negative means unlimited.
    remaining: i64,
    /// The bucket of the last snapshot this rule kept.
    last: Option<i64>,
}

/// A bucket rule limited by age (`--keep-within-daily 7d`).
struct WithinRule {
    period: Period,
    duration: Duration,
    /// Snapshots at or before this instant are out of the rule's reach.
    cutoff: Timestamp,
    last: Option<i64>,
}

/// Applies the policy to one group of snapshots and returns one [`Decision`]
/// per input, in input order (inputs may come in any order; snapshots with
/// equal times are ordered by their input position).
///
/// Calendar buckets (hour, day, ISO week, month, year) are taken in the civil
/// time of `tz`, and `within` durations are measured back from the newest
/// snapshot of the group. Under an empty policy (see [`Policy::is_empty`])
/// everything is kept, with no reasons.
pub fn apply(policy: &Policy, snapshots: &[Candidate], tz: &TimeZone) -> Vec<Decision> {
    apply_at(policy, snapshots, tz, None)
}

/// [`apply`], with `within` durations measured back from the newest snapshot
/// that is not more than an hour after `now` (restic's rule: a snapshot
/// from a host whose clock runs ahead must not push every real snapshot out
/// of `--keep-within`). Without `now`, or when every snapshot is in the
/// future, the newest snapshot counts.
pub fn apply_at(policy: &Policy, snapshots: &[Candidate], tz: &TimeZone, now: Option<Timestamp>) -> Vec<Decision> {
    let mut decisions = vec![Decision { keep: false, reasons: Vec::new() }; snapshots.len()];
    if policy.is_empty() {
        for decision in &mut decisions {
            decision.keep = true;
        }
        return decisions;
    }

    // Newest first; `sort_by` is stable, so equal times keep input order.
    let mut order: Vec<usize> = (0..snapshots.len()).collect();
    order.sort_by(|&a, &b| snapshots[b].time.cmp(&snapshots[a].time));
    let Some(&newest) = order.first() else {
        return decisions;
    };
    let horizon = now.and_then(|n| n.checked_add(jiff::SignedDuration::from_hours(1)).ok());
    let latest = horizon
        .and_then(|h| order.iter().map(|&i| snapshots[i].time).find(|t| *t <= h))
        .unwrap_or(snapshots[newest].time);

    let within = policy.within.filter(|d| !d.is_zero()).map(|d| (d, d.before(latest, tz)));
    let mut count_rules: Vec<CountRule> = [
        (Period::Last, policy.last),
        (Period::Hourly, policy.hourly),
        (Period::Daily, policy.daily),
        (Period::Weekly, policy.weekly),
        (Period::Monthly, policy.monthly),
        (Period::Yearly, policy.yearly),
    ]
    .into_iter()
    .filter_map(|(period, count)| match count {
        None | Some(0) => None,
        Some(n) => Some(CountRule { period, remaining: n.max(-1), last: None }),
    })
    .collect();
    let mut within_rules: Vec<WithinRule> = [
        (Period::Hourly, policy.within_hourly),
        (Period::Daily, policy.within_daily),
        (Period::Weekly, policy.within_weekly),
        (Period::Monthly, policy.within_monthly),
        (Period::Yearly, policy.within_yearly),
    ]
    .into_iter()
    .filter_map(|(period, duration)| {
        let duration = duration.filter(|d| !d.is_zero())?;
        Some(WithinRule { period, duration, cutoff: duration.before(latest, tz), last: None })
    })
    .collect();

    for (nr, &idx) in order.iter().enumerate() {
        let snapshot = &snapshots[idx];
        let civil = Civil::new(snapshot.time, tz);
        let oldest = nr + 1 == order.len();
        let reasons = &mut decisions[idx].reasons;

        // Tags are not counted against anything.
        for tags in &policy.tags {
            if tags.iter().all(|tag| snapshot.tags.contains(tag)) {
                reasons.push(format!("tags {}", tags.join(",")));
            }
        }

        if let Some((duration, cutoff)) = within
            && snapshot.time > cutoff
        {
            reasons.push(format!("within {duration}"));
        }

        for rule in &mut count_rules {
            if rule.remaining == 0 {
                continue;
            }
            let bucket = rule.period.bucket(&civil, nr);
            // The oldest snapshot is kept while counts are left, to keep
            // as much history as the policy allows.
            if rule.last != Some(bucket) || oldest {
                rule.last = Some(bucket);
                if rule.remaining > 0 {
                    rule.remaining -= 1;
                }
                reasons.push(format!("{} snapshot", rule.period.name()));
            }
        }

        for rule in &mut within_rules {
            if snapshot.time <= rule.cutoff {
                continue;
            }
            let bucket = rule.period.bucket(&civil, nr);
            if rule.last != Some(bucket) {
                rule.last = Some(bucket);
                reasons.push(format!("{} within {}", rule.period.name(), rule.duration));
            }
        }

        decisions[idx].keep = !decisions[idx].reasons.is_empty();
    }
    decisions
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::civil::date;
    use proptest::prelude::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("test timestamps are valid RFC 3339")
    }

    /// America/New_York without needing the system's tzdata.
    fn new_york() -> TimeZone {
        TimeZone::posix("EST5EDT,M3.2.0,M11.1.0").expect("valid POSIX TZ string")
    }

    /// The instant of a civil time in `tz` (ambiguous times resolve to the earlier one).
    fn local(tz: &TimeZone, y: i16, mo: i8, d: i8, h: i8, mi: i8) -> Timestamp {
        date(y, mo, d).at(h, mi, 0, 0).to_zoned(tz.clone()).expect("civil time in range").timestamp()
    }

    fn candidates(times: &[Timestamp]) -> Vec<Candidate> {
        times.iter().map(|&time| Candidate { time, tags: Vec::new() }).collect()
    }

    /// Input positions of the kept snapshots.
    fn kept(policy: &Policy, snapshots: &[Candidate], tz: &TimeZone) -> Vec<usize> {
        let decisions = apply(policy, snapshots, tz);
        assert_eq!(decisions.len(), snapshots.len());
        for d in &decisions {
            assert_eq!(d.keep, !d.reasons.is_empty() || policy.is_empty(), "{d:?}");
        }
        decisions.iter().enumerate().filter(|(_, d)| d.keep).map(|(i, _)| i).collect()
    }

    fn kept_times(policy: &Policy, times: &[Timestamp], tz: &TimeZone) -> Vec<usize> {
        kept(policy, &candidates(times), tz)
    }

    fn dur(s: &str) -> Duration {
        s.parse().expect("test durations are valid")
    }

    #[test]
    fn table_of_policies() {
        let base = [
            "2024-05-10T18:00:00Z", // 0
            "2024-05-10T08:00:00Z", // 1
            "2024-05-09T20:00:00Z", // 2
            "2024-05-09T20:30:00Z", // 3
            "2024-05-08T10:00:00Z", // 4
            "2024-04-30T10:00:00Z", // 5
            "2024-04-01T10:00:00Z", // 6
            "2023-12-31T23:00:00Z", // 7
            "2022-06-15T12:00:00Z", // 8
        ];
        let cases: Vec<(&str, Policy, Vec<usize>)> = vec![
            ("empty policy keeps all", Policy::default(), (0..9).collect()),
            ("zero counts are empty", Policy { last: Some(0), daily: Some(0), ..Policy::default() }, (0..9).collect()),
            ("last 3", Policy { last: Some(3), ..Policy::default() }, vec![0, 1, 3]),
            ("last 1", Policy { last: Some(1), ..Policy::default() }, vec![0]),
            ("last beyond size keeps all", Policy { last: Some(20), ..Policy::default() }, (0..9).collect()),
            ("hourly 3", Policy { hourly: Some(3), ..Policy::default() }, vec![0, 1, 3]),
            ("daily 3", Policy { daily: Some(3), ..Policy::default() }, vec![0, 3, 4]),
            ("weekly 2", Policy { weekly: Some(2), ..Policy::default() }, vec![0, 5]),
            ("monthly 2", Policy { monthly: Some(2), ..Policy::default() }, vec![0, 5]),
            ("yearly 1", Policy { yearly: Some(1), ..Policy::default() }, vec![0]),
            ("yearly 5 keeps oldest too", Policy { yearly: Some(5), ..Policy::default() }, vec![0, 7, 8]),
            ("monthly unlimited", Policy { monthly: Some(-1), ..Policy::default() }, vec![0, 5, 7, 8]),
            ("last 1 + daily 2", Policy { last: Some(1), daily: Some(2), ..Policy::default() }, vec![0, 3]),
            ("within 2d", Policy { within: Some(dur("2d")), ..Policy::default() }, vec![0, 1, 2, 3]),
            ("within 32h", Policy { within: Some(dur("32h")), ..Policy::default() }, vec![0, 1, 2, 3]),
            ("within 1m", Policy { within: Some(dur("1m")), ..Policy::default() }, vec![0, 1, 2, 3, 4, 5]),
            ("within 0h is empty", Policy { within: Some(dur("0h")), ..Policy::default() }, (0..9).collect()),
            ("within-daily 3d", Policy { within_daily: Some(dur("3d")), ..Policy::default() }, vec![0, 3, 4]),
            ("within-monthly 1y", Policy { within_monthly: Some(dur("1y")), ..Policy::default() }, vec![0, 5, 7]),
        ];
        let times: Vec<Timestamp> = base.iter().map(|s| ts(s)).collect();
        for (name, policy, expected) in cases {
            assert_eq!(kept_times(&policy, &times, &TimeZone::UTC), expected, "{name}");
        }
    }

    #[test]
    fn keep_last_keeps_newest_n_regardless_of_input_order() {
        let times = [
            ts("2024-01-03T00:00:00Z"),
            ts("2024-01-05T00:00:00Z"),
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-04T00:00:00Z"),
        ];
        let policy = Policy { last: Some(2), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &TimeZone::UTC), vec![1, 3]);
        let decisions = apply(&policy, &candidates(&times), &TimeZone::UTC);
        assert_eq!(decisions[1].reasons, vec!["last snapshot"]);
        assert!(decisions[0].reasons.is_empty());
    }

    #[test]
    fn daily_keeps_newest_of_each_day() {
        let tz = new_york();
        let times = [
            local(&tz, 2024, 6, 3, 9, 0),
            local(&tz, 2024, 6, 3, 21, 0),
            local(&tz, 2024, 6, 3, 15, 0),
            local(&tz, 2024, 6, 2, 1, 0),
            local(&tz, 2024, 6, 2, 23, 59),
            local(&tz, 2024, 6, 1, 12, 0),
            local(&tz, 2024, 6, 1, 13, 0),
        ];
        let policy = Policy { daily: Some(2), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![1, 4]);
        let policy = Policy { daily: Some(3), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![1, 4, 6]);
        // In UTC, 21:00 EDT on June 3 is June 4 and 23:59 EDT on June 2 is June 3.
        assert_eq!(kept_times(&policy, &times, &TimeZone::UTC), vec![1, 2, 3]);
    }

    #[test]
    fn daily_across_spring_forward() {
        let tz = new_york();
        // 2024-03-10 02:00 EST jumps to 03:00 EDT.
        let before_midnight = local(&tz, 2024, 3, 10, 23, 30);
        let after_midnight = local(&tz, 2024, 3, 11, 0, 30);
        assert_eq!(after_midnight, ts("2024-03-11T04:30:00Z"));
        assert_eq!(before_midnight, ts("2024-03-11T03:30:00Z"));
        let night_before = local(&tz, 2024, 3, 9, 23, 30);
        let first_edt = local(&tz, 2024, 3, 10, 3, 0);
        let oldest = local(&tz, 2024, 3, 1, 12, 0);
        let times = [after_midnight, before_midnight, first_edt, night_before, oldest];
        let policy = Policy { daily: Some(10), ..Policy::default() };
        // March 11, March 10 (newest is 23:30), March 9, March 1.
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 1, 3, 4]);
        // With standard time all year, 00:30 EDT would be 23:30 on March 10.
        let est_only = TimeZone::fixed(jiff::tz::offset(-5));
        assert_eq!(kept_times(&policy, &times, &est_only), vec![0, 3, 4]);
    }

    #[test]
    fn hourly_across_fall_back_shares_the_repeated_hour() {
        let tz = new_york();
        // 2024-11-03 02:00 EDT falls back to 01:00 EST; 01:30 happens twice.
        let edt = ts("2024-11-03T05:30:00Z");
        let est = ts("2024-11-03T06:30:00Z");
        assert_eq!(edt.to_zoned(tz.clone()).datetime(), est.to_zoned(tz.clone()).datetime());
        let older = ts("2024-11-02T12:00:00Z");
        let times = [older, edt, est];
        let policy = Policy { hourly: Some(10), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 2]);
        assert_eq!(kept_times(&policy, &times, &TimeZone::UTC), vec![0, 1, 2]);
    }

    #[test]
    fn weekly_across_year_boundary_uses_iso_weeks() {
        let tz = TimeZone::UTC;
        let times = [
            ts("2021-01-04T12:00:00Z"), // 2021-W01
            ts("2021-01-01T12:00:00Z"), // 2020-W53
            ts("2020-12-29T12:00:00Z"), // 2020-W53
            ts("2020-12-27T12:00:00Z"), // 2020-W52 (a Sunday)
            ts("2020-12-20T12:00:00Z"), // 2020-W51
        ];
        let policy = Policy { weekly: Some(10), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 1, 3, 4]);
        let policy = Policy { weekly: Some(2), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 1]);
    }

    #[test]
    fn monthly_and_yearly_with_leap_day() {
        let tz = TimeZone::UTC;
        let times = [
            ts("2024-03-01T10:00:00Z"), // 0
            ts("2024-02-29T10:00:00Z"), // 1
            ts("2024-02-28T10:00:00Z"), // 2
            ts("2023-12-31T10:00:00Z"), // 3
            ts("2023-06-01T10:00:00Z"), // 4
            ts("2022-01-01T10:00:00Z"), // 5
        ];
        let monthly = Policy { monthly: Some(3), ..Policy::default() };
        assert_eq!(kept_times(&monthly, &times, &tz), vec![0, 1, 3]);
        let yearly = Policy { yearly: Some(10), ..Policy::default() };
        assert_eq!(kept_times(&yearly, &times, &tz), vec![0, 3, 5]);
        // 2024-03-01 03:00 UTC is still February 29 in New York.
        let times = [ts("2024-03-01T03:00:00Z"), ts("2024-02-29T10:00:00Z"), ts("2024-01-15T10:00:00Z")];
        let monthly = Policy { monthly: Some(10), ..Policy::default() };
        assert_eq!(kept_times(&monthly, &times, &new_york()), vec![0, 2]);
        assert_eq!(kept_times(&monthly, &times, &tz), vec![0, 1, 2]);
    }

    #[test]
    fn keep_within_is_relative_to_newest_snapshot() {
        let tz = TimeZone::UTC;
        let times = [
            ts("2024-02-29T12:00:00Z"), // newest, a leap day
            ts("2017-02-28T12:00:01Z"), // just inside 7y
            ts("2017-02-28T12:00:00Z"), // exactly 7y: not strictly after
            ts("2017-03-01T00:00:00Z"),
            ts("2016-01-01T00:00:00Z"),
        ];
        let policy = Policy { within: Some(dur("7y")), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 1, 3]);
        let decisions = apply(&policy, &candidates(&times), &tz);
        assert_eq!(decisions[0].reasons, vec!["within 7y"]);
    }

    #[test]
    fn duration_before_clamps_leap_day() {
        let tz = TimeZone::UTC;
        assert_eq!(dur("1y").before(ts("2024-02-29T00:00:00Z"), &tz), ts("2023-02-28T00:00:00Z"));
        assert_eq!(dur("1m").before(ts("2024-03-31T06:00:00Z"), &tz), ts("2024-02-29T06:00:00Z"));
        assert_eq!(dur("1y1m").before(ts("2024-03-31T06:00:00Z"), &tz), ts("2023-02-28T06:00:00Z"));
        assert_eq!(dur("1d2h").before(ts("2024-03-31T06:00:00Z"), &tz), ts("2024-03-30T04:00:00Z"));
    }

    #[test]
    fn duration_before_days_are_calendar_days_hours_are_exact() {
        let tz = new_york();
        let t = local(&tz, 2024, 3, 10, 12, 0);
        // One calendar day back across spring-forward is 23 exact hours.
        assert_eq!(dur("1d").before(t, &tz), local(&tz, 2024, 3, 9, 12, 0));
        assert_eq!(t.duration_since(dur("1d").before(t, &tz)), SignedDuration::from_hours(23));
        assert_eq!(t.duration_since(dur("24h").before(t, &tz)), SignedDuration::from_hours(24));
    }

    #[test]
    fn duration_before_saturates() {
        let tz = new_york();
        let t = ts("2024-01-01T00:00:00Z");
        let huge = Duration { years: i32::MAX, months: i32::MAX, days: i32::MAX, hours: i32::MAX };
        assert_eq!(huge.before(t, &tz), Timestamp::MIN);
        assert_eq!(dur("99999y").before(t, &tz), Timestamp::MIN);
        assert_eq!(dur("1h").before(Timestamp::MIN, &tz), Timestamp::MIN);
        let negative = Duration { years: i32::MIN, months: i32::MIN, days: i32::MIN, hours: i32::MIN };
        assert_eq!(negative.before(t, &tz), Timestamp::MAX);
    }

    #[test]
    fn unlimited_counts_keep_every_bucket() {
        let tz = TimeZone::UTC;
        let times: Vec<Timestamp> =
            (0..40).map(|i| ts("2024-01-01T00:00:00Z") + SignedDuration::from_hours(i * 7)).collect();
        let policy = Policy { daily: Some(-1), ..Policy::default() };
        let kept = kept_times(&policy, &times, &tz);
        let mut days: Vec<_> = times.iter().map(|t| t.to_zoned(tz.clone()).date()).collect();
        days.dedup();
        // One per day, plus the oldest snapshot: an unlimited count never runs out.
        assert_eq!(kept.len(), days.len() + 1);
        assert!(kept.contains(&0));
        for day in days {
            let newest = times.iter().rposition(|t| t.to_zoned(tz.clone()).date() == day).unwrap();
            assert!(kept.contains(&newest), "{day}");
        }
        let policy = Policy { last: Some(-1), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), (0..40).collect::<Vec<_>>());
        // Other negative counts are treated as unlimited.
        let policy = Policy { last: Some(-7), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), (0..40).collect::<Vec<_>>());
    }

    #[test]
    fn oldest_snapshot_is_kept_while_counts_remain() {
        let tz = TimeZone::UTC;
        let three_days = [ts("2024-01-03T10:00:00Z"), ts("2024-01-02T10:00:00Z"), ts("2024-01-01T10:00:00Z")];
        let policy = Policy { daily: Some(5), ..Policy::default() };
        assert_eq!(kept_times(&policy, &three_days, &tz), vec![0, 1, 2]);

        let one_day = [
            ts("2024-01-01T10:00:00Z"),
            ts("2024-01-01T14:00:00Z"),
            ts("2024-01-01T08:00:00Z"), // oldest
            ts("2024-01-01T12:00:00Z"),
            ts("2024-01-01T16:00:00Z"), // newest
        ];
        let policy = Policy { daily: Some(2), ..Policy::default() };
        assert_eq!(kept_times(&policy, &one_day, &tz), vec![2, 4]);
        let decisions = apply(&policy, &candidates(&one_day), &tz);
        assert_eq!(decisions[2].reasons, vec!["daily snapshot"]);

        // Once the count is used up the oldest is not kept.
        let policy = Policy { daily: Some(1), ..Policy::default() };
        assert_eq!(kept_times(&policy, &one_day, &tz), vec![4]);
    }

    #[test]
    fn within_buckets_do_not_keep_the_oldest() {
        let tz = TimeZone::UTC;
        let one_day = [ts("2024-01-01T10:00:00Z"), ts("2024-01-01T12:00:00Z"), ts("2024-01-01T08:00:00Z")];
        let policy = Policy { within_daily: Some(dur("5d")), ..Policy::default() };
        assert_eq!(kept_times(&policy, &one_day, &tz), vec![1]);
    }

    #[test]
    fn tag_lists_need_all_tags_of_any_list() {
        let tz = TimeZone::UTC;
        let tagged = |time: &str, tags: &[&str]| Candidate {
            time: ts(time),
            tags: tags.iter().map(|t| t.to_string()).collect(),
        };
        let snapshots = [
            tagged("2024-01-05T00:00:00Z", &["x"]),
            tagged("2024-01-04T00:00:00Z", &["a", "b", "c"]),
            tagged("2024-01-03T00:00:00Z", &["a"]),
            tagged("2024-01-02T00:00:00Z", &["c", "z"]),
            tagged("2024-01-01T00:00:00Z", &["b", "a"]),
            tagged("2023-12-31T00:00:00Z", &[]),
        ];
        let policy = Policy { tags: vec![vec!["a".into(), "b".into()], vec!["c".into()]], ..Policy::default() };
        assert!(!policy.is_empty());
        assert_eq!(kept(&policy, &snapshots, &tz), vec![1, 3, 4]);
        let decisions = apply(&policy, &snapshots, &tz);
        assert_eq!(decisions[1].reasons, vec!["tags a,b", "tags c"]);
        assert_eq!(decisions[3].reasons, vec!["tags c"]);
        assert_eq!(decisions[4].reasons, vec!["tags a,b"]);

        // Tags are not counted: keep-last still counts every snapshot.
        let policy = Policy { last: Some(2), ..policy };
        assert_eq!(kept(&policy, &snapshots, &tz), vec![0, 1, 3, 4]);
        assert_eq!(apply(&policy, &snapshots, &tz)[1].reasons, vec!["tags a,b", "tags c", "last snapshot"]);
    }

    #[test]
    fn within_daily_keeps_newest_per_day_inside_window() {
        let tz = TimeZone::UTC;
        let times = [
            ts("2024-05-10T18:00:00Z"), // 0 newest
            ts("2024-05-10T08:00:00Z"), // 1
            ts("2024-05-09T20:00:00Z"), // 2
            ts("2024-05-09T07:00:00Z"), // 3
            ts("2024-05-08T20:00:00Z"), // 4 inside (after 05-08 18:00)
            ts("2024-05-08T10:00:00Z"), // 5 outside
            ts("2024-05-07T12:00:00Z"), // 6 outside
        ];
        let policy = Policy { within_daily: Some(dur("2d")), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![0, 2, 4]);
        let decisions = apply(&policy, &candidates(&times), &tz);
        assert_eq!(decisions[4].reasons, vec!["daily within 2d"]);
    }

    #[test]
    fn reasons_follow_rule_order() {
        let tz = TimeZone::UTC;
        let snapshots = [
            Candidate { time: ts("2024-05-10T18:00:00Z"), tags: vec!["t".into()] },
            Candidate { time: ts("2024-05-01T18:00:00Z"), tags: Vec::new() },
        ];
        let policy = Policy {
            last: Some(1),
            hourly: Some(1),
            daily: Some(1),
            weekly: Some(1),
            monthly: Some(1),
            yearly: Some(1),
            within: Some(dur("1d")),
            within_hourly: Some(dur("1d")),
            within_daily: Some(dur("1d")),
            within_weekly: Some(dur("1d")),
            within_monthly: Some(dur("1d")),
            within_yearly: Some(dur("1d")),
            tags: vec![vec!["t".into()]],
        };
        let decisions = apply(&policy, &snapshots, &tz);
        assert_eq!(
            decisions[0].reasons,
            vec![
                "tags t",
                "within 1d",
                "last snapshot",
                "hourly snapshot",
                "daily snapshot",
                "weekly snapshot",
                "monthly snapshot",
                "yearly snapshot",
                "hourly within 1d",
                "daily within 1d",
                "weekly within 1d",
                "monthly within 1d",
                "yearly within 1d",
            ]
        );
        assert_eq!(decisions[1], Decision { keep: false, reasons: Vec::new() });
    }

    #[test]
    fn unsorted_input_returns_decisions_in_input_order() {
        let tz = TimeZone::UTC;
        let times = [
            ts("2024-01-02T10:00:00Z"),
            ts("2024-01-03T09:00:00Z"),
            ts("2024-01-01T10:00:00Z"),
            ts("2024-01-03T12:00:00Z"),
            ts("2024-01-02T08:00:00Z"),
        ];
        let policy = Policy { daily: Some(2), ..Policy::default() };
        let decisions = apply(&policy, &candidates(&times), &tz);
        let keep: Vec<bool> = decisions.iter().map(|d| d.keep).collect();
        assert_eq!(keep, vec![true, false, false, true, false]);
    }

    #[test]
    fn equal_times_are_ordered_by_input_position() {
        let tz = TimeZone::UTC;
        let t = ts("2024-01-01T10:00:00Z");
        let times = [ts("2023-01-01T00:00:00Z"), t, t, t];
        let policy = Policy { last: Some(2), ..Policy::default() };
        assert_eq!(kept_times(&policy, &times, &tz), vec![1, 2]);
    }

    #[test]
    fn empty_inputs() {
        let policy = Policy { last: Some(3), ..Policy::default() };
        assert!(apply(&policy, &[], &TimeZone::UTC).is_empty());
        assert!(apply(&Policy::default(), &[], &TimeZone::UTC).is_empty());
        let decisions = apply(&Policy::default(), &candidates(&[ts("2024-01-01T00:00:00Z")]), &TimeZone::UTC);
        assert_eq!(decisions, vec![Decision { keep: true, reasons: Vec::new() }]);
    }

    #[test]
    fn policy_is_empty() {
        assert!(Policy::default().is_empty());
        assert!(Policy { last: Some(0), within: Some(Duration::default()), ..Policy::default() }.is_empty());
        assert!(!Policy { last: Some(-1), ..Policy::default() }.is_empty());
        assert!(!Policy { within_yearly: Some(dur("1y")), ..Policy::default() }.is_empty());
        assert!(!Policy { tags: vec![vec![]], ..Policy::default() }.is_empty());
    }

    #[test]
    fn duration_parses_restic_notation() {
        assert_eq!(dur("7y"), Duration { years: 7, ..Duration::default() });
        assert_eq!(dur("2y5m7d3h"), Duration { years: 2, months: 5, days: 7, hours: 3 });
        assert_eq!(dur("36h"), Duration { hours: 36, ..Duration::default() });
        assert_eq!(dur("30d"), Duration { days: 30, ..Duration::default() });
        assert_eq!(dur("1m2h"), Duration { months: 1, hours: 2, ..Duration::default() });
        assert_eq!(dur("0d"), Duration::default());
    }

    #[test]
    fn duration_rejects_bad_input() {
        for bad in ["", "7", "7w", "y7", "7d7y", "-1d", "99999999999y", "7y7y", "7y ", " 7y", "1.5d", "7Y", "7y3"] {
            let err = bad.parse::<Duration>().expect_err(bad);
            assert!(err.contains(&format!("{bad:?}")), "{err}");
            assert!(err.contains("expected"), "{err}");
        }
    }

    #[test]
    fn duration_display_round_trips() {
        assert_eq!(dur("7y").to_string(), "7y");
        assert_eq!(dur("2y5m7d3h").to_string(), "2y5m7d3h");
        assert_eq!(dur("0y0m30d0h").to_string(), "30d");
        assert_eq!(Duration::default().to_string(), "0h");
        for s in ["7y", "2y5m7d3h", "36h", "1m", "4d5h"] {
            assert_eq!(dur(s).to_string(), s);
            assert_eq!(dur(&dur(s).to_string()), dur(s));
        }
    }

    fn any_time() -> impl Strategy<Value = Timestamp> {
        let near = 1_700_000_000i64..1_700_000_000 + 90 * 86_400;
        let anywhere = Timestamp::MIN.as_second()..=Timestamp::MAX.as_second();
        prop_oneof![4 => near, 1 => anywhere].prop_map(|s| Timestamp::from_second(s).expect("in range"))
    }

    fn any_duration() -> impl Strategy<Value = Option<Duration>> {
        let small = (0..3i32, 0..13i32, 0..40i32, 0..100i32);
        let wild = (any::<i32>(), any::<i32>(), any::<i32>(), any::<i32>());
        proptest::option::of(prop_oneof![4 => small, 1 => wild])
            .prop_map(|d| d.map(|(years, months, days, hours)| Duration { years, months, days, hours }))
    }

    fn any_count() -> impl Strategy<Value = Option<i64>> {
        proptest::option::of(-2i64..6)
    }

    fn any_policy() -> impl Strategy<Value = Policy> {
        let counts = (any_count(), any_count(), any_count(), any_count(), any_count(), any_count());
        let durations =
            (any_duration(), any_duration(), any_duration(), any_duration(), any_duration(), any_duration());
        let tags = proptest::collection::vec(proptest::collection::vec("[abc]", 0..3), 0..2);
        (counts, durations, tags).prop_map(
            |(
                (last, hourly, daily, weekly, monthly, yearly),
                (within, within_hourly, within_daily, within_weekly, within_monthly, within_yearly),
                tags,
            )| Policy {
                last,
                hourly,
                daily,
                weekly,
                monthly,
                yearly,
                within,
                within_hourly,
                within_daily,
                within_weekly,
                within_monthly,
                within_yearly,
                tags,
            },
        )
    }

    fn any_snapshots() -> impl Strategy<Value = Vec<Candidate>> {
        let one =
            (any_time(), proptest::collection::vec("[abc]", 0..3)).prop_map(|(time, tags)| Candidate { time, tags });
        proptest::collection::vec(one, 0..30)
    }

    /// Input positions, newest first, equal times in input order.
    fn newest_first(snapshots: &[Candidate]) -> Vec<usize> {
        let mut order: Vec<usize> = (0..snapshots.len()).collect();
        order.sort_by_key(|&i| std::cmp::Reverse(snapshots[i].time));
        order
    }

    proptest! {
        #[test]
        fn apply_is_total_and_keeps_newest(
            policy in any_policy(),
            snapshots in any_snapshots(),
            new_york_tz in any::<bool>(),
        ) {
            let tz = if new_york_tz { new_york() } else { TimeZone::UTC };
            let decisions = apply(&policy, &snapshots, &tz);
            prop_assert_eq!(decisions.len(), snapshots.len());
            if policy.is_empty() {
                prop_assert!(decisions.iter().all(|d| d.keep));
            }
            let counts = [policy.last, policy.hourly, policy.daily, policy.weekly, policy.monthly, policy.yearly];
            if counts.iter().any(|c| c.unwrap_or(0) != 0)
                && let Some(&newest) = newest_first(&snapshots).first()
            {
                prop_assert!(decisions[newest].keep);
            }
        }

        #[test]
        fn keep_last_keeps_only_the_newest_n(
            n in 1i64..8,
            snapshots in any_snapshots(),
            new_york_tz in any::<bool>(),
        ) {
            let tz = if new_york_tz { new_york() } else { TimeZone::UTC };
            let policy = Policy { last: Some(n), ..Policy::default() };
            let decisions = apply(&policy, &snapshots, &tz);
            let order = newest_first(&snapshots);
            let n = usize::try_from(n).expect("positive");
            for (rank, &idx) in order.iter().enumerate() {
                prop_assert_eq!(decisions[idx].keep, rank < n, "rank {}", rank);
            }
        }
    }
}
