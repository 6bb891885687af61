//! Grants: issued access with a deadline, and their state machine.
//!
//! ```text
//! issuing ──provider confirmed──▶ active ──deadline──▶ expired
//!    │                              ├──renewed (deadline moves)──┘
//!    │                              └──owner/admin revokes──▶ revoked
//!    └──provider failed──▶ failed
//! ```
//! Leaving `active` (or `issuing`) always opens a revocation: the provider
//! must remove the credential, and the broker retries until it has.

use serde::{Deserialize, Serialize};

use crate::countdown::TimeLeft;
use crate::{AccessRequest, Duration, GrantId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum GrantState {
    /// The provider is creating the credential.
    Issuing,
    Active,
    /// Reached its deadline.
    Expired,
    /// Ended early by its owner or an admin.
    Revoked,
    /// The provider could not issue it.
    Failed,
}

impl GrantState {
    pub const ALL: [GrantState; 5] =
        [GrantState::Issuing, GrantState::Active, GrantState::Expired, GrantState::Revoked, GrantState::Failed];

    pub fn as_str(self) -> &'static str {
        match self {
            GrantState::Issuing => "issuing",
            GrantState::Active => "active",
            GrantState::Expired => "expired",
            GrantState::Revoked => "revoked",
            GrantState::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }

    /// Issuing or active: the credential may exist and work.
    pub fn is_live(self) -> bool {
        matches!(self, GrantState::Issuing | GrantState::Active)
    }
}

impl std::fmt::Display for GrantState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RevocationStatus {
    /// The provider has not yet confirmed the credential is gone.
    Pending,
    Done,
}

/// The provider-side removal of a grant's credential, retried until done.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Revocation {
    pub status: RevocationStatus,
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<Timestamp>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Grant {
    pub id: GrantId,
    pub request_id: crate::RequestId,
    pub owner: String,
    pub resource: String,
    pub role: String,
    /// The provider kind that issued the credential (`token`, `postgres`, …).
    pub provider: String,
    pub state: GrantState,
    /// When the access clock started.
    pub issued_at: Timestamp,
    /// The deadline; the credential itself carries it too.
    pub expires_at: Timestamp,
    /// When the provider confirmed the credential works. A grant is shown
    /// ready only from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready_at: Option<Timestamp>,
    #[serde(default)]
    pub renewals: u32,
    /// Issued under break-glass: to be reviewed after the fact.
    #[serde(default)]
    pub needs_review: bool,
    /// The review of a break-glass grant, once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub review: Option<crate::review::Review>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<Timestamp>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

/// Policy bounds on a grant's lifetime, from its role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LifetimeLimits {
    pub min_duration: Duration,
    pub max_duration: Duration,
    /// Longest time from issue to deadline, renewals included.
    pub max_total: Duration,
    /// Renewals granted without a new approval.
    pub renewals_without_approval: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantRefused {
    #[error("grant is {0}, not active")]
    NotActive(GrantState),
    #[error("grant reached its deadline; request access again")]
    PastDeadline,
    #[error("{requested} is longer than this role allows at once ({max})")]
    TooLong { requested: Duration, max: Duration },
    #[error("{requested} is shorter than this role allows ({min})")]
    TooShort { requested: Duration, min: Duration },
    #[error(
        "renewing for {requested} would exceed the role's total limit of {max_total} since issue; at most {available} is left"
    )]
    OverTotal { requested: Duration, max_total: Duration, available: Duration },
    #[error("renewing for {requested} would end the grant earlier than its current deadline; revoke it instead")]
    WouldShorten { requested: Duration },
}

impl LifetimeLimits {
    /// Checks a requested duration against the role's bounds.
    pub fn check_duration(&self, requested: Duration) -> Result<(), GrantRefused> {
        if requested > self.max_duration {
            return Err(GrantRefused::TooLong { requested, max: self.max_duration });
        }
        if requested < self.min_duration || requested.is_zero() {
            return Err(GrantRefused::TooShort { requested, min: self.min_duration.max(Duration::from_secs(1)) });
        }
        Ok(())
    }
}

impl Grant {
    /// Starts issuing the grant for an approved request. The access clock
    /// starts now, not when the request was filed.
    pub fn start(id: GrantId, request: &AccessRequest, provider: &str, now: Timestamp) -> Self {
        Grant {
            id,
            request_id: request.id.clone(),
            owner: request.requester.clone(),
            resource: request.resource.clone(),
            role: request.role.clone(),
            provider: provider.to_owned(),
            state: GrantState::Issuing,
            issued_at: now,
            expires_at: now.plus(request.duration),
            ready_at: None,
            renewals: 0,
            needs_review: request.break_glass,
            review: None,
            ended_at: None,
            ended_by: None,
            end_reason: None,
            revocation: None,
        }
    }

    /// The provider created the credential; `ready` when it also confirmed
    /// the credential works.
    pub fn activate(&mut self, ready: bool, now: Timestamp) {
        if self.state == GrantState::Issuing {
            self.state = GrantState::Active;
            if ready {
                self.ready_at = Some(now);
            }
        }
    }

    /// Whether `now` (the broker's clock) has reached the deadline. From
    /// then on the credential is dead whatever the state still says: the
    /// scheduler's `expired` only records what the deadline already did.
    pub fn is_past_deadline(&self, now: Timestamp) -> bool {
        now >= self.expires_at
    }

    /// Whether the grant can be used at `now` (the broker's clock): its
    /// credential fetched, renewed or confirmed working. Active, and before
    /// its deadline.
    pub fn is_usable_at(&self, now: Timestamp) -> bool {
        self.state == GrantState::Active && !self.is_past_deadline(now)
    }

    /// The time from `now` (the broker's clock) to the deadline.
    pub fn time_left(&self, now: Timestamp) -> TimeLeft {
        TimeLeft::until(self.expires_at, now)
    }

    /// The owner's client confirmed the credential works. Returns whether it
    /// changed (a grant is marked ready once).
    pub fn mark_ready(&mut self, now: Timestamp) -> bool {
        if self.state == GrantState::Active && self.ready_at.is_none() {
            self.ready_at = Some(now);
            true
        } else {
            false
        }
    }

    /// The provider could not issue: the grant ends, and whatever the
    /// provider may have half-created is revoked.
    pub fn fail(&mut self, error: &str, now: Timestamp) {
        if self.state.is_live() {
            self.state = GrantState::Failed;
            self.end(crate::principal::SYSTEM_ACTOR, error, now);
        }
    }

    /// Whether a renewal must be approved again rather than granted at once.
    pub fn renewal_needs_approval(&self, limits: &LifetimeLimits) -> bool {
        self.renewals >= limits.renewals_without_approval
    }

    /// The deadline a renewal for `duration` would set, if policy allows it.
    pub fn check_renewal(
        &self,
        duration: Duration,
        limits: &LifetimeLimits,
        now: Timestamp,
    ) -> Result<Timestamp, GrantRefused> {
        if self.state != GrantState::Active {
            return Err(GrantRefused::NotActive(self.state));
        }
        if self.is_past_deadline(now) {
            return Err(GrantRefused::PastDeadline);
        }
        limits.check_duration(duration)?;
        let deadline = now.plus(duration);
        let latest = self.issued_at.plus(limits.max_total);
        if deadline > latest {
            return Err(GrantRefused::OverTotal {
                requested: duration,
                max_total: limits.max_total,
                available: now.until(latest),
            });
        }
        if deadline <= self.expires_at {
            return Err(GrantRefused::WouldShorten { requested: duration });
        }
        Ok(deadline)
    }

    /// Moves the deadline to `now + duration`. Returns the previous deadline.
    pub fn renew(
        &mut self,
        duration: Duration,
        limits: &LifetimeLimits,
        now: Timestamp,
    ) -> Result<Timestamp, GrantRefused> {
        let deadline = self.check_renewal(duration, limits, now)?;
        let previous = self.expires_at;
        self.expires_at = deadline;
        self.renewals += 1;
        Ok(previous)
    }

    /// Ends the grant at its deadline. Returns whether it changed.
    pub fn expire_if_due(&mut self, now: Timestamp) -> bool {
        if self.state.is_live() && self.is_past_deadline(now) {
            self.state = GrantState::Expired;
            let deadline = self.expires_at;
            self.end(crate::principal::SYSTEM_ACTOR, "reached its deadline", deadline);
            true
        } else {
            false
        }
    }

    /// Ends the grant early.
    pub fn revoke(&mut self, by: &str, reason: &str, now: Timestamp) -> Result<(), GrantRefused> {
        if !self.state.is_live() {
            return Err(GrantRefused::NotActive(self.state));
        }
        self.state = GrantState::Revoked;
        self.end(by, reason, now);
        Ok(())
    }

    fn end(&mut self, by: &str, reason: &str, at: Timestamp) {
        self.ended_at = Some(at);
        self.ended_by = Some(by.to_owned());
        self.end_reason = Some(reason.to_owned());
        self.revocation = Some(Revocation {
            status: RevocationStatus::Pending,
            attempts: 0,
            next_attempt_at: Some(at),
            last_error: None,
            completed_at: None,
        });
    }

    /// Claims the pending revocation until `until`: whoever claimed it is
    /// attempting it, and nobody else starts another attempt before then.
    pub fn lease_revocation(&mut self, until: Timestamp) {
        if let Some(revocation) = self.revocation.as_mut()
            && revocation.status == RevocationStatus::Pending
        {
            revocation.next_attempt_at = Some(until);
        }
    }

    pub fn revocation_pending(&self) -> bool {
        matches!(&self.revocation, Some(r) if r.status == RevocationStatus::Pending)
    }

    /// Records one attempt at removing the credential. A failure schedules
    /// the next attempt with capped exponential backoff (`jitter_millis` is
    /// added so that many failures do not retry in lockstep).
    pub fn record_revocation_attempt(&mut self, outcome: Result<(), String>, now: Timestamp, jitter_millis: i64) {
        let Some(revocation) = self.revocation.as_mut() else { return };
        if revocation.status == RevocationStatus::Done {
            return;
        }
        revocation.attempts += 1;
        match outcome {
            Ok(()) => {
                revocation.status = RevocationStatus::Done;
                revocation.completed_at = Some(now);
                revocation.next_attempt_at = None;
            }
            Err(error) => {
                revocation.last_error = Some(error);
                let delay = retry_delay_millis(revocation.attempts) + jitter_millis.max(0);
                revocation.next_attempt_at = Some(now.plus_millis(delay));
            }
        }
    }
}

/// Backoff before retry number `attempts` + 1: 1 s, 2 s, 4 s, … capped at 60 s,
/// so that a target back from an outage is revoked within a minute.
pub fn retry_delay_millis(attempts: u32) -> i64 {
    let exponent = attempts.saturating_sub(1).min(6);
    (1000_i64 << exponent).min(60_000)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::RequestId;
    use crate::request::NewRequest;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    fn limits() -> LifetimeLimits {
        LifetimeLimits {
            min_duration: Duration::from_secs(5),
            max_duration: Duration::from_hours(1),
            max_total: Duration::from_hours(2),
            renewals_without_approval: 1,
        }
    }

    fn grant_issued_at(secs: u64) -> Grant {
        let request = AccessRequest::file(
            RequestId::from_random(7),
            NewRequest {
                requester: "alice".into(),
                resource: "orders-db".into(),
                role: "read".into(),
                duration: Duration::from_mins(30),
                reason: "debugging".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            Vec::new(),
            Duration::from_hours(1),
            T0,
        );
        let mut grant = Grant::start(GrantId::from_random(9), &request, "token", at(secs));
        grant.activate(true, at(secs));
        grant
    }

    #[test]
    fn access_clock_starts_at_issue_not_request() {
        let grant = grant_issued_at(600);
        assert_eq!(grant.issued_at, at(600));
        assert_eq!(grant.expires_at, at(600 + 1800), "deadline counts from issue");
        assert_eq!(grant.ready_at, Some(at(600)));
    }

    #[test]
    fn renewal_moves_the_deadline_within_limits() {
        let mut grant = grant_issued_at(0);
        let previous = grant.renew(Duration::from_hours(1), &limits(), at(1000)).expect("renew");
        assert_eq!(previous, at(1800));
        assert_eq!(grant.expires_at, at(1000 + 3600));
        assert_eq!(grant.renewals, 1);
        assert!(grant.renewal_needs_approval(&limits()), "second renewal needs approval");
    }

    #[test]
    fn renewal_bounds_are_enforced() {
        let grant = grant_issued_at(0);
        let cases = [
            (Duration::from_hours(2), at(10), "longer than this role allows"),
            (Duration::from_secs(2), at(10), "shorter than this role allows"),
            (Duration::from_mins(10), at(10), "earlier than its current deadline"),
            (Duration::from_mins(10), at(1800), "reached its deadline"),
        ];
        for (duration, now, expected) in cases {
            let mut copy = grant.clone();
            let error = copy.renew(duration, &limits(), now).expect_err(expected).to_string();
            assert!(error.contains(expected), "{duration} at {now}: {error}");
            assert_eq!(copy, grant, "a refused renewal changes nothing");
        }
        let tight = LifetimeLimits { max_total: Duration::from_hours(1), ..limits() };
        let error = grant.clone().renew(Duration::from_hours(1), &tight, at(1000)).expect_err("over total");
        assert_eq!(
            error.to_string(),
            "renewing for 1h would exceed the role's total limit of 1h since issue; at most 43m20s is left"
        );
    }

    #[test]
    fn grant_expires_exactly_at_its_deadline() {
        let mut grant = grant_issued_at(0);
        assert!(!grant.expire_if_due(at(1799)), "still live a second before");
        assert!(grant.expire_if_due(at(1800)));
        assert_eq!(grant.state, GrantState::Expired);
        assert_eq!(grant.ended_at, Some(at(1800)));
        assert!(grant.revocation_pending(), "expiry opens a revocation");
        assert!(!grant.expire_if_due(at(1900)), "expires once");
    }

    #[test]
    fn a_grant_is_usable_while_active_and_before_its_deadline_only() {
        let mut grant = grant_issued_at(0);
        let deadline = grant.expires_at;
        assert!(grant.is_usable_at(at(1799)), "active, a second before its deadline");
        assert!(!grant.is_past_deadline(at(1799)), "not past it yet");
        assert!(grant.is_past_deadline(deadline), "the deadline itself is past it");
        assert!(!grant.is_usable_at(deadline), "not usable at its deadline, whatever the state says");
        assert_eq!(grant.state, GrantState::Active, "the state has not caught up, and need not have");
        grant.revoke("alice", "done", at(10)).expect("revoked");
        assert!(!grant.is_usable_at(at(11)), "a revoked grant is not usable before its deadline");
        assert!(!grant.is_past_deadline(at(11)), "yet its deadline has not passed");
    }

    #[test]
    fn revoking_an_ended_grant_is_refused() {
        let mut grant = grant_issued_at(0);
        grant.revoke("alice", "done early", at(60)).expect("revoke");
        assert_eq!(grant.ended_by.as_deref(), Some("alice"));
        assert_eq!(grant.revoke("carol", "again", at(61)), Err(GrantRefused::NotActive(GrantState::Revoked)));
    }

    #[test]
    fn failed_revocations_back_off_then_complete() {
        let mut grant = grant_issued_at(0);
        grant.revoke("alice", "done", at(10)).expect("revoke");
        grant.record_revocation_attempt(Err("connection refused".into()), at(10), 0);
        let first = grant.revocation.clone().expect("revocation");
        assert_eq!(first.next_attempt_at, Some(at(11)), "first retry after 1 s");
        grant.record_revocation_attempt(Err("connection refused".into()), at(11), 250);
        let second = grant.revocation.clone().expect("revocation");
        assert_eq!(second.next_attempt_at, Some(at(13).plus_millis(250)), "then 2 s plus jitter");
        grant.record_revocation_attempt(Ok(()), at(14), 0);
        let done = grant.revocation.clone().expect("revocation");
        assert_eq!(done.status, RevocationStatus::Done);
        assert_eq!((done.attempts, done.completed_at), (3, Some(at(14))));
        assert_eq!(retry_delay_millis(50), 60_000, "backoff is capped");
    }
}
