//! Grants: issued by their provider, extended by renewals (a renewal is a
//! request for the same grant), ended by revocation; and their credentials.

use std::collections::BTreeMap;

use hourglass_core::api::{
    ClientMaterial, Credential, ErrorCode, EventKind, ReadyBody, RenewBody, RenewOutcome, RevokeMatchingBody,
};
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::principal::SYSTEM_ACTOR;
use hourglass_core::{AccessRequest, Grant, GrantId, GrantState, NewRequest, Principal, Timestamp};
use hourglass_policy::{AccessContext, Action, Authorization, Resource, Role};

use super::{
    MAX_REASON, clean_optional, clean_text, grant_event, grant_refused, parse_duration, policies_detail, refused,
    request_event, unknown,
};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::provider::{IssueInput, Issued, ProviderError};
use crate::store::{Claim, GrantRecord};

impl Broker {
    /// Has the provider create the credential of a grant in `issuing`, then
    /// activates it. On failure the grant ends as `failed` and whatever the
    /// provider half-created is revoked.
    pub(crate) async fn issue(&self, record: GrantRecord, actor: &str) -> Result<Grant> {
        let material = self.store.request_material(&record.grant.request_id).await?;
        let ticket = self.store.request(&record.grant.request_id).await?.and_then(|request| request.ticket);
        self.issue_with(record, actor, material.as_ref(), ticket.as_deref()).await
    }

    /// [`Broker::issue`] with what the client sent with the request (a
    /// SCRAM verifier, a public key) and its ticket at hand, as when it was
    /// just filed.
    pub(crate) async fn issue_with(
        &self,
        record: GrantRecord,
        actor: &str,
        material: Option<&ClientMaterial>,
        ticket: Option<&str>,
    ) -> Result<Grant> {
        let policy = self.policy();
        let grant = record.grant.clone();
        let issued = match policy.role(&grant.resource, &grant.role) {
            Ok(role) => {
                let resource = policy.resource(&grant.resource).map_err(unknown)?;
                match self.providers.get(&resource.provider) {
                    Ok(provider) => {
                        let input =
                            IssueInput { grant: &grant, resource, role, now: grant.issued_at, material, ticket };
                        match provider.planned_state(input) {
                            Ok(planned) => {
                                // Stored with the grant when it started; older grants get it here.
                                if let Some(planned) = planned.filter(|_| record.provider_state.is_null()) {
                                    self.record_planned_state(&grant.id, planned).await?;
                                }
                                if !self.store.may_act() {
                                    // This replica's lease lapsed (it was paused): another
                                    // may have taken the issue over. Leave it to whoever
                                    // holds the claim now.
                                    return Ok(grant);
                                }
                                self.with_timeout(&resource.name, provider.issue(input)).await
                            }
                            Err(error) => Err(error),
                        }
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
        // INVARIANT: a grant is issued once, by the replica that holds its
        // claim. It ended meanwhile (its revocation removes whatever the
        // provider made), another call finished this issue (providers are
        // idempotent), or this replica's lease lapsed and another took the
        // issue over: nothing is recorded here.
        if current.grant.state != GrantState::Issuing || !tx.holds_claim(&grant.id).await? {
            drop(tx);
            return match issued {
                Ok(_) => Ok(current.grant),
                Err(error) => Err(Error::Provider(error)),
            };
        }
        match issued {
            Ok(issued) => {
                let event = Self::activate(&mut current, issued, actor, now);
                tx.update_grant(&current, Claim::Release).await?;
                tx.audit(event).await?;
                self.publish_grant(&mut tx, &current.grant, EventKind::GrantIssued, &[]);
                tx.commit().await?;
                self.metrics.grant("issued");
                Ok(current.grant)
            }
            Err(error) => {
                let message = error.to_string();
                current.grant.fail(&message, now);
                // Due now, for whichever replica's scheduler comes first.
                tx.update_grant(&current, Claim::Release).await?;
                tx.audit(
                    grant_event(now, actor, AuditAction::GrantIssueFailed, &current.grant, AuditResult::Failed)
                        .reason(message),
                )
                .await?;
                self.publish_grant(&mut tx, &current.grant, EventKind::GrantFailed, &[]);
                tx.commit().await?;
                self.schedule(now);
                self.metrics.grant("failed");
                Err(Error::Provider(error))
            }
        }
    }

    /// A grant starting for an approved request, with what its provider
    /// plans to create (`planned_state`), stored `issuing` in the commit
    /// that approves: an issue that fails or is cut short is revoked from it,
    /// at no extra commit.
    pub(super) fn start_grant(
        &self,
        request: &AccessRequest,
        resource: &Resource,
        role: &Role,
        now: Timestamp,
    ) -> GrantRecord {
        let grant = Grant::start(Self::new_grant_id(), request, &resource.provider, now);
        let input =
            IssueInput { grant: &grant, resource, role, now, material: None, ticket: request.ticket.as_deref() };
        // A plan that cannot be made fails the issue itself, the usual way.
        let planned = self.providers.get(&resource.provider).ok().and_then(|p| p.planned_state(input).ok().flatten());
        GrantRecord { provider_state: planned.unwrap_or(serde_json::Value::Null), grant }
    }

    /// Stores what the provider is about to create before it does, so that
    /// a failed or interrupted issue is revoked from it (`planned_state`).
    async fn record_planned_state(&self, id: &GrantId, planned: serde_json::Value) -> Result<()> {
        let mut tx = self.store.begin().await?;
        if let Some(mut current) = tx.grant(id).await?
            && current.provider_state.is_null()
        {
            current.provider_state = planned;
            tx.update_grant(&current, Claim::Keep).await?;
            tx.commit().await?;
        }
        Ok(())
    }

    /// Activates a grant its provider issued; returns the audit event that
    /// records it, for the caller's transaction.
    pub(super) fn activate(record: &mut GrantRecord, issued: Issued, actor: &str, now: Timestamp) -> AuditEvent {
        record.provider_state = issued.state;
        record.grant.activate(issued.ready, now);
        grant_event(now, actor, AuditAction::GrantIssued, &record.grant, AuditResult::Ok)
            .detail("request", record.grant.request_id.as_str())
            .detail("expires_at", record.grant.expires_at.to_string())
            .detail("ready", issued.ready)
            .detail("needs_review", record.grant.needs_review)
            .detail("verified", issued.verification)
    }

    /// Moves a live grant's deadline for an approved renewal request.
    pub(super) async fn extend(&self, record: GrantRecord, request: &AccessRequest, actor: &str) -> Result<Grant> {
        let policy = self.policy();
        let now = self.now();
        let role = policy.role(&record.grant.resource, &record.grant.role).map_err(unknown)?;
        let resource = policy.resource(&record.grant.resource).map_err(unknown)?;
        let mut renewed = record.grant.clone();
        let previous = renewed.renew(request.duration, &role.limits, now).map_err(grant_refused)?;
        let provider = self.providers.get(&resource.provider)?;
        let input = IssueInput { grant: &renewed, resource, role, now, material: None, ticket: None };
        let renewal = self.with_timeout(&resource.name, provider.renew(input, &record.provider_state)).await;
        let mut tx = self.store.begin().await?;
        let Some(mut current) = tx.grant(&renewed.id).await? else {
            return Err(Error::Internal(format!("grant {} vanished while renewing", renewed.id)));
        };
        let renewal = match renewal {
            Ok(renewal) => renewal,
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
        // revocation whatever its deadline, and one made anew never leaves
        // the broker. The audit says so: the renewal reads approved, and
        // without this nothing would tell that it was never applied.
        if let Err(refusal) = changed_meanwhile(&record.grant, &current.grant) {
            tx.audit(
                grant_event(now, actor, AuditAction::RenewalRefused, &current.grant, AuditResult::Failed)
                    .reason(format!("not applied: {refusal}"))
                    .detail("request", request.id.as_str()),
            )
            .await?;
            tx.commit().await?;
            return Err(refusal);
        }
        // Renewed as read before the provider call (the same `now`, so the
        // same deadline), keeping whatever else changed meanwhile (its
        // readiness confirmed, say).
        current.grant.renew(request.duration, &role.limits, now).map_err(grant_refused)?;
        current.provider_state = renewal.state;
        tx.update_grant(&current, Claim::Keep).await?;
        tx.audit(
            grant_event(now, actor, AuditAction::GrantRenewed, &current.grant, AuditResult::Ok)
                .detail("request", request.id.as_str())
                .detail("previous_expires_at", previous.to_string())
                .detail("expires_at", current.grant.expires_at.to_string())
                .detail("verified", renewal.verification),
        )
        .await?;
        self.publish_grant(&mut tx, &current.grant, EventKind::GrantRenewed, &[]);
        tx.commit().await?;
        self.schedule(current.grant.expires_at);
        self.metrics.grant("renewed");
        Ok(current.grant)
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
        let context = AccessContext::of_request(&request, now);
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
        tx.take_turn(&format!("principal/{}", who.id)).await?;
        // Read again, locked until commit: a grant that ended since it was
        // read above (its deadline passed, or it was revoked) must not get a
        // renewal waiting for it that no expiry would withdraw. Expiry and
        // revocation lock the grant too, so they commit before this read or
        // after this renewal, whose waiting request they then withdraw.
        match tx.grant(&grant.id).await? {
            Some(current) => changed_meanwhile(grant, &current.grant)?,
            None => return Err(refused(ErrorCode::NotFound, format!("no grant {id}"))),
        }
        // One past its timeout can no longer be approved: it does not block a new one.
        let waiting =
            tx.pending_renewals(std::slice::from_ref(&grant.id)).await?.into_iter().find(|r| now < r.pending_until);
        if let Some(pending) = waiting {
            return Err(refused(
                ErrorCode::Duplicate,
                format!("renewal {} of {} is already waiting for approval", pending.id, grant.id),
            ));
        }
        if request.is_pending() {
            self.limits.check_pending(tx.pending_count(&who.id, now).await?)?;
        }
        tx.insert_request(&request, None).await?;
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
        if request.is_pending() || request.break_glass {
            self.publish_request(&mut tx, &request, EventKind::RequestFiled, &[]);
        }
        tx.commit().await?;
        if request.is_pending() {
            self.schedule(request.pending_until);
            self.metrics.request("pending");
            return Ok(RenewOutcome { grant: record.grant, request });
        }
        if request.break_glass {
            self.metrics.request("break_glass");
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
        if record.grant.state.is_live() && record.grant.is_past_deadline(now) {
            let message =
                format!("grant {id} reached its deadline at {}; it is being revoked", record.grant.expires_at);
            return Err(refused(ErrorCode::NotActive, message));
        }
        let reason = reason.unwrap_or_else(|| {
            if who.id == record.grant.owner { "revoked by its owner".into() } else { format!("revoked by {}", who.id) }
        });
        record.grant.revoke(&who.id, &reason, now).map_err(grant_refused)?;
        // This call attempts the revocation below; its claim keeps every
        // scheduler from starting a second attempt meanwhile.
        tx.update_grant(&record, Claim::Take).await?;
        tx.audit(
            grant_event(now, &who.id, AuditAction::GrantRevoked, &record.grant, AuditResult::Ok)
                .reason(reason)
                .detail("policies", policies_detail(&allowed)),
        )
        .await?;
        self.publish_grant(&mut tx, &record.grant, EventKind::GrantRevoked, &[&who.id]);
        self.withdraw_renewals(&mut tx, std::slice::from_ref(&record.grant.id), now).await?;
        tx.commit().await?;
        self.metrics.grant("revoked");
        let revoked = record.grant.clone();
        let mut done = self.attempt_revocations(vec![record]).await?;
        // Not attempted here if this replica's lease lapsed meanwhile: whoever
        // took it over removes the credential.
        Ok(done.pop().map_or(revoked, |record| record.grant))
    }

    /// `POST /v1/grants/revoke`: ends every live grant on a resource at once
    /// (narrowed to a role or an owner), in one commit, then removes their
    /// credentials concurrently. All or nothing: if policy does not let the
    /// caller revoke one of them, none is revoked.
    pub async fn revoke_matching(&self, who: &Principal, body: RevokeMatchingBody) -> Result<Vec<Grant>> {
        let now = self.now();
        let policy = self.policy();
        let reason = clean_text(&body.reason, "reason", MAX_REASON)?;
        if reason.is_empty() {
            return Err(refused(ErrorCode::ReasonRequired, "revoking grants in bulk needs a reason"));
        }
        let role = clean_optional(body.role, "role", MAX_REASON)?;
        let owner = clean_optional(body.owner, "owner", MAX_REASON)?;
        let mut tx = self.store.begin().await?;
        let mut records = tx.live_grants_on(&body.resource, role.as_deref(), owner.as_deref()).await?;
        if records.is_empty() && policy.resource(&body.resource).is_err() {
            return Err(refused(ErrorCode::NotFound, format!("no resource {} and no live grant on it", body.resource)));
        }
        // Authorization depends on resource, role and owner only: decide once per pair.
        let key = |grant: &Grant| (grant.role.clone(), grant.owner.clone());
        let mut decided: BTreeMap<(String, String), Authorization> = BTreeMap::new();
        for record in &records {
            let grant = &record.grant;
            decided.entry(key(grant)).or_insert_with(|| {
                policy.authorize_on_grant(who, Action::Revoke, &grant.resource, &grant.role, &grant.owner)
            });
        }
        let forbidden = records.iter().filter(|record| !decided[&key(&record.grant)].allowed);
        if let Some(first) = forbidden.clone().next() {
            let count = forbidden.count();
            let message = format!(
                "policy does not allow you to revoke {count} of the {} matching grants (such as {}, {}'s {}); none was revoked",
                records.len(),
                first.grant.id,
                first.grant.owner,
                first.grant.role
            );
            let event = AuditEvent::new(now, &who.id, AuditAction::RevokeRefused, &body.resource, AuditResult::Refused)
                .detail("role", role.clone())
                .detail("owner", owner.clone())
                .detail("matching", records.len());
            drop(tx);
            return Err(self.refuse(event, refused(ErrorCode::Forbidden, message)).await?);
        }
        // Past its deadline a grant is the scheduler's to expire, as for one revocation.
        records.retain(|record| !record.grant.is_past_deadline(now));
        for record in &mut records {
            record.grant.revoke(&who.id, &reason, now).map_err(grant_refused)?;
            tx.update_grant(record, Claim::Take).await?;
            let allowed = &decided[&key(&record.grant)];
            tx.audit(
                grant_event(now, &who.id, AuditAction::GrantRevoked, &record.grant, AuditResult::Ok)
                    .reason(reason.clone())
                    .detail("policies", policies_detail(allowed))
                    .detail("bulk", true),
            )
            .await?;
            self.publish_grant(&mut tx, &record.grant, EventKind::GrantRevoked, &[&who.id]);
        }
        let ids: Vec<GrantId> = records.iter().map(|record| record.grant.id.clone()).collect();
        self.withdraw_renewals(&mut tx, &ids, now).await?;
        tx.commit().await?;
        for _ in &records {
            self.metrics.grant("revoked");
        }
        let done = self.attempt_revocations(records).await?;
        Ok(done.into_iter().map(|record| record.grant).collect())
    }

    /// `POST /v1/grants/{id}/ready`: the owner's client confirms the
    /// credential works, where only it can (it holds the secret).
    pub async fn confirm_ready(&self, who: &Principal, id: &GrantId, body: ReadyBody) -> Result<Grant> {
        let now = self.now();
        let check = clean_optional(body.check, "check", MAX_REASON)?;
        let mut tx = self.store.begin().await?;
        let Some(mut record) = tx.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        if record.grant.owner != who.id {
            // Refused like every other change to someone else's grant: in
            // the audit log, so an attempt on another's access is seen.
            drop(tx);
            let event = grant_event(now, &who.id, AuditAction::GrantVerified, &record.grant, AuditResult::Refused);
            let error = refused(ErrorCode::Forbidden, "only the grant's owner can confirm it works");
            return Err(self.refuse(event, error).await?);
        }
        if !record.grant.is_usable_at(now) {
            return Err(not_usable(&record.grant, now));
        }
        if !record.grant.mark_ready(now) {
            return Ok(record.grant); // confirmed before: once is enough
        }
        tx.update_grant(&record, Claim::Keep).await?;
        let mut event = grant_event(now, &who.id, AuditAction::GrantVerified, &record.grant, AuditResult::Ok)
            .detail("by", "client");
        if let Some(check) = check {
            event = event.reason(check);
        }
        tx.audit(event).await?;
        self.publish_grant(&mut tx, &record.grant, EventKind::GrantReady, &[]);
        tx.commit().await?;
        Ok(record.grant)
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
        if !grant.is_usable_at(now) {
            return Err(not_usable(grant, now));
        }
        let role = policy.role(&grant.resource, &grant.role).map_err(unknown)?;
        let resource = policy.resource(&grant.resource).map_err(unknown)?;
        let provider = self.providers.get(&resource.provider)?;
        let credential = provider
            .credential(IssueInput { grant, resource, role, now, material: None, ticket: None }, &record.provider_state)
            .await?;
        self.store
            .record_audit(vec![grant_event(now, &who.id, AuditAction::CredentialFetched, grant, AuditResult::Ok)])
            .await?;
        Ok(credential)
    }
}

/// Refuses to renew a grant as `read` when it now reads otherwise
/// (`current`, locked): it ended, or another call renewed it, since.
fn changed_meanwhile(read: &Grant, current: &Grant) -> Result<()> {
    if !current.state.is_live() {
        return Err(refused(ErrorCode::NotActive, format!("grant {} is {}", current.id, current.state)));
    }
    if current.expires_at != read.expires_at {
        return Err(refused(
            ErrorCode::Duplicate,
            format!("grant {} was renewed by another call meanwhile; look at it and try again", current.id),
        ));
    }
    Ok(())
}

/// Why a grant cannot be used at `now`: its state, or its deadline passed
/// while it still reads active (the scheduler expires it in a moment).
fn not_usable(grant: &Grant, now: Timestamp) -> Error {
    let message = if grant.state == GrantState::Active && grant.is_past_deadline(now) {
        format!("grant {} reached its deadline at {}", grant.id, grant.expires_at)
    } else {
        format!("grant {} is {}", grant.id, grant.state)
    };
    refused(ErrorCode::NotActive, message)
}
