//! The broker's clock is the reference for every deadline. Logic receives
//! `now` from here; tests substitute a clock they move by hand.

use std::sync::atomic::{AtomicI64, Ordering};

use hourglass_core::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_offset_date_time(time::OffsetDateTime::now_utc())
    }
}

/// A clock that moves only when told: for tests of expiry and pending
/// timeouts without sleeping.
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(AtomicI64::new(start.unix_millis()))
    }

    pub fn advance(&self, duration: hourglass_core::Duration) {
        let millis = i64::try_from(duration.as_secs()).unwrap_or(0) * 1000;
        self.0.fetch_add(millis, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_unix_millis(self.0.load(Ordering::SeqCst))
    }
}
