//! The access lifecycle as the broker runs it. Each operation checks its
//! input and the policy in force, applies the domain transition from
//! `hourglass-core`, and commits the new state with its audit events in one
//! transaction; provider calls happen outside the transaction, and events
//! are published after the commit.
//!
//! - `request.rs`: filing, cancelling, expiring requests
//! - `approval.rs`: approvers' decisions
//! - `grant.rs`: issuing, renewing, revoking grants, and their credentials
//! - `preferences.rs`: each person's choice of the channels that tell them
//! - `review.rs`: reviewing break-glass grants after the fact
//! - `session.rs`: logging out (ending a session on every replica)
//! - `views.rs`: what each principal may read

mod approval;
mod grant;
mod preferences;
mod request;
mod review;
mod session;
mod views;

use hourglass_core::api::{ErrorCode, EventKind};
use hourglass_core::audit::{AuditAction, AuditEvent, AuditResult};
use hourglass_core::{AccessRequest, Duration, Grant, GrantRefused, Timestamp};
use hourglass_policy::{Authorization, Unknown};

use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::events::new_event;
use crate::provider::ProviderError;
use crate::store::WriteTx;

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

fn parse_duration(text: &str) -> Result<Duration> {
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

    /// Audits a refusal (the same one again within a minute is counted
    /// instead: `refusals.rs`) and returns the error to answer with.
    async fn refuse(&self, event: AuditEvent, error: Error) -> Result<Error> {
        if !self.refusals.first(&event, self.now()) {
            return Ok(error);
        }
        self.store.record_audit(vec![event.reason(error.to_string())]).await?;
        Ok(error)
    }

    /// Audits the summaries of repeated refusals whose minute is over.
    pub async fn audit_repeated_refusals(&self) -> Result<()> {
        let summaries = self.refusals.ended(self.now());
        if summaries.is_empty() {
            return Ok(());
        }
        self.store.record_audit(summaries).await?;
        Ok(())
    }

    /// Publishes a request's change with the transaction that makes it:
    /// to the requester, `also`, and whoever may decide it.
    /// The notifications it sends go into the outbox with it.
    pub(crate) fn publish_request(&self, tx: &mut WriteTx, request: &AccessRequest, kind: EventKind, also: &[&str]) {
        let mut principals = vec![request.requester.clone()];
        principals.extend(also.iter().map(|p| (*p).to_owned()));
        let now = self.now();
        tx.publish(new_event(kind, now, Some(request), None, principals, true));
        if let Ok(role) = self.policy().role(&request.resource, &request.role) {
            for notice in crate::notify::for_request(role, request, kind, now) {
                tx.enqueue(notice);
            }
        }
    }

    /// Publishes a grant's change with the transaction that makes it: to
    /// its owner and `also`; its notifications go into the outbox with it.
    pub(crate) fn publish_grant(&self, tx: &mut WriteTx, grant: &Grant, kind: EventKind, also: &[&str]) {
        let mut principals = vec![grant.owner.clone()];
        principals.extend(also.iter().map(|p| (*p).to_owned()));
        let now = self.now();
        tx.publish(new_event(kind, now, None, Some(grant), principals, false));
        if let Ok(role) = self.policy().role(&grant.resource, &grant.role) {
            for notice in crate::notify::for_grant(role, grant, kind, now) {
                tx.enqueue(notice);
            }
        }
    }
}
