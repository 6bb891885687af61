//! Access requests and their state machine.
//!
//! ```text
//! pending ──approvals reach the threshold──▶ approved ──▶ (grant issued)
//!    │  ├──any approver denies──────────────▶ denied
//!    │  ├──requester cancels────────────────▶ cancelled
//!    │  └──nobody decides in time───────────▶ expired
//!    └──policy auto-approves / break-glass──▶ approved
//! ```
//! A request is decided once; every transition out of `pending` is final.

use serde::{Deserialize, Serialize};

use crate::approval::{ApprovalRule, is_eligible_approver, remaining_approvals};
use crate::{Duration, GrantId, RequestId, Timestamp};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum RequestState {
    Pending,
    Approved,
    Denied,
    Expired,
    Cancelled,
}

impl RequestState {
    pub const ALL: [RequestState; 5] = [
        RequestState::Pending,
        RequestState::Approved,
        RequestState::Denied,
        RequestState::Expired,
        RequestState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
            RequestState::Cancelled => "cancelled",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == text)
    }
}

impl std::fmt::Display for RequestState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Approve,
    Deny,
}

/// One approver's decision, recorded once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct Decision {
    pub approver: String,
    /// The approver's groups when deciding: which approval slots they filled.
    pub approver_groups: Vec<String>,
    pub verdict: Verdict,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    pub at: Timestamp,
}

/// What a requester asks for, after the broker has checked it against policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRequest {
    pub requester: String,
    pub resource: String,
    pub role: String,
    pub duration: Duration,
    pub reason: String,
    pub ticket: Option<String>,
    pub break_glass: bool,
    pub renews: Option<GrantId>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS), ts(optional_fields = nullable))]
pub struct AccessRequest {
    pub id: RequestId,
    pub requester: String,
    pub resource: String,
    pub role: String,
    /// How long the access lasts once issued: the clock starts at issue, not here.
    pub duration: Duration,
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Granted at once under a break-glass policy, flagged for review.
    #[serde(default)]
    pub break_glass: bool,
    /// Set when this request extends an existing grant instead of asking for new access.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renews: Option<GrantId>,
    pub state: RequestState,
    pub created_at: Timestamp,
    /// An undecided request expires at this instant.
    pub pending_until: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_at: Option<Timestamp>,
    pub approvals_required: Vec<ApprovalRule>,
    pub approvals_remaining: u32,
    #[serde(default)]
    pub decisions: Vec<Decision>,
    /// Approved by policy without a human decision.
    #[serde(default)]
    pub auto_approved: bool,
    /// The grant this request produced (or, for a renewal, extended).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_id: Option<GrantId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecisionOutcome {
    /// Counted; the request still waits for `remaining` approvals.
    Recorded {
        remaining: u32,
    },
    Approved,
    Denied,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecisionRefused {
    #[error("request is already {0}")]
    NotPending(RequestState),
    #[error("request expired before it was decided")]
    Expired,
    #[error("you cannot decide your own request")]
    SelfDecision,
    #[error("you already decided this request ({verdict})")]
    AlreadyDecided { verdict: &'static str },
    #[error("this request needs approvals from {needed}; you are in none of those groups")]
    NotAnApprover { needed: String },
    #[error(
        "your approval cannot count: the approvals your groups can give are in; it still needs {remaining} from {others}"
    )]
    CannotCount { remaining: u32, others: String },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CancelRefused {
    #[error("only the requester can cancel a request")]
    NotRequester,
    #[error("request is already {0}")]
    NotPending(RequestState),
}

impl AccessRequest {
    /// Files a request. It waits for `rules` unless the broker approves it by
    /// policy right after.
    pub fn file(
        id: RequestId,
        new: NewRequest,
        rules: Vec<ApprovalRule>,
        pending_timeout: Duration,
        now: Timestamp,
    ) -> Self {
        let approvals_remaining = remaining_approvals(&rules, &[]);
        AccessRequest {
            id,
            requester: new.requester,
            resource: new.resource,
            role: new.role,
            duration: new.duration,
            reason: new.reason,
            ticket: new.ticket,
            break_glass: new.break_glass,
            renews: new.renews,
            state: RequestState::Pending,
            created_at: now,
            pending_until: now.plus(pending_timeout),
            decided_at: None,
            approvals_required: rules,
            approvals_remaining,
            decisions: Vec::new(),
            auto_approved: false,
            grant_id: None,
        }
    }

    /// Approves without a human decision: an auto-approve or break-glass policy.
    pub fn approve_by_policy(&mut self, now: Timestamp) {
        // INVARIANT: only called on a request just filed, still pending.
        if self.state == RequestState::Pending {
            self.state = RequestState::Approved;
            self.auto_approved = true;
            self.approvals_remaining = 0;
            self.decided_at = Some(now);
        }
    }

    pub fn is_pending(&self) -> bool {
        self.state == RequestState::Pending
    }

    /// Records one approver's decision against the rules in force now.
    /// Any deny ends the request; approvals count until the rules are met.
    pub fn decide(
        &mut self,
        decision: Decision,
        rules: &[ApprovalRule],
        now: Timestamp,
    ) -> Result<DecisionOutcome, DecisionRefused> {
        if self.state != RequestState::Pending {
            return Err(DecisionRefused::NotPending(self.state));
        }
        if now >= self.pending_until {
            return Err(DecisionRefused::Expired);
        }
        if decision.approver == self.requester {
            return Err(DecisionRefused::SelfDecision);
        }
        if let Some(earlier) = self.decisions.iter().find(|d| d.approver == decision.approver) {
            let verdict = match earlier.verdict {
                Verdict::Approve => "approved",
                Verdict::Deny => "denied",
            };
            return Err(DecisionRefused::AlreadyDecided { verdict });
        }
        if !is_eligible_approver(rules, decision.approver_groups.iter().map(String::as_str)) {
            let needed = rules
                .iter()
                .filter(|rule| rule.count > 0)
                .map(|rule| rule.group.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DecisionRefused::NotAnApprover { needed });
        }
        // An approval that fills no open slot would be recorded and change
        // nothing; say so instead. (Any eligible approver may still deny.)
        let remaining_after = self.remaining_with(rules, Some(&decision.approver_groups));
        if decision.verdict == Verdict::Approve && remaining_after == self.remaining_with(rules, None) {
            let others = rules
                .iter()
                .filter(|rule| rule.count > 0 && !decision.approver_groups.contains(&rule.group))
                .map(|rule| rule.group.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            return Err(DecisionRefused::CannotCount { remaining: remaining_after, others });
        }
        let verdict = decision.verdict;
        self.decisions.push(decision);
        self.approvals_required = rules.to_vec();
        if verdict == Verdict::Deny {
            self.state = RequestState::Denied;
            self.decided_at = Some(now);
            return Ok(DecisionOutcome::Denied);
        }
        self.approvals_remaining = remaining_after;
        if self.approvals_remaining == 0 {
            self.state = RequestState::Approved;
            self.decided_at = Some(now);
            Ok(DecisionOutcome::Approved)
        } else {
            Ok(DecisionOutcome::Recorded { remaining: self.approvals_remaining })
        }
    }

    /// Whether an approval from someone in `groups` would bring the request
    /// closer to approved under `rules`: what an approver's inbox shows.
    pub fn approval_would_count(&self, rules: &[ApprovalRule], groups: &[String]) -> bool {
        self.remaining_with(rules, Some(groups)) < self.remaining_with(rules, None)
    }

    /// Approvals still needed under `rules`, counting the approvals so far
    /// and, if given, one more from a principal in `extra`.
    fn remaining_with(&self, rules: &[ApprovalRule], extra: Option<&[String]>) -> u32 {
        let mut approvers: Vec<Vec<String>> = self
            .decisions
            .iter()
            .filter(|d| d.verdict == Verdict::Approve)
            .map(|d| d.approver_groups.clone())
            .collect();
        approvers.extend(extra.map(<[String]>::to_vec));
        remaining_approvals(rules, &approvers)
    }

    pub fn cancel(&mut self, by: &str, now: Timestamp) -> Result<(), CancelRefused> {
        if by != self.requester {
            return Err(CancelRefused::NotRequester);
        }
        if self.state != RequestState::Pending {
            return Err(CancelRefused::NotPending(self.state));
        }
        self.state = RequestState::Cancelled;
        self.decided_at = Some(now);
        Ok(())
    }

    /// Expires the request if it is still undecided at its deadline.
    /// Returns whether it changed.
    pub fn expire_if_due(&mut self, now: Timestamp) -> bool {
        if self.state == RequestState::Pending && now >= self.pending_until {
            self.state = RequestState::Expired;
            self.decided_at = Some(self.pending_until);
            true
        } else {
            false
        }
    }

    /// Closes a pending renewal whose grant has ended: there is nothing left
    /// to extend. Returns whether it changed.
    pub fn withdraw(&mut self, now: Timestamp) -> bool {
        if self.state == RequestState::Pending {
            self.state = RequestState::Cancelled;
            self.decided_at = Some(now);
            true
        } else {
            false
        }
    }

    pub fn decision_by(&self, approver: &str) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.approver == approver)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn at(secs: u64) -> Timestamp {
        T0.plus(Duration::from_secs(secs))
    }

    fn request(rules: &[(&str, u32)]) -> AccessRequest {
        let rules = rules.iter().map(|(group, count)| ApprovalRule { group: (*group).into(), count: *count }).collect();
        AccessRequest::file(
            RequestId::from_random(1),
            NewRequest {
                requester: "alice".into(),
                resource: "orders-db".into(),
                role: "read-write".into(),
                duration: Duration::from_mins(30),
                reason: "incident 42".into(),
                ticket: None,
                break_glass: false,
                renews: None,
            },
            rules,
            Duration::from_hours(1),
            T0,
        )
    }

    fn decision(approver: &str, groups: &[&str], verdict: Verdict, secs: u64) -> Decision {
        Decision {
            approver: approver.into(),
            approver_groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            verdict,
            comment: None,
            at: at(secs),
        }
    }

    #[test]
    fn one_approval_of_one_approves() {
        let mut req = request(&[("sre", 1)]);
        let rules = req.approvals_required.clone();
        let outcome = req.decide(decision("bob", &["sre"], Verdict::Approve, 5), &rules, at(5));
        assert_eq!(outcome, Ok(DecisionOutcome::Approved));
        assert_eq!(req.state, RequestState::Approved);
        assert_eq!(req.decided_at, Some(at(5)), "decision time recorded");
    }

    #[test]
    fn self_approval_refused() {
        let mut req = request(&[("sre", 1)]);
        let rules = req.approvals_required.clone();
        let outcome = req.decide(decision("alice", &["sre"], Verdict::Approve, 5), &rules, at(5));
        assert_eq!(outcome, Err(DecisionRefused::SelfDecision));
        assert!(req.decisions.is_empty() && req.is_pending(), "nothing recorded");
    }

    #[test]
    fn approval_counted_once_per_approver() {
        let mut req = request(&[("sre", 2)]);
        let rules = req.approvals_required.clone();
        let first = req.decide(decision("bob", &["sre"], Verdict::Approve, 5), &rules, at(5));
        assert_eq!(first, Ok(DecisionOutcome::Recorded { remaining: 1 }));
        let again = req.decide(decision("bob", &["sre"], Verdict::Approve, 6), &rules, at(6));
        assert_eq!(again, Err(DecisionRefused::AlreadyDecided { verdict: "approved" }));
        assert_eq!(req.decisions.len(), 1, "approval counted once");
        assert_eq!(req.approvals_remaining, 1);
        let second = req.decide(decision("erin", &["sre"], Verdict::Approve, 7), &rules, at(7));
        assert_eq!(second, Ok(DecisionOutcome::Approved));
    }

    #[test]
    fn one_deny_ends_the_request() {
        let mut req = request(&[("sre", 2)]);
        let rules = req.approvals_required.clone();
        let _ = req.decide(decision("bob", &["sre"], Verdict::Approve, 5), &rules, at(5));
        let outcome = req.decide(decision("erin", &["sre"], Verdict::Deny, 6), &rules, at(6));
        assert_eq!(outcome, Ok(DecisionOutcome::Denied));
        let late = req.decide(decision("frank", &["sre"], Verdict::Approve, 7), &rules, at(7));
        assert_eq!(late, Err(DecisionRefused::NotPending(RequestState::Denied)), "decided once");
    }

    #[test]
    fn an_approval_that_fills_no_open_slot_is_refused() {
        let mut req = request(&[("sre", 1), ("security", 1)]);
        let rules = req.approvals_required.clone();
        let first = req.decide(decision("bob", &["sre"], Verdict::Approve, 5), &rules, at(5));
        assert_eq!(first, Ok(DecisionOutcome::Recorded { remaining: 1 }));
        assert!(!req.approval_would_count(&rules, &["sre".into()]), "a second sre fills nothing");
        assert!(req.approval_would_count(&rules, &["security".into()]), "security fills the open slot");
        let second = req.decide(decision("erin", &["sre"], Verdict::Approve, 6), &rules, at(6));
        assert_eq!(second, Err(DecisionRefused::CannotCount { remaining: 1, others: "security".into() }));
        assert_eq!(req.decisions.len(), 1, "the useless approval is not recorded");
        let deny = req.decide(decision("erin", &["sre"], Verdict::Deny, 7), &rules, at(7));
        assert_eq!(deny, Ok(DecisionOutcome::Denied), "an eligible approver may still deny");
    }

    #[test]
    fn approver_outside_the_rules_refused() {
        let mut req = request(&[("sre", 1)]);
        let rules = req.approvals_required.clone();
        let outcome = req.decide(decision("dave", &["engineers"], Verdict::Approve, 5), &rules, at(5));
        assert_eq!(outcome, Err(DecisionRefused::NotAnApprover { needed: "sre".into() }));
    }

    #[test]
    fn approval_after_expiry_refused_and_request_expires() {
        let mut req = request(&[("sre", 1)]);
        let rules = req.approvals_required.clone();
        let late = at(3600);
        assert_eq!(
            req.decide(decision("bob", &["sre"], Verdict::Approve, 3600), &rules, late),
            Err(DecisionRefused::Expired)
        );
        assert!(!req.expire_if_due(at(3599)), "not due a second early");
        assert!(req.expire_if_due(late));
        assert_eq!(req.state, RequestState::Expired);
        assert_eq!(req.decided_at, Some(late), "expired at its deadline");
    }

    #[test]
    fn only_the_requester_cancels_and_only_while_pending() {
        let mut req = request(&[("sre", 1)]);
        assert_eq!(req.cancel("bob", at(1)), Err(CancelRefused::NotRequester));
        assert_eq!(req.cancel("alice", at(1)), Ok(()));
        assert_eq!(req.state, RequestState::Cancelled);
        assert_eq!(req.cancel("alice", at(2)), Err(CancelRefused::NotPending(RequestState::Cancelled)));
    }

    #[test]
    fn policy_approval_needs_no_decision() {
        let mut req = request(&[("sre", 1)]);
        req.approve_by_policy(at(0));
        assert_eq!(req.state, RequestState::Approved);
        assert!(req.auto_approved && req.approvals_remaining == 0);
    }

    #[test]
    fn requests_serialize_with_snake_case_states() {
        let req = request(&[("sre", 1)]);
        let json = serde_json::to_value(&req).expect("serialize");
        assert_eq!(json["state"], "pending");
        assert_eq!(json["duration"], "30m");
        let back: AccessRequest = serde_json::from_value(json).expect("deserialize");
        assert_eq!(back, req, "round trip");
    }
}
