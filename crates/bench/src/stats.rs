//! Summaries of repeated measurements: min, median and p99 by nearest rank.

use std::time::Duration;

/// A figure's spread over its runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub runs: usize,
    pub min: Duration,
    pub median: Duration,
    pub p99: Duration,
}

impl Summary {
    /// Summarizes `samples` (at least one).
    pub fn of(samples: &mut [Duration]) -> Summary {
        assert!(!samples.is_empty(), "a summary needs at least one sample");
        samples.sort_unstable();
        Summary { runs: samples.len(), min: samples[0], median: rank(samples, 50), p99: rank(samples, 99) }
    }
}

/// The nearest-rank percentile: the smallest sample with at least
/// `percent`% of the samples at or below it.
fn rank(sorted: &[Duration], percent: usize) -> Duration {
    let index = (sorted.len() * percent).div_ceil(100).max(1) - 1;
    sorted[index.min(sorted.len() - 1)]
}

/// A duration for people: `0.042 ms`, `12.3 ms`, `1.20 s`.
pub fn human(duration: Duration) -> String {
    let micros = duration.as_secs_f64() * 1e6;
    if micros < 1_000.0 {
        format!("{:.1} µs", micros)
    } else if micros < 1_000_000.0 {
        format!("{:.2} ms", micros / 1e3)
    } else {
        format!("{:.2} s", micros / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut samples: Vec<Duration> = (1..=100).rev().map(ms).collect();
        let summary = Summary::of(&mut samples);
        assert_eq!((summary.min, summary.median, summary.p99), (ms(1), ms(50), ms(99)));
        let mut one = vec![ms(7)];
        let summary = Summary::of(&mut one);
        assert_eq!((summary.min, summary.median, summary.p99), (ms(7), ms(7), ms(7)));
        let mut three = vec![ms(3), ms(1), ms(2)];
        assert_eq!(Summary::of(&mut three).p99, ms(3), "p99 of a few runs is the worst");
    }

    #[test]
    fn durations_read_in_the_right_unit() {
        assert_eq!(human(Duration::from_nanos(42_000)), "42.0 µs");
        assert_eq!(human(ms(12)), "12.00 ms");
        assert_eq!(human(Duration::from_millis(1_200)), "1.20 s");
    }
}
