//! Per-principal limits, so that one principal (a runaway script, a stolen
//! token) cannot take the broker from everyone else: how fast it may call,
//! how many event streams it may hold open. (How many requests it may have
//! waiting is a count in the store at filing time; the number is here.)
//!
//! In memory and per broker: a token bucket per principal for the call
//! rate, a count per principal for open streams, and, before anyone is
//! authenticated, a count per client address of tokens that failed. Limits are per principal,
//! never global, so a principal over its limit slows nobody else down.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use hourglass_core::Timestamp;
use hourglass_core::api::ErrorCode;

use crate::error::Error;
use crate::settings::LimitSettings;

/// A bucket holds this many units per call it can admit, so that refills
/// of a fraction of a call over a few milliseconds are counted exactly.
const UNITS_PER_CALL: u64 = 1000;

/// The bucket table is swept of full (idle) buckets when it grows past
/// this, and then only once it has doubled again: amortized O(1).
const MIN_SWEEP_LEN: usize = 1024;

/// The broker's limits and the state that enforces them.
pub struct Limits {
    settings: LimitSettings,
    buckets: Mutex<Buckets>,
    streams: Arc<Mutex<HashMap<String, u32>>>,
    /// Tokens refused per client address in the current minute: (count,
    /// when the minute started, unix ms).
    auth_failures: Mutex<HashMap<std::net::IpAddr, (u32, i64)>>,
}

/// Most addresses whose failures are counted; past it the table starts over.
const MAX_ADDRESSES: usize = 65_536;

struct Buckets {
    by_principal: HashMap<String, Bucket>,
    sweep_at_len: usize,
}

/// A token bucket in units ([`UNITS_PER_CALL`] per call). It refills at
/// `requests_per_second` calls a second, that is `requests_per_second`
/// units a millisecond, up to `request_burst` calls.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    units: u64,
    /// When `units` was last brought up to date (unix ms).
    at_millis: i64,
}

impl Bucket {
    fn refilled(self, now_millis: i64, settings: &LimitSettings) -> Bucket {
        // A clock that stepped back refills nothing rather than panicking or
        // draining the bucket.
        let elapsed = u64::try_from(now_millis.saturating_sub(self.at_millis)).unwrap_or(0);
        let refill = elapsed.saturating_mul(u64::from(settings.requests_per_second));
        let units = self.units.saturating_add(refill).min(capacity(settings));
        Bucket { units, at_millis: now_millis.max(self.at_millis) }
    }
}

fn capacity(settings: &LimitSettings) -> u64 {
    u64::from(settings.request_burst) * UNITS_PER_CALL
}

impl Limits {
    pub fn new(settings: LimitSettings) -> Limits {
        Limits {
            settings,
            buckets: Mutex::new(Buckets { by_principal: HashMap::new(), sweep_at_len: MIN_SWEEP_LEN }),
            streams: Arc::default(),
            auth_failures: Mutex::default(),
        }
    }

    /// Refuses verifying a new token from `address` once as many tokens
    /// from it failed this minute as the limit allows: signature checks are
    /// the costliest thing an unauthenticated client can make the broker do.
    pub fn admit_unverified(&self, address: std::net::IpAddr, now: Timestamp) -> Result<(), Error> {
        let limit = self.settings.auth_failures_per_minute;
        let failures = lock(&self.auth_failures);
        match failures.get(&address) {
            Some(&(count, since)) if count >= limit && now.unix_millis() - since < 60_000 => {
                let left_millis = u64::try_from(since + 60_000 - now.unix_millis()).unwrap_or(0);
                let retry_after_secs = left_millis.div_ceil(1000).max(1);
                Err(Error::RateLimited {
                    message: format!(
                        "too many refused tokens from {address}: at most {limit} a minute (limit `auth_failures_per_minute` in [broker.limits]); retry in {retry_after_secs} s"
                    ),
                    retry_after_secs,
                })
            }
            _ => Ok(()),
        }
    }

    /// Counts a token from `address` that failed to verify.
    pub fn auth_failed(&self, address: std::net::IpAddr, now: Timestamp) {
        let mut failures = lock(&self.auth_failures);
        if failures.len() >= MAX_ADDRESSES && !failures.contains_key(&address) {
            failures.retain(|_, (_, since)| now.unix_millis() - *since < 60_000);
            if failures.len() >= MAX_ADDRESSES {
                failures.clear();
            }
        }
        let entry = failures.entry(address).or_insert((0, now.unix_millis()));
        if now.unix_millis() - entry.1 >= 60_000 {
            *entry = (0, now.unix_millis());
        }
        entry.0 = entry.0.saturating_add(1);
    }

    pub fn settings(&self) -> &LimitSettings {
        &self.settings
    }

    /// Admits one call by `principal` at `now`, or refuses it with
    /// [`Error::RateLimited`] saying when the next call will be admitted.
    pub fn admit_call(&self, principal: &str, now: Timestamp) -> Result<(), Error> {
        let settings = &self.settings;
        let now_millis = now.unix_millis();
        let mut buckets = lock(&self.buckets);
        let full = Bucket { units: capacity(settings), at_millis: now_millis };
        let bucket = match buckets.by_principal.get(principal) {
            Some(bucket) => bucket.refilled(now_millis, settings),
            None => full,
        };
        if bucket.units >= UNITS_PER_CALL {
            let spent = Bucket { units: bucket.units - UNITS_PER_CALL, ..bucket };
            buckets.by_principal.insert(principal.to_owned(), spent);
            if buckets.by_principal.len() >= buckets.sweep_at_len {
                sweep(&mut buckets, now_millis, settings);
            }
            return Ok(());
        }
        buckets.by_principal.insert(principal.to_owned(), bucket);
        let missing = UNITS_PER_CALL - bucket.units;
        let wait_millis = missing.div_ceil(u64::from(settings.requests_per_second));
        let retry_after_secs = wait_millis.div_ceil(1000).max(1);
        Err(Error::RateLimited {
            message: format!(
                "too many calls: at most {} a second per principal (bursts of {}; limit `requests_per_second` in [broker.limits]); retry in {retry_after_secs} s",
                settings.requests_per_second, settings.request_burst
            ),
            retry_after_secs,
        })
    }

    /// Opens one event stream for `principal`, or refuses it when they hold
    /// as many as the limit allows. The stream counts until the permit drops.
    pub fn open_stream(&self, principal: &str) -> Result<StreamPermit, Error> {
        let limit = self.settings.event_streams;
        let mut streams = lock(&self.streams);
        let open = streams.entry(principal.to_owned()).or_insert(0);
        if *open >= limit {
            return Err(Error::refused(
                ErrorCode::LimitReached,
                format!(
                    "you already have {limit} event streams open, the most one principal may hold (limit `event_streams` in [broker.limits]); close one first"
                ),
            ));
        }
        *open += 1;
        Ok(StreamPermit { streams: Arc::clone(&self.streams), principal: principal.to_owned() })
    }

    /// Refuses filing one more request that would wait for approval when
    /// `principal` already has `pending` waiting.
    pub fn check_pending(&self, pending: u64) -> Result<(), Error> {
        let limit = self.settings.pending_requests;
        if pending < u64::from(limit) {
            return Ok(());
        }
        Err(Error::refused(
            ErrorCode::LimitReached,
            format!(
                "you already have as many requests waiting for approval as one principal may ({limit}; limit `pending_requests` in [broker.limits]); cancel one or wait for a decision"
            ),
        ))
    }

    #[cfg(test)]
    fn tracked_principals(&self) -> usize {
        lock(&self.buckets).by_principal.len()
    }
}

/// Drops the buckets that have refilled completely: such a principal is
/// treated exactly like one never seen, so forgetting it changes nothing.
fn sweep(buckets: &mut Buckets, now_millis: i64, settings: &LimitSettings) {
    let full = capacity(settings);
    buckets.by_principal.retain(|_, bucket| bucket.refilled(now_millis, settings).units < full);
    buckets.sweep_at_len = (buckets.by_principal.len() * 2).max(MIN_SWEEP_LEN);
}

/// One open event stream of a principal; counted until dropped.
pub struct StreamPermit {
    streams: Arc<Mutex<HashMap<String, u32>>>,
    principal: String,
}

impl Drop for StreamPermit {
    fn drop(&mut self) {
        let mut streams = lock(&self.streams);
        if let Some(open) = streams.get_mut(&self.principal) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                streams.remove(&self.principal);
            }
        }
    }
}

/// The maps stay consistent whatever panicked while holding them (every
/// update is a single insert or counter step), so a poisoned lock is used.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn an_address_whose_tokens_keep_failing_is_refused_unchecked_for_the_rest_of_the_minute() {
        let limits = Limits::new(LimitSettings { auth_failures_per_minute: 3, ..LimitSettings::default() });
        let (bad, other): (std::net::IpAddr, std::net::IpAddr) =
            ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        for n in 0..3 {
            assert!(limits.admit_unverified(bad, at(n)).is_ok(), "failure {n} is still checked");
            limits.auth_failed(bad, at(n));
        }
        let refused = limits.admit_unverified(bad, at(10_000)).expect_err("the fourth is refused");
        assert_eq!(retry_after(refused), 50, "until the minute is over");
        assert!(limits.admit_unverified(other, at(10_000)).is_ok(), "another address is not slowed");
        assert!(limits.admit_unverified(bad, at(60_000)).is_ok(), "a new minute starts afresh");
        limits.auth_failed(bad, at(60_000));
        assert!(limits.admit_unverified(bad, at(60_001)).is_ok(), "its count started over");
    }

    fn limits(requests_per_second: u32, request_burst: u32) -> Limits {
        Limits::new(LimitSettings { requests_per_second, request_burst, ..LimitSettings::default() })
    }

    fn at(millis: i64) -> Timestamp {
        Timestamp::from_unix_millis(1_800_000_000_000 + millis)
    }

    fn retry_after(error: Error) -> u64 {
        match error {
            Error::RateLimited { retry_after_secs, .. } => retry_after_secs,
            other => panic!("a rate limit refusal, got {other:?}"),
        }
    }

    #[test]
    fn burst_is_admitted_then_refused_with_retry_after() {
        let limits = limits(20, 60);
        for call in 0..60 {
            assert!(limits.admit_call("alice", at(0)).is_ok(), "call {call} is within the burst of 60");
        }
        let refused = limits.admit_call("alice", at(0)).expect_err("the 61st call at once is refused");
        assert_eq!(refused.code(), ErrorCode::RateLimited, "refused as rate limited: {refused}");
        assert!(refused.to_string().contains("20 a second"), "the message names the limit: {refused}");
        assert_eq!(retry_after(refused), 1, "one call refills in 50 ms: retry after the next whole second");
    }

    #[test]
    fn refill_is_steady_at_the_sustained_rate() {
        let limits = limits(20, 60);
        for _ in 0..60 {
            limits.admit_call("alice", at(0)).unwrap();
        }
        assert!(limits.admit_call("alice", at(49)).is_err(), "49 ms refill less than one call at 20/s");
        assert!(limits.admit_call("alice", at(50)).is_ok(), "50 ms refill exactly one call");
        assert!(limits.admit_call("alice", at(50)).is_err(), "and only one");
        for call in 0..20 {
            assert!(limits.admit_call("alice", at(1050)).is_ok(), "call {call}: one second refills 20 calls");
        }
        assert!(limits.admit_call("alice", at(1050)).is_err(), "but not 21");
    }

    #[test]
    fn principals_have_their_own_buckets() {
        let limits = limits(1, 2);
        limits.admit_call("alice", at(0)).unwrap();
        limits.admit_call("alice", at(0)).unwrap();
        assert!(limits.admit_call("alice", at(0)).is_err(), "alice is over her limit");
        assert!(limits.admit_call("bob", at(0)).is_ok(), "bob is not slowed by alice");
    }

    #[test]
    fn retry_after_rounds_the_wait_up_to_whole_seconds() {
        let limits = limits(1, 1);
        limits.admit_call("alice", at(0)).unwrap();
        assert_eq!(retry_after(limits.admit_call("alice", at(0)).unwrap_err()), 1, "a whole second to wait");
        assert_eq!(retry_after(limits.admit_call("alice", at(400)).unwrap_err()), 1, "600 ms left: 1 s");
        assert!(limits.admit_call("alice", at(1000)).is_ok(), "refilled after the second it named");
    }

    #[test]
    fn a_clock_stepping_back_refills_nothing() {
        let limits = limits(10, 1);
        limits.admit_call("alice", at(5000)).unwrap();
        assert!(limits.admit_call("alice", at(0)).is_err(), "going back in time gives no calls");
        assert!(limits.admit_call("alice", at(5100)).is_ok(), "and the bucket refills from its own time");
    }

    #[test]
    fn idle_principals_are_forgotten_once_the_table_grows() {
        let limits = limits(20, 60);
        for n in 0..MIN_SWEEP_LEN - 1 {
            limits.admit_call(&format!("user{n}"), at(0)).unwrap();
        }
        assert_eq!(limits.tracked_principals(), MIN_SWEEP_LEN - 1, "no sweep below the threshold");
        // Three seconds later every bucket is full again: forgetting them
        // is the same as keeping them.
        limits.admit_call("late", at(3000)).unwrap();
        assert_eq!(limits.tracked_principals(), 1, "only the principal still below a full bucket is kept");
    }

    #[test]
    fn event_streams_are_counted_until_dropped() {
        let limits = Limits::new(LimitSettings { event_streams: 2, ..LimitSettings::default() });
        let first = limits.open_stream("alice").unwrap();
        let _second = limits.open_stream("alice").unwrap();
        let refused = limits.open_stream("alice").err().expect("a third stream is refused");
        assert_eq!(refused.code(), ErrorCode::LimitReached, "{refused}");
        assert!(refused.to_string().contains("2 event streams"), "the message names the limit: {refused}");
        assert!(limits.open_stream("bob").is_ok(), "bob's streams are his own");
        drop(first);
        assert!(limits.open_stream("alice").is_ok(), "a closed stream frees its place");
    }

    #[test]
    fn pending_requests_are_refused_at_the_limit() {
        let limits = Limits::new(LimitSettings { pending_requests: 3, ..LimitSettings::default() });
        assert!(limits.check_pending(2).is_ok(), "two waiting leaves room for a third");
        let refused = limits.check_pending(3).expect_err("a fourth is refused");
        assert_eq!(refused.code(), ErrorCode::LimitReached, "{refused}");
        assert!(refused.to_string().contains("(3;"), "the message names the limit: {refused}");
    }
}
