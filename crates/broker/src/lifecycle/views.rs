//! What each principal may read: their own requests and grants, what waits
//! for their decision, others' access where policy allows viewing it.

use hourglass_core::api::{Catalog, CatalogResource, CatalogRole, ErrorCode, GrantList, RequestList};
use hourglass_core::audit::AuditRecord;
use hourglass_core::{AccessRequest, Grant, GrantId, Principal, RequestId, Timestamp};
use hourglass_policy::{AccessContext, Action, Policy, Role};

use super::{MAX_LISTED, refused};
use crate::broker::Broker;
use crate::error::Result;

/// The most history events one call returns.
const MAX_HISTORY: usize = 1000;

/// Pending requests read at a time for an approver's inbox, and the most
/// pages read (then the inbox shows what it found: 50,000 requests).
const PENDING_PAGE: usize = 1000;
const MAX_PENDING_PAGES: usize = 50;

impl Broker {
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
        // Page through everything pending, not only the first page: requests
        // others decide (a flood of them, even) must not hide mine.
        let mut awaiting_me = Vec::new();
        let mut after: Option<(Timestamp, String)> = None;
        for _ in 0..MAX_PENDING_PAGES {
            let page = self
                .store
                .pending_requests_after(after.as_ref().map(|(at, id)| (*at, id.as_str())), PENDING_PAGE)
                .await?;
            let full = page.len() == PENDING_PAGE;
            after = page.last().map(|last| (last.pending_until, last.id.to_string()));
            awaiting_me.extend(
                page.into_iter()
                    .filter(|request| now < request.pending_until)
                    .filter(|request| request.decision_by(&who.id).is_none() && policy.may_decide(who, request, now))
                    // Awaiting me: my approval would count (for whom it
                    // cannot, the request waits on other groups).
                    .filter(|request| request.approval_would_count(&request.approvals_required, &groups)),
            );
            if !full || awaiting_me.len() >= MAX_LISTED {
                break;
            }
        }
        awaiting_me.truncate(MAX_LISTED);
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
    /// those allowed to view others' grants) those of `subject`'s events
    /// that are about a role and owner the viewer may view: what `subject`
    /// did to other people's access is theirs to see, not the viewer's.
    pub async fn history(&self, who: &Principal, subject: Option<&str>, limit: usize) -> Result<Vec<AuditRecord>> {
        let limit = limit.clamp(1, MAX_HISTORY);
        let subject = subject.unwrap_or(&who.id);
        if subject == who.id {
            return self.store.history(subject, limit).await;
        }
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
        let viewable = |record: &AuditRecord| {
            let event = &record.event;
            let detail = |name: &str| event.details.get(name).and_then(serde_json::Value::as_str);
            match (detail("resource"), detail("role"), event.subject.as_deref()) {
                (Some(resource), Some(role), Some(owner)) => {
                    policy.authorize_on_grant(who, Action::View, resource, role, owner).allowed
                }
                // Not about one role's access (a login, say): the subject's own.
                _ => false,
            }
        };
        // Filtered after reading: read the most there may be, keep `limit`.
        let records = self.store.history(subject, MAX_HISTORY).await?;
        Ok(records.into_iter().filter(viewable).take(limit).collect())
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
    let [may_request, auto_approve] =
        policy.authorize_each(who, [Action::Request, Action::AutoApprove], resource, &role.name, &context);
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
        may_request: may_request.allowed,
        auto_approve: auto_approve.allowed,
    }
}
