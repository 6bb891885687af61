//! When the expiry scheduler next looks at the store.
//!
//! Whatever brings a new time to look (a grant issued with its deadline, a
//! revocation to retry later, another replica's claim that may lapse) asks
//! the alarm for a look by then. The scheduler sleeps until the earliest of
//! the time it planned after its last pass and the times asked since, and
//! runs a pass only then: asking for a later time costs nothing, and a
//! burst of asks for times to come costs one pass, not one each.

use std::sync::atomic::{AtomicI64, Ordering};

use hourglass_core::Timestamp;
use tokio::sync::Notify;

/// No look asked for.
const NONE_ASKED: i64 = i64::MAX;

pub(crate) struct Alarm {
    changed: Notify,
    /// The earliest look asked for since the current pass began (unix ms).
    asked: AtomicI64,
}

impl Default for Alarm {
    fn default() -> Self {
        Alarm { changed: Notify::new(), asked: AtomicI64::new(NONE_ASKED) }
    }
}

impl Alarm {
    /// Asks for a pass by `at` (at once, if `at` has come).
    pub fn ask(&self, at: Timestamp) {
        let at = at.unix_millis();
        if at < self.asked.fetch_min(at, Ordering::SeqCst) {
            self.changed.notify_one();
        }
    }

    /// A pass begins. It reads the store after this, where whatever asked
    /// before was already committed: it answers those asks.
    pub fn pass_begins(&self) {
        self.asked.store(NONE_ASKED, Ordering::SeqCst);
    }

    /// When to look next: `planned`, or an earlier time asked since the
    /// pass began.
    pub fn next(&self, planned: Timestamp) -> Timestamp {
        match self.asked.load(Ordering::SeqCst) {
            NONE_ASKED => planned,
            asked => planned.min(Timestamp::from_unix_millis(asked)),
        }
    }

    /// Resolves when an earlier look may have been asked for (ask again
    /// [`Alarm::next`]). An ask made before this is awaited still wakes it.
    pub async fn changed(&self) {
        self.changed.notified().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_unix_millis(ms)
    }

    #[test]
    fn the_next_look_is_the_earliest_of_the_plan_and_the_asks() {
        let alarm = Alarm::default();
        assert_eq!(alarm.next(at(5_000)), at(5_000));
        alarm.ask(at(9_000));
        assert_eq!(alarm.next(at(5_000)), at(5_000), "a later ask changes nothing");
        alarm.ask(at(3_000));
        alarm.ask(at(4_000));
        assert_eq!(alarm.next(at(5_000)), at(3_000));
        alarm.pass_begins();
        assert_eq!(alarm.next(at(5_000)), at(5_000), "a pass answers what was asked before it");
    }

    #[tokio::test]
    async fn an_ask_made_while_the_scheduler_was_busy_still_wakes_it() {
        let alarm = Alarm::default();
        alarm.ask(at(1_000));
        // Not yet waiting: the wake-up is kept for when it is.
        tokio::time::timeout(std::time::Duration::from_secs(5), alarm.changed()).await.expect("woken");
    }

    #[tokio::test]
    async fn an_ask_no_earlier_than_one_already_asked_does_not_wake_it() {
        let alarm = Alarm::default();
        alarm.ask(at(1_000));
        alarm.changed().await;
        alarm.ask(at(2_000));
        let woken = tokio::time::timeout(std::time::Duration::from_millis(50), alarm.changed()).await;
        assert!(woken.is_err(), "no new wake-up for a later time");
    }
}
