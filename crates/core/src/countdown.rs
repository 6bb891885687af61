//! How much time a grant has left and how urgent its end is: one rule,
//! used by every client (the tray, the window, notifications, the CLI).
//!
//! Instants here are the broker's: callers convert this machine's clock
//! first (the client's `BrokerClock`), and pass `now` in.

use serde::{Deserialize, Serialize};

use crate::{Duration, Timestamp};

/// The time from now to a deadline, in milliseconds; zero or less once it
/// has passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct TimeLeft(i64);

impl TimeLeft {
    pub fn until(deadline: Timestamp, now: Timestamp) -> TimeLeft {
        TimeLeft(now.millis_until(deadline))
    }

    pub fn from_millis(millis: i64) -> TimeLeft {
        TimeLeft(millis)
    }

    pub fn millis(self) -> i64 {
        self.0
    }

    /// The deadline has been reached.
    pub fn is_over(self) -> bool {
        self.0 <= 0
    }

    /// Whole minutes left, rounded up: a grant with 30 s left has "1 min",
    /// never "0 min" while time remains. The window's countdown (ui
    /// `format.ts`) rounds the same way, so tray and window agree.
    pub fn minutes_rounded_up(self) -> u64 {
        u64::try_from(self.0.max(0)).unwrap_or(0).div_ceil(60_000)
    }

    /// How urgent the end is, by the user's warning times.
    pub fn urgency(self, warnings: &Warnings) -> Urgency {
        if self.is_over() {
            return Urgency::Ended;
        }
        let within = |before: Option<Duration>| before.is_some_and(|before| self.0 <= millis(before));
        if within(warnings.urgent()) {
            Urgency::Urgent
        } else if within(warnings.soon()) {
            Urgency::Soon
        } else {
            Urgency::Calm
        }
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs().saturating_mul(1000)).unwrap_or(i64::MAX)
}

/// How urgent a grant's end is. Shown by colour and words together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Urgency {
    /// More time left than the first warning.
    Calm,
    /// Within the first (largest) warning time: "expiring soon".
    Soon,
    /// Within the last (smallest) warning time.
    Urgent,
    /// At or past the deadline.
    Ended,
}

/// When to warn before a deadline: the user's warning times, largest
/// first, without duplicates or zeros. The first says "expiring soon", the
/// last "urgent"; each is a notification. No times, no warnings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warnings(Vec<Duration>);

impl Warnings {
    /// Ten and two minutes before the deadline.
    pub const DEFAULT: [Duration; 2] = [Duration::from_mins(10), Duration::from_mins(2)];

    pub fn new(times: impl IntoIterator<Item = Duration>) -> Warnings {
        let mut times: Vec<Duration> = times.into_iter().filter(|time| !time.is_zero()).collect();
        times.sort_unstable_by(|a, b| b.cmp(a));
        times.dedup();
        Warnings(times)
    }

    /// Largest first.
    pub fn times(&self) -> &[Duration] {
        &self.0
    }

    /// The first warning: within it a grant is expiring soon.
    pub fn soon(&self) -> Option<Duration> {
        self.0.first().copied()
    }

    /// The last warning: within it a grant's end is urgent.
    pub fn urgent(&self) -> Option<Duration> {
        self.0.last().copied()
    }

    /// The instant each warning is due for `deadline`, largest time first.
    pub fn moments(&self, deadline: Timestamp) -> impl Iterator<Item = (Duration, Timestamp)> + '_ {
        self.0.iter().map(move |before| (*before, deadline.plus_millis(-millis(*before))))
    }
}

impl Default for Warnings {
    fn default() -> Self {
        Warnings::new(Warnings::DEFAULT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn left(secs: i64) -> TimeLeft {
        TimeLeft::until(NOW.plus_millis(secs * 1000), NOW)
    }

    #[test]
    fn minutes_left_round_up_so_time_remaining_never_reads_zero() {
        let cases = [(2467, 42), (2460, 41), (61, 2), (60, 1), (30, 1), (1, 1), (0, 0), (-5, 0)];
        for (secs, minutes) in cases {
            assert_eq!(left(secs).minutes_rounded_up(), minutes, "{secs} s left");
        }
    }

    #[test]
    fn urgency_follows_the_first_and_last_warning_times() {
        let warnings = Warnings::default();
        let cases = [
            (601, Urgency::Calm, "more than the first warning left"),
            (600, Urgency::Soon, "the first warning's moment"),
            (121, Urgency::Soon, "between the two"),
            (120, Urgency::Urgent, "the last warning's moment"),
            (1, Urgency::Urgent, "a second left"),
            (0, Urgency::Ended, "the deadline"),
            (-1, Urgency::Ended, "past it"),
        ];
        for (secs, urgency, why) in cases {
            assert_eq!(left(secs).urgency(&warnings), urgency, "{why} ({secs} s)");
        }
        let none = Warnings::new([]);
        assert_eq!(left(1).urgency(&none), Urgency::Calm, "no warning times: nothing is urgent until it ends");
        let one = Warnings::new([Duration::from_mins(5)]);
        assert_eq!(left(299).urgency(&one), Urgency::Urgent, "one warning time is both first and last");
    }

    #[test]
    fn warning_times_are_sorted_largest_first_without_duplicates_or_zeros() {
        let warnings =
            Warnings::new([Duration::from_mins(2), Duration::ZERO, Duration::from_mins(10), Duration::from_mins(2)]);
        assert_eq!(warnings.times(), [Duration::from_mins(10), Duration::from_mins(2)]);
        let moments: Vec<Timestamp> = warnings.moments(NOW).map(|(_, at)| at).collect();
        assert_eq!(moments, [NOW.plus_millis(-600_000), NOW.plus_millis(-120_000)], "deadline minus each time");
    }
}
