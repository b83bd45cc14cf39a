//! When jobs run: cron schedules in a named time zone, and the clock the
//! scheduler reads and sleeps on.
//!
//! On the days the clocks change, croner follows Vixie cron's rules: a
//! job at a fixed time (single second, minute and hour) runs once when its
//! hour happens twice (at the first pass) and right after the gap when its
//! hour is skipped; a job that runs every few minutes runs by real time,
//! through both passes of a repeated hour, and has no runs in a skipped
//! one. So a daily job at one time never runs twice nor is skipped, and a
//! 5-minute job keeps its 5 minutes. (A schedule listing several hours,
//! `30 1,13 * * *`, is of the second kind; docs/server.md says so.)

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    text: String,
    tz_name: String,
}

impl Schedule {
    /// Parses `expr` (5 fields, or 6 with seconds first) in time zone
    /// `tz` (an IANA name; `None` is UTC).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Schedule, String> {
        let fields = expr.split_whitespace().count();
        if !expr.trim_start().starts_with('@') && !(5..=6).contains(&fields) {
            return Err(format!(
                "schedule = {expr:?}: cron takes 5 fields (minute hour day month weekday) or 6 with seconds first, not {fields}"
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| format!("schedule = {expr:?}: {e}"))?;
        let tz_name = tz.unwrap_or("UTC").to_string();
        let zone = TimeZone::get(&tz_name).map_err(|e| format!("time-zone = {tz_name:?}: {e}"))?;
        let s = Schedule { cron, tz: zone, text: expr.to_string(), tz_name };
        if s.next_after(Timestamp::now()).is_none() {
            return Err(format!("schedule = {expr:?} never fires"));
        }
        Ok(s)
    }

    /// The first instant after `t` the schedule fires at. Pass the instant
    /// it returned last to get the one after: on a repeated hour, that is
    /// how the search knows which pass it is on.
    pub fn next_after(&self, t: Timestamp) -> Option<Timestamp> {
        let z = t.to_zoned(self.tz.clone());
        self.cron.find_next_occurrence(&z, false).ok().map(|z| z.timestamp())
    }

    /// The day number of `t` in the schedule's time zone (days since
    /// 1970-01-01 there): what rotates a check's slice day by day.
    pub fn day_number(&self, t: Timestamp) -> i64 {
        let d = t.to_zoned(self.tz.clone()).date();
        let epoch = jiff::civil::date(1970, 1, 1);
        epoch.until(d).map(|s| s.get_days() as i64).unwrap_or(0)
    }

    /// As configured, for people.
    pub fn describe(&self) -> String {
        format!("{} ({})", self.text, self.tz_name)
    }
}

/// The time, and sleeping until a time.
pub trait Clock: Send + Sync + 'static {
    /// Now.
    fn now(&self) -> Timestamp;
    /// Returns at `t` or soon after.
    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The system's clock. Sleeps are cut into pieces of at most half a
/// minute and the clock read again after each: a host that was suspended,
/// or whose clock was stepped, runs its jobs by the clock on the wall, not
/// by the time that passed for the process.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }

    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(async move {
            loop {
                let left = t.duration_since(Timestamp::now());
                if left.is_negative() || left.is_zero() {
                    return;
                }
                let left = Duration::try_from(left).unwrap_or(Duration::MAX);
                tokio::time::sleep(left.min(Duration::from_secs(30))).await;
            }
        })
    }
}

/// A clock that starts at a given instant and moves with tokio's timer:
/// under a paused runtime (tests), days pass in an instant, exactly.
pub struct TokioClock {
    base: Timestamp,
    start: tokio::time::Instant,
}

impl TokioClock {
    /// A clock reading `base` now.
    pub fn starting_at(base: Timestamp) -> Self {
        TokioClock { base, start: tokio::time::Instant::now() }
    }
}

impl Clock for TokioClock {
    fn now(&self) -> Timestamp {
        let passed = jiff::SignedDuration::try_from(self.start.elapsed()).unwrap_or(jiff::SignedDuration::MAX);
        self.base.saturating_add(passed).unwrap_or(Timestamp::MAX)
    }

    fn sleep_until(&self, t: Timestamp) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let after = Duration::try_from(t.duration_since(self.base)).unwrap_or(Duration::ZERO);
        Box::pin(tokio::time::sleep_until(self.start + after))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    /// Every instant `s` fires at in `[from, to)`.
    fn fires(s: &Schedule, from: &str, to: &str) -> Vec<Timestamp> {
        let (mut t, end) = (at(from), at(to));
        let mut out = Vec::new();
        while let Some(n) = s.next_after(t).filter(|n| *n < end) {
            out.push(n);
            t = n;
        }
        out
    }

    #[test]
    fn a_daily_job_runs_once_on_both_change_days() {
        // Europe/London: 2026-03-29 01:00 GMT jumps to 02:00 BST;
        // 2026-10-25 02:00 BST falls back to 01:00 GMT.
        let s = Schedule::parse("30 1 * * *", Some("Europe/London")).unwrap();
        // Spring: 01:30 doesn't exist that day; it runs right after the
        // gap, at 02:00 BST = 01:00 UTC, once.
        let f = fires(&s, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z");
        assert_eq!(f, vec![at("2026-03-29T01:00:00Z"), at("2026-03-30T00:30:00Z")]);
        // Autumn: 01:30 happens twice (00:30 and 01:30 UTC): once, at the
        // first pass.
        let f = fires(&s, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z");
        assert_eq!(f, vec![at("2026-10-25T00:30:00Z"), at("2026-10-26T01:30:00Z")]);
    }

    #[test]
    fn a_five_minute_job_keeps_its_pace_through_a_repeated_hour() {
        let s = Schedule::parse("*/5 * * * *", Some("Europe/London")).unwrap();
        // 00:00 to 03:00 UTC on the autumn change day: 01:00-02:00 local
        // happens twice, and the job runs through both passes.
        let f = fires(&s, "2026-10-24T23:57:00Z", "2026-10-25T03:00:00Z");
        assert_eq!(f.len(), 36, "{f:?}");
        assert!(f.windows(2).all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_mins(5)), "{f:?}");
        // And through the skipped hour in spring: real time, 5 minutes apart.
        let f = fires(&s, "2026-03-28T23:57:00Z", "2026-03-29T03:00:00Z");
        assert_eq!(f.len(), 36, "{f:?}");
        assert!(f.windows(2).all(|w| w[1].duration_since(w[0]) == jiff::SignedDuration::from_mins(5)), "{f:?}");
    }

    #[test]
    fn six_fields_have_seconds_first_and_bad_ones_are_named() {
        let s = Schedule::parse("*/2 * * * * *", None).unwrap();
        let f = fires(&s, "2026-01-01T00:00:00Z", "2026-01-01T00:00:10Z");
        assert_eq!(f.len(), 4, "{f:?}");
        let e = Schedule::parse("* * *", None).unwrap_err();
        assert!(e.contains("5 fields"), "{e}");
        let e = Schedule::parse("61 * * * *", None).unwrap_err();
        assert!(e.contains("61 * * * *"), "{e}");
        let e = Schedule::parse("0 3 * * *", Some("Mars/Olympus")).unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
        let e = Schedule::parse("0 0 30 2 *", None).unwrap_err();
        assert!(e.contains("never"), "{e}");
    }

    #[test]
    fn day_numbers_follow_the_time_zone() {
        let s = Schedule::parse("0 3 * * *", Some("Asia/Tokyo")).unwrap();
        // 20:00 UTC on Jan 1 is already Jan 2 in Tokyo.
        assert_eq!(s.day_number(at("1970-01-01T20:00:00Z")), 1);
        let u = Schedule::parse("0 3 * * *", None).unwrap();
        assert_eq!(u.day_number(at("1970-01-01T20:00:00Z")), 0);
    }
}
