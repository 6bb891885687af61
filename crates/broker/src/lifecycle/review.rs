//! Break-glass reviews: access taken at once in an emergency is reviewed
//! after the fact by someone who could have approved it (the policy's
//! approvers of its role, never its owner), once, with a verdict and why;
//! approvers are reminded on the role's channels until it is done.

use hourglass_core::api::{ErrorCode, EventKind, ReviewBody, ReviewItem};
use hourglass_core::audit::{AuditAction, AuditResult};
use hourglass_core::review::{Review, ReviewRefused};
use hourglass_core::{Grant, GrantId, Principal};

use super::{MAX_COMMENT, MAX_LISTED, clean_text, grant_event, refused};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::events::new_event;
use crate::store::Claim;

impl Broker {
    /// `GET /v1/reviews`: break-glass grants awaiting a review `who` may give.
    pub async fn reviews_for(&self, who: &Principal) -> Result<Vec<ReviewItem>> {
        let policy = self.policy();
        let now = self.now();
        let mut items = Vec::new();
        for record in self.store.grants_awaiting_review(MAX_LISTED).await? {
            let Some(request) = self.store.request(&record.grant.request_id).await? else { continue };
            if policy.may_decide(who, &request, now) {
                items.push(ReviewItem { grant: record.grant, request });
            }
        }
        Ok(items)
    }

    /// `POST /v1/grants/{id}/review`
    pub async fn review(&self, who: &Principal, id: &GrantId, body: ReviewBody) -> Result<Grant> {
        let now = self.now();
        let policy = self.policy();
        let comment = clean_text(&body.comment, "comment", MAX_COMMENT)?;
        let mut tx = self.store.begin().await?;
        let Some(mut record) = tx.grant(id).await? else {
            return Err(refused(ErrorCode::NotFound, format!("no grant {id}")));
        };
        let Some(request) = tx.request(&record.grant.request_id).await? else {
            return Err(Error::Internal(format!("grant {id} names missing request {}", record.grant.request_id)));
        };
        let target = format!("{}/{}", record.grant.resource, record.grant.role);
        let review = Review { reviewer: who.id.clone(), verdict: body.verdict, comment: comment.clone(), at: now };
        // Who may review comes first: nobody else learns what a grant was.
        let refusal = if record.grant.owner == who.id {
            Some(refused(ErrorCode::SelfApproval, ReviewRefused::OwnGrant.to_string()))
        } else if !policy.may_decide(who, &request, now) {
            Some(refused(
                ErrorCode::Forbidden,
                format!("policy does not allow you to review break-glass access to {target}"),
            ))
        } else {
            match record.grant.record_review(review) {
                Err(error) => Some(review_refused(error)),
                Ok(()) => None,
            }
        };
        if let Some(error) = refusal {
            drop(tx);
            let event = grant_event(now, &who.id, AuditAction::GrantReviewed, &record.grant, AuditResult::Refused)
                .detail("verdict", body.verdict.as_str());
            return Err(self.refuse(event, error).await?);
        }
        tx.update_grant(&record, Claim::Keep).await?;
        tx.audit(
            grant_event(now, &who.id, AuditAction::GrantReviewed, &record.grant, AuditResult::Ok)
                .detail("verdict", body.verdict.as_str())
                .detail("request", request.id.as_str())
                .reason(comment),
        )
        .await?;
        // Its owner, the reviewer, and whoever else could have reviewed it.
        let principals = vec![record.grant.owner.clone(), who.id.clone()];
        tx.publish(new_event(EventKind::GrantReviewed, now, Some(&request), Some(&record.grant), principals, true));
        if let Ok(role) = policy.role(&record.grant.resource, &record.grant.role) {
            for notice in crate::notify::for_review(role, &request, &record.grant, now) {
                tx.enqueue(notice);
            }
        }
        tx.commit().await?;
        Ok(record.grant)
    }
}

fn review_refused(error: ReviewRefused) -> Error {
    let code = match error {
        ReviewRefused::NotBreakGlass(_) => ErrorCode::InvalidRequest,
        ReviewRefused::AlreadyReviewed { .. } => ErrorCode::AlreadyDecided,
        ReviewRefused::OwnGrant => ErrorCode::SelfApproval,
        ReviewRefused::NoComment => ErrorCode::ReasonRequired,
    };
    refused(code, error.to_string())
}
