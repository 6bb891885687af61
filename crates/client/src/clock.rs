//! Time on a client: this machine's clock, read here and nowhere else in
//! the client crates, and the broker's clock, which is the reference for
//! every deadline.
//!
//! One convention everywhere: [`BrokerClock`] holds the broker's clock
//! minus this machine's. A broker instant is on this machine's clock at
//! `at - offset`; the broker's now is `local + offset`.

use hourglass_core::Timestamp;
use serde::Serialize;

/// This machine's clock (wall time, UTC).
pub fn local_now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    Timestamp::from_unix_millis(millis)
}

/// Offsets that differ by less than this are the network's jitter, not the
/// clocks moving: they are not taken, so that every reading of the
/// broker's time does not move every deadline by a few milliseconds.
const JITTER_MILLIS: i64 = 500;

/// The broker's clock as seen from this machine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BrokerClock {
    /// The broker's clock minus this machine's, in milliseconds.
    offset_ms: i64,
}

impl BrokerClock {
    pub fn with_offset(offset_ms: i64) -> BrokerClock {
        BrokerClock { offset_ms }
    }

    pub fn offset_ms(self) -> i64 {
        self.offset_ms
    }

    /// The broker's time when this machine's clock reads `local`.
    pub fn broker_time(self, local: Timestamp) -> Timestamp {
        local.plus_millis(self.offset_ms)
    }

    /// A broker instant (a deadline) on this machine's clock.
    pub fn to_local(self, broker: Timestamp) -> Timestamp {
        broker.plus_millis(-self.offset_ms)
    }

    /// The broker said its time was `server_time` when this machine's
    /// clock read `local_now`. Returns the clock to use from now on when
    /// the offset moved by more than network jitter, else `None`.
    pub fn observe(self, server_time: Timestamp, local_now: Timestamp) -> Option<BrokerClock> {
        let offset_ms = local_now.millis_until(server_time);
        ((offset_ms - self.offset_ms).abs() >= JITTER_MILLIS).then_some(BrokerClock { offset_ms })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    #[test]
    fn broker_clock_converts_both_ways_with_one_sign() {
        // The broker's clock is ten seconds ahead of this machine's.
        let clock = BrokerClock::default().observe(LOCAL.plus_millis(10_000), LOCAL).expect("a new offset");
        assert_eq!(clock.offset_ms(), 10_000, "broker minus local");
        assert_eq!(clock.broker_time(LOCAL), LOCAL.plus_millis(10_000), "the broker's now is ahead");
        let deadline = LOCAL.plus_millis(60_000);
        assert_eq!(clock.to_local(deadline), LOCAL.plus_millis(50_000), "its deadline comes 10 s earlier here");
        assert_eq!(clock.broker_time(clock.to_local(deadline)), deadline, "the two conversions undo each other");
    }

    #[test]
    fn broker_clock_ignores_network_jitter() {
        let clock = BrokerClock::with_offset(1_000);
        assert_eq!(clock.observe(LOCAL.plus_millis(1_499), LOCAL), None, "499 ms off: the network");
        assert_eq!(clock.observe(LOCAL.plus_millis(501), LOCAL), None, "the other way too");
        let moved = clock.observe(LOCAL.plus_millis(1_500), LOCAL).expect("500 ms off: the clocks moved");
        assert_eq!(moved.offset_ms(), 1_500);
    }
}
