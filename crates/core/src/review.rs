//! Break-glass grants are issued at once and reviewed after: someone who
//! could have approved the request says whether taking the access was
//! justified, once, and not about their own grant.

use serde::{Deserialize, Serialize};

use crate::{Grant, Timestamp};

/// A reviewer's verdict on access taken under break-glass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
#[serde(rename_all = "snake_case")]
pub enum ReviewVerdict {
    /// The emergency called for it.
    Justified,
    /// It did not: follow up with the person (the audit log keeps it).
    Unjustified,
}

impl ReviewVerdict {
    pub fn as_str(self) -> &'static str {
        match self {
            ReviewVerdict::Justified => "justified",
            ReviewVerdict::Unjustified => "unjustified",
        }
    }
}

/// The review of a break-glass grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "ts", derive(ts_rs::TS))]
pub struct Review {
    pub reviewer: String,
    pub verdict: ReviewVerdict,
    /// Why: a review says it.
    pub comment: String,
    pub at: Timestamp,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReviewRefused {
    #[error("grant {0} was not taken under break-glass: there is nothing to review")]
    NotBreakGlass(String),
    #[error("grant {grant} was reviewed already, by {by}")]
    AlreadyReviewed { grant: String, by: String },
    #[error("you cannot review your own break-glass access")]
    OwnGrant,
    #[error("a review needs a comment saying why")]
    NoComment,
}

impl Grant {
    /// Taken under break-glass and not reviewed yet.
    pub fn awaits_review(&self) -> bool {
        self.needs_review && self.review.is_none()
    }

    /// Records `review`, once, by someone other than the grant's owner.
    pub fn record_review(&mut self, review: Review) -> Result<(), ReviewRefused> {
        if !self.needs_review {
            return Err(ReviewRefused::NotBreakGlass(self.id.to_string()));
        }
        if let Some(done) = &self.review {
            return Err(ReviewRefused::AlreadyReviewed { grant: self.id.to_string(), by: done.reviewer.clone() });
        }
        if review.reviewer == self.owner {
            return Err(ReviewRefused::OwnGrant);
        }
        if review.comment.trim().is_empty() {
            return Err(ReviewRefused::NoComment);
        }
        self.review = Some(review);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{AccessRequest, Duration, GrantId, NewRequest, RequestId};

    const NOW: Timestamp = Timestamp::from_unix_millis(1_800_000_000_000);

    fn grant(break_glass: bool) -> Grant {
        let request = AccessRequest::file(
            RequestId::from_random(1),
            NewRequest {
                requester: "dave@acme.example".into(),
                resource: "orders-api".into(),
                role: "write".into(),
                duration: Duration::from_mins(30),
                reason: "outage".into(),
                ticket: None,
                break_glass,
                renews: None,
            },
            Vec::new(),
            Duration::from_hours(1),
            NOW,
        );
        Grant::start(GrantId::from_random(2), &request, "token", NOW)
    }

    fn review(by: &str, comment: &str) -> Review {
        Review { reviewer: by.into(), verdict: ReviewVerdict::Justified, comment: comment.into(), at: NOW }
    }

    #[test]
    fn a_break_glass_grant_is_reviewed_once_by_someone_else_with_a_reason() {
        let mut glass = grant(true);
        assert!(glass.awaits_review());
        assert_eq!(glass.record_review(review("dave@acme.example", "mine")), Err(ReviewRefused::OwnGrant));
        assert_eq!(glass.record_review(review("bob@acme.example", " ")), Err(ReviewRefused::NoComment));
        assert_eq!(glass.record_review(review("bob@acme.example", "the outage was real")), Ok(()));
        assert!(!glass.awaits_review());
        let again = glass.record_review(review("erin@acme.example", "me too")).unwrap_err();
        assert_eq!(again.to_string(), format!("grant {} was reviewed already, by bob@acme.example", glass.id));
        let mut normal = grant(false);
        assert!(!normal.awaits_review());
        assert!(matches!(normal.record_review(review("bob@acme.example", "x")), Err(ReviewRefused::NotBreakGlass(_))));
    }
}
