//! Repeated refusals, audited once. Every refused action is audited, and
//! each audit record is a transaction on disk: a principal retrying the same
//! refused call in a loop (20 a second is within its rate limit) would
//! write 1.7 million records a day. So the first refusal of an action on a
//! target by a principal is audited at once, and the same refusal again
//! within [`WINDOW`] is only counted; when the window ends, one record says
//! how many more there were and between when.

use std::collections::HashMap;
use std::sync::Mutex;

use hourglass_core::Timestamp;
use hourglass_core::audit::{AuditAction, AuditEvent};

/// How long repeats of one refusal are counted before they are audited.
pub const WINDOW_MILLIS: i64 = 60_000;

/// Most refusals counted at once; past it, each is audited as it comes.
const MAX_COUNTED: usize = 65_536;

/// Who was refused what, on what.
type Key = (String, AuditAction, String);

struct Counted {
    /// The first refusal, audited when it came; the repeats' summary copies it.
    first: AuditEvent,
    repeats: u64,
    last: Timestamp,
}

impl Counted {
    /// The record of its repeats, if it had any.
    fn summary(&self, now: Timestamp) -> Option<AuditEvent> {
        (self.repeats > 0).then(|| {
            let mut summary = self.first.clone();
            summary.at = now;
            summary.reason = Some(format!(
                "refused {} more times from {} to {}: {}",
                self.repeats,
                self.first.at,
                self.last,
                self.first.reason.as_deref().unwrap_or("refused")
            ));
            summary.detail("repeats", self.repeats)
        })
    }
}

#[derive(Default)]
struct Counts {
    counted: HashMap<Key, Counted>,
    /// Summaries of windows a new refusal replaced, for [`RefusalLog::ended`].
    due: Vec<AuditEvent>,
}

#[derive(Default)]
pub struct RefusalLog {
    counts: Mutex<Counts>,
}

impl RefusalLog {
    /// Whether `event` (a refusal at `now`) is to be audited now: the first
    /// of its kind in the window. A repeat is counted instead.
    pub fn first(&self, event: &AuditEvent, now: Timestamp) -> bool {
        let key = (event.actor.clone(), event.action, event.target.clone());
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Counts { counted, due } = &mut *counts;
        if let Some(entry) = counted.get_mut(&key) {
            if now.unix_millis() - entry.first.at.unix_millis() < WINDOW_MILLIS {
                entry.repeats += 1;
                entry.last = now;
                return false;
            }
            // Its window is over: its summary is due, and this refusal
            // starts a new one.
            due.extend(entry.summary(now));
            *entry = Counted { first: event.clone(), repeats: 0, last: now };
            return true;
        }
        if counted.len() < MAX_COUNTED {
            counted.insert(key, Counted { first: event.clone(), repeats: 0, last: now });
        }
        true
    }

    /// The summaries of windows that ended by `now` with repeats in them
    /// (to audit), forgetting every ended window.
    pub fn ended(&self, now: Timestamp) -> Vec<AuditEvent> {
        let mut counts = self.counts.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let Counts { counted, due } = &mut *counts;
        let mut summaries = std::mem::take(due);
        counted.retain(|_, entry| {
            if now.unix_millis() - entry.first.at.unix_millis() < WINDOW_MILLIS {
                return true;
            }
            summaries.extend(entry.summary(now));
            false
        });
        summaries
    }
}

#[cfg(test)]
mod tests {
    use hourglass_core::audit::AuditResult;

    use super::*;

    fn refusal(at: i64, target: &str) -> AuditEvent {
        AuditEvent::new(
            Timestamp::from_unix_millis(at),
            "dave@acme.example",
            AuditAction::CredentialFetched,
            target,
            AuditResult::Refused,
        )
        .reason("only the grant's owner can fetch its credential".to_owned())
    }

    #[test]
    fn repeated_refusals_are_audited_once_then_summarized_when_the_window_ends() {
        let log = RefusalLog::default();
        let at = |millis| Timestamp::from_unix_millis(millis);
        assert!(log.first(&refusal(0, "grt-a"), at(0)), "the first is audited");
        for n in 1..=49 {
            assert!(!log.first(&refusal(n * 100, "grt-a"), at(n * 100)), "repeats are counted");
        }
        assert!(log.first(&refusal(5_000, "grt-b"), at(5_000)), "another target is another refusal");
        assert!(log.ended(at(59_999)).is_empty(), "nothing ended yet");
        let summaries = log.ended(at(60_000));
        assert_eq!(summaries.len(), 1, "grt-b had no repeats: no summary");
        assert_eq!(summaries[0].target, "grt-a");
        assert_eq!(summaries[0].details["repeats"], 49);
        assert!(summaries[0].reason.as_deref().is_some_and(|r| r.starts_with("refused 49 more times")));
        assert!(log.first(&refusal(60_001, "grt-a"), at(60_001)), "a new window audits again");
        assert!(!log.first(&refusal(60_002, "grt-a"), at(60_002)), "and counts its repeats");
    }
}
