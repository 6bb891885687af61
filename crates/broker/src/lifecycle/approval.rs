//! Approvers' decisions: one per approver, never on their own request,
//! counted against the role's approval rules.

use hourglass_core::api::{ErrorCode, EventKind, RequestOutcome};
use hourglass_core::audit::{AuditAction, AuditResult};
use hourglass_core::authentication::Authentication;
use hourglass_core::{Decision, DecisionOutcome, DecisionRefused, Principal, RequestId, Verdict};

use super::{MAX_COMMENT, clean_optional, grant_refused, refused, request_event, unknown};
use crate::broker::Broker;
use crate::error::{Error, Result};

impl Broker {
    /// `POST /v1/requests/{id}/approve` and `/deny`.
    /// `decider`: who decides, and how recently and how they logged in
    /// (policy may ask for a fresh login; a machine never decides).
    pub async fn decide(
        &self,
        (who, authentication): (&Principal, &Authentication),
        id: &RequestId,
        verdict: Verdict,
        comment: Option<String>,
    ) -> Result<RequestOutcome> {
        let now = self.now();
        let policy = self.policy();
        let comment = clean_optional(comment, "comment", MAX_COMMENT)?;
        let mut tx = self.store.begin().await?;
        let Some(request) = tx.request(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no request {id}")));
        };
        if request.is_pending() && now >= request.pending_until {
            self.expire_request(&mut tx, request, now).await?;
            tx.commit().await?;
            return Err(refused(ErrorCode::NotPending, format!("request {id} expired before it was decided")));
        }
        let target = format!("{}/{}", request.resource, request.role);
        let role = match policy.role(&request.resource, &request.role) {
            Ok(role) => role,
            Err(gone) => {
                return Err(refused(
                    ErrorCode::UnknownRole,
                    format!("{gone}; request {id} can no longer be approved, only cancelled or left to expire"),
                ));
            }
        };
        let decision = Decision {
            approver: who.id.clone(),
            approver_groups: who.groups.iter().cloned().collect(),
            verdict,
            comment,
            at: now,
        };
        let mut decided = request.clone();
        let outcome = decided.decide(decision, &role.approvals, now);
        let refusal = match &outcome {
            Err(DecisionRefused::SelfDecision) => {
                Some(refused(ErrorCode::SelfApproval, "you cannot approve or deny your own request"))
            }
            Err(DecisionRefused::NotPending(state)) => {
                Some(refused(ErrorCode::NotPending, format!("request {id} is already {state}")))
            }
            Err(error @ DecisionRefused::AlreadyDecided { .. }) => {
                Some(refused(ErrorCode::AlreadyDecided, error.to_string()))
            }
            Err(error @ DecisionRefused::NotAnApprover { .. }) => {
                Some(refused(ErrorCode::Forbidden, error.to_string()))
            }
            Err(error @ DecisionRefused::CannotCount { .. }) => {
                Some(refused(ErrorCode::ApprovalNotNeeded, error.to_string()))
            }
            Err(DecisionRefused::Expired) => {
                Some(refused(ErrorCode::NotPending, format!("request {id} expired before it was decided")))
            }
            Ok(_) if !policy.may_decide(who, &request, now) => Some(refused(
                ErrorCode::Forbidden,
                format!("policy does not allow you to decide requests for {target}"),
            )),
            Ok(_) => match role.fresh_authentication.check(authentication, now) {
                Err(step_up) => Some(refused(ErrorCode::StepUpRequired, format!("{target}: {step_up}"))),
                Ok(()) => None,
            },
        };
        if let Some(error) = refusal {
            drop(tx);
            let event = request_event(now, &who.id, AuditAction::DecisionRefused, &request, AuditResult::Refused)
                .detail("verdict", if verdict == Verdict::Approve { "approve" } else { "deny" });
            return Err(self.refuse(event, error).await?);
        }
        let outcome = outcome.map_err(|e| Error::Internal(e.to_string()))?;
        let comment = decided.decision_by(&who.id).and_then(|d| d.comment.clone());
        let mut started = None;
        let mut renewal = None;
        if outcome == DecisionOutcome::Approved {
            match &decided.renews {
                Some(grant_id) => {
                    let Some(record) = tx.grant(grant_id).await? else {
                        return Err(Error::Internal(format!("renewal {id} names missing grant {grant_id}")));
                    };
                    record.grant.check_renewal(decided.duration, &role.limits, now).map_err(grant_refused)?;
                    renewal = Some(record);
                }
                None => {
                    let resource = policy.resource(&decided.resource).map_err(unknown)?;
                    let record = self.start_grant(&decided, resource, role, now);
                    decided.grant_id = Some(record.grant.id.clone());
                    started = Some(record);
                }
            }
        }
        tx.update_request(&decided).await?;
        let (action, kind) = match outcome {
            DecisionOutcome::Recorded { .. } => (AuditAction::ApprovalRecorded, EventKind::RequestUpdated),
            DecisionOutcome::Approved => (AuditAction::RequestApproved, EventKind::RequestApproved),
            DecisionOutcome::Denied => (AuditAction::RequestDenied, EventKind::RequestDenied),
        };
        let mut event = request_event(now, &who.id, action, &decided, AuditResult::Ok)
            .detail("approvals_remaining", decided.approvals_remaining)
            .detail("policy_digest", policy.digest.as_str());
        if let Some(comment) = comment {
            event = event.reason(comment);
        }
        tx.audit(event).await?;
        if let Some(record) = &started {
            tx.insert_grant(record).await?;
        }
        self.publish_request(&mut tx, &decided, kind, &[&who.id]);
        tx.commit().await?;
        if let Some(record) = &started {
            self.schedule(record.grant.expires_at);
        }
        self.metrics.request(match outcome {
            DecisionOutcome::Recorded { .. } => "approval_recorded",
            DecisionOutcome::Approved => "approved",
            DecisionOutcome::Denied => "denied",
        });

        let grant = match (started, renewal) {
            (Some(record), _) => Some(self.issue(record, &who.id).await?),
            (None, Some(record)) => Some(self.extend(record, &decided, &who.id).await?),
            (None, None) => None,
        };
        Ok(RequestOutcome { request: decided, grant })
    }
}
