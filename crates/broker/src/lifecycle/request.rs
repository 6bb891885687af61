//! Filing requests, and ending them without a decision: cancelled by the
//! requester, withdrawn when their grant ends, expired undecided.

use hourglass_core::api::{CreateRequest, ErrorCode, EventKind, RequestOutcome};
use hourglass_core::audit::{AuditAction, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use hourglass_core::{AccessRequest, GrantId, GrantState, NewRequest, Principal, RequestId, Timestamp};
use hourglass_policy::{AccessContext, Action};

use super::{
    MAX_REASON, MAX_TICKET, clean_optional, clean_text, grant_refused, parse_duration, policies_detail, refused,
    request_event, unknown,
};
use crate::broker::Broker;
use crate::error::Result;
use crate::provider::IssueInput;
use crate::store::WriteTx;

impl Broker {
    /// `POST /v1/requests`
    pub async fn file_request(&self, who: &Principal, body: CreateRequest) -> Result<RequestOutcome> {
        let now = self.now();
        let policy = self.policy();
        let role = policy.role(&body.resource, &body.role).map_err(unknown)?;
        let duration = parse_duration(&body.duration)?;
        role.limits.check_duration(duration).map_err(grant_refused)?;
        let resource = policy.resource(&body.resource).map_err(unknown)?;
        let provider = self.providers.get(&resource.provider)?;
        provider
            .check_material(body.client_material.as_ref())
            .map_err(|message| refused(ErrorCode::InvalidRequest, format!("{}: {message}", body.resource)))?;
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
        let context = AccessContext::of_request(&request, now);
        let action = if request.break_glass { Action::BreakGlass } else { Action::Request };
        // Both decisions at once: most requests are allowed, and the second
        // then costs no second set of entities.
        let [permitted, automatic] =
            policy.authorize_each(who, [action, Action::AutoApprove], &request.resource, &request.role, &context);
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
        let automatic = (!request.break_glass).then_some(automatic);
        let approved_by = match &automatic {
            Some(auto) if auto.allowed => Some(auto.clone()),
            Some(_) => None,
            None => Some(permitted.clone()),
        };
        let mut started = None;
        if let Some(approval) = approved_by {
            request.approve_by_policy(now);
            let record = self.start_grant(&request, resource, role, now);
            request.grant_id = Some(record.grant.id.clone());
            started = Some((record, approval));
        }
        // A credential made inside the broker is made now and stored active
        // with the request, in one commit. Only success is taken here: a
        // failure goes the usual way below, which records it.
        let mut issued_here = None;
        if let Some((record, _)) = &started
            && provider.issues_in_broker()
        {
            let input = IssueInput {
                grant: &record.grant,
                resource,
                role,
                now,
                material: body.client_material.as_ref(),
                ticket: request.ticket.as_deref(),
            };
            issued_here = provider.issue(input).await.ok();
        }

        let mut tx = self.store.begin().await?;
        tx.take_turn(&format!("principal/{}", who.id)).await?;
        let mut superseded = None;
        let clashes = tx.filing_clashes(&who.id, &request.resource, &request.role, now).await?;
        if let Some(existing) = clashes.pending {
            if !request.break_glass {
                return Err(refused(
                    ErrorCode::Duplicate,
                    format!("you already have a pending request {existing} for {target}"),
                ));
            }
            // In an emergency nobody should have to cancel first: break-glass
            // replaces the request still waiting for approvers.
            if let Some(mut waiting) = tx.request(&existing).await?
                && waiting.withdraw(now)
            {
                tx.update_request(&waiting).await?;
                tx.audit(
                    request_event(now, &who.id, AuditAction::RequestCancelled, &waiting, AuditResult::Ok)
                        .reason(format!("superseded by break-glass request {}", request.id)),
                )
                .await?;
                superseded = Some(waiting);
            }
        }
        if let Some(live) = clashes.live {
            return Err(refused(
                ErrorCode::Duplicate,
                format!(
                    "you already hold {} for {target} until {}; renew it instead",
                    live.grant.id, live.grant.expires_at
                ),
            ));
        }
        if started.is_none() {
            // Counted under the write lock, so concurrent filings cannot
            // together pass the limit.
            self.limits.check_pending(tx.pending_count(&who.id, now).await?)?;
        }
        tx.insert_request(&request, body.client_material.as_ref()).await?;
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
        if let Some((record, approval)) = &mut started {
            let how = if request.break_glass { "break-glass" } else { "approved automatically by policy" };
            tx.audit(
                request_event(now, SYSTEM_ACTOR, AuditAction::RequestApproved, &request, AuditResult::Ok)
                    .reason(how)
                    .detail("policies", policies_detail(approval))
                    .detail("grant", record.grant.id.as_str())
                    .detail("needs_review", request.break_glass),
            )
            .await?;
            match issued_here.take() {
                Some(issued) => {
                    let event = Self::activate(record, issued, &who.id, now);
                    tx.insert_grant(record).await?;
                    tx.audit(event).await?;
                }
                None => tx.insert_grant(record).await?,
            }
        }
        if let Some(waiting) = &superseded {
            self.publish_request(&mut tx, waiting, EventKind::RequestCancelled, &[]);
        }
        // Every approver hears of a break-glass grant, as it happens.
        let kind = if request.break_glass || request.is_pending() {
            EventKind::RequestFiled
        } else {
            EventKind::RequestApproved
        };
        self.publish_request(&mut tx, &request, kind, &[]);
        if let Some((record, _)) = &started
            && record.grant.state == GrantState::Active
        {
            self.publish_grant(&mut tx, &record.grant, EventKind::GrantIssued, &[]);
        }
        tx.commit().await?;
        let grant_deadline = started.as_ref().map(|(record, _)| record.grant.expires_at);
        let pending_deadline = request.is_pending().then_some(request.pending_until);
        if let Some(next) = grant_deadline.into_iter().chain(pending_deadline).min() {
            self.schedule(next);
        }

        if request.break_glass {
            self.metrics.request("break_glass");
        } else if request.is_pending() {
            self.metrics.request("pending");
            return Ok(RequestOutcome { request, grant: None });
        } else {
            self.metrics.request("auto_approved");
        }
        let grant = match started {
            // Issued in the commit above.
            Some((record, _)) if record.grant.state == GrantState::Active => {
                self.metrics.grant("issued");
                Some(record.grant)
            }
            Some((record, _)) => {
                Some(self.issue_with(record, &who.id, body.client_material.as_ref(), request.ticket.as_deref()).await?)
            }
            None => None,
        };
        Ok(RequestOutcome { request, grant })
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
        self.publish_request(&mut tx, &request, EventKind::RequestCancelled, &[]);
        tx.commit().await?;
        self.metrics.request("cancelled");
        Ok(request)
    }

    /// Closes pending renewals of grants that have ended (published with `tx`).
    pub(crate) async fn withdraw_renewals(
        &self,
        tx: &mut WriteTx,
        grants: &[GrantId],
        now: Timestamp,
    ) -> Result<Vec<AccessRequest>> {
        let mut withdrawn = Vec::new();
        // One read for the whole batch: an expiry pass ends up to a
        // thousand grants in one transaction.
        for mut request in tx.pending_renewals(grants).await? {
            if request.withdraw(now) {
                let grant = request.renews.as_ref().map_or("", GrantId::as_str);
                tx.update_request(&request).await?;
                tx.audit(
                    request_event(now, SYSTEM_ACTOR, AuditAction::RequestCancelled, &request, AuditResult::Ok)
                        .reason(format!("grant {grant} ended")),
                )
                .await?;
                self.publish_request(tx, &request, EventKind::RequestCancelled, &[]);
                withdrawn.push(request);
            }
        }
        Ok(withdrawn)
    }

    /// Ends a pending request at its timeout, inside `tx` (published with it).
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
            self.publish_request(tx, &request, EventKind::RequestExpired, &[]);
            self.metrics.request("expired");
        }
        Ok(request)
    }
}
