//! The access lifecycle as the broker runs it: file, decide, cancel, issue,
//! renew, revoke. Each operation checks its input and the policy in force,
//! applies the domain transition from `hourglass-core`, and commits the new
//! state with its audit events in one transaction; provider calls happen
//! outside the transaction, and events are published after the commit.

use hourglass_core::api::{
    Catalog, CatalogResource, CatalogRole, CreateRequest, Credential, ErrorCode, EventKind, GrantList, RenewBody,
    RenewOutcome, RequestList, RequestOutcome,
};
use hourglass_core::audit::{AuditAction, AuditEvent, AuditRecord, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use hourglass_core::{
    AccessRequest, Decision, DecisionOutcome, DecisionRefused, Duration, Grant, GrantId, GrantRefused, NewRequest,
    Principal, RequestId, Timestamp, Verdict,
};
use hourglass_policy::{AccessContext, Action, Authorization, Policy, Role, Unknown};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::events::Audience;
use crate::provider::{IssueInput, ProviderError};
use crate::store::{GrantRecord, WriteTx};

const MAX_REASON: usize = 1000;
const MAX_TICKET: usize = 200;
const MAX_COMMENT: usize = 1000;
const MAX_LISTED: usize = 200;

fn refused(code: ErrorCode, message: impl Into<String>) -> Error {
    Error::refused(code, message)
}

fn unknown(error: Unknown) -> Error {
    let code = match error {
        Unknown::Resource { .. } => ErrorCode::UnknownResource,
        Unknown::Role { .. } => ErrorCode::UnknownRole,
    };
    refused(code, error.to_string())
}

fn grant_refused(error: GrantRefused) -> Error {
    let code = match error {
        GrantRefused::NotActive(_) | GrantRefused::PastDeadline => ErrorCode::NotActive,
        GrantRefused::TooLong { .. }
        | GrantRefused::TooShort { .. }
        | GrantRefused::OverTotal { .. }
        | GrantRefused::WouldShorten { .. } => ErrorCode::DurationOutOfBounds,
    };
    refused(code, error.to_string())
}

pub(crate) fn parse_duration(text: &str) -> Result<Duration> {
    text.parse().map_err(|error: hourglass_core::DurationError| refused(ErrorCode::InvalidDuration, error.to_string()))
}

/// Trims free text and refuses it when too long or containing control
/// characters (which would garble logs, terminals and notifications).
fn clean_text(text: &str, what: &str, max: usize) -> Result<String> {
    let text = text.trim();
    if text.chars().count() > max {
        return Err(refused(ErrorCode::InvalidRequest, format!("{what} is longer than {max} characters")));
    }
    if text.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(refused(ErrorCode::InvalidRequest, format!("{what} contains control characters")));
    }
    Ok(text.to_owned())
}

fn clean_optional(text: Option<String>, what: &str, max: usize) -> Result<Option<String>> {
    Ok(match text {
        Some(text) => Some(clean_text(&text, what, max)?).filter(|t| !t.is_empty()),
        None => None,
    })
}

fn access_context<'a>(request: &'a AccessRequest, now: Timestamp) -> AccessContext<'a> {
    AccessContext {
        requester: &request.requester,
        duration: request.duration,
        reason: &request.reason,
        ticket: request.ticket.as_deref(),
        renewal: request.renews.is_some(),
        break_glass: request.break_glass,
        now,
    }
}

fn policies_detail(authorization: &Authorization) -> serde_json::Value {
    serde_json::Value::from(authorization.policies.clone())
}

fn request_event(
    now: Timestamp,
    actor: &str,
    action: AuditAction,
    request: &AccessRequest,
    result: AuditResult,
) -> AuditEvent {
    AuditEvent::new(now, actor, action, request.id.as_str(), result)
        .subject(&request.requester)
        .detail("resource", request.resource.as_str())
        .detail("role", request.role.as_str())
}

fn grant_event(now: Timestamp, actor: &str, action: AuditAction, grant: &Grant, result: AuditResult) -> AuditEvent {
    AuditEvent::new(now, actor, action, grant.id.as_str(), result)
        .subject(&grant.owner)
        .detail("resource", grant.resource.as_str())
        .detail("role", grant.role.as_str())
}

impl Broker {
    pub(crate) async fn with_timeout<T>(
        &self,
        resource: &str,
        call: impl std::future::Future<Output = std::result::Result<T, ProviderError>>,
    ) -> std::result::Result<T, ProviderError> {
        match tokio::time::timeout(self.provider_timeout, call).await {
            Ok(result) => result,
            Err(_) => {
                Err(ProviderError::TimedOut { resource: resource.to_owned(), seconds: self.provider_timeout.as_secs() })
            }
        }
    }

    /// Records a refusal in the audit log, then returns it.
    async fn refuse(&self, event: AuditEvent, error: Error) -> Result<Error> {
        let mut tx = self.store.begin().await?;
        tx.audit(event.reason(error.to_string())).await?;
        tx.commit().await?;
        Ok(error)
    }

    pub(crate) fn publish_request(&self, request: &AccessRequest, kind: EventKind, also: &[&str]) {
        let mut principals = vec![request.requester.clone()];
        principals.extend(also.iter().map(|p| (*p).to_owned()));
        self.events.publish(
            kind,
            self.now(),
            Some(request),
            None,
            Audience::WithDeciders { principals, request: Box::new(request.clone()) },
        );
    }

    pub(crate) fn publish_grant(&self, grant: &Grant, kind: EventKind, also: &[&str]) {
        let mut principals = vec![grant.owner.clone()];
        principals.extend(also.iter().map(|p| (*p).to_owned()));
        self.events.publish(kind, self.now(), None, Some(grant), Audience::Principals(principals));
    }

    /// `POST /v1/requests`
    pub async fn file_request(&self, who: &Principal, body: CreateRequest) -> Result<RequestOutcome> {
        let now = self.now();
        let policy = self.policy();
        let role = policy.role(&body.resource, &body.role).map_err(unknown)?;
        let duration = parse_duration(&body.duration)?;
        role.limits.check_duration(duration).map_err(grant_refused)?;
        let reason = clean_text(&body.reason, "reason", MAX_REASON)?;
        let ticket = clean_optional(body.ticket, "ticket", MAX_TICKET)?;
        let target = format!("{}/{}", body.resource, body.role);
        if reason.is_empty() && body.break_glass {
            return Err(refused(ErrorCode::ReasonRequired, "break-glass access needs a reason"));
        }
        if reason.is_empty() && role.reason_required {
            return Err(refused(ErrorCode::ReasonRequired, format!("{target} needs a reason")));
        }
        if ticket.is_none() && role.ticket_required {
            return Err(refused(ErrorCode::TicketRequired, format!("{target} needs a ticket id")));
        }
        let mut request = AccessRequest::file(
            Self::new_request_id(),
            NewRequest {
                requester: who.id.clone(),
                resource: body.resource,
                role: body.role,
                duration,
                reason,
                ticket,
                break_glass: body.break_glass,
                renews: None,
            },
            role.approvals.clone(),
            role.pending_timeout,
            now,
        );
        let context = access_context(&request, now);
        let action = if request.break_glass { Action::BreakGlass } else { Action::Request };
        let permitted = policy.authorize(who, action, &request.resource, &request.role, &context);
        if !permitted.allowed {
            let message = if request.break_glass {
                format!("policy does not allow you to break glass on {target}")
            } else {
                format!("policy does not allow you to request {target} (for {duration}, as asked)")
            };
            let event = request_event(now, &who.id, AuditAction::RequestRefused, &request, AuditResult::Refused)
                .detail("duration", duration.to_string())
                .detail("break_glass", request.break_glass);
            self.metrics.request("refused");
            return Err(self.refuse(event, refused(ErrorCode::Forbidden, message)).await?);
        }
        let automatic = (!request.break_glass)
            .then(|| policy.authorize(who, Action::AutoApprove, &request.resource, &request.role, &context));
        let approved_by = match &automatic {
            Some(auto) if auto.allowed => Some(auto.clone()),
            Some(_) => None,
            None => Some(permitted.clone()),
        };

        let mut tx = self.store.begin().await?;
        let mut superseded = None;
        if let Some(existing) = tx.pending_duplicate(&who.id, &request.resource, &request.role, now).await? {
            if !request.break_glass {
                return Err(refused(
                    ErrorCode::Duplicate,
                    format!("you already have a pending request {existing} for {target}"),
                ));
            }
            // In an emergency nobody should have to cancel first: break-glass
            // replaces the request still waiting for approvers.
            if let Some(mut waiting) = tx.request(&existing).await? {
                if waiting.withdraw(now) {
                    tx.update_request(&waiting).await?;
                    tx.audit(
                        request_event(now, &who.id, AuditAction::RequestCancelled, &waiting, AuditResult::Ok)
                            .reason(format!("superseded by break-glass request {}", request.id)),
                    )
                    .await?;
                    superseded = Some(waiting);
                }
            }
        }
        if let Some(live) = tx.live_grant(&who.id, &request.resource, &request.role, now).await? {
            return Err(refused(
                ErrorCode::Duplicate,
                format!(
                    "you already hold {} for {target} until {}; renew it instead",
                    live.grant.id, live.grant.expires_at
                ),
            ));
        }
        let mut started = None;
        if let Some(approval) = &approved_by {
            request.approve_by_policy(now);
            let grant = Grant::start(
                Self::new_grant_id(),
                &request,
                &policy.resource(&request.resource).map_err(unknown)?.provider,
                now,
            );
            request.grant_id = Some(grant.id.clone());
            started = Some((GrantRecord { grant, provider_state: serde_json::Value::Null }, approval.clone()));
        }
        tx.insert_request(&request).await?;
        tx.audit(
            request_event(now, &who.id, AuditAction::RequestFiled, &request, AuditResult::Ok)
                .reason(request.reason.clone())
                .detail("duration", duration.to_string())
                .detail("ticket", request.ticket.clone())
                .detail("break_glass", request.break_glass)
                .detail("policies", policies_detail(&permitted))
                .detail("policy_digest", policy.digest.as_str()),
        )
        .await?;
        if let Some((record, approval)) = &started {
            let how = if request.break_glass { "break-glass" } else { "approved automatically by policy" };
            tx.audit(
                request_event(now, SYSTEM_ACTOR, AuditAction::RequestApproved, &request, AuditResult::Ok)
                    .reason(how)
                    .detail("policies", policies_detail(approval))
                    .detail("grant", record.grant.id.as_str())
                    .detail("needs_review", request.break_glass),
            )
            .await?;
            tx.insert_grant(record).await?;
        }
        tx.commit().await?;
        self.wake.notify_one();

        if let Some(waiting) = &superseded {
            self.publish_request(waiting, EventKind::RequestCancelled, &[]);
        }
        if request.break_glass {
            // Every approver hears of a break-glass grant, as it happens.
            self.metrics.request("break_glass");
            self.publish_request(&request, EventKind::RequestFiled, &[]);
        } else if request.is_pending() {
            self.metrics.request("pending");
            self.publish_request(&request, EventKind::RequestFiled, &[]);
            return Ok(RequestOutcome { request, grant: None });
        } else {
            self.metrics.request("auto_approved");
            self.publish_request(&request, EventKind::RequestApproved, &[]);
        }
        let grant = match started {
            Some((record, _)) => Some(self.issue(record, &who.id).await?),
            None => None,
        };
        Ok(RequestOutcome { request, grant })
    }

    /// Has the provider create the credential of a grant in `issuing`, then
    /// activates it. On failure the grant ends as `failed` and whatever the
    /// provider half-created is revoked.
    pub(crate) async fn issue(&self, record: GrantRecord, actor: &str) -> Result<Grant> {
        let policy = self.policy();
        let grant = record.grant.clone();
        let issued = match policy.role(&grant.resource, &grant.role) {
            Ok(role) => {
                let resource = policy.resource(&grant.resource).map_err(unknown)?;
                match self.providers.get(&resource.provider) {
                    Ok(provider) => {
                        let input = IssueInput { grant: &grant, resource, role, now: grant.issued_at };
                        self.with_timeout(&resource.name, provider.issue(input)).await
                    }
                    Err(error) => Err(error),
                }
            }
            Err(gone) => Err(ProviderError::Failed { resource: grant.resource.clone(), message: gone.to_string() }),
        };
        let now = self.now();
        let mut tx = self.store.begin().await?;
        // Re-read: the grant may have been revoked while the provider worked.
        let Some(mut current) = tx.grant(&grant.id).await? else {
            return Err(Error::Internal(format!("grant {} vanished while issuing", grant.id)));
        };
        match issued {
            Ok(issued) => {
                current.provider_state = issued.state;
                current.grant.activate(issued.ready, now);
                tx.update_grant(&current).await?;
                tx.audit(
                    grant_event(now, actor, AuditAction::GrantIssued, &current.grant, AuditResult::Ok)
                        .detail("request", current.grant.request_id.as_str())
                        .detail("expires_at", current.grant.expires_at.to_string())
                        .detail("ready", issued.ready)
                        .detail("needs_review", current.grant.needs_review),
                )
                .await?;
                tx.commit().await?;
                self.metrics.grant("issued");
                self.publish_grant(&current.grant, EventKind::GrantIssued, &[]);
                Ok(current.grant)
            }
            Err(error) => {
                let message = error.to_string();
                current.grant.fail(&message, now);
                current.grant.lease_revocation(now);
                tx.update_grant(&current).await?;
                tx.audit(
                    grant_event(now, actor, AuditAction::GrantIssueFailed, &current.grant, AuditResult::Failed)
                        .reason(message),
                )
                .await?;
                tx.commit().await?;
                self.wake.notify_one();
                self.metrics.grant("failed");
                self.publish_grant(&current.grant, EventKind::GrantFailed, &[]);
                Err(Error::Provider(error))
            }
        }
    }

    /// `POST /v1/requests/{id}/approve` and `/deny`
    pub async fn decide(
        &self,
        who: &Principal,
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
            let expired = self.expire_request(&mut tx, request, now).await?;
            tx.commit().await?;
            self.publish_request(&expired, EventKind::RequestExpired, &[]);
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
            Ok(_) => None,
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
                    let grant = Grant::start(Self::new_grant_id(), &decided, &resource.provider, now);
                    decided.grant_id = Some(grant.id.clone());
                    started = Some(GrantRecord { grant, provider_state: serde_json::Value::Null });
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
        tx.commit().await?;
        self.wake.notify_one();
        self.metrics.request(match outcome {
            DecisionOutcome::Recorded { .. } => "approval_recorded",
            DecisionOutcome::Approved => "approved",
            DecisionOutcome::Denied => "denied",
        });
        self.publish_request(&decided, kind, &[&who.id]);

        let grant = match (started, renewal) {
            (Some(record), _) => Some(self.issue(record, &who.id).await?),
            (None, Some(record)) => Some(self.extend(record, &decided, &who.id).await?),
            (None, None) => None,
        };
        Ok(RequestOutcome { request: decided, grant })
    }

    /// Moves a live grant's deadline for an approved renewal request.
    async fn extend(&self, record: GrantRecord, request: &AccessRequest, actor: &str) -> Result<Grant> {
        let policy = self.policy();
        let now = self.now();
        let role = policy.role(&record.grant.resource, &record.grant.role).map_err(unknown)?;
        let resource = policy.resource(&record.grant.resource).map_err(unknown)?;
        let mut renewed = record.grant.clone();
        let previous = renewed.renew(request.duration, &role.limits, now).map_err(grant_refused)?;
        let provider = self.providers.get(&resource.provider)?;
        let input = IssueInput { grant: &renewed, resource, role, now };
        let state = self.with_timeout(&resource.name, provider.renew(input, &record.provider_state)).await;
        let mut tx = self.store.begin().await?;
        let Some(mut current) = tx.grant(&renewed.id).await? else {
            return Err(Error::Internal(format!("grant {} vanished while renewing", renewed.id)));
        };
        let state = match state {
            Ok(state) => state,
            Err(error) => {
                tx.audit(
                    grant_event(now, actor, AuditAction::RenewalRefused, &current.grant, AuditResult::Failed)
                        .reason(error.to_string())
                        .detail("request", request.id.as_str()),
                )
                .await?;
                tx.commit().await?;
                return Err(Error::Provider(error));
            }
        };
        // The stored deadline must be the one the provider was given. If the
        // grant changed meanwhile nothing is extended here; a credential
        // extended at the target for a grant that ended is removed by its
        // revocation whatever its deadline.
        if current.grant != record.grant {
            let message = if current.grant.state.is_live() {
                format!("grant {} was renewed by another call meanwhile; look at it and try again", renewed.id)
            } else {
                format!("grant {} is {}", renewed.id, current.grant.state)
            };
            let code = if current.grant.state.is_live() { ErrorCode::Duplicate } else { ErrorCode::NotActive };
            return Err(refused(code, message));
        }
        current.grant = renewed;
        current.provider_state = state;
        tx.update_grant(&current).await?;
        tx.audit(
            grant_event(now, actor, AuditAction::GrantRenewed, &current.grant, AuditResult::Ok)
                .detail("request", request.id.as_str())
                .detail("previous_expires_at", previous.to_string())
                .detail("expires_at", current.grant.expires_at.to_string()),
        )
        .await?;
        tx.commit().await?;
        self.wake.notify_one();
        self.metrics.grant("renewed");
        self.publish_grant(&current.grant, EventKind::GrantRenewed, &[]);
        Ok(current.grant)
    }

    /// `POST /v1/requests/{id}/cancel`
    pub async fn cancel(&self, who: &Principal, id: &RequestId) -> Result<AccessRequest> {
        let now = self.now();
        let mut tx = self.store.begin().await?;
        let Some(mut request) = tx.request(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no request {id}")));
        };
        if request.is_pending() && now >= request.pending_until {
            return Err(refused(ErrorCode::NotPending, format!("request {id} expired before it was decided")));
        }
        match request.cancel(&who.id, now) {
            Ok(()) => {}
            Err(hourglass_core::request::CancelRefused::NotRequester) => {
                drop(tx);
                let event = request_event(now, &who.id, AuditAction::RequestCancelled, &request, AuditResult::Refused);
                let error = refused(ErrorCode::Forbidden, "only the requester can cancel a request");
                return Err(self.refuse(event, error).await?);
            }
            Err(hourglass_core::request::CancelRefused::NotPending(state)) => {
                return Err(refused(ErrorCode::NotPending, format!("request {id} is already {state}")));
            }
        }
        tx.update_request(&request).await?;
        tx.audit(request_event(now, &who.id, AuditAction::RequestCancelled, &request, AuditResult::Ok)).await?;
        tx.commit().await?;
        self.metrics.request("cancelled");
        self.publish_request(&request, EventKind::RequestCancelled, &[]);
        Ok(request)
    }

    /// `POST /v1/grants/{id}/renew`: a renewal is a request for the same
    /// grant, granted at once within policy or waiting for approval.
    pub async fn renew(&self, who: &Principal, id: &GrantId, body: RenewBody) -> Result<RenewOutcome> {
        let now = self.now();
        let policy = self.policy();
        let duration = parse_duration(&body.duration)?;
        let Some(record) = self.store.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        let grant = &record.grant;
        if grant.owner != who.id {
            let event = grant_event(now, &who.id, AuditAction::RenewalRefused, grant, AuditResult::Refused);
            return Err(self
                .refuse(event, refused(ErrorCode::Forbidden, "only the grant's owner can renew it"))
                .await?);
        }
        let role = policy.role(&grant.resource, &grant.role).map_err(unknown)?;
        grant.check_renewal(duration, &role.limits, now).map_err(grant_refused)?;
        let original = self.store.request(&grant.request_id).await?;
        let reason = match clean_optional(body.reason, "reason", MAX_REASON)? {
            Some(reason) => reason,
            None => original.as_ref().map(|r| r.reason.clone()).unwrap_or_default(),
        };
        let ticket = original.as_ref().and_then(|r| r.ticket.clone());
        let mut request = AccessRequest::file(
            Self::new_request_id(),
            NewRequest {
                requester: who.id.clone(),
                resource: grant.resource.clone(),
                role: grant.role.clone(),
                duration,
                reason,
                ticket,
                break_glass: grant.needs_review,
                renews: Some(grant.id.clone()),
            },
            role.approvals.clone(),
            role.pending_timeout,
            now,
        );
        request.grant_id = Some(grant.id.clone());
        let context = access_context(&request, now);
        // A break-glass grant is extended under break-glass again, at once and
        // with every approver told, only while policy still lets its owner
        // break glass; otherwise it waits for an approval like any request.
        let glass = grant
            .needs_review
            .then(|| policy.authorize(who, Action::BreakGlass, &grant.resource, &grant.role, &context))
            .filter(|glass| glass.allowed);
        let permitted = match &glass {
            Some(glass) => glass.clone(),
            None => policy.authorize(who, Action::Request, &grant.resource, &grant.role, &context),
        };
        let under_break_glass = glass.is_some();
        if !permitted.allowed {
            let event = request_event(now, &who.id, AuditAction::RequestRefused, &request, AuditResult::Refused)
                .detail("renews", grant.id.as_str());
            let error = refused(
                ErrorCode::Forbidden,
                format!("policy no longer allows you to request {}/{}", grant.resource, grant.role),
            );
            return Err(self.refuse(event, error).await?);
        }
        let automatic = if let Some(glass) = glass {
            Some(glass.policies)
        } else if grant.needs_review || grant.renewal_needs_approval(&role.limits) {
            let auto = policy.authorize(who, Action::AutoApprove, &grant.resource, &grant.role, &context);
            auto.allowed.then_some(auto.policies)
        } else {
            Some(vec![format!("within {} renewals without approval", role.limits.renewals_without_approval)])
        };
        request.break_glass = under_break_glass;
        if automatic.is_some() {
            request.approve_by_policy(now);
        }
        let mut tx = self.store.begin().await?;
        // One past its timeout can no longer be approved: it does not block a new one.
        let waiting = tx.pending_renewals(&grant.id).await?.into_iter().find(|r| now < r.pending_until);
        if let Some(pending) = waiting {
            return Err(refused(
                ErrorCode::Duplicate,
                format!("renewal {} of {} is already waiting for approval", pending.id, grant.id),
            ));
        }
        tx.insert_request(&request).await?;
        tx.audit(
            request_event(now, &who.id, AuditAction::RequestFiled, &request, AuditResult::Ok)
                .reason(request.reason.clone())
                .detail("renews", grant.id.as_str())
                .detail("duration", duration.to_string())
                .detail("policies", policies_detail(&permitted)),
        )
        .await?;
        if let Some(policies) = &automatic {
            tx.audit(
                request_event(now, SYSTEM_ACTOR, AuditAction::RequestApproved, &request, AuditResult::Ok)
                    .reason("renewal approved automatically by policy")
                    .detail("policies", serde_json::Value::from(policies.clone())),
            )
            .await?;
        }
        tx.commit().await?;
        self.wake.notify_one();
        if request.is_pending() {
            self.metrics.request("pending");
            self.publish_request(&request, EventKind::RequestFiled, &[]);
            return Ok(RenewOutcome { grant: record.grant, request });
        }
        if request.break_glass {
            self.metrics.request("break_glass");
            self.publish_request(&request, EventKind::RequestFiled, &[]);
        } else {
            self.metrics.request("auto_approved");
        }
        let grant = self.extend(record, &request, &who.id).await?;
        Ok(RenewOutcome { grant, request })
    }

    /// `POST /v1/grants/{id}/revoke`: by the owner, or by whoever policy
    /// allows to revoke others' grants.
    pub async fn revoke(&self, who: &Principal, id: &GrantId, reason: Option<String>) -> Result<Grant> {
        let now = self.now();
        let policy = self.policy();
        let reason = clean_optional(reason, "reason", MAX_REASON)?;
        let mut tx = self.store.begin().await?;
        let Some(mut record) = tx.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        let allowed = policy.authorize_on_grant(
            who,
            Action::Revoke,
            &record.grant.resource,
            &record.grant.role,
            &record.grant.owner,
        );
        if !allowed.allowed {
            drop(tx);
            let event = grant_event(now, &who.id, AuditAction::RevokeRefused, &record.grant, AuditResult::Refused);
            return Err(self
                .refuse(event, refused(ErrorCode::Forbidden, format!("policy does not allow you to revoke {id}")))
                .await?);
        }
        if record.grant.state.is_live() && now >= record.grant.expires_at {
            let message =
                format!("grant {id} reached its deadline at {}; it is being revoked", record.grant.expires_at);
            return Err(refused(ErrorCode::NotActive, message));
        }
        let reason = reason.unwrap_or_else(|| {
            if who.id == record.grant.owner { "revoked by its owner".into() } else { format!("revoked by {}", who.id) }
        });
        record.grant.revoke(&who.id, &reason, now).map_err(grant_refused)?;
        // This call attempts the revocation below; the lease keeps the
        // scheduler from starting a second attempt meanwhile.
        record.grant.lease_revocation(now.plus_millis(lease(self.provider_timeout)));
        tx.update_grant(&record).await?;
        tx.audit(
            grant_event(now, &who.id, AuditAction::GrantRevoked, &record.grant, AuditResult::Ok)
                .reason(reason)
                .detail("policies", policies_detail(&allowed)),
        )
        .await?;
        let withdrawn = self.withdraw_renewals(&mut tx, std::slice::from_ref(&record.grant.id), now).await?;
        tx.commit().await?;
        self.metrics.grant("revoked");
        self.publish_grant(&record.grant, EventKind::GrantRevoked, &[&who.id]);
        for request in &withdrawn {
            self.publish_request(request, EventKind::RequestCancelled, &[]);
        }
        let mut done = self.attempt_revocations(vec![record]).await?;
        done.pop().map(|record| record.grant).ok_or_else(|| Error::Internal("revocation lost its grant".into()))
    }

    /// Closes pending renewals of grants that have ended.
    pub(crate) async fn withdraw_renewals(
        &self,
        tx: &mut WriteTx,
        grants: &[GrantId],
        now: Timestamp,
    ) -> Result<Vec<AccessRequest>> {
        let mut withdrawn = Vec::new();
        for grant in grants {
            for mut request in tx.pending_renewals(grant).await? {
                if request.withdraw(now) {
                    tx.update_request(&request).await?;
                    tx.audit(
                        request_event(now, SYSTEM_ACTOR, AuditAction::RequestCancelled, &request, AuditResult::Ok)
                            .reason(format!("grant {grant} ended")),
                    )
                    .await?;
                    withdrawn.push(request);
                }
            }
        }
        Ok(withdrawn)
    }

    /// Ends a pending request at its timeout, inside `tx`.
    pub(crate) async fn expire_request(
        &self,
        tx: &mut WriteTx,
        mut request: AccessRequest,
        now: Timestamp,
    ) -> Result<AccessRequest> {
        if request.expire_if_due(now) {
            tx.update_request(&request).await?;
            tx.audit(
                request_event(now, SYSTEM_ACTOR, AuditAction::RequestExpired, &request, AuditResult::Ok)
                    .reason("nobody decided in time")
                    .detail("approvals_remaining", request.approvals_remaining),
            )
            .await?;
            self.metrics.request("expired");
        }
        Ok(request)
    }

    /// `GET /v1/grants/{id}/credential`: the owner's credential of a live grant.
    pub async fn credential(&self, who: &Principal, id: &GrantId) -> Result<Credential> {
        let policy = self.policy();
        let now = self.now();
        let Some(record) = self.store.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        let grant = &record.grant;
        if grant.owner != who.id {
            let event = grant_event(now, &who.id, AuditAction::CredentialFetched, grant, AuditResult::Refused);
            let error = refused(ErrorCode::Forbidden, "only the grant's owner can fetch its credential");
            return Err(self.refuse(event, error).await?);
        }
        if grant.state != hourglass_core::GrantState::Active || now >= grant.expires_at {
            return Err(refused(ErrorCode::NotActive, format!("grant {id} is {}", grant.state)));
        }
        let role = policy.role(&grant.resource, &grant.role).map_err(unknown)?;
        let resource = policy.resource(&grant.resource).map_err(unknown)?;
        let provider = self.providers.get(&resource.provider)?;
        let credential = provider.credential(IssueInput { grant, resource, role, now }, &record.provider_state).await?;
        let mut tx = self.store.begin().await?;
        tx.audit(grant_event(now, &who.id, AuditAction::CredentialFetched, grant, AuditResult::Ok)).await?;
        tx.commit().await?;
        Ok(credential)
    }

    /// `GET /v1/requests/{id}`: for its requester, those who may decide it,
    /// and those allowed to view others' access.
    pub async fn request_for(&self, who: &Principal, id: &RequestId) -> Result<AccessRequest> {
        let policy = self.policy();
        let Some(request) = self.store.request(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no request {id}")));
        };
        let visible = request.requester == who.id
            || request.decision_by(&who.id).is_some()
            || policy.may_decide(who, &request, self.now())
            || policy
                .authorize_on_grant(who, Action::View, &request.resource, &request.role, &request.requester)
                .allowed;
        if visible { Ok(request) } else { Err(refused(ErrorCode::Forbidden, format!("you may not see request {id}"))) }
    }

    /// `GET /v1/grants/{id}`
    pub async fn grant_for(&self, who: &Principal, id: &GrantId) -> Result<Grant> {
        let policy = self.policy();
        let Some(record) = self.store.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        let grant = record.grant;
        if policy.authorize_on_grant(who, Action::View, &grant.resource, &grant.role, &grant.owner).allowed {
            Ok(grant)
        } else {
            Err(refused(ErrorCode::Forbidden, format!("you may not see grant {id}")))
        }
    }

    /// `GET /v1/requests`: mine, and those waiting for my decision.
    pub async fn requests_view(&self, who: &Principal) -> Result<RequestList> {
        let policy = self.policy();
        let groups: Vec<String> = who.groups.iter().cloned().collect();
        let now = self.now();
        let mine = self.store.requests_of(&who.id, MAX_LISTED).await?;
        let awaiting_me = self
            .store
            .pending_requests(MAX_LISTED * 5)
            .await?
            .into_iter()
            .filter(|request| now < request.pending_until)
            .filter(|request| request.decision_by(&who.id).is_none() && policy.may_decide(who, request, now))
            // Awaiting me: my approval would count (for whom it cannot, the
            // request waits on other groups).
            .filter(|request| request.approval_would_count(&request.approvals_required, &groups))
            .collect();
        Ok(RequestList { mine, awaiting_me, server_time: now })
    }

    /// `GET /v1/grants`: mine, or (`everyone`) all that policy lets me view.
    pub async fn grants_view(&self, who: &Principal, everyone: bool, include_ended: bool) -> Result<GrantList> {
        let policy = self.policy();
        let owner = (!everyone).then_some(who.id.as_str());
        let grants = self
            .store
            .grants(owner, include_ended, MAX_LISTED)
            .await?
            .into_iter()
            .map(|record| record.grant)
            .filter(|g| {
                !everyone || policy.authorize_on_grant(who, Action::View, &g.resource, &g.role, &g.owner).allowed
            })
            .collect();
        Ok(GrantList { grants, server_time: self.now() })
    }

    /// `GET /v1/history`: audit events about my access or by me, or (for
    /// those allowed to view others' grants) about `subject`.
    pub async fn history(&self, who: &Principal, subject: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        let subject = subject.unwrap_or(&who.id);
        if subject != who.id {
            let policy = self.policy();
            let may_view = policy.resources.values().any(|resource| {
                resource
                    .roles
                    .keys()
                    .any(|role| policy.authorize_on_grant(who, Action::View, &resource.name, role, subject).allowed)
            });
            if !may_view {
                return Err(refused(ErrorCode::Forbidden, format!("you may not see the history of {subject}")));
            }
        }
        self.store.history(subject, limit.clamp(1, 1000)).await
    }

    /// `GET /v1/resources`: the catalog, with what policy would do for me.
    pub fn catalog(&self, who: &Principal) -> Catalog {
        let policy = self.policy();
        let now = self.now();
        let resources = policy
            .resources
            .values()
            .map(|resource| CatalogResource {
                name: resource.name.clone(),
                description: resource.description.clone(),
                provider: resource.provider.clone(),
                roles: resource
                    .roles
                    .values()
                    .map(|role| catalog_role(&policy, who, &resource.name, role, now))
                    .collect(),
            })
            .collect();
        Catalog { resources }
    }
}

fn catalog_role(policy: &Policy, who: &Principal, resource: &str, role: &Role, now: Timestamp) -> CatalogRole {
    // A hint for someone who will supply what the role needs (a reason, a
    // ticket); the real decision is made when they file.
    let context = AccessContext {
        requester: &who.id,
        duration: role.default_duration,
        reason: "",
        ticket: role.ticket_required.then_some("TICKET"),
        renewal: false,
        break_glass: false,
        now,
    };
    CatalogRole {
        name: role.name.clone(),
        description: role.description.clone(),
        min_duration: role.limits.min_duration,
        max_duration: role.limits.max_duration,
        default_duration: role.default_duration,
        max_total: role.limits.max_total,
        renewals_without_approval: role.limits.renewals_without_approval,
        approvals: role.approvals.clone(),
        reason_required: role.reason_required,
        ticket_required: role.ticket_required,
        may_request: policy.authorize(who, Action::Request, resource, &role.name, &context).allowed,
        auto_approve: policy.authorize(who, Action::AutoApprove, resource, &role.name, &context).allowed,
    }
}

/// How long a claimed revocation attempt may take before another may start.
pub(crate) fn lease(provider_timeout: std::time::Duration) -> i64 {
    i64::try_from(provider_timeout.as_millis()).unwrap_or(i64::MAX).saturating_add(5_000)
}
